"""Analytic demo subjects: cord, CSF, vertebral bodies, discs and arches around a random curve.

Pure: :func:`draw_demo_subject` turns a random generator into a :class:`DemoSubjectSpec` (all
parameters, JSON-serialisable) and :func:`render_demo_subject` turns a spec into arrays. Anatomy is
defined in curve coordinates ``(u, v, s)`` (see :mod:`spinal_bidsapp.synth.curve`): ``u`` right,
``v`` anterior, both in the cross-section plane, ``s`` arc length along the cord centre.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.synth.acquisition import (
    STORAGE_AXCODES,
    BiasField,
    Grid,
    add_rician_noise,
    draw_bias_field,
    make_grid,
    soft_fraction,
    to_int16,
)
from spinal_bidsapp.synth.curve import SpineCurve, draw_curve
from spinal_bidsapp.synth.spine import reference_level_lengths_mm

TISSUES: dict[str, int] = {"cord": 1, "csf": 2, "disc": 3, "vertebral_body": 4, "arch": 5}
"""Tissue classes of the ``dseg`` truth images (0 = background)."""

T2W_INTENSITY = {"background": 0.30, "cord": 0.42, "csf": 1.0, "disc": 0.72,
                 "vertebral_body": 0.36, "arch": 0.12}
T1W_INTENSITY = {"background": 0.45, "cord": 0.72, "csf": 0.12, "disc": 0.40,
                 "vertebral_body": 0.62, "arch": 0.18}

T2STARW_INTENSITY = {"background": 0.25, "cord": 0.55, "csf": 1.0, "disc": 0.45,
                     "vertebral_body": 0.15, "arch": 0.10}
"""T2*w-like (gradient echo): bright CSF, grey cord, dark bone."""

T2STARW_SLAB_DISCS = (4, 6)
"""The axial T2*w slab covers the cord between these discs (C3/C4 to C5/C6)."""
T2STARW_VOXEL_MM = (0.5, 0.5, 5.0)
"""In-plane resolution and slice thickness of the T2*w stack (axial, LAS storage)."""
T2STARW_SUBSAMPLES = 5
"""Samples across each thick slice, averaged (through-slice partial volume)."""

DEMO_DISCS = range(1, 10)
"""Discs modelled in the demo anatomy (1 = C1 top ... 9 = T1/T2); the FOV covers 2..8."""


@dataclass(frozen=True)
class DemoAnatomy:
    """Analytic anatomy in curve coordinates (all lengths mm)."""

    disc_arc_mm: dict[int, float]
    cord_semi_axes_mm: tuple[float, float]  # (right-left, antero-posterior), away from the bulge
    enlargement: tuple[float, float, float]  # relative amplitude, centre arc length, width
    canal_margin_mm: tuple[float, float]
    disc_height_mm: float
    body_half_axes_mm: tuple[float, float]  # (right-left, antero-posterior)
    body_gap_mm: float
    arch_thickness_mm: float

    def cord_semi_axes(self, s_mm: NDArray) -> tuple[NDArray, NDArray]:
        """Cord ellipse semi-axes ``(a, b)`` (mm) at arc lengths ``s_mm``."""
        amp, centre, width = self.enlargement
        bulge = 1.0 + amp * np.exp(-(((np.asarray(s_mm, float) - centre) / width) ** 2))
        return self.cord_semi_axes_mm[0] * bulge, self.cord_semi_axes_mm[1] * np.sqrt(bulge)

    def cord_area_mm2(self, s_mm: NDArray) -> NDArray[np.float64]:
        a, b = self.cord_semi_axes(s_mm)
        return np.pi * a * b

    def cord_volume_mm3(self, s_low_mm: float, s_high_mm: float) -> float:
        """Cord volume between two cross-section planes (exact for a bent tube, see Notes).

        Notes
        -----
        The volume element of ``p = c(s) + u e_u + v e_v`` is ``(1 - k_u u - k_v v) du dv ds``;
        the first-order terms integrate to zero over a cross-section centred on the curve, so the
        volume is the integral of the cross-section area along the arc length.
        """
        s = np.linspace(s_low_mm, s_high_mm, 20001)
        return float(np.trapezoid(self.cord_area_mm2(s), s))

    def body_centre_v_mm(self) -> float:
        b_max = self.cord_semi_axes_mm[1] * np.sqrt(1.0 + self.enlargement[0])
        return float(b_max + self.canal_margin_mm[1] + self.body_gap_mm
                     + self.body_half_axes_mm[1])

    def signed_distances(self, uvs: NDArray) -> dict[str, NDArray[np.float64]]:
        """Approximate signed distance (mm, negative inside) to each tissue at ``(N, 3)`` uvs."""
        u, v, s = uvs[:, 0], uvs[:, 1], uvs[:, 2]
        a, b = self.cord_semi_axes(s)
        cord = _ellipse_distance(u, v, a, b)
        canal = _ellipse_distance(u, v, a + self.canal_margin_mm[0], b + self.canal_margin_mm[1])
        thick = self.arch_thickness_mm
        ring = _ellipse_distance(u, v, a + self.canal_margin_mm[0] + thick,
                                 b + self.canal_margin_mm[1] + thick)
        discs = np.array(sorted(self.disc_arc_mm.values()))
        to_disc = np.abs(s[:, None] - discs[None, :]).min(axis=1)
        half_h = 0.5 * self.disc_height_mm
        column = _ellipse_distance(u, v - self.body_centre_v_mm(), *self.body_half_axes_mm)
        return {
            "cord": cord,
            "csf": np.maximum(canal, -cord),
            "disc": np.maximum(column, to_disc - half_h),
            "vertebral_body": np.maximum(column, half_h - to_disc),
            "arch": np.maximum.reduce([ring, -canal, v, half_h + 1.0 - to_disc]),
        }


def _ellipse_distance(u: NDArray, v: NDArray, a: NDArray | float,
                      b: NDArray | float) -> NDArray[np.float64]:
    """Signed distance to an ellipse boundary, exact on the axes and smooth elsewhere."""
    r = np.hypot(u, v)
    rho = np.hypot(u / a, v / b)
    return np.where(rho > 1e-9, r * (1.0 - 1.0 / np.maximum(rho, 1e-9)), -np.minimum(a, b))


@dataclass(frozen=True)
class DemoSubjectSpec:
    """Everything needed to render one demo subject (serialised into the truth JSON)."""

    curve: SpineCurve
    anatomy: DemoAnatomy
    grid: Grid
    bias: BiasField
    noise_sigma: float  # relative to CSF intensity in T2w (1.0)
    fov_discs: tuple[int, int]


@dataclass(frozen=True)
class RenderedSubject:
    """Arrays of one subject on its acquisition grid (storage order of ``grid``)."""

    t2w: NDArray[np.int16]
    t1w: NDArray[np.int16] | None
    t2w_noisefree: NDArray[np.float32]
    cord_mask: NDArray[np.uint8]
    disc_labels: NDArray[np.uint8]
    dseg: NDArray[np.uint8]


def draw_demo_subject(rng: np.random.Generator, *,
                      voxel_mm_range: tuple[float, float] = (0.8, 1.0),
                      fov_discs: tuple[int, int] = (2, 8)) -> DemoSubjectSpec:
    """Draw the random parameters of one demo subject."""
    scale = rng.uniform(0.88, 1.12)
    lengths = reference_level_lengths_mm(DEMO_DISCS) * scale * rng.uniform(0.93, 1.07, 8)
    top = fov_discs[0] - DEMO_DISCS.start
    bottom = fov_discs[1] - DEMO_DISCS.start
    arc = np.concatenate([[0.0], -np.cumsum(lengths)])
    arc -= 0.5 * (arc[top] + arc[bottom])
    disc_arc = {disc: float(s) for disc, s in zip(DEMO_DISCS, arc, strict=True)}
    size = rng.uniform(0.85, 1.15)
    anatomy = DemoAnatomy(
        disc_arc_mm=disc_arc,
        cord_semi_axes_mm=(float(6.0 * size * rng.uniform(0.95, 1.05)),
                           float(4.0 * size * rng.uniform(0.95, 1.05))),
        enlargement=(float(rng.uniform(0.08, 0.18)),
                     float(0.5 * (disc_arc[5] + disc_arc[6]) + rng.uniform(-4, 4)),
                     float(rng.uniform(12.0, 20.0))),
        canal_margin_mm=(float(rng.uniform(2.5, 3.5)), float(rng.uniform(2.0, 3.2))),
        disc_height_mm=float(rng.uniform(3.5, 5.0) * scale),
        body_half_axes_mm=(float(rng.uniform(8.0, 10.0)), float(rng.uniform(6.5, 8.0))),
        body_gap_mm=float(rng.uniform(1.5, 2.5)),
        arch_thickness_mm=float(rng.uniform(2.5, 3.5)),
    )
    curve = draw_curve(rng)
    curve = dataclasses.replace(
        curve, x=dataclasses.replace(curve.x, offset_mm=float(rng.uniform(-8, 8))),
        y=dataclasses.replace(curve.y, offset_mm=float(rng.uniform(-8, 8))),
        zc_mm=float(rng.uniform(-20, 20)))
    s_range = (disc_arc[fov_discs[1]] - rng.uniform(5.0, 12.0),
               disc_arc[fov_discs[0]] + rng.uniform(5.0, 12.0))
    v_range = (-(anatomy.cord_semi_axes_mm[1] * 1.1 + anatomy.canal_margin_mm[1]
                 + anatomy.arch_thickness_mm + rng.uniform(2.0, 5.0)),
               anatomy.body_centre_v_mm() + anatomy.body_half_axes_mm[1] + rng.uniform(2.0, 5.0))
    u_half = max(anatomy.body_half_axes_mm[0], anatomy.cord_semi_axes_mm[0] * 1.2
                 + anatomy.canal_margin_mm[0] + anatomy.arch_thickness_mm) + rng.uniform(2.0, 4.0)
    lower, upper = _cross_section_box(curve, s_range, (-u_half, u_half), v_range)
    voxel = np.full(3, rng.uniform(*voxel_mm_range))
    voxel[0] = rng.uniform(voxel[1], voxel_mm_range[1])  # right-left is the thick axis
    axcodes = str(rng.choice(STORAGE_AXCODES))
    grid = make_grid(lower_mm=lower, upper_mm=upper, voxel_mm=voxel, axcodes=axcodes)
    bias = draw_bias_field(rng, centre_mm=0.5 * (lower + upper), scale_mm=60.0)
    return DemoSubjectSpec(curve=curve, anatomy=anatomy, grid=grid, bias=bias,
                           noise_sigma=float(rng.uniform(0.02, 0.05)), fov_discs=fov_discs)


def _cross_section_box(curve: SpineCurve, s_range: tuple[float, float],
                       u_range: tuple[float, float],
                       v_range: tuple[float, float]) -> tuple[NDArray, NDArray]:
    """World axis-aligned box containing the curved slab ``s_range x u_range x v_range``."""
    s = np.linspace(s_range[0], s_range[1], 200)
    corners = [(u, v) for u in u_range for v in v_range]
    uvs = np.concatenate([np.column_stack([np.full_like(s, u), np.full_like(s, v), s])
                          for u, v in corners])
    points = curve.curve_to_world(uvs)
    return points.min(axis=0), points.max(axis=0)


def render_demo_subject(spec: DemoSubjectSpec, *, rng: np.random.Generator,
                        t1w: bool = False) -> RenderedSubject:
    """Render the T2w (and optionally T1w) image, cord mask, disc labels and tissue map.

    ``rng`` only drives the noise, so the noise-free outputs depend on ``spec`` alone.
    """
    shape = spec.grid.shape
    width = float(spec.grid.voxel_mm.mean())
    t2 = np.zeros(shape, np.float32)
    t1 = np.zeros(shape, np.float32) if t1w else None
    dseg = np.zeros(shape, np.uint8)
    for slab, points in spec.grid.points_mm(chunk_voxels=1 << 18):
        uvs = spec.curve.world_to_curve(points)
        t2_chunk, t1_chunk, dseg_chunk = _tissue_images(spec.anatomy, uvs, width, t1w=t1w)
        sub_shape = (shape[0], shape[1], slab.stop - slab.start)
        t2[:, :, slab] = t2_chunk.reshape(sub_shape)
        dseg[:, :, slab] = dseg_chunk.reshape(sub_shape)
        if t1 is not None and t1_chunk is not None:
            t1[:, :, slab] = t1_chunk.reshape(sub_shape)
    bias = np.empty(shape, np.float32)
    for slab, points in spec.grid.points_mm():
        bias[:, :, slab] = spec.bias(points).reshape(shape[0], shape[1], -1)
    t2_noisy = to_int16(add_rician_noise(t2 * bias, sigma=spec.noise_sigma, rng=rng))
    t1_noisy = None
    if t1 is not None:
        t1_noisy = to_int16(add_rician_noise(t1 * bias, sigma=spec.noise_sigma, rng=rng))
    return RenderedSubject(t2w=t2_noisy, t1w=t1_noisy, t2w_noisefree=t2,
                           cord_mask=(dseg == TISSUES["cord"]).astype(np.uint8),
                           disc_labels=disc_label_image(spec.curve, labelled_discs(
                               spec.anatomy.disc_arc_mm, spec.fov_discs), spec.grid),
                           dseg=dseg)


def _tissue_images(anatomy: DemoAnatomy, uvs: NDArray, width_mm: float, *,
                   t1w: bool) -> tuple[NDArray, NDArray | None, NDArray]:
    distances = anatomy.signed_distances(uvs)
    fractions = {name: soft_fraction(d, width_mm) for name, d in distances.items()}
    background = np.clip(1.0 - sum(fractions.values()), 0.0, 1.0)
    t2 = background * T2W_INTENSITY["background"]
    t1 = background * T1W_INTENSITY["background"] if t1w else None
    dseg = np.zeros(len(uvs), np.uint8)
    for name, label in TISSUES.items():
        t2 = t2 + fractions[name] * T2W_INTENSITY[name]
        if t1 is not None:
            t1 = t1 + fractions[name] * T1W_INTENSITY[name]
        dseg[(dseg == 0) & (distances[name] < 0)] = label
    return t2, t1, dseg


def labelled_discs(disc_arc_mm: dict[int, float],
                   fov_discs: tuple[int, int]) -> dict[int, float]:
    """The discs a rater labels: those of the field-of-view range ``fov_discs``."""
    return {d: s for d, s in disc_arc_mm.items() if fov_discs[0] <= d <= fov_discs[1]}


def disc_label_image(curve: SpineCurve, disc_arc_mm: dict[int, float],
                     grid: Grid) -> NDArray[np.uint8]:
    """Single-voxel disc labels (value = SCT disc number) on the cord centre, inside the grid."""
    labels = np.zeros(grid.shape, np.uint8)
    for disc, ijk in disc_voxels(curve, disc_arc_mm, grid).items():
        labels[ijk] = disc
    return labels


def disc_voxels(curve: SpineCurve, disc_arc_mm: dict[int, float],
                grid: Grid) -> dict[int, tuple[int, int, int]]:
    """Nearest voxel of each disc centre that falls inside the grid."""
    discs = sorted(disc_arc_mm)
    points = curve.curve_to_world(np.array([[0.0, 0.0, disc_arc_mm[d]] for d in discs]))
    inverse = np.linalg.inv(grid.affine)
    ijk = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(grid.shape)), axis=1)
    return {d: (int(i), int(j), int(k)) for d, (i, j, k), ok in zip(discs, ijk, inside,
                                                                     strict=True) if ok}



def render_straight_reference(spec: DemoSubjectSpec, *, voxel_mm: float = 0.5,
                              margin_mm: float = 10.0) -> tuple[NDArray, NDArray, NDArray]:
    """Noise-free T2w and tissue map of the unbent anatomy, world ``(x, y, z) = (u, v, s)``.

    Returns ``(t2w float32, dseg uint8, affine (4, 4))`` on an RAS grid of ``voxel_mm`` spacing
    covering the field-of-view discs plus ``margin_mm``.
    """
    anatomy = spec.anatomy
    u_half = anatomy.body_half_axes_mm[0] + 4.0
    v_low = -(anatomy.cord_semi_axes_mm[1] * 1.2 + anatomy.canal_margin_mm[1]
              + anatomy.arch_thickness_mm + 3.0)
    v_high = anatomy.body_centre_v_mm() + anatomy.body_half_axes_mm[1] + 3.0
    s_low = anatomy.disc_arc_mm[spec.fov_discs[1]] - margin_mm
    s_high = anatomy.disc_arc_mm[spec.fov_discs[0]] + margin_mm
    lower = np.array([-u_half, v_low, s_low])
    shape = np.ceil((np.array([u_half, v_high, s_high]) - lower) / voxel_mm).astype(int) + 1
    affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = lower
    grid = Grid(shape=tuple(int(n) for n in shape), affine=affine)  # type: ignore[arg-type]
    t2 = np.zeros(grid.shape, np.float32)
    dseg = np.zeros(grid.shape, np.uint8)
    for slab, points in grid.points_mm(chunk_voxels=1 << 18):
        t2_chunk, _, dseg_chunk = _tissue_images(anatomy, points, voxel_mm, t1w=False)
        t2[:, :, slab] = t2_chunk.reshape(grid.shape[0], grid.shape[1], -1)
        dseg[:, :, slab] = dseg_chunk.reshape(grid.shape[0], grid.shape[1], -1)
    return t2, dseg, affine


@dataclass(frozen=True)
class RenderedT2starw:
    """A thick-slice axial T2*w-like stack of a demo subject, on its own grid."""

    grid: Grid
    image: NDArray[np.int16]
    cord_mask: NDArray[np.uint8]
    """Voxels at least half inside the cord (through-slice partial volume included)."""


def t2starw_grid(spec: DemoSubjectSpec) -> Grid:
    """Axial grid (``T2STARW_VOXEL_MM``, LAS) over the cord between ``T2STARW_SLAB_DISCS``:
    a function of ``spec`` only (no random draw)."""
    anatomy = spec.anatomy
    top, bottom = T2STARW_SLAB_DISCS
    s_range = (anatomy.disc_arc_mm[bottom], anatomy.disc_arc_mm[top])
    u_half = anatomy.body_half_axes_mm[0] + 4.0
    v_range = (-(anatomy.cord_semi_axes_mm[1] * 1.2 + anatomy.canal_margin_mm[1]
                 + anatomy.arch_thickness_mm + 4.0), anatomy.body_centre_v_mm())
    lower, upper = _cross_section_box(spec.curve, s_range, (-u_half, u_half), v_range)
    centre_z = 0.5 * (lower[2] + upper[2])
    half_z = 0.5 * (spec.curve.curve_to_world(np.array([[0.0, 0.0, s_range[1]]]))[0, 2]
                    - spec.curve.curve_to_world(np.array([[0.0, 0.0, s_range[0]]]))[0, 2])
    lower[2], upper[2] = centre_z - abs(half_z), centre_z + abs(half_z)
    return make_grid(lower_mm=lower, upper_mm=upper, voxel_mm=np.array(T2STARW_VOXEL_MM),
                     axcodes="LAS")


def render_demo_t2starw(spec: DemoSubjectSpec, *, rng: np.random.Generator) -> RenderedT2starw:
    """Render the T2*w stack: every thick slice is the mean of ``T2STARW_SUBSAMPLES`` thin
    samples across it, with the subject's bias field and noise level."""
    grid = t2starw_grid(spec)
    shape = grid.shape
    width = float(min(T2STARW_VOXEL_MM))
    step = grid.affine[:3, 2]
    offsets = (np.arange(T2STARW_SUBSAMPLES) + 0.5) / T2STARW_SUBSAMPLES - 0.5
    image = np.zeros(shape, np.float32)
    cord = np.zeros(shape, np.float32)
    bias = np.empty(shape, np.float32)
    for slab, points in grid.points_mm(chunk_voxels=1 << 18):
        sub_shape = (shape[0], shape[1], slab.stop - slab.start)
        bias[:, :, slab] = spec.bias(points).reshape(sub_shape)
        for offset in offsets:
            uvs = spec.curve.world_to_curve(points + offset * step)
            distances = spec.anatomy.signed_distances(uvs)
            fractions = {name: soft_fraction(d, width) for name, d in distances.items()}
            value = np.clip(1.0 - sum(fractions.values()), 0.0, 1.0) * T2STARW_INTENSITY[
                "background"]
            for name in TISSUES:
                value = value + fractions[name] * T2STARW_INTENSITY[name]
            image[:, :, slab] += (value / len(offsets)).reshape(sub_shape)
            cord[:, :, slab] += ((distances["cord"] < 0) / len(offsets)).reshape(sub_shape)
    noisy = to_int16(add_rician_noise(image * bias, sigma=spec.noise_sigma, rng=rng))
    return RenderedT2starw(grid=grid, image=noisy, cord_mask=(cord >= 0.5).astype(np.uint8))
