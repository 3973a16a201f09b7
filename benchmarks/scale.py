"""Benchmark: cost of a whole-cord template (PAM50 length, 0.5 mm, seed preset) and its projection.

Not a test: run by hand (``nice``-d on a shared machine); results go to
``benchmarks/results/scale-<step>-<UTC time>.json`` (git-ignored) and a summary on stdout::

    nice -n 10 .venv/bin/python benchmarks/scale.py inputs --subjects 4
    nice -n 10 .venv/bin/python benchmarks/scale.py levels --subjects 2 --nprocs 2
    nice -n 10 .venv/bin/python benchmarks/scale.py iteration --subjects 4 --level 1 --nprocs 2
    nice -n 10 .venv/bin/python benchmarks/scale.py averaging --sizes 4 16
    .venv/bin/python benchmarks/scale.py template --subjects 16 --nprocs 2
    .venv/bin/python benchmarks/scale.py project --nodes 1 2 4

Inputs (``inputs``): straightened whole-cord subjects on the template grid the group level would
define for them (``define_template_space`` with PAM50's own level lengths, discs 1 to 21,
``--template-xy-size`` 20 mm and 10 mm margins at 0.5 mm: 81 x 81 x 987 voxels). Each subject is
the PAM50 anatomy (``PAM50_small`` T2, 0.5 mm masks, through
:mod:`spinal_bidsapp.synth.phantom`) with what straightening leaves: its own cross-section scale
(0.9-1.1 per axis), disc positions off by 0.7 mm RMS along the cord, a cord centre wandering
0.5-1 mm in plane, and Rician noise. The content only needs to be realistic enough for the
registrations to do realistic work; the cost is set by the grid and the preset.

Steps, each in a fresh process so that ``ru_maxrss`` is that step's peak:

* ``levels``: one template iteration of the builtin loop at each seed level (8, 4, 2, 1 mm) on
  ``--subjects`` subjects: seconds per registration (each worker's own wall time), the update's
  wall time, the peak RSS of the main process (update: mean field, its inverse, averages) and of
  the largest worker (registration or resampling).
* ``iteration``: the same for one level on a larger cohort (the per-subject share of the update).
* ``averaging``: the loop's averaging steps alone (``_write_average`` over images and masks,
  ``_mean_field`` over displacement fields) and the group contrast average
  (``_weighted_moments``), on ``--sizes`` cohorts of the same grid: their peak RSS must not grow
  with the number of subjects. For comparison, last (the peak only grows), the contrast average
  as it was before it streamed (every subject stacked, as ``np.stack`` did).
* ``template``: the whole build (``build_template``, seed preset unless ``--preset``) on
  ``--subjects`` subjects: wall time per iteration (registrations, update), CPU seconds of
  every registration, peak RSS of the main process and of the largest worker; then scored
  against the truth the subjects were drawn from (:func:`score_whole_cord`: disc spread, cord
  Dice, correlation; the same for iteration 0, the straighten-and-average baseline). ``score``
  re-scores the newest record.
* ``project``: wall time of ``N`` subjects on nodes of ``C`` cores from the measured figures
  (method in :func:`project`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "work" / "bench-scale"
SEED_LEVELS_MM = (8.0, 4.0, 2.0, 1.0)
ITERATIONS_PER_LEVEL = 4
DISCS = tuple(range(1, 22))


def _peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024.0  # Linux: kB


def _record(step: str, fields: dict[str, Any]) -> Path:
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "cpus": os.cpu_count(), "load_average": os.getloadavg(),
              "argv": sys.argv, **fields}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"scale-{step}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"results: {out}")
    return out


# ------------------------------------------------------------------------------------ inputs

def template_space(resolution_mm: float = 0.5) -> Any:
    """The straight whole-cord space the group level defines for PAM50-long subjects."""
    from spinal_bidsapp.geometry.template_space import LevelLength, define_template_space
    from spinal_bidsapp.synth.spine import PAM50_DISC_Z_MM

    levels = tuple(LevelLength(d, PAM50_DISC_Z_MM[d] - PAM50_DISC_Z_MM[d + 1], 0.0, 1)
                   for d in DISCS[:-1])
    return define_template_space(levels, resolution_mm=resolution_mm, xy_half_mm=20.0,
                                 margin_mm=10.0)


def _data_dir() -> Path:
    from spinal_bidsapp.config import data_dir_from_environment

    return data_dir_from_environment(REPO.parent / "shared" / "data")


def subject_truth(index: int, *, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """What straightening left in subject ``index``: its mapping to PAM50 and its wander.

    Returns the :class:`~spinal_bidsapp.synth.truth.TemplateMapping` (disc positions along the
    straight cord, cross-section scale) and the in-plane wander of the cord centre (amplitude mm,
    wavelength mm, phase per axis), drawn in that order from one generator, then the noise.
    """
    from spinal_bidsapp.synth.spine import PAM50_DISC_Z_MM
    from spinal_bidsapp.synth.truth import TemplateMapping

    space = template_space()
    rng = np.random.default_rng([seed, index])
    disc_z = space.disc_z_mm + rng.normal(0.0, 0.7, len(DISCS))
    mapping = TemplateMapping(discs=DISCS, disc_arc_mm=tuple(np.sort(disc_z)[::-1]),
                              disc_template_z_mm=tuple(PAM50_DISC_Z_MM[d] for d in DISCS),
                              cross_scale=(float(rng.uniform(0.9, 1.1)),
                                           float(rng.uniform(0.9, 1.1))))
    wander = [(float(rng.uniform(0.5, 1.0)), float(rng.uniform(60.0, 200.0)),
               float(rng.uniform(0, 2 * np.pi))) for _ in (0, 1)]
    return mapping, {"wander": wander, "rng": rng}


def wander_mm(wander: list[tuple[float, float, float]], z_mm: np.ndarray) -> np.ndarray:
    """In-plane offset ``(N, 2)`` of the subject's cord centre at heights ``z_mm``."""
    return np.column_stack([a * np.sin(2 * np.pi * z_mm / w + phase) for a, w, phase in wander])


