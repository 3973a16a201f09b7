"""Readers of SCT output files: labeled segmentations, rootlet segmentations, morphometry CSVs.

The array functions are pure (arrays and affines in, plain values out); the ``read_*``/``write_*``
functions are thin file wrappers. Numbering follows SCT (``docs/reference/sct.md`` §1.4):

* labeled segmentation (``sct_label_vertebrae``: ``*_labeled``): value N = vertebral level N, the
  region between disc N (above) and disc N+1 (below);
* disc labels: value N = the disc just above vertebra N, so disc N lies between levels N-1 and N;
* rootlets (``sct_deepseg rootlets``): value = spinal (neurological) level, C1..C8 = 1..8, T1 = 9;
* TotalSpineSeg (``sct_deepseg spine -label-vert 1``, ``*_totalspineseg_all``): cord 1, canal (CSF)
  2, vertebrae 11-17 (C1-C7), 21-32 (T1-T12), 41-45 (L1-L5) (46-47: L6-L7), 50 sacrum, discs 63-67
  (C2/C3-C6/C7), 71-82 (C7/T1-T11/T12), 91-95 (T12/L1-L4/L5), 100 (L5/S); SCT 7.3
  ``reports/totalspineseg_step2_regions.json``. Its ``*_totalspineseg_discs`` are single voxels at
  the posterior tip of each disc, already in SCT disc numbering.

The SCT-specific voxel order of its centerline CSV is handled in :mod:`spinal_bidsapp.engines.sct`.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.engines.base import DiscLabelResult
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import DISC_NAMES, VERTEBRA_NAMES
from spinal_bidsapp.image import Affine, Volume, load_mask, save_volume, vox_to_mm


def superior_axis(affine: Affine) -> tuple[int, int]:
    """Voxel axis closest to world S, and +1/-1 when indices grow towards superior/inferior.

    >>> superior_axis(np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]))
    (1, 1)
    """
    column = np.asarray(affine, dtype=float)[2, :3]
    axis = int(np.argmax(np.abs(column)))
    return axis, 1 if column[axis] > 0 else -1


def disc_voxels_from_levels(levels: NDArray[np.integer], affine: Affine
                            ) -> dict[int, tuple[int, int, int]]:
    """Disc positions (voxel indices) derived from a labeled segmentation.

    Disc N lies between level N-1 (above) and level N (below). Its slice is the midpoint between
    the most inferior slice of level N-1 and the most superior slice of level N (rounded half to
    even, like numpy), and it sits at the rounded centre of mass of the labeled cord in that slice.
    Only discs between two present, consecutive levels are returned.

    Parameters
    ----------
    levels : (X, Y, Z) int
        0 outside the cord, vertebral level inside.
    affine : (4, 4) float
        Voxel to world (RAS+, mm); only used to find the superior axis.

    Returns
    -------
    dict
        Disc number -> (i, j, k) voxel index.
    """
    axis, sign = superior_axis(affine)
    values = sorted(int(v) for v in np.unique(levels) if v > 0)
    extents: dict[int, tuple[int, int]] = {}
    for value in values:
        slices = np.nonzero(np.any(np.moveaxis(levels == value, axis, 0), axis=(1, 2)))[0]
        # (most superior, most inferior) slice index
        extents[value] = ((int(slices.max()), int(slices.min())) if sign > 0
                          else (int(slices.min()), int(slices.max())))
    cord = np.moveaxis(levels > 0, axis, 0)
    discs: dict[int, tuple[int, int, int]] = {}
    for upper, lower in itertools.pairwise(values):
        if lower != upper + 1:
            continue
        index = int(np.rint((extents[upper][1] + extents[lower][0]) / 2.0))
        plane = cord[index]
        if not plane.any():  # a gap in the segmentation: use both boundary slices
            plane = cord[extents[upper][1]] | cord[extents[lower][0]]
        centre = np.rint(np.argwhere(plane).mean(axis=0)).astype(int)
        voxel = [int(centre[0]), int(centre[1])]
        voxel.insert(axis, index)
        discs[lower] = (voxel[0], voxel[1], voxel[2])
    return discs


def write_discs_from_labeled_segmentation(labeled: Path, out: Path) -> DiscLabelResult:
    """Write single-voxel disc labels (SCT numbering) derived from ``*_labeled.nii.gz``.

    Raises
    ------
    InputDataError
        The labeled segmentation has fewer than two consecutive levels (no disc between them).
    """
    volume = load_mask(labeled)
    discs = disc_voxels_from_levels(volume.data, volume.affine)
    if not discs:
        raise InputDataError(f"{labeled} holds no two consecutive vertebral levels, so no disc "
                             "can be placed between them")
    data = np.zeros(volume.shape, dtype=np.uint8)
    for disc, voxel in discs.items():
        data[voxel] = disc
    save_volume(Volume(data=data, affine=volume.affine), out, dtype=np.uint8)
    return DiscLabelResult(discs=out)


@dataclass(frozen=True)
class SpinalLevelExtent:
    """Where one spinal level's rootlets are, in world coordinates (RAS+, mm)."""

    level: int
    """Spinal level: C1..C8 = 1..8, T1 = 9 (not the vertebral numbering)."""
    superior_mm: float
    """Highest world z of the level's voxel centres."""
    inferior_mm: float
    centre_mm: tuple[float, float, float]
    voxels: int


