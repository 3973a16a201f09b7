"""Benchmark: four template builders side by side in one run, on the same straightened inputs.

Not a test: run by hand; results go to ``benchmarks/results/template-engines-<UTC time>.json``
(git-ignored) and a Markdown table on stdout for ``docs/benchmarks.md``::

    (. /work/tools-cache-scale/minc.env && nice -n 10 .venv/bin/python \\
        benchmarks/template_engines.py --subjects 6 --nprocs 2)

Methods (each in a fresh process, ``nprocs`` cores, 4 template iterations):

* **builtin** (ours), symmetric (the app's default) and not: ``build_template`` with the
  protocol 2 mm x 2 then 1 mm x 2 and the seed preset's registration settings;
* **ants.build_template** (antspyx), ``type_of_transform='SyNOnly'``, 4 iterations, its own
  registration schedule; it returns no warps, so every subject is registered once more to the
  final template (same settings) for the scores, timed separately;
* **greedy** (``picsl-greedy`` wheel; it ships no template script, so the loop is driven here):
  the same loop as ours and ANTs' (mean start; register every subject to the template; average
  the resliced subjects; reslice that average through the inverse of the mean warp, computed by
  greedy ``-iw``), with, at each template iteration, greedy's pyramid mirroring ours (same number
  of levels, same iterations at the same shrink factors, NCC 2x2x2); like ANTs, one more
  registration per subject to the final template for the scores;
* **MINC** (the seed's ipl/minctracc engine, ``MincTemplateBuilder``) when ``minctracc`` is on
  ``PATH``: same protocol, not symmetric (symmetric costs it 3.8x, docs/benchmarks.md).

Inputs: the straightened cohort of ``benchmarks/template.py`` (48 x 48 x 64 voxels of 0.5 mm,
seed 0): the true anatomy pulled through smooth, zero-mean random deformations ``d_i`` (known:
re-drawn here from the same seed), so subject point ``p`` shows true-anatomy point
``p + d_i(p)``.

Scores: those of ``benchmarks/template.py`` (correlation of the template with the true anatomy
and RMS error in the cord/CSF region, mean Dice of the subjects' cord masks carried by each
method's own transforms with the template cord mask, Dice of that mask with the true cord,
sharpness = mean gradient magnitude relative to the truth's) plus the **correspondence spread**,
the analogue of the disc spread: every method's template-to-subject map ``phi_i`` (obtained by
resampling the subject's coordinate images through the method's own transform) gives the true
anatomical point seen at template point ``q``, ``A_i(q) = phi_i(q) + d_i(phi_i(q))``; a perfect
template sees the same point in every subject. Landmark spread: RMS over subjects of
``|A_i(q) - mean A(q)|`` at the cord centre every 4 mm in z (the worst landmark reported, like
the worst disc); dense spread: the same RMS over the true cord.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.template import (  # noqa: E402
    AFFINE,
    ANATOMY,
    GRID,
    SHAPE,
    _load,
    evaluate,
    make_cohort,
    write_record,
)

PROTOCOL = ((2.0, 2), (1.0, 2))
LANDMARK_Z_MM = tuple(float(z) for z in range(4, 29, 4))


# --------------------------------------------------------------------------- truth and maps

def true_displacements(n_subjects: int, seed: int) -> list[NDArray[np.float64]]:
    """The cohort's ``d_i`` ``(3, *SHAPE)`` (mm), re-drawn exactly as ``make_cohort`` drew them."""
    from spinal_bidsapp.synth.straight import _draw_displacement, grid_mm

    rng = np.random.default_rng(seed)
    x, y, _ = grid_mm(GRID)
    fields = [_draw_displacement(rng, x, y, smoothing_vox=(6, 6, 12), amplitude_mm=1.5,
                                 z_scale=0.3, scale_range=(0.9, 1.1)) for _ in range(n_subjects)]
    mean = np.mean(fields, axis=0)
    return [f - mean for f in fields]


def coordinate_images(folder: Path) -> list[Path]:
    """World x, y, z (mm, RAS) of every subject voxel, as three float32 images."""
    folder.mkdir(parents=True, exist_ok=True)
    ijk = np.indices(SHAPE, dtype=np.float64)
    world = np.tensordot(AFFINE[:3, :3], ijk, axes=1) + AFFINE[:3, 3, None, None, None]
    paths = []
    for axis, name in enumerate("xyz"):
        path = folder / f"coord_{name}.nii.gz"
        nib.save(nib.Nifti1Image(world[axis].astype(np.float32), AFFINE), path)
        paths.append(path)
    return paths


