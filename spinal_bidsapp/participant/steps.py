"""The work of each cord-reference step: read its input files, call pure code, write outputs.

Every function here is one step of ``pipeline``: paths in, files out (atomically, with sidecars),
no decisions about skipping (the runner makes those).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from spinal_bidsapp.bids.outputs import raw_uri, sidecar_path, write_lut, write_sidecar
from spinal_bidsapp.config import Contrast
from spinal_bidsapp.errors import InputDataError, InsufficientCoverageError, MissingInputError
from spinal_bidsapp.geometry.centerline import Centerline
from spinal_bidsapp.geometry.coordinates import locate_points
from spinal_bidsapp.geometry.discs import (
    DISC_NAMES,
    VERTEBRA_NAMES,
    DiscPositions,
    compute_vertebral_distribution,
    discs_from_label_array,
    largest_disc_blobs,
    project_discs,
)
from spinal_bidsapp.image import (
    Volume,
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
from spinal_bidsapp.runtime.files import write_json, write_text
from spinal_bidsapp.templates.pam50 import Pam50

if TYPE_CHECKING:
    from spinal_bidsapp.engines.builtin.disclabel import SessionCues
    from spinal_bidsapp.engines.sct import SctEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineStep:
    """Which engine ran one engine step of a unit (for the log, the sidecars and the report)."""

    step: str
    ran: Literal["sct", "builtin", "skipped"]
    method: str
    """What ran (``'SCT 7.3 sct_deepseg spinalcord'``, ``'builtin'``) or ``'skipped'``."""
    fallback_reason: str | None = None
    """Why not SCT, when SCT was the engine and could not run this step here."""


def fallback_fields(reason: str | None) -> dict[str, object]:
    """Sidecar fields of a builtin output made in place of SCT's (none otherwise)."""
    return {} if reason is None else {"Engine": "builtin", "FallbackReason": reason}


def standardize(source: Path, target: Path, *, bids_dir: Path) -> None:
    """The anatomy reoriented to RAS, after the checks that no later step can make: some
    signal, a 3-D extent across the cord, an orientation in the header (warned)."""
    from spinal_bidsapp.image import header_has_orientation

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


def segment(image: Path, target: Path, *, contrast: Contrast, bids_dir: Path,
            fallback_reason: str | None = None) -> None:
    """Builtin cord segmentation (no manual mask), reoriented like the anatomy, with its quality.

    The sidecar records the method, the overall and per-slice confidence and ``LowConfidence``
    (overall confidence below ``segment.LOW_CONFIDENCE``), and ``FallbackReason`` when it stands
    in for SCT's.
    """
    from spinal_bidsapp.engines.builtin.segment import LOW_CONFIDENCE, METHOD, segment_cord

    vol = load_volume(image)
    result = segment_cord(vol.data, vol.affine, contrast=contrast)
    if not result.mask.any():
        raise InputDataError(f"{image.name}: the builtin segmentation found no spinal cord; add a "
                             "manual cord mask to derivatives/labels")
    save_volume(reorient(vol.with_data(result.mask)), target, dtype=np.uint8)
    write_sidecar(target, {
        "Sources": [raw_uri(bids_dir, image)],
        "Description": "spinal cord mask (builtin automatic segmentation, review it)",
        "Method": METHOD, "Confidence": round(result.confidence, 3),
        "MedianAreaMM2": round(result.median_area_mm2, 1),
        "ConfidenceThreshold": LOW_CONFIDENCE,
        "LowConfidence": bool(result.confidence < LOW_CONFIDENCE),
        "SliceConfidence": [round(float(c), 3) for c in result.slice_confidence],
        **fallback_fields(fallback_reason)})


