"""Builtin registration of a subject to a straight-cord template (PAM50 or one of ours).

Two stages, composed into one field per direction (one resampling of the data, ever):

1. **Disc-matched straightening** onto the template centerline (``geometry.straighten``): every
   common disc lands exactly on its template disc, levels are stretched linearly in arc length.
2. **In-plane refinement**: antspyx SyN between the straightened cord mask and the template cord
   mask, with the deformation restricted to the axial plane (``restrict_transformation=(1,1,0)``,
   the template's z axis runs along the cord), so the refinement can reshape cross-sections but
   can never move a disc.

The template grid is cropped along the cord to the part the subject covers (plus a margin); the
anat->template field lives on that slab of the template grid, in template world coordinates.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.geometry.discs import ArcMap, arc_map_from_discs, project_discs
from spinal_bidsapp.geometry.fields import (
    DisplacementField,
    apply_field,
    compose_fields,
    transform_points,
)
from spinal_bidsapp.geometry.straighten import compute_displacement
from spinal_bidsapp.image import Volume, load_field

logger = logging.getLogger(__name__)

SLAB_MARGIN_MM = 10.0
"""Template slab kept beyond the subject's cord coverage, along the cord."""


@dataclass(frozen=True)
class RefinementOptions:
    """antspyx SyN settings of the in-plane refinement (explicit, saved with the run)."""

    enabled: bool = True
    box_margin_mm: float = 10.0
    """In-plane margin around the template cord of the region the refinement works in."""
    mask_smoothing_mm: float = 1.0
    grad_step: float = 0.25
    flow_sigma: float = 3.0
    total_sigma: float = 0.0
    iterations: tuple[int, ...] = (60, 40, 20)
    """Per resolution level (antspyx derives shrink factors 2^(n-1) ... 1 from the length)."""
    random_seed: int = 0


@dataclass(frozen=True)
class TemplateRegistration:
    """Fields of a subject <-> template registration.

    Attributes
    ----------
    anat_to_template : DisplacementField
        On the template slab grid; ``template point p -> anat point p + u(p)`` (resamples the
        anatomy into template space).
    template_to_anat : DisplacementField
        On the anatomical grid; ``anat point q -> template point q + v(q)``.
    slab_shape, slab_affine
        The template slab grid.
    """

    anat_to_template: DisplacementField
    template_to_anat: DisplacementField
    slab_shape: tuple[int, int, int]
    slab_affine: NDArray[np.float64]


def template_slab(template_cord: Volume, template_centerline: Centerline, z_range_mm: tuple[float,
                  float]) -> tuple[tuple[int, int, int], NDArray[np.float64], slice]:
    """Crop the template grid along its slice axis to ``z_range_mm`` of cord arc length."""
    aff = template_cord.affine
    lo, hi = z_range_mm
    pts_lo_hi = np.interp([lo, hi], template_centerline.arc_mm, np.arange(
        len(template_centerline.arc_mm)))
    ends = template_centerline.points_mm[np.clip(np.rint(pts_lo_hi).astype(int), 0,
                                                 len(template_centerline.arc_mm) - 1)]
    inv = np.linalg.inv(aff)
    k = (ends @ inv[:3, :3].T + inv[:3, 3])[:, 2]
    k0 = int(max(0, np.floor(k.min())))
    k1 = int(min(template_cord.shape[2], np.ceil(k.max()) + 1))
    if k1 - k0 < 2:
        k0, k1 = 0, template_cord.shape[2]
    affine = aff.copy()
    affine[:3, 3] = aff[:3, :3] @ np.array([0.0, 0.0, k0]) + aff[:3, 3]
    shape = (template_cord.shape[0], template_cord.shape[1], k1 - k0)
    return shape, affine, slice(k0, k1)


def register_to_template(anat: Volume, cord: Volume, discs_mm: Mapping[int, NDArray],
                         template_cord: Volume, template_discs_mm: Mapping[int, NDArray], *,
                         options: RefinementOptions = RefinementOptions()
                         ) -> TemplateRegistration:
    """Register a subject (anatomy grid, cord mask, disc points) to a straight-cord template.

    Parameters
    ----------
    anat, cord : Volume
        Anatomy and binary cord mask on the same grid.
    discs_mm : mapping int -> (3,) mm, world
        Subject disc points (SCT numbering); at least one must also exist in the template.
    template_cord : Volume
        Template cord mask (its slice axis, the third voxel axis, runs along the cord).
    template_discs_mm : mapping int -> (3,) mm, world
    """
    subject_cl = centerline_from_mask(cord.data, cord.affine)
    template_cl = centerline_from_mask(template_cord.data, template_cord.affine)
    arc_map = arc_map_from_discs(project_discs(discs_mm, subject_cl),
                                 project_discs(template_discs_mm, template_cl))
    covered = arc_map.forward(np.array([0.0, subject_cl.length_mm]))
    z_range = (float(covered.min() - SLAB_MARGIN_MM), float(covered.max() + SLAB_MARGIN_MM))
    shape, affine, ks = template_slab(template_cord, template_cl, z_range)
    # fields only where they are needed: the slab of the template grid and the subject's grid
    a2t = compute_displacement(shape, affine, template_cl, subject_cl,
                               ArcMap(source_mm=arc_map.dest_mm, dest_mm=arc_map.source_mm))
    t2a = compute_displacement(anat.shape, anat.affine, subject_cl, template_cl, arc_map)
    if options.enabled:
        fixed = template_cord.data[:, :, ks].astype(np.float32)
        moving = apply_field(cord.data.astype(np.float32), cord.affine, a2t, order=1)
        box = _cord_box(fixed, affine, margin_mm=options.box_margin_mm)
        box_affine = affine.copy()
        box_affine[:3, 3] = affine[:3, :3] @ np.array([box[0].start, box[1].start, 0.0]) + \
            affine[:3, 3]
        syn_fwd, syn_inv = _inplane_syn(fixed[box], moving[box], box_affine, options)
        a2t = compose_fields(_embed(syn_fwd, box, shape, affine), a2t)
        t2a = compose_fields(t2a, _embed(syn_inv, box, shape, affine))
    return TemplateRegistration(anat_to_template=a2t, template_to_anat=t2a, slab_shape=shape,
                                slab_affine=affine)