def correspondence_spread(maps: list[NDArray], displacements: list[NDArray]) -> dict[str, Any]:
    """Landmark and dense spread of the true points seen at each template point (see above)."""
    from spinal_bidsapp.synth.straight import grid_mm, render_straight_anatomy

    inverse = np.linalg.inv(AFFINE)
    seen = []
    for phi, d in zip(maps, displacements, strict=True):  # phi: (3, *SHAPE) subject mm
        vox = np.tensordot(inverse[:3, :3], phi, axes=1) + inverse[:3, 3, None, None, None]
        d_at = np.stack([ndimage.map_coordinates(c, vox, order=1, mode="nearest") for c in d])
        seen.append(phi + d_at)
    points = np.stack(seen)  # (subjects, 3, *SHAPE)
    deviation = np.linalg.norm(points - points.mean(axis=0), axis=1)  # (subjects, *SHAPE)
    rms = np.sqrt((deviation ** 2).mean(axis=0))
    x, y, z = grid_mm(GRID)
    cord = render_straight_anatomy(ANATOMY, x, y, z).cord > 0.5
    cord[:, :, :4] = cord[:, :, -4:] = False  # z borders: no data beyond them
    centre = np.array([(s - 1) / 2 for s in SHAPE[:2]])
    landmarks = {}
    for z_mm in LANDMARK_Z_MM:
        k = (z_mm - AFFINE[2, 3]) / AFFINE[2, 2]
        vox = np.array([[centre[0]], [centre[1]], [k]])
        landmarks[z_mm] = float(ndimage.map_coordinates(rms, vox, order=1)[0])
    return {"landmark_spread_mm": landmarks, "max_landmark_spread_mm": max(landmarks.values()),
            "dense_spread_in_cord_mm": float(np.sqrt((rms[cord] ** 2).mean()))}


# ------------------------------------------------------------------------------- methods

def run_builtin(subjects: list[Any], work: Path, coords: list[Path], nprocs: int,
                symmetric: bool) -> dict:
    import ants  # noqa: F401  (import time excluded, as for the others)

    from spinal_bidsapp.engines.builtin import build_template
    from spinal_bidsapp.engines.builtin.protocol import Stage, preset_options
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.image import load_field

    options = preset_options("seed", symmetric=symmetric,
                             protocol=tuple(Stage(level, n) for level, n in PROTOCOL))
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    result = build_template(subjects, work_dir=work, options=options, nprocs=nprocs)
    wall = time.monotonic() - started
    masks, maps = [], []
    coordinates = [_load(c) for c in coords]
    for subject, warps in zip(subjects, result.warps, strict=True):
        field = load_field(warps.subject_to_template)
        masks.append(apply_field(_load(subject.cord_mask), AFFINE, field, order=1))
        maps.append(np.stack([apply_field(c, AFFINE, field, order=1) for c in coordinates]))
    return {"wall_s": wall, "template": _load(result.template), "masks": masks, "maps": maps}


def run_ants(subjects: list[Any], work: Path, coords: list[Path], nprocs: int) -> dict:
    import ants

    images = [ants.image_read(str(s.image)) for s in subjects]
    started = time.monotonic()
    template = ants.build_template(image_list=images, iterations=len(_levels()),
                                   type_of_transform="SyNOnly")
    wall = time.monotonic() - started
    started = time.monotonic()
    masks, maps = [], []
    coordinates = [ants.image_read(str(c)) for c in coords]
    for subject, image in zip(subjects, images, strict=True):
        reg = ants.registration(template, image, type_of_transform="SyNOnly")

        def warp(moving: Any, reg: Any = reg) -> NDArray:
            return ants.apply_transforms(template, moving, reg["fwdtransforms"],
                                         interpolator="linear").numpy().astype(np.float64)

        masks.append(warp(ants.image_read(str(subject.cord_mask))))
        maps.append(np.stack([warp(c) for c in coordinates]))
    return {"wall_s": wall, "warp_export_s": time.monotonic() - started,
            "template": template.numpy().astype(np.float64), "masks": masks, "maps": maps}


def _levels() -> list[float]:
    return [level for level, n in PROTOCOL for _ in range(n)]


def greedy_schedule(level_mm: float) -> str:
    """greedy ``-n`` mirroring the builtin pyramid of one template iteration.

    Our pyramid at ``level_mm`` has shrink factors like (4, 1) with iterations (40, 0); greedy's
    levels are powers of two down to 1, so each of ours goes to the nearest power of two and
    the others get 0 iterations.
    """
    from spinal_bidsapp.engines.builtin.protocol import level_pyramid, preset_options

    pyramid = level_pyramid(level_mm, voxel_mm=abs(AFFINE[0, 0]), shape=SHAPE,
                            options=preset_options("seed"))
    top = int(np.log2(max(pyramid.shrink_factors)) + 0.5)
    iterations = [0] * (top + 1)  # index k: shrink 2^(top - k)
    for shrink, n in zip(pyramid.shrink_factors, pyramid.iterations, strict=True):
        iterations[top - int(np.log2(shrink) + 0.5)] = n
    return "x".join(str(n) for n in iterations)


