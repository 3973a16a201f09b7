"""Curved-tube phantoms with an analytic centerline, for geometry tests and the benchmark.

Deliberately independent of ``spinal_bidsapp.geometry``: distances to the analytic curve come
from a KD-tree over a very dense sampling of it, not from our own projection code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from spinal_bidsapp.image import Volume, reorient

Kind = Literal["straight", "sinusoid", "helix", "cervical"]


@dataclass(frozen=True)
class TubePhantom:
    """A tube around an analytic curve z -> (x(z), y(z), z), cut by the planes z = 0 and z = L.

    Straightened exactly, it is a cylinder of radius ``radius_mm`` (with oblique end cuts).

    Attributes
    ----------
    image : Volume
        T2-like intensities: dark cord, bright CSF ring, grey background, seeded noise.
    mask : Volume
        Cord mask (uint8): voxel centres within ``radius_mm`` of the curve.
    soft_mask : Volume
        Partial-volume cord mask (float32, 0..1): a linear ramp of the signed distance to the
        tube surface across one voxel, as a soft segmentation would give.
    curve_points, curve_arc : (K, 3), (K,) float64, mm
        Dense samples of the analytic curve (inferior to superior) and their arc length.
    radius_mm : float
    discs : dict int -> (3,) mm
        Points on the curve at fixed arc positions, labelled 3, 4, 5, ...
    """

    image: Volume
    mask: Volume
    soft_mask: Volume
    curve_points: NDArray[np.float64]
    curve_arc: NDArray[np.float64]
    radius_mm: float
    discs: dict[int, NDArray[np.float64]]

    def point_at(self, arc_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        """Analytic curve position at arc lengths (linear between 0.02 mm samples)."""
        return np.stack([np.interp(arc_mm, self.curve_arc, self.curve_points[:, c])
                         for c in range(3)], axis=1)

    def tangent_at(self, arc_mm: NDArray[np.float64]) -> NDArray[np.float64]:
        h = 0.05
        t = self.point_at(np.asarray(arc_mm) + h) - self.point_at(np.asarray(arc_mm) - h)
        return t / np.linalg.norm(t, axis=1, keepdims=True)


def _curve(kind: Kind, length_z: float) -> Callable[[NDArray], NDArray]:
    def fn(z: NDArray) -> NDArray:
        u = z / length_z
        if kind == "straight":
            x, y = np.zeros_like(z) + 1.3, np.zeros_like(z) - 0.7
        elif kind == "sinusoid":
            x, y = 6.0 * np.sin(2 * np.pi * u), 3.0 * np.sin(np.pi * u)
        elif kind == "helix":
            x, y = 5.0 * np.cos(2 * np.pi * z / 60.0), 5.0 * np.sin(2 * np.pi * z / 60.0)
        else:  # cervical: lordosis in the sagittal plane plus a mild lateral bend
            x, y = 2.5 * np.sin(2 * np.pi * u + 0.3), 9.0 * np.sin(np.pi * u) - 4.0 * u
        return np.stack([x, y, z], axis=1)
    return fn


def make_tube_phantom(kind: Kind = "cervical", *, voxel_mm: tuple[float, float, float] = (1, 1, 1),
                      length_z_mm: float = 100.0, radius_mm: float = 4.0,
                      axcodes: tuple[str, str, str] = ("R", "A", "S"), seed: int = 0,
                      margin_mm: float = 10.0) -> TubePhantom:
    """Build a tube phantom on a RAS grid, then store it in ``axcodes`` orientation.

    The tube covers ``z`` in ``[0, length_z_mm]`` (world mm); the grid extends ``margin_mm``
    around it in-plane and 3 mm beyond its ends along z.
    """
    fn = _curve(kind, length_z_mm)
    z_dense = np.arange(0.0, length_z_mm + 1e-9, 0.02)
    pts = fn(z_dense)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(pts, axis=0), axis=1))])
    vox = np.asarray(voxel_mm, dtype=np.float64)
    pad = np.array([margin_mm, margin_mm, 3.0])
    lo = pts.min(axis=0) - pad
    hi = pts.max(axis=0) + pad
    shape = tuple(int(n) for n in np.ceil((hi - lo) / vox) + 1)
    affine = np.diag([*vox, 1.0])
    affine[:3, 3] = lo
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    world = np.stack([ii, jj, kk], axis=-1).reshape(-1, 3) * vox + lo
    dist = cKDTree(pts).query(world, workers=-1)[0].reshape(shape)
    # the tube is cut by the axial planes z = 0 and z = length, like a field of view
    inside_z = (world[:, 2] >= 0.0) & (world[:, 2] <= length_z_mm)
    cord = (dist <= radius_mm) & inside_z.reshape(shape)
    rng = np.random.default_rng(seed)
    width = 0.35 * float(vox.min())
    cord_soft = 1.0 / (1.0 + np.exp((dist - radius_mm) / width))
    csf_soft = 1.0 / (1.0 + np.exp((dist - radius_mm - 3.0) / width))
    ends = inside_z.reshape(shape)
    image = 200.0 + 600.0 * csf_soft * ends - 500.0 * cord_soft * ends
    image += rng.normal(0.0, 10.0, shape)
    disc_arcs = np.linspace(arc[-1] * 0.85, arc[-1] * 0.15, 4)
    discs = {3 + k: np.stack([np.interp(a, arc, pts[:, c]) for c in range(3)])
             for k, a in enumerate(disc_arcs)}
    img = reorient(Volume(data=image.astype(np.float32), affine=affine), axcodes)
    mask = reorient(Volume(data=cord.astype(np.uint8), affine=affine), axcodes)
    soft = np.clip(0.5 - (dist - radius_mm) / float(vox.min()), 0.0, 1.0) * ends
    soft_mask = reorient(Volume(data=soft.astype(np.float32), affine=affine), axcodes)
    return TubePhantom(image=img, mask=mask, soft_mask=soft_mask, curve_points=pts, curve_arc=arc,
                       radius_mm=radius_mm, discs=discs)


def disc_label_array(phantom: TubePhantom) -> NDArray[np.uint8]:
    """Single-voxel disc labels on the phantom's grid (nearest voxel of each disc point)."""
    out = np.zeros(phantom.mask.shape, dtype=np.uint8)
    inv = np.linalg.inv(phantom.mask.affine)
    for value, point in phantom.discs.items():
        ijk = np.rint(inv[:3, :3] @ point + inv[:3, 3]).astype(int)
        out[tuple(ijk)] = value
    return out


def distance_to_polyline(points: np.ndarray, curve: np.ndarray) -> np.ndarray:
    """Plain reference: distance of each point to a densely sampled curve."""
    return np.array([np.min(np.linalg.norm(curve - p, axis=1)) for p in points])
