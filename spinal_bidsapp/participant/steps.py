"""The engine-independent work of the cord-reference steps: read the input files, call pure
code, write outputs.

Every function here is one step of ``pipeline`` (or its engine-independent part: the check and
import of an engine's disc labels, the CSA in PAM50 dimensions around an engine's measure):
paths in, files out (atomically, with sidecars), no decisions about skipping (the runner makes
those). What differs per engine lives in the engines (``engines.builtin.participant``,
``engines.sct.participant``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import cast

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.bids.outputs import raw_uri, write_lut, write_sidecar
from spinal_bidsapp.engines.base import DiscLabelling, DiscOptions, DiscOutputs
from spinal_bidsapp.errors import InputDataError, InsufficientCoverageError, MissingInputError
from spinal_bidsapp.geometry.centerline import Centerline
from spinal_bidsapp.geometry.coordinates import locate_points
from spinal_bidsapp.geometry.discs import (
    DISC_NAMES,
    VERTEBRA_NAMES,
    DiscPositions,
    compute_vertebral_distribution,
    discs_from_label_array,
    project_discs,
)
from spinal_bidsapp.image import (
    Volume,
    header_has_orientation,
    load_centerline,
    load_mask,
    load_volume,
    read_discs,
    reorient,
    save_volume,
)
from spinal_bidsapp.morphometrics import (
    cord_volume_mm3,
    measure_slices,
    summarise_levels,
)
from spinal_bidsapp.participant.morphometrics_pam50 import (
    compare_to_normative,
    load_normative_csa,
    read_pam50_slice_levels,
    resample_to_pam50,
    summarise_pam50_levels,
)
from spinal_bidsapp.participant.records import Quality
from spinal_bidsapp.runtime.files import write_json, write_text

logger = logging.getLogger(__name__)


def standardize(source: Path, target: Path, *, bids_dir: Path) -> None:
    """The anatomy reoriented to RAS, after the checks that no later step can make: some
    signal, a 3-D extent across the cord, an orientation in the header (warned)."""
    volume = reorient(load_volume(source))
    if not np.any(volume.data):
        raise InputDataError(f"{source}: every voxel is 0, the image has no signal; re-export "
                             "it, or choose another image")
    for axis, name in ((0, "left-right"), (1, "anterior-posterior")):
        if volume.shape[axis] < IN_PLANE_MIN_VOXELS:
            raise InputDataError(
                f"{source} has {volume.shape[axis]} voxel(s) {name}: a single slice cannot give "
                "the cord's cross-section; use a 3-D image (or a sagittal stack covering the "
                "cord's width)")
    if not header_has_orientation(source):
        logger.warning("%s: the header has no orientation (sform and qform codes 0): voxel "
                       "sizes only were assumed, left and right may be swapped; set the header's "
                       "orientation (e.g. from the scanner's DICOM export)", source.name)
    save_volume(volume, target)
    write_sidecar(target, {"Sources": [raw_uri(bids_dir, source)], "SkullStripped": False,
                           "Description": "anatomy reoriented to RAS, not resampled"})


IN_PLANE_MIN_VOXELS = 3
"""Fewer voxels than this across the cord (L-R or A-P): no cross-section can be measured."""


def import_label_mask(image: Path, mask: Path, target: Path) -> None:
    """Manual cord mask, checked against its image grid, binarised and reoriented like it."""
    reference = load_volume(image)
    vol = load_mask(mask, reference=reference, reference_path=image)
    binary = reorient(vol.with_data((vol.data > 0).astype(np.uint8)))
    save_volume(binary, target, dtype=np.uint8)
    write_sidecar(target, {"Sources": [mask.resolve().as_uri()],
                           "Description": "spinal cord mask (manual, from derivatives/labels)"})


def read_disc_values(path: Path) -> list[int]:
    return sorted(int(v) for v in np.unique(load_mask(path).data) if v > 0)


def disc_review_advice(quality: Quality, *, subject: str, labels_path: Path) -> str:
    """What to check in automatic disc labels, and the two ways to correct them (a hint or
    manual labels), for the warning and the report.

    >>> advice = disc_review_advice(Quality("builtin", alternative_reading={"Disc": 4,
    ...     "WorldZmm": 14.0, "AlternativeDisc": 5, "Correlation": 0.506}), subject="01",
    ...     labels_path=Path("derivatives/labels/sub-01/anat/sub-01_T2w_labels-disc.nii.gz"))
    >>> advice.split(". ")[0]
    'the disc at z 14.0 mm is read as 4 (C3/C4); the next best match reads it as 5 (C4/C5)'
    >>> "--participant-label 01 --init-disc 4@14.0" in advice and " 5@14.0 " in advice
    True
    """
    alt = quality.alternative_reading
    fix = f"or put corrected labels in {labels_path}"
    if not isinstance(alt, dict):
        return (f"check the levels in the report; to correct them, rerun with --participant-label "
                f"{subject} --init-disc VALUE@Z_MM (a disc you identify) {fix}")
    value, other, z = alt["Disc"], alt["AlternativeDisc"], alt["WorldZmm"]
    return (f"the disc at z {z} mm is read as {value} ({DISC_NAMES[value]}); the next best match "
            f"reads it as {other} ({DISC_NAMES[other]}). Check that disc in the report, then "
            f"rerun with --participant-label {subject} --init-disc {value}@{z} to keep this "
            f"reading or {other}@{z} for the other, {fix}")


def centerline(cord: Path, mask_out: Path, table_out: Path, *, min_coverage_mm: float,
               image_name: str) -> None:
    """Dense centerline; refuses cords shorter than ``min_coverage_mm`` (exit 66)."""
    vol, line = load_centerline(cord)
    if line.length_mm < min_coverage_mm:
        raise InsufficientCoverageError(
            f"{image_name}: the cord covers {line.length_mm:.1f} mm of the image, less than "
            f"--min-cord-coverage {min_coverage_mm:g} mm; use an image with more cord, or lower "
            "--min-cord-coverage"
        )
    inv = np.linalg.inv(vol.affine)
    ijk = np.rint(line.points_mm @ inv[:3, :3].T + inv[:3, 3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(vol.shape)), axis=1)
    mask = np.zeros(vol.shape, np.uint8)
    mask[tuple(ijk[inside].T)] = 1
    save_volume(vol.with_data(mask), mask_out, dtype=np.uint8)
    rows = ["arc_mm\tx_mm\ty_mm\tz_mm"] + [
        f"{s:.3f}\t{x:.3f}\t{y:.3f}\t{z:.3f}"
        for s, (x, y, z) in zip(line.arc_mm, line.points_mm, strict=True)]
    write_text(table_out, "\n".join(rows) + "\n")


def import_discs(image: Path, manual: Path, cord: Path, discs_out: Path, lut_out: Path,
                 levels_out: Path, levels_lut_out: Path, *, first_disc: int | None,
                 last_disc: int | None) -> None:
    """Manual disc labels (checked: values, duplicates, order) and the cord's vertebral levels."""
    reference = load_volume(image)
    raw = load_mask(manual, reference=reference, reference_path=image)
    ras = reorient(raw)
    data = ras.data.copy()
    if first_disc is not None:
        data[(data > 0) & (data < first_disc)] = 0
    if last_disc is not None:
        data[(data > last_disc) & (data < 49)] = 0
    if not data.any():
        raise InputDataError(
            f"{manual.name}: no disc label within --first-disc/--last-disc "
            f"({first_disc}-{last_disc})")
    cord_vol, line = load_centerline(cord)
    try:
        points = discs_from_label_array(data, ras.affine)
        positions = project_discs(points, line)
    except InputDataError as exc:
        raise InputDataError(f"{manual.name}: {exc}") from exc
    save_volume(ras.with_data(data.astype(np.uint8)), discs_out, dtype=np.uint8)
    write_lut(lut_out, {int(v): DISC_NAMES[int(v)] for v in positions.values})
    levels = label_levels(cord_vol, line, positions)
    save_volume(cord_vol.with_data(levels), levels_out, dtype=np.uint8)
    present = sorted(int(v) for v in np.unique(levels) if v)
    write_lut(levels_lut_out, {v: VERTEBRA_NAMES[v] for v in present})