def make_inputs(work: Path, n_subjects: int, *, seed: int = 0) -> list[Any]:
    """Write (or reuse) ``n_subjects`` straightened whole-cord subjects (TemplateSubjects)."""
    from spinal_bidsapp.engines.base import TemplateSubject
    from spinal_bidsapp.image import Volume, save_volume
    from spinal_bidsapp.synth.acquisition import add_rician_noise
    from spinal_bidsapp.synth.phantom import _sample_template, load_pam50

    space = template_space()
    folder = work / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    subjects = []
    anatomy = None
    ijk = np.indices(space.shape).reshape(3, -1).T
    world = ijk @ space.affine[:3, :3].T + space.affine[:3, 3]
    for index in range(n_subjects):
        label = f"s{index:02d}"
        image, cord = folder / f"{label}_image.nii.gz", folder / f"{label}_cord.nii.gz"
        subjects.append(TemplateSubject(label=label, image=image, cord_mask=cord))
        if image.is_file() and cord.is_file():
            continue
        if anatomy is None:
            data = _data_dir()
            anatomy = load_pam50(data / "PAM50", data / "PAM50_small", bottom_disc=21)
        mapping, drawn = subject_truth(index, seed=seed)
        offset = np.zeros_like(world)
        offset[:, :2] = wander_mm(drawn["wander"], world[:, 2])
        values = _sample_template(anatomy, mapping.straight_to_template(world - offset))
        t2 = add_rician_noise(values["t2"], sigma=0.03, rng=drawn["rng"]).reshape(space.shape)
        save_volume(Volume((1000.0 * t2).astype(np.float32), space.affine), image,
                    dtype=np.float32)
        save_volume(Volume(np.clip(values["cord"], 0, 1).reshape(space.shape)
                           .astype(np.float32), space.affine), cord, dtype=np.float32)
    return subjects