def segment_sct(engine: SctEngine, anat: Path, target: Path, *, work_dir: Path,
                contrast: Contrast, source: Path, bids_dir: Path) -> None:
    """SCT cord segmentation of the standardized anatomy, imported as the cord mask.

    SCT writes its mask on the grid of its input, so it must match ``anat`` exactly.
    """
    result = engine.segment_cord(anat, contrast=contrast, out_dir=work_dir)
    reference = load_volume(anat)
    mask = load_mask(result.cord_mask, reference=reference, reference_path=anat)
    if not (mask.data > 0).any():
        raise InputDataError(f"{source.name}: SCT found no spinal cord; add a manual cord mask "
                             "to derivatives/labels")
    save_volume(reference.with_data((mask.data > 0).astype(np.uint8)), target, dtype=np.uint8)
    write_sidecar(target, {
        "Sources": [raw_uri(bids_dir, source)],
        "Description": "spinal cord mask (SCT automatic segmentation, review it)",
        "Method": engine.method("segment_cord")})


def label_discs_sct(engine: SctEngine, anat: Path, cord: Path, discs_out: Path, lut_out: Path,
                    levels_out: Path, levels_lut_out: Path, *, work_dir: Path,
                    contrast: Contrast, first_disc: int | None, last_disc: int | None) -> None:
    """SCT disc labels of the standardized anatomy, then checked and used like manual ones."""
    result = engine.label_discs(anat, cord, contrast=contrast, out_dir=work_dir)
    import_discs(anat, result.discs, cord, discs_out, lut_out, levels_out, levels_lut_out,
                 first_disc=first_disc, last_disc=last_disc)
    write_sidecar(discs_out, {
        "Description": "disc labels (SCT automatic labelling, review the levels)",
        "Method": engine.method("label_discs")})


def label_discs(anat: Path, cord: Path, template: Pam50, work_labels: Path, discs_out: Path,
                lut_out: Path, levels_out: Path, levels_lut_out: Path, *, contrast: Contrast,
                init_disc: tuple[int, float] | None, first_disc: int | None,
                last_disc: int | None, companions: Sequence[Companion] = (),
                fallback_reason: str | None = None) -> None:
    """Builtin disc labels (no manual labels), then checked and used like manual ones
    (``fallback_reason``: why not SCT's, recorded in the sidecar).

    ``companions``: other images of the session, for a C2 anchor (used only when the anatomy
    shows no C2 itself and no hint is given) and for the discs whose band the anatomy's field
    cuts (see :func:`session_cues`)."""
    from spinal_bidsapp.engines.builtin.disclabel import LOW_CONFIDENCE, METHOD, template_strip
    from spinal_bidsapp.engines.builtin.disclabel import label_discs as find_discs

    if template.t2 is None:
        raise MissingInputError(f"{template.template_folder} has no PAM50_t2.nii.gz, which the "
                                "builtin disc labelling matches against; add the disc labels")
    t2, tpl_cord, tpl_discs = (load_volume(template.t2), load_mask(template.cord),
                               load_mask(template.label_disc))
    pattern = template_strip(t2.data, t2.affine, tpl_cord.data, tpl_cord.affine, tpl_discs.data,
                             tpl_discs.affine)
    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    source, cues = session_cues(companions)
    result = find_discs(anat_vol.data, anat_vol.affine, cord_vol.data, pattern,
                        contrast=contrast, init_disc=init_disc, session=cues)
    if not result.labels.any():
        raise InputDataError(f"{anat.name}: the builtin disc labelling found no disc in the "
                             "field of view; add disc labels to derivatives/labels")
    save_volume(anat_vol.with_data(result.labels), work_labels, dtype=np.uint8)
    alt = result.alternative
    import_discs(anat, work_labels, cord, discs_out, lut_out, levels_out, levels_lut_out,
                 first_disc=first_disc, last_disc=last_disc)
    write_sidecar(discs_out, {
        "Description": "disc labels (builtin automatic labelling, review the levels)",
        "Method": METHOD, "Confidence": round(result.confidence, 3),
        "ConfidenceThreshold": LOW_CONFIDENCE,
        "LowConfidence": bool(result.confidence < LOW_CONFIDENCE),
        "Correlation": round(result.ncc, 3),
        "Margin": None if result.margin is None else round(result.margin, 3),
        "InitDisc": list(init_disc) if init_disc is not None else None,
        "AlternativeReading": None if alt is None else {
            "Disc": alt.value, "WorldZmm": round(float(alt.point_mm[2]), 1),
            "AlternativeDisc": alt.alternative_value, "Correlation": round(alt.ncc, 3)},
        "C2C3Anchor": None if result.c2c3_anchor_mm is None else {
            "Source": source if result.anchor_from_session else anat.name,
            "WorldZmm": round(float(result.c2c3_anchor_mm[2]), 1),
            "AgreesWithPattern": result.anchor_agrees},
        "DiscsFromSession": None if not result.discs_from_session else {
            "Source": source, "Discs": list(result.discs_from_session)},
        **fallback_fields(fallback_reason)})


