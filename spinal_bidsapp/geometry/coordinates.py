"""Cord coordinates: foot point on a centerline (arc) and in-plane offsets, and back.

The hot path of straightening: millions of points per field. A :class:`CordTable` holds, for
every dense centerline sample, the position, tangent, frame and their arc derivatives as
contiguous rows, so each Newton step and each mapping is a handful of 1-D gathers and products
(first-order Taylor expansion around the nearest sample: not quantised to the sample spacing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.geometry.centerline import Centerline


def _initial_arc_bruteforce(centerline: Centerline, points: NDArray[np.float64]
                            ) -> NDArray[np.float64]:
    """Arc of the nearest of ~1 mm spaced samples, in chunks (for scattered points)."""
    stride = max(round(1.0 / max(centerline.step_mm, 1e-9)), 1)
    idx = np.arange(0, len(centerline.arc_mm), stride)
    coarse = centerline.points_mm[idx]
    out = np.empty(len(points))
    chunk = max(1, 4_000_000 // max(len(idx), 1))
    for start in range(0, len(points), chunk):
        p = points[start:start + chunk]
        d2 = ((p[:, None, :] - coarse[None]) ** 2).sum(-1)
        out[start:start + chunk] = centerline.arc_mm[idx[np.argmin(d2, axis=1)]]
    return out


@dataclass(frozen=True)
class CordTable:
    """Per-sample columns for first-order (Taylor) evaluation around the nearest dense sample.

    Structure of arrays, one contiguous row per coordinate, so that every gather and every
    product is a contiguous 1-D numpy operation. ``newton`` rows: C, T, dT/ds (9, N); ``frame``
    rows: C, T, R, dR/ds, A, dA/ds (18, N). Frame derivatives are zero on the end samples, so
    beyond its ends the curve continues straight with the end frame. Points are (3, M).
    """

    newton: NDArray[np.float64]
    frame: NDArray[np.float64]
    step: float
    length: float

    @classmethod
    def build(cls, centerline: Centerline) -> CordTable:
        arc = centerline.arc_mm
        derivs = [np.gradient(v, arc, axis=0) for v in
                  (centerline.tangents, centerline.normals_right, centerline.normals_anterior)]
        for d in derivs:
            d[[0, -1]] = 0.0
        newton = np.ascontiguousarray(
            np.concatenate([centerline.points_mm, centerline.tangents, derivs[0]], axis=1).T)
        frame = np.ascontiguousarray(np.concatenate(
            [centerline.points_mm, centerline.tangents, centerline.normals_right, derivs[1],
             centerline.normals_anterior, derivs[2]], axis=1).T)
        return cls(newton=newton, frame=frame, step=centerline.step_mm,
                   length=centerline.length_mm)

    def _nearest(self, s: NDArray[np.float64]) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
        pos = np.rint(s * (1.0 / self.step))
        np.clip(pos, 0, self.newton.shape[1] - 1, out=pos)
        idx = pos.astype(np.intp)
        pos *= self.step
        return idx, pos

    @staticmethod
    def _dot(table: NDArray[np.float64], row: int, idx: NDArray[np.intp],
             vec: tuple[NDArray[np.float64], ...]) -> NDArray[np.float64]:
        out = table[row].take(idx)
        out *= vec[0]
        out += table[row + 1].take(idx) * vec[1]
        out += table[row + 2].take(idx) * vec[2]
        return out

    def refine(self, points: NDArray[np.float64], s0: NDArray[np.float64], n_iter: int
               ) -> NDArray[np.float64]:
        s = np.asarray(s0, dtype=np.float64)
        tab = self.newton
        for _ in range(n_iter):
            idx, s_i = self._nearest(s)
            d = tuple(points[c] - tab[c].take(idx) for c in range(3))
            resid = self._dot(tab, 3, idx, d)
            denom = self._dot(tab, 6, idx, d)
            np.subtract(1.0, denom, out=denom)
            np.maximum(denom, 0.2, out=denom)
            resid /= denom
            s = s_i + resid
        return s

    def coords(self, points: NDArray[np.float64], s0: NDArray[np.float64], n_iter: int
               ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        s = self.refine(points, s0, n_iter)
        idx, s_i = self._nearest(s)
        tab = self.frame
        delta = s - s_i
        frame_delta = np.clip(s, 0.0, self.length) - s_i
        d = tuple(points[c] - tab[c].take(idx) - delta * tab[3 + c].take(idx)
                  for c in range(3))
        right = self._dot(tab, 6, idx, d) + frame_delta * self._dot(tab, 9, idx, d)
        anterior = self._dot(tab, 12, idx, d) + frame_delta * self._dot(tab, 15, idx, d)
        return s, right, anterior

    def world(self, s: NDArray[np.float64], right: NDArray[np.float64],
              anterior: NDArray[np.float64]) -> NDArray[np.float64]:
        idx, s_i = self._nearest(s)
        tab = self.frame
        delta = s - s_i
        right_d = right * (np.clip(s, 0.0, self.length) - s_i)
        anterior_d = anterior * (np.clip(s, 0.0, self.length) - s_i)
        out = np.empty((3, len(s)))
        for c in range(3):
            row = tab[c].take(idx)
            row += delta * tab[3 + c].take(idx)
            row += right * tab[6 + c].take(idx)
            row += right_d * tab[9 + c].take(idx)
            row += anterior * tab[12 + c].take(idx)
            row += anterior_d * tab[15 + c].take(idx)
            out[c] = row
        return out


def cord_coordinates(centerline: Centerline, points_mm: NDArray[np.float64],
                     arc0: NDArray[np.float64], *, n_iter: int = 3
                     ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Arc of the foot point and in-plane (right, anterior) offsets of many points.

    Parameters
    ----------
    centerline : Centerline
    points_mm : (M, 3) float, mm, world
    arc0 : (M,) float, mm
        Initial arc guesses.

    Returns
    -------
    arc_mm, right_mm, anterior_mm : (M,) float64, mm
    """
    pts = np.ascontiguousarray(np.atleast_2d(np.asarray(points_mm, dtype=np.float64)).T)
    return CordTable.build(centerline).coords(pts, arc0, n_iter)