# ------------------------------------------------------------------------------ loop steps

def _build(subjects: list[Any], work: Path, level_mm: float, nprocs: int) -> Any:
    from spinal_bidsapp.engines.builtin.protocol import Stage, preset_options
    from spinal_bidsapp.engines.builtin.template import _Build, _items

    options = preset_options("seed", symmetric=True, protocol=(Stage(level_mm, 1),))
    return _Build(work_dir=work, options=options, nprocs=nprocs,
                  items=_items(subjects, work), subjects=tuple(subjects))


def _register_with_cpu(job: Any) -> float:
    """The loop's ``register_item``, also writing the worker's CPU seconds (all its threads) to
    ``<work>/cpu/<iteration>/<label>.json``: a cost figure that a loaded machine does not
    inflate, kept per iteration for the full build."""
    from spinal_bidsapp.engines.builtin.jobs import register_item

    started = time.process_time()
    wall = register_item(job)
    iteration = job.scratch_dir.parents[1]
    folder = iteration.parent / "cpu" / iteration.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job.scratch_dir.name}.json").write_text(json.dumps(
        {"wall_s": wall, "cpu_s": time.process_time() - started}))
    return wall


def _cpu_s(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def one_iteration(subjects: list[Any], work: Path, level_mm: float, nprocs: int) -> dict:
    """Inputs, iteration 0 (mean) and one loop iteration at ``level_mm``; timings and peaks.

    Runs the loop's own stage functions (not the ledger runner, and not the final inversion of
    every warp, which is timed once separately), so that the figures are those of one iteration.
    """
    import shutil

    import ants  # noqa: F401  (loaded once, inherited by the forked workers, as in the app)

    from spinal_bidsapp.engines.builtin import template
    from spinal_bidsapp.engines.builtin.template import (
        _initial_average,
        _prepare_inputs,
        _run_iteration,
        _warp,
        iteration_dir,
    )
    from spinal_bidsapp.geometry.fields import invert_field
    from spinal_bidsapp.image import load_field, save_field

    shutil.rmtree(work, ignore_errors=True)
    build = _build(subjects, work, level_mm, nprocs)
    started = time.monotonic()
    _prepare_inputs(build)
    _initial_average(build)
    prepared = time.monotonic()
    template.register_item = _register_with_cpu  # type: ignore[assignment]
    main_cpu, workers_cpu = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    _run_iteration(build, 1)
    main_cpu = _cpu_s(resource.RUSAGE_SELF) - main_cpu
    workers_cpu = _cpu_s(resource.RUSAGE_CHILDREN) - workers_cpu
    timing = json.loads((iteration_dir(work, 1) / "timing.json").read_text())
    registration_cpu = [json.loads(p.read_text())["cpu_s"]
                        for p in sorted((work / "cpu" / iteration_dir(work, 1).name)
                                        .glob("*.json"))]
    main_peak = _peak_mb(resource.RUSAGE_SELF)
    inverse_started = time.monotonic()
    inverse_cpu = _cpu_s(resource.RUSAGE_SELF)
    field = load_field(_warp(iteration_dir(work, 1), build.items[0]))
    save_field(invert_field(field, field.shape, field.affine), work / "inverse.nii.gz")
    inverse_cpu = _cpu_s(resource.RUSAGE_SELF) - inverse_cpu
    return {"level_mm": level_mm, "subjects": len(subjects), "nprocs": nprocs,
            "grid": list(build_shape(subjects)), "prepare_and_mean_s": prepared - started,
            "registration_s": timing["registration_s"],
            "registration_wall_s": timing["registration_wall_s"],
            "update_wall_s": timing["update_wall_s"],
            "final_inverse_s": time.monotonic() - inverse_started,
            "registration_cpu_s": registration_cpu,
            "update_cpu_main_s": main_cpu,
            "resample_cpu_workers_s": workers_cpu - sum(registration_cpu),
            "final_inverse_cpu_s": inverse_cpu,
            "peak_rss_main_mb": main_peak,
            "peak_rss_main_with_inverse_mb": _peak_mb(resource.RUSAGE_SELF),
            "peak_rss_largest_worker_mb": _peak_mb(resource.RUSAGE_CHILDREN)}


def full_template(subjects: list[Any], work: Path, nprocs: int, preset: str) -> dict:
    """The loop's whole build (``build_template``, as the group level calls it) on ``subjects``.

    Per iteration: its level, registration and update wall times (the loop's ``timing.json``)
    and each registration's CPU seconds; for the whole build: wall time, CPU of the main process
    and of all workers, the peak RSS of the main process and of the largest worker.
    """
    import ants  # noqa: F401  (as build_template: loaded once, inherited by forked workers)

    from spinal_bidsapp.engines.builtin import template
    from spinal_bidsapp.engines.builtin.protocol import preset_options

    options = preset_options(preset, symmetric=True)  # type: ignore[arg-type]
    template.register_item = _register_with_cpu  # type: ignore[assignment]
    started = time.monotonic()
    main_cpu, workers_cpu = _cpu_s(resource.RUSAGE_SELF), _cpu_s(resource.RUSAGE_CHILDREN)
    loads = [os.getloadavg()]
    result = template.build_template(subjects, work_dir=work, options=options, nprocs=nprocs)
    loads.append(os.getloadavg())
    wall = time.monotonic() - started
    levels = [None, *options.iteration_levels()]
    iterations = []
    for k in range(1, options.n_iterations + 1):
        directory = template.iteration_dir(work, k)
        timing = json.loads((directory / "timing.json").read_text())
        cpu = [json.loads(p.read_text())["cpu_s"]
               for p in sorted((work / "cpu" / directory.name).glob("*.json"))]
        iterations.append({"iteration": k, "level_mm": levels[k],
                           "registration_wall_s": timing["registration_wall_s"],
                           "update_wall_s": timing["update_wall_s"],
                           "registration_cpu_s": cpu})
    return {"subjects": len(subjects), "nprocs": nprocs, "preset": preset,
            "grid": list(build_shape(subjects)), "wall_s": wall,
            "main_cpu_s": _cpu_s(resource.RUSAGE_SELF) - main_cpu,
            "workers_cpu_s": _cpu_s(resource.RUSAGE_CHILDREN) - workers_cpu,
            "peak_rss_main_mb": _peak_mb(resource.RUSAGE_SELF),
            "peak_rss_largest_worker_mb": _peak_mb(resource.RUSAGE_CHILDREN),
            "load_average_start_end": loads, "iterations": iterations,
            "template": str(result.template), "mask": str(result.mask),
            "warps": {w.label: [str(w.subject_to_template), str(w.template_to_subject)]
                      for w in result.warps}}


def score_whole_cord(subjects: list[Any], run: dict, *, seed: int = 0) -> dict:
    """The issue's three figures for a whole-cord template, and for iteration 0 (the baseline).

    The truth is what every subject was drawn around: PAM50 carried onto the straight grid
    through the subjects' mean disc positions and mean cross-section scale, without wander or
    noise. Figures:

    * disc spread: each subject's true disc centres (its own disc heights and wander) mapped
      into template space by its template -> subject inverse warp; RMS distance to the mean
      position, per disc (the baseline: the subjects' own disc positions, nothing moved); and
      split into along the cord (z) and in plane (x-y);
    * cord Dice: each subject's cord mask resampled by its final warp onto the template grid
      against the template's cord mask, averaged; and the template mask against the true cord;
    * correlation of the template with the true T2 within 8 mm of the cord axis, between the
      first and last disc.
    """
    from benchmarks.scoring import dice, disc_spread_mm, masked_correlation
    from spinal_bidsapp.geometry.fields import apply_field, transform_points
    from spinal_bidsapp.image import load_field, load_volume
    from spinal_bidsapp.synth.phantom import _sample_template, load_pam50
    from spinal_bidsapp.synth.truth import TemplateMapping

    space = template_space()
    truths = [subject_truth(i, seed=seed) for i in range(len(subjects))]
    mean = truths[0][0]
    mean = TemplateMapping(
        discs=mean.discs, disc_template_z_mm=mean.disc_template_z_mm,
        disc_arc_mm=tuple(np.mean([t[0].disc_arc_mm for t in truths], axis=0)),
        cross_scale=tuple(np.mean([t[0].cross_scale for t in truths], axis=0)))
    data = _data_dir()
    anatomy = load_pam50(data / "PAM50", data / "PAM50_small", bottom_disc=21)
    ijk = np.indices(space.shape).reshape(3, -1).T
    world = ijk @ space.affine[:3, :3].T + space.affine[:3, 3]
    values = _sample_template(anatomy, mean.straight_to_template(world))
    truth_t2 = values["t2"].reshape(space.shape)
    truth_cord = values["cord"].reshape(space.shape) >= 0.5
    arc = np.asarray(mean.disc_arc_mm)
    region = ((np.hypot(world[:, 0], world[:, 1]) <= 8.0) & (world[:, 2] <= arc.max())
              & (world[:, 2] >= arc.min())).reshape(space.shape)

    def disc_points(mapping: Any, drawn: dict) -> np.ndarray:
        z = np.asarray(mapping.disc_arc_mm)
        return np.column_stack([wander_mm(drawn["wander"], z), z])

    work = Path(run["template"]).parents[1]
    iteration0 = work / "iter-000"
    figures = {}
    for name, average, mask_path in (
            ("baseline (iteration 0: straighten-and-average)", iteration0 / "avg.nii.gz",
             iteration0 / "mask.nii.gz"),
            ("template (seed preset)", Path(run["template"]), Path(run["mask"]))):
        mask = load_volume(mask_path).data > 0
        positions, dices = [], []
        for subject, (mapping, drawn) in zip(subjects, truths, strict=True):
            points = disc_points(mapping, drawn)
            cord = load_volume(subject.cord_mask)
            if name.startswith("baseline"):
                mapped, warped = points, cord.data >= 0.5
            else:
                to_template, to_subject = (load_field(Path(p))
                                           for p in run["warps"][subject.label])
                mapped = transform_points(points, to_subject)
                warped = apply_field(cord.data, cord.affine, to_template, order=1) >= 0.5
            positions.append(dict(zip(DISCS, mapped, strict=True)))
            dices.append(dice(warped, mask))
        spread = disc_spread_mm(positions)
        points = np.array([[p[d] for d in DISCS] for p in positions])  # subjects x discs x 3
        deviation = points - points.mean(axis=0)
        along = np.sqrt((deviation[..., 2] ** 2).mean(axis=0))
        in_plane = np.sqrt((deviation[..., :2] ** 2).sum(axis=-1).mean(axis=0))
        figures[name] = {
            "disc_spread_mm": {str(k): v for k, v in spread.items()},
            "max_disc_spread_mm": max(spread.values()),
            "disc_spread_along_cord_mm": dict(zip(map(str, DISCS), along.tolist(), strict=True)),
            "mean_disc_spread_along_cord_mm": float(along.mean()),
            "max_disc_spread_in_plane_mm": float(in_plane.max()),
            "mean_cord_dice": float(np.mean(dices)), "cord_dice": dices,
            "template_mask_dice_with_true_cord": dice(mask, truth_cord),
            "correlation_with_truth": masked_correlation(load_volume(average).data, truth_t2,
                                                         region)}
    return figures


def build_shape(subjects: list[Any]) -> tuple[int, ...]:
    import nibabel as nib

    return tuple(nib.load(str(subjects[0].image)).shape)


def averaging_peak(subjects: list[Any], work: Path) -> dict:
    """Peak RSS of the averaging steps alone over ``subjects`` (images, masks, fields)."""
    from spinal_bidsapp.geometry.fields import DisplacementField
    from spinal_bidsapp.image import load_volume, save_field

    reference = load_volume(subjects[0].image)
    fields = []
    for index, subject in enumerate(subjects):  # written first: not part of the measured peak
        path = work / "fields" / f"{subject.label}_warp.nii"
        if not path.is_file():
            rng = np.random.default_rng(index)
            data = rng.normal(0, 0.1, (*reference.shape, 3)).astype(np.float32)
            save_field(DisplacementField(data=data, affine=reference.affine), path)
        fields.append(path)
    weight = work / "weight.nii.gz"  # the contrast average's coverage weight: all covered
    if not weight.is_file():
        from spinal_bidsapp.image import Volume, save_volume

        save_volume(Volume(np.ones(reference.shape, np.uint8), reference.affine), weight,
                    dtype=np.uint8)
    code = f"""
import json, resource, sys
from pathlib import Path
sys.path.insert(0, {str(REPO)!r})
from benchmarks.scale import _build, _peak_mb, make_inputs
from spinal_bidsapp.engines.builtin.template import _mean_field, _write_average
subjects = make_inputs(Path({str(work.parent)!r}), {len(subjects)})
build = _build(subjects, Path({str(work)!r}), 8.0, 1)
before = _peak_mb(resource.RUSAGE_SELF)
out = Path({str(work)!r}) / "average"
out.mkdir(parents=True, exist_ok=True)
_write_average(build, out, [s.image for s in subjects], [s.cord_mask for s in subjects])
images = _peak_mb(resource.RUSAGE_SELF)
_mean_field(build, {[str(p) for p in fields]!r}, None)
fields = _peak_mb(resource.RUSAGE_SELF)
from types import SimpleNamespace
import numpy as np
from spinal_bidsapp.group.contrasts import _weighted_moments
from spinal_bidsapp.image import load_volume
jobs = [SimpleNamespace(outputs={{"image": s.image, "cord": s.cord_mask,
                                  "weight": Path({str(weight)!r})}}) for s in subjects]
_weighted_moments(jobs)
contrast = _peak_mb(resource.RUSAGE_SELF)
# the contrast average as it was before it streamed (every subject stacked), measured last
# since the peak only grows
weights = np.stack([load_volume(j.outputs["weight"]).data for j in jobs]).astype(np.float64)
stack = np.stack([load_volume(j.outputs["image"]).data for j in jobs]).astype(np.float64)
mean = (weights * stack).sum(axis=0) / weights.sum(axis=0)
print(json.dumps({{"baseline_mb": before, "after_image_average_mb": images,
                  "after_mean_field_mb": fields, "after_contrast_average_mb": contrast,
                  "after_stacked_contrast_average_mb": _peak_mb(resource.RUSAGE_SELF)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return {"subjects": len(subjects), **json.loads(proc.stdout.strip().splitlines()[-1])}


# ------------------------------------------------------------------------------- projection

def project(registration_cpu_s: dict[float, float], n_subjects: int, cores: int, nodes: int, *,
            update_fixed_s: float, update_per_subject_s: float, resample_per_subject_s: float,
            inverse_s: float) -> dict:
    """Wall time of the seed preset (4 iterations at each of 8, 4, 2, 1 mm) for ``n_subjects``.

    Method: CPU seconds measured here stand for wall seconds on an otherwise idle node (every
    worker is one single-threaded process, so its wall time on a free core is its CPU time).
    Each iteration runs ``n_subjects`` registrations (the mirrored copies of the symmetric mode
    are derived, not registered) on ``nodes * cores`` workers: ``ceil(n / workers)`` rounds of
    the level's mean registration CPU time. The update is the main process's serial work, a
    fixed part (the mean field's inverse, the writes) plus a part per subject (reading each
    field for the means, the averages), plus the resampling of every subject, spread over the
    workers. The final step inverts every subject's warp (``ceil(n / workers)`` rounds).
    Ignored: memory-bandwidth and file-system contention between 16 workers, scheduling and
    node start-up; the update stays on one node (it is serial), so more nodes only divide the
    registrations and resamplings.
    """
    workers = nodes * cores
    rounds = math.ceil(n_subjects / workers)
    update = (update_fixed_s + update_per_subject_s * n_subjects
              + rounds * resample_per_subject_s)
    per_level = {level: ITERATIONS_PER_LEVEL * (rounds * seconds + update)
                 for level, seconds in registration_cpu_s.items()}
    total = sum(per_level.values()) + rounds * inverse_s
    return {"subjects": n_subjects, "nodes": nodes, "cores_per_node": cores,
            "update_s": update, "per_level_s": per_level, "total_h": total / 3600.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=["inputs", "levels", "iteration", "averaging",
                                         "template", "score", "project"])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--level", type=float, default=1.0)
    parser.add_argument("--levels", type=float, nargs="*", default=list(SEED_LEVELS_MM))
    parser.add_argument("--sizes", type=int, nargs=2, default=(4, 16))
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--nodes", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--target-subjects", type=int, default=50)
    parser.add_argument("--preset", choices=["seed", "fast"], default="seed")
    parser.add_argument("--work", type=Path, default=WORK)
    args = parser.parse_args(argv)
    os.environ.update({"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "OPENBLAS_NUM_THREADS": "1"})
    if args.step == "inputs":
        started = time.monotonic()
        subjects = make_inputs(args.work, args.subjects)
        print(f"{len(subjects)} subjects on {build_shape(subjects)} in "
              f"{time.monotonic() - started:.0f} s")
    elif args.step in ("levels", "iteration"):
        subjects = make_inputs(args.work, args.subjects)
        levels = args.levels if args.step == "levels" else [args.level]
        runs = []
        for level in levels:
            code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); "
                    "from pathlib import Path; from benchmarks.scale import make_inputs, "
                    "one_iteration; "
                    f"print(json.dumps(one_iteration(make_inputs(Path({str(args.work)!r}), "
                    f"{args.subjects}), Path({str(args.work / f'loop-{args.step}')!r}), {level}, "
                    f"{args.nprocs})))")
            started = time.monotonic()
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=False)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            run = json.loads(proc.stdout.strip().splitlines()[-1])
            run["process_wall_s"] = time.monotonic() - started
            runs.append(run)
            print(json.dumps(run))
        _record(args.step, {"runs": runs})
    elif args.step == "template":
        subjects = make_inputs(args.work, args.subjects)
        run = full_template(subjects, args.work / f"template-{args.subjects}-{args.preset}",
                            args.nprocs, args.preset)
        for row in run["iterations"]:
            print(f"iteration {row['iteration']:2d} at {row['level_mm']:g} mm: registrations "
                  f"{row['registration_wall_s']:.0f} s wall, "
                  f"{np.mean(row['registration_cpu_s']):.1f} s CPU each; "
                  f"update {row['update_wall_s']:.0f} s")
        print(f"build {run['wall_s'] / 60:.1f} min; peak RSS main "
              f"{run['peak_rss_main_mb']:.0f} MB, largest worker "
              f"{run['peak_rss_largest_worker_mb']:.0f} MB")
        record = _record("template", run)  # before scoring: the build's figures are kept
        _score_record(record, args.work)
    elif args.step == "score":  # (re-)score the newest template record
        _score_record(sorted(RESULTS.glob("scale-template-*.json"))[-1], args.work)
    elif args.step == "averaging":
        rows = [averaging_peak(make_inputs(args.work, n), args.work / f"avg-{n}")
                for n in args.sizes]
        for row in rows:
            print(json.dumps(row))
        _record("averaging", {"rows": rows})
    else:
        print(json.dumps(project_from_results(args), indent=2))
    return 0


def _score_record(path: Path, work: Path = WORK) -> None:
    record = json.loads(path.read_text())
    subjects = make_inputs(work, record["subjects"])
    record["scores"] = score_whole_cord(subjects, record)
    path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    for name, figures in record["scores"].items():
        print(f"{name}: max disc spread {figures['max_disc_spread_mm']:.2f} mm (along the cord, "
              f"mean {figures['mean_disc_spread_along_cord_mm']:.2f} mm; in plane, max "
              f"{figures['max_disc_spread_in_plane_mm']:.2f} mm), mean cord Dice "
              f"{figures['mean_cord_dice']:.3f} (template mask vs true cord "
              f"{figures['template_mask_dice_with_true_cord']:.3f}), correlation "
              f"{figures['correlation_with_truth']:.4f}")
    print(f"scores added to {path}")


def project_from_results(args: argparse.Namespace) -> dict:
    """Projection from the measured records (CPU seconds).

    Registration time per level: the newest full ``template`` run when there is one (every
    registration of a real build, cord term included), else the ``levels`` and ``iteration``
    runs. The update's serial part (fixed + per subject) and the resampling per subject: a
    straight-line fit over the ``iteration`` and ``levels`` runs at one level with different
    cohort sizes (the level changes the registrations, not the update).
    """
    runs = []
    for step in ("levels", "iteration"):
        for path in sorted(RESULTS.glob(f"scale-{step}-*.json")):
            runs += json.loads(path.read_text())["runs"]
    if not runs:
        raise SystemExit(f"no scale-levels or scale-iteration results in {RESULTS}: run "
                         "`scale.py iteration --level 8` on two cohort sizes first")
    registration: dict[float, list[float]] = {}
    templates = sorted(RESULTS.glob("scale-template-*.json"))
    source = str(templates[-1].name) if templates else "levels and iteration runs"
    if templates:
        for row in json.loads(templates[-1].read_text())["iterations"]:
            registration.setdefault(row["level_mm"], []).extend(row["registration_cpu_s"])
    else:
        for run in runs:
            registration.setdefault(run["level_mm"], []).extend(run["registration_cpu_s"])
    mean_registration = {level: float(np.mean(v)) for level, v in registration.items()}
    largest = max(runs, key=lambda r: r["subjects"])
    same = [r for r in runs if r["level_mm"] == largest["level_mm"]]
    sizes = np.array([run["subjects"] for run in same], dtype=float)
    main_cpu = np.array([run["update_cpu_main_s"] for run in same])
    if len(set(sizes)) > 1:
        per_subject, fixed = np.polyfit(sizes, main_cpu, 1)
    else:
        per_subject, fixed = float(np.mean(main_cpu / sizes)), 0.0
    resample = float(np.mean([run["resample_cpu_workers_s"] / run["subjects"] for run in runs]))
    inverse = float(np.mean([run["final_inverse_cpu_s"] for run in runs]))
    fit = {"registration_cpu_s_per_level": mean_registration, "registration_source": source,
           "update_main_cpu_s": {"fixed": float(fixed), "per_subject": float(per_subject)},
           "resample_cpu_s_per_subject": resample, "final_inverse_cpu_s": inverse,
           "measured_runs": [(r["level_mm"], r["subjects"]) for r in runs]}
    projections = [project(mean_registration, args.target_subjects, args.cores, n,
                           update_fixed_s=max(float(fixed), 0.0),
                           update_per_subject_s=max(float(per_subject), 0.0),
                           resample_per_subject_s=resample, inverse_s=inverse)
                   for n in args.nodes]
    result = {"fit": fit, "projections": projections}
    _record("project", result)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