@dataclass(frozen=True)
class Companion:
    """Another image of the session for :func:`session_cues`."""

    image: Path
    cord_mask: Path | None
    """Its manual cord mask, if any (else the builtin segmentation is run on it)."""
    contrast: Contrast


def session_cues(companions: Sequence[Companion]) -> tuple[str | None, SessionCues | None]:
    """``(image name, cues)`` of the companion to use: the first one that shows C2 (a C2/C3
    anchor), else the first one with a cord long enough to read; ``(None, None)`` if none. A
    companion that cannot be read or segmented is skipped with a log message: it only ever
    adds evidence."""
    from spinal_bidsapp.engines.builtin.disclabel import find_session_cues
    from spinal_bidsapp.engines.builtin.segment import segment_cord

    found: list[tuple[str, SessionCues]] = []
    for companion in companions:
        try:
            vol = load_volume(companion.image)
            cord = (load_mask(companion.cord_mask, reference=vol,
                              reference_path=companion.image).data
                    if companion.cord_mask is not None else
                    segment_cord(vol.data, vol.affine, contrast=companion.contrast).mask)
            cues = find_session_cues(vol.data, vol.affine, cord, contrast=companion.contrast)
        except (InputDataError, MissingInputError, OSError, ValueError) as exc:
            logger.info("session cues: %s skipped (%s)", companion.image.name, exc)
            continue
        if cues is None:
            continue
        if cues.c2c3_mm is not None:
            logger.info("C2 anchor: C2/C3 at z %.1f mm on %s", cues.c2c3_mm[2],
                        companion.image.name)
            return companion.image.name, cues
        found.append((companion.image.name, cues))
    return found[0] if found else (None, None)


@dataclass(frozen=True)
class SpinePaths:
    """Outputs of the ``spine`` step (SCT's TotalSpineSeg)."""

    vertebrae: Path
    vertebrae_lut: Path
    canal: Path
    discs: Path
    """Posterior-tip disc labels as SCT wrote them (work folder), SCT numbering."""
    check: Path
    """Consistency check (work folder, JSON)."""

    def all(self) -> list[Path]:
        return [self.vertebrae, sidecar_path(self.vertebrae), self.vertebrae_lut, self.canal,
                sidecar_path(self.canal), self.discs, self.check]


