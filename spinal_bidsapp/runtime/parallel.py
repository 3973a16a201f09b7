"""Run independent units (subjects, template registrations) in parallel, failures isolated.

A local process pool by default; scoop futures when the program was started with
``python -m scoop`` (multi-host runs with a hostfile on a shared filesystem). A failing unit never
stops the others unless ``stop_on_first_crash`` is set; its error is returned as an ``Outcome``.
Workers die with the main process (``lifetime.worker_initializer``), and an interrupted map
(Ctrl-C, SIGTERM) kills them at once instead of waiting for their current units.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Generic, TypeVar

from spinal_bidsapp.errors import SpinalBidsAppError
from spinal_bidsapp.runtime.lifetime import worker_initializer
from spinal_bidsapp.runtime.runlog import FILE_ONLY, one_line, progress_bar

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """Result of one unit: ``value`` on success, else ``exit_code`` and a one-line ``error``."""

    label: str
    value: R | None = None
    exit_code: int = 0
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def _call(fn: Callable[[T], R], item: T, label: str) -> Outcome[R]:
    try:
        return Outcome(label=label, value=fn(item))
    except SpinalBidsAppError as exc:
        logging.getLogger("spinal_bidsapp").debug("%s failed", label, exc_info=True)
        return Outcome(label=label, exit_code=exc.exit_code, error=str(exc))
    except Exception as exc:
        error = f"unexpected {exc.__class__.__name__}: {one_line(str(exc))}"
        log = logging.getLogger("spinal_bidsapp")
        log.error("%s crashed: %s (traceback in the log file)", label, error)
        log.error("%s crashed:\n%s", label, traceback.format_exc(), extra=FILE_ONLY)
        return Outcome(label=label, exit_code=1, error=error)


def plan_workers(nprocs: int, n_items: int, *, mem_gb: float | None,
                 gb_per_worker: float) -> int:
    """Parallel workers within ``--nprocs`` and, when given, the ``--mem-gb`` budget.

    >>> plan_workers(8, 10, mem_gb=3.0, gb_per_worker=1.0), plan_workers(2, 5, mem_gb=None,
    ...                                                                  gb_per_worker=1.0)
    (3, 2)
    """
    workers = max(1, min(nprocs, n_items))
    if mem_gb is not None:
        affordable = max(1, int(mem_gb // gb_per_worker))
        if affordable < workers:
            logger.info("--mem-gb %.1f allows %d parallel worker(s) of about %.1f GB each "
                        "(--nprocs %d)", mem_gb, affordable, gb_per_worker, nprocs)
        workers = min(workers, affordable)
    return workers


def scoop_running() -> bool:
    """True when started as ``python -m scoop ...`` (checked without importing scoop otherwise)."""
    module = sys.modules.get("scoop")
    return bool(module is not None and getattr(module, "IS_RUNNING", False))


def map_isolated(fn: Callable[[T], R], items: Sequence[T], labels: Sequence[str], *,
                 nprocs: int, stop_on_first_crash: bool = False,
                 desc: str = "subjects") -> list[Outcome[R]]:
    """Apply ``fn`` to every item; returns outcomes in input order (a progress bar on a TTY)."""
    if scoop_running():
        from scoop import futures as scoop_futures

        return list(scoop_futures.map(_call, [fn] * len(items), items, labels))
    if nprocs <= 1 or len(items) <= 1:
        outcomes: list[Outcome[R]] = []
        with progress_bar(len(items), desc=desc) as advance:
            for item, label in zip(items, labels, strict=True):
                outcomes.append(_call(fn, item, label))
                advance(1)
                if stop_on_first_crash and not outcomes[-1].ok:
                    break
        return outcomes
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    results: dict[int, Outcome[R]] = {}
    pool = ProcessPoolExecutor(max_workers=min(nprocs, len(items)), mp_context=context,
                               initializer=worker_initializer, initargs=(os.getpid(),))
    try:
        futures: dict[Future[Outcome[R]], int] = {
            pool.submit(_call, fn, item, label): index
            for index, (item, label) in enumerate(zip(items, labels, strict=True))
        }
        pending = set(futures)
        with progress_bar(len(items), desc=desc) as advance:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                advance(len(done))
                pending = _collect(done, pending, futures, labels, results,
                                   stop_on_first_crash)
    except BaseException:  # Ctrl-C, SIGTERM: the workers stop now, not after their subjects
        _kill_workers(pool)
        raise
    pool.shutdown(wait=True)
    return [results[i] for i in sorted(results)]


def _kill_workers(pool: ProcessPoolExecutor) -> None:
    """SIGKILL every worker (their tools' watchdogs then kill the tools) and drop the queue."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(ProcessLookupError, AttributeError):
            process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(timeout=5)


def _collect(done: set[Future[Outcome[R]]], pending: set[Future[Outcome[R]]],
             futures: dict[Future[Outcome[R]], int], labels: Sequence[str],
             results: dict[int, Outcome[R]], stop_on_first_crash: bool
             ) -> set[Future[Outcome[R]]]:
    """Record finished futures; cancel the rest after a failure when asked to."""
    for future in done:
        index = futures[future]
        try:
            results[index] = future.result()
        except BrokenProcessPool:
            results[index] = Outcome(
                label=labels[index], exit_code=1,
                error="worker process died (killed, often out of memory: lower --nprocs or "
                      "raise the memory limit)")
        if stop_on_first_crash and not results[index].ok:
            for other in pending:
                other.cancel()
            return set()
    return pending
