"""Group ``--contrasts``: templates of further contrasts, aligned with the driving one by
construction.

For every subject and extra contrast (T1w, T2starw):

1. the raw image of that contrast (same subject/session) is aligned with the subject's driving
   anatomy (the participant ``desc-preproc`` image): scanner coordinates, refined by a rigid then
   affine antspyx registration of the two smoothed cord masks (the driving mask from the
   participant level, the contrast's manual mask from ``derivatives/labels``) when that mask
   exists and the refinement improves the cord overlap, then by a small nonlinear step (SyN from
   the affine result, in a box around the driving cord, masks plus intensity mutual information)
   kept only when it improves the cord overlap again (see :func:`register_contrast`). Without
   the contrast's mask, the subject's driving cord mask (moved by the straightening and loop
   warps) stands in for it in the contrast template's cord mask. The result is one displacement
   field on the driving-anatomy grid: driving-anatomy point -> extra-contrast point.
2. One pull field on the template grid: template point -> (template-loop warp) -> straightened
   point -> (curve-to-straight field) -> driving-anatomy point -> (contrast registration) ->
   extra-contrast point. The extra contrast is resampled once through it, intensity-normalised
   along the cord (the driving cord mask moved the same way), and averaged over the subjects
   that have the contrast, weighted by coverage (the straightening coverage moved by the loop
   warp, times the extra image's own field of view). The contrast template's cord mask is the
   coverage-weighted mean of the warped cord masks >= 0.5 (so a contrast acquired as a short
   axial slab, as T2*w often is, has a mask over that slab only).
3. Each contrast template lies on the driving template's grid, so the disc labels are shared
   (asserted); the cord masks are compared by Dice over the template slices the contrast covers
   (:func:`covered_slices`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from spinal_bidsapp.bids.dataset import choose_anatomy, find_anatomy, index_dataset
from spinal_bidsapp.bids.labels import find_manual_labels, labelled_sources
from spinal_bidsapp.bids.outputs import template_path
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines import TEMPLATE_ENGINES_WITHOUT_WARPS
from spinal_bidsapp.engines.base import TemplateBuildResult
from spinal_bidsapp.engines.builtin.contrast_registration import (
    REGISTRATION_METHOD,
    register_contrast,
)
from spinal_bidsapp.errors import InputDataError, UsageError
from spinal_bidsapp.geometry.fields import apply_field, compose_fields
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.geometry.template_space import TemplateSpace, normalize_intensity
from spinal_bidsapp.group.straighten import StraightenJob
from spinal_bidsapp.group.subjects import GroupSubject
from spinal_bidsapp.image import (
    Volume,
    load_field,
    load_mask,
    load_volume,
    save_field,
    save_volume,
)
from spinal_bidsapp.runtime.files import write_json
from spinal_bidsapp.runtime.ledger import run_step
from spinal_bidsapp.runtime.parallel import map_isolated

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContrastJob:
    """One subject's extra contrast, to be resampled into the template."""

    label: str
    contrast: str
    image: Path
    """Raw image of the extra contrast."""
    cord: Path | None
    """Its manual cord mask (``derivatives/labels``), if any."""
    anat: Path
    anat_cord: Path
    to_straight: Path
    loop_warp: Path | None
    coverage: Path
    template_affine: tuple[tuple[float, ...], ...]
    seed: int
    step_dir: Path

    @property
    def outputs(self) -> dict[str, Path]:
        names = ("registration", "image", "weight", "cord")
        return {**{n: self.step_dir / f"{n}.nii.gz" for n in names},
                "overlap": self.step_dir / "registration.json"}


@dataclass(frozen=True)
class ContrastTemplate:
    """A finished extra-contrast template (on the driving template's grid)."""

    contrast: str
    image: Path
    sd: Path
    mask: Path
    subjects: tuple[str, ...]
    manual_masks: int
    """Subjects whose manual cord mask of this contrast went into ``mask`` (the others gave
    their driving cord mask)."""
    dice: float
    """Cord-mask Dice with the driving template's mask, over ``slices``."""
    registrations: dict[str, dict]
    """Per subject: the per-subject registration's cord Dice per stage and the stage kept."""
    slices: tuple[tuple[int, int], ...]
    """Template slices (z index runs, first and last included) the contrast covers."""
    covered_mm: float
    """Length of the template the contrast covers (number of covered slices x slice step)."""