def spine_sct(engine: SctEngine, anat: Path, paths: SpinePaths, *, work_dir: Path,
              source: Path, bids_dir: Path) -> None:
    """Vertebrae, discs and canal from SCT's spine task, in SCT numbering, with a consistency
    check (levels complete and unique, discs in order and between their vertebrae)."""
    import shutil

    from spinal_bidsapp.engines.sct_outputs import (
        check_spine_levels,
        spine_labels_from_totalspineseg,
    )

    result = engine.segment_spine(anat, out_dir=work_dir)
    reference = load_volume(anat)
    tss = load_mask(result.labels, reference=reference, reference_path=anat, allow_empty=True)
    disc_vol = load_mask(result.discs, reference=reference, reference_path=anat,
                         allow_empty=True)
    spine = spine_labels_from_totalspineseg(tss.data)
    points, repeated = largest_disc_blobs(disc_vol.data, disc_vol.affine)
    check = check_spine_levels(spine.vertebrae, points, reference.affine,
                               unnumbered=spine.unnumbered)
    problems = [*(f"disc {DISC_NAMES[d]} labelled at several places" for d in repeated),
                *check.problems]
    if not spine.vertebrae.any():
        problems.insert(0, "no vertebra found")
    method = engine.method("label_discs")
    save_volume(reference.with_data(spine.vertebrae), paths.vertebrae, dtype=np.uint8)
    write_lut(paths.vertebrae_lut, {v: ("sacrum" if v == 25 else VERTEBRA_NAMES[v])
                                    for v in check.vertebrae})
    save_volume(reference.with_data(spine.canal.astype(np.uint8)), paths.canal, dtype=np.uint8)
    for image, what in ((paths.vertebrae, "vertebral bodies, SCT vertebral levels"),
                        (paths.canal, "spinal canal: cord and CSF")):
        write_sidecar(image, {"Sources": [raw_uri(bids_dir, source)],
                              "Description": f"{what} (SCT automatic segmentation, review it)",
                              "Method": method})
    shutil.copyfile(result.discs, paths.discs)
    write_json(paths.check, {
        "method": method, "vertebrae": [VERTEBRA_NAMES[v] for v in check.vertebrae],
        "discs": [DISC_NAMES[d] for d in sorted(points)], "problems": problems,
        "consistent": not problems})


def read_disc_values(path: Path) -> list[int]:
    return sorted(int(v) for v in np.unique(load_mask(path).data) if v > 0)


def read_spine_check(path: Path | None) -> dict[str, object] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path is not None else None


def label_discs_from_spine(anat: Path, spine: SpinePaths, cord: Path, discs_out: Path,
                           lut_out: Path, levels_out: Path, levels_lut_out: Path, *,
                           first_disc: int | None, last_disc: int | None) -> None:
    """SCT's posterior-tip disc labels (from the ``spine`` step), checked and used like manual
    ones; they stay at the posterior tip, where ``sct_register_to_template -ldisc`` wants them."""
    check = json.loads(spine.check.read_text(encoding="utf-8"))
    import_discs(anat, spine.discs, cord, discs_out, lut_out, levels_out, levels_lut_out,
                 first_disc=first_disc, last_disc=last_disc)
    write_sidecar(discs_out, {
        "Description": "disc labels (SCT automatic labelling, review the levels)",
        "Method": check["method"], "Consistent": check["consistent"],
        "Problems": check["problems"]})


def rootlets_sct(engine: SctEngine, anat: Path, rootlets_out: Path, lut_out: Path, *,
                 work_dir: Path, source: Path, bids_dir: Path) -> None:
    """Dorsal rootlets (value = spinal level) on the standardized anatomy."""
    from spinal_bidsapp.engines.sct_outputs import spinal_levels_from_rootlets
    from spinal_bidsapp.geometry.discs import spinal_level_name

    result = engine.segment_rootlets(anat, contrast="T2w", out_dir=work_dir)
    reference = load_volume(anat)
    vol = load_mask(result.rootlets, reference=reference, reference_path=anat, allow_empty=True)
    data = np.rint(vol.data).astype(np.uint8)
    levels = spinal_levels_from_rootlets(data, reference.affine)
    if not levels:
        raise InputDataError(f"{source.name}: SCT found no rootlet")
    save_volume(reference.with_data(data), rootlets_out, dtype=np.uint8)
    write_lut(lut_out, {e.level: spinal_level_name(e.level) for e in levels})
    write_sidecar(rootlets_out, {
        "Sources": [raw_uri(bids_dir, source)],
        "Description": "dorsal nerve rootlets, value = spinal level (SCT automatic "
                       "segmentation, review it)",
        "Method": f"SCT {engine.info.version} sct_deepseg rootlets",
        "SpinalLevels": {spinal_level_name(e.level): {
            "superior_mm": round(e.superior_mm, 2), "inferior_mm": round(e.inferior_mm, 2),
            "voxels": e.voxels} for e in levels}})


