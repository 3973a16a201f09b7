"""Group stage 2: the straight template space of the cohort (``geometry.template_space``).

With disc alignment: the mean arc length of every vertebral level, a straight line with the discs
at those distances and a grid around it. Without (``--no-disc-alignment``): a line as long as the
mean span between the first and last common disc, or between the cord ends.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.geometry.template_space import (
    TemplateSpace,
    average_levels,
    common_end_discs,
    define_length_space,
    define_template_space,
    subject_span,
)
from spinal_bidsapp.group.subjects import GroupSubject, subject_discs
from spinal_bidsapp.image import load_centerline, read_discs
from spinal_bidsapp.runtime.files import write_json

logger = logging.getLogger(__name__)


def build_space(config: RunConfig, subjects: list[GroupSubject]) -> TemplateSpace:
    """The template space of ``subjects`` (disc-aligned unless ``--no-disc-alignment``)."""
    group, part = config.group, config.participant
    if group.no_disc_alignment:
        return _build_length_space(config, subjects)
    positions = {}
    for subject in subjects:
        _, line = load_centerline(subject.cord)
        positions[subject.label] = read_discs(subject_discs(subject), line)[1]
    levels = average_levels(positions, first_disc=part.first_disc, last_disc=part.last_disc)
    space = define_template_space(levels, resolution_mm=group.template_resolution_mm,
                                  xy_half_mm=group.template_xy_size_mm,
                                  margin_mm=group.template_margin_mm)
    logger.info("Template space: discs %s at z %s mm, grid %s at %.2f mm",
                space.disc_values.tolist(), np.round(space.disc_z_mm, 1).tolist(),
                space.shape, group.template_resolution_mm)
    return space


def _build_length_space(config: RunConfig, subjects: list[GroupSubject]) -> TemplateSpace:
    """Template space without disc alignment: the mean span between the first and last disc
    common to all subjects (when every subject has discs), else between the cord ends."""
    group, part = config.group, config.participant
    lines = {s.label: load_centerline(s.cord)[1] for s in subjects}
    positions = {s.label: read_discs(s.discs, lines[s.label])[1]
                 for s in subjects if s.discs is not None}
    anchors = common_end_discs(positions, first_disc=part.first_disc,
                               last_disc=part.last_disc) if len(positions) == len(subjects) \
        else None
    spans = [subject_span(lines[s.label].length_mm, positions.get(s.label), anchors)
             for s in subjects]
    span_mm = float(np.mean([top - bottom for bottom, top in spans]))
    space = define_length_space(span_mm, anchors=anchors,
                                resolution_mm=group.template_resolution_mm,
                                xy_half_mm=group.template_xy_size_mm,
                                margin_mm=group.template_margin_mm)
    logger.info("Template space without disc alignment: mean span %.1f mm between %s, grid %s "
                "at %.2f mm", span_mm,
                f"discs {anchors[0]} and {anchors[1]}" if anchors else "the cord ends",
                space.shape, group.template_resolution_mm)
    return space


def write_space_record(path: Path, space: TemplateSpace) -> None:
    """``work/group/template_space.json``: the space as built, for inspection and reuse."""
    write_json(path, {
        "alignment": space.alignment, "span_mm": space.span_mm,
        "discs": space.disc_values.tolist(), "disc_z_mm": space.disc_z_mm.tolist(),
        "levels": [vars(level) for level in space.levels], "shape": list(space.shape),
        "affine": space.affine.tolist()})
