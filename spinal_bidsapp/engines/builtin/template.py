"""Builtin unbiased template builder: the nist_mni_pipelines (ipl) loop on antspyx SyN.

Loop (``docs/reference/minc_ipl.md`` §2.5-2.6, §6.5), for N subjects already straightened onto
one template grid:

0. The population is the N subjects plus, in symmetric mode, their left-right mirrors (2N, as in
   ipl). The first template is the voxelwise mean (ipl starts from subject 0; the mean is
   unbiased); in symmetric mode it is exactly symmetric, and stays so.
1. Every subject is registered to the current template (SyN only, intensity metric plus a
   mean-squares term between the template's cord probability and the subject's cord mask,
   ``cord_weight``; pyramid stopping at the iteration's level, optionally warm-started from its
   previous corrected warp): ``phi_i``
   maps template points to subject points, ``phi_i(p) = p + u_i(p)``. Because the template is
   symmetric, the registration of a mirrored subject is the mirror of its subject's
   registration, ``M u_i(M p)``; it is derived, not computed (ipl registers both copies and
   averages them into this mirror-consistent pair), which halves the cost of symmetric mode.
2. Shape update at full step: ``psi = Id + mean u`` over the population; every corrected warp is
   ``w_i = phi_i o psi^-1`` (one composed field), so the population mean of the ``w_i`` is the
   identity and the new template sits at the average of the correspondences.
3. Each subject is resampled once from its input through ``w_i``; the population mean, the SD,
   the mean of the warped cord masks (cord probability) and the mask ``probability >= 0.5`` are
   the iteration's outputs (mirrored copies enter through symmetrised first and second moments).

Resume (:func:`~spinal_bidsapp.runtime.ledger.run_steps`, chained): every stage (inputs,
iter-000 ... iter-NNN, final) leaves a ledger with a key chained from the previous stage's ledger
and the hashes of its outputs; a rerun skips every stage whose ledger matches, so a run
interrupted at any point and restarted with the same inputs gives the same result as an
uninterrupted one. Within an interrupted iteration, every registration that
had finished is reused (its own ledger, ``jobs.register_item``), so a killed cluster job loses
at most the registrations that were running. Determinism: registrations use a fixed
``--random-seed`` and dense metric sampling; averages are float64 sums in a fixed order. Results
do not depend on ``nprocs``; ITK's multi-threaded metric sums could in principle depend on
``threads_per_worker`` (not observed on the test grids).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from spinal_bidsapp.engines.base import (
    EngineInfo,
    SubjectWarps,
    TemplateBuildResult,
    TemplateIteration,
    TemplateSubject,
)
from spinal_bidsapp.engines.builtin import averaging
from spinal_bidsapp.engines.builtin.jobs import (
    InverseJob,
    RegistrationJob,
    ResampleJob,
    TemplateBuildError,
    invert_item,
    register_item,
    resample_item,
)
from spinal_bidsapp.engines.builtin.protocol import TemplateOptions, level_pyramid
from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.geometry.fields import DisplacementField, invert_field
from spinal_bidsapp.image import (
    Volume,
    load_field,
    load_volume,
    same_grid,
    save_field,
    save_volume,
)
from spinal_bidsapp.runtime.files import sha256_file, write_json
from spinal_bidsapp.runtime.ledger import Step, Written, params_digest, run_steps
from spinal_bidsapp.runtime.parallel import map_isolated

logger = logging.getLogger(__name__)

ENGINE_VERSION = "1"
"""Version of the builtin loop; part of every ledger key."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True)
class _Item:
    label: str
    image: Path
    cord_mask: Path


@dataclass(frozen=True)
class _Build:
    work_dir: Path
    options: TemplateOptions
    nprocs: int
    items: tuple[_Item, ...]
    subjects: tuple[TemplateSubject, ...]


