"""Curved <-> straight cord mappings as displacement fields (SCT ``sct_straighten_spinalcord``).

Every voxel ``p`` of a grid on which a centerline ``S`` lives is written in cord coordinates
``(s, a, b)``: ``s`` the arc of its orthogonal foot point on the dense centerline (Newton
iterations on the interpolated curve, so nothing is quantised to slices), ``(a, b)`` its offsets
along the in-plane right and anterior axes there. It maps to ``T(sigma(s)) + a R_T + b A_T`` on the
other centerline ``T``, where ``sigma`` is an :class:`~spinal_bidsapp.geometry.discs.ArcMap`
(identity, or disc matching). Beyond the centerline ends both curves continue along their end
tangents, so every voxel gets a finite displacement (no -1e5 "no warp" markers).

Far from a strongly bent cord (further than its radius of curvature, on the concave side) the
orthogonal projection is not unique; the iteration then settles on the branch nearest the slice's
own crossing of the cord.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.geometry.centerline import (
    Centerline,
    centerline_from_points,
    sample_centerline,
    straight_centerline,
)
from spinal_bidsapp.geometry.coordinates import CordTable
from spinal_bidsapp.geometry.discs import (
    ArcMap,
    DiscPositions,
    arc_map_from_discs,
    identity_arc_map,
    project_discs,
)
from spinal_bidsapp.geometry.fields import DisplacementField, chunk_bounds, grid_points

logger = logging.getLogger(__name__)

DEFAULT_XY_SIZE_MM = 35.0
"""Half-width (mm) of the straight field of view, as SCT's ``-xy-size`` default."""

_NEWTON_ITERATIONS = 3


@dataclass(frozen=True)
class Straightening:
    """Both fields of a straightening and the geometry they were built from.

    Attributes
    ----------
    curve_to_straight : DisplacementField
        On the straight (or destination) grid, pointing into the curved image; apply it to the
        curved image to straighten it (SCT ``warp_curve2straight``).
    straight_to_curve : DisplacementField
        On the curved image grid, pointing into straight space (SCT ``warp_straight2curve``).
    curved, straight : Centerline
    arc_map : ArcMap
        Curved arc (mm) -> straight arc (mm).
    curved_discs, straight_discs : DiscPositions or None
    """

    curve_to_straight: DisplacementField
    straight_to_curve: DisplacementField
    curved: Centerline
    straight: Centerline
    arc_map: ArcMap
    curved_discs: DiscPositions | None = None
    straight_discs: DiscPositions | None = None


def _initial_arc(centerline: Centerline, points: NDArray[np.float64]) -> NDArray[np.float64]:
    """Arc where the plane through each (3, M) point, normal to the cord's axis, meets the cord."""
    axis = centerline.points_mm[-1] - centerline.points_mm[0]
    axis /= np.linalg.norm(axis)
    h = np.maximum.accumulate(centerline.points_mm @ axis)
    hp = axis @ points
    s = np.interp(hp, h, centerline.arc_mm)
    below, above = hp < h[0], hp > h[-1]
    s[below] = (hp[below] - h[0]) / max(float(centerline.tangents[0] @ axis), 0.1)
    s[above] = centerline.length_mm + (hp[above] - h[-1]) / max(
        float(centerline.tangents[-1] @ axis), 0.1)
    return s


def map_points_between(points_mm: NDArray[np.float64], source: Centerline, target: Centerline,
                       arc_to_target: ArcMap) -> NDArray[np.float64]:
    """Map world points through cord coordinates from ``source`` to ``target``.

    Parameters
    ----------
    points_mm : (M, 3) float, mm, world
    source, target : Centerline
    arc_to_target : ArcMap
        Source arc -> target arc.

    Returns
    -------
    (M, 3) float64, mm, world

    Examples
    --------
    >>> a = straight_centerline(np.zeros(3), 10.0)
    >>> b = straight_centerline(np.array([5.0, 0, 0]), 10.0)
    >>> map_points_between(np.array([[1.0, 2, -4]]), a, b, identity_arc_map()).round(6).tolist()
    [[6.0, 2.0, -4.0]]
    """
    pts = np.ascontiguousarray(np.atleast_2d(np.asarray(points_mm, dtype=np.float64)).T)
    out: NDArray[np.float64] = _map_points(pts, source, CordTable.build(source),
                                           CordTable.build(target), arc_to_target).T
    return out


