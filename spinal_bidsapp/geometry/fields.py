"""Dense displacement fields in the ITK/ANTs convention, held in RAS+ inside the package.

A field lives on a reference grid and says where each reference point comes from:
``out(p) = in(p + u(p))`` (ANTs "pull" semantics). Inside the package ``u`` is stored as RAS+ mm
vectors; on disk (see :mod:`spinal_bidsapp.image`) it is a 5-D NIfTI ``(nx, ny, nz, 1, 3)``
float32 of LPS vectors ``(-ux, -uy, +uz)`` with intent ``vector`` (1007).

Interpolation follows ITK's resampler: a sample is valid when its continuous voxel index lies in
``[-0.5, n - 0.5]`` on every axis (neighbours clamped at the border), otherwise it gets ``cval``.

**No mapping.** A reference point the registration does not cover has the displacement NaN in
memory (on disk, ANTs's own float32-max, see :mod:`spinal_bidsapp.image`). NaN propagates: a
sample of a field next to such a point is NaN, a composed or inverted field is NaN there, a
resampled image gets ``cval``, a transformed point is NaN. Nothing falls back to the identity.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

logger = logging.getLogger(__name__)

_CHUNK_VOXELS = 1 << 15
RAS_TO_LPS = np.array([-1.0, -1.0, 1.0], dtype=np.float32)
"""Sign flips between the package's RAS+ vectors and ITK's LPS vectors (its own inverse)."""


@dataclass(frozen=True)
class DisplacementField:
    """Displacement vectors on a reference grid.

    Attributes
    ----------
    data : (nx, ny, nz, 3) float32, mm, RAS+
        ``u(p)``: the input-space point for reference point ``p`` is ``p + u(p)``.
    affine : (4, 4) float64
        Voxel to world (RAS+ mm) of the reference grid.
    """

    data: NDArray[np.float32]
    affine: NDArray[np.float64]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (int(self.data.shape[0]), int(self.data.shape[1]), int(self.data.shape[2]))


def field_from_itk_array(array: NDArray, affine: NDArray[np.float64]) -> DisplacementField:
    """``(nx, ny, nz, 1, 3)`` (or ``(nx, ny, nz, 3)``) LPS array -> RAS :class:`DisplacementField`.

    >>> field_from_itk_array(np.ones((1, 1, 1, 1, 3)), np.eye(4)).data.reshape(-1).tolist()
    [-1.0, -1.0, 1.0]
    """
    arr = np.asarray(array, dtype=np.float32)
    if arr.ndim == 5:
        arr = arr[:, :, :, 0, :]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"a displacement field must be (nx, ny, nz, 1, 3), got {array.shape}")
    return DisplacementField(data=arr * RAS_TO_LPS, affine=np.asarray(affine, dtype=np.float64))


def grid_points(shape: tuple[int, int, int], affine: NDArray[np.float64], start: int, stop: int
                ) -> NDArray[np.float64]:
    """World coordinates (mm) of the voxels with C-order flat indices ``start:stop``.

    Returns
    -------
    (stop - start, 3) float64, mm

    Examples
    --------
    >>> grid_points((2, 2, 2), np.diag([2.0, 1, 1, 1]), 5, 7).tolist()
    [[2.0, 0.0, 1.0], [2.0, 1.0, 0.0]]
    """
    flat = np.arange(start, stop)
    k = flat % shape[2]
    flat //= shape[2]
    j = flat % shape[1]
    i = flat // shape[1]
    aff = np.asarray(affine, dtype=np.float64)
    out = np.empty((stop - start, 3))
    for c in range(3):
        out[:, c] = aff[c, 0] * i + aff[c, 1] * j + aff[c, 2] * k + aff[c, 3]
    return out


def chunk_bounds(shape: tuple[int, int, int], chunk: int = _CHUNK_VOXELS) -> list[tuple[int, int]]:
    """Flat-index ranges of about ``chunk`` voxels: small enough to stay in cache.

    >>> chunk_bounds((2, 2, 3), chunk=5)
    [(0, 5), (5, 10), (10, 12)]
    """
    n = int(np.prod(shape))
    return [(k, min(k + chunk, n)) for k in range(0, n, chunk)]


def _to_voxels(affine: NDArray[np.float64], points: NDArray[np.float64]) -> NDArray[np.float64]:
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    return (points @ inv[:3, :3].T + inv[:3, 3]).T


def _sample(data: NDArray, vox: NDArray[np.float64], order: int, cval: float,
            prefiltered: bool) -> NDArray:
    shape = np.asarray(data.shape[:3])[:, None]
    outside = ~np.all((vox >= -0.5) & (vox <= shape - 0.5), axis=0)  # NaN (no mapping) too
    vox = np.where(outside, 0.0, vox)
    values = ndimage.map_coordinates(data, vox, order=order, mode="nearest",
                                     prefilter=not prefiltered and order > 1)
    values[outside] = cval
    return values


def _largest_change(new: NDArray[np.float64], old: NDArray[np.float64]) -> float:
    """Largest step of an iteration over the points that have a mapping (0 when none has)."""
    step = np.abs(new - old)
    step = step[np.isfinite(step)]
    return float(step.max(initial=0.0))


def subgrid_offset(shape: tuple[int, int, int], affine: NDArray[np.float64],
                   reference_shape: tuple[int, int, int],
                   reference_affine: NDArray[np.float64]) -> tuple[int, int, int]:
    """Voxel offset of a grid inside a reference grid it was cut from (same axes and spacing).

    Raises
    ------
    ValueError
        The grid is not a whole-voxel block of the reference grid.

    Examples
    --------
    >>> aff = np.diag([2.0, 2, 2, 1])
    >>> slab = aff.copy(); slab[2, 3] = 10.0
    >>> subgrid_offset((4, 4, 3), slab, (4, 4, 20), aff)
    (0, 0, 5)
    """
    ref = np.asarray(reference_affine, dtype=np.float64)
    aff = np.asarray(affine, dtype=np.float64)
    offset = np.linalg.solve(ref[:3, :3], aff[:3, 3] - ref[:3, 3])
    whole = np.rint(offset)
    stop = whole + np.asarray(shape)
    if (not np.allclose(aff[:3, :3], ref[:3, :3], atol=1e-5)
            or not np.allclose(offset, whole, atol=1e-3)
            or np.any(whole < 0) or np.any(stop > np.asarray(reference_shape))):
        raise ValueError(f"a {shape} grid is not a block of the {reference_shape} reference grid")
    return (int(whole[0]), int(whole[1]), int(whole[2]))


def sample_field(field: DisplacementField, points_mm: NDArray[np.float64]) -> NDArray[np.float64]:
    """Trilinear displacement at world points; outside the grid the border value is used.

    Returns
    -------
    (M, 3) float64, mm, RAS+
    """
    vox = _to_voxels(field.affine, np.atleast_2d(points_mm))
    return np.stack([ndimage.map_coordinates(field.data[..., c], vox, order=1, mode="nearest")
                     for c in range(3)], axis=1).astype(np.float64)


def apply_field(data: NDArray, data_affine: NDArray[np.float64], field: DisplacementField, *,
                order: int = 1, cval: float = 0.0) -> NDArray:
    """Resample a volume onto the field's grid: ``out(p) = in(p + u(p))``.

    Parameters
    ----------
    data : (nx, ny, nz) array
        Input volume, voxel to world ``data_affine``.
    field : DisplacementField
        Its grid defines the output grid.
    order : int
        Spline order: 0 nearest (labels), 1 linear, 3 cubic B-spline.

    Returns
    -------
    (field.shape) array, float32 (or ``data``'s dtype for ``order=0``)
    """
    src = np.asarray(data)
    out_dtype = src.dtype if order == 0 else np.float32
    if order > 1:
        coeffs = ndimage.spline_filter(src.astype(np.float64), order=order, mode="nearest")
    else:
        coeffs = src if order == 0 else src.astype(np.float32, copy=False)
    out = np.zeros(field.shape, dtype=out_dtype)
    flat_out = out.reshape(-1)
    flat_u = field.data.reshape(-1, 3)
    for start, stop in chunk_bounds(field.shape):
        p = grid_points(field.shape, field.affine, start, stop)
        p += flat_u[start:stop]
        flat_out[start:stop] = _sample(coeffs, _to_voxels(data_affine, p), order, cval,
                                       prefiltered=order > 1)
    return out


def transform_points(points_mm: NDArray[np.float64], field: DisplacementField
                     ) -> NDArray[np.float64]:
    """Reference-space points to input space: ``p + u(p)``.

    >>> f = DisplacementField(np.full((2, 2, 2, 3), 1.5, np.float32), np.eye(4))
    >>> transform_points(np.array([[0.5, 0.5, 0.5]]), f).tolist()
    [[2.0, 2.0, 2.0]]
    """
    pts = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    return pts + sample_field(field, pts)


def invert_points(points_mm: NDArray[np.float64], field: DisplacementField, *,
                  n_iter: int = 50, tol_mm: float = 1e-4) -> NDArray[np.float64]:
    """Input-space points to reference space: solve ``p + u(p) = x`` by fixed-point iteration.

    Returns
    -------
    (M, 3) float64, mm
    """
    x = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    p = x - sample_field(field, x)
    for _ in range(n_iter):
        p_new = x - sample_field(field, p)
        if _largest_change(p_new, p) < tol_mm:
            return p_new
        p = p_new
    return p


def apply_field_to_point_labels(labels: NDArray, labels_affine: NDArray[np.float64],
                                field: DisplacementField
                                ) -> tuple[NDArray, dict[int, NDArray[np.float64]]]:
    """Move point labels exactly (no resampling): each value's centroid is mapped, then voxelised.

    Returns
    -------
    labels_out : (field.shape) array, ``labels``' dtype
        One voxel per label value (nearest voxel of the mapped point); points outside are dropped.
    points_mm : dict int -> (3,) float64, mm
        Exact mapped position of every label value.
    """
    arr = np.asarray(labels)
    values = [v for v in np.unique(arr) if v != 0]
    out = np.zeros(field.shape, dtype=arr.dtype)
    if not values:
        return out, {}
    cents = ndimage.center_of_mass(np.ones(arr.shape), arr, values)
    vox = np.asarray(cents, dtype=np.float64).reshape(-1, 3)
    aff = np.asarray(labels_affine, dtype=np.float64)
    mapped = invert_points(vox @ aff[:3, :3].T + aff[:3, 3], field)
    continuous = _to_voxels(field.affine, mapped).T
    inside = np.all((continuous > -0.5) & (continuous < np.array(field.shape) - 0.5), axis=1)
    ijk = np.rint(np.where(inside[:, None], continuous, 0.0)).astype(int)
    for value, idx, ok in zip(values, ijk, inside, strict=True):
        if ok:
            out[tuple(idx)] = value
    return out, {int(v): m for v, m in zip(values, mapped, strict=True)}


def compose_fields(first: DisplacementField, second: DisplacementField) -> DisplacementField:
    """Field on ``first``'s grid applying ``first`` then ``second`` to reference points.

    ``first`` maps its grid into the space where ``second``'s grid lives; the result is
    ``u(p) = u1(p) + u2(p + u1(p))`` (ITK transform-list order: first listed, first applied).
    """
    out = np.empty(first.data.shape, dtype=np.float32)
    flat_out = out.reshape(-1, 3)
    flat_u = first.data.reshape(-1, 3)
    for start, stop in chunk_bounds(first.shape):
        p = grid_points(first.shape, first.affine, start, stop)
        u1 = flat_u[start:stop].astype(np.float64)
        flat_out[start:stop] = u1 + sample_field(second, p + u1)
    return DisplacementField(data=out, affine=first.affine)


def invert_field(field: DisplacementField, shape: tuple[int, int, int],
                 affine: NDArray[np.float64], *, n_iter: int = 30, tol_mm: float = 1e-3
                 ) -> DisplacementField:
    """Inverse field on another grid: ``v(q) = -u(q + v(q))`` by fixed-point iteration.

    Converges where the map is a contraction (displacement gradient norm below 1).

    Parameters
    ----------
    field : DisplacementField
        Maps its grid (reference) into the space of the new grid.
    shape, affine
        Grid of the inverse field (in the input space of ``field``).
    """
    out = np.empty((*shape, 3), dtype=np.float32)
    flat_out = out.reshape(-1, 3)
    for start, stop in chunk_bounds(shape):
        q = grid_points(shape, affine, start, stop)
        v = -sample_field(field, q)
        for _ in range(n_iter):
            v_new = -sample_field(field, q + v)
            done = _largest_change(v_new, v) < tol_mm
            v = v_new
            if done:
                break
        flat_out[start:stop] = v
    logger.debug("inverted field onto grid %s", shape)
    return DisplacementField(data=out, affine=np.asarray(affine, dtype=np.float64))
