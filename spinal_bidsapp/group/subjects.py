"""Group stage 1: the subjects whose participant outputs are usable for a template."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from spinal_bidsapp.bids.dataset import SourceImage
from spinal_bidsapp.bids.outputs import derivative_path
from spinal_bidsapp.bids.status import (
    GROUP_OUTPUTS,
    stale_reason,
    unfinished_reason,
    unit_inputs,
)
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.participant.units import plan_units

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GroupSubject:
    """One subject's participant outputs, as the group level uses them."""

    source: SourceImage
    anat: Path
    cord: Path
    discs: Path | None
    """None only without disc alignment, for a subject that has no disc labels."""

    @property
    def label(self) -> str:
        return self.source.entity_prefix


def collect_subjects(config: RunConfig) -> list[GroupSubject]:
    """Participant outputs of every selected subject; those lacking any are skipped (warned)."""
    out = config.execution.output_dir.resolve()
    units, problems = plan_units(config)
    subjects, skipped = [], [p.label for p in problems]
    discs_optional = config.group.no_disc_alignment
    for unit in units:
        anat, cord, discs = (derivative_path(out, kind, unit.source)
                             for kind in ("anat_preproc", "cord_mask", "discs"))
        required = [anat, cord] if discs_optional else [anat, cord, discs]
        missing = [p.name for p in required if not p.is_file()]
        reason = unfinished_reason(out, unit.label)
        if reason is None and missing:
            reason = (f"participant outputs missing ({', '.join(missing)}); run the participant "
                      "level first")
        if reason is None:
            reason = stale_reason(out, unit.label, inputs=unit_inputs(unit.source, unit.labels),
                                  outputs={kind: derivative_path(out, kind, unit.source)
                                           for kind in GROUP_OUTPUTS})
        if reason is not None:
            logger.warning("%s: skipped, %s", unit.label, reason)
            skipped.append(unit.label)
            continue
        subjects.append(GroupSubject(unit.source, anat, cord,
                                     discs if discs.is_file() else None))
    logger.info("Group level: %d usable subjects, %d skipped%s", len(subjects), len(skipped),
                f" ({', '.join(skipped)})" if skipped else "")
    if len(subjects) < 2:
        needed = "cord mask" if discs_optional else "cord mask and disc labels"
        raise InputDataError(
            f"a template needs at least 2 subjects with participant outputs ({needed}) in {out}; "
            f"found {len(subjects)}: run the participant level first")
    return subjects


def subject_discs(subject: GroupSubject) -> Path:
    """The subject's disc labels; a clear error for a subject without them."""
    if subject.discs is None:
        raise InputDataError(f"{subject.label}: no disc labels; label the discs or use "
                             "--no-disc-alignment")
    return subject.discs
