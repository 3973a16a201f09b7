"""Acquisition model: voxel grids in any storage orientation, bias field and Rician noise."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from numpy.typing import NDArray

STORAGE_AXCODES: tuple[str, ...] = ("RAS", "LAS", "PSR", "LPS", "PIR", "ASR", "RPI", "SAL")
"""Storage orientations drawn for synthetic images (nibabel axcodes, sagittal-ish included)."""

IMAGE_SCALE = 1000.0
"""Images are stored as int16: relative intensity (CSF in T2w about 1) times this factor."""

_WORLD_AXIS = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0),
               "I": (2, -1.0)}


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: ``shape`` and voxel-to-world ``affine`` ((4, 4), RAS+ mm)."""

    shape: tuple[int, int, int]
    affine: NDArray[np.float64]

    @property
    def voxel_mm(self) -> NDArray[np.float64]:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    def to_dict(self) -> dict[str, object]:
        return {"shape": list(self.shape), "affine": self.affine.tolist(),
                "voxel_mm": self.voxel_mm.round(6).tolist(),
                "axcodes": "".join(nib.aff2axcodes(self.affine))}

    @classmethod
    def from_dict(cls, data: dict) -> Grid:
        return cls(shape=tuple(int(n) for n in data["shape"]),  # type: ignore[arg-type]
                   affine=np.asarray(data["affine"], dtype=np.float64))

    def points_mm(self, *, chunk_voxels: int = 1 << 20) -> Iterator[tuple[slice, NDArray]]:
        """World coordinates of the voxel centres, by slabs of the last storage axis.

        Yields ``(slab, points)`` where ``slab`` indexes the last axis and ``points`` is
        ``(nx * ny * len(slab), 3)`` float64 mm in C order of ``data[:, :, slab]``.
        """
        nx, ny, nz = self.shape
        step = max(1, chunk_voxels // (nx * ny))
        for k0 in range(0, nz, step):
            slab = slice(k0, min(nz, k0 + step))
            ijk = np.stack(np.meshgrid(np.arange(nx), np.arange(ny), np.arange(slab.start,
                                       slab.stop), indexing="ij"), axis=-1).reshape(-1, 3)
            yield slab, ijk @ self.affine[:3, :3].T + self.affine[:3, 3]


def make_grid(*, lower_mm: NDArray, upper_mm: NDArray, voxel_mm: NDArray, axcodes: str,
              oblique_deg: float = 0.0) -> Grid:
    """Grid covering the world box ``[lower_mm, upper_mm]`` (RAS order, mm).

    ``voxel_mm`` gives the voxel size along world R, A, S; ``axcodes`` (e.g. ``"PSR"``) the
    storage order and direction; ``oblique_deg`` rotates the grid about world R around the box
    centre (the box is enlarged so it stays covered).

    >>> g = make_grid(lower_mm=np.zeros(3), upper_mm=np.array([4.0, 6.0, 8.0]),
    ...               voxel_mm=np.ones(3), axcodes="PSR")
    >>> g.shape
    (6, 8, 4)
    """
    lower, upper = np.asarray(lower_mm, float), np.asarray(upper_mm, float)
    voxel = np.asarray(voxel_mm, float)
    centre = 0.5 * (lower + upper)
    extent = upper - lower
    angle = np.deg2rad(oblique_deg)
    rotation = np.array([[1.0, 0.0, 0.0],
                         [0.0, np.cos(angle), -np.sin(angle)],
                         [0.0, np.sin(angle), np.cos(angle)]])
    extent = np.abs(rotation.T) @ extent  # box in rotated axes that contains the world box
    columns, shape = [], []
    for code in axcodes:
        axis, sign = _WORLD_AXIS[code]
        columns.append(rotation[:, axis] * sign * voxel[axis])
        shape.append(int(np.ceil(extent[axis] / voxel[axis])))
    linear = np.column_stack(columns)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = centre - linear @ ((np.array(shape) - 1) / 2.0)
    return Grid(shape=tuple(shape), affine=affine)  # type: ignore[arg-type]


@dataclass(frozen=True)
class BiasField:
    """Smooth multiplicative field ``exp(sum_ij c_ij P_i(x) P_j(y) P_k(z))`` (degree <= 2)."""

    centre_mm: tuple[float, float, float]
    scale_mm: float
    coefficients: tuple[float, ...]  # 10 terms: 1, x, y, z, x2, y2, z2, xy, xz, yz

    def __call__(self, points_mm: NDArray) -> NDArray[np.float64]:
        q = (np.asarray(points_mm, float) - np.asarray(self.centre_mm)) / self.scale_mm
        x, y, z = q[:, 0], q[:, 1], q[:, 2]
        terms = (np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z)
        log_field = sum(c * t for c, t in zip(self.coefficients, terms, strict=True))
        return np.exp(log_field)

    def to_dict(self) -> dict[str, object]:
        return {"model": "exp(quadratic polynomial of (p - centre) / scale)",
                "centre_mm": list(self.centre_mm), "scale_mm": self.scale_mm,
                "coefficients": list(self.coefficients)}


def draw_bias_field(rng: np.random.Generator, *, centre_mm: NDArray, scale_mm: float,
                    strength: float = 0.25) -> BiasField:
    """Random bias field varying by roughly ``+-strength`` (log scale) over ``scale_mm``."""
    coefficients = np.concatenate([[0.0], rng.normal(0, strength / 2, 3),
                                   rng.normal(0, strength / 4, 6)])
    return BiasField(centre_mm=tuple(float(c) for c in centre_mm),  # type: ignore[arg-type]
                     scale_mm=float(scale_mm),
                     coefficients=tuple(float(c) for c in coefficients))


def add_rician_noise(image: NDArray, *, sigma: float, rng: np.random.Generator) -> NDArray:
    """Magnitude of the image plus complex Gaussian noise of standard deviation ``sigma``."""
    real = image + rng.normal(0.0, sigma, image.shape)
    imag = rng.normal(0.0, sigma, image.shape)
    return np.sqrt(real * real + imag * imag)


def soft_fraction(signed_distance_mm: NDArray, width_mm: float) -> NDArray[np.float64]:
    """Partial-volume fraction from a signed distance (negative inside) and a blur width."""
    return np.clip(0.5 - signed_distance_mm / width_mm, 0.0, 1.0)


def to_int16(image: NDArray) -> NDArray[np.int16]:
    """Relative intensities to stored int16 values (times :data:`IMAGE_SCALE`, clipped)."""
    return np.clip(np.rint(image * IMAGE_SCALE), 0, np.iinfo(np.int16).max).astype(np.int16)