class BuiltinTemplateBuilder:
    """:class:`~spinal_bidsapp.engines.base.TemplateBuilder` on antspyx (no external tools)."""

    def __init__(self, options: TemplateOptions | None = None) -> None:
        self.options = options or TemplateOptions()
        self.info = EngineInfo(name="builtin", version=f"template-loop {ENGINE_VERSION}")

    def build_template(self, subjects: Sequence[TemplateSubject], *, work_dir: Path,
                       nprocs: int) -> TemplateBuildResult:
        return build_template(subjects, work_dir=work_dir, options=self.options, nprocs=nprocs)


def iteration_dir(work_dir: Path, index: int) -> Path:
    """Folder of iteration ``index`` (0 = initial average)."""
    return Path(work_dir) / f"iter-{index:03d}"


def build_template(subjects: Sequence[TemplateSubject], *, work_dir: Path,
                   options: TemplateOptions, nprocs: int = 1) -> TemplateBuildResult:
    """Build an unbiased (optionally symmetric) template from straightened subjects.

    Parameters
    ----------
    subjects : sequence of TemplateSubject
        At least two subjects, images and cord masks all on one grid.
    work_dir : Path
        Stable folder of the build; reruns resume from it.
    options : TemplateOptions
        Protocol and registration parameters (see :func:`preset_options`).
    nprocs : int
        Parallel registrations (worker processes, or scoop workers under ``python -m scoop``).

    Raises
    ------
    InputDataError
        Fewer than two subjects, duplicate or unsafe labels, images off the common grid.
    MissingInputError
        An image or cord mask does not exist.
    TemplateBuildError
        A registration or resampling failed.
    """
    import ants  # noqa: F401  (loaded once here, inherited by forked workers)

    work_dir = Path(work_dir).absolute()
    build = _Build(work_dir=work_dir, options=options, nprocs=max(1, nprocs),
                   items=_items(subjects, work_dir), subjects=tuple(subjects))
    actions: list[tuple[str, Callable[[], Written]]] = [
        ("inputs", partial(_prepare_inputs, build)),
        (iteration_dir(work_dir, 0).name, partial(_initial_average, build)),
        *((iteration_dir(work_dir, k).name, partial(_run_iteration, build, k))
          for k in range(1, options.n_iterations + 1)),
        ("final", partial(_finalize, build)),
    ]
    stages = [Step(name=name, action=action, step_dir=work_dir / name)
              for name, action in actions]
    key = params_digest({"engine": ENGINE_VERSION, "options": options.ledger_params(),
                   "subjects": [[s.label, sha256_file(Path(s.image)),
                                 sha256_file(Path(s.cord_mask))] for s in subjects]})
    run_steps(stages, chain_key=key, root=work_dir, needs_state=_state_needs(options),
              prefix="template ")
    return _result(build)


def _items(subjects: Sequence[TemplateSubject], work_dir: Path) -> tuple[_Item, ...]:
    labels = [s.label for s in subjects]
    if len(subjects) < 2:
        raise InputDataError(f"a template needs at least two subjects, got {len(subjects)}")
    if len(set(labels)) != len(labels):
        raise InputDataError(f"duplicate subject labels in {labels}")
    bad = [label for label in labels if not _LABEL.match(label)]
    if bad:
        raise InputDataError(f"subject labels must use letters, digits, '_' and '-': {bad}")
    missing = [str(p) for s in subjects for p in (s.image, s.cord_mask) if not Path(p).is_file()]
    if missing:
        raise MissingInputError(f"template inputs not found: {', '.join(missing)}")
    inputs = work_dir / "inputs"
    return tuple(_Item(label=label, image=inputs / f"{label}_image.nii.gz",
                       cord_mask=inputs / f"{label}_cordmask.nii.gz") for label in labels)


def _state_needs(options: TemplateOptions) -> Callable[[int], bool]:
    """Whether the stage at ``index`` needs the previous stage's warps (its "state")."""
    n = options.n_iterations
    # stage indices: 0 inputs, 1 iter-000, 2 iter-001, ..., n + 1 iter-n, n + 2 final
    return lambda index: index == n + 2 or (options.refine and 3 <= index <= n + 1)


