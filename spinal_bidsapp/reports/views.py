"""Pure data preparation for QC figures: slices, crops, outlines, boxes and disc names.

Nothing here draws or touches files; :mod:`spinal_bidsapp.reports.figures` and
:mod:`spinal_bidsapp.reports.label_figures` turn the results into PNGs. Every function takes
volumes already reoriented to RAS (:func:`spinal_bidsapp.image.reorient`) unless it says
otherwise.

Display convention, shared by all figures:

- sagittal panels: superior up, **anterior on the left**;
- axial panels: anterior up, patient right on the left (radiological);
- panel coordinates ``(x, y)`` are mm from the bottom-left corner of the panel, so pixels keep
  their true physical aspect whatever the voxel size.

Volumes are reoriented by permuting and flipping axes only (no resampling): an oblique
acquisition is shown on its own voxel grid, along the RAS axes closest to it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from spinal_bidsapp.geometry.discs import DISC_NAMES, VERTEBRA_NAMES
from spinal_bidsapp.image import Affine, Volume, mm_to_vox, vox_to_mm

_SHORT_NAMES = {1: "C1", 49: "PMG", 50: "PMJ", 60: "conus"}
"""Figure labels of the landmarks whose :data:`DISC_NAMES` entry is a phrase."""


def vertebra_name(value: int) -> str:
    """Name of vertebra ``value`` in SCT numbering (C1 = 1 … C7 = 7, T1 = 8 … L5 = 24, Co = 30).

    >>> vertebra_name(3), vertebra_name(8), vertebra_name(20), vertebra_name(30)
    ('C3', 'T1', 'L1', 'Co')
    """
    if value not in VERTEBRA_NAMES:
        raise ValueError(f"no vertebra has SCT number {value} (valid: 1-30)")
    return VERTEBRA_NAMES[value]


def disc_name(value: int) -> str:
    """Short figure label of the disc label ``value`` (SCT numbering: value N is the disc above
    vertebra N).

    Unknown values get a neutral ``"label N"`` so a figure never fails on an unexpected label.

    >>> [disc_name(v) for v in (1, 2, 3, 8, 9, 20, 25)]
    ['C1', 'C1/C2', 'C2/C3', 'C7/T1', 'T1/T2', 'T12/L1', 'L5/S1']
    >>> [disc_name(v) for v in (30, 49, 50, 60, 77)]
    ['S5/Co', 'PMG', 'PMJ', 'conus', 'label 77']
    """
    return _SHORT_NAMES.get(value) or DISC_NAMES.get(value, f"label {value}")


def label_name(value: int) -> str:
    """:func:`vertebra_name`, or a neutral ``"label N"`` for values outside the spine (1-30).

    >>> label_name(8), label_name(41)
    ('T1', 'label 41')
    """
    return vertebra_name(value) if 1 <= value <= 30 else f"label {value}"


def label_centres(labels: NDArray) -> dict[int, NDArray[np.float64]]:
    """Centroid (voxel indices, (3,) float) of every positive integer value of a label array.

    >>> m = np.zeros((1, 1, 6), np.uint8); m[0, 0, 1:3] = 4; m[0, 0, 5] = 2
    >>> {v: c.tolist() for v, c in label_centres(m).items()}
    {2: [0.0, 0.0, 5.0], 4: [0.0, 0.0, 1.5]}
    """
    data = np.rint(np.asarray(labels)).astype(np.int64)
    return {int(v): np.argwhere(data == v).mean(axis=0) for v in np.unique(data[data > 0])}


@dataclass(frozen=True)
class DiscPoint:
    """One disc label: SCT value, name, voxel position (RAS grid) and world position."""

    value: int
    name: str
    ijk: NDArray[np.float64]
    """(3,) float, voxel indices in the RAS-reoriented grid (centroid when several voxels)."""
    xyz_mm: NDArray[np.float64]
    """(3,) float, mm, world RAS+."""


def find_disc_points(labels: Volume) -> list[DiscPoint]:
    """Disc labels of a RAS label volume, superior first (centroid per label value)."""
    data = np.rint(labels.data).astype(np.int64)
    points = []
    for value in np.unique(data[data > 0]):
        ijk = np.argwhere(data == value).mean(axis=0)
        xyz = vox_to_mm(labels.affine, ijk[None])[0]
        points.append(DiscPoint(int(value), disc_name(int(value)), ijk, xyz))
    return sorted(points, key=lambda p: -p.xyz_mm[2])


@dataclass(frozen=True)
class Band:
    """A vertebral band between two discs along the cord, ``lo_mm < hi_mm``."""

    name: str
    lo_mm: float
    hi_mm: float


def vertebra_bands(discs: Sequence[tuple[int, float]]) -> list[Band]:
    """Vertebral bands between consecutive discs.

    Parameters
    ----------
    discs
        ``(value, position_mm)`` pairs: SCT disc value and position along the cord axis, mm
        (any monotonic axis, e.g. the superior coordinate). Values outside 1-30 are ignored.

    Returns
    -------
    list of Band
        One band per pair of consecutive discs, named after the vertebra between them
        (``"C3"``), or a range (``"C3-C4"``) when a disc in between is missing.

    >>> [(b.name, b.lo_mm, b.hi_mm) for b in vertebra_bands([(3, 50.0), (4, 35.0), (6, 5.0)])]
    [('C3', 35.0, 50.0), ('C4-C5', 5.0, 35.0)]
    """
    spine = sorted((int(v), float(p)) for v, p in discs if 1 <= v <= 30)
    bands = []
    for (upper, pos_upper), (lower, pos_lower) in itertools.pairwise(spine):
        if lower == upper + 1:
            name = vertebra_name(upper)
        else:
            name = f"{vertebra_name(upper)}-{vertebra_name(lower - 1)}"
        bands.append(Band(name, min(pos_upper, pos_lower), max(pos_upper, pos_lower)))
    return bands


def spread_labels(positions: ArrayLike, *, min_gap: float,
                  lower: float | None = None) -> NDArray[np.float64]:
    """Move label heights apart by at least ``min_gap``, keeping their top-to-bottom order.

    Labels only move down (then up again if pushed below ``lower``), so well-spaced labels stay
    exactly at their points. Returned in the input order.

    >>> spread_labels([10.0, 9.5, 3.0], min_gap=1.0).tolist()
    [10.0, 9.0, 3.0]
    >>> spread_labels([1.0, 0.8], min_gap=1.0, lower=0.5).tolist()
    [1.5, 0.5]
    """
    y = np.asarray(positions, dtype=np.float64)
    order = np.argsort(-y, kind="stable")
    placed = y[order].copy()
    for n in range(1, placed.size):
        placed[n] = min(placed[n], placed[n - 1] - min_gap)
    if lower is not None and placed.size and placed[-1] < lower:
        placed[-1] = lower
        for n in range(placed.size - 2, -1, -1):
            placed[n] = max(placed[n], placed[n + 1] + min_gap)
    out = np.empty_like(placed)
    out[order] = placed
    return out


@dataclass(frozen=True)
class BoxMM:
    """Axis-aligned box in world RAS+ mm: ``lo`` and ``hi`` are (3,) corners, ``lo <= hi``."""

    lo: NDArray[np.float64]
    hi: NDArray[np.float64]

    @classmethod
    def from_voxel_bounds(cls, affine: Affine, start: Sequence[int], stop: Sequence[int]) -> BoxMM:
        """World box covering voxels ``start <= ijk < stop`` (a crop given as index ranges).

        >>> box = BoxMM.from_voxel_bounds(np.diag([2.0, 2.0, 2.0, 1.0]), (0, 0, 0), (2, 3, 4))
        >>> box.lo.tolist(), box.hi.tolist()
        ([-1.0, -1.0, -1.0], [3.0, 5.0, 7.0])
        """
        edges = [(s - 0.5, e - 0.5) for s, e in zip(start, stop, strict=True)]
        corners = np.array(np.meshgrid(*edges, indexing="ij")).reshape(3, -1).T
        xyz = vox_to_mm(affine, corners)
        return cls(xyz.min(axis=0), xyz.max(axis=0))


@dataclass(frozen=True)
class Panel:
    """A 2-D slice ready to draw, with the mapping from RAS voxel indices to panel mm.

    Rows run along ``row_axis`` and columns along ``col_axis`` of the RAS grid, both in
    *decreasing* index order (superior or anterior at the top; anterior or patient-right on
    the left). ``row_range``/``col_range`` are the ``[start, stop)`` index ranges shown; they may
    extend past the volume, where the image is zero-padded.
    """

    image: NDArray[np.float32]
    """(rows, cols) float, intensities."""
    mask: NDArray[np.bool_] | None
    """(rows, cols) bool, cord mask on the same pixels, or None."""
    row_axis: int
    col_axis: int
    row_range: tuple[int, int]
    col_range: tuple[int, int]
    pixel_mm: tuple[float, float]
    """(row height, column width), mm."""
    letters: tuple[str, str, str, str]
    """Orientation letters at the (left, right, top, bottom) edges."""

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top), mm: the ``extent`` of ``imshow(origin='upper')``."""
        rows, cols = self.image.shape
        return (0.0, cols * self.pixel_mm[1], 0.0, rows * self.pixel_mm[0])

    def vox_to_xy(self, ijk: NDArray) -> NDArray[np.float64]:
        """RAS voxel indices (N, 3) to panel coordinates (N, 2), mm; off-plane axis ignored.

        >>> p = Panel(np.zeros((4, 3), np.float32), None, 2, 1, (0, 4), (0, 3), (1.0, 2.0),
        ...           ("A", "P", "S", "I"))
        >>> p.vox_to_xy(np.array([[0, 2, 3]])).tolist()  # most anterior column, top row
        [[1.0, 3.5]]
        """
        ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
        col = (self.col_range[1] - 1) - ijk[:, self.col_axis]
        row = (self.row_range[1] - 1) - ijk[:, self.row_axis]
        height = self.image.shape[0] * self.pixel_mm[0]
        return np.stack([(col + 0.5) * self.pixel_mm[1], height - (row + 0.5) * self.pixel_mm[0]],
                        axis=1)

    def box_to_rect(self, box: BoxMM, affine: Affine) -> tuple[float, float, float, float]:
        """Projection of a world box on the panel: ``(x, y, width, height)``, mm."""
        edges = np.array(np.meshgrid(*zip(box.lo, box.hi, strict=True), indexing="ij"))
        ijk = mm_to_vox(affine, edges.reshape(3, -1).T)
        xy = self.vox_to_xy(ijk)
        # the map is affine, so box edges (half a voxel past the centres) land on pixel edges
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        return (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))


