"""A group run has its output folder to itself: a second group run, or a participant run, fails
at once with exit 75 instead of racing in ``work/group`` (issue 22, item 3). About 40 s."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from spinal_bidsapp.synth import generate_demo_cohort
from tests.reliability.test_process_lifetime import _wait_for

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "1"]


def _app(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "spinal_bidsapp", *map(str, args)]


def test_second_group_run_and_participant_run_wait_for_the_first(tmp_path: Path) -> None:
    generate_demo_cohort(tmp_path, n_subjects=3, seed=5, straight_reference=False)
    bids, out = tmp_path / "bids", tmp_path / "out"
    subprocess.run(_app(bids, out, "participant", "--skip-bids-validation", "--nprocs", "2"),
                   check=True, capture_output=True, timeout=300)
    first = subprocess.Popen(_app(bids, out, "group", *GROUP_ARGS),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "work" / "group" / "template_space.json", first)
        start = time.monotonic()
        second = subprocess.run(_app(bids, out, "group", *GROUP_ARGS), capture_output=True,
                                text=True, timeout=120, check=False)
        assert second.returncode == 75, second.stderr[-2000:]
        assert ("spinal_bidsapp: error: another group run is using this output directory"
                in second.stderr)
        participant = subprocess.run(
            _app(bids, out, "participant", "--skip-bids-validation", "--participant-label",
                 "01"), capture_output=True, text=True, timeout=120, check=False)
        assert participant.returncode == 75, participant.stderr[-2000:]
        assert "another group run is using this output directory" in participant.stderr
        assert time.monotonic() - start < 60  # both fail at once, they do not wait
        assert first.poll() is None  # and the first run goes on
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)


def test_group_run_waits_for_participant_runs(tmp_path: Path) -> None:
    """A group run started while participant runs hold the folder fails with exit 75."""
    generate_demo_cohort(tmp_path, n_subjects=3, seed=5, straight_reference=False)
    bids, out = tmp_path / "bids", tmp_path / "out"
    participant = subprocess.Popen(
        _app(bids, out, "participant", "--skip-bids-validation", "--nprocs", "1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(out / "work" / "sub-01" / "standardize" / "ledger.json", participant)
        group = subprocess.run(_app(bids, out, "group", *GROUP_ARGS), capture_output=True,
                               text=True, timeout=120, check=False)
        assert group.returncode == 75, group.stderr[-2000:]
        assert "participant runs are using this output directory" in group.stderr
    finally:
        participant.send_signal(signal.SIGTERM)
        participant.wait(timeout=60)