def spinal_levels_from_rootlets(labels: NDArray[np.integer], affine: Affine
                                ) -> list[SpinalLevelExtent]:
    """Extent and centre of each spinal level in a rootlet segmentation, top level first."""
    extents = []
    for value in sorted(int(v) for v in np.unique(labels) if v > 0):
        points = vox_to_mm(affine, np.argwhere(labels == value))
        centre = points.mean(axis=0)
        extents.append(SpinalLevelExtent(
            level=value, superior_mm=float(points[:, 2].max()),
            inferior_mm=float(points[:, 2].min()),
            centre_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
            voxels=len(points)))
    return sorted(extents, key=lambda e: -e.centre_mm[2])


def read_rootlet_levels(path: Path) -> list[SpinalLevelExtent]:
    """:func:`spinal_levels_from_rootlets` of a rootlet segmentation file."""
    volume = load_mask(path)
    return spinal_levels_from_rootlets(volume.data, volume.affine)


@dataclass(frozen=True)
class CordMorphometrics:
    """One row of ``sct_process_segmentation`` output (per level or per slice).

    Angles in degrees and lengths in mm as SCT reports them; ``None`` when the column is absent
    or empty (SCT writes an empty cell or ``nan`` for slices where a metric is undefined).
    """

    slices: tuple[int, ...]
    """Slice indices along SCT's I->S axis."""
    vertebral_levels: tuple[int, ...]
    area_mm2: float | None
    area_std_mm2: float | None
    diameter_ap_mm: float | None
    diameter_rl_mm: float | None
    eccentricity: float | None
    solidity: float | None
    orientation_deg: float | None
    angle_ap_deg: float | None
    angle_rl_deg: float | None
    length_mm: float | None
    sct_version: str | None



def parse_sct_ranges(text: str) -> tuple[int, ...]:
    """Inverse of SCT's ``parse_num_list_inv``: ``'1:3;5'`` -> ``(1, 2, 3, 5)``.

    >>> parse_sct_ranges("1:3;5")
    (1, 2, 3, 5)
    >>> parse_sct_ranges("")
    ()
    """
    values: list[int] = []
    for part in filter(None, (p.strip() for p in text.replace(",", ";").split(";"))):
        first, _, last = part.partition(":")
        values.extend(range(int(first), int(last or first) + 1))
    return tuple(values)


def read_morphometrics_csv(path: Path) -> list[CordMorphometrics]:
    """Parse the CSV written by ``sct_process_segmentation`` (SCT 6.x-7.x column names).

    Raises
    ------
    InputDataError
        The file lacks the ``Slice (I->S)`` column or a number cannot be parsed.
    """
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "Slice (I->S)" not in reader.fieldnames:
            raise InputDataError(f"{path} is not a sct_process_segmentation CSV (no "
                                 "'Slice (I->S)' column)")
        try:
            return [_row_to_morphometrics(row) for row in reader]
        except ValueError as exc:
            raise InputDataError(f"{path}: unparsable value ({exc})") from exc