def import_automatic_discs(anat: Path, labelling: DiscLabelling, cord: Path, out: DiscOutputs,
                           options: DiscOptions) -> None:
    """An engine's disc labels (``labelling``), checked and used like manual ones, with the
    sidecar fields the engine gives."""
    raw, fields = labelling.label()
    import_discs(anat, raw, cord, out.discs, out.lut, out.levels, out.levels_lut,
                 first_disc=options.first_disc, last_disc=options.last_disc)
    write_sidecar(out.discs, fields)


def label_levels(cord: Volume, line: Centerline, discs: DiscPositions) -> np.ndarray:
    """Vertebral level (N between disc N and N+1) of every cord voxel; 0 outside the discs."""
    ijk = np.argwhere(cord.data > 0)
    points = ijk @ cord.affine[:3, :3].T + cord.affine[:3, 3]
    arc, _, _ = locate_points(line, points)
    dist = compute_vertebral_distribution(line, discs)
    idx = np.clip(np.searchsorted(line.arc_mm, arc), 0, len(line.arc_mm) - 1)
    upper, fraction = dist.upper_disc[idx], dist.fraction[idx]
    value = np.where(~np.isnan(fraction) & (upper >= 1) & (upper <= 30), upper, 0)
    out = np.zeros(cord.shape, np.uint8)
    out[tuple(ijk.T)] = value
    return out