def check_contrast_engine(contrasts: Sequence[str], template_engine: str) -> None:
    """Extra contrasts need the builtin template engine (checked before any work).

    They are resampled through each subject's template-loop warps, so that every contrast
    template has the driving template's deformations; the MINC engine (ipl) keeps its
    per-subject transforms in MINC form and hands back none (``TemplateBuildResult.warps`` is
    empty), so extra contrasts would only be straightened, not aligned by construction.
    (``auto`` picks the builtin engine when there are extra contrasts.)

    Raises
    ------
    UsageError
        ``--template-engine minc`` with more than one contrast.
    """
    if template_engine in TEMPLATE_ENGINES_WITHOUT_WARPS and len(contrasts) > 1:
        raise UsageError(
            f"--contrasts {' '.join(contrasts)} needs --template-engine builtin (or auto): the "
            "MINC engine returns no per-subject template warps to resample the extra contrasts "
            f"through; drop --template-engine minc or use --contrasts {contrasts[0]}")


def check_contrasts(contrasts: Sequence[str], subjects: Sequence[GroupSubject]) -> None:
    """The first ``--contrasts`` entry must be the contrast of every subject's participant run.

    Raises
    ------
    UsageError
        It is not.
    """
    driving = sorted({s.source.suffix for s in subjects})
    if driving != [contrasts[0]]:
        raise UsageError(
            f"--contrasts {' '.join(contrasts)}: the first contrast drives the template and must "
            f"be the participant outputs' contrast ({', '.join(driving)}); e.g. --contrasts "
            f"{driving[0]} {' '.join(c for c in contrasts if c != driving[0])}".rstrip())


def build_contrast_templates(config: RunConfig, space: TemplateSpace,
                             result: TemplateBuildResult, jobs: Sequence[StraightenJob], *,
                             nprocs: int) -> list[ContrastTemplate]:
    """Every extra contrast of ``--contrasts`` as a template in ``tpl-<name>``, from the
    subjects that have it; a contrast that no subject has is skipped with a warning."""
    extras = (config.group.contrasts or [])[1:]
    work = config.execution.resolved_work_dir / "group" / "contrasts"
    built = []
    for contrast in extras:
        cjobs = _contrast_jobs(config, space, result, jobs, contrast, work / contrast)
        outcomes = map_isolated(resample_contrast, cjobs, [j.label for j in cjobs],
                                nprocs=nprocs, desc=f"{contrast} to template")
        for outcome in outcomes:
            if not outcome.ok:
                logger.error("%s: %s not resampled: %s", outcome.label, contrast, outcome.error)
        done = [j for j, o in zip(cjobs, outcomes, strict=True) if o.ok]
        if not done:
            logger.warning("--contrasts: no subject has a usable %s image; no %s template",
                           contrast, contrast)
            continue
        built.append(average_contrast(done, contrast, result.mask,
                                      root=config.execution.output_dir.resolve(),
                                      name=config.group.template_name))
    return built


def _contrast_jobs(config: RunConfig, space: TemplateSpace, result: TemplateBuildResult,
                   jobs: Sequence[StraightenJob], contrast: str, work: Path
                   ) -> list[ContrastJob]:
    ex = config.execution
    dataset = index_dataset(ex.bids_dir, database_dir=ex.resolved_work_dir / ex.run_uuid
                            / "bids_db")
    warps = {w.label: w.subject_to_template for w in result.warps}
    out = []
    for job in jobs:
        source = job.subject.source
        candidates = find_anatomy(dataset, source.subject, source.session, contrasts=[contrast],
                                  datatype=source.datatype, bids_filter=ex.bids_filter)
        if not candidates:
            logger.info("%s: no %s image; it does not count for the %s template",
                        job.subject.label, contrast, contrast)
            continue
        chosen = choose_anatomy(candidates, labelled=labelled_sources(ex.labels_dir, candidates))
        cord = find_manual_labels(ex.labels_dir, chosen).cord_mask
        if cord is None:
            logger.warning("%s: no manual %s cord mask; registering with the driving cord mask "
                           "only", job.subject.label, contrast)
        out.append(ContrastJob(
            label=job.subject.label, contrast=contrast, image=chosen.path, cord=cord,
            anat=job.subject.anat, anat_cord=job.subject.cord, to_straight=job.to_template,
            loop_warp=warps.get(job.subject.label.replace("_", "-")), coverage=job.coverage,
            template_affine=tuple(tuple(r) for r in space.affine.tolist()),
            seed=config.seeds.random_seed, step_dir=work / job.subject.label))
    return out


