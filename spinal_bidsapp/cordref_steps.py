"""The work of each cord-reference step: read its input files, call pure code, write outputs.

Every function here is one step of ``cordref``: paths in, files out (atomically, with sidecars),
no decisions about skipping (the runner makes those).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from spinal_bidsapp.bids.outputs import raw_uri, sidecar_path, write_lut, write_sidecar
from spinal_bidsapp.engines.base import Contrast
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
from spinal_bidsapp.geometry.metrics import mask_dice
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
from spinal_bidsapp.runtime.files import atomic_path, write_json, write_text
from spinal_bidsapp.templates.pam50 import Pam50

if TYPE_CHECKING:
    from spinal_bidsapp.engines.builtin.disclabel import SessionCues
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
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


def _fallback_fields(reason: str | None) -> dict[str, object]:
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
        **_fallback_fields(fallback_reason)})


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
        **_fallback_fields(fallback_reason)})


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
    from spinal_bidsapp.reports.views import spinal_level_name

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


@dataclass(frozen=True)
class RegistrationPaths:
    to_template: Path
    from_template: Path
    anat_in_template: Path
    cord_in_template: Path
    template_levels: Path
    template_cord: Path
    metrics: Path

    def all(self) -> Iterator[Path]:
        yield from (self.to_template, self.from_template, self.anat_in_template,
                    self.cord_in_template, self.template_levels, self.template_cord,
                    self.metrics)


def register(anat: Path, cord: Path, discs: Path, template: Pam50,
             paths: RegistrationPaths, *, fallback_reason: str | None = None) -> None:
    """Builtin registration to PAM50 and everything carried across with it
    (``fallback_reason``: why not SCT's, recorded in the metrics and the sidecars)."""
    from spinal_bidsapp.engines.builtin.registration import register_to_template

    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    subject_points, template_points = _disc_points(discs, template)
    result = register_to_template(anat_vol, cord_vol, subject_points, load_mask(template.cord),
                                  template_points)
    engine: dict[str, str] = {"engine": "builtin"}
    if fallback_reason is not None:
        engine["fallback_reason"] = fallback_reason
    carry_across(anat_vol, cord_vol, template, result, paths, engine=engine,
                 subject_points=subject_points, template_points=template_points)


RegistrationLabels = Literal["discs", "rootlets"]


def run_sct_registration(engine: SctEngine, anat: Path, cord: Path, labels_file: Path,
                         template: Pam50, *, work_dir: Path, contrast: Contrast,
                         labels: RegistrationLabels) -> TemplateRegistration:
    """One ``sct_register_to_template`` run (``-ldisc`` or ``-lrootlet``), its warps read back.

    SCT's two warps are ITK displacement fields in our convention already: it writes
    ``warp_template2anat`` on the grid of its ``-i`` image (here the standardized anatomy, the
    grid of our ``xfm_from_template``) and ``warp_anat2template`` on the full template grid
    (the builtin engine uses a slab of it). They are read and rewritten, not resampled.
    """
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
    from spinal_bidsapp.fieldio import load_field

    if labels == "discs":
        result = engine.register_to_template(anat, cord, labels_file,
                                             template_dir=template.sct_dir, contrast=contrast,
                                             out_dir=work_dir)
    else:
        result = engine.register_to_template_with_rootlets(
            anat, cord, labels_file, template_dir=template.sct_dir, contrast=contrast,
            out_dir=work_dir)
    to_template = load_field(result.anat_to_template)
    to_anat = load_field(result.template_to_anat)
    anat_vol = load_volume(anat)
    if to_anat.shape != anat_vol.shape or not np.allclose(to_anat.affine, anat_vol.affine,
                                                          atol=1e-4):
        raise InputDataError(f"{result.template_to_anat} is not on the grid of {anat.name}, "
                             "the image given to sct_register_to_template")
    return TemplateRegistration(anat_to_template=to_template, template_to_anat=to_anat,
                                slab_shape=to_template.shape, slab_affine=to_template.affine)


def _sct_engine_record(engine: SctEngine) -> dict[str, str]:
    return {"engine": "sct", "engine_version": engine.info.version,
            "method": engine.method("register_to_template")}


def register_sct_path(engine: SctEngine, anat: Path, cord: Path, labels_file: Path,
                      discs: Path, template: Pam50, *, work_dir: Path, contrast: Contrast,
                      labels: RegistrationLabels, metrics_out: Path) -> None:
    """One of the two SCT registrations (discs or rootlets), scored the same way, so the
    ``register`` step can compare them; the warps stay in ``work_dir``."""
    registration = run_sct_registration(engine, anat, cord, labels_file, template,
                                        work_dir=work_dir, contrast=contrast, labels=labels)
    subject_points, template_points = _disc_points(discs, template)
    scores = score_registration(load_mask(cord), load_mask(template.cord), registration,
                                subject_points=subject_points, template_points=template_points)
    write_json(metrics_out, {**_sct_engine_record(engine), "labels": labels,
                             "template": template.provenance(), **scores})


ROOTLET_DICE_TOLERANCE = 0.02
"""The rootlet-based warp may lose at most this much cord Dice (in template space) against the
disc-based one and still be primary: both are SCT's same cord-driven steps after the S-I
alignment, so a larger loss means the rootlet S-I alignment pulled the cord out of shape."""
ROOTLET_MAX_DISC_ERROR_MM = 10.0
"""Largest disc landing error (native discs carried to PAM50 by the rootlet-based warp) accepted
for a primary rootlet warp. Spinal and vertebral levels differ between people by a few mm
(rootlets are what the rootlet warp aligns), but two thirds of a cervical vertebra (~15 mm)
means a rootlet level was taken for its neighbour."""
ROOTLET_MIN_LEVELS = 2
"""Fewer spinal levels give SCT a single landmark: a translation, no S-I scaling."""


def choose_registration(discs: dict[str, object], rootlets: dict[str, object] | None, *,
                        rootlet_levels: int) -> tuple[RegistrationLabels, str]:
    """Which warp is primary, and why (one sentence for the report and the metrics JSON).

    The rootlet-based warp aligns spinal (neurological) levels, the unit of spinal cord
    function and of fMRI analyses, so it is preferred when it is trustworthy: at least
    :data:`ROOTLET_MIN_LEVELS` spinal levels, cord Dice within :data:`ROOTLET_DICE_TOLERANCE` of
    the disc-based warp, and no disc further than :data:`ROOTLET_MAX_DISC_ERROR_MM` from its
    PAM50 position. Otherwise the disc-based warp.

    >>> discs = {"cord_dice_in_template": 0.95, "disc_error_mm": {"3": {"to_template": 0.4}}}
    >>> rootlets = {"cord_dice_in_template": 0.94, "disc_error_mm": {"3": {"to_template": 3.0}}}
    >>> choose_registration(discs, rootlets, rootlet_levels=4)[0]
    'rootlets'
    >>> choose_registration(discs, None, rootlet_levels=0)[1]
    'disc-based: no rootlet-based registration'
    """
    if rootlets is None:
        return "discs", "disc-based: no rootlet-based registration"
    if rootlet_levels < ROOTLET_MIN_LEVELS:
        return "discs", (f"disc-based: the rootlets cover {rootlet_levels} spinal level(s), "
                         f"fewer than {ROOTLET_MIN_LEVELS}")
    loss = float(cast(float, discs["cord_dice_in_template"])) - float(
        cast(float, rootlets["cord_dice_in_template"]))
    if loss > ROOTLET_DICE_TOLERANCE:
        return "discs", (f"disc-based: the rootlet-based warp loses {loss:.3f} cord Dice "
                         f"(> {ROOTLET_DICE_TOLERANCE})")
    errors = cast(dict[str, dict[str, float | None]], rootlets["disc_error_mm"])
    worst = max((e["to_template"] for e in errors.values() if e["to_template"] is not None),
                default=0.0)
    if worst > ROOTLET_MAX_DISC_ERROR_MM:
        return "discs", (f"disc-based: a disc lands {worst:.1f} mm from PAM50 with the "
                         f"rootlet-based warp (> {ROOTLET_MAX_DISC_ERROR_MM:g} mm)")
    return "rootlets", (f"rootlet-based: {rootlet_levels} spinal levels, cord Dice within "
                        f"{ROOTLET_DICE_TOLERANCE} of the disc-based warp, discs within "
                        f"{worst:.1f} mm")


def select_sct_registration(anat: Path, cord: Path, discs: Path, template: Pam50,
                            paths: RegistrationPaths, alternates: dict[str, tuple[Path, Path]],
                            *, disc_dir: Path, rootlet_dir: Path | None,
                            rootlets: Path | None, builtin_dir: Path | None = None) -> None:
    """Carry the chosen warp across (the primary outputs) and keep the other ones under their
    ``desc-`` names; every path's scores and the choice go into the registration metrics.

    ``builtin_dir`` (``--engine auto``): the builtin registration, carried across there by
    :func:`register` (:func:`builtin_candidate_paths`), competes with SCT's chosen path
    (:func:`choose_engine_registration`); when it wins its outputs become the primary ones as
    they are (the builtin engine's own outputs, byte for byte), SCT's warps become alternates.
    """
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
    from spinal_bidsapp.engines.sct import REGISTRATION_OUTPUTS
    from spinal_bidsapp.engines.sct_outputs import read_rootlet_levels
    from spinal_bidsapp.fieldio import load_field, save_field

    scores: dict[RegistrationLabels, dict[str, object]] = {
        "discs": json.loads((disc_dir / "metrics.json").read_text(encoding="utf-8"))}
    folders: dict[RegistrationLabels, Path] = {"discs": disc_dir}
    if rootlet_dir is not None:
        scores["rootlets"] = json.loads((rootlet_dir / "metrics.json").read_text(
            encoding="utf-8"))
        folders["rootlets"] = rootlet_dir
    levels = len(read_rootlet_levels(rootlets)) if rootlets is not None else 0
    chosen, reason = choose_registration(scores["discs"], scores.get("rootlets"),
                                         rootlet_levels=levels)
    path_scores: dict[str, dict[str, object]] = {
        k: {m: v[m] for m in _PATH_SCORES if m in v} for k, v in scores.items()}
    extra: dict[str, object] = {"labels": chosen, "selection": reason, "paths": path_scores}
    winner: EngineName = "sct"
    sidecar: dict[str, object] = {}
    if builtin_dir is not None:
        candidate = builtin_candidate_paths(builtin_dir)
        builtin = json.loads(candidate.metrics.read_text(encoding="utf-8"))
        path_scores["builtin"] = {m: builtin[m] for m in _PATH_SCORES}
        winner, why = choose_engine_registration(scores[chosen], builtin, sct_labels=chosen)
        extra = {"primary": "builtin" if winner == "builtin" else chosen,
                 "labels": "discs" if winner == "builtin" else chosen, "selection": why,
                 "sct_labels": chosen, "sct_selection": reason, "paths": path_scores}
        sidecar = {"Engine": winner, "EngineSelection": why}
        if winner == "builtin":
            _adopt_candidate(candidate, paths, sidecar=sidecar, extra=extra)
        else:
            for source, target in zip((candidate.to_template, candidate.from_template),
                                      alternates["builtin"], strict=True):
                copy_file(source, target)
    for labels, folder in folders.items():
        warps = [load_field(folder / "sct" / name) for name in REGISTRATION_OUTPUTS]
        if labels == chosen and winner == "sct":
            anat_vol, cord_vol = load_volume(anat), load_mask(cord)
            subject_points, template_points = _disc_points(discs, template)
            registration = TemplateRegistration(
                anat_to_template=warps[0], template_to_anat=warps[1],
                slab_shape=warps[0].shape, slab_affine=warps[0].affine)
            record = {k: str(v) for k, v in scores[labels].items()
                      if k in ("engine", "engine_version", "method")}
            carry_across(anat_vol, cord_vol, template, registration, paths, engine=record,
                         subject_points=subject_points, template_points=template_points,
                         scores={m: scores[labels][m] for m in _PATH_SCORES}, extra=extra,
                         sidecar=sidecar)
        else:
            for warp, target in zip(warps, alternates[labels], strict=True):
                save_field(warp, target)


EngineName = Literal["sct", "builtin"]


def _unmapped_discs(scores: Mapping[str, object]) -> int:
    """Discs the warp does not map in either direction (a ``null`` landing error)."""
    errors = cast(dict[str, dict[str, float | None]], scores["disc_error_mm"])
    return sum(1 for e in errors.values() if None in e.values())


def _mean_dice(scores: Mapping[str, object]) -> float:
    return (float(cast(float, scores["cord_dice_in_template"]))
            + float(cast(float, scores["cord_dice_native"]))) / 2


def choose_engine_registration(sct: Mapping[str, object], builtin: Mapping[str, object], *,
                               sct_labels: str = "discs") -> tuple[EngineName, str]:
    """Under ``--engine auto``: SCT's registration or the builtin one, and why (one sentence).

    Both are scored by :func:`score_registration`. First the fewer discs without a mapping: an
    unmapped disc is a part of the subject the warp sends nowhere (SCT crops its warp 10 mm
    beyond the outer labels), which no overlap elsewhere makes up for. Then the higher mean of
    the two cord Dice: template space (the subject's cord carried to PAM50) and native space
    (PAM50's cord carried to the subject) score the two warps the outputs are made with, and
    neither direction matters more. A tie keeps SCT, the engine ``auto`` prefers.

    >>> sct = {"cord_dice_in_template": 0.967, "cord_dice_native": 0.721,
    ...        "disc_error_mm": {"3": {"to_template": 0.5, "to_anat": None}}}
    >>> builtin = {"cord_dice_in_template": 0.983, "cord_dice_native": 0.977,
    ...            "disc_error_mm": {"3": {"to_template": 0.4, "to_anat": 0.6}}}
    >>> choose_engine_registration(sct, builtin)
    ('builtin', 'builtin: 0 unmapped disc(s) against 1 for SCT (disc-based)')
    >>> choose_engine_registration(sct, {**builtin, "disc_error_mm": sct["disc_error_mm"]})[0]
    'builtin'
    >>> choose_engine_registration(sct, sct)
    ('sct', 'SCT (disc-based): mean cord Dice 0.844, builtin 0.844 (a tie keeps SCT)')
    """
    what = f"SCT ({sct_labels[:-1]}-based)"
    unmapped_sct, unmapped_builtin = _unmapped_discs(sct), _unmapped_discs(builtin)
    if unmapped_sct != unmapped_builtin:
        winner: EngineName = "builtin" if unmapped_builtin < unmapped_sct else "sct"
        return winner, (f"{'builtin' if winner == 'builtin' else what}: "
                        f"{min(unmapped_sct, unmapped_builtin)} unmapped disc(s) against "
                        f"{max(unmapped_sct, unmapped_builtin)} for "
                        f"{what if winner == 'builtin' else 'builtin'}")
    dice_sct, dice_builtin = _mean_dice(sct), _mean_dice(builtin)
    if dice_builtin > dice_sct:
        return "builtin", (f"builtin: mean cord Dice {dice_builtin:.3f}, {what} "
                           f"{dice_sct:.3f}")
    tie = " (a tie keeps SCT)" if dice_builtin == dice_sct else ""
    return "sct", f"{what}: mean cord Dice {dice_sct:.3f}, builtin {dice_builtin:.3f}{tie}"


def builtin_candidate_paths(folder: Path) -> RegistrationPaths:
    """Where the ``register_builtin`` step (``--engine auto``) writes its registration."""
    return RegistrationPaths(
        to_template=folder / "to_template.nii.gz", from_template=folder / "from_template.nii.gz",
        anat_in_template=folder / "anat_in_template.nii.gz",
        cord_in_template=folder / "cord_in_template.nii.gz",
        template_levels=folder / "template_levels.nii.gz",
        template_cord=folder / "template_cord.nii.gz",
        metrics=folder / "registration_metrics.json")


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    import shutil

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _adopt_candidate(candidate: RegistrationPaths, paths: RegistrationPaths, *,
                     sidecar: dict[str, object], extra: dict[str, object]) -> None:
    """The builtin candidate's files as the primary outputs, their sidecars saying so."""
    for source, target in zip(candidate.all(), paths.all(), strict=True):
        if target == paths.metrics:
            metrics = json.loads(source.read_text(encoding="utf-8"))
            write_json(target, {**metrics, **extra})
            continue
        copy_file(source, target)
        if sidecar_path(source).is_file():
            fields = json.loads(sidecar_path(source).read_text(encoding="utf-8"))
            write_sidecar(target, {**fields, **sidecar})


_PATH_SCORES = ("cord_dice_in_template", "cord_dice_native", "disc_error_mm")


def _disc_points(discs: Path, template: Pam50) -> tuple[dict[int, np.ndarray],
                                                         dict[int, np.ndarray]]:
    disc_vol, tpl_discs = load_mask(discs), load_mask(template.label_disc)
    return (discs_from_label_array(disc_vol.data, disc_vol.affine),
            discs_from_label_array(tpl_discs.data, tpl_discs.affine))


def carry_across(anat_vol: Volume, cord_vol: Volume, template: Pam50,
                 registration: TemplateRegistration, paths: RegistrationPaths, *,
                 engine: dict[str, str], subject_points: dict[int, np.ndarray],
                 template_points: dict[int, np.ndarray],
                 extra: dict[str, object] | None = None,
                 scores: dict[str, object] | None = None,
                 sidecar: dict[str, object] | None = None) -> None:
    """Save both warps, carry images and labels across them, and score the registration.

    Whatever engine computed ``registration``, the same code resamples (``apply_field``) and
    scores it (:func:`score_registration`), unless ``scores`` (that function's result for the
    same registration) are given. ``sidecar``: fields added to the images' sidecars.
    """
    from spinal_bidsapp.fieldio import save_field
    from spinal_bidsapp.geometry.fields import apply_field

    to_tpl, back = registration.anat_to_template, registration.template_to_anat
    tpl_cord = load_mask(template.cord)
    save_field(to_tpl, paths.to_template, reference=(tpl_cord.shape, tpl_cord.affine))
    save_field(back, paths.from_template)
    warped = apply_field(anat_vol.data, anat_vol.affine, to_tpl, order=3)
    save_volume(Volume(np.asarray(warped, np.float32), to_tpl.affine), paths.anat_in_template)
    warped_cord = apply_field(cord_vol.data.astype(np.float32), cord_vol.affine, to_tpl, order=1)
    save_volume(Volume((warped_cord > 0.5).astype(np.uint8), to_tpl.affine),
                paths.cord_in_template, dtype=np.uint8)
    tpl_cord_native = apply_field(tpl_cord.data.astype(np.float32), tpl_cord.affine, back,
                                  order=1) > 0.5
    save_volume(Volume(tpl_cord_native.astype(np.uint8), back.affine),
                paths.template_cord, dtype=np.uint8)
    levels_src = load_mask(template.levels) if template.levels else tpl_cord
    levels_native = apply_field(levels_src.data.astype(np.int32), levels_src.affine, back,
                                order=0)
    save_volume(Volume(levels_native.astype(np.uint8), back.affine), paths.template_levels,
                dtype=np.uint8)
    for image in (paths.anat_in_template, paths.cord_in_template, paths.template_cord,
                  paths.template_levels):
        fields: dict[str, object] = {"Description": "carried across the PAM50 registration",
                                     "SpatialReference": str(template.template_folder)}
        if image == paths.anat_in_template:
            fields["SkullStripped"] = False
        write_sidecar(image, {**fields, **_fallback_fields(engine.get("fallback_reason")),
                              **(sidecar or {})})
    if scores is None:
        scores = score_registration(
            cord_vol, tpl_cord, registration, subject_points=subject_points,
            template_points=template_points, warped_cord=warped_cord,
            template_cord_native=tpl_cord_native)
    write_json(paths.metrics, {**engine, "template": template.provenance(), **scores,
                               **(extra or {})})


def score_registration(cord_vol: Volume, tpl_cord: Volume, registration: TemplateRegistration,
                       *, subject_points: dict[int, np.ndarray],
                       template_points: dict[int, np.ndarray],
                       warped_cord: np.ndarray | None = None,
                       template_cord_native: np.ndarray | None = None) -> dict[str, object]:
    """Cord Dice in template space (over the slices the subject covers), cord Dice in native
    space (template cord carried to the anatomy vs the subject mask) and the landing error of
    every disc common to subject and template, both ways. The two resampled cords are
    recomputed unless given."""
    from spinal_bidsapp.engines.builtin.registration import disc_errors_mm
    from spinal_bidsapp.geometry.fields import apply_field

    to_tpl, back = registration.anat_to_template, registration.template_to_anat
    if warped_cord is None:
        warped_cord = apply_field(cord_vol.data.astype(np.float32), cord_vol.affine, to_tpl,
                                  order=1)
    if template_cord_native is None:
        template_cord_native = apply_field(tpl_cord.data.astype(np.float32), tpl_cord.affine,
                                           back, order=1) > 0.5
    errors = disc_errors_mm(registration, subject_points, template_points)
    inside = np.asarray(warped_cord > 0.5)
    covered = inside.any(axis=(0, 1))
    slab = _template_slab_mask(tpl_cord, to_tpl)[:, :, covered]
    dice = mask_dice(inside[:, :, covered], slab)
    dice_native = mask_dice(template_cord_native, cord_vol.data > 0)
    finite = [e for pair in errors.values() for e in pair if np.isfinite(e)]
    logger.info("registration to PAM50: cord Dice %.3f (native %.3f), max disc error %s",
                dice, dice_native, f"{max(finite):.2f} mm" if finite else "none measured")
    unmapped = sorted(k for k, pair in errors.items() if not np.all(np.isfinite(pair)))
    if unmapped:
        logger.warning("registration to PAM50: no mapping at disc(s) %s (the warp does not "
                       "cover them); no landing error is measured there", unmapped)
    return {"cord_dice_in_template": round(dice, 4), "cord_dice_native": round(dice_native, 4),
            "disc_error_mm": {str(k): {"to_template": mm_or_no_mapping(a),
                                       "to_anat": mm_or_no_mapping(b)}
                              for k, (a, b) in errors.items()}}


NO_MAPPING = None
"""A landing error where the warp has no mapping (JSON ``null``; "no mapping" in the report)."""


def mm_or_no_mapping(distance_mm: float) -> float | None:
    """A distance rounded to a micrometre, or :data:`NO_MAPPING` where the warp gave none (NaN).

    >>> mm_or_no_mapping(1.23456), mm_or_no_mapping(float("nan"))
    (1.235, None)
    """
    return round(float(distance_mm), 3) if np.isfinite(distance_mm) else NO_MAPPING


def _template_slab_mask(template_cord: Volume, field: object) -> np.ndarray:
    """Template cord mask resampled on the slab grid of ``field`` (same world frame)."""
    from spinal_bidsapp.geometry.fields import DisplacementField, apply_field

    assert isinstance(field, DisplacementField)
    identity = DisplacementField(np.zeros_like(field.data), field.affine)
    return np.asarray(apply_field(template_cord.data.astype(np.float32), template_cord.affine,
                                  identity, order=0) > 0.5)


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
    interpolation (:mod:`spinal_bidsapp.morphometrics_pam50`) of our per-slice CSA.
    """
    from spinal_bidsapp.morphometrics_pam50 import (
        compare_to_normative,
        load_normative_csa,
        pam50_csa_from_sct_csv,
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
