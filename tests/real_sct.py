"""Run the real SCT 7.3 (``real_tool_env("sct")``) on our outputs: its programs and its Python.

Helpers only; the tests that use them are marked ``sct``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

from spinal_bidsapp.image import load_volume


def run_sct(env: dict[str, str], argv: list[str], *, cwd: Path, timeout_s: float = 900) -> None:
    """Run one SCT program in ``cwd`` (SCT writes temporary files next to its outputs); on a
    non-zero exit the assertion carries the end of its log."""
    cwd.mkdir(parents=True, exist_ok=True)
    run = subprocess.run(argv, cwd=cwd, env={**env, "SCT_PROGRESS_BAR": "off"},
                         capture_output=True, text=True, timeout=timeout_s)
    log = run.stdout + run.stderr
    (cwd / f"{argv[0]}.log").write_text(log)
    assert run.returncode == 0, f"{argv[0]} exited {run.returncode}:\n{log[-3000:]}"


def sct_python(env: dict[str, str]) -> str:
    """The interpreter of the real SCT install (its scripts' shebang), which imports SCT."""
    program = shutil.which("sct_version", path=env["PATH"])
    assert program, "sct_version not on the PATH of the real SCT environment"
    return Path(program).read_text().splitlines()[0].removeprefix("#!").strip()


def binary_on(path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A (linearly interpolated) mask SCT wrote, thresholded at 0.5, checked to lie on the grid
    ``(shape, affine)`` it was resampled to."""
    volume = load_volume(path)
    assert volume.shape == shape and np.allclose(volume.affine, affine, atol=1e-3), path
    return np.asarray(volume.data) > 0.5
