"""Warp files on the whole 0.5 mm PAM50 grid: size, write time, participant peak memory (#18).

Usage::

    .venv/bin/python benchmarks/warps.py [--data ../shared/data] [--repeats 3] [--write-docs]

``sub-errsm30`` (real T2w, manual cord mask and discs) runs the whole participant level in its
own process against the 0.5 mm PAM50 (141x141x991) in SCT's layout: wall time and peak RSS
(process and children). Its warp pair is then written again as the pipeline writes it (the
``from-T2w_to-PAM50`` field cut to the slab the registration covers, expanded to the whole PAM50
grid with float32-max outside; ``from-PAM50_to-T2w`` on the subject's grid): file sizes and the
median write time of the pair. For scale, the same forward field written on its slab alone (what
the app wrote before #18). Last, antspyx applies the forward file to the subject's cord mask on
the whole PAM50 grid: the number of cord voxels outside the slab (ghost voxels) must be 0.

Phantoms: 3 curved phantoms (``spinal_bidsapp.synth``, seed 5) through the participant level
against PAM50_small (70x70x275). Each subject's cord mask is warped onto the whole PAM50_small
grid by antspyx through the written ``from-T2w_to-PAM50`` file: ghost voxels (outside the slices
it maps) and cord Dice with PAM50's over the mapped slices; and, for comparison, through the same
field written on its slab alone (as before #18): ghost voxels, slices and Dice over the warped
extent.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.participant import (  # noqa: E402
    RESULTS,
    _replace_section,
    make_template_dir,
    run_worker,
)
from spinal_bidsapp.geometry.fields import DisplacementField  # noqa: E402
from spinal_bidsapp.image import load_field, save_field  # noqa: E402
from spinal_bidsapp.synth import generate_phantom_cohort  # noqa: E402


def _mapped_block(field: DisplacementField) -> tuple[DisplacementField, slice]:
    """The slices of a whole-grid field that carry a mapping, as their own (slab) field."""
    has = np.isfinite(field.data).all(axis=-1).any(axis=(0, 1))
    k0, k1 = int(np.argmax(has)), int(len(has) - np.argmax(has[::-1]))
    affine = field.affine.copy()
    affine[:3, 3] = field.affine[:3, :3] @ np.array([0.0, 0.0, k0]) + field.affine[:3, 3]
    return DisplacementField(np.ascontiguousarray(field.data[:, :, k0:k1]), affine), \
        slice(k0, k1)


def _ants_mask(cord: Path, template_cord: Path, warp: Path) -> np.ndarray:
    import ants

    return np.asarray(ants.apply_transforms(
        ants.image_read(str(template_cord)), ants.image_read(str(cord)).clone("float"),
        [str(warp)], interpolator="linear").numpy()) > 0.5


def _ghost_voxels(cord: Path, template_cord: Path, forward: Path, covered: slice) -> int:
    out = _ants_mask(cord, template_cord, forward)
    inside = np.zeros(out.shape[2], bool)
    inside[covered] = True
    return int(out[:, :, ~inside].sum())


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(1, int(a.sum()) + int(b.sum()))


def bench_phantoms(data: Path, work: Path, n: int = 3) -> list[dict]:
    template_dir = make_template_dir(data, work, "PAM50_small")
    root = work / "phantoms"
    generate_phantom_cohort(root, pam50_dir=data / "PAM50", pam50_small_dir=data / "PAM50_small",
                            n_subjects=n, seed=5)
    out = root / "out"
    run_worker([str(root / "bids"), str(out), "participant", "--template-dir",
                str(template_dir), "--nprocs", "2", "--skip-bids-validation"])
    template_cord = template_dir / "template" / "PAM50_cord.nii.gz"
    truth = np.asarray(nib.load(str(template_cord)).dataobj) > 0
    rows = []
    for anat in sorted(out.glob("sub-*/anat")):
        label = anat.parent.name
        cord = anat / f"{label}_label-SC_mask.nii.gz"
        forward = anat / f"{label}_from-T2w_to-PAM50_mode-image_xfm.nii.gz"
        slab, covered = _mapped_block(load_field(forward))
        slab_only = save_field(slab, work / f"{label}_slab_only.nii.gz")
        inside = np.zeros(truth.shape[2], bool)
        inside[covered] = True
        now, before = (_ants_mask(cord, template_cord, w) for w in (forward, slab_only))
        extent = before.any(axis=(0, 1))
        rows.append({
            "subject": label, "ghost_voxels": int(now[:, :, ~inside].sum()),
            "dice_mapped_slices": _dice(now[:, :, inside], truth[:, :, inside]),
            "slab_only_ghost_voxels": int(before[:, :, ~inside].sum()),
            "slab_only_ghost_slices": int(before[:, :, ~inside].any(axis=(0, 1)).sum()),
            "slab_only_dice_warped_extent": _dice(before[:, :, extent], truth[:, :, extent])})
    return rows


def bench(data: Path, work: Path, repeats: int) -> dict:
    template_dir = make_template_dir(data, work, "PAM50")
    out = work / "out"
    run = run_worker([str(data / "bids-real"), str(out), "participant", "--participant-label",
                      "errsm30", "--template-dir", str(template_dir), "--nprocs", "1",
                      "--skip-bids-validation"])
    anat = out / "sub-errsm30" / "anat"
    forward = anat / "sub-errsm30_from-T2w_to-PAM50_mode-image_xfm.nii.gz"
    inverse = anat / "sub-errsm30_from-PAM50_to-T2w_mode-image_xfm.nii.gz"
    template_cord = template_dir / "template" / "PAM50_cord.nii.gz"
    whole = nib.load(str(template_cord))
    slab, covered = _mapped_block(load_field(forward))
    back = load_field(inverse)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        save_field(slab, work / "forward.nii.gz", reference=(whole.shape[:3], whole.affine))
        save_field(back, work / "inverse.nii.gz")
        times.append(time.perf_counter() - start)
    save_field(slab, work / "forward_slab_only.nii.gz")
    mb = 1024 * 1024
    return {
        "participant_wall_s": run["wall_s"], "participant_peak_rss_mb": run["peak_rss_mb"],
        "forward_shape": list(nib.load(str(forward)).shape),
        "slab_slices": [covered.start, covered.stop],
        "inverse_shape": list(nib.load(str(inverse)).shape),
        "forward_mb": forward.stat().st_size / mb, "inverse_mb": inverse.stat().st_size / mb,
        "forward_slab_only_mb": (work / "forward_slab_only.nii.gz").stat().st_size / mb,
        "pair_write_s_median": float(np.median(times)), "pair_write_s_all": times,
        "ghost_voxels_ants": _ghost_voxels(anat / "sub-errsm30_label-SC_mask.nii.gz",
                                           template_cord, forward, covered),
        "load_average_5min": os.getloadavg()[1],
    }


def write_docs(result: dict, machine: str, command: str) -> None:
    shape = "x".join(str(n) for n in result["forward_shape"][:3])
    lines = [
        "## Warp files on the whole reference grid (#18)", "",
        f"Machine: {machine}. Command: `{command}`. sub-errsm30 (real T2w, manual labels), the "
        "whole participant level against the 0.5 mm PAM50 (141x141x991) in its own process; then "
        "its warp pair written again as the pipeline writes it (median of "
        f"{len(result['pair_write_s_all'])}). Load average (5 min) at the end: "
        f"{result['load_average_5min']:.1f} on {os.cpu_count()} cores; with other jobs running, "
        "wall times are upper bounds.", "",
        "| measure | value |", "|---|---|",
        f"| `from-T2w_to-PAM50` file ({shape}x1x3 float32, gzip; float32-max outside the "
        f"{result['slab_slices'][1] - result['slab_slices'][0]} slices it maps) "
        f"| {result['forward_mb']:.1f} MB |",
        f"| same field on its slab alone (before #18: wrong in standard tools) "
        f"| {result['forward_slab_only_mb']:.1f} MB |",
        f"| `from-PAM50_to-T2w` file (subject grid) | {result['inverse_mb']:.2f} MB |",
        f"| write time of the pair | {result['pair_write_s_median']:.1f} s |",
        f"| participant level, wall / peak RSS | {result['participant_wall_s']:.0f} s / "
        f"{result['participant_peak_rss_mb']:.0f} MB (limit 4096 MB) |",
        f"| cord voxels outside the slab after `ants.apply_transforms` on the whole PAM50 "
        f"| {result['ghost_voxels_ants']} |", "",
        "Curved phantoms (seed 5) against PAM50_small (70x70x275): each subject's cord mask "
        "warped onto the whole PAM50_small grid by `ants.apply_transforms`, through the written "
        "file and through the same field written on its slab alone (before #18; standard tools "
        "take zero displacement outside it).", "",
        "| phantom | ghost voxels | cord Dice, mapped slices | slab alone: ghost voxels "
        "(slices) | slab alone: Dice over the warped extent |", "|---|---|---|---|---|",
        *(f"| {r['subject']} | {r['ghost_voxels']} | {r['dice_mapped_slices']:.3f} | "
          f"{r['slab_only_ghost_voxels']} ({r['slab_only_ghost_slices']}) | "
          f"{r['slab_only_dice_warped_extent']:.3f} |" for r in result["phantoms"]), "",
    ]
    _replace_section(REPO / "docs" / "benchmarks.md", "## Warp files on the whole", lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-warps-"))
    machine = (f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
               f"Python {platform.python_version()}")
    result = bench(args.data, work, args.repeats)
    result["phantoms"] = bench_phantoms(args.data, work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "warps.json").write_text(json.dumps({"machine": machine, **result}, indent=2))
    print(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(result, machine, "python benchmarks/warps.py --write-docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