def _map_points(points: NDArray[np.float64], source: Centerline, source_table: CordTable,
                target_table: CordTable, arc_to_target: ArcMap) -> NDArray[np.float64]:
    """(3, M) points -> (3, M) mapped points."""
    s, right, anterior = source_table.coords(points, _initial_arc(source, points),
                                             _NEWTON_ITERATIONS)
    return target_table.world(arc_to_target.forward(s), right, anterior)


def compute_displacement(shape: tuple[int, int, int], affine: NDArray[np.float64],
                         source: Centerline, target: Centerline, arc_to_target: ArcMap
                         ) -> DisplacementField:
    """Displacement field on a grid where ``source`` lives, pointing to ``target`` space.

    Processed in chunks of about 32k voxels: memory stays bounded and temporaries stay in cache.

    Parameters
    ----------
    shape : (3,) int
    affine : (4, 4) float64, voxel to world RAS+ mm
    source, target : Centerline
    arc_to_target : ArcMap

    Returns
    -------
    DisplacementField
        float32 RAS vectors ``u(p) = map(p) - p``.
    """
    out = np.empty((*shape, 3), dtype=np.float32)
    flat_out = out.reshape(-1, 3)
    source_table, target_table = CordTable.build(source), CordTable.build(target)
    for start, stop in chunk_bounds(shape):
        p = np.ascontiguousarray(grid_points(shape, affine, start, stop).T)
        q = _map_points(p, source, source_table, target_table, arc_to_target)
        q -= p
        flat_out[start:stop] = q.T
    return DisplacementField(data=out, affine=np.asarray(affine, dtype=np.float64))


