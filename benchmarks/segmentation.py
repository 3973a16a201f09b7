"""Builtin segmentation and disc labelling benchmark (issue #8; not a test).

Usage::

    .venv/bin/python benchmarks/segmentation.py [--data ../shared/data] [--phantoms 4]
        [--out /tmp/segmentation.json]

Segmentation: Dice of our builtin mask with the manual mask of every labelled image of bids-real,
and the Dice of SCT's deep-learning masks (sct-reference) with the same manual masks, computed here
from the files. Disc labelling on sub-errsm30: distance of our labels to the manual disc labels
(values 4-6: C3/C4, C4/C5, C5/C6), without and with an ``init_disc`` hint, and agreement with
SCT's mid-vertebral body labels of the same image (sct-reference ``labels-body``, values 3 and 5),
and where the reference labels and ours sit relative to each disc's upper endplate (labelling
convention vs noise); distance to the true discs of PAM50 phantoms (``generate_phantom_cohort``)
and of the analytic demo subjects (``generate_demo_cohort``, true masks, unhinted and hinted). Each
time (but the demo) on our own cord segmentation (end to end) and on the manual/true mask. Every
disc row also gives the C2 anchor (world z of the C2/C3 disc found from the disc-free C2 above it,
or None) and whether the pattern match agreed with it; the anchor is also checked on the images
without disc truth (sub-les01 T2w, sub-lumbar01 T2w: it must be absent on the lumbar image). The
sub-errsm30 rows "session" run as the pipeline does when the session has both sagittal contrasts:
with the cues (C2 anchor, disc band peaks) of the other image (``find_session_cues``), and list the
discs placed on its band.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from spinal_bidsapp.engines.builtin.disc_peaks import disc_band  # noqa: E402
from spinal_bidsapp.engines.builtin.disc_strip import (  # noqa: E402
    DiscTemplate,
    sample_strip,
    template_strip,
)
from spinal_bidsapp.engines.builtin.disclabel import find_session_cues, label_discs  # noqa: E402
from spinal_bidsapp.engines.builtin.segment import LOW_CONFIDENCE, segment_cord  # noqa: E402
from spinal_bidsapp.geometry.centerline import centerline_from_mask  # noqa: E402
from spinal_bidsapp.geometry.discs import discs_from_label_array  # noqa: E402
from spinal_bidsapp.image import load_mask, load_volume  # noqa: E402
from spinal_bidsapp.synth import (  # noqa: E402
    generate_demo_cohort,
    generate_phantom_cohort,
    load_cohort_truth,
)

REAL_CASES = [("errsm30", "T2w"), ("unf01", "T2w"), ("les01", "T2w"), ("errsm30", "T1w"),
              ("unf01", "T1w"), ("errsm30", "T2starw"), ("unf01", "T2starw")]
SCT_MASKS = {("errsm30", "T2w"): ["T2w_seg-deepseg2d", "T2w_seg-deepseg3d"],
             ("errsm30", "T2starw"): ["T2starw_seg-deepseg"]}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def run_segmentation(data: Path) -> list[dict]:
    bids = data / "bids-real"
    rows = []
    for subject, contrast in REAL_CASES:
        image = load_volume(bids / f"sub-{subject}" / "anat" / f"sub-{subject}_{contrast}.nii.gz")
        manual = load_mask(bids / "derivatives" / "labels" / f"sub-{subject}" / "anat"
                           / f"sub-{subject}_{contrast}_label-SC_mask.nii.gz")
        start = time.perf_counter()
        result = segment_cord(image.data, image.affine, contrast=contrast)  # type: ignore[arg-type]
        seconds = time.perf_counter() - start
        row = {"subject": subject, "contrast": contrast, "shape": list(image.shape),
               "zooms_mm": [round(float(z), 3) for z in image.zooms],
               "dice": round(dice(result.mask, manual.data), 3),
               "volume_ratio": round(float((result.mask > 0).sum() / (manual.data > 0).sum()), 3),
               "confidence": round(result.confidence, 3),
               "low_confidence": result.confidence < LOW_CONFIDENCE,
               "seconds": round(seconds, 2), "sct": {}}
        for name in SCT_MASKS.get((subject, contrast), []):
            sct = load_mask(data / "sct-reference" / f"sub-{subject}_{name}.nii.gz")
            row["sct"][name] = round(dice(sct.data, manual.data), 3)
        rows.append(row)
        print(f"{subject} {contrast}: Dice {row['dice']} (confidence {row['confidence']}, "
              f"{seconds:.1f} s) SCT {row['sct']}", flush=True)
    return rows


def load_template(data: Path) -> DiscTemplate:
    small = data / "PAM50_small"
    t2 = load_volume(small / "PAM50_small_t2.nii.gz")
    cord = load_mask(small / "PAM50_small_cord.nii.gz")
    discs = load_mask(small / "PAM50_small_label_disc.nii.gz")
    return template_strip(t2.data, t2.affine, cord.data, cord.affine, discs.data, discs.affine)


def anchor_fields(result) -> dict:  # type: ignore[no-untyped-def]
    point = result.c2c3_anchor_mm
    return {"c2c3_anchor_z_mm": None if point is None else round(float(point[2]), 1),
            "anchor_agrees": result.anchor_agrees,
            "anchor_from_session": result.anchor_from_session,
            "discs_from_session": list(result.discs_from_session)}


def disc_errors(found: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> dict[str, float]:
    return {str(v): (round(float(np.linalg.norm(found[v] - p)), 2) if v in found else None)
            for v, p in truth.items()}


def body_check(discs: dict[int, np.ndarray], bodies: dict[int, np.ndarray]) -> dict[str, dict]:
    """Each SCT mid-body label N against disc labels: is it between discs N and N+1 (level
    agrees), and how far is it from their midpoint (when both are in the field of view)?"""
    out = {}
    for value, point in bodies.items():
        upper, lower = discs.get(value), discs.get(value + 1)
        agrees = (upper is None or point[2] < upper[2]) and (lower is None or point[2] > lower[2])
        agrees = agrees and (upper is not None or lower is not None)
        midpoint = None if upper is None or lower is None else \
            round(float(np.linalg.norm(point - 0.5 * (upper + lower))), 2)
        out[str(value)] = {"level_agrees": bool(agrees), "midpoint_error_mm": midpoint}
    return out


def run_discs_errsm30(data: Path, template: DiscTemplate) -> list[dict]:
    bids = data / "bids-real"
    labels = bids / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(bids / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz")
    manual = load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz")
    disc_vol = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    truth = discs_from_label_array(disc_vol.data, disc_vol.affine)
    body_vol = load_mask(data / "sct-reference" / "sub-errsm30_T2w_labels-body.nii.gz")
    bodies = discs_from_label_array(body_vol.data, body_vol.affine)
    reference = {"cord_mask": "-", "init_disc": "manual disc labels themselves",
                 "sct_body_labels": body_check(truth, bodies)}
    print(f"errsm30 reference disc labels vs SCT body labels: {reference}", flush=True)
    ours = segment_cord(image.data, image.affine, contrast="T2w").mask
    t1w = load_volume(bids / "sub-errsm30" / "anat" / "sub-errsm30_T1w.nii.gz")
    t1w_masks = {"builtin": segment_cord(t1w.data, t1w.affine, contrast="T1w").mask,
                 "manual": load_mask(labels / "sub-errsm30_T1w_label-SC_mask.nii.gz").data}
    hints = {"4@manual disc 4 + 2 mm": (4, float(truth[4][2]) + 2.0)}
    rows = [reference]
    for mask_name, mask in (("builtin", ours), ("manual", manual.data)):
        session = find_session_cues(t1w.data, t1w.affine, t1w_masks[mask_name], contrast="T1w")
        cases = [("none", None, None), *((k, v, None) for k, v in hints.items()),
                 ("none, session T1w", None, session),
                 *((f"{k}, session T1w", v, session) for k, v in hints.items())]
        for hint_name, init, cues in cases:
            result = label_discs(image.data, image.affine, mask, template, contrast="T2w",
                                 init_disc=init, session=cues)
            rows.append({"cord_mask": mask_name, "init_disc": hint_name,
                         "errors_mm": disc_errors(result.disc_points_mm, truth),
                         "sct_body_labels": body_check(result.disc_points_mm, bodies),
                         "confidence": round(result.confidence, 3),
                         "ncc": round(result.ncc, 3),
                         "margin": None if result.margin is None else round(result.margin, 3),
                         **anchor_fields(result)})
            print(f"errsm30 discs ({mask_name} mask, hint {hint_name}): {rows[-1]}", flush=True)
    return rows


def endplate_offsets(data: Path, template: DiscTemplate) -> dict:
    """Where each sub-errsm30 T2w disc label sits relative to the anatomy: signed z (mm, + =
    above) from the dark upper endplate of its disc, the nearest local minimum of the disc band
    (strip rows 10-16 mm in front of our cord mask) at or above the band's own peak, for the
    manual reference labels and for ours (unhinted). A constant offset is a labelling
    convention (disc centre vs endplate); its scatter is the labels' own noise."""
    bids = data / "bids-real"
    labels = bids / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(bids / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz")
    disc_vol = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    reference = discs_from_label_array(disc_vol.data, disc_vol.affine)
    mask = segment_cord(image.data, image.affine, contrast="T2w").mask
    ours = label_discs(image.data, image.affine, mask, template, contrast="T2w").disc_points_mm
    line = centerline_from_mask(mask, image.affine)
    strip, arc = sample_strip(image.data, image.affine, line)
    band = disc_band(strip)
    z = np.interp(arc, line.arc_mm, line.points_mm[:, 2])
    minima = np.flatnonzero((band[1:-1] < band[:-2]) & (band[1:-1] <= band[2:])) + 1
    endplates = z[minima]

    def offset(label_z: float, disc_z: float) -> float:
        above = endplates[(endplates >= disc_z - 1.0) & (endplates <= disc_z + 6.0)]
        return round(float(label_z - above.min()), 2) if above.size else float("nan")

    rows = {}
    for value, point in reference.items():
        disc_z = float(ours[value][2]) if value in ours else float(point[2]) - 2.5
        rows[str(value)] = {"reference_mm": offset(float(point[2]), disc_z),
                            "ours_mm": offset(disc_z, disc_z) if value in ours else None,
                            "ours_minus_reference_z_mm": None if value not in ours else
                            round(float(ours[value][2] - point[2]), 2)}
    print(f"errsm30 T2w labels relative to the upper endplate: {rows}", flush=True)
    return rows


def run_discs_errsm30_t1w(data: Path, template: DiscTemplate) -> list[dict]:
    """sub-errsm30 T1w against the manual T2w disc positions (same session, scanner
    coordinates); unhinted also with the session cues of the T2w, as in the pipeline."""
    bids = data / "bids-real"
    labels = bids / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(bids / "sub-errsm30" / "anat" / "sub-errsm30_T1w.nii.gz")
    manual = load_mask(labels / "sub-errsm30_T1w_label-SC_mask.nii.gz")
    disc_vol = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    truth = discs_from_label_array(disc_vol.data, disc_vol.affine)
    ours = segment_cord(image.data, image.affine, contrast="T1w").mask
    t2w = load_volume(bids / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz")
    t2w_masks = {"builtin": segment_cord(t2w.data, t2w.affine, contrast="T2w").mask,
                 "manual": load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz").data}
    rows = []
    for mask_name, mask in (("builtin", ours), ("manual", manual.data)):
        session = find_session_cues(t2w.data, t2w.affine, t2w_masks[mask_name], contrast="T2w")
        for hint_name, init, cues in (("none", None, None),
                                      ("4@T2w disc 4 + 2 mm", (4, float(truth[4][2]) + 2.0),
                                       None),
                                      ("none, session T2w", None, session)):
            result = label_discs(image.data, image.affine, mask, template, contrast="T1w",
                                 init_disc=init, session=cues)
            rows.append({"cord_mask": mask_name, "init_disc": hint_name,
                         "errors_mm": disc_errors(result.disc_points_mm, truth),
                         "found": sorted(result.disc_points_mm),
                         "confidence": round(result.confidence, 3),
                         "ncc": round(result.ncc, 3),
                         "margin": None if result.margin is None else round(result.margin, 3),
                         **anchor_fields(result)})
            print(f"errsm30 T1w discs ({mask_name} mask, hint {hint_name}): {rows[-1]}",
                  flush=True)
    return rows


def run_discs_phantoms(data: Path, template: DiscTemplate, n_subjects: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_phantom_cohort(out, pam50_dir=data / "PAM50",
                                pam50_small_dir=data / "PAM50_small", n_subjects=n_subjects,
                                seed=0)
        for truth in load_cohort_truth(out):
            sub = truth.subject.removeprefix("sub-")
            image = load_volume(out / "bids" / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz")
            true_mask = load_mask(out / "bids" / "derivatives" / "labels" / f"sub-{sub}" / "anat"
                                  / f"sub-{sub}_T2w_label-SC_mask.nii.gz")
            seg = segment_cord(image.data, image.affine, contrast="T2w")
            true_discs = truth.disc_positions_mm(in_fov_only=True)
            for mask_name, mask in (("builtin", seg.mask), ("true", true_mask.data)):
                result = label_discs(image.data, image.affine, mask, template, contrast="T2w")
                rows.append({"subject": sub, "cord_mask": mask_name,
                             "segmentation_dice": round(dice(seg.mask, true_mask.data), 3),
                             "errors_mm": disc_errors(result.disc_points_mm, true_discs),
                             "confidence": round(result.confidence, 3),
                             "ncc": round(result.ncc, 3),
                             "margin": None if result.margin is None
                             else round(result.margin, 3), **anchor_fields(result)})
                print(f"phantom sub-{sub} ({mask_name} mask): {rows[-1]}", flush=True)
    return rows


def run_discs_demo(n_subjects: int, template: DiscTemplate) -> list[dict]:
    """Analytic demo subjects (uniform discs, no PAM50 texture) on their true masks: unhinted
    the level cannot be identified (flagged); hinted at disc 3 (+2 mm), every disc with a band
    must be found."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_demo_cohort(out, n_subjects=n_subjects, seed=0)
        for truth in load_cohort_truth(out):
            sub = truth.subject.removeprefix("sub-")
            image = load_volume(out / "bids" / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz")
            mask = load_mask(out / "bids" / "derivatives" / "labels" / f"sub-{sub}" / "anat"
                             / f"sub-{sub}_T2w_label-SC_mask.nii.gz")
            true_discs = truth.disc_positions_mm(in_fov_only=True)
            for hint_name, init in (("none", None),
                                    ("3@true + 2 mm", (3, float(true_discs[3][2]) + 2.0))):
                result = label_discs(image.data, image.affine, mask.data, template,
                                     contrast="T2w", init_disc=init)
                rows.append({"subject": sub, "init_disc": hint_name,
                             "errors_mm": disc_errors(result.disc_points_mm, true_discs),
                             "confidence": round(result.confidence, 3),
                             "ncc": round(result.ncc, 3)})
                print(f"demo sub-{sub} (true mask, hint {hint_name}): {rows[-1]}", flush=True)
    return rows


def run_anchor_without_truth(data: Path, template: DiscTemplate) -> list[dict]:
    """Unhinted labelling of the bids-real images without disc truth: the anchor must not fire
    on the lumbar image."""
    bids = data / "bids-real"
    rows = []
    for subject in ("les01", "lumbar01"):
        path = bids / f"sub-{subject}" / "anat" / f"sub-{subject}_T2w.nii.gz"
        if not path.is_file():
            continue
        image = load_volume(path)
        mask = segment_cord(image.data, image.affine, contrast="T2w").mask
        result = label_discs(image.data, image.affine, mask, template, contrast="T2w")
        rows.append({"subject": subject, "cord_mask": "builtin",
                     "found": sorted(result.disc_points_mm),
                     "confidence": round(result.confidence, 3), **anchor_fields(result)})
        print(f"{subject} T2w discs (builtin mask, no truth): {rows[-1]}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--phantoms", type=int, default=4)
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    template = load_template(args.data)
    record = {"segmentation": run_segmentation(args.data),
              "discs_errsm30": run_discs_errsm30(args.data, template),
              "discs_errsm30_endplates": endplate_offsets(args.data, template),
              "discs_errsm30_t1w": run_discs_errsm30_t1w(args.data, template),
              "discs_phantoms": run_discs_phantoms(args.data, template, args.phantoms),
              "discs_demo": run_discs_demo(args.phantoms, template),
              "discs_without_truth": run_anchor_without_truth(args.data, template)}
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
        print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
