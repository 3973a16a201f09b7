"""Group-level benchmark on curved PAM50 phantoms with known truth (issue #5 figures).

Usage::

    .venv/bin/python benchmarks/group.py [--n-subjects 8] [--preset fast|seed]
        [--resolution 1.0] [--no-ants] [--write-docs] [--work DIR [--score-only]]

Issue #21's figures: ``--n-subjects 8 --preset seed --resolution 0.5 --no-ants --write-docs``
(about 25-35 min on 2 shared cores); ``--write-docs`` writes the ``fast`` preset's section or,
for ``seed``, its own section of docs/benchmarks.md.

Runs the app for real (participant, then group, each in its own process: wall time and peak RSS
per level), then scores the template against the truth the phantoms were generated from:

* **disc spread**: every subject's true disc centres (continuous, not the labelled voxels) mapped
  into template space through its ``from-<tpl>_to-T2w`` field; RMS distance to the cohort mean,
  per disc (target <= 0.5 mm).
* **cord Dice**: each subject's cord mask resampled in template space vs the template cord mask
  (target mean >= 0.9).
* **correlation with the true anatomy**: the real PAM50 T2 intensities (``PAM50_small_t2``, the
  anatomy the phantoms are made of) carried into template space by the template's own disc
  positions (piecewise linear along the cord, cord centre on the template line), correlated
  with the template inside 8 mm of the cord axis between the first and last disc (target >= 0.9).
* **straighten-and-average baseline** (same run, same files): the group level's iteration 0,
  i.e. every subject straightened onto the template space by disc matching, intensity-normalised
  and averaged, with no nonlinear loop. Scored the same three ways: discs and cords through the
  straightening field alone, cord mask = mean of the straightened cords >= 0.5, correlation of
  the mean image.
* **per iteration** (``iterations``): correlation of every iteration's average with the truth,
  the size of its cord mask and its Dice with the final mask; and two variants of the cord Dice
  that separate registration from mask making: the subjects' straightened cords through the
  loop's final warps (the masks the template mask is averaged from) and the subjects' true cords
  in template space against their own majority vote.
* **ants** (optional): ``ants.build_template(type_of_transform='SyNOnly')`` on the very same
  straightened, normalised inputs (the group level's own intermediate files), same core budget,
  scored the same way (correlation), with its wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.participant import _replace_section, run_worker  # noqa: E402
from benchmarks.scoring import dice, disc_spread_mm, masked_correlation  # noqa: E402
from spinal_bidsapp.geometry.discs import discs_from_label_array  # noqa: E402
from spinal_bidsapp.geometry.fields import apply_field, transform_points  # noqa: E402
from spinal_bidsapp.image import load_field, load_mask, load_volume  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
NAME = "SpinalCord"


def true_anatomy_on_template(data: Path, tpl: Path) -> tuple[np.ndarray, np.ndarray]:
    """PAM50_small T2 carried onto the template grid by the discs; and the scoring mask."""
    template = nib.load(str(tpl / f"tpl-{NAME}_res-01_T2w.nii.gz"))
    description = json.loads((tpl / "template_description.json").read_text())
    discs = {int(k): v["z_mm"] for k, v in description["Discs"].items()}
    pam = load_volume(data / "PAM50_small" / "PAM50_small_t2.nii.gz")
    pam_discs = load_mask(data / "PAM50_small" / "PAM50_small_label_disc.nii.gz")
    pam_points = discs_from_label_array(pam_discs.data, pam_discs.affine)
    cord = load_mask(data / "PAM50_small" / "PAM50_small_cord.nii.gz")
    cord_xyz = np.argwhere(cord.data > 0) @ cord.affine[:3, :3].T + cord.affine[:3, 3]
    centre = cord_xyz[:, :2].mean(axis=0)
    common = sorted(set(discs) & set(pam_points))
    z_tpl = np.array([discs[v] for v in common])
    z_pam = np.array([pam_points[v][2] for v in common])
    order = np.argsort(z_tpl)
    ijk = np.indices(template.shape).reshape(3, -1).T
    world = ijk @ template.affine[:3, :3].T + template.affine[:3, 3]
    z_mapped = np.interp(world[:, 2], z_tpl[order], z_pam[order])
    pam_world = np.column_stack([world[:, 0] + centre[0], world[:, 1] + centre[1], z_mapped])
    inv = np.linalg.inv(pam.affine)
    vox = pam_world @ inv[:3, :3].T + inv[:3, 3]
    truth = ndimage.map_coordinates(pam.data, vox.T, order=1, mode="constant", cval=0.0)
    radius = np.hypot(world[:, 0], world[:, 1])
    inside = (radius <= 8.0) & (world[:, 2] <= z_tpl.max()) & (world[:, 2] >= z_tpl.min())
    return truth.reshape(template.shape), inside.reshape(template.shape)


def score(cohort: object, out: Path, data: Path) -> dict:
    from spinal_bidsapp.synth import SubjectTruth

    tpl = out / f"tpl-{NAME}"
    template = np.asarray(nib.load(str(tpl / f"tpl-{NAME}_res-01_T2w.nii.gz")).dataobj, float)
    mask = np.asarray(nib.load(str(tpl / f"tpl-{NAME}_res-01_label-SC_mask.nii.gz")).dataobj) > 0
    positions, dices = [], {}
    for truth in cohort.truths:  # type: ignore[attr-defined]
        assert isinstance(truth, SubjectTruth)
        label = "sub-" + truth.subject.removeprefix("sub-")
        anat = out / label / "anat"
        field = load_field(anat / f"{label}_from-{NAME}_to-T2w_mode-image_xfm.nii.gz")
        discs = {d.disc: np.asarray(d.position_mm, float) for d in truth.discs
                 if d.voxel is not None}
        values = sorted(discs)
        mapped = transform_points(np.array([discs[v] for v in values]), field)
        positions.append(dict(zip(values, mapped, strict=True)))
        cord = np.asarray(nib.load(str(anat / f"{label}_space-{NAME}_label-SC_mask.nii.gz"))
                          .dataobj) > 0
        dices[label] = dice(cord, mask)
    spread = disc_spread_mm(positions)
    truth_img, region = true_anatomy_on_template(data, tpl)
    return {"disc_spread_mm": {str(k): v for k, v in spread.items()},
            "max_disc_spread_mm": max(spread.values()),
            "cord_dice": dices, "mean_cord_dice": float(np.mean(list(dices.values()))),
            "correlation_with_truth": masked_correlation(template, truth_img, region)}


def _warped_cord(cord: Path, field_path: Path) -> np.ndarray:
    volume = load_volume(cord)
    warped = apply_field(volume.data, volume.affine, load_field(field_path), order=1)
    return np.asarray(warped) > 0.5


def straight_average_baseline(cohort: object, out: Path, data: Path) -> dict:
    """Straighten-and-average (iteration 0 of the loop) scored like the template."""
    work = out / "work" / "group"
    straight = work / "straight"
    iteration0 = work / "template" / "iter-000"
    mask = load_volume(iteration0 / "mask.nii.gz").data > 0
    positions, dices = [], {}
    for truth in cohort.truths:  # type: ignore[attr-defined]
        label = "sub-" + truth.subject.removeprefix("sub-")
        discs = {d.disc: np.asarray(d.position_mm, float) for d in truth.discs
                 if d.voxel is not None}
        values = sorted(discs)
        field = load_field(straight / label / "straight2curve.nii.gz")
        mapped = transform_points(np.array([discs[v] for v in values]), field)
        positions.append(dict(zip(values, mapped, strict=True)))
        cord = out / label / "anat" / f"{label}_label-SC_mask.nii.gz"
        dices[label] = dice(_warped_cord(cord, straight / label / "curve2straight.nii.gz"), mask)
    spread = disc_spread_mm(positions)
    truth_img, region = true_anatomy_on_template(data, out / f"tpl-{NAME}")
    average = load_volume(iteration0 / "avg.nii.gz").data
    return {"disc_spread_mm": {str(k): v for k, v in spread.items()},
            "max_disc_spread_mm": max(spread.values()),
            "cord_dice": dices, "mean_cord_dice": float(np.mean(list(dices.values()))),
            "correlation_with_truth": masked_correlation(average, truth_img, region)}


def iteration_diagnostics(out: Path, data: Path) -> dict:
    """Per-iteration template figures and two cord-Dice variants (see the module docstring)."""
    work = out / "work" / "group"
    truth_img, region = true_anatomy_on_template(data, out / f"tpl-{NAME}")
    iterations = sorted((work / "template").glob("iter-*"))
    final = load_volume(iterations[-1] / "mask.nii.gz").data > 0
    rows = []
    for directory in iterations:
        mask = load_volume(directory / "mask.nii.gz").data > 0
        stats = json.loads((directory / "stats.json").read_text())
        rows.append({"iteration": stats["iteration"], "level_mm": stats["level_mm"],
                     "correlation_with_truth": masked_correlation(
                         load_volume(directory / "avg.nii.gz").data, truth_img, region),
                     "mask_voxels": int(mask.sum()), "dice_with_final_mask": dice(mask, final),
                     "median_sd_in_mask": stats["median_sd_in_mask"],
                     "mean_warp_rms_mm": stats.get("mean_warp_rms_mm")})
    straight_dice, true_cords = {}, []
    for subject in sorted((work / "straight").iterdir()):
        warp = iterations[-1] / "warps" / f"{subject.name}_warp.nii"
        if warp.is_file():
            straight_dice[subject.name] = dice(_warped_cord(subject / "cord.nii.gz", warp), final)
        anat = out / subject.name / "anat"
        true_cords.append(load_volume(
            anat / f"{subject.name}_space-{NAME}_label-SC_mask.nii.gz").data > 0)
    vote = np.mean(true_cords, axis=0) >= 0.5
    return {"iterations": rows,
            "mean_dice_straight_cords_final_warps": float(np.mean(list(straight_dice.values())))
            if straight_dice else None,
            "mean_dice_true_cords_vs_their_majority": float(np.mean(
                [dice(c, vote) for c in true_cords]))}


def ants_baseline(out: Path, data: Path, iterations: int, threads: int) -> dict:
    """ants.build_template on the group level's own straightened inputs."""
    code = f"""
import json, os, sys, time
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "{threads}"
import ants
paths = sys.argv[1:]
images = [ants.image_read(p) for p in paths]
start = time.perf_counter()
tpl = ants.build_template(image_list=images, type_of_transform="SyNOnly",
                          iterations={iterations})
elapsed = time.perf_counter() - start
ants.image_write(tpl, "{out}/ants_template.nii.gz")
print(json.dumps({{"wall_s": elapsed}}))
"""
    straight = sorted((out / "work" / "group" / "straight").glob("*/image.nii.gz"))
    proc = subprocess.run([sys.executable, "-c", code, *map(str, straight)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    tpl = out / f"tpl-{NAME}"
    truth_img, region = true_anatomy_on_template(data, tpl)
    ants_tpl = np.asarray(nib.load(str(out / "ants_template.nii.gz")).dataobj, float)
    result["correlation_with_truth"] = masked_correlation(ants_tpl, truth_img, region)
    result["iterations"] = iterations
    return result


def write_docs(results: dict, command: str) -> None:
    q, group, part = results["quality"], results["group_level"], results["participant_level"]
    heading = ("## Group template (curved PAM50 phantoms)" if results["preset"] == "fast"
               else f"## Group template at the {results['preset']} preset (#21)")
    lines = [
        heading, "",
        f"Machine: {results['machine']}. Command: `{command}`. {results['n_subjects']} curved "
        f"phantoms (seed {results.get('seed', 0)}), template preset `{results['preset']}`, "
        f"{results['resolution_mm']} mm, symmetric. Participant and group levels run for real, "
        "each in its own process.", "",
        "| measure | value | target |", "|---|---|---|",
        f"| max disc spread in template space (RMS across subjects, worst disc) | "
        f"{q['max_disc_spread_mm']:.2f} mm | <= 0.3 mm (#21) |",
        f"| mean cord Dice, subject masks in template space vs template mask | "
        f"{q['mean_cord_dice']:.3f} | >= 0.95 (#21) |",
        f"| correlation of the template with the true anatomy (8 mm around the cord) | "
        f"{q['correlation_with_truth']:.3f} | >= 0.98 (#21) |",
        *_baseline_lines(results),
        f"| participant level, all subjects (wall / peak RSS) | {part['wall_s']:.0f} s / "
        f"{part['peak_rss_mb']:.0f} MB | |",
        f"| group level (wall / peak RSS) | {group['wall_s']:.0f} s / "
        f"{group['peak_rss_mb']:.0f} MB | |",
    ]
    if "ants" in results:
        ants = results["ants"]
        lines += [
            "", "Side by side on the same straightened, normalised inputs (the group level's "
            "intermediate files), same 2 cores. Our loop's time is the sum of its iterations' "
            "registration and update times (`convergence.json`); it also returns every "
            "subject's warps, which `ants.build_template` does not.", "",
            "| method | template time (s) | correlation with truth |", "|---|---|---|",
            f"| spinal_bidsapp builtin loop, {results['preset']} preset (4 iterations) | "
            f"{results['template_loop_s']:.0f} | {q['correlation_with_truth']:.3f} |",
            f"| ants.build_template SyNOnly, {ants['iterations']} iterations (template only) | "
            f"{ants['wall_s']:.0f} | {ants['correlation_with_truth']:.3f} |",
        ]
    lines += _diagnostic_lines(results)
    lines.append("")
    _replace_section(REPO / "docs" / "benchmarks.md", heading, lines)


def _baseline_lines(results: dict) -> list[str]:
    base = results["straight_average"]
    return [f"| straighten-and-average baseline (iteration 0, same run): disc spread / cord "
            f"Dice / correlation | {base['max_disc_spread_mm']:.2f} mm / "
            f"{base['mean_cord_dice']:.3f} / {base['correlation_with_truth']:.3f} | |"]


def _diagnostic_lines(results: dict) -> list[str]:
    diag = results["diagnostics"]
    lines = ["", "Per iteration (correlation of the average with the truth, cord-mask voxels, "
             "Dice of the iteration's mask with the final one, RMS of the mean subject warp "
             "before the shape update):", "",
             "| iteration | level (mm) | correlation | mask voxels | Dice with final mask | "
             "mean warp RMS (mm) |", "|---|---|---|---|---|---|"]
    for row in diag["iterations"]:
        rms = row["mean_warp_rms_mm"]
        lines.append(f"| {row['iteration']} | {row['level_mm'] or '-'} | "
                     f"{row['correlation_with_truth']:.4f} | {row['mask_voxels']} | "
                     f"{row['dice_with_final_mask']:.4f} | "
                     f"{'-' if rms is None else f'{rms:.3f}'} |")
    straight = diag["mean_dice_straight_cords_final_warps"]
    lines += ["", "Cord Dice variants (same template): straightened cords through the final loop "
              f"warps vs the template mask {'-' if straight is None else f'{straight:.3f}'}; "
              "true cords in template space vs their own majority vote "
              f"{diag['mean_dice_true_cords_vs_their_majority']:.3f}."]
    return lines


def main(argv: list[str] | None = None) -> int:
    from benchmarks.cohort import ensure_cohort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--n-subjects", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="cohort seed (phantoms differ)")
    parser.add_argument("--preset", choices=["fast", "seed"], default="fast")
    parser.add_argument("--resolution", type=float, default=1.0)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--no-ants", action="store_true")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--score-only", action="store_true",
                        help="score the outputs already in WORK/out (no run; no timings)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-group-"))
    cohort = ensure_cohort(work / "cohort", kind="phantom", n_subjects=args.n_subjects,
                           seed=args.seed, data_dir=args.data)
    out = work / "out"
    participant = group = {}
    if not args.score_only:
        shutil.rmtree(out, ignore_errors=True)  # timings of a resumed run would mean nothing
        common = ["--skip-bids-validation", "--nprocs", str(args.nprocs)]
        participant = run_worker([str(cohort.bids_dir), str(out), "participant", *common])
        group = run_worker([str(cohort.bids_dir), str(out), "group", *common,
                           "--template-resolution", str(args.resolution),
                           "--template-preset", args.preset])
    results: dict = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                   f"Python {platform.python_version()}",
        "n_subjects": args.n_subjects, "seed": args.seed, "preset": args.preset,
        "resolution_mm": args.resolution, "participant_level": participant,
        "group_level": group, "quality": score(cohort, out, args.data),
        "straight_average": straight_average_baseline(cohort, out, args.data),
        "diagnostics": iteration_diagnostics(out, args.data),
    }
    convergence = json.loads((out / f"tpl-{NAME}" / "iterations" / "convergence.json")
                             .read_text())
    results["template_loop_s"] = sum(
        it.get("timing", {}).get("registration_wall_s", 0.0)
        + it.get("timing", {}).get("update_wall_s", 0.0) for it in convergence["iterations"])
    if not args.no_ants:
        iterations = 4 if args.preset == "fast" else 16
        results["ants"] = ants_baseline(out, args.data, iterations, args.nprocs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "group.json" if args.seed == 0 else f"group-seed{args.seed}.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=float))
    print(json.dumps(results, indent=2, default=float))
    if args.write_docs:
        write_docs(results, "python benchmarks/group.py " + " ".join(
            argv if argv is not None else sys.argv[1:]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
