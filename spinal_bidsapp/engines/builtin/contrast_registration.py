"""Registration of another contrast of a session onto the driving anatomy, on the cord masks.

Used by the group ``--contrasts`` templates (:mod:`spinal_bidsapp.group.contrasts`): both scans
of a session share scanner coordinates, so the identity is the start and the fallback; rigid,
affine and a small nonlinear step on the two cord masks (contrast-independent) refine it, each
kept only when it improves the cord overlap (see :func:`register_contrast`).
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from spinal_bidsapp.engines.builtin.registration import set_ants_geometry
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.image import Volume, crop, index_range, load_field

if TYPE_CHECKING:
    import ants

logger = logging.getLogger(__name__)

MASK_SMOOTHING_MM = 1.0
AFFINE_ITERATIONS = (200, 100)
NONLINEAR_ITERATIONS = (20, 10)
"""SyN iterations per level (shrink 2, 1): a small correction, not a full deformable match."""
NONLINEAR_STEP = 0.1
"""SyN gradient step (flow sigma 3 voxels, total sigma 0)."""
NONLINEAR_BOX_MM = 15.0
"""The nonlinear step sees only the driving cord mask's bounding box, dilated this much."""
NONLINEAR_MI_WEIGHT = 0.5
"""Weight of the intensity mutual information (Mattes, 32 bins) next to the masks' mean squares
(weight 1) in the nonlinear step."""
REGISTRATION_METHOD = (
    "scanner coordinates, refined by an antspyx rigid then affine registration of the two "
    f"cord masks (smoothed {MASK_SMOOTHING_MM:g} mm, mean squares, iterations "
    f"{list(AFFINE_ITERATIONS)}) when the contrast has a manual cord mask and it improves the "
    "cord overlap, then a small nonlinear step from the affine result (SyNOnly, gradient step "
    f"{NONLINEAR_STEP:g}, iterations {list(NONLINEAR_ITERATIONS)}, in the driving cord's "
    f"bounding box dilated {NONLINEAR_BOX_MM:g} mm; mask mean squares plus Mattes mutual "
    f"information of the intensities, weight {NONLINEAR_MI_WEIGHT:g}) kept when it improves the "
    "cord overlap again; collapsed into one displacement field (ants.apply_transforms(compose=)), "
    "composed with the template-loop warp and the straightening field, one resampling")
STAGES = ("scanner", "affine", "nonlinear")


@dataclass(frozen=True)
class ContrastRegistration:
    """One subject's contrast registration: the kept field and the cord Dice of every stage."""

    fields: dict[str, DisplacementField]
    """Pull field on the driving anatomy's grid (anatomy point -> contrast point) per stage tried
    (``STAGES``; only ``scanner`` without the contrast's cord mask)."""
    dice: dict[str, float]
    """Cord Dice on the anatomy grid per stage tried (none without the contrast's cord mask)."""
    kept: str
    """The stage whose field is kept."""

    @property
    def field(self) -> DisplacementField:
        """The kept field."""
        return self.fields[self.kept]


def register_contrast(anat: Volume, anat_cord: Volume, moving: Volume, moving_cord: Volume | None,
                      *, seed: int, nonlinear: bool = True) -> ContrastRegistration:
    """Pull field on ``anat``'s grid (anat point -> ``moving`` point) aligning the cords.

    Both scans of a session share scanner coordinates, so the identity is the starting point and
    the fallback. With a cord mask for ``moving``, a rigid then affine registration of the two
    smoothed cord masks (mean squares: contrast-independent) refines it, and is kept only when it
    improves the cord overlap. A small nonlinear step (``nonlinear``) follows: SyN from the
    affine result, in the driving cord's bounding box dilated ``NONLINEAR_BOX_MM``, with a small
    gradient step and few iterations, on the masks (mean squares) plus the cropped intensities
    (mutual information, ``NONLINEAR_MI_WEIGHT``); it is kept only when it raises the cord
    overlap above the stage kept so far. Intensity mutual information alone at full field of view
    was tried first and diverged on real T1w/T2*w scans of one session (cord Dice 0.85 -> 0.0).
    """
    identity = DisplacementField(np.zeros((*anat.shape, 3), np.float32), anat.affine)
    if moving_cord is None:
        return ContrastRegistration({"scanner": identity}, {}, "scanner")
    fields = {"scanner": identity,
              **_register_masks(anat, anat_cord, moving, moving_cord, seed=seed,
                                nonlinear=nonlinear)}
    dice = {stage: _cord_overlap(f, anat_cord, moving_cord) for stage, f in fields.items()}
    kept = "scanner"
    if dice["affine"] >= dice[kept]:
        kept = "affine"
    if "nonlinear" in dice and dice["nonlinear"] > dice[kept]:
        kept = "nonlinear"
    logger.debug("contrast registration: cord Dice %s; kept %s",
                 ", ".join(f"{k} {v:.3f}" for k, v in dice.items()), kept)
    return ContrastRegistration(fields, dice, kept)


