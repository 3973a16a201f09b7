"""A step run twice at once (scoop resends futures it lost track of) runs its action once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from spinal_bidsapp.runtime.files import write_text
from spinal_bidsapp.runtime.ledger import run_step


def _slow_step(work: Path) -> None:
    def action() -> None:
        with (work / "runs.txt").open("a") as runs:
            runs.write("run\n")
        time.sleep(1.0)
        write_text(work / "out.txt", "result")

    run_step("slow", action, step_dir=work / "step", inputs=[], params={"p": 1},
             outputs=[work / "out.txt"])


def test_the_same_step_started_twice_at_once_runs_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_slow_step, args=(tmp_path,)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    assert [w.exitcode for w in workers] == [0, 0]
    assert (tmp_path / "runs.txt").read_text() == "run\n"
    assert (tmp_path / "out.txt").read_text() == "result"