def read_quality(path: Path) -> dict[str, object]:
    """Method and confidence from the sidecar of an automatic output; ``manual`` otherwise."""
    sidecar = sidecar_path(path)
    fields = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
    if str(fields.get("Method", "")).startswith("SCT "):
        return {"source": "sct", "method": fields["Method"]}
    if "Confidence" not in fields:
        return {"source": "manual"}
    quality = {"source": "builtin", "method": fields.get("Method"),
               "confidence": fields["Confidence"], "threshold": fields.get("ConfidenceThreshold"),
               "low_confidence": bool(fields.get("LowConfidence"))}
    for field, key in (("AlternativeReading", "alternative_reading"),
                       ("C2C3Anchor", "c2c3_anchor"), ("DiscsFromSession", "discs_from_session")):
        if fields.get(field):
            quality[key] = fields[field]
    return quality


def disc_review_advice(quality: dict[str, object], *, subject: str, labels_path: Path) -> str:
    """What to check in automatic disc labels, and the two ways to correct them (a hint or
    manual labels), for the warning and the report.

    >>> advice = disc_review_advice({"alternative_reading": {"Disc": 4, "WorldZmm": 14.0,
    ...     "AlternativeDisc": 5, "Correlation": 0.506}}, subject="01",
    ...     labels_path=Path("derivatives/labels/sub-01/anat/sub-01_T2w_labels-disc.nii.gz"))
    >>> advice.split(". ")[0]
    'the disc at z 14.0 mm is read as 4 (C3/C4); the next best match reads it as 5 (C4/C5)'
    >>> "--participant-label 01 --init-disc 4@14.0" in advice and " 5@14.0 " in advice
    True
    """
    alt = quality.get("alternative_reading")
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
                 table_out: Path, json_out: Path, *, contrast: str, engine: SctEngine | None,
                 normative_root: Path | None, work_dir: Path,
                 fallback_reason: str | None = None) -> None:
    """CSA per PAM50 slice and level (SCT's ``-normalize-PAM50``: each vertebral level stretched
    onto the template's), compared with SCT's healthy-control database when it is installed.

    With ``engine``, ``sct_process_segmentation -perslice 1 -normalize-PAM50 1``, which uses
    SCT's own PAM50 levels (so ``pam50_levels_file`` must be that file); without, the same
    interpolation (:mod:`spinal_bidsapp.participant.morphometrics_pam50`) of our per-slice CSA.
    """
    from spinal_bidsapp.engines.sct_outputs import pam50_csa_from_sct_csv
    from spinal_bidsapp.participant.morphometrics_pam50 import (
        compare_to_normative,
        load_normative_csa,
        read_pam50_slice_levels,
        resample_to_pam50,
        summarise_pam50_levels,
    )

    pam50_levels = read_pam50_slice_levels(pam50_levels_file)
    levels, csa = subject_slice_levels(morph_table, read_disc_values(discs))
    builtin_values = resample_to_pam50(levels, csa, pam50_levels)  # refuses < 3 levels, which
    if engine is not None:  # SCT would crash on (ValueError: cannot convert float NaN)
        result = engine.measure_cord(cord, discs, out_dir=work_dir, per="slice",
                                     normalize_pam50=True)
        values = pam50_csa_from_sct_csv(result.rows, len(pam50_levels))
        method = f"SCT {engine.info.version} sct_process_segmentation -normalize-PAM50 1"
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
