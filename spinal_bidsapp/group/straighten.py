"""Group stage 3: every subject straightened onto the template space (disc matching, or in
proportion to arc length without disc alignment), cord intensity normalised; parallel, one
resumable step per subject."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.geometry.discs import ArcMap, discs_from_label_array
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
from spinal_bidsapp.geometry.straighten import compute_displacement, straighten_to_centerline
from spinal_bidsapp.geometry.template_space import (
    TemplateSpace,
    normalize_intensity,
    proportional_arc_map,
    subject_span,
)
from spinal_bidsapp.group.subjects import GroupSubject, subject_discs
from spinal_bidsapp.image import (
    Volume,
    load_mask,
    load_volume,
    read_discs,
    save_field,
    save_volume,
)
from spinal_bidsapp.runtime.ledger import run_step
from spinal_bidsapp.runtime.parallel import map_isolated

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StraightenJob:
    subject: GroupSubject
    space: TemplateSpace
    step_dir: Path
    image: Path
    cord: Path
    coverage: Path
    to_template: Path
    from_template: Path


def straighten_subjects(config: RunConfig, subjects: list[GroupSubject], space: TemplateSpace,
                        work: Path, *, nprocs: int) -> tuple[list[StraightenJob], int]:
    """Straighten every subject (``nprocs`` workers); returns the jobs that succeeded and the
    number that failed (each failure logged).

    Raises
    ------
    InputDataError
        Fewer than two subjects could be straightened.
    """
    ex = config.execution
    jobs = [straighten_job(work, subject, space) for subject in subjects]
    outcomes = map_isolated(straighten_for_template, jobs, [s.label for s in subjects],
                            nprocs=nprocs, stop_on_first_crash=ex.stop_on_first_crash,
                            desc="straightening")
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        logger.error("%s: straightening failed: %s", outcome.label, outcome.error)
    usable = [job for job, outcome in zip(jobs, outcomes, strict=True) if outcome.ok]
    if len(usable) < 2:
        raise InputDataError("fewer than 2 subjects could be straightened; see the log")
    return usable, len(failed)


def straighten_job(work: Path, subject: GroupSubject, space: TemplateSpace) -> StraightenJob:
    folder = work / "straight" / subject.label
    return StraightenJob(subject=subject, space=space, step_dir=folder,
                         image=folder / "image.nii.gz", cord=folder / "cord.nii.gz",
                         coverage=folder / "coverage.nii.gz",
                         to_template=folder / "curve2straight.nii.gz",
                         from_template=folder / "straight2curve.nii.gz")


def straighten_for_template(job: StraightenJob) -> None:
    """Straighten one subject onto the template space and normalise its cord intensity."""
    discs = [job.subject.discs] if job.subject.discs is not None else []
    run_step("straighten", partial(_straighten, job), step_dir=job.step_dir,
             inputs=[job.subject.anat, job.subject.cord, *discs],
             params={"shape": job.space.shape, "affine": job.space.affine.tolist(),
                     "discs": job.space.disc_z_mm.tolist(),
                     "alignment": job.space.alignment, "span_mm": job.space.span_mm},
             outputs=[job.image, job.cord, job.coverage, job.to_template, job.from_template],
             label=job.subject.label)


def _straighten(job: StraightenJob) -> None:
    anat, cord = load_volume(job.subject.anat), load_mask(job.subject.cord)
    line = centerline_from_mask(cord.data, cord.affine)
    space = job.space
    if space.alignment == "discs":
        discs = load_mask(subject_discs(job.subject))
        result = straighten_to_centerline(
            line, space.centerline, anat.shape, anat.affine, space.shape, space.affine,
            input_discs=discs_from_label_array(discs.data, discs.affine),
            dest_discs=space.disc_points_mm())
        field, back = result.curve_to_straight, result.straight_to_curve
    else:
        field, back = _proportional_fields(job, anat, line)
    straight_cord = apply_field(cord.data.astype(np.float32), cord.affine, field, order=1)
    coverage = apply_field(np.ones(anat.shape, np.float32), anat.affine, field, order=1)
    image = apply_field(anat.data, anat.affine, field, order=3)
    image = normalize_intensity(np.clip(image, 0, None), straight_cord,
                                voxel_z_mm=float(abs(space.affine[2, 2])))
    save_volume(Volume(image, space.affine), job.image)
    save_volume(Volume(np.clip(straight_cord, 0, 1).astype(np.float32), space.affine), job.cord)
    save_volume(Volume((coverage > 0.999).astype(np.uint8), space.affine), job.coverage,
                dtype=np.uint8)
    save_field(field, job.to_template)
    save_field(back, job.from_template)


def _proportional_fields(job: StraightenJob, anat: Volume, line: Centerline
                         ) -> tuple[DisplacementField, DisplacementField]:
    """Both straightening fields without disc alignment (arc-length proportional over the span).
    """
    space = job.space
    anchors = None
    positions = None
    if space.alignment == "end_discs":
        anchors = (int(space.disc_values[0]), int(space.disc_values[-1]))
        positions = read_discs(subject_discs(job.subject), line)[1]
    arc_map = proportional_arc_map(subject_span(line.length_mm, positions, anchors), space)
    inverse = ArcMap(source_mm=arc_map.dest_mm, dest_mm=arc_map.source_mm)
    to_template = compute_displacement(space.shape, space.affine, space.centerline, line, inverse)
    from_template = compute_displacement(anat.shape, anat.affine, line, space.centerline, arc_map)
    return to_template, from_template
