"""Spinal cord centerline: a smooth curve densely sampled in arc length, with a moving frame.

Everything here is pure: arrays and affines in, arrays out. Coordinates are world RAS+ mm.

Notes
-----
The frame is **anterior-anchored** (as in SCT's ``types.Centerline``): at each point the
tangent ``T`` points superiorly, the anterior normal ``A`` is the world anterior axis with its
component along ``T`` removed, and the right normal is ``R = A x T``. ``(R, A, T)`` is
right-handed and equals ``(x, y, z)`` of RAS for a vertical cord, so in-plane coordinates keep a
fixed anatomical meaning and the frame never twists, whatever the curvature. Rotation-minimising
frames drift with torsion, which would rotate straightened cross-sections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.interpolate import BSpline, make_interp_spline, make_smoothing_spline

from spinal_bidsapp.errors import InputDataError

logger = logging.getLogger(__name__)

DEFAULT_SMOOTH_MM = 12.0
"""Default cut-off wavelength (mm) of the centerline smoothing spline. Chosen on sub-errsm30 and
curved tube phantoms (docs/benchmarks.md): longer cut-offs flatten real cervical bends."""
DEFAULT_STEP_MM = 0.25
"""Default arc-length spacing (mm) of the dense centerline samples."""

_ANTERIOR = np.array([0.0, 1.0, 0.0])
_RIGHT = np.array([1.0, 0.0, 0.0])


@dataclass(frozen=True)
class Centerline:
    """A cord centerline sampled every ``step_mm`` of arc length, inferior to superior.

    Attributes
    ----------
    points_mm : (N, 3) float64, mm, world RAS+
        Sample positions, ordered from the inferior to the superior end.
    arc_mm : (N,) float64, mm
        Arc length of each sample from the inferior end (``arc_mm[0] == 0``), uniform spacing.
    tangents : (N, 3) float64, unit
        Unit tangent, pointing superiorly along the cord.
    normals_right : (N, 3) float64, unit
        In-plane right axis ``A x T`` of the anterior-anchored frame.
    normals_anterior : (N, 3) float64, unit
        In-plane anterior axis: world +A made orthogonal to the tangent.
    """

    points_mm: NDArray[np.float64]
    arc_mm: NDArray[np.float64]
    tangents: NDArray[np.float64]
    normals_right: NDArray[np.float64]
    normals_anterior: NDArray[np.float64]

    @property
    def length_mm(self) -> float:
        return float(self.arc_mm[-1])

    @property
    def step_mm(self) -> float:
        return float(self.arc_mm[1] - self.arc_mm[0]) if len(self.arc_mm) > 1 else 0.0


def compute_frames(tangents: NDArray[np.float64]
                   ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Anterior-anchored in-plane axes for unit tangents.

    Parameters
    ----------
    tangents : (N, 3) float, unit

    Returns
    -------
    right, anterior : (N, 3) float64, unit

    Examples
    --------
    >>> r, a = compute_frames(np.array([[0.0, 0.0, 1.0]]))
    >>> r.round(6).tolist(), a.round(6).tolist()
    ([[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    """
    t = np.asarray(tangents, dtype=np.float64)
    anterior = _ANTERIOR - (t @ _ANTERIOR)[:, None] * t
    norm = np.linalg.norm(anterior, axis=1)
    bad = norm < 1e-6  # tangent along the anterior axis: anchor on +R instead
    if bad.any():
        right_alt = _RIGHT - (t[bad] @ _RIGHT)[:, None] * t[bad]
        right_alt /= np.linalg.norm(right_alt, axis=1, keepdims=True)
        anterior[bad] = np.cross(t[bad], right_alt)
        norm[bad] = np.linalg.norm(anterior[bad], axis=1)
    anterior /= norm[:, None]
    right: NDArray[np.float64] = np.cross(anterior, t)
    return right, anterior


def _fit_curve(param: NDArray[np.float64], points: NDArray[np.float64], smooth_mm: float
               ) -> tuple[BSpline, BSpline]:
    """Fit x, y, z as smooth functions of a monotone parameter; return value and derivative."""
    n = len(param)
    if n >= 5 and smooth_mm > 0:
        spacing = float(np.mean(np.diff(param)))
        lam = (smooth_mm / (2 * np.pi)) ** 4 / spacing
        parts = [make_smoothing_spline(param, points[:, k], lam=lam) for k in range(3)]
        spline = BSpline(parts[0].t, np.stack([p.c for p in parts], axis=1), parts[0].k)
    elif n >= 4:
        spline = make_interp_spline(param, points, k=3)
    else:
        spline = make_interp_spline(param, points, k=min(n - 1, 2) if n > 2 else 1)
    deriv = spline.derivative()
    return spline, deriv