def _cord_box(cord: NDArray, affine: NDArray[np.float64], *,
              margin_mm: float) -> tuple[slice, slice, slice]:
    """In-plane box around the template cord (all slices): where the refinement can matter."""
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    ij = np.argwhere(cord.any(axis=2))
    lo, hi = ij.min(axis=0), ij.max(axis=0) + 1
    pad = np.ceil(margin_mm / spacing[:2]).astype(int)
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, cord.shape[:2])
    return slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])), slice(None)


def _embed(field: DisplacementField, box: tuple[slice, slice, slice],
           shape: tuple[int, int, int], affine: NDArray[np.float64]) -> DisplacementField:
    """Put a box's field back on the full grid, tapered to zero over the box's outer 20%."""
    data = np.zeros((*shape, 3), np.float32)
    nx, ny = field.shape[0], field.shape[1]
    taper = np.outer(_ramp(nx), _ramp(ny)).astype(np.float32)[:, :, None, None]
    data[box[0], box[1]] = field.data * taper
    return DisplacementField(data=data, affine=affine)


def _ramp(n: int) -> NDArray[np.float64]:
    edge = max(1, n // 5)
    ramp = np.ones(n)
    rise = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, edge))
    ramp[:edge], ramp[n - edge:] = rise, rise[::-1]
    return ramp


def _inplane_syn(fixed: NDArray, moving: NDArray, affine: NDArray[np.float64],
                 options: RefinementOptions) -> tuple[DisplacementField, DisplacementField]:
    """SyN restricted to the first two voxel axes; returns (forward, inverse) on the same grid."""
    import ants


    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    sigma = options.mask_smoothing_mm / spacing

    def as_ants(data: NDArray) -> ants.ANTsImage:
        smooth = ndimage.gaussian_filter(data.astype(np.float32), sigma=sigma)
        img = ants.from_numpy(smooth.astype(np.float32))
        set_ants_geometry(img, affine)
        return img

    with tempfile.TemporaryDirectory(prefix="spinal_bidsapp_syn_") as tmp:
        result = ants.registration(
            fixed=as_ants(fixed), moving=as_ants(moving), type_of_transform="SyNOnly",
            syn_metric="meansquares", syn_sampling=0, grad_step=options.grad_step,
            flow_sigma=options.flow_sigma, total_sigma=options.total_sigma,
            reg_iterations=options.iterations, restrict_transformation=(1, 1, 0),
            outprefix=str(Path(tmp) / "syn_"), random_seed=options.random_seed,
            verbose=False,
        )
        forward = [p for p in result["fwdtransforms"] if p.endswith("Warp.nii.gz")]
        inverse = [p for p in result["invtransforms"] if p.endswith("InverseWarp.nii.gz")]
        return load_field(Path(forward[0])), load_field(Path(inverse[0]))


def set_ants_geometry(img: object, affine: NDArray[np.float64]) -> None:
    """Copy a RAS voxel-to-world affine onto an ANTs image (ITK uses LPS)."""
    lps = np.diag([-1.0, -1.0, 1.0])
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    direction = lps @ affine[:3, :3] / spacing
    img.set_spacing(tuple(float(s) for s in spacing))  # type: ignore[attr-defined]
    img.set_origin(tuple(float(o) for o in lps @ affine[:3, 3]))  # type: ignore[attr-defined]
    img.set_direction(direction)  # type: ignore[attr-defined]


def disc_errors_mm(registration: TemplateRegistration, discs_mm: Mapping[int, NDArray],
                   template_discs_mm: Mapping[int, NDArray]) -> dict[int, tuple[float, float]]:
    """Per common disc: (anat->template error, template->anat error) in mm along the cord."""
    common = sorted(set(discs_mm) & set(template_discs_mm))
    errors: dict[int, tuple[float, float]] = {}
    for value in common:
        src = np.asarray(discs_mm[value], dtype=np.float64)[None]
        dst = np.asarray(template_discs_mm[value], dtype=np.float64)[None]
        forward = transform_points(src, registration.template_to_anat)
        backward = transform_points(dst, registration.anat_to_template)
        errors[value] = (float(np.linalg.norm(forward - dst)),
                         float(np.linalg.norm(backward - src)))
    return errors