def _row_to_morphometrics(row: dict[str, str]) -> CordMorphometrics:
    def number(column: str) -> float | None:
        text = (row.get(column) or "").strip()
        if not text:
            return None
        value = float(text)
        return None if math.isnan(value) else value

    return CordMorphometrics(
        slices=parse_sct_ranges(row["Slice (I->S)"] or ""),
        vertebral_levels=parse_sct_ranges(row.get("VertLevel") or ""),
        area_mm2=number("MEAN(area)"),
        area_std_mm2=number("STD(area)"),
        diameter_ap_mm=number("MEAN(diameter_AP)"),
        diameter_rl_mm=number("MEAN(diameter_RL)"),
        eccentricity=number("MEAN(eccentricity)"),
        solidity=number("MEAN(solidity)"),
        orientation_deg=number("MEAN(orientation)"),
        angle_ap_deg=number("MEAN(angle_AP)"),
        angle_rl_deg=number("MEAN(angle_RL)"),
        length_mm=number("SUM(length)"),
        sct_version=row.get("SCT Version") or None,
    )


# ----------------------------------------------------------------------- TotalSpineSeg (spine)

TSS_CORD, TSS_CANAL = 1, 2
"""TotalSpineSeg labels of the cord and of the CSF around it (together: the spinal canal)."""
TSS_SACRUM = 50


def _tss_ranges(first_tss: int, first_sct: int, count: int) -> dict[int, int]:
    return {first_tss + i: first_sct + i for i in range(count)}


TSS_VERTEBRA_TO_SCT: dict[int, int] = {
    **_tss_ranges(11, 1, 7), **_tss_ranges(21, 8, 12), **_tss_ranges(41, 20, 5), TSS_SACRUM: 25}
"""TotalSpineSeg vertebra label -> SCT vertebral level (C1 = 1 ... L5 = 24, sacrum -> 25 = S1).
L6/L7 (46/47, transitional anatomy) have no SCT number and are reported, not mapped."""
TSS_DISC_TO_SCT: dict[int, int] = {
    **_tss_ranges(63, 3, 5), **_tss_ranges(71, 8, 12), **_tss_ranges(91, 20, 5), 100: 25}
"""TotalSpineSeg disc label -> SCT disc number (C2/C3 = 3 ... L5/S = 25)."""
TSS_UNNUMBERED = {46: "L6", 47: "L7"}


@dataclass(frozen=True)
class SpineLabels:
    """TotalSpineSeg labels in SCT numbering, on the grid of the labelled image."""

    vertebrae: NDArray[np.uint8]
    """Vertebral bodies: SCT vertebral level (C1 = 1 ... L5 = 24, sacrum = 25), 0 elsewhere."""
    disc_regions: NDArray[np.uint8]
    """Whole discs: SCT disc number (C2/C3 = 3 ...), 0 elsewhere."""
    canal: NDArray[np.bool_]
    """Spinal canal: the cord and the CSF around it (TotalSpineSeg labels 1 and 2)."""
    unnumbered: tuple[str, ...]
    """Vertebrae present in the image that SCT numbering has no value for (``L6``)."""


def spine_labels_from_totalspineseg(labels: NDArray[np.integer]) -> SpineLabels:
    """Split a TotalSpineSeg step-2 label map into SCT-numbered vertebrae, discs and the canal.

    >>> tss = np.array([[[0, 1, 2, 13, 64, 22, 100, 46]]])
    >>> spine = spine_labels_from_totalspineseg(tss)
    >>> spine.vertebrae.ravel().tolist(), spine.disc_regions.ravel().tolist(), spine.unnumbered
    ([0, 0, 0, 3, 0, 9, 0, 0], [0, 0, 0, 0, 4, 0, 25, 0], ('L6',))
    """
    tss = np.rint(np.asarray(labels)).astype(np.int64)
    vertebrae = np.zeros(tss.shape, np.uint8)
    discs = np.zeros(tss.shape, np.uint8)
    for source, target in TSS_VERTEBRA_TO_SCT.items():
        vertebrae[tss == source] = target
    for source, target in TSS_DISC_TO_SCT.items():
        discs[tss == source] = target
    present = set(np.unique(tss).tolist())
    return SpineLabels(vertebrae=vertebrae, disc_regions=discs,
                       canal=(tss == TSS_CORD) | (tss == TSS_CANAL),
                       unnumbered=tuple(name for value, name in TSS_UNNUMBERED.items()
                                        if value in present))


@dataclass(frozen=True)
class SpineCheck:
    """Consistency of automatic vertebra and disc labels (what a reviewer would check first)."""

    vertebrae: tuple[int, ...]
    discs: tuple[int, ...]
    problems: tuple[str, ...]
    """One short sentence per problem (``"missing C4"``); empty when consistent."""

    @property
    def consistent(self) -> bool:
        return not self.problems


