"""Intervertebral disc labels (SCT/PAM50 numbering) and disc-based arc-length mappings.

Disc value N is the disc just above (rostral to) vertebra N: 1 = top of C1, 2 = C1/C2,
3 = C2/C3, ..., 8 = C7/T1, 20 = T12/L1, 25 = L5/S1, 30 = S5/Co; 49 = PMG (pontomedullary
groove), 50 = PMJ (pontomedullary junction), 60 = conus medullaris tip. Arc positions refer to a
:class:`~spinal_bidsapp.geometry.centerline.Centerline`, whose arc grows from inferior to superior.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline
from spinal_bidsapp.geometry.coordinates import locate_points

logger = logging.getLogger(__name__)

PMJ = 50
PMG = 49
CONUS = 60


_REGIONS = ([f"C{i}" for i in range(1, 8)] + [f"T{i}" for i in range(1, 13)]
            + [f"L{i}" for i in range(1, 6)] + [f"S{i}" for i in range(1, 6)] + ["Co"])
VERTEBRA_NAMES: dict[int, str] = {i + 1: name for i, name in enumerate(_REGIONS)}
"""Vertebral level value -> name (C1 = 1 ... C7 = 7, T1 = 8 ... L5 = 24, S1 = 25, Co = 30)."""


def _disc_names() -> dict[int, str]:
    names = {1: "skull-C1 (top of C1)"}
    for value in range(2, 31):
        names[value] = f"{VERTEBRA_NAMES[value - 1]}/{VERTEBRA_NAMES[value]}"
    names[PMG] = "PMG (pontomedullary groove)"
    names[PMJ] = "PMJ (pontomedullary junction)"
    names[CONUS] = "conus medullaris tip"
    return names


DISC_NAMES: dict[int, str] = _disc_names()
"""Disc value -> anatomical name, e.g. ``DISC_NAMES[3] == 'C2/C3'``."""

_SPINAL_GROUPS = (("C", 1, 8), ("T", 9, 20), ("L", 21, 25), ("S", 26, 30))


def spinal_level_name(value: int) -> str:
    """Name of spinal (neurological) level ``value``: C1..C8 = 1..8, T1..T12 = 9..20, L1 = 21.

    This is the numbering of SCT's rootlet segmentation, *not* the vertebral one (there are
    eight cervical spinal levels but seven cervical vertebrae). Unknown values get a neutral
    ``"level N"`` so a figure never fails on an unexpected label.

    >>> [spinal_level_name(v) for v in (1, 8, 9, 20, 21, 0)]
    ['C1', 'C8', 'T1', 'T12', 'L1', 'level 0']
    """
    for letter, first, last in _SPINAL_GROUPS:
        if first <= value <= last:
            return f"{letter}{value - first + 1}"
    return f"level {value}"


_ORDER_RANK: dict[int, float] = {PMJ: -2.0, PMG: -1.0, **{v: float(v) for v in range(1, 31)}}
"""Rostro-caudal rank of the vertebral landmarks (smaller is higher). The conus tip is left out:
its level varies between subjects (T12 to L3), so it is not a vertebral landmark."""


@dataclass(frozen=True)
class DiscPositions:
    """Discs projected on a centerline, ordered from the top (rostral) down.

    Attributes
    ----------
    values : (D,) int
        Disc values (SCT numbering), rostral first.
    arc_mm : (D,) float64, mm
        Arc position of each disc's foot point on the centerline (arc grows superiorly, so this
        decreases along the array).
    offset_mm : (D,) float64, mm
        Distance of each label from the centerline (in-plane), for QC.
    """

    values: NDArray[np.int64]
    arc_mm: NDArray[np.float64]
    offset_mm: NDArray[np.float64]


def discs_from_label_array(labels: NDArray, affine: NDArray[np.float64]) -> dict[int, NDArray]:
    """Disc positions from a label image (single voxels or small blobs).

    Parameters
    ----------
    labels : (nx, ny, nz) int-like array
        Non-zero voxels hold disc values; each value must form one connected blob.
    affine : (4, 4) float, voxel to world RAS+ mm

    Returns
    -------
    dict int -> (3,) float64, mm, world
        Blob centroid of each disc value.

    Raises
    ------
    InputDataError
        No labels, non-integer or unknown values, or a value present in several separate blobs.

    Examples
    --------
    >>> lab = np.zeros((3, 3, 9), dtype=int); lab[1, 1, 6] = 3; lab[1, 1, 2] = 4
    >>> {k: v.tolist() for k, v in discs_from_label_array(lab, np.eye(4)).items()}
    {3: [1.0, 1.0, 6.0], 4: [1.0, 1.0, 2.0]}
    """
    arr = np.asarray(labels)
    rounded = np.rint(arr).astype(np.int64)
    if np.any(np.abs(arr - rounded) > 1e-3):
        raise InputDataError(
            "disc labels must be integers (SCT numbering); found fractional values")
    values = np.unique(rounded[rounded != 0])
    if values.size == 0:
        raise InputDataError("the disc label image is empty; label at least one disc")
    unknown = [int(v) for v in values if int(v) not in DISC_NAMES]
    if unknown:
        raise InputDataError(
            f"unknown disc label values {short_list(unknown)}; use SCT numbering (1-30 discs, "
            "49 PMG, 50 PMJ, 60 conus)")
    out, duplicated = largest_disc_blobs(rounded, affine)
    if duplicated:
        raise InputDataError(
            f"disc labels {duplicated} appear at several separate places; keep one label per disc")
    return out


def short_list(values: list[int], *, limit: int = 8) -> str:
    """A list for a one-line message: the first ``limit`` items and how many there are.

    >>> short_list([1, 2, 3]), short_list(list(range(100)), limit=3)
    ('[1, 2, 3]', '[0, 1, 2, ... (100 values)]')
    """
    if len(values) <= limit:
        return str(list(values))
    return "[" + ", ".join(map(str, values[:limit])) + f", ... ({len(values)} values)]"


def largest_disc_blobs(labels: NDArray, affine: NDArray[np.float64]
                       ) -> tuple[dict[int, NDArray], list[int]]:
    """World centroid of the largest blob of each disc value, and the values found at several
    separate places (automatic labels tolerate them and report them; manual ones are refused by
    :func:`discs_from_label_array`). Values that are not disc numbers are ignored.

    >>> lab = np.zeros((1, 1, 9), dtype=int); lab[0, 0, [1, 2, 6]] = 3
    >>> points, repeated = largest_disc_blobs(lab, np.eye(4))
    >>> points[3].tolist(), repeated
    ([0.0, 0.0, 1.5], [3])
    """
    rounded = np.rint(np.asarray(labels)).astype(np.int64)
    aff = np.asarray(affine, dtype=np.float64)
    out: dict[int, NDArray] = {}
    repeated: list[int] = []
    for value in (int(v) for v in np.unique(rounded) if int(v) in DISC_NAMES):
        blobs, count = ndimage.label(rounded == value, structure=np.ones((3, 3, 3)))
        if count > 1:
            repeated.append(value)
        largest = int(np.argmax(np.bincount(blobs.ravel())[1:])) + 1
        vox = np.argwhere(blobs == largest).mean(axis=0)
        out[value] = aff[:3, :3] @ vox + aff[:3, 3]
    return out, repeated


def project_discs(discs: Mapping[int, NDArray], centerline: Centerline) -> DiscPositions:
    """Project disc points onto a centerline and check their order along the cord.

    Parameters
    ----------
    discs : mapping int -> (3,) float, mm, world
    centerline : Centerline

    Raises
    ------
    InputDataError
        The discs are not in anatomical order along the cord (e.g. disc 5 above disc 3).

    Examples
    --------
    >>> from spinal_bidsapp.geometry.centerline import straight_centerline
    >>> cl = straight_centerline(np.zeros(3), 40.0)
    >>> pos = project_discs({3: np.array([0, 1.0, -10]), 4: np.array([0, 0, -25.0])}, cl)
    >>> pos.values.tolist(), pos.arc_mm.round(6).tolist(), pos.offset_mm.round(6).tolist()
    ([3, 4], [30.0, 15.0], [1.0, 0.0])
    """
    if not discs:
        raise InputDataError("no disc positions given")
    values = np.array(sorted(discs, key=lambda v: (_ORDER_RANK.get(v, 99.0), v)), dtype=np.int64)
    pts = np.array([np.asarray(discs[int(v)], dtype=np.float64) for v in values])
    arc, right, anterior = locate_points(centerline, pts)
    ranked = np.array([int(v) in _ORDER_RANK for v in values])
    rank_arc = arc[ranked]
    if np.any(np.diff(rank_arc) >= 0):
        listing = ", ".join(f"{int(v)} ({DISC_NAMES[int(v)]}) at {a:.1f} mm"
                            for v, a in zip(values[ranked], rank_arc, strict=True))
        raise InputDataError(
            "disc labels are not in anatomical order along the cord (each disc must lie below "
            f"the previous one; arc from the inferior end): {listing}; check the disc values")
    return DiscPositions(values=values, arc_mm=arc, offset_mm=np.hypot(right, anterior))


@dataclass(frozen=True)
class VertebralDistribution:
    """Where each centerline sample lies relative to the discs.

    Attributes
    ----------
    upper_disc : (N,) int
        Value of the nearest present disc above each sample; 0 above the top disc.
    fraction : (N,) float64
        0 at ``upper_disc``, 1 at the next present disc below; NaN above the top disc and below
        the bottom disc.
    offset_mm : (N,) float64, mm
        Arc distance below ``upper_disc`` (positive caudally); for samples above the top disc,
        the (negative) distance below the top disc.
    """

    upper_disc: NDArray[np.int64]
    fraction: NDArray[np.float64]
    offset_mm: NDArray[np.float64]


def compute_vertebral_distribution(centerline: Centerline, discs: DiscPositions
                                   ) -> VertebralDistribution:
    """Level and relative position between its two discs of every centerline sample.

    Examples
    --------
    >>> from spinal_bidsapp.geometry.centerline import straight_centerline
    >>> cl = straight_centerline(np.zeros(3), 40.0, step_mm=10.0)
    >>> d = DiscPositions(np.array([3, 4]), np.array([30.0, 10.0]), np.zeros(2))
    >>> dist = compute_vertebral_distribution(cl, d)
    >>> dist.upper_disc.tolist(), dist.fraction.tolist()
    ([4, 4, 3, 3, 0], [nan, nan, 0.5, 0.0, nan])
    """
    keep = np.array([int(v) in _ORDER_RANK for v in discs.values])
    values, arcs = discs.values[keep], discs.arc_mm[keep]
    s = centerline.arc_mm
    # number of discs at or above each sample (arcs decrease along the array)
    n_above = np.searchsorted(-arcs, -s, side="right")
    upper = np.where(n_above > 0, values[np.maximum(n_above - 1, 0)], 0)
    offset = np.where(n_above > 0, arcs[np.maximum(n_above - 1, 0)] - s, arcs[0] - s)
    fraction = np.full(s.shape, np.nan)
    inside = (n_above > 0) & (n_above < len(arcs))
    lo = np.maximum(n_above - 1, 0)[inside]
    span = arcs[lo] - arcs[lo + 1]
    fraction[inside] = (arcs[lo] - s[inside]) / span
    return VertebralDistribution(upper_disc=upper.astype(np.int64), fraction=fraction,
                                 offset_mm=offset)


@dataclass(frozen=True)
class ArcMap:
    """Monotone piecewise-linear map between the arc lengths of two centerlines.

    Knots pair source and destination arc positions; between knots the arc-length fraction is
    preserved, beyond the end knots the mm offset is preserved (slope 1).

    Attributes
    ----------
    source_mm, dest_mm : (K,) float64, mm, strictly increasing, K >= 1
    """

    source_mm: NDArray[np.float64]
    dest_mm: NDArray[np.float64]

    def forward(self, arc_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Source arc -> destination arc.

        >>> m = ArcMap(np.array([0.0, 10.0]), np.array([5.0, 25.0]))
        >>> m.forward(np.array([-1.0, 5.0, 12.0]))
        array([ 4., 15., 27.])
        """
        return _piecewise(np.asarray(arc_mm, dtype=np.float64), self.source_mm, self.dest_mm)

    def inverse(self, arc_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Destination arc -> source arc."""
        return _piecewise(np.asarray(arc_mm, dtype=np.float64), self.dest_mm, self.source_mm)


def _piecewise(x: NDArray[np.float64], xk: NDArray[np.float64], yk: NDArray[np.float64]
               ) -> NDArray[np.float64]:
    y = np.interp(x, xk, yk)
    y = np.where(x < xk[0], yk[0] + (x - xk[0]), y)
    return np.where(x > xk[-1], yk[-1] + (x - xk[-1]), y)


def identity_arc_map(offset_mm: float = 0.0) -> ArcMap:
    """Destination arc = source arc + ``offset_mm``."""
    return ArcMap(source_mm=np.array([0.0]), dest_mm=np.array([float(offset_mm)]))


def arc_map_from_discs(source: DiscPositions, dest: DiscPositions) -> ArcMap:
    """Map matching each disc present in both sets; levels are stretched linearly.

    Discs are matched by value, so sets that start at different discs never shift by a level.
    A disc missing from one set (a gap) merges the two levels around it, over which the
    arc-length fraction is preserved. Above the top and below the bottom common disc the mm
    offset from that disc is kept.

    Raises
    ------
    InputDataError
        No disc value in common.

    Examples
    --------
    >>> src = DiscPositions(np.array([3, 4, 5]), np.array([40.0, 20.0, 0.0]), np.zeros(3))
    >>> dst = DiscPositions(np.array([2, 3, 5]), np.array([90.0, 80.0, 50.0]), np.zeros(3))
    >>> m = arc_map_from_discs(src, dst)
    >>> m.forward(np.array([40.0, 20.0, 0.0, 45.0])).tolist()
    [80.0, 65.0, 50.0, 85.0]
    """
    ranked_src = {int(v): float(a) for v, a in zip(source.values, source.arc_mm, strict=True)
                  if int(v) in _ORDER_RANK}
    ranked_dst = {int(v): float(a) for v, a in zip(dest.values, dest.arc_mm, strict=True)
                  if int(v) in _ORDER_RANK}
    common = sorted(set(ranked_src) & set(ranked_dst), key=lambda v: _ORDER_RANK[v], reverse=True)
    if not common:
        raise InputDataError(
            f"the input discs {sorted(ranked_src)} and destination discs {sorted(ranked_dst)} "
            "have no value in common; label at least one matching disc in both")
    src = np.array([ranked_src[v] for v in common])
    dst = np.array([ranked_dst[v] for v in common])
    logger.debug("disc matching on %s", common)
    return ArcMap(source_mm=src, dest_mm=dst)