def cord_to_world(centerline: Centerline, arc_mm: NDArray[np.float64],
                  right_mm: NDArray[np.float64], anterior_mm: NDArray[np.float64]
                  ) -> NDArray[np.float64]:
    """World points from cord coordinates (inverse of :func:`cord_coordinates`).

    Returns
    -------
    (M, 3) float64, mm, world

    Examples
    --------
    >>> from spinal_bidsapp.geometry.centerline import straight_centerline
    >>> cl = straight_centerline(np.zeros(3), 10.0)
    >>> cord_to_world(cl, np.array([7.0]), np.array([2.0]), np.array([-1.0])).tolist()
    [[2.0, -1.0, -3.0]]
    """
    out: NDArray[np.float64] = CordTable.build(centerline).world(
        np.asarray(arc_mm, dtype=np.float64), np.asarray(right_mm), np.asarray(anterior_mm)).T
    return out


def locate_points(centerline: Centerline, points_mm: NDArray[np.float64], *,
                  arc0: NDArray[np.float64] | None = None
                  ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Express points in cord coordinates: arc of the foot point and in-plane offsets.

    Parameters
    ----------
    centerline : Centerline
    points_mm : (M, 3) float, mm, world RAS+
    arc0 : (M,) float, mm, optional
        Initial arc guesses; by default the nearest sample about every 1 mm.

    Returns
    -------
    arc_mm : (M,) float64, mm
    right_mm, anterior_mm : (M,) float64, mm
        Offsets from the foot point along the frame's right and anterior axes.

    Examples
    --------
    >>> from spinal_bidsapp.geometry.centerline import straight_centerline
    >>> cl = straight_centerline(np.zeros(3), 10.0)
    >>> [v.round(6).tolist() for v in locate_points(cl, np.array([[2.0, -1.0, -3.0]]))]
    [[7.0], [2.0], [-1.0]]
    """
    pts = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    s0 = _initial_arc_bruteforce(centerline, pts) if arc0 is None else arc0
    return cord_coordinates(centerline, pts, s0, n_iter=6)