def _resample_by_arc(spline: BSpline, deriv: BSpline, t0: float, t1: float,
                     step_mm: float) -> Centerline:
    """Evaluate a fitted curve at uniform arc-length steps between parameters t0 and t1."""
    fine = np.linspace(t0, t1, max(int(abs(t1 - t0) / (step_mm / 8)) + 2, 16))
    fine_pts = spline(fine)
    seg = np.linalg.norm(np.diff(fine_pts, axis=0), axis=1)
    arc_fine = np.concatenate([[0.0], np.cumsum(seg)])
    length = float(arc_fine[-1])
    if length <= 0:
        raise InputDataError("the centerline has zero length (all points coincide)")
    n = max(int(np.ceil(length / step_mm)) + 1, 2)
    arc = np.linspace(0.0, length, n)
    t = np.interp(arc, arc_fine, fine)
    pts = spline(t)
    tang = deriv(t)
    tang /= np.linalg.norm(tang, axis=1, keepdims=True)
    if pts[-1, 2] < pts[0, 2]:  # orient inferior -> superior
        pts, tang = pts[::-1].copy(), -tang[::-1]
    right, anterior = compute_frames(tang)
    return Centerline(points_mm=pts, arc_mm=arc, tangents=tang, normals_right=right,
                      normals_anterior=anterior)


def dominant_axis(affine: NDArray[np.float64]) -> int:
    """Voxel axis whose direction is closest to world superior-inferior.

    >>> dominant_axis(np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]]))
    1
    """
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    cosines = np.abs(cols[2]) / np.linalg.norm(cols, axis=0)
    return int(np.argmax(cosines))


