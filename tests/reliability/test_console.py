"""Without -v the console shows one line per problem; the traceback is always in the log file
(issue 22, item 4). A full disk is simulated with a real file-size limit (RLIMIT_FSIZE: writes
past it fail with EFBIG, as they fail with ENOSPC on a full disk). About 15 s."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import latest_log, make_bids


def _app(*args: str | Path, limit_bytes: int | None = None) -> subprocess.CompletedProcess[str]:
    def limit() -> None:
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-m", "spinal_bidsapp", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=300,
                          preexec_fn=limit)


@pytest.mark.parametrize("limit_bytes", [3_000, 60_000])
def test_full_disk_gives_one_line_and_exit_74(limit_bytes: int, tmp_path: Path) -> None:
    """3 kB: even the log file cannot be written; 60 kB: the BIDS index cannot."""
    root = make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w"]})
    out = tmp_path / "out"
    done = _app(root, out, "participant", "--skip-bids-validation", limit_bytes=limit_bytes)
    assert done.returncode == 74, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "--- Logging error ---" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("spinal_bidsapp:")]
    assert len(errors) == len([e for e in errors if "warning" in e]) + 1, done.stderr
    assert "a write failed" in errors[-1] and "free some space" in errors[-1]
    if limit_bytes > 10_000:
        assert "Traceback" in latest_log(out, "participant")


def test_crashing_subject_is_one_line_on_the_console(tmp_path: Path) -> None:
    """An RGB image makes today's pipeline raise an unexpected TypeError in one subject."""
    root = make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w"]})
    rgb = np.zeros((8, 8, 30), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), str(root / "sub-01" / "anat" / "sub-01_T2w.nii.gz"))
    out = tmp_path / "out"
    done = _app(root, out, "participant", "--skip-bids-validation", "--nprocs", "2")
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "sub-01 crashed: unexpected TypeError" in done.stderr
    assert "Traceback" in latest_log(out, "participant")
    verbose = _app(root, tmp_path / "out-v", "participant", "--skip-bids-validation", "-v")
    assert "Traceback" in verbose.stderr  # -v shows it on the console too
