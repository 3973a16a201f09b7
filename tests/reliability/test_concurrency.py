"""Four participant jobs on different subjects writing into one output folder at once (as a
SLURM array does) give exactly the outputs of a serial run; nprocs 1 and 2 agree too."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spinal_bidsapp.synth import generate_demo_cohort
from tests.reliability.test_crash_resume import _outputs, assert_same_outputs

pytestmark = pytest.mark.slow

SUBJECTS = ["01", "02", "03", "04"]


def _participant(bids: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "spinal_bidsapp", str(bids), str(out),
                             "participant", "--skip-bids-validation", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("concurrent")
    generate_demo_cohort(root, n_subjects=len(SUBJECTS), seed=11, straight_reference=False)
    return root


@pytest.fixture(scope="module")
def serial(cohort: Path) -> Path:
    out = cohort / "serial"
    proc = _participant(cohort / "bids", out, "--nprocs", "1")
    assert proc.wait() == 0, proc.stderr.read() if proc.stderr else ""
    return out


def test_concurrent_jobs_match_a_serial_run(cohort: Path, serial: Path) -> None:
    out = cohort / "parallel-jobs"
    procs = [_participant(cohort / "bids", out, "--participant-label", s, "--nprocs", "1")
             for s in SUBJECTS]
    codes = [p.wait() for p in procs]
    assert codes == [0, 0, 0, 0], [p.stderr.read() for p in procs if p.stderr]
    assert_same_outputs(out, serial)
    records = sorted(p.name for p in (out / "qc" / "records").glob("*.json"))
    assert records == [f"sub-{s}.json" for s in SUBJECTS]
    index = (out / "qc" / "index.html").read_text()
    assert all(f"sub-{s}" in index for s in SUBJECTS)
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"


def test_nprocs_does_not_change_results(cohort: Path, serial: Path) -> None:
    out = cohort / "two-procs"
    proc = _participant(cohort / "bids", out, "--nprocs", "2")
    assert proc.wait() == 0
    assert_same_outputs(out, serial)


def test_repeated_runs_are_identical(cohort: Path, serial: Path) -> None:
    out = cohort / "again"
    proc = _participant(cohort / "bids", out, "--nprocs", "1")
    assert proc.wait() == 0
    assert_same_outputs(out, serial)
    assert sorted(_outputs(out)) == sorted(_outputs(serial))


def test_same_subject_twice_at_once_fails_fast(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = _participant(cohort / "bids", out, "--participant-label", "01")
    second = _participant(cohort / "bids", out, "--participant-label", "01")
    codes = sorted([first.wait(), second.wait()])
    assert codes[0] == 0
    assert codes[1] in (0, 75)  # 75: temporary failure, the other job holds the subject's lock
