"""The environment of the real tools that ``scripts/install-real-tools.sh`` installed.

The installer writes one ``export NAME=VALUE ...`` line per kit (``sct.env``, ``minc.env``) into
its cache folder; the integration tests (``tests/conftest.py``) and the engine benchmarks run the
real programs in this process's environment plus that line, read here in one way.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path


def tool_env(env_file: Path) -> dict[str, str]:
    """This process's environment plus the variables of ``env_file`` (``$PATH`` expanded)."""
    env = dict(os.environ)
    for word in shlex.split(env_file.read_text()):
        if word == "export" or "=" not in word:
            continue
        name, value = word.split("=", 1)
        env[name] = value.replace("$PATH", os.environ.get("PATH", ""))
    return env