def run_greedy(subjects: list[Any], work: Path, coords: list[Path], nprocs: int) -> dict:
    from picsl_greedy import Greedy3D

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    threads = f"-d 3 -threads {nprocs}"

    def register(fixed: Path, moving: Path, warp: Path, schedule: str) -> None:
        Greedy3D().execute(f"{threads} -i {fixed} {moving} -n {schedule} -m NCC 2x2x2 "
                           f"-o {warp}")

    def reslice(fixed: Path, moving: Path, out: Path, *warps: Path) -> None:
        Greedy3D().execute(f"{threads} -rf {fixed} -rm {moving} {out} -r "
                           + " ".join(map(str, warps)))

    started = time.monotonic()
    template = work / "template_000.nii.gz"
    _mean_image([s.image for s in subjects], template)
    schedules = []
    for k, level in enumerate(_levels(), start=1):
        schedule = greedy_schedule(level)
        schedules.append(schedule)
        folder = work / f"iter-{k:03d}"
        folder.mkdir()
        warps, warped = [], []
        for subject in subjects:
            warp, out = folder / f"{subject.label}_warp.nii.gz", folder / f"{subject.label}.nii.gz"
            register(template, Path(subject.image), warp, schedule)
            reslice(template, Path(subject.image), out, warp)
            warps.append(warp)
            warped.append(out)
        average, mean_warp = folder / "average.nii.gz", folder / "mean_warp.nii.gz"
        _mean_image(warped, average)
        _mean_image(warps, mean_warp)
        inverse = folder / "mean_inverse.nii.gz"
        Greedy3D().execute(f"{threads} -iw {mean_warp} {inverse}")
        template = work / f"template_{k:03d}.nii.gz"
        reslice(average, average, template, inverse)
    wall = time.monotonic() - started
    started = time.monotonic()
    masks, maps = [], []
    final = work / "final"
    final.mkdir()
    for subject in subjects:
        warp = final / f"{subject.label}_warp.nii.gz"
        register(template, Path(subject.image), warp, schedules[-1])
        outs = []
        for source, name in ((Path(subject.cord_mask), "cord"),
                             *((c, c.name.removesuffix(".nii.gz")) for c in coords)):
            out = final / f"{subject.label}_{name}.nii.gz"
            reslice(template, source, out, warp)
            outs.append(_load(out))
        masks.append(outs[0])
        maps.append(np.stack(outs[1:]))
    return {"wall_s": wall, "warp_export_s": time.monotonic() - started,
            "template": _load(template), "masks": masks, "maps": maps, "schedules": schedules}


def _mean_image(paths: list[Path], out: Path) -> None:
    """Voxelwise mean of images (or ITK warps) on one grid, keeping the first one's header."""
    first = nib.load(str(paths[0]))
    total = np.zeros(first.shape, np.float64)
    for path in paths:
        total += np.asarray(nib.load(str(path)).dataobj, dtype=np.float64)
    header = first.header.copy()
    header.set_data_dtype(np.float32)
    nib.save(nib.Nifti1Image((total / len(paths)).astype(np.float32), first.affine, header), out)


def run_minc(subjects: list[Any], work: Path, coords: list[Path], nprocs: int) -> dict:
    from spinal_bidsapp.engines.builtin.protocol import Stage
    from spinal_bidsapp.engines.minc import (
        MINC_ENVIRONMENT,
        MincTemplateBuilder,
        MincTemplateOptions,
        centre_x_shift,
        minc_to_nifti,
        nifti_to_minc,
    )
    from spinal_bidsapp.engines.tools import run_tool
    from spinal_bidsapp.image import load_volume

    options = MincTemplateOptions(protocol=tuple(Stage(level, n) for level, n in PROTOCOL),
                                  symmetric=False)
    builder = MincTemplateBuilder(options)
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    result = builder.build_template(subjects, work_dir=work, nprocs=nprocs)
    wall = time.monotonic() - started
    started = time.monotonic()
    reference = load_volume(subjects[0].image)
    shift = centre_x_shift(reference.affine, reference.shape)
    n = options.n_iterations
    prefix = work / "model_nl_all"
    model = prefix / f"avg.{n:03d}.mnc"
    masks, maps = [], []
    folder = work / "coords"
    folder.mkdir(exist_ok=True)
    for subject in subjects:
        masks.append(_load(work / "cord" / f"{subject.label}_warped.nii.gz"))
        xfm = builder._final_transforms(prefix, subject.label)[0]
        channels = []
        for coord in coords:
            name = f"{subject.label}_{coord.name.removesuffix('.nii.gz')}"
            source = nifti_to_minc(coord, folder / f"{name}.mnc",
                                   log_file=work / "logs" / f"nii2mnc_{name}.log",
                                   shift_mm=shift)
            out = folder / f"{name}_warped.mnc"
            run_tool(["itk_resample", source, out, "--order", "1", "--transform", xfm,
                      "--like", model], log_file=work / "logs" / f"coord_{name}.log",
                     expected_outputs=[out], threads=1, timeout_s=600,
                     extra_env=MINC_ENVIRONMENT)
            back = minc_to_nifti(out, folder / f"{name}_warped.nii.gz", reference=reference,
                                 log_file=work / "logs" / "mnc2nii_coord.log", shift_mm=shift)
            channels.append(_load(back))
        maps.append(np.stack(channels))
    return {"wall_s": wall, "warp_export_s": time.monotonic() - started,
            "template": _load(result.template), "masks": masks, "maps": maps}