def _world_axis_spacing(shape: tuple[int, int, int], affine: NDArray[np.float64]
                        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Voxel size and field-of-view length (mm) along world R, A, S (closest voxel axes)."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    zooms = np.linalg.norm(cols, axis=0)
    closest = np.argmax(np.abs(cols) / zooms, axis=1)
    return zooms[closest], zooms[closest] * np.asarray(shape, dtype=np.float64)[closest]


def straight_grid(centerline: Centerline, voxel_mm: NDArray[np.float64], *,
                  xy_size_mm: float | NDArray[np.float64] = DEFAULT_XY_SIZE_MM
                  ) -> tuple[tuple[int, int, int], NDArray[np.float64], Centerline]:
    """RAS grid holding a vertical line as long as the cord, centred on the cord's mid-point.

    Parameters
    ----------
    centerline : Centerline
    voxel_mm : (3,) float, mm
        Voxel size along R, A, S.
    xy_size_mm : float or (2,) float, mm
        Half-width of the in-plane field of view (one value, or one along R and one along A).

    Returns
    -------
    shape, affine, straight : tuple, (4, 4) float64, Centerline
        The straight centerline passes through voxel centres in-plane.
    """
    vox = np.asarray(voxel_mm, dtype=np.float64)
    length = centerline.length_mm
    mid = sample_centerline(centerline, np.array([length / 2]))[0][0]
    half_xy = np.maximum(np.rint(np.asarray(xy_size_mm) / vox[:2]).astype(int), 1)
    nz = int(np.ceil(length / vox[2] - 1e-6)) + 1
    shape = (int(2 * half_xy[0] + 1), int(2 * half_xy[1] + 1), nz)
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = [mid[0] - half_xy[0] * vox[0], mid[1] - half_xy[1] * vox[1],
                     mid[2] - (nz - 1) * vox[2] / 2]
    top = np.array([mid[0], mid[1], mid[2] + length / 2])
    straight = straight_centerline(top, length, step_mm=centerline.step_mm)
    return shape, affine, straight


def straighten_to_line(centerline: Centerline, curved_shape: tuple[int, int, int],
                       curved_affine: NDArray[np.float64], *,
                       xy_size_mm: float = DEFAULT_XY_SIZE_MM,
                       voxel_mm: NDArray[np.float64] | None = None) -> Straightening:
    """Straighten onto a vertical line of the cord's own arc length (SCT default mode).

    Parameters
    ----------
    centerline : Centerline
        Curved cord centerline (from :func:`centerline_from_mask`).
    curved_shape, curved_affine
        Grid of the curved image (where ``straight_to_curve`` lives).
    xy_size_mm : float, mm
        Half-width of the straight field of view, at most half the curved image's field of
        view along R and A (as SCT does: the field is not computed where there is no image).
    voxel_mm : (3,) float, mm, optional
        Straight voxel size along R, A, S; default: the curved image's spacing per world axis.
    """
    spacing, fov = _world_axis_spacing(curved_shape, curved_affine)
    vox = spacing if voxel_mm is None else np.asarray(voxel_mm, dtype=np.float64)
    half = np.minimum(float(xy_size_mm), fov[:2] / 2)
    shape, affine, straight = straight_grid(centerline, vox, xy_size_mm=half)
    arc_map = identity_arc_map()
    c2s = compute_displacement(shape, affine, straight, centerline, arc_map)
    s2c = compute_displacement(curved_shape, curved_affine, centerline, straight, arc_map)
    logger.debug("straightened %.1f mm of cord onto grid %s", centerline.length_mm, shape)
    return Straightening(curve_to_straight=c2s, straight_to_curve=s2c, curved=centerline,
                         straight=straight, arc_map=arc_map)


def _invert_map(arc_map: ArcMap) -> ArcMap:
    return ArcMap(source_mm=arc_map.dest_mm, dest_mm=arc_map.source_mm)


def straighten_to_centerline(centerline: Centerline, dest: Centerline | NDArray[np.float64],
                             curved_shape: tuple[int, int, int],
                             curved_affine: NDArray[np.float64],
                             dest_shape: tuple[int, int, int], dest_affine: NDArray[np.float64],
                             *, input_discs: Mapping[int, NDArray] | None = None,
                             dest_discs: Mapping[int, NDArray] | None = None) -> Straightening:
    """Map the cord onto a destination centerline (e.g. a template's), matching discs.

    Parameters
    ----------
    centerline : Centerline
        Curved (input) cord centerline.
    dest : Centerline or (K, 3) float, mm, world
        Destination centerline (it need not be straight), or ordered points along it, which
        are interpolated with :func:`centerline_from_points` (no smoothing).
    curved_shape, curved_affine
        Input image grid (``straight_to_curve`` lives there).
    dest_shape, dest_affine
        Destination grid (``curve_to_straight`` lives there).
    input_discs, dest_discs : mapping int -> (3,) mm, optional
        Disc positions (SCT numbering) in each space, from :func:`discs_from_label_array`.
        With both, every common disc lands on its destination disc, levels are stretched
        linearly, mm offsets are kept beyond the end discs. Without them, the arc-length
        fraction along the whole centerline is preserved.

    Raises
    ------
    InputDataError
        Discs out of anatomical order, or no disc in common.
    """
    if not isinstance(dest, Centerline):
        dest = centerline_from_points(np.asarray(dest, dtype=np.float64), smooth_mm=0.0,
                                      step_mm=centerline.step_mm)
    src_pos = dst_pos = None
    if input_discs and dest_discs:
        src_pos = project_discs(input_discs, centerline)
        dst_pos = project_discs(dest_discs, dest)
        arc_map = arc_map_from_discs(src_pos, dst_pos)
    else:
        arc_map = ArcMap(source_mm=np.array([0.0, centerline.length_mm]),
                         dest_mm=np.array([0.0, dest.length_mm]))
    c2s = compute_displacement(dest_shape, dest_affine, dest, centerline, _invert_map(arc_map))
    s2c = compute_displacement(curved_shape, curved_affine, centerline, dest, arc_map)
    return Straightening(curve_to_straight=c2s, straight_to_curve=s2c, curved=centerline,
                         straight=dest, arc_map=arc_map, curved_discs=src_pos,
                         straight_discs=dst_pos)
