"""--nprocs, --omp-nthreads and --mem-gb are honoured."""

from __future__ import annotations

from pathlib import Path

from spinal_bidsapp.cli.main import main
from tests.conftest import make_bids


def _log(out: Path) -> str:
    return next((out / "logs").glob("participant_*.log")).read_text()


def test_memory_budget_limits_parallel_subjects(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w"]})
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation", "--nprocs", "2",
                 "--mem-gb", "1"]) == 0
    assert "--mem-gb 1.0 allows 1 parallel worker(s)" in _log(out)


def test_thread_caps_follow_omp_nthreads(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation", "--nprocs", "2",
                 "--omp-nthreads", "3"]) == 0
    assert "sub-01: 3 thread(s) for ITK/BLAS in this worker" in _log(out)


def test_threads_split_among_parallel_subjects(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w"]})
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation",
                 "--nprocs", "2"]) == 0
    log = _log(out)
    assert "sub-01: 1 thread(s)" in log and "sub-02: 1 thread(s)" in log
