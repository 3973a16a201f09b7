"""Realistic phantoms: the PAM50 anatomy bent, stretched and resampled per subject.

Each subject is defined by a spine curve, per-level stretch factors and a cross-section scale
(:class:`~spinal_bidsapp.synth.truth.TemplateMapping`). A subject voxel at world ``p`` takes the
PAM50 values at ``Z(s), x0 + u / scale_u, y0 + v / scale_v`` where ``(u, v, s)`` are its curve
coordinates: cross-sections stay perpendicular to the curve. T2w intensities come from the real
``PAM50_small_t2`` (1 x 1 x 2 mm), masks from the 0.5 mm PAM50 volumes.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import CONUS
from spinal_bidsapp.image import load_volume
from spinal_bidsapp.synth.acquisition import (
    STORAGE_AXCODES,
    BiasField,
    Grid,
    add_rician_noise,
    draw_bias_field,
    make_grid,
    to_int16,
)
from spinal_bidsapp.synth.curve import SpineCurve, draw_curve
from spinal_bidsapp.synth.spine import (
    PAM50_AFFINE,
    PAM50_DISC_Z_MM,
    PAM50_SMALL_OFFSET_MM,
    reference_level_lengths_mm,
)
from spinal_bidsapp.synth.truth import TemplateMapping

logger = logging.getLogger(__name__)

PHANTOM_DISCS = range(1, 12)
"""Discs carried by the mapping of cervical phantoms (field of view ending above disc 11)."""

WHOLE_CORD_DISCS = range(1, 22)
"""Discs carried by the mapping of phantoms whose field of view reaches disc 11 or lower: every
PAM50 disc, 1 (top of C1) to 21 (L1/L2)."""

_CERVICAL_BOTTOM_DISC = 10  # lowest field-of-view disc of a cervical phantom (PHANTOM_DISCS)

PHANTOM_TISSUES: dict[str, int] = {"cord": 1, "csf": 2, "spine": 3}
_CERVICAL_CROP_Z_VOX = 560  # first PAM50 slice kept for cervical phantoms (about disc 12)
_CSF_LEVEL_Z_VOX = 560  # intensity scale: median T2 over the CSF above this PAM50 slice
_MASKS = ("cord", "csf", "spine", "gm", "wm")
_OFFSET_TOLERANCE_MM = 1.0


@dataclass(frozen=True)
class Pam50Anatomy:
    """PAM50 volumes used by the phantoms, cropped in z (all on the 0.5 mm grid, float32)."""

    masks: dict[str, NDArray[np.float32]]
    mask_affine: NDArray[np.float64]  # voxel -> PAM50 world of the cropped masks
    t2: NDArray[np.float32]  # PAM50_small T2, scaled so that CSF is about 1
    t2_affine: NDArray[np.float64]  # voxel -> PAM50_small world
    conus_z_mm: float | None = None  # PAM50 z of label 60 (conus medullaris tip), if labelled


def load_pam50(pam50_dir: Path, pam50_small_dir: Path, *,
               bottom_disc: int = _CERVICAL_BOTTOM_DISC) -> Pam50Anatomy:
    """Read the PAM50 masks and the PAM50_small T2, after checking the disc geometry.

    Only the slices the phantoms can reach are kept: from about disc 12 up for fields of view
    ending at ``bottom_disc`` <= 10, the whole template (down to the sacrum) otherwise.

    Raises
    ------
    MissingInputError
        A PAM50 file is absent.
    InputDataError
        The disc labels do not match the expected PAM50 geometry or frame offset.
    """
    discs_full = _disc_points(pam50_dir / "PAM50_label_disc.nii.gz")
    discs_small = _disc_points(pam50_small_dir / "PAM50_small_label_disc.nii.gz")
    for disc, z in PAM50_DISC_Z_MM.items():
        if disc not in discs_full or abs(discs_full[disc][2] - z) > 0.01:
            raise InputDataError(f"{pam50_dir}: disc {disc} is not at z = {z} mm; this is not "
                                 "the PAM50 release the phantoms were built for")
    common = sorted(set(discs_full) & set(discs_small) & set(range(2, 20)))
    offset = np.mean([discs_small[d] - discs_full[d] for d in common], axis=0)
    if len(common) < 5 or np.abs(offset - PAM50_SMALL_OFFSET_MM).max() > _OFFSET_TOLERANCE_MM:
        raise InputDataError(f"PAM50_small is offset by {offset.round(2)} mm from PAM50, expected "
                             f"{PAM50_SMALL_OFFSET_MM}; check {pam50_small_dir}")
    masks = {}
    z0 = _CERVICAL_CROP_Z_VOX if bottom_disc <= _CERVICAL_BOTTOM_DISC else 0
    for name in _MASKS:
        volume = load_volume(pam50_dir / f"PAM50_{name}.nii.gz", dtype=np.float32)
        if not np.allclose(volume.affine, PAM50_AFFINE, atol=1e-3):
            raise InputDataError(f"PAM50_{name} is not on the 0.5 mm PAM50 grid")
        masks[name] = np.ascontiguousarray(volume.data[:, :, z0:])
    crop = _z_shift(z0)
    t2 = load_volume(pam50_small_dir / "PAM50_small_t2.nii.gz", dtype=np.float32)
    csf = masks["csf"][:, :, _CSF_LEVEL_Z_VOX - z0:]
    level = _csf_level(t2.data, t2.affine, csf, PAM50_AFFINE @ _z_shift(_CSF_LEVEL_Z_VOX))
    conus = discs_full.get(CONUS)
    return Pam50Anatomy(masks=masks, mask_affine=PAM50_AFFINE @ crop,
                        t2=(t2.data / level).astype(np.float32), t2_affine=t2.affine,
                        conus_z_mm=None if conus is None else float(conus[2]))


def _z_shift(slices: int) -> NDArray[np.float64]:
    shift = np.eye(4)
    shift[2, 3] = slices
    return shift


def _disc_points(path: Path) -> dict[int, NDArray[np.float64]]:
    volume = load_volume(path, dtype=np.float32)
    ijk = np.argwhere(volume.data > 0)
    values = np.rint(volume.data[tuple(ijk.T)]).astype(int)
    points = ijk @ volume.affine[:3, :3].T + volume.affine[:3, 3]
    return {int(v): p for v, p in zip(values, points, strict=True)}


def _csf_level(t2: NDArray, t2_affine: NDArray, csf: NDArray, csf_affine: NDArray) -> float:
    """Median T2 over the cervical CSF (used to scale the template intensities)."""
    ijk = np.argwhere(csf[:, :, ::4] > 0.5) * np.array([1, 1, 4])
    world = ijk @ csf_affine[:3, :3].T + csf_affine[:3, 3] + PAM50_SMALL_OFFSET_MM
    inverse = np.linalg.inv(t2_affine)
    vox = world @ inverse[:3, :3].T + inverse[:3, 3]
    values = ndimage.map_coordinates(t2, vox.T, order=1, mode="nearest")
    return float(np.median(values))


@dataclass(frozen=True)
class PhantomSubjectSpec:
    """Everything needed to render one phantom subject (serialised into the truth JSON)."""

    curve: SpineCurve
    mapping: TemplateMapping
    grid: Grid
    bias: BiasField
    noise_sigma: float  # relative to CSF intensity (about 1)
    fov_discs: tuple[int, int]


def draw_phantom_subject(rng: np.random.Generator, *,
                         voxel_mm_range: tuple[float, float] = (0.5, 1.0),
                         fov_discs: tuple[int, int] = (2, 8)) -> PhantomSubjectSpec:
    """Draw curve, level stretches, cross-section scale and acquisition of one subject.

    ``fov_discs`` (top, bottom), SCT numbers within 1..21, bound the field of view (plus a
    margin of 5-14 mm). A cervical field of view (bottom disc <= 10) draws exactly what it always
    drew, so existing cohorts are unchanged; a longer one carries all 21 PAM50 discs and bends
    along a longer curve (checked over its whole length, with tilts scaled down so that the
    bounding acquisition grid stays a whole-spine sagittal slab rather than a tilted box).
    """
    if not 1 <= fov_discs[0] < fov_discs[1] <= WHOLE_CORD_DISCS[-1]:
        raise ValueError(f"fov_discs must be two discs top < bottom within 1..21, got "
                         f"{fov_discs}")
    levels = PHANTOM_DISCS if fov_discs[1] <= _CERVICAL_BOTTOM_DISC else WHOLE_CORD_DISCS
    discs = tuple(levels)
    stretch = rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.1, len(discs) - 1)
    arc = np.concatenate([[0.0], -np.cumsum(reference_level_lengths_mm(levels) * stretch)])
    top, bottom = discs.index(fov_discs[0]), discs.index(fov_discs[1])
    arc -= 0.5 * (arc[top] + arc[bottom])
    mapping = TemplateMapping(discs=discs, disc_arc_mm=tuple(float(s) for s in arc),
                              disc_template_z_mm=tuple(PAM50_DISC_Z_MM[d] for d in discs),
                              cross_scale=(float(rng.uniform(0.9, 1.1)),
                                           float(rng.uniform(0.9, 1.1))))
    if levels is PHANTOM_DISCS:
        curve = draw_curve(rng)
    else:
        checked = 0.5 * float(arc[top] - arc[bottom]) + 25.0  # FOV margin + curve offset
        shrink = min(1.0, 100.0 / checked)
        curve = draw_curve(rng, coronal_tilt_deg=5.0 * shrink, sagittal_tilt_deg=10.0 * shrink,
                           half_length_mm=checked + 60.0, checked_half_mm=checked)
    curve = dataclasses.replace(
        curve, x=dataclasses.replace(curve.x, offset_mm=float(rng.uniform(-10, 10))),
        y=dataclasses.replace(curve.y, offset_mm=float(rng.uniform(-10, 10))),
        zc_mm=float(rng.uniform(-30, 30)))
    s_range = (arc[bottom] - rng.uniform(6.0, 14.0), arc[top] + rng.uniform(5.0, 14.0))
    u_half = rng.uniform(16.0, 22.0)
    v_range = (-rng.uniform(22.0, 28.0), rng.uniform(28.0, 34.0))
    s = np.linspace(*s_range, 200)
    uvs = np.concatenate([np.column_stack([np.full_like(s, u), np.full_like(s, v), s])
                          for u in (-u_half, u_half) for v in v_range])
    points = curve.curve_to_world(uvs)
    lower, upper = points.min(axis=0), points.max(axis=0)
    in_plane = rng.uniform(*voxel_mm_range)
    voxel = np.array([rng.uniform(in_plane, voxel_mm_range[1]), in_plane, in_plane])
    grid = make_grid(lower_mm=lower, upper_mm=upper, voxel_mm=voxel,
                     axcodes=str(rng.choice(STORAGE_AXCODES)),
                     oblique_deg=float(rng.uniform(-5.0, 5.0)))
    bias = draw_bias_field(rng, centre_mm=0.5 * (lower + upper), scale_mm=70.0)
    return PhantomSubjectSpec(curve=curve, mapping=mapping, grid=grid, bias=bias,
                              noise_sigma=float(rng.uniform(0.02, 0.04)), fov_discs=fov_discs)


@dataclass(frozen=True)
class RenderedPhantom:
    """Arrays of one phantom on its acquisition grid (storage order of ``grid``)."""

    t2w: NDArray[np.int16]
    t1w: NDArray[np.int16] | None
    t2w_noisefree: NDArray[np.float32]
    cord_mask: NDArray[np.uint8]
    dseg: NDArray[np.uint8]
    pam50_mm: NDArray[np.float32] | None  # (nx, ny, nz, 3) true PAM50 point of each voxel


def render_phantom_subject(spec: PhantomSubjectSpec, anatomy: Pam50Anatomy, *,
                           rng: np.random.Generator, t1w: bool = False,
                           keep_mapping: bool = False) -> RenderedPhantom:
    """Sample the PAM50 anatomy on the subject grid; ``rng`` only drives the noise."""
    shape = spec.grid.shape
    t2 = np.zeros(shape, np.float32)
    t1 = np.zeros(shape, np.float32) if t1w else None
    dseg = np.zeros(shape, np.uint8)
    bias = np.zeros(shape, np.float32)
    pam50 = np.zeros((*shape, 3), np.float32) if keep_mapping else None
    for slab, points in spec.grid.points_mm(chunk_voxels=1 << 18):
        sub_shape = (shape[0], shape[1], slab.stop - slab.start)
        template = spec.mapping.straight_to_template(spec.curve.world_to_curve(points))
        values = _sample_template(anatomy, template)
        t2[:, :, slab] = values["t2"].reshape(sub_shape)
        labels = np.zeros(len(points), np.uint8)
        for name, label in PHANTOM_TISSUES.items():
            labels[(labels == 0) & (values[name] >= 0.5)] = label
        dseg[:, :, slab] = labels.reshape(sub_shape)
        if t1 is not None:
            t1[:, :, slab] = _t1_contrast(values).reshape(sub_shape)
        bias[:, :, slab] = spec.bias(points).reshape(sub_shape)
        if pam50 is not None:
            pam50[:, :, slab] = template.reshape(*sub_shape, 3)
    sigma = spec.noise_sigma
    return RenderedPhantom(
        t2w=to_int16(add_rician_noise(t2 * bias, sigma=sigma, rng=rng)),
        t1w=None if t1 is None else to_int16(add_rician_noise(t1 * bias, sigma=sigma, rng=rng)),
        t2w_noisefree=t2, cord_mask=(dseg == PHANTOM_TISSUES["cord"]).astype(np.uint8),
        dseg=dseg, pam50_mm=pam50)


def _sample_template(anatomy: Pam50Anatomy, template_mm: NDArray) -> dict[str, NDArray]:
    """Trilinear samples of the masks and the T2 at PAM50 world points ``(N, 3)``."""
    inverse = np.linalg.inv(anatomy.mask_affine)
    vox = (template_mm @ inverse[:3, :3].T + inverse[:3, 3]).T
    values = {name: ndimage.map_coordinates(mask, vox, order=1, mode="constant", cval=0.0,
                                            output=np.float32)
              for name, mask in anatomy.masks.items()}
    inverse = np.linalg.inv(anatomy.t2_affine)
    vox = ((template_mm + PAM50_SMALL_OFFSET_MM) @ inverse[:3, :3].T + inverse[:3, 3]).T
    # mirror beyond the 70 x 70 mm template slab: anatomy-like texture instead of streaks
    values["t2"] = ndimage.map_coordinates(anatomy.t2, vox, order=1, mode="mirror",
                                           output=np.float32)
    return values


def _t1_contrast(values: dict[str, NDArray]) -> NDArray[np.float32]:
    """T1w-like image: dark CSF, bright cord (white above grey matter), inverted T2 elsewhere."""
    cord = np.clip(values["gm"] + values["wm"], 0.0, 1.0)
    csf = np.clip(values["csf"], 0.0, 1.0 - cord)
    rest = 1.0 - cord - csf
    tissue = np.clip(0.85 - 0.55 * values["t2"], 0.15, 0.85)
    cord_signal = (0.80 * values["wm"] + 0.68 * values["gm"]) / np.maximum(cord, 1e-6)
    return (rest * tissue + cord * cord_signal + csf * 0.10).astype(np.float32)



def cord_area_profile(anatomy: Pam50Anatomy) -> tuple[NDArray, NDArray]:
    """Template cord cross-section area (mm2) per 0.5 mm slice: ``(z_mm, area_mm2)``."""
    cord = anatomy.masks["cord"] >= 0.5
    voxel_area = abs(anatomy.mask_affine[0, 0] * anatomy.mask_affine[1, 1])
    z = anatomy.mask_affine[2, 3] + anatomy.mask_affine[2, 2] * np.arange(cord.shape[2])
    return z, cord.sum(axis=(0, 1)) * voxel_area


def true_cord_volume_mm3(mapping: TemplateMapping, z_mm: NDArray, area_mm2: NDArray,
                         disc_top: int, disc_bottom: int) -> float:
    """Subject cord volume between two discs: ``scale_u scale_v * integral A(Z) ds``."""
    z_top = mapping.disc_template_z_mm[mapping.discs.index(disc_top)]
    z_bottom = mapping.disc_template_z_mm[mapping.discs.index(disc_bottom)]
    fine = np.linspace(z_bottom, z_top, 4001)
    area = np.interp(fine, z_mm, area_mm2)
    s = mapping.template_to_straight(np.column_stack([np.zeros_like(fine), np.zeros_like(fine)
                                                      + mapping.template_xy_mm[1], fine]))[:, 2]
    return float(np.trapezoid(area, s) * mapping.cross_scale[0] * mapping.cross_scale[1])
