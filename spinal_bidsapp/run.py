"""One run, end to end: prepare outputs and logs, validate, index, dispatch to a level.

Dataset-level files (``dataset_description.json``, ``.bidsignore``, the saved configuration) are
written in ``finally:`` so they exist even when subjects fail. A group run has the output folder
to itself (``level_lock``): a second group run, or a participant run, fails at once with exit 75.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.outputs import write_dataset_files
from spinal_bidsapp.bids.validate import validate_dataset
from spinal_bidsapp.config import (
    RunConfig,
    apply_thread_limits,
    container_from_environment,
    scratch_environment,
)
from spinal_bidsapp.errors import MissingInputError, OutputNotWritableError, TemporaryFailure
from spinal_bidsapp.group import run_group_level
from spinal_bidsapp.participant import run_participant_level
from spinal_bidsapp.runtime.files import write_text
from spinal_bidsapp.runtime.runlog import setup_logging

logger = logging.getLogger(__name__)


def prepare_writable_dir(path: Path, *, what: str) -> Path:
    """Create a folder we write into (exit 73 with a clear message when that is impossible)."""
    if path.exists() and not path.is_dir():
        raise OutputNotWritableError(f"{what} path {path} exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create {what} folder {path}: {exc.strerror}; choose a writable location"
        ) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputNotWritableError(
            f"{what} folder {path} is not writable; fix its permissions or choose another folder"
        )
    return path.resolve()


LEVEL_LOCK = Path("logs") / ".level.lock"
"""In OUTPUT_DIR: participant runs hold it shared (SLURM arrays run side by side), a group run
holds it exclusive (it reads every subject's outputs and owns ``work/group``)."""


@contextlib.contextmanager
def level_lock(out: Path, level: str) -> Iterator[None]:
    """Hold the output folder's level lock for the run, or fail at once with exit 75."""
    path = out / LEVEL_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        mode = fcntl.LOCK_EX if level == "group" else fcntl.LOCK_SH
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TemporaryFailure(_lock_holder_message(path, level)) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_holder_message(path: Path, level: str) -> str:
    """Who holds the level lock: a shared lock still granted means participant runs."""
    participants = False
    if level == "group":
        with open(path, "rb") as probe:
            try:
                fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
                participants = True
                fcntl.flock(probe, fcntl.LOCK_UN)
            except BlockingIOError:
                pass
    other = "participant runs are" if participants else "another group run is"
    return (f"{other} using this output directory ({path.parent.parent}); wait for "
            f"{'them' if participants else 'it'} to finish, then rerun the {level} level")


def _raw_subject_dirs(bids_dir: Path) -> list[str]:
    return sorted(p.name[4:] for p in bids_dir.glob("sub-*") if p.is_dir())


def run(config: RunConfig) -> int:
    """Execute the configured analysis level; returns the process exit code."""
    ex = config.execution
    if not ex.bids_dir.is_dir():
        raise MissingInputError(
            f"BIDS directory not found: {ex.bids_dir}; give the path to a BIDS dataset"
        )
    out = prepare_writable_dir(ex.output_dir, what="output")
    run_dir = prepare_writable_dir(ex.resolved_work_dir / ex.run_uuid, what="work")
    logs = prepare_writable_dir(out / "logs", what="log")
    setup_logging(logs / f"{ex.analysis_level}_{ex.run_uuid}.log", verbose=ex.verbose)
    threads = ex.omp_nthreads or ex.nprocs
    apply_thread_limits(threads)
    write_text(run_dir / "config.json", config.to_json())
    logger.info("spinal_bidsapp %s, %s level, run %s", __version__, ex.analysis_level, ex.run_uuid)
    logger.info("input %s, output %s, work %s", ex.bids_dir, out, ex.resolved_work_dir)

    engines: dict[str, str] = {}
    with scratch_environment(ex.resolved_work_dir, run_dir), level_lock(out, ex.analysis_level):
        return _run_level(config, out, run_dir, engines)


def _run_level(config: RunConfig, out: Path, run_dir: Path, engines: dict[str, str]) -> int:
    ex = config.execution
    try:
        if not ex.skip_bids_validation:
            selected = set(ex.participant_label or [])
            ignored = [s for s in _raw_subject_dirs(ex.bids_dir) if selected and s not in selected]
            validate_dataset(ex.bids_dir, work_dir=run_dir, ignore_subjects=ignored)
        if ex.analysis_level == "participant":
            return run_participant_level(config, engines=engines)
        return run_group_level(config, engines=engines)
    finally:
        write_dataset_files(out, bids_dir=ex.bids_dir, engines=engines,
                            container=container_from_environment())
        write_text(out / "logs" / f"config-{ex.run_uuid}.json", config.to_json())
