"""The participant level's units of work: one (subject, session) with its chosen anatomy, its
manual labels and the session's companion images.

A leaf of the participant level (it imports no other part of it): the group level plans the same
units from here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from spinal_bidsapp.bids.dataset import (
    SourceImage,
    choose_anatomy,
    find_anatomy,
    index_dataset,
    select_sessions,
    select_subjects,
)
from spinal_bidsapp.bids.labels import ManualLabels, find_manual_labels, labelled_sources
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import NoDataSelectedError

logger = logging.getLogger(__name__)

ANCHOR_CONTRASTS = ("T2w", "T1w")
"""Contrasts whose session images can lend the disc labelling a C2 anchor (sagittal 3D
anatomies; the thick-slice T2*w stacks never show C2 with bone above it)."""

@dataclass(frozen=True)
class ParticipantUnit:
    """One subject/session to process: the driving anatomy and its manual labels."""

    source: SourceImage
    labels: ManualLabels
    companions: tuple[SourceImage, ...] = ()
    """The session's image of the other sagittal contrast (T2w for a T1w anatomy and vice
    versa), if any: the builtin disc labelling looks for C2 on it when the anatomy's field does
    not show C2 (a T1w often reaches higher than the T2w it goes with), and for the discs whose
    band the anatomy's field cuts."""

    @property
    def label(self) -> str:
        return self.source.entity_prefix


@dataclass(frozen=True)
class UnitProblem:
    """A subject/session that cannot even be planned (no anatomy)."""

    label: str
    message: str
    exit_code: int = NoDataSelectedError.exit_code


def _name_round_trips(source: SourceImage) -> bool:
    """The file name is exactly what its parsed entities give: otherwise part of the name was
    not understood (``acq-é``) and two files could share one set of derivative names."""
    return source.path.name in (f"{source.stem}.nii.gz", f"{source.stem}.nii")


def plan_units(config: RunConfig) -> tuple[list[ParticipantUnit], list[UnitProblem]]:
    """Discover the units of work (index once; one anatomy per subject/session)."""
    ex, part = config.execution, config.participant
    # the index lives in this run's own folder: concurrent jobs (SLURM arrays) never share it
    dataset = index_dataset(ex.bids_dir,
                            database_dir=ex.resolved_work_dir / ex.run_uuid / "bids_db")
    units: list[ParticipantUnit] = []
    problems: list[UnitProblem] = []
    for subject in select_subjects(dataset, ex.participant_label):
        for session in select_sessions(dataset, subject, ex.session_label):
            where = f"sub-{subject}" + (f"_ses-{session}" if session else "")
            found = find_anatomy(dataset, subject, session, contrasts=part.contrast,
                                 datatype=part.data_type, bids_filter=ex.bids_filter)
            candidates = [c for c in found if _name_round_trips(c)]
            for bad in (c for c in found if c not in candidates):
                logger.warning("%s: %s ignored: its name is not valid BIDS (entity labels are "
                               "letters and digits only), so its outputs and manual labels would "
                               "be another image's; rename it", where, bad.path.name)
            if found and not candidates:
                problems.append(UnitProblem(
                    where, f"{found[0].path.name}: the file name is not valid BIDS (entity "
                    "labels are letters and digits only); rename it", exit_code=65))
                continue
            if not candidates:
                problems.append(UnitProblem(
                    where, f"no {' or '.join(part.contrast)} image in {part.data_type}/ "
                    "(choose the contrast with --contrast)"))
                continue
            chosen = choose_anatomy(candidates,
                                    labelled=labelled_sources(ex.labels_dir, candidates))
            companions = []
            for other in ANCHOR_CONTRASTS:
                others = [] if other == chosen.suffix else find_anatomy(
                    dataset, subject, session, contrasts=[other], datatype=part.data_type,
                    bids_filter=ex.bids_filter)
                if others:
                    companions.append(choose_anatomy(
                        others, labelled=labelled_sources(ex.labels_dir, others)))
            units.append(ParticipantUnit(chosen, find_manual_labels(ex.labels_dir, chosen),
                                         tuple(companions)))
    if ex.session_label and not units and not problems:
        raise NoDataSelectedError(
            f"session label(s) {', '.join(ex.session_label)} match no data in {ex.bids_dir}"
        )
    for unit in units:
        kinds = [k for k in ("cord_mask", "discs", "centerline") if getattr(unit.labels, k)]
        logger.info("%s: anatomy %s; manual labels: %s", unit.label, unit.source.path.name,
                    ", ".join(kinds) or "none")
    return units, problems