def morphometrics(cord: Path, discs: Path | None, table_out: Path, json_out: Path, *,
                  quality: dict[str, object] | None = None, canal: Path | None = None) -> None:
    """Per-slice TSV and a JSON summary (length, volume, CSA per level, input ``quality``; with a
    canal mask and discs, canal and cord volume per level and their ratio)."""
    vol, line = load_centerline(cord)
    positions = read_discs(discs, line)[1] if discs is not None else None
    slices = measure_slices(vol.data, vol.affine, line, positions)
    rows = ["slice\tarc_mm\tx_mm\ty_mm\tz_mm\tarea_mm2\tangle_deg\tcsa_mm2\tlevel"]
    for i in range(len(slices.slice_index)):
        x, y, z = slices.centroid_mm[i]
        level = int(slices.level[i])
        rows.append(f"{slices.slice_index[i]}\t{slices.arc_mm[i]:.3f}\t{x:.3f}\t{y:.3f}\t"
                    f"{z:.3f}\t{slices.area_mm2[i]:.3f}\t{slices.angle_deg[i]:.2f}\t"
                    f"{slices.csa_mm2[i]:.3f}\t{VERTEBRA_NAMES.get(level, 'n/a')}")
    write_text(table_out, "\n".join(rows) + "\n")
    levels = [{k: (round(v, 3) if isinstance(v, float) else v)
               for k, v in zip(_LEVEL_KEYS, astuple(level), strict=True)}
              for level in summarise_levels(slices)]
    columns = {"slice": "index along the superior-inferior voxel axis",
               "arc_mm": "position along the centerline from its inferior end",
               "csa_mm2": "area_mm2 * cos(angle_deg): cut perpendicular to the cord",
               "level": "vertebral level (between disc N and N+1)"}
    if canal is not None and positions is not None:
        _add_canal_volumes(levels, vol, load_mask(canal, allow_empty=True), line, positions)
        columns["canal_to_cord_ratio"] = ("canal volume / cord volume of the level (canal = "
                                          "cord + CSF, TotalSpineSeg)")
    write_json(json_out, {
        "Description": "Spinal cord morphometrics (CSA corrected for the cord angle)",
        "cord_length_mm": round(line.length_mm, 3),
        "cord_volume_mm3": round(cord_volume_mm3(vol.data, vol.affine), 3),
        "csa_mean_mm2": round(float(slices.csa_mm2.mean()), 3),
        "csa_sd_mm2": round(float(slices.csa_mm2.std(ddof=1)), 3) if len(slices.csa_mm2) > 1
        else 0.0,
        "n_slices": len(slices.slice_index),
        "discs": [int(v) for v in positions.values] if positions is not None else [],
        "levels": levels,
        "quality": quality or {},
        "columns": columns,
    })


def _add_canal_volumes(levels: list[dict[str, object]], cord: Volume, canal: Volume,
                       line: Centerline, positions: DiscPositions) -> None:
    """Canal and cord volume of each level (same level boundaries for both: the planes through
    the discs, perpendicular to the cord) and the canal-to-cord ratio."""
    voxel_mm3 = abs(float(np.linalg.det(cord.affine[:3, :3])))
    cord_levels = np.bincount(label_levels(cord, line, positions).ravel(), minlength=32)
    canal_levels = np.bincount(label_levels(canal, line, positions).ravel(), minlength=32)
    for entry in levels:
        value = int(cast(int, entry["level"]))
        cord_mm3, canal_mm3 = cord_levels[value] * voxel_mm3, canal_levels[value] * voxel_mm3
        entry["cord_volume_mm3"] = round(float(cord_mm3), 3)
        entry["canal_volume_mm3"] = round(float(canal_mm3), 3)
        entry["canal_to_cord_ratio"] = round(float(canal_mm3 / cord_mm3), 3) if cord_mm3 else None


@dataclass(frozen=True)
class SliceTable:
    """The columns of the per-slice morphometrics TSV that other steps read back."""

    z_mm: np.ndarray
    csa_mm2: np.ndarray
    level: np.ndarray
    """Vertebral level value (0 for ``n/a``)."""