def _map(fn: Callable[[J], R], jobs: Sequence[J], labels: Sequence[str], nprocs: int) -> list[R]:
    outcomes = map_isolated(fn, jobs, labels, nprocs=nprocs, stop_on_first_crash=True,
                            desc="registrations")
    failed = [o for o in outcomes if not o.ok]
    if failed or len(outcomes) != len(jobs):
        detail = f"{failed[0].label}: {failed[0].error}" if failed else "stopped early"
        raise TemplateBuildError(f"template building failed ({detail})")
    return [o.value for o in outcomes]  # type: ignore[misc]


# ---------------------------------------------------------------- stages

def _prepare_inputs(build: _Build) -> Written:
    """Copy the inputs under stable names (float32 image, cord mask clipped to 0-1)."""
    reference = load_volume(build.subjects[0].image)
    if build.options.symmetric:
        averaging.mirror_axis(reference.affine)
    outputs: list[Path] = []
    for item, subject in zip(build.items, build.subjects, strict=True):
        image = load_volume(subject.image)
        mask = load_volume(subject.cord_mask)
        for vol, path in ((image, subject.image), (mask, subject.cord_mask)):
            if not same_grid(vol, reference):
                raise InputDataError(
                    f"{path} is not on the template grid of {build.subjects[0].image} "
                    f"(shape {vol.shape} vs {reference.shape}); straighten every subject onto "
                    "the same grid")
        image_data = image.data.astype(np.float32)
        mask_data = np.clip(mask.data, 0.0, 1.0).astype(np.float32)
        save_volume(Volume(image_data, reference.affine), item.image, dtype=np.float32)
        save_volume(Volume(mask_data, reference.affine), item.cord_mask, dtype=np.float32)
        outputs += [item.image, item.cord_mask]
    return Written(products=outputs)


def _products(directory: Path) -> dict[str, Path]:
    return {name: directory / f"{name}.nii.gz" for name in ("avg", "sd", "prob", "mask")}


def _write_average(build: _Build, directory: Path, images: Sequence[Path],
                   masks: Sequence[Path]) -> Volume:
    """Mean, SD, cord probability and mask of the (resampled) items; returns the mask."""
    intensity = averaging.RunningMoments()
    cord = averaging.RunningMoments()
    affine = None
    for image_path, mask_path in zip(images, masks, strict=True):
        image = load_volume(image_path)
        affine = image.affine
        intensity.add(image.data)
        cord.add(load_volume(mask_path).data)
    assert affine is not None
    mean, mean_square, probability = intensity.mean(), intensity.mean_square(), cord.mean()
    if build.options.symmetric:  # the mirrored copies' moments are the mirrored moments
        axis = averaging.mirror_axis(affine)
        mean = averaging.symmetrise(mean, axis)
        mean_square = averaging.symmetrise(mean_square, axis)
        probability = averaging.symmetrise(probability, axis)
    sd = averaging.sd_from_moments(mean, mean_square)
    paths = _products(directory)
    mask = averaging.mask_from_probability(probability)
    save_volume(Volume(mean.astype(np.float32), affine), paths["avg"], dtype=np.float32)
    save_volume(Volume(sd.astype(np.float32), affine), paths["sd"], dtype=np.float32)
    save_volume(Volume(probability.astype(np.float32), affine), paths["prob"], dtype=np.float32)
    save_volume(Volume(mask, affine), paths["mask"], dtype=np.uint8)
    return Volume(mask, affine)


def _stats(build: _Build, directory: Path, index: int, extra: dict[str, float]) -> Path:
    paths = _products(directory)
    mask = load_volume(paths["mask"]).data
    stats: dict[str, Any] = {
        "iteration": index,
        "level_mm": None if index == 0 else build.options.iteration_levels()[index - 1],
        "n_images": len(build.items) * (2 if build.options.symmetric else 1),
        "median_sd_in_mask": averaging.median_in_mask(load_volume(paths["sd"]).data, mask),
        **extra,
    }
    if index > 0:
        previous = load_volume(_products(iteration_dir(build.work_dir, index - 1))["avg"]).data
        stats["rms_change_in_mask"] = averaging.rms_in_mask(
            load_volume(paths["avg"]).data - previous, mask)
    path = directory / "stats.json"
    write_json(path, stats)
    return path


