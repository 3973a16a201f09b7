"""The straight template space of a cohort: mean vertebral distribution, disc positions, grid.

Pure functions. As in the neuropoly template pipeline, the template's superior-inferior axis is a
straight line whose inter-disc distances are the cohort means of the arc lengths measured along
each subject's curved cord; unlike it, the grid is centred exactly on the line (no half-voxel
offset), every level between the first and last disc must be measured in at least one subject
(otherwise a clear error names the subjects' disc ranges), and subjects with missing discs still
contribute the levels they have.

Without disc alignment (``--no-disc-alignment``, cohorts without reliable disc labels) the line is
as long as the cohort's mean cord span, and each subject is mapped onto it in proportion to arc
length: between the first and last disc common to every subject when there are such discs, else
between its cord ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, straight_centerline
from spinal_bidsapp.geometry.discs import ArcMap, DiscPositions

Alignment = Literal["discs", "end_discs", "cord_ends"]
"""How subjects are mapped onto the template line: every common disc matched (``discs``), or
arc-length proportional between the first and last disc common to all subjects (``end_discs``) or
between the cord ends (``cord_ends``)."""


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
    alignment : Alignment
    span_mm : float, mm
        Length of the aligned span, from z = 0 down to z = -span_mm: top to bottom disc, or
        cord end to cord end (``cord_ends``, where ``disc_values`` is empty).
    """

    disc_values: NDArray[np.int64]
    disc_z_mm: NDArray[np.float64]
    levels: tuple[LevelLength, ...]
    shape: tuple[int, int, int]
    affine: NDArray[np.float64]
    centerline: Centerline
    alignment: Alignment = "discs"
    span_mm: float = 0.0

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
    shape, affine, line = _line_grid(float(z[-1]), resolution_mm=resolution_mm,
                                     xy_half_mm=xy_half_mm, margin_mm=margin_mm)
    return TemplateSpace(disc_values=np.array(values, dtype=np.int64),
                         disc_z_mm=z.astype(np.float64), levels=levels, shape=shape,
                         affine=affine, centerline=line, span_mm=float(-z[-1]))


def _line_grid(z_bottom_mm: float, *, resolution_mm: float, xy_half_mm: float, margin_mm: float
               ) -> tuple[tuple[int, int, int], NDArray[np.float64], Centerline]:
    """LAS grid centred on x = y = 0 from ``z_bottom_mm - margin`` to ``margin`` (mm), and its
    straight line."""
    half_n = round(xy_half_mm / resolution_mm)
    z_top, z_bottom = float(margin_mm), float(z_bottom_mm - margin_mm)
    nz = int(np.ceil((z_top - z_bottom) / resolution_mm)) + 1
    affine = np.diag([-resolution_mm, resolution_mm, resolution_mm, 1.0])
    affine[:3, 3] = [half_n * resolution_mm, -half_n * resolution_mm, z_bottom]
    top = np.array([0.0, 0.0, z_bottom + (nz - 1) * resolution_mm])
    line = straight_centerline(top, (nz - 1) * resolution_mm, step_mm=min(0.25, resolution_mm))
    return (2 * half_n + 1, 2 * half_n + 1, nz), affine, line


def common_end_discs(discs: Mapping[str, DiscPositions], *, first_disc: int | None = None,
                     last_disc: int | None = None) -> tuple[int, int] | None:
    """Top and bottom vertebral disc (1-30) present in every subject, within
    ``first_disc``-``last_disc``; None when fewer than two discs are common.

    Examples
    --------
    >>> a = DiscPositions(np.array([2, 3, 5]), np.array([50.0, 30.0, 0.0]), np.zeros(3))
    >>> b = DiscPositions(np.array([3, 4, 5, 6]), np.array([60.0, 40, 20, 0]), np.zeros(4))
    >>> common_end_discs({"a": a, "b": b})
    (3, 5)
    """
    if not discs:
        return None
    sets = [{int(v) for v in p.values if 1 <= int(v) <= 30} for p in discs.values()]
    common = sorted(v for v in set.intersection(*sets)
                    if (first_disc is None or v >= first_disc)
                    and (last_disc is None or v <= last_disc))
    return (common[0], common[-1]) if len(common) >= 2 else None


def subject_span(length_mm: float, discs: DiscPositions | None,
                 anchors: tuple[int, int] | None) -> tuple[float, float]:
    """(bottom, top) arc (mm) of a subject's aligned span: its anchor discs, else its cord ends.

    >>> d = DiscPositions(np.array([3, 4, 5]), np.array([70.0, 50.0, 30.0]), np.zeros(3))
    >>> subject_span(90.0, d, (3, 5)), subject_span(90.0, None, None)
    ((30.0, 70.0), (0.0, 90.0))
    """
    if anchors is None:
        return 0.0, float(length_mm)
    if discs is None:
        raise InputDataError(f"disc labels are needed to align on discs {anchors}")
    arc = {int(v): float(a) for v, a in zip(discs.values, discs.arc_mm, strict=True)}
    return arc[anchors[1]], arc[anchors[0]]


def define_length_space(span_mm: float, *, anchors: tuple[int, int] | None,
                        resolution_mm: float, xy_half_mm: float, margin_mm: float
                        ) -> TemplateSpace:
    """A template line ``span_mm`` long without per-level disc positions (no disc alignment).

    ``anchors`` are the end discs the span runs between (they are the template's only discs),
    or None for a span between the cord ends (no discs at all).

    Examples
    --------
    >>> space = define_length_space(20.0, anchors=None, resolution_mm=1.0, xy_half_mm=5.0,
    ...                             margin_mm=2.0)
    >>> space.alignment, space.disc_values.tolist(), space.shape
    ('cord_ends', [], (11, 11, 25))
    """
    if not span_mm > 0:
        raise InputDataError(f"the mean cord span is {span_mm:.1f} mm: nothing to align")
    shape, affine, line = _line_grid(-float(span_mm), resolution_mm=resolution_mm,
                                     xy_half_mm=xy_half_mm, margin_mm=margin_mm)
    values = [] if anchors is None else list(anchors)
    z = [] if anchors is None else [0.0, -float(span_mm)]
    return TemplateSpace(disc_values=np.array(values, dtype=np.int64),
                         disc_z_mm=np.array(z, dtype=np.float64), levels=(), shape=shape,
                         affine=affine, centerline=line,
                         alignment="cord_ends" if anchors is None else "end_discs",
                         span_mm=float(span_mm))


def proportional_arc_map(span: tuple[float, float], space: TemplateSpace) -> ArcMap:
    """Subject arc -> template line arc, mapping the subject's (bottom, top) span onto the
    template span (z = -span_mm to 0) in proportion; mm offsets are kept beyond its ends.

    >>> space = define_length_space(20.0, anchors=None, resolution_mm=1.0, xy_half_mm=5.0,
    ...                             margin_mm=2.0)
    >>> proportional_arc_map((0.0, 40.0), space).forward(np.array([0.0, 20.0, 41.0])).tolist()
    [2.0, 12.0, 23.0]
    """
    bottom, top = span
    if not top > bottom:
        raise InputDataError(f"empty span to align (arc {bottom:.1f} to {top:.1f} mm)")
    line_bottom_z = float(space.centerline.points_mm[0, 2])
    return ArcMap(source_mm=np.array([bottom, top], dtype=np.float64),
                  dest_mm=np.array([-space.span_mm - line_bottom_z, -line_bottom_z]))


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
