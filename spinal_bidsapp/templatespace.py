"""The straight template space of a cohort: mean vertebral distribution, disc positions, grid.

Pure functions. As in the neuropoly template pipeline, the template's superior-inferior axis is a
straight line whose inter-disc distances are the cohort means of the arc lengths measured along
each subject's curved cord; unlike it, the grid is centred exactly on the line (no half-voxel
offset), every level between the first and last disc must be measured in at least one subject
(otherwise a clear error names the subjects' disc ranges), and subjects with missing discs still
contribute the levels they have.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, straight_centerline
from spinal_bidsapp.geometry.discs import DiscPositions


@dataclass(frozen=True)
class LevelLength:
    """Arc length between disc ``upper`` and disc ``upper + 1`` over the cohort."""

    upper: int
    mean_mm: float
    sd_mm: float
    n_subjects: int


@dataclass(frozen=True)
class TemplateSpace:
    """A straight template: disc positions on the line x = y = 0 and the voxel grid around it.

    Attributes
    ----------
    disc_values : (D,) int, top (rostral) first
    disc_z_mm : (D,) float64, mm, world z of each disc (the top disc is at z = 0)
    levels : tuple of LevelLength
    shape : (3,) int
    affine : (4, 4) float64, voxel to world, nibabel LAS like PAM50 (SCT "RPI")
    centerline : Centerline, the straight line covering the grid's z range
    """

    disc_values: NDArray[np.int64]
    disc_z_mm: NDArray[np.float64]
    levels: tuple[LevelLength, ...]
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]
    centerline: Centerline

    def disc_points_mm(self) -> dict[int, NDArray[np.float64]]:
        return {int(v): np.array([0.0, 0.0, float(z)])
                for v, z in zip(self.disc_values, self.disc_z_mm, strict=True)}


def measure_level_lengths(discs: Mapping[str, DiscPositions]) -> dict[int, list[float]]:
    """Per level (upper disc N, lower disc N + 1, both present): each subject's arc length.

    Examples
    --------
    >>> d = DiscPositions(np.array([2, 3, 5]), np.array([50.0, 30.0, 0.0]), np.zeros(3))
    >>> measure_level_lengths({"sub-01": d})
    {2: [20.0]}
    """
    lengths: dict[int, list[float]] = {}
    for positions in discs.values():
        arc = {int(v): float(a) for v, a in zip(positions.values, positions.arc_mm, strict=True)
               if 1 <= int(v) <= 30}
        for value in sorted(arc):
            if value + 1 in arc:
                lengths.setdefault(value, []).append(arc[value] - arc[value + 1])
    return lengths


def average_levels(discs: Mapping[str, DiscPositions], *, first_disc: int | None = None,
                   last_disc: int | None = None) -> tuple[LevelLength, ...]:
    """Mean level lengths from ``first_disc`` to ``last_disc`` (default: the cohort's range).

    Raises
    ------
    InputDataError
        A level in the range is measured in no subject (disc ranges that do not overlap).
    """
    lengths = measure_level_lengths(discs)
    present = sorted({int(v) for p in discs.values() for v in p.values if 1 <= int(v) <= 30})
    if not present:
        raise InputDataError("no subject has vertebral disc labels (values 1-30)")
    top = first_disc if first_disc is not None else present[0]
    bottom = last_disc if last_disc is not None else present[-1]
    if bottom <= top:
        raise InputDataError(f"the disc range {top}-{bottom} holds no vertebral level")
    missing = [level for level in range(top, bottom) if level not in lengths]
    if missing:
        ranges = ", ".join(f"{label}: discs {_span(p)}" for label, p in sorted(discs.items()))
        gaps = ", ".join(f"{m}-{m + 1}" for m in missing)
        raise InputDataError(
            f"no subject covers both discs of level(s) {gaps}; the disc ranges do not overlap "
            f"({ranges}); choose --first-disc/--last-disc inside a common range or add subjects "
            "that bridge it")
    return tuple(LevelLength(upper=level, mean_mm=float(np.mean(lengths[level])),
                             sd_mm=float(np.std(lengths[level])),
                             n_subjects=len(lengths[level]))
                 for level in range(top, bottom))


def _span(positions: DiscPositions) -> str:
    values = sorted(int(v) for v in positions.values)
    return f"{values[0]}-{values[-1]}" if values else "none"


def define_template_space(levels: tuple[LevelLength, ...], *, resolution_mm: float,
                          xy_half_mm: float, margin_mm: float) -> TemplateSpace:
    """Disc positions (top disc at z = 0, going down) and an LAS grid centred on x = y = 0.

    Examples
    --------
    >>> space = define_template_space((LevelLength(2, 20.0, 1.0, 3),), resolution_mm=1.0,
    ...                               xy_half_mm=5.0, margin_mm=2.0)
    >>> space.disc_z_mm.tolist(), space.shape
    ([0.0, -20.0], (11, 11, 25))
    """
    values = [levels[0].upper] + [level.upper + 1 for level in levels]
    z = np.concatenate([[0.0], -np.cumsum([level.mean_mm for level in levels])])
    half_n = round(xy_half_mm / resolution_mm)
    z_top, z_bottom = float(z[0] + margin_mm), float(z[-1] - margin_mm)
    nz = int(np.ceil((z_top - z_bottom) / resolution_mm)) + 1
    affine = np.diag([-resolution_mm, resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = [half_n * resolution_mm, -half_n * resolution_mm, z_bottom]
    top = np.array([0.0, 0.0, z_bottom + (nz - 1) * resolution_mm])
    line = straight_centerline(top, (nz - 1) * resolution_mm, step_mm=min(0.25, resolution_mm))
    return TemplateSpace(disc_values=np.array(values, dtype=np.int64),
                         disc_z_mm=z.astype(np.float64), levels=levels,
                         shape=(2 * half_n + 1, 2 * half_n + 1, nz), affine=affine,
                         centerline=line)


def disc_label_array(space: TemplateSpace) -> NDArray[np.uint8]:
    """Single-voxel disc labels on the template grid (at the cord centre)."""
    out = np.zeros(space.shape, np.uint8)
    inv = np.linalg.inv(space.affine)
    for value, point in space.disc_points_mm().items():
        ijk = np.rint(inv[:3, :3] @ point + inv[:3, 3]).astype(int)
        if np.all((ijk >= 0) & (ijk < np.array(space.shape))):
            out[tuple(ijk)] = value
    return out


def level_label_array(space: TemplateSpace, cord: NDArray) -> NDArray[np.uint8]:
    """Vertebral level of every template cord voxel (N between disc N and N + 1)."""
    z = space.affine[2, 2] * np.arange(space.shape[2]) + space.affine[2, 3]
    levels = np.zeros(space.shape[2], np.uint8)
    for value, upper_z, lower_z in zip(space.disc_values[:-1], space.disc_z_mm[:-1],
                                       space.disc_z_mm[1:], strict=True):
        levels[(z <= upper_z) & (z > lower_z)] = value
    return (np.asarray(cord) > 0.5).astype(np.uint8) * levels[None, None, :]


def normalize_intensity(image: NDArray, cord: NDArray, *, voxel_z_mm: float,
                        smooth_mm: float = 10.0, target: float = 1000.0) -> NDArray[np.float32]:
    """Flatten the cord intensity along z: each slice scaled so the smoothed cord median = target.

    Slices without cord take the profile of the nearest slice with cord (as the seed pipeline
    does); the profile is Gaussian-smoothed with ``sigma = smooth_mm`` along z.
    """
    from scipy import ndimage

    data = np.asarray(image, dtype=np.float32)
    inside = np.asarray(cord) > 0.5
    profile = np.full(data.shape[2], np.nan)
    for k in np.nonzero(inside.any(axis=(0, 1)))[0]:
        profile[k] = float(np.median(data[:, :, k][inside[:, :, k]]))
    valid = np.isfinite(profile) & (profile > 0)
    if not valid.any():
        raise InputDataError("the straightened cord mask is empty: cannot normalise intensity")
    ks = np.arange(data.shape[2])
    filled = np.interp(ks, ks[valid], profile[valid])
    smooth = ndimage.gaussian_filter1d(filled, sigma=smooth_mm / voxel_z_mm, mode="nearest")
    return (data * (target / smooth)[None, None, :]).astype(np.float32)