def resample_contrast(job: ContrastJob) -> None:
    """Register one subject's extra contrast and resample it into the template (resumable)."""
    optional = [p for p in (job.cord, job.loop_warp) if p is not None]
    run_step(f"{job.contrast}_to_template", partial(_resample, job), step_dir=job.step_dir,
             inputs=[job.image, job.anat, job.anat_cord, job.to_straight, job.coverage,
                     *optional],
             params={"method": REGISTRATION_METHOD, "seed": job.seed,
                     "affine": job.template_affine},
             outputs=list(job.outputs.values()), label=job.label)


def _resample(job: ContrastJob) -> None:
    raw, anat = load_volume(job.image), load_volume(job.anat)
    anat_cord = load_mask(job.anat_cord)
    cord = load_mask(job.cord) if job.cord else None
    result = register_contrast(anat, anat_cord, raw, cord, seed=job.seed)
    registration = result.field
    save_field(registration, job.outputs["registration"])
    write_json(job.outputs["overlap"],
               {"CordDice": {k: round(v, 4) for k, v in result.dice.items()},
                "Kept": result.kept})
    to_anat = load_field(job.to_straight)
    if job.loop_warp is not None:
        to_anat = compose_fields(load_field(job.loop_warp), to_anat)
    field = compose_fields(to_anat, registration)
    image = np.clip(apply_field(raw.data, raw.affine, field, order=3), 0, None)
    driving = apply_field(anat_cord.data.astype(np.float32), anat_cord.affine, to_anat, order=1)
    image = normalize_intensity(image, driving, voxel_z_mm=float(abs(field.affine[2, 2])))
    seen = apply_field(np.ones(raw.shape, np.float32), raw.affine, field, order=1) > 0.999
    coverage = load_volume(job.coverage)
    if job.loop_warp is not None:
        coverage = Volume(apply_field(coverage.data, coverage.affine, load_field(job.loop_warp),
                                      order=1), field.affine)
    weight = (coverage.data > 0.999) & seen
    save_volume(Volume(image, field.affine), job.outputs["image"])
    save_volume(Volume(weight.astype(np.uint8), field.affine), job.outputs["weight"],
                dtype=np.uint8)
    warped = driving if cord is None else apply_field(cord.data.astype(np.float32), cord.affine,
                                                      field, order=1)
    save_volume(Volume(np.clip(warped, 0, 1).astype(np.float32), field.affine),
                job.outputs["cord"])


def average_contrast(jobs: Sequence[ContrastJob], contrast: str, driving_mask: Path, *,
                     root: Path, name: str) -> ContrastTemplate:
    """Coverage-weighted mean and SD of the resampled subjects, and the contrast's cord mask,
    written into template ``name``'s folder under OUTPUT_DIR ``root``."""
    affine, shape, total, mean, sd, probability = _weighted_moments(jobs)
    reference = load_mask(driving_mask, allow_empty=True)
    if reference.shape != shape or not np.allclose(reference.affine, affine, atol=1e-4):
        raise InputDataError(f"the {contrast} template is not on the driving template's grid")
    image = save_volume(Volume(mean.astype(np.float32), affine),
                        template_path(root, "template", name, contrast=contrast))
    sd_path = save_volume(Volume(sd.astype(np.float32), affine),
                          template_path(root, "template_sd", name, contrast=contrast))
    save_volume(Volume(probability.astype(np.float32), affine),
                template_path(root, "contrast_probseg", name, contrast=contrast))
    cord = probability >= 0.5
    mask = save_volume(Volume(cord.astype(np.uint8), affine),
                       template_path(root, "contrast_mask", name, contrast=contrast),
                       dtype=np.uint8)
    manual = sum(j.cord is not None for j in jobs)
    if manual < len(jobs):
        logger.warning("%d of %d subjects have no manual %s cord mask: their driving cord masks "
                       "stand in for them in the %s template's mask", len(jobs) - manual,
                       len(jobs), contrast, contrast)
    driving_cord = np.asarray(reference.data) > 0
    slices = covered_slices(total > 0, driving_cord, cord)
    if not slices.any():
        raise InputDataError(f"the {contrast} images cover none of the driving template's cord")
    dice = mask_dice(cord[:, :, slices], driving_cord[:, :, slices])
    covered_mm = float(slices.sum() * abs(affine[2, 2]))
    logger.info("%s template from %d subjects: covers %.0f mm of the template; cord-mask Dice "
                "with the driving template there %.3f", contrast, len(jobs), covered_mm, dice)
    registrations = {j.label: json.loads(j.outputs["overlap"].read_text()) for j in jobs}
    return ContrastTemplate(contrast, image, sd_path, mask, tuple(j.label for j in jobs), manual,
                            dice, registrations, _runs(slices), covered_mm)