_LETTERS = {0: ("R", "L"), 1: ("A", "P"), 2: ("S", "I")}


def _extract(data: NDArray, axis: int, index: int, row_axis: int, col_axis: int,
             row_range: tuple[int, int], col_range: tuple[int, int]) -> NDArray:
    """Zero-padded 2-D cut, rows/cols in decreasing index order."""
    plane = np.take(data, index, axis=axis)
    # after np.take the remaining axes keep their relative order
    remaining = [a for a in range(3) if a != axis]
    if remaining.index(row_axis) != 0:
        plane = plane.T
    out = np.zeros((row_range[1] - row_range[0], col_range[1] - col_range[0]), dtype=plane.dtype)
    r0, r1 = max(row_range[0], 0), min(row_range[1], plane.shape[0])
    c0, c1 = max(col_range[0], 0), min(col_range[1], plane.shape[1])
    if r1 > r0 and c1 > c0:
        out[r0 - row_range[0]:r1 - row_range[0], c0 - col_range[0]:c1 - col_range[0]] = \
            plane[r0:r1, c0:c1]
    return out[::-1, ::-1]


def make_panel(image: Volume, mask: Volume | None, *, axis: int, index: int,
               row_range: tuple[int, int] | None = None,
               col_range: tuple[int, int] | None = None) -> Panel:
    """Cut a RAS volume (and its mask) perpendicular to ``axis`` at voxel ``index``.

    ``axis`` 0 gives a sagittal panel (rows S, columns A), 2 an axial one (rows A, columns R).
    """
    row_axis, col_axis = {0: (2, 1), 1: (2, 0), 2: (1, 0)}[axis]
    shape = image.shape
    row_range = row_range or (0, shape[row_axis])
    col_range = col_range or (0, shape[col_axis])
    cut = _extract(image.data, axis, index, row_axis, col_axis, row_range, col_range)
    mask_cut = None
    if mask is not None:
        mask_cut = _extract(mask.data > 0, axis, index, row_axis, col_axis, row_range, col_range)
    zooms = image.zooms
    return Panel(
        image=cut.astype(np.float32), mask=mask_cut, row_axis=row_axis, col_axis=col_axis,
        row_range=row_range, col_range=col_range,
        pixel_mm=(float(zooms[row_axis]), float(zooms[col_axis])),
        letters=(_LETTERS[col_axis][0], _LETTERS[col_axis][1], _LETTERS[row_axis][0],
                 _LETTERS[row_axis][1]),
    )