def read_slice_table(path: Path) -> SliceTable:
    """Read the TSV written by :func:`morphometrics` (columns by name)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]
    names = {name: value for value, name in VERTEBRA_NAMES.items()}
    return SliceTable(z_mm=np.array([float(r["z_mm"]) for r in rows]),
                      csa_mm2=np.array([float(r["csa_mm2"]) for r in rows]),
                      level=np.array([names.get(r["level"], 0) for r in rows], dtype=np.int64))


_LEVEL_KEYS = ("level", "name", "n_slices", "csa_mean_mm2", "csa_sd_mm2", "csa_min_mm2",
               "csa_max_mm2")


MIN_NORMATIVE_SUBJECTS = 10
"""Below this many healthy controls at a level, no z-score is reported (the lower thoracic
levels of SCT's database have a handful)."""


def subject_slice_levels(morph_table: Path, disc_values: list[int]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Level and CSA of every cord slice, inferior first, labelled as SCT labels a cord from a
    disc file: above the top disc N the level is N-1, below the last disc M it is M."""
    table = read_slice_table(morph_table)
    order = np.argsort(table.z_mm, kind="stable")  # inferior first
    levels, csa = table.level[order].copy(), table.csa_mm2[order]
    labelled = np.flatnonzero(levels)
    if labelled.size and disc_values:
        levels[labelled.max() + 1:] = min(disc_values) - 1
        levels[:labelled.min()] = max(disc_values)
    return levels, csa


def csa_in_pam50(morph_table: Path, discs: Path, cord: Path, pam50_levels_file: Path,
                 table_out: Path, json_out: Path, *, contrast: str,
                 measure: Callable[[int], tuple[NDArray[np.float64], str] | None],
                 normative_root: Path | None, fallback_reason: str | None = None) -> None:
    """CSA per PAM50 slice and level (SCT's ``-normalize-PAM50``: each vertebral level stretched
    onto the template's), compared with SCT's healthy-control database when it is installed.

    ``measure(n_slices)``: the engine's own CSA per PAM50 slice and its method (SCT:
    ``sct_process_segmentation -perslice 1 -normalize-PAM50 1``, which uses SCT's own PAM50
    levels, so ``pam50_levels_file`` must be that file), or None: the same interpolation
    (:mod:`spinal_bidsapp.participant.morphometrics_pam50`) of our per-slice CSA.
    """
    pam50_levels = read_pam50_slice_levels(pam50_levels_file)
    levels, csa = subject_slice_levels(morph_table, read_disc_values(discs))
    builtin_values = resample_to_pam50(levels, csa, pam50_levels)  # refuses < 3 levels, which
    measured = measure(len(pam50_levels))  # SCT would crash on (cannot convert float NaN)
    if measured is not None:
        values, method = measured
    else:
        values = builtin_values
        method = "builtin: SCT's per-level interpolation (metrics_to_PAM50) of our CSA"
    per_level = summarise_pam50_levels(values, pam50_levels)
    if len(per_level) < 3:
        raise InputDataError(f"{cord.name}: CSA in PAM50 space needs at least 3 vertebral levels "
                             f"(SCT's rule: the inner levels set the scale), found "
                             f"{len(per_level)}")
    rows = ["pam50_slice\tlevel\tcsa_mm2"] + [
        f"{i}\t{VERTEBRA_NAMES.get(int(pam50_levels[i]), 'n/a')}\t{values[i]:.3f}"
        for i in np.flatnonzero(np.isfinite(values))]
    write_text(table_out, "\n".join(rows) + "\n")
    first, last = (per_level[0].level, per_level[-1].level) if per_level else (0, 0)
    summary: dict[str, object] = {
        "Description": "cord CSA in the PAM50 anatomical dimensions (each vertebral level "
                       "resampled onto the PAM50 slices of the same level)",
        "method": method, "template_slices": len(pam50_levels),
        "levels": [{"level": e.level, "name": e.name, "n_slices": e.n_slices,
                    "csa_mean_mm2": round(e.csa_mean_mm2, 3),
                    "partial": e.level in (first, last)} for e in per_level],
        "normative": None}
    if fallback_reason is not None:
        summary["fallback_reason"] = fallback_reason
    if normative_root is None:
        summary["normative_note"] = ("not compared: SCT's healthy-control database "
                                     "(PAM50_normalized_metrics) is not installed")
    else:
        try:
            norms = load_normative_csa(normative_root, contrast=contrast)
        except MissingInputError:
            summary["normative_note"] = (f"not compared: SCT's healthy-control database has no "
                                         f"{contrast} data")
        else:
            summary["normative"] = {
                "database": str(norms.folder), "contrast": contrast,
                "subjects": len(norms.subjects),
                "levels": [{"level": c.level, "name": c.name,
                            "subject_mm2": round(c.subject_mm2, 3),
                            "normative_mean_mm2": round(c.normative_mean_mm2, 3),
                            "normative_sd_mm2": (round(c.normative_sd_mm2, 3)
                                                 if np.isfinite(c.normative_sd_mm2) else None),
                            "n_subjects": c.n_subjects,
                            "percent_of_normative": round(c.percent_of_normative, 1),
                            "z_score": (round(c.z_score, 2) if c.n_subjects
                                        >= MIN_NORMATIVE_SUBJECTS and np.isfinite(c.z_score)
                                        else None)}
                           for c in compare_to_normative(per_level, norms)]}
    write_json(json_out, summary)
