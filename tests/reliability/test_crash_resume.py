"""SIGKILL the participant and group levels mid-run: the rerun resumes and matches a clean run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.synth import generate_demo_cohort

pytestmark = pytest.mark.slow

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "2"]


def _app(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "spinal_bidsapp", *map(str, args)]


def _run_killed(argv: list[str], until: Path, *, timeout_s: float = 300) -> None:
    """Start the app, SIGKILL its whole process group as soon as ``until`` exists."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not until.exists():
            if proc.poll() is not None:
                pytest.fail(f"the run ended (code {proc.returncode}) before {until} appeared")
            if time.monotonic() > deadline:
                pytest.fail(f"{until} did not appear within {timeout_s} s")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _outputs(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file()
            and not p.relative_to(root).as_posix().startswith(("work/", "logs/", "qc/"))
            and p.suffix not in {".html", ".png"} and ".lock" not in p.name
            and not p.name.startswith("index")}


def _without_timing(value: object) -> object:
    """JSON records minus wall-clock timings (the only thing allowed to differ)."""
    if isinstance(value, dict):
        return {k: _without_timing(v) for k, v in value.items() if k != "timing"}
    if isinstance(value, list):
        return [_without_timing(v) for v in value]
    return value


def assert_same_outputs(a: Path, b: Path) -> None:
    """Labels and tables bitwise, images within 1e-5 relative."""
    left, right = _outputs(a), _outputs(b)
    assert sorted(left) == sorted(right)
    for name, path in left.items():
        if name.endswith(".nii.gz"):
            x = np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
            y = np.asarray(nib.load(str(right[name])).dataobj, dtype=np.float64)
            if np.issubdtype(nib.load(str(path)).get_data_dtype(), np.integer):
                assert np.array_equal(x, y), name
            else:
                scale = max(float(np.abs(x).max()), 1e-12)
                assert np.max(np.abs(x - y)) <= 1e-5 * scale, name
        elif name.endswith(".json") and name != "dataset_description.json":
            assert _without_timing(json.loads(path.read_text())) == _without_timing(
                json.loads(right[name].read_text())), name
        elif name.endswith(".tsv"):
            assert path.read_bytes() == right[name].read_bytes(), name


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash")
    generate_demo_cohort(root, n_subjects=3, seed=5, straight_reference=False)
    return root


@pytest.fixture(scope="module")
def clean_run(cohort: Path) -> Path:
    """Uninterrupted participant run of every subject."""
    out = cohort / "clean"
    subprocess.run(_app(cohort / "bids", out, "participant", "--skip-bids-validation",
                        "--nprocs", "2"), check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def clean_group(cohort: Path, clean_run: Path) -> Path:
    """Uninterrupted group run on a copy of the clean participant outputs."""
    out = cohort / "clean-group"
    shutil.copytree(clean_run, out, symlinks=True)
    subprocess.run(_app(cohort / "bids", out, "group", *GROUP_ARGS), check=True,
                   capture_output=True)
    return out


@pytest.mark.parametrize("kill_after", ["standardize", "discs", "morphometrics"])
def test_participant_killed_then_rerun_matches(kill_after: str, cohort: Path, clean_run: Path,
                                               tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = _app(cohort / "bids", out, "participant", "--skip-bids-validation",
                "--participant-label", "01", "--nprocs", "1")
    _run_killed(argv, out / "work" / "sub-01" / kill_after / "ledger.json")
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert f"sub-01: {kill_after}: outputs are current, skipped" in done.stderr
    assert "sub-01: standardize: running" not in done.stderr
    assert time.perf_counter() - start < 120
    clean_sub = {k: v for k, v in _outputs(clean_run).items() if k.startswith("sub-01/")}
    rerun = _outputs(out)
    assert sorted(k for k in rerun if k.startswith("sub-01/")) == sorted(clean_sub)
    assert_same_outputs(out / "sub-01", clean_run / "sub-01")


def test_group_killed_during_template_iterations_resumes(cohort: Path, clean_run: Path,
                                                          clean_group: Path,
                                                          tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(clean_run, out, symlinks=True)
    argv = _app(cohort / "bids", out, "group", *GROUP_ARGS)
    first = out / "work" / "group" / "template" / "iter-001"
    _run_killed(argv, first / "avg.nii.gz")
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "straighten: outputs are current, skipped" in done.stderr
    assert "template iter-000: outputs are current, skipped" in done.stderr
    assert_same_outputs(out / "tpl-SpinalCord", clean_group / "tpl-SpinalCord")