def _child(method: str, nprocs: int, *args: Any) -> dict:
    threads = "1" if method in ("builtin", "builtin_symmetric", "minc") else str(nprocs)
    os.environ.update({"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": threads,
                       "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads})
    before = _cpu_s()
    if method == "builtin_symmetric":
        out = run_builtin(*args, nprocs, True)
    elif method == "builtin":
        out = run_builtin(*args, nprocs, False)
    else:
        out = {"ants": run_ants, "greedy": run_greedy, "minc": run_minc}[method](*args, nprocs)
    out["cpu_s"] = _cpu_s() - before  # build and warp export together
    return out


def _cpu_s() -> float:
    own, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                      resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def in_fresh_process(method: str, nprocs: int, *args: Any) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, method, nprocs, *args).result()


NAMES = {"builtin_symmetric": "builtin, symmetric (app default)", "builtin": "builtin",
         "ants": "ants.build_template SyNOnly", "greedy": "greedy loop (picsl-greedy)",
         "minc": "MINC (ipl/minctracc)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="*", default=list(NAMES), choices=list(NAMES))
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-template-engines")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    methods = [m for m in args.methods if m != "minc" or shutil.which("minctracc")]
    if len(methods) < len(args.methods):
        print("minctracc is not on PATH: the MINC engine is left out (source minc.env)")
    subjects = make_cohort(args.work / "inputs", args.subjects, seed=args.seed)
    coords = coordinate_images(args.work / "coords")
    displacements = true_displacements(args.subjects, args.seed)
    rows: dict[str, dict] = {}
    identity = [np.stack([_load(c) for c in coords])] * args.subjects
    rows["voxel mean (iteration 0)"] = {
        "wall_s": 0.0, **evaluate(np.mean([_load(s.image) for s in subjects], axis=0),
                                  [_load(s.cord_mask) for s in subjects]),
        **correspondence_spread(identity, displacements)}
    extra: dict[str, Any] = {}
    for method in methods:
        run = in_fresh_process(method, args.nprocs, subjects, args.work / method, coords)
        rows[NAMES[method]] = {k: run[k] for k in ("wall_s", "warp_export_s", "cpu_s")
                               if k in run} | evaluate(run["template"], run["masks"]) \
            | correspondence_spread(run["maps"], displacements)
        if "schedules" in run:
            extra["greedy_schedules"] = run["schedules"]
        print(NAMES[method], json.dumps({k: v for k, v in rows[NAMES[method]].items()
                                         if not isinstance(v, dict)}, default=float))
    write_record(args, "template-engines", {"protocol": PROTOCOL, "results": rows, **extra})
    print("| method | build wall s | CPU s | corr. with truth | RMS | sharpness / truth | "
          "Dice subj. vs tpl mask | Dice tpl mask vs true cord | max landmark spread mm | "
          "dense spread in cord mm |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        wall = f"{r['wall_s']:.1f}" + (f" (+{r['warp_export_s']:.1f} warps)"
                                       if "warp_export_s" in r else "")
        cpu = f"{r['cpu_s']:.0f}" if "cpu_s" in r else ""
        print(f"| {name} | {wall} | {cpu} | {r['correlation_with_truth']:.4f} | "
              f"{r['rms_error_vs_truth']:.1f} | {r['sharpness_relative_to_truth']:.3f} | "
              f"{r['mean_dice_subjects_vs_template_mask']:.3f} | "
              f"{r['dice_template_mask_vs_true_cord']:.3f} | "
              f"{r['max_landmark_spread_mm']:.2f} | {r['dense_spread_in_cord_mm']:.2f} |")


if __name__ == "__main__":
    main()
