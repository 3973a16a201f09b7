"""Readers of SCT output files: labeled segmentations, rootlet segmentations, morphometry CSVs.

The array functions are pure (arrays and affines in, plain values out); the ``read_*``/``write_*``
functions are thin file wrappers. Numbering follows SCT (``docs/reference/sct.md`` §1.4):

* labeled segmentation (``sct_label_vertebrae``: ``*_labeled``): value N = vertebral level N, the
  region between disc N (above) and disc N+1 (below);
* disc labels: value N = the disc just above vertebra N, so disc N lies between levels N-1 and N;
* rootlets (``sct_deepseg rootlets``): value = spinal (neurological) level, C1..C8 = 1..8, T1 = 9.

The SCT-specific voxel order of its centerline CSV is handled in :mod:`spinal_bidsapp.engines.sct`.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.engines.base import DiscLabelResult
from spinal_bidsapp.errors import InputDataError
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