MIN_PIECE_FRACTION = 0.1
"""A second piece of one vertebra counts as a duplicate when it has at least this fraction of the
voxels of the largest piece (smaller pieces are segmentation specks, not a repeated level)."""


def check_spine_levels(vertebrae: NDArray[np.integer], disc_points: Mapping[int, NDArray],
                       affine: NDArray[np.float64], *, unnumbered: tuple[str, ...] = ()
                       ) -> SpineCheck:
    """No missing or duplicated level, discs in order and each between its two vertebrae.

    Parameters
    ----------
    vertebrae : (X, Y, Z) int
        SCT vertebral levels (0 outside the bodies).
    disc_points : dict
        SCT disc number -> (3,) world position (mm, RAS+), e.g. the posterior-tip labels.
    affine : (4, 4) float
        Voxel to world of ``vertebrae``.
    unnumbered : tuple of str
        Vertebrae SCT numbering cannot name (reported as a problem: level names below are then
        uncertain).

    Returns
    -------
    SpineCheck
        "Above" and "below" compare world superior coordinates of centroids.
    """
    problems: list[str] = [f"{name} present (transitional anatomy): check the level names"
                           for name in unnumbered]
    values = sorted(int(v) for v in np.unique(vertebrae) if v > 0)
    height: dict[int, float] = {}
    for value in values:
        pieces, count = ndimage.label(vertebrae == value)
        sizes = np.bincount(pieces.ravel())[1:]
        if count > 1 and np.sort(sizes)[-2] >= MIN_PIECE_FRACTION * sizes.max():
            problems.append(f"{VERTEBRA_NAMES[value]} labelled at {count} separate places")
        centroid = np.argwhere(vertebrae == value).mean(axis=0)
        height[value] = float(vox_to_mm(affine, centroid[None])[0, 2])
    if values:
        problems += [f"missing {VERTEBRA_NAMES[v]}" for v in range(values[0], values[-1] + 1)
                     if v not in height]
    discs = sorted(disc_points)
    disc_height = {d: float(np.asarray(disc_points[d])[2]) for d in discs}
    problems += [f"discs {DISC_NAMES[a]} and {DISC_NAMES[b]} out of order"
                 for a, b in itertools.pairwise(discs) if disc_height[a] <= disc_height[b]]
    for disc in discs:
        above, below = height.get(disc - 1), height.get(disc)
        if above is not None and below is not None and not below < disc_height[disc] < above:
            problems.append(f"disc {DISC_NAMES[disc]} is not between {VERTEBRA_NAMES[disc - 1]} "
                            f"and {VERTEBRA_NAMES[disc]}")
    problems += [f"missing disc {DISC_NAMES[v]}" for v in values[1:]
                 if v - 1 in height and v not in disc_points]
    return SpineCheck(vertebrae=tuple(values), discs=tuple(discs), problems=tuple(problems))


def pam50_csa_from_sct_csv(rows: Sequence[CordMorphometrics], n_slices: int
                           ) -> NDArray[np.float64]:
    """Per-PAM50-slice CSA from the rows of a ``-perslice 1 -normalize-PAM50 1`` CSV.

    Parameters
    ----------
    rows : sequence of CordMorphometrics
        :func:`~spinal_bidsapp.engines.sct.outputs.read_morphometrics_csv` of the CSV; its
        ``Slice (I->S)`` is the PAM50 slice index.
    n_slices : int
        Number of PAM50 slices (the length of
        :func:`~spinal_bidsapp.participant.morphometrics_pam50.pam50_slice_levels`).

    Returns
    -------
    (n_slices,) float64
        ``MEAN(area)`` in mm² per PAM50 slice; NaN for slices without a row or with an empty cell.

    Raises
    ------
    InputDataError
        A row covers several slices (not a per-slice CSV) or a slice lies outside the template.
    """
    out = np.full(n_slices, np.nan)
    for row in rows:
        if len(row.slices) != 1 or not 0 <= row.slices[0] < n_slices:
            raise InputDataError(
                f"slice {row.slices} is not one PAM50 slice in [0, {n_slices}); expected the CSV "
                "of 'sct_process_segmentation -perslice 1 -normalize-PAM50 1'")
        if row.area_mm2 is not None:
            out[row.slices[0]] = row.area_mm2
    return out
