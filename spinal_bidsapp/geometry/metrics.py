"""Quality measures of a straightening: residual curvature and disc landing errors.

Shared by the tests, the ``spinal_bidsapp-straighten`` command and the benchmark, so all three
report the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.geometry.centerline import dominant_axis
from spinal_bidsapp.geometry.coordinates import locate_points
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field, transform_points
from spinal_bidsapp.geometry.straighten import Straightening


@dataclass(frozen=True)
class Straightness:
    """Distance of straightened mask centroids to their best-fit 3-D line.

    Attributes
    ----------
    rms_mm, max_mm : float, mm
    n_slices : int
        Slices used (non-empty straight slices minus the dropped end slices).
    """

    rms_mm: float
    max_mm: float
    n_slices: int


def line_residuals(points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Distances of points to their least-squares 3-D line (principal axis through the mean).

    Parameters
    ----------
    points_mm : (K, 3) float, mm, K >= 2

    Returns
    -------
    (K,) float64, mm

    Examples
    --------
    >>> line_residuals(np.array([[1.0, 0, 0], [-1, 0, 0], [0, 0, 5], [0, 0, -5]])).tolist()
    [1.0, 1.0, 0.0, 0.0]
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    centred = pts - pts.mean(axis=0)
    direction = np.linalg.svd(centred, full_matrices=False)[2][0]
    along = centred @ direction
    dist: NDArray[np.float64] = np.linalg.norm(centred - along[:, None] * direction, axis=1)
    return dist


def measure_straightness(mask: NDArray, mask_affine: NDArray[np.float64],
                         curve_to_straight: DisplacementField, *,
                         drop_slices: int = 2) -> Straightness:
    """Straightness of a cord mask after straightening.

    The mask is resampled into straight space (linear interpolation, threshold 0.5); the
    centroid (mm) of every non-empty straight slice along the superior-inferior axis is computed,
    ``drop_slices`` are dropped at each end, and the distance of each centroid to the best-fit
    3-D line is summarised.

    Parameters
    ----------
    mask : (nx, ny, nz) array
        Cord mask on the curved grid.
    mask_affine : (4, 4) float64
    curve_to_straight : DisplacementField
        Field on the straight grid pointing into the curved image.
    drop_slices : int
        Slices ignored at each end (partial-volume ends).
    """
    straight = apply_field(np.asarray(mask, dtype=np.float32), mask_affine, curve_to_straight,
                           order=1) > 0.5
    axis = dominant_axis(curve_to_straight.affine)
    moved = np.moveaxis(straight, axis, -1)
    cents = []
    for k in np.nonzero(moved.any(axis=(0, 1)))[0]:
        ij = np.argwhere(moved[:, :, k]).mean(axis=0)
        vox = np.insert(ij, axis, float(k))
        cents.append(curve_to_straight.affine[:3, :3] @ vox + curve_to_straight.affine[:3, 3])
    cents_arr = np.array(cents[drop_slices:len(cents) - drop_slices])
    if len(cents_arr) < 2:
        return Straightness(rms_mm=float("nan"), max_mm=float("nan"), n_slices=len(cents_arr))
    dist = line_residuals(cents_arr)
    return Straightness(rms_mm=float(np.sqrt(np.mean(dist**2))), max_mm=float(dist.max()),
                        n_slices=len(cents_arr))


@dataclass(frozen=True)
class DiscErrors:
    """Along-cord landing error of each common disc, through the written fields.

    Attributes
    ----------
    values : (D,) int
        Disc values present in both sets.
    forward_mm : (D,) float64, mm
        Input disc mapped with ``straight_to_curve`` into destination space: its arc on the
        destination centerline minus the destination disc's arc.
    backward_mm : (D,) float64, mm
        Destination disc mapped with ``curve_to_straight`` into the input image: its arc on the
        input centerline minus the input disc's arc.
    """

    values: NDArray[np.int64]
    forward_mm: NDArray[np.float64]
    backward_mm: NDArray[np.float64]


def measure_disc_errors(result: Straightening, input_discs: Mapping[int, NDArray],
                        dest_discs: Mapping[int, NDArray]) -> DiscErrors:
    """Signed along-cord disc errors in both directions (see :class:`DiscErrors`)."""
    values = np.array(sorted(set(input_discs) & set(dest_discs)), dtype=np.int64)
    src = np.array([input_discs[int(v)] for v in values], dtype=np.float64).reshape(-1, 3)
    dst = np.array([dest_discs[int(v)] for v in values], dtype=np.float64).reshape(-1, 3)
    if len(values) == 0:
        empty = np.zeros(0)
        return DiscErrors(values=values, forward_mm=empty, backward_mm=empty)
    fwd = transform_points(src, result.straight_to_curve)
    bwd = transform_points(dst, result.curve_to_straight)
    forward = locate_points(result.straight, fwd)[0] - locate_points(result.straight, dst)[0]
    backward = locate_points(result.curved, bwd)[0] - locate_points(result.curved, src)[0]
    return DiscErrors(values=values, forward_mm=forward, backward_mm=backward)


def mask_dice(a: NDArray, b: NDArray) -> float:
    """Dice overlap of two binary masks on one grid (0 when both are empty).

    >>> mask_dice(np.array([1, 1, 0], bool), np.array([1, 0, 0], bool))
    0.6666666666666666
    """
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return float(2 * (a & b).sum() / total) if total else 0.0
