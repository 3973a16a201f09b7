"""Participant level: plan the work units, run them in parallel, summarise failures.

A unit is one (subject, session) with its chosen anatomy and manual labels (``units``); the
per-unit pipeline (``pipeline``, run under the unit's lock and recorded by
``unit_run.process_unit``) is an ordered list of resumable steps calling the engine object
(``engines.participant_engine``; engine-independent steps in ``steps``, the page in
``report``). Units never touch each other's files, so several processes (or SLURM array tasks)
can share one output folder.
"""

from __future__ import annotations

import logging
from functools import partial

from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import NoDataSelectedError, SubjectFailed
from spinal_bidsapp.participant.units import plan_units
from spinal_bidsapp.runtime.parallel import Outcome, map_isolated, plan_workers

logger = logging.getLogger(__name__)

PARTICIPANT_GB_PER_WORKER = 1.0
"""Memory budget of one subject: peak RSS measured at 0.39-0.45 GB (1 mm and 0.5 mm cervical
images, docs/benchmarks.md), doubled for larger fields of view."""


def run_participant_level(config: RunConfig, *, engines: dict[str, str]) -> int:
    """Process every selected unit; exit 0 if all succeeded, else the failure code."""
    # here, not at the top: the group level imports participant.units (this package's
    # __init__ runs first) and must not load the participant pipeline and engines with it
    from spinal_bidsapp.participant.unit_run import process_unit, resolve_participant_engines

    units, problems = plan_units(config)
    engines.update(resolve_participant_engines(config))
    ex = config.execution
    workers = plan_workers(ex.nprocs, len(units), mem_gb=ex.mem_gb,
                           gb_per_worker=PARTICIPANT_GB_PER_WORKER)
    outcomes: list[Outcome[object]] = map_isolated(
        partial(process_unit, config=config, threads=max(1, (ex.omp_nthreads or
                                                              ex.nprocs // workers))),
        units, [u.label for u in units], nprocs=workers,
        stop_on_first_crash=ex.stop_on_first_crash,
    )
    failed = [o for o in outcomes if not o.ok]
    for problem in problems:
        logger.error("%s: %s", problem.label, problem.message)
    for outcome in failed:
        logger.error("%s failed: %s", outcome.label, outcome.error)
    done = len(outcomes) - len(failed)
    logger.info("Participant level finished: %d of %d succeeded", done,
                len(units) + len(problems))
    if len(units) + len(problems) == 1:
        if problems and problems[0].exit_code != NoDataSelectedError.exit_code:
            raise SubjectFailed(f"{problems[0].label}: {problems[0].message}",
                                problems[0].exit_code)
        if problems:
            raise NoDataSelectedError(f"{problems[0].label}: {problems[0].message}")
        if failed:
            raise SubjectFailed(f"{failed[0].label}: {failed[0].error}", failed[0].exit_code)
    return 1 if failed or problems else 0