def _register_masks(anat: Volume, anat_cord: Volume, moving: Volume, moving_cord: Volume, *,
                    seed: int, nonlinear: bool) -> dict[str, DisplacementField]:
    """The affine and (``nonlinear``) affine-plus-SyN fields, each on ``anat``'s grid."""
    import ants

    fixed, moved = _to_ants(_smooth(anat_cord)), _to_ants(_smooth(moving_cord))
    fields = {}
    with tempfile.TemporaryDirectory(prefix="spinal_bidsapp_contrast_") as tmp:
        transform = None
        for stage in ("Rigid", "Affine"):
            result = ants.registration(
                fixed=fixed, moving=moved, type_of_transform=stage,
                initial_transform=transform, aff_metric="meansquares",
                aff_iterations=AFFINE_ITERATIONS, aff_shrink_factors=(2, 1),
                aff_smoothing_sigmas=(1, 0), random_seed=seed,
                outprefix=str(Path(tmp) / f"{stage.lower()}_"), verbose=False)
            transform = result["fwdtransforms"]
        fields["affine"] = load_field(Path(ants.apply_transforms(
            fixed=fixed, moving=moved, transformlist=transform,
            compose=str(Path(tmp) / "affine_total_"))))
        if nonlinear:
            box = _box_slices(anat_cord, NONLINEAR_BOX_MM)
            extras = [("mattes", _to_ants(crop(anat, box)), _to_ants(moving),
                       NONLINEAR_MI_WEIGHT, 32)]
            result = ants.registration(
                fixed=_to_ants(crop(_smooth(anat_cord), box)), moving=moved,
                type_of_transform="SyNOnly", initial_transform=transform,
                syn_metric="meansquares", syn_sampling=0, grad_step=NONLINEAR_STEP,
                flow_sigma=3, total_sigma=0, reg_iterations=NONLINEAR_ITERATIONS,
                multivariate_extras=extras, random_seed=seed,
                outprefix=str(Path(tmp) / "syn_"), verbose=False)
            fields["nonlinear"] = load_field(Path(ants.apply_transforms(
                fixed=fixed, moving=moved, transformlist=result["fwdtransforms"],
                compose=str(Path(tmp) / "nonlinear_total_"))))
    return fields


def _box_slices(mask: Volume, margin_mm: float) -> tuple[slice, ...]:
    """``mask``'s bounding box dilated ``margin_mm``, clipped to the grid."""
    return tuple(slice(*index_range(mask, axis, margin_mm=margin_mm)) for axis in range(3))


def _cord_overlap(field: DisplacementField, anat_cord: Volume, moving_cord: Volume) -> float:
    """Cord Dice on the anatomy grid, on the slices the moved mask covers."""
    moved = np.asarray(apply_field(moving_cord.data.astype(np.float32), moving_cord.affine,
                                   field, order=1))
    covered = np.asarray(apply_field(np.ones(moving_cord.shape, np.float32),
                                     moving_cord.affine, field, order=1)) > 0.99
    slices = covered.any(axis=(0, 1))
    return mask_dice(moved[:, :, slices] > 0.5, np.asarray(anat_cord.data)[:, :, slices] > 0)


def _smooth(mask: Volume) -> Volume:
    spacing = np.sqrt((mask.affine[:3, :3] ** 2).sum(axis=0))
    data = ndimage.gaussian_filter((np.asarray(mask.data) > 0).astype(np.float32),
                                   sigma=MASK_SMOOTHING_MM / spacing)
    return Volume(data.astype(np.float32), mask.affine)


def _to_ants(volume: Volume) -> ants.ANTsImage:
    import ants

    img = ants.from_numpy(np.asarray(volume.data, np.float32))
    set_ants_geometry(img, volume.affine)
    return img
