"""Benchmark: builtin template loop vs ``ants.build_template(type_of_transform='SyNOnly')``.

Not a test: run by hand; results go to ``benchmarks/results/template-<UTC time>.json``
(git-ignored) and a Markdown table on stdout for ``docs/benchmarks.md``::

    .venv/bin/python benchmarks/template.py --subjects 8 --nprocs 2

Inputs: a cohort of straightened phantoms on one 0.5 mm grid, made by
``spinal_bidsapp.synth.straight`` (the straightened inputs of the group level are what we need,
not the curved subjects of the rest of ``spinal_bidsapp.synth``). The true mean anatomy is a
straight cord (white matter, H-shaped grey matter, z-varying width) in a CSF canal; each subject
is that anatomy pulled through a smooth, zero-mean (across the cohort) random in-plane
deformation plus a subject scale of the cord, with Rician-free Gaussian noise.

Both methods run on the same files, each in a fresh process with the same core budget: ANTs with
``nprocs`` ITK threads (its loop is serial), ours with ``nprocs`` worker processes of one thread.
Quality: correlation of the template with the true anatomy in the cord/CSF region, mean Dice of
each subject's warped cord mask with the template cord mask (probability >= 0.5 of the warped
masks), Dice of that template mask with the true cord, and sharpness (mean gradient magnitude in
the region, relative to the truth). ``ants.build_template`` returns no warps: each subject is
registered once more to its final template (same SyNOnly settings) for the mask metrics, and that
time is reported separately.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import re
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.synth.acquisition import Grid
from spinal_bidsapp.synth.straight import (
    StraightAnatomy,
    draw_straight_cohort,
    grid_mm,
    render_straight_anatomy,
    write_straight_cohort,
)

REPO = Path(__file__).resolve().parents[1]
VOXEL_MM = 0.5
SHAPE = (48, 48, 64)
AFFINE = np.diag([-VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
AFFINE[:3, 3] = [(SHAPE[0] - 1) / 2 * VOXEL_MM, -(SHAPE[1] - 1) / 2 * VOXEL_MM, 0.0]


GRID = Grid(shape=SHAPE, affine=AFFINE)
ANATOMY = StraightAnatomy()  # z-varying width, H-shaped grey matter


def make_cohort(root: Path, n: int, *, seed: int) -> list[Any]:
    """Write ``n`` subjects (image, cord mask); returns TemplateSubjects."""
    subjects = draw_straight_cohort(GRID, n, seed=seed, anatomy=ANATOMY, smoothing_vox=(6, 6, 12),
                                    amplitude_mm=1.5, z_scale=0.3, scale_range=(0.9, 1.1),
                                    noise_sd=30.0)
    return write_straight_cohort(root, subjects, AFFINE)


def _load(path: Path) -> NDArray:
    return np.asarray(nib.load(str(path)).get_fdata(), dtype=np.float64)  # type: ignore[attr-defined]


def _dice(a: NDArray, b: NDArray) -> float:
    a, b = a > 0.5, b > 0.5
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def evaluate(template: NDArray, warped_masks: list[NDArray]) -> dict[str, float]:
    from spinal_bidsapp.engines.builtin.averaging import correlation_in_mask

    tissues = render_straight_anatomy(ANATOMY, *grid_mm(GRID))
    truth, cord = tissues.image, tissues.cord
    region = ndimage.binary_dilation(tissues.csf > 0.5, iterations=2)
    region[:, :, :3] = region[:, :, -3:] = False  # ignore the z borders (no data beyond)
    probability = np.mean(warped_masks, axis=0)
    template_mask = probability >= 0.5

    def sharpness(img: NDArray) -> float:
        return float(np.linalg.norm(np.gradient(img, VOXEL_MM), axis=0)[region].mean())

    return {
        "correlation_with_truth": correlation_in_mask(template, truth, region),
        "rms_error_vs_truth": float(np.sqrt(np.mean((template - truth)[region] ** 2))),
        "mean_dice_subjects_vs_template_mask": float(np.mean(
            [_dice(m, template_mask) for m in warped_masks])),
        "dice_template_mask_vs_true_cord": _dice(template_mask, cord),
        "sharpness_relative_to_truth": sharpness(template) / sharpness(truth),
    }


def run_builtin(subjects: list[Any], work: Path, options_json: str, nprocs: int) -> dict:
    import ants  # noqa: F401  (import time excluded, as for ants.build_template)

    from spinal_bidsapp.engines.builtin import Stage, TemplateOptions, build_template
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.image import load_field

    values = json.loads(options_json)
    values["protocol"] = tuple(Stage(**s) for s in values["protocol"])
    options = TemplateOptions(**values)
    shutil.rmtree(work, ignore_errors=True)
    started = time.monotonic()
    result = build_template(subjects, work_dir=work, options=options, nprocs=nprocs)
    wall = time.monotonic() - started
    masks = []
    for subject, warps in zip(subjects, result.warps, strict=True):
        field = load_field(warps.subject_to_template)
        masks.append(apply_field(_load(subject.cord_mask), AFFINE, field, order=1))
    initial = _load(result.iterations[0].average)
    return {"wall_s": wall, "template": _load(result.template), "masks": masks,
            "initial": initial, "convergence": json.loads(result.convergence.read_text())}


def run_ants(subjects: list[Any], iterations: int) -> dict:
    import ants

    images = [ants.image_read(str(s.image)) for s in subjects]
    started = time.monotonic()
    template = ants.build_template(image_list=images, iterations=iterations,
                                   type_of_transform="SyNOnly")
    wall = time.monotonic() - started
    started = time.monotonic()
    masks = []
    for subject, image in zip(subjects, images, strict=True):
        reg = ants.registration(template, image, type_of_transform="SyNOnly")
        mask = ants.image_read(str(subject.cord_mask))
        masks.append(ants.apply_transforms(template, mask, reg["fwdtransforms"],
                                           interpolator="linear").numpy().astype(np.float64))
    return {"wall_s": wall, "warp_export_s": time.monotonic() - started,
            "template": template.numpy().astype(np.float64), "masks": masks}


def _child(threads: int, fn_name: str, *args: Any) -> dict:
    os.environ.update({"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": str(threads),
                       "OMP_NUM_THREADS": str(threads)})
    if fn_name == "run_ants":
        return run_ants(*args)
    return run_builtin(*args)


def in_fresh_process(threads: int, fn_name: str, *args: Any) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, threads, fn_name, *args).result()


def write_record(args: argparse.Namespace, kind: str, fields: dict[str, Any]) -> Path:
    """Save one run's results as ``<args.out>/<kind>-<UTC time>.json`` with what reproduces and
    qualifies them (date, machine and its load, arguments, template grid); prints the path."""
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(),
               "python": platform.python_version(), "load_average": os.getloadavg()}
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": machine, "args": {k: str(v) for k, v in vars(args).items()},
              "grid": {"shape": SHAPE, "voxel_mm": VOXEL_MM}, **fields}
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{kind}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}.json"
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(f"results: {out}\n")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=4,
                        help="template iterations of both methods")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-template")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--variants", nargs="*", default=None,
                        help="builtin variants to run (default: all)")
    args = parser.parse_args()
    subjects = make_cohort(args.work / "inputs", args.subjects, seed=args.seed)
    half = max(1, args.iterations // 2)
    protocol = [{"level_mm": 2.0, "iterations": half},
                {"level_mm": 1.0, "iterations": args.iterations - half}]
    runs: dict[str, dict] = {}
    variants = {
        "builtin symmetric": {"protocol": protocol, "symmetric": True},
        "builtin symmetric, CC": {"protocol": protocol, "symmetric": True, "metric": "CC"},
        "builtin": {"protocol": protocol, "symmetric": False},
        "builtin symmetric, warm start": {"protocol": protocol, "symmetric": True,
                                          "refine": True},
    }
    variants = {name: values for name, values in variants.items()
                if args.variants is None or name in args.variants}
    runs["ants.build_template SyNOnly"] = in_fresh_process(args.nprocs, "run_ants", subjects,
                                                           args.iterations)
    for name, values in variants.items():
        runs[name] = in_fresh_process(1, "run_builtin", subjects,
                                      args.work / re.sub(r"[^A-Za-z0-9]+", "_", name),
                                      json.dumps(values), args.nprocs)
    first = runs["builtin symmetric"]
    rows = {"voxel mean (iteration 0)": {"wall_s": 0.0, **evaluate(
        first["initial"], [_load(s.cord_mask) for s in subjects])}}
    for name, run in runs.items():
        rows[name] = {k: v for k, v in run.items()
                      if k in ("wall_s", "warp_export_s")} | evaluate(run["template"],
                                                                      run["masks"])
    write_record(args, "template", {
        "protocol": protocol, "results": rows,
        "convergence": {name: runs[name]["convergence"]["iterations"] for name in variants}})
    print("| method | build wall s | corr. with truth | RMS error | mean Dice subj. vs tpl mask "
          "| Dice tpl mask vs true cord | sharpness / truth |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        wall = f"{r['wall_s']:.1f}" + (f" (+{r['warp_export_s']:.1f} warps)"
                                       if "warp_export_s" in r else "")
        print(f"| {name} | {wall} | {r['correlation_with_truth']:.4f} | "
              f"{r['rms_error_vs_truth']:.1f} | {r['mean_dice_subjects_vs_template_mask']:.3f} | "
              f"{r['dice_template_mask_vs_true_cord']:.3f} | "
              f"{r['sharpness_relative_to_truth']:.3f} |")


if __name__ == "__main__":
    main()