def _initial_average(build: _Build) -> Written:
    directory = iteration_dir(build.work_dir, 0)
    _write_average(build, directory, [i.image for i in build.items],
                   [i.cord_mask for i in build.items])
    stats = _stats(build, directory, 0, {})
    return Written(products=[*_products(directory).values(), stats])


def _warp(directory: Path, item: _Item) -> Path:
    return directory / "warps" / f"{item.label}_warp.nii"


def _run_iteration(build: _Build, k: int) -> Written:
    options = build.options
    directory = iteration_dir(build.work_dir, k)
    previous = iteration_dir(build.work_dir, k - 1)
    template = _products(previous)["avg"]
    grid = load_volume(template)
    level = options.iteration_levels()[k - 1]
    pyramid = level_pyramid(level, voxel_mm=float(max(grid.zooms)), shape=grid.shape,
                            options=options)
    logger.info("template iteration %d/%d: level %g mm, shrink %s, %d images", k,
                options.n_iterations, level, pyramid.shrink_factors, len(build.items))
    started = time.monotonic()
    raw = [directory / "registration" / item.label / "warp.nii" for item in build.items]
    jobs = [RegistrationJob(
        fixed=template, moving=item.image,
        initial_warp=_warp(previous, item) if options.refine and k > 1 else None,
        out_warp=out, scratch_dir=directory / "scratch" / item.label, pyramid=pyramid,
        options=options, cords=(_products(previous)["prob"], item.cord_mask))
        for item, out in zip(build.items, raw, strict=True)]
    seconds = _map(register_item, jobs, [i.label for i in build.items], build.nprocs)
    registered = time.monotonic()

    mean_warp, _ = _mean_field(build, raw, None)
    # read by this iteration's resampling only, then removed: uncompressed (gzip of a field
    # costs 10x its write)
    mean_inverse = directory / "scratch" / "mean_inverse.nii"
    mean_inverse.parent.mkdir(parents=True, exist_ok=True)
    save_field(invert_field(mean_warp, mean_warp.shape, mean_warp.affine), mean_inverse)
    warped = directory / "warped"
    resample = [ResampleJob(warp=r, mean_inverse=mean_inverse,
                            image=item.image, cord_mask=item.cord_mask,
                            out_warp=_warp(directory, item),
                            out_image=warped / f"{item.label}_image.nii",
                            out_mask=warped / f"{item.label}_cordmask.nii")
                for item, r in zip(build.items, raw, strict=True)]
    _map(resample_item, resample, [i.label for i in build.items], build.nprocs)
    mask = _write_average(build, directory, [j.out_image for j in resample],
                          [j.out_mask for j in resample])
    corrected_mean, subject_rms = _mean_field(build, [j.out_warp for j in resample], mask.data)
    extra = {
        "mean_warp_rms_mm": averaging.rms_in_mask(mean_warp.data, mask.data),
        "corrected_mean_warp_rms_mm": averaging.rms_in_mask(corrected_mean.data, mask.data),
        "subject_warp_rms_mm": float(np.sqrt(np.mean(np.square(subject_rms)))),
    }
    stats = _stats(build, directory, k, extra)
    write_json(directory / "timing.json", {
        "registration_s": seconds, "registration_wall_s": registered - started,
        "update_wall_s": time.monotonic() - registered})
    for path in (directory / "registration", directory / "scratch", warped):
        shutil.rmtree(path, ignore_errors=True)
    if not options.keep_warps and k >= 3:
        shutil.rmtree(iteration_dir(build.work_dir, k - 2) / "warps", ignore_errors=True)
    return Written(products=[*_products(directory).values(), stats],
                   state=[_warp(directory, item) for item in build.items])