def make_cord_coronal(image: Volume, mask: Volume | None, *, depth: NDArray[np.integer],
                      row_range: tuple[int, int] | None = None,
                      col_range: tuple[int, int] | None = None) -> Panel:
    """Coronal panel (rows S, columns R) that follows the cord: row ``k`` is cut at A index
    ``depth[k]`` (see :func:`cord_depth`), so a curved cord stays in view along its length.

    Voxels are picked, not resampled; the panel's off-plane axis is A (1).
    """
    k = np.arange(image.shape[2])
    depth = np.clip(np.asarray(depth, dtype=np.int64), 0, image.shape[1] - 1)
    curved = Volume(image.data[:, depth, k][:, None, :], image.affine)
    curved_mask = None if mask is None else Volume(mask.data[:, depth, k][:, None, :],
                                                   mask.affine)
    return make_panel(curved, curved_mask, axis=1, index=0, row_range=row_range,
                      col_range=col_range)


def cord_depth(mask: Volume | None, shape: tuple[int, int, int]) -> NDArray[np.int64]:
    """A index of the cord centre for every S index (RAS grid), for :func:`make_cord_coronal`.

    Slices without cord take the value of the nearest slice with cord; without any cord the
    middle of the A axis is used everywhere.

    >>> m = np.zeros((3, 9, 5), np.uint8); m[1, 2, 1] = 1; m[1, 6:9, 3] = 1
    >>> cord_depth(Volume(m, np.eye(4)), m.shape).tolist()
    [2, 2, 2, 7, 7]
    """
    if mask is None or not np.any(mask.data > 0):
        return np.full(shape[2], shape[1] // 2, dtype=np.int64)
    inside = mask.data > 0
    count = inside.sum(axis=(0, 1))
    a = np.arange(shape[1])[None, :, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = (inside * a).sum(axis=(0, 1)) / count
    has = np.flatnonzero(count > 0)
    nearest = has[np.abs(np.arange(shape[2])[:, None] - has[None, :]).argmin(axis=1)]
    return np.floor(centre[nearest] + 0.5).astype(np.int64)


def slab_projection(labels: Volume, panel: Panel, slab: tuple[int, int]) -> NDArray[np.int64]:
    """Maximum of a label volume over ``slab`` (``[start, stop)`` indices along the panel's
    off-plane axis), on the panel's pixels: (rows, cols) int, 0 where there is no label.

    A label off the displayed slice but inside the slab is projected onto it.
    """
    axis = 3 - panel.row_axis - panel.col_axis
    lo, hi = max(slab[0], 0), min(slab[1], labels.shape[axis])
    data = np.rint(labels.data).astype(np.int64)
    if hi <= lo:
        projected = np.zeros_like(np.take(data, [0], axis=axis))
    else:
        projected = np.take(data, np.arange(lo, hi), axis=axis).max(axis=axis, keepdims=True)
    return _extract(projected, axis, 0, panel.row_axis, panel.col_axis, panel.row_range,
                    panel.col_range)


def midcord_index(mask: Volume | None, shape: tuple[int, int, int]) -> int:
    """Sagittal (R axis) index through the middle of the cord: median R index of mask voxels.

    Falls back to the middle of the volume when there is no mask or it is empty.
    """
    if mask is None or not np.any(mask.data > 0):
        return shape[0] // 2
    i = np.nonzero(mask.data > 0)[0]
    return int(np.floor(np.median(i) + 0.5))


def choose_axial_slices(mask: Volume, count: int) -> list[int]:
    """``count`` axial (S) indices spread evenly over the cord, superior first.

    Each slice is the centre of one of ``count`` equal bins between the first and last slice
    holding cord; a centre without cord moves to the nearest slice that has some.

    >>> m = np.zeros((3, 3, 20), np.uint8); m[1, 1, 4:16] = 1
    >>> choose_axial_slices(Volume(m, np.eye(4)), 3)
    [14, 10, 6]
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    has_cord = np.flatnonzero((mask.data > 0).any(axis=(0, 1)))
    if has_cord.size == 0:
        return []
    lo, hi = int(has_cord[0]), int(has_cord[-1])
    span = hi - lo + 1
    centres = lo + np.floor((np.arange(count) + 0.5) * span / count).astype(int)
    picked = {int(has_cord[np.argmin(np.abs(has_cord - c))]) for c in centres}
    return sorted(picked, reverse=True)


def axial_crop(mask: Volume, index: int, *, half_width_mm: float
               ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Row (A) and column (R) index ranges of a square crop centred on the cord in slice ``index``.

    Returns ``(row_range, col_range)`` for :func:`make_panel`; ranges may pass the volume edge.
    """
    zooms = mask.zooms
    plane = mask.data[:, :, index] > 0
    if plane.any():
        centre_i, centre_j = np.argwhere(plane).mean(axis=0)
    else:
        centre_i, centre_j = (plane.shape[0] - 1) / 2, (plane.shape[1] - 1) / 2
    half_i = max(1, round(float(half_width_mm / zooms[0])))
    half_j = max(1, round(float(half_width_mm / zooms[1])))
    ci, cj = round(float(centre_i)), round(float(centre_j))
    return (cj - half_j, cj + half_j + 1), (ci - half_i, ci + half_i + 1)


def outline_segments(mask: NDArray[np.bool_], pixel_mm: tuple[float, float]
                     ) -> NDArray[np.float64]:
    """Pixel-edge outline of a 2-D mask as line segments in panel mm.

    Parameters
    ----------
    mask
        (rows, cols) bool, row 0 at the top.
    pixel_mm
        (row height, column width), mm.

    Returns
    -------
    (N, 2, 2) float, mm
        Segments ``[[x0, y0], [x1, y1]]`` along every edge between a mask and a non-mask pixel
        (outside the array counts as non-mask), so the outline shows the exact voxels.

    >>> outline_segments(np.ones((1, 1), bool), (1.0, 1.0)).shape  # a single pixel: 4 edges
    (4, 2, 2)
    """
    padded = np.pad(np.asarray(mask, dtype=bool), 1)
    rows = padded.shape[0] - 2
    h, w = pixel_mm
    # vertical edges: between columns c-1 and c (padded index), at x = (c-1) * w
    r, c = np.nonzero(padded[1:-1, 1:] != padded[1:-1, :-1])
    x = c * w
    y_top = (rows - r) * h
    vertical = np.stack([np.stack([x, y_top], 1), np.stack([x, y_top - h], 1)], 1)
    # horizontal edges: between rows r-1 and r (padded index), at y = (rows - r) * h
    r, c = np.nonzero(padded[1:, 1:-1] != padded[:-1, 1:-1])
    y = (rows - r) * h
    horizontal = np.stack([np.stack([c * w, y], 1), np.stack([(c + 1) * w, y], 1)], 1)
    return np.concatenate([vertical, horizontal]).astype(np.float64)


def intensity_window(values: NDArray, *, percentiles: tuple[float, float] = (1.0, 99.5)
                     ) -> tuple[float, float]:
    """Display range from the percentiles of the non-zero values (robust to padding and spikes).

    >>> intensity_window(np.arange(101.0), percentiles=(0.0, 100.0))
    (1.0, 100.0)
    """
    finite = values[np.isfinite(values) & (values != 0)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, percentiles)
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def normalize(image: NDArray, window: tuple[float, float]) -> NDArray[np.float32]:
    """Scale ``image`` to [0, 1] within ``window`` (clipped)."""
    lo, hi = window
    return np.clip((np.asarray(image, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def checkerboard(a: NDArray, b: NDArray, *, tiles: int = 8) -> NDArray:
    """Interleave two same-shape 2-D images in a ``tiles`` x ``tiles``-ish checkerboard.

    Tile size is taken from the shorter side so tiles are square in pixels; the top-left tile
    comes from ``a``.

    >>> checkerboard(np.zeros((4, 4)), np.ones((4, 4)), tiles=2).astype(int).tolist()
    [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    """
    if a.shape != b.shape:
        raise ValueError(f"checkerboard needs equal shapes, got {a.shape} and {b.shape}")
    size = max(1, min(a.shape) // tiles)
    rows = np.arange(a.shape[0])[:, None] // size
    cols = np.arange(a.shape[1])[None, :] // size
    return np.where((rows + cols) % 2 == 0, a, b)
