"""Workers and external tool trees die with the run; SIGTERM stops it like Ctrl-C, logged, and a
rerun resumes (issue 22, item 2). Real processes and signals; about 60 s in all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinal_bidsapp.synth import generate_demo_cohort
from tests.conftest import latest_log


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that does not reap counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] not in ("Z", "X")


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = {p for p in pids if _alive(p)}
        if not alive:
            return alive
        time.sleep(0.1)
    return {p for p in pids if _alive(p)}


def _wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, f"the run ended (code {proc.returncode}) before {path}"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture
def leftovers() -> Iterator[set[int]]:
    """Pids a test saw; whatever still runs at the end is killed (old code leaks them)."""
    pids: set[int] = set()
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    generate_demo_cohort(tmp_path, n_subjects=4, seed=5, straight_reference=False)
    return tmp_path / "bids"


def _participant(bids: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "spinal_bidsapp", str(bids), str(out), "participant",
            "--skip-bids-validation", "--nprocs", "2"]


def _start_and_wait_for_workers(bids: Path, out: Path, leftovers: set[int]
                                ) -> tuple[subprocess.Popen, set[int]]:
    # stderr to a file: orphaned workers would hold a pipe open forever
    with open(out.parent / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(_participant(bids, out), stdout=subprocess.DEVNULL,
                                stderr=stderr)
    _wait_for(out / "work" / "sub-01" / "standardize" / "ledger.json", proc)
    workers = _descendants(proc.pid)
    leftovers.update(workers)
    assert len(workers) >= 2, workers  # two pool workers (and the pool's helpers)
    return proc, workers


def test_sigterm_stops_the_run_and_its_workers_then_a_rerun_resumes(
        cohort: Path, tmp_path: Path, leftovers: set[int]) -> None:
    out = tmp_path / "out"
    proc, workers = _start_and_wait_for_workers(cohort, out, leftovers)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=30)
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code == 143, stderr[-2000:]
    assert _wait_gone(workers, 10) == set()
    assert "spinal_bidsapp: terminated (SIGTERM)" in stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGTERM" in latest_log(out, "participant")
    rerun = subprocess.run(_participant(cohort, out), capture_output=True, text=True,
                           timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "sub-01: standardize: outputs are current, skipped" in rerun.stderr


def test_sigkill_of_the_main_process_kills_its_workers(cohort: Path, tmp_path: Path,
                                                       leftovers: set[int]) -> None:
    proc, workers = _start_and_wait_for_workers(cohort, tmp_path / "out", leftovers)
    proc.kill()  # the main process only, not its group
    proc.wait()
    assert _wait_gone(workers, 10) == set()


TOOL_SCRIPT = """
import sys
from pathlib import Path
from spinal_bidsapp.engines.tools import run_tool
folder = Path(sys.argv[1])
run_tool(["sh", "-c", f"sleep 300 & echo $! > {folder}/pids; echo $$ >> {folder}/pids; wait"],
         log_file=folder / "tool.log", expected_outputs=[], threads=1, timeout_s=600)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_external_tool_tree_dies_with_the_process_that_started_it(
        sig: signal.Signals, tmp_path: Path, leftovers: set[int]) -> None:
    proc = subprocess.Popen([sys.executable, "-c", TOOL_SCRIPT, str(tmp_path)],
                            start_new_session=True)
    pids_file = tmp_path / "pids"
    deadline = time.monotonic() + 30
    while len(pids_file.read_text().split() if pids_file.exists() else []) < 2:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    tool = {int(p) for p in pids_file.read_text().split()}
    leftovers.update(tool)
    assert all(_alive(p) for p in tool)
    os.killpg(proc.pid, sig)  # the whole group of the caller: the tool has its own session
    proc.wait(timeout=10)
    assert _wait_gone(tool, 5) == set()