def _mean_field(build: _Build, paths: Sequence[Path], mask: np.ndarray | None
                ) -> tuple[DisplacementField, list[float]]:
    """Population mean displacement (mirrored fields included in symmetric mode), read one field
    at a time; also the RMS displacement of each field inside ``mask`` (empty without one)."""
    moments = averaging.RunningMoments(squares=False)
    rms = []
    affine = None
    for path in paths:
        field = load_field(path)
        affine = field.affine
        moments.add(field.data)
        if mask is not None:
            rms.append(averaging.rms_in_mask(field.data, mask))
    assert affine is not None
    mean = moments.mean()
    if build.options.symmetric:
        axis = averaging.mirror_axis(affine)
        mean = 0.5 * (mean + averaging.mirror_field_x(mean, axis))
    return DisplacementField(data=mean.astype(np.float32), affine=affine), rms


def _final_paths(build: _Build) -> dict[str, Path]:
    final = build.work_dir / "final"
    return {"template": final / "template.nii.gz", "sd": final / "template_sd.nii.gz",
            "mask": final / "template_mask.nii.gz",
            "prob": final / "template_cordprob.nii.gz",
            "convergence": final / "convergence.json"}


def _subject_warp_paths(build: _Build, label: str) -> tuple[Path, Path]:
    warps = build.work_dir / "final" / "warps"
    return (warps / f"{label}_from-subject_to-template_warp.nii.gz",
            warps / f"{label}_from-template_to-subject_warp.nii.gz")


def _finalize(build: _Build) -> Written:
    n = build.options.n_iterations
    last = iteration_dir(build.work_dir, n)
    paths = _final_paths(build)
    sources = _products(last)
    for name, key in (("template", "avg"), ("sd", "sd"), ("mask", "mask"), ("prob", "prob")):
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources[key], paths[name])
    jobs = []
    for item in build.items:
        forward, inverse = _subject_warp_paths(build, item.label)
        forward.parent.mkdir(parents=True, exist_ok=True)
        save_field(load_field(_warp(last, item)), forward)
        jobs.append(InverseJob(warp=forward, out_inverse=inverse))
    _map(invert_item, jobs, [i.label for i in build.items], build.nprocs)
    records = []
    for k in range(n + 1):
        directory = iteration_dir(build.work_dir, k)
        record = json.loads((directory / "stats.json").read_text(encoding="utf-8"))
        timing = directory / "timing.json"
        if timing.is_file():
            record["timing"] = json.loads(timing.read_text(encoding="utf-8"))
        records.append(record)
    write_json(paths["convergence"], {"engine": "builtin", "version": ENGINE_VERSION,
                                      "options": build.options.ledger_params(),
                                      "iterations": records})
    warp_files = [p for j in jobs for p in (j.warp, j.out_inverse)]
    return Written(products=[*(paths[k] for k in ("template", "sd", "mask", "prob",
                                                  "convergence")), *warp_files])


def _result(build: _Build) -> TemplateBuildResult:
    paths = _final_paths(build)
    levels = [None, *build.options.iteration_levels()]
    iterations = tuple(
        TemplateIteration(index=k, level_mm=levels[k],
                          average=_products(iteration_dir(build.work_dir, k))["avg"],
                          sd=_products(iteration_dir(build.work_dir, k))["sd"])
        for k in range(build.options.n_iterations + 1))
    warps = tuple(SubjectWarps(label=s.label, subject_to_template=_subject_warp_paths(build,
                                                                                      s.label)[0],
                               template_to_subject=_subject_warp_paths(build, s.label)[1])
                  for s in build.subjects)
    return TemplateBuildResult(template=paths["template"], sd=paths["sd"], mask=paths["mask"],
                               cord_probability=paths["prob"], iterations=iterations,
                               warps=warps, convergence=paths["convergence"],
                               protocol=protocol_record(build.options))


def protocol_record(options: TemplateOptions) -> dict[str, object]:
    """What the builtin loop runs, for ``template_description.json``.

    >>> protocol_record(TemplateOptions())["iterations"]
    16
    """
    return {"engine": "builtin", "version": f"template-loop {ENGINE_VERSION}",
            "stages": [{"level_mm": s.level_mm, "iterations": s.iterations}
                       for s in options.protocol],
            "iterations": options.n_iterations, "symmetric": options.symmetric,
            "refine": options.refine, "metric": options.metric,
            "cord_weight": options.cord_weight,
            "cord_mask": "mean of the subjects' cord masks through the final warps, >= 0.5"}