def _weighted_moments(jobs: Sequence[ContrastJob]) -> tuple[np.ndarray, tuple[int, ...],
                                                             np.ndarray, np.ndarray, np.ndarray,
                                                             np.ndarray]:
    """Coverage-weighted mean, SD and cord probability of the resampled subjects, streamed:
    one subject's arrays in memory at a time (float64 sums), whatever the cohort size.

    Returns ``(affine, shape, total weight, mean, sd, cord probability)``; where no subject
    covers a voxel, its mean, SD and probability are 0.
    """
    sums: dict[str, np.ndarray] = {}
    affine, shape = np.eye(4), (0, 0, 0)
    for job in jobs:
        image = load_volume(job.outputs["image"])
        values = image.data.astype(np.float64)
        weight = load_volume(job.outputs["weight"]).data.astype(np.float64)
        cord = load_volume(job.outputs["cord"]).data.astype(np.float64)
        if not sums:
            sums = {key: np.zeros_like(values) for key in ("w", "wx", "wxx", "wc")}
            affine, shape = image.affine, image.shape
        sums["w"] += weight
        sums["wx"] += weight * values
        sums["wxx"] += weight * values * values
        sums["wc"] += weight * cord
    if not sums:
        raise InputDataError("no subject to average")
    total = sums["w"]
    safe = np.where(total > 0, total, 1.0)
    mean = sums["wx"] / safe
    sd = np.sqrt(np.maximum(sums["wxx"] / safe - mean * mean, 0.0))
    probability = np.where(total > 0, sums["wc"] / safe, 0.0)
    return affine, shape, total, mean, sd, probability


def covered_slices(covered: np.ndarray, *masks: np.ndarray) -> np.ndarray:
    """Template z slices (boolean, last axis) that a contrast covers: some voxel of the slice is
    covered, and so is every voxel of ``masks`` in it (slices cut by the edge of the contrast's
    field of view are left out, so the Dice compares what both templates saw).

    >>> seen = np.zeros((2, 2, 4), bool); seen[:, :, 1:3] = True; seen[0, 0, 2] = False
    >>> cord = np.zeros((2, 2, 4), bool); cord[0, 0, :] = True
    >>> covered_slices(seen, cord).tolist()
    [False, True, False, False]
    """
    inside = np.asarray(covered.any(axis=(0, 1)))
    for mask in masks:
        inside &= ~np.asarray((mask & ~covered).any(axis=(0, 1)))
    return inside


def _runs(slices: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Runs of True as (first, last) indices.

    >>> _runs(np.array([0, 1, 1, 0, 1], bool))
    ((1, 2), (4, 4))
    """
    index = np.flatnonzero(slices)
    if not len(index):
        return ()
    breaks = np.flatnonzero(np.diff(index) > 1)
    starts = np.concatenate([[index[0]], index[breaks + 1]])
    ends = np.concatenate([index[breaks], [index[-1]]])
    return tuple((int(a), int(b)) for a, b in zip(starts, ends, strict=True))


def contrasts_record(templates: Sequence[ContrastTemplate], tpl: Path,
                     discs: Path | None) -> dict:
    """``template_description.json`` entry; checks that every contrast template shares the grid
    of the disc labels (so the disc positions are identical by construction).

    Raises
    ------
    InputDataError
        A contrast template is not on the disc labels' grid.
    """
    reference = load_mask(discs) if discs is not None else None
    record: dict = {"Registration": REGISTRATION_METHOD}
    for item in templates:
        entry = {
            "Subjects": list(item.subjects),
            "Files": [p.relative_to(tpl).as_posix() for p in (item.image, item.sd, item.mask)],
            "CordMask": f"coverage-weighted mean of the warped cord masks >= 0.5: "
                        f"{item.manual_masks} manual {item.contrast} masks, "
                        f"{len(item.subjects) - item.manual_masks} driving masks of subjects "
                        "without one",
            "CordMaskDice": round(item.dice, 4),
            "DiceSlices": [list(run) for run in item.slices],
            "CoveredLengthMm": round(item.covered_mm, 2),
            "SubjectRegistration": item.registrations,
        }
        if reference is not None and discs is not None:
            image = load_volume(item.image)
            if image.shape != reference.shape or not np.allclose(image.affine, reference.affine,
                                                                 atol=1e-4):
                raise InputDataError(f"{item.image.name} is not on the disc labels' grid")
            entry["DiscPositions"] = f"identical by construction: same grid as {discs.name}"
            entry["DiscOffsetMm"] = 0.0
        record[item.contrast] = entry
    return record