def slice_centroids(mask: NDArray, affine: NDArray[np.float64]
                    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Centroid (mm) of the mask in every slice along the dominant superior-inferior voxel axis.

    Parameters
    ----------
    mask : (nx, ny, nz) array
        Binary or soft mask; voxels > 0.5 count (unweighted, as SCT does).
    affine : (4, 4) float, voxel to world RAS+ mm

    Returns
    -------
    slice_mm : (K,) float64, mm
        Position of each non-empty slice along the axis (slice index times spacing).
    centroids_mm : (K, 3) float64, mm, world
    """
    binary = np.asarray(mask) > 0.5
    if binary.ndim != 3:
        raise InputDataError(f"a 3-D cord mask is required, got shape {binary.shape}")
    if not binary.any():
        raise InputDataError(
            "the cord mask is empty (no voxel above 0.5); provide a non-empty spinal cord "
            "segmentation or centerline image")
    axis = dominant_axis(affine)
    moved = np.moveaxis(binary, axis, -1)
    counts = moved.sum(axis=(0, 1))
    keep = np.nonzero(counts)[0]
    idx0 = np.arange(moved.shape[0], dtype=np.float64)
    idx1 = np.arange(moved.shape[1], dtype=np.float64)
    c0 = np.einsum("ijk,i->k", moved[..., keep], idx0) / counts[keep]
    c1 = np.einsum("ijk,j->k", moved[..., keep], idx1) / counts[keep]
    vox = np.empty((len(keep), 3))
    order = [a for a in range(3) if a != axis]
    vox[:, order[0]] = c0
    vox[:, order[1]] = c1
    vox[:, axis] = keep
    aff = np.asarray(affine, dtype=np.float64)
    cents: NDArray[np.float64] = vox @ aff[:3, :3].T + aff[:3, 3]
    spacing = float(np.linalg.norm(aff[:3, axis]))
    return keep.astype(np.float64) * spacing, cents


def centerline_from_mask(mask: NDArray, affine: NDArray[np.float64], *,
                         smooth_mm: float = DEFAULT_SMOOTH_MM,
                         step_mm: float = DEFAULT_STEP_MM) -> Centerline:
    """Fit a dense centerline through the per-slice centroids of a cord mask.

    Parameters
    ----------
    mask : (nx, ny, nz) array
        Cord segmentation or centerline label (voxels > 0.5), any storage orientation.
    affine : (4, 4) float, voxel to world RAS+ mm
    smooth_mm : float, mm
        Cut-off wavelength of the smoothing spline: bends shorter than this are smoothed away
        (half-power point of the equivalent filter). ``0`` interpolates the centroids.
    step_mm : float, mm
        Arc-length spacing of the returned samples.

    Returns
    -------
    Centerline

    Raises
    ------
    InputDataError
        The mask is empty or covers a single slice.

    Examples
    --------
    >>> m = np.zeros((9, 9, 20)); m[3:6, 3:6, 2:18] = 1
    >>> cl = centerline_from_mask(m, np.eye(4), smooth_mm=10)
    >>> round(cl.length_mm, 3), cl.points_mm[0].round(3).tolist()
    (15.0, [4.0, 4.0, 2.0])
    """
    slice_mm, cents = slice_centroids(mask, affine)
    if len(slice_mm) < 2:
        raise InputDataError(
            f"the cord mask covers a single slice along its superior-inferior axis "
            f"({len(slice_mm)}); a centerline needs at least 2 slices")
    spline, deriv = _fit_curve(slice_mm, cents, smooth_mm)
    logger.debug("centerline from %d slice centroids, smooth %.1f mm", len(slice_mm), smooth_mm)
    return _resample_by_arc(spline, deriv, float(slice_mm[0]), float(slice_mm[-1]), step_mm)


def centerline_from_points(points_mm: NDArray[np.float64], *,
                           smooth_mm: float = DEFAULT_SMOOTH_MM,
                           step_mm: float = DEFAULT_STEP_MM) -> Centerline:
    """Fit a dense centerline through ordered points (either end first).

    Parameters
    ----------
    points_mm : (K, 3) float, mm, world RAS+
        Points ordered along the cord, K >= 2.
    smooth_mm, step_mm : float, mm
        As in :func:`centerline_from_mask`.

    Examples
    --------
    >>> cl = centerline_from_points(np.array([[0, 0, 10.0], [0, 0, 0], [0, 0, -10]]), smooth_mm=0)
    >>> round(cl.length_mm, 6), (cl.tangents[0] + 0.0).round(6).tolist()
    (20.0, [0.0, 0.0, 1.0])
    """
    pts = np.asarray(points_mm, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 3 or len(pts) < 2:
        raise InputDataError(
            f"centerline points must be (K>=2, 3) mm coordinates, got {pts.shape}")
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])
    pts = pts[keep]
    if len(pts) < 2:
        raise InputDataError("centerline points all coincide")
    param = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    spline, deriv = _fit_curve(param, pts, smooth_mm)
    return _resample_by_arc(spline, deriv, 0.0, float(param[-1]), step_mm)


def straight_centerline(top_mm: NDArray[np.float64], length_mm: float, *,
                        step_mm: float = DEFAULT_STEP_MM) -> Centerline:
    """A vertical (world +S) centerline of ``length_mm`` ending at ``top_mm``.

    >>> cl = straight_centerline(np.array([1.0, 2.0, 3.0]), 2.0, step_mm=1.0)
    >>> cl.points_mm.tolist()
    [[1.0, 2.0, 1.0], [1.0, 2.0, 2.0], [1.0, 2.0, 3.0]]
    """
    n = max(int(np.ceil(length_mm / step_mm)) + 1, 2)
    arc = np.linspace(0.0, float(length_mm), n)
    pts = np.repeat(np.asarray(top_mm, dtype=np.float64)[None], n, axis=0)
    pts[:, 2] += arc - length_mm
    tang = np.tile([0.0, 0.0, 1.0], (n, 1))
    right, anterior = compute_frames(tang)
    return Centerline(points_mm=pts, arc_mm=arc, tangents=tang, normals_right=right,
                      normals_anterior=anterior)


def sample_centerline(centerline: Centerline, arc_mm: NDArray[np.float64]
                      ) -> tuple[NDArray[np.float64], ...]:
    """Position and frame at arbitrary arc positions (linear between samples, straight beyond).

    Parameters
    ----------
    centerline : Centerline
    arc_mm : (M,) float, mm

    Returns
    -------
    points, tangents, right, anterior : (M, 3) float64
        Beyond the ends the curve continues along the end tangent with the end frame.
    """
    s = np.asarray(arc_mm, dtype=np.float64)
    n = len(centerline.arc_mm)
    step = centerline.step_mm
    pos = np.clip(s / step, 0.0, n - 1.0)
    i0 = np.minimum(pos.astype(np.intp), n - 2)
    f = (pos - i0)[:, None]

    def lerp(a: NDArray[np.float64]) -> NDArray[np.float64]:
        return a[i0] * (1.0 - f) + a[i0 + 1] * f

    tang = lerp(centerline.tangents)
    pts = lerp(centerline.points_mm)
    beyond = (s - np.clip(s, 0.0, centerline.length_mm))[:, None]
    pts = pts + beyond * tang
    return pts, tang, lerp(centerline.normals_right), lerp(centerline.normals_anterior)
