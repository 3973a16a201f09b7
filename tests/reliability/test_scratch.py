"""Everything a run writes goes under its output or work folder: nothing in ``$HOME`` (matplotlib's
``~/.cache`` and ``~/.config``) or ``$TMPDIR``, not even after SIGTERM (issue 22, item 8).
About 30 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import make_bids


def _sandbox_env(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    home, tmp = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "MPLCONFIGDIR")}
    env.update(HOME=str(home), TMPDIR=str(tmp))
    return env, home, tmp


def _app(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "spinal_bidsapp", *map(str, args)]


def test_a_run_writes_nothing_in_home_or_tmpdir(tmp_path: Path) -> None:
    env, home, tmp = _sandbox_env(tmp_path)
    bids = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    out = tmp_path / "out"
    done = subprocess.run(_app(bids, out, "participant", "--skip-bids-validation"), env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list((out / "sub-01" / "figures").glob("*.png"))  # matplotlib did run
    assert sorted(home.rglob("*")) == []
    assert sorted(tmp.rglob("*")) == []


def test_sigterm_during_registration_leaves_no_temporary_folder(tmp_path: Path,
                                                                pam50_dir: Path) -> None:
    env, home, tmp = _sandbox_env(tmp_path)
    from spinal_bidsapp.synth import generate_demo_cohort

    generate_demo_cohort(tmp_path / "demo", n_subjects=1, seed=5, straight_reference=False)
    out = tmp_path / "out"
    proc = subprocess.Popen(_app(tmp_path / "demo" / "bids", out, "participant",
                                 "--skip-bids-validation", "--template-dir", pam50_dir),
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    try:
        while not [*tmp.rglob("spinal_bidsapp_syn_*"), *out.rglob("spinal_bidsapp_syn_*")]:
            assert proc.poll() is None, "the run ended before the SyN registration started"
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 143
    assert sorted(tmp.rglob("*")) == []
    assert sorted(home.rglob("*")) == []
    assert [*out.rglob("spinal_bidsapp_syn_*")] == []
