"""One unit's run around its pipeline: the engine it runs on, the lock that keeps two jobs off
its folders, and the record the group level and the QC index read.

The steps themselves are in :mod:`spinal_bidsapp.participant.pipeline`; what is here decides
nothing about them, only whether the unit may run now and what its outcome leaves behind:

- a per-unit lock on ``<work>/sub-XX[_ses-YY]/.lock`` (another job on the same unit: exit 75
  after :data:`UNIT_LOCK_TIMEOUT_S` seconds), and the partial files a killed run of this unit
  left in its output folders removed;
- the unit's run record (``bids.status``): running, then success with its inputs and the
  outputs the group level reads, or failure with its exit code and error; a failed unit's files
  leave the outputs (quarantined in the work folder) and the QC index lists it as failed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from filelock import FileLock, Timeout

from spinal_bidsapp import __version__
from spinal_bidsapp.bids import status
from spinal_bidsapp.bids.outputs import derivative_path
from spinal_bidsapp.config import RunConfig, apply_thread_limits, sct_dir_from_environment
from spinal_bidsapp.engines import participant_engine, resolve_participant_engine
from spinal_bidsapp.engines.base import ParticipantEngine
from spinal_bidsapp.errors import SpinalBidsAppError, TemporaryFailure
from spinal_bidsapp.participant.pipeline import UnitSummary, run_pipeline
from spinal_bidsapp.participant.units import ParticipantUnit
from spinal_bidsapp.reports.model import QcRecord, subject_key
from spinal_bidsapp.reports.qc import rebuild_qc_index, write_qc_record

logger = logging.getLogger(__name__)

UNIT_LOCK_TIMEOUT_S = 5
"""Seconds a job waits for another job's lock on the same unit before it gives up (exit 75)."""


def _participant_engine(config: RunConfig, *, threads: int) -> ParticipantEngine:
    sct_dir = sct_dir_from_environment()
    kind = config.participant.engine
    return participant_engine(resolve_participant_engine(kind, sct_dir=sct_dir), kind=kind,
                              sct_dir=sct_dir, threads=threads)


def resolve_participant_engines(config: RunConfig) -> dict[str, str]:
    """Engine names and versions for provenance (raises ``EngineUnavailable`` when missing)."""
    sct_dir = sct_dir_from_environment()
    kind = config.participant.engine
    choice = resolve_participant_engine(kind, sct_dir=sct_dir)
    logger.info("Participant engine: %s (%s)", choice.name, choice.reason)
    return participant_engine(choice, kind=kind, sct_dir=sct_dir, threads=1).generated_by()


def process_unit(unit: ParticipantUnit, *, config: RunConfig, threads: int) -> UnitSummary:
    """Run every step of the cord reference for one subject/session (under a per-unit lock)."""
    apply_thread_limits(threads)
    logger.debug("%s: %d thread(s) for ITK/BLAS in this worker", unit.label, threads)
    ex = config.execution
    work = ex.resolved_work_dir / unit.source.entity_prefix
    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / ".lock"), timeout=UNIT_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise TemporaryFailure(
            f"{unit.label} is being processed by another job (lock {work / '.lock'}); "
            "wait for it to finish"
        ) from exc
    try:
        out = ex.output_dir.resolve()
        for folder in ("anat", "figures"):  # partial files of a killed run of this unit
            for leftover in (out / unit.source.subject_dir / folder).glob(".*.tmp*"):
                leftover.unlink(missing_ok=True)
        if ex.reports_only:
            return run_pipeline(unit, config, out, work,
                                engine=_participant_engine(config, threads=threads))
        return _run_recorded(unit, config, out, work, threads=threads)
    finally:
        lock.release()


def _run_recorded(unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                  threads: int) -> UnitSummary:
    """Run the pipeline, recording its state for the group level (``bids.status``); a failed
    unit's files leave the outputs and the QC index lists it as failed."""
    key, run_uuid = unit.label, config.execution.run_uuid
    status.record_running(out, key, run_uuid=run_uuid)
    try:
        summary = run_pipeline(unit, config, out, work,
                               engine=_participant_engine(config, threads=threads))
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, SpinalBidsAppError) else 1
        error = str(exc) if isinstance(exc, SpinalBidsAppError) else \
            f"unexpected {exc.__class__.__name__}: {exc}"
        status.record_failure(out, key, run_uuid=run_uuid, exit_code=code, error=error)
        status.quarantine_outputs(out, unit.source, work / "failed-outputs")
        _publish_failure(unit, config, out, error)
        raise
    status.record_success(
        out, key, run_uuid=run_uuid,
        inputs=status.unit_inputs(unit.source, unit.labels),
        outputs={kind: derivative_path(out, kind, unit.source)
                 for kind in status.GROUP_OUTPUTS})
    return summary


def _publish_failure(unit: ParticipantUnit, config: RunConfig, out: Path, error: str) -> None:
    """A QC index entry saying the unit failed, with its error and a link to the run's log."""
    src, ex = unit.source, config.execution
    write_qc_record(QcRecord(
        key=subject_key(f"sub-{src.subject}", f"ses-{src.session}" if src.session else None),
        subject=src.subject, session=src.session,
        report=f"logs/{ex.analysis_level}_{ex.run_uuid}.log", steps=(), warnings=0, errors=1,
        version=__version__, engine=config.participant.engine, failure=error), out)
    rebuild_qc_index(out)
