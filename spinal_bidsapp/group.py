"""Group level: a new unbiased spinal cord template from the participant outputs.

1. Collect each subject's participant outputs (anatomy, cord mask, discs; with
   ``--no-disc-alignment`` the discs are optional); subjects without them, or whose latest
   participant run failed or did not finish, or whose inputs or outputs changed since
   (``unitstatus``), are skipped with a warning naming the reason, and fewer than two usable
   subjects is an error.
2. Template space: mean arc length of every vertebral level, a straight line with the discs at
   those distances, a grid around it (``templatespace``); without disc alignment, a line as long
   as the mean span between the first and last common disc, or between the cord ends.
3. Every subject straightened onto it with disc matching (or in proportion to arc length over
   that span), cord intensity normalised (parallel, one resumable step per subject).
4. The template loop (builtin antspyx engine, or MINC/nist_mni_pipelines), resumable per
   iteration.
5. Outputs: a TemplateFlow-style folder and an SCT-ready folder (``group_outputs``), per-subject
   warps to the new template, a group QC page; with ``--contrasts``, templates of further
   contrasts on the same grid (``group_contrasts``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spinal_bidsapp.bids.dataset import SourceImage
from spinal_bidsapp.bids.outputs import derivative_path
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines.base import TemplateBuilder
from spinal_bidsapp.errors import InputDataError, UsageError
from spinal_bidsapp.runtime.files import write_json
from spinal_bidsapp.runtime.ledger import run_step
from spinal_bidsapp.runtime.parallel import map_isolated, plan_workers
from spinal_bidsapp.templatespace import TemplateSpace
from spinal_bidsapp.unitstatus import (
    GROUP_OUTPUTS,
    stale_reason,
    unfinished_reason,
    unit_inputs,
)

if TYPE_CHECKING:
    from spinal_bidsapp.geometry.centerline import Centerline
    from spinal_bidsapp.geometry.fields import DisplacementField
    from spinal_bidsapp.image import Volume

logger = logging.getLogger(__name__)

GROUP_GB_PER_WORKER = 1.0
"""Memory budget of one straightening or template registration worker at 0.5 mm."""


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


def collect_subjects(config: RunConfig) -> list[GroupSubject]:
    """Participant outputs of every selected subject; those lacking any are skipped (warned)."""
    from spinal_bidsapp.participant import plan_units

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


def build_space(config: RunConfig, subjects: list[GroupSubject]) -> TemplateSpace:
    from spinal_bidsapp.cordref_steps import load_centerline, read_discs
    from spinal_bidsapp.templatespace import average_levels, define_template_space

    group, part = config.group, config.participant
    if group.no_disc_alignment:
        return _build_length_space(config, subjects)
    positions = {}
    for subject in subjects:
        _, line = load_centerline(subject.cord)
        positions[subject.label] = read_discs(_discs(subject), line)[1]
    levels = average_levels(positions, first_disc=part.first_disc, last_disc=part.last_disc)
    space = define_template_space(levels, resolution_mm=group.template_resolution_mm,
                                  xy_half_mm=group.template_xy_size_mm,
                                  margin_mm=group.template_margin_mm)
    logger.info("Template space: discs %s at z %s mm, grid %s at %.2f mm",
                space.disc_values.tolist(), np.round(space.disc_z_mm, 1).tolist(),
                space.shape, group.template_resolution_mm)
    return space


def _discs(subject: GroupSubject) -> Path:
    if subject.discs is None:
        raise InputDataError(f"{subject.label}: no disc labels; label the discs or use "
                             "--no-disc-alignment")
    return subject.discs


def _build_length_space(config: RunConfig, subjects: list[GroupSubject]) -> TemplateSpace:
    """Template space without disc alignment: the mean span between the first and last disc
    common to all subjects (when every subject has discs), else between the cord ends."""
    from spinal_bidsapp.cordref_steps import load_centerline, read_discs
    from spinal_bidsapp.templatespace import common_end_discs, define_length_space, subject_span

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
    from spinal_bidsapp.fieldio import save_field
    from spinal_bidsapp.geometry.centerline import centerline_from_mask
    from spinal_bidsapp.geometry.discs import discs_from_label_array
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.geometry.straighten import straighten_to_centerline
    from spinal_bidsapp.image import Volume, load_mask, load_volume, save_volume
    from spinal_bidsapp.templatespace import normalize_intensity

    anat, cord = load_volume(job.subject.anat), load_mask(job.subject.cord)
    line = centerline_from_mask(cord.data, cord.affine)
    space = job.space
    if space.alignment == "discs":
        discs = load_mask(_discs(job.subject))
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
    from spinal_bidsapp.cordref_steps import read_discs
    from spinal_bidsapp.geometry.discs import ArcMap
    from spinal_bidsapp.geometry.straighten import compute_displacement
    from spinal_bidsapp.templatespace import proportional_arc_map, subject_span

    space = job.space
    anchors = None
    positions = None
    if space.alignment == "end_discs":
        anchors = (int(space.disc_values[0]), int(space.disc_values[-1]))
        positions = read_discs(_discs(job.subject), line)[1]
    arc_map = proportional_arc_map(subject_span(line.length_mm, positions, anchors), space)
    inverse = ArcMap(source_mm=arc_map.dest_mm, dest_mm=arc_map.source_mm)
    to_template = compute_displacement(space.shape, space.affine, space.centerline, line, inverse)
    from_template = compute_displacement(anat.shape, anat.affine, line, space.centerline, arc_map)
    return to_template, from_template


def run_group_level(config: RunConfig, *, engines: dict[str, str]) -> int:
    """Build the template; exit 0 on success (failures raise)."""
    from spinal_bidsapp.group_outputs import publish_template

    ex = config.execution
    if ex.reports_only:
        raise UsageError(
            "--reports-only applies to the participant level; rerun the group level instead: "
            "its finished stages are reused and the group page is redrawn")
    if config.group.contrasts is not None:
        from spinal_bidsapp.group_contrasts import check_contrast_engine

        check_contrast_engine(config.group.contrasts, config.group.template_engine)
    subjects = collect_subjects(config)
    if config.group.contrasts is not None:
        from spinal_bidsapp.group_contrasts import check_contrasts

        check_contrasts(config.group.contrasts, subjects)
    target = None
    if config.group.register_to is not None:
        from spinal_bidsapp.group_outputs import resolve_registration_target

        target = resolve_registration_target(config, subjects[0].source.suffix)
        logger.info("The template will be registered to %s (%s)", target.name, target.folder)
    space = build_space(config, subjects)
    work = ex.resolved_work_dir / "group"
    write_json(work / "template_space.json", {
        "alignment": space.alignment, "span_mm": space.span_mm,
        "discs": space.disc_values.tolist(), "disc_z_mm": space.disc_z_mm.tolist(),
        "levels": [vars(level) for level in space.levels], "shape": list(space.shape),
        "affine": space.affine.tolist()})
    jobs = [_straighten_job(work, subject, space) for subject in subjects]
    workers = plan_workers(ex.nprocs, len(jobs), mem_gb=ex.mem_gb,
                           gb_per_worker=GROUP_GB_PER_WORKER)
    outcomes = map_isolated(straighten_for_template, jobs, [s.label for s in subjects],
                            nprocs=workers, stop_on_first_crash=ex.stop_on_first_crash,
                            desc="straightening")
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        logger.error("%s: straightening failed: %s", outcome.label, outcome.error)
    usable = [job for job, outcome in zip(jobs, outcomes, strict=True) if outcome.ok]
    if len(usable) < 2:
        raise InputDataError("fewer than 2 subjects could be straightened; see the log")
    builder, engine_name, engine_version = _template_builder(config)
    engines[engine_name] = engine_version
    from spinal_bidsapp.engines.base import TemplateSubject

    result = builder.build_template(
        [TemplateSubject(label=job.subject.label.replace("_", "-"), image=job.image,
                         cord_mask=job.cord) for job in usable],
        work_dir=work / "template", nprocs=workers)
    publish_template(config, space, result, usable, target, nprocs=workers)
    return 1 if failed else 0


def _straighten_job(work: Path, subject: GroupSubject, space: TemplateSpace) -> StraightenJob:
    folder = work / "straight" / subject.label
    return StraightenJob(subject=subject, space=space, step_dir=folder,
                         image=folder / "image.nii.gz", cord=folder / "cord.nii.gz",
                         coverage=folder / "coverage.nii.gz",
                         to_template=folder / "curve2straight.nii.gz",
                         from_template=folder / "straight2curve.nii.gz")


def _template_builder(config: RunConfig) -> tuple[TemplateBuilder, str, str]:
    """The template engine chosen by --template-engine, with its provenance name and version."""
    from spinal_bidsapp.engines import resolve_template_engine
    from spinal_bidsapp.engines.builtin.protocol import preset_options
    from spinal_bidsapp.engines.builtin.template import BuiltinTemplateBuilder

    group = config.group
    kind = group.template_engine
    if kind == "auto" and len(group.contrasts or ()) > 1:
        kind = "builtin"  # the MINC engine returns no per-subject warps (check_contrast_engine)
        logger.info("--contrasts %s: builtin template engine (the extra contrasts are resampled "
                    "through its per-subject warps)", " ".join(group.contrasts or ()))
    choice = resolve_template_engine(kind)
    logger.info("Template engine: %s (%s)", choice.name, choice.reason)
    if choice.name == "minc":
        from spinal_bidsapp.engines.minc import MincTemplateBuilder, minc_options

        minc = MincTemplateBuilder(minc_options(group.template_preset,
                                                symmetric=group.template_symmetric))
        return minc, "MINC nist_mni_pipelines", minc.info.version
    threads = max(1, (config.execution.omp_nthreads or 1))
    options = preset_options(group.template_preset, symmetric=group.template_symmetric,
                             seed=config.seeds.random_seed, threads_per_worker=threads)
    builtin = BuiltinTemplateBuilder(options)
    return builtin, "spinal_bidsapp template loop", builtin.info.version
