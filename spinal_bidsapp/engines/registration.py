"""Registration to PAM50, the same for every engine: carry the subject's images and labels
across a registration, score it, and (``--engine auto``) keep the better of two engines'.

The engines compute the warps (:mod:`spinal_bidsapp.engines.builtin.participant`,
:mod:`spinal_bidsapp.engines.sct.participant`); this module is what they share, so whichever
engine registered, the outputs are resampled and scored by one code path.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from spinal_bidsapp.bids.outputs import sidecar_path, write_sidecar
from spinal_bidsapp.engines.base import RegistrationPaths, fallback_fields
from spinal_bidsapp.engines.builtin.registration import TemplateRegistration, disc_errors_mm
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.image import Volume, load_mask, save_field, save_volume
from spinal_bidsapp.runtime.files import atomic_path, write_json
from spinal_bidsapp.runtime.records import Record
from spinal_bidsapp.templates.pam50 import Pam50

logger = logging.getLogger(__name__)


def registration_inputs(anat: Path, cord: Path, discs: Path, template: Pam50) -> list[Path]:
    """The files a registration to PAM50 reads, whichever engine registers."""
    inputs = [anat, cord, discs, template.cord, template.label_disc]
    return inputs + [p for p in (template.levels, template.t2) if p is not None]


RegistrationWinner = Literal["sct", "builtin"]


DiscErrors = dict[str, dict[str, float | None]]
"""Per disc (SCT value as text): landing error in mm ``to_template`` and ``to_anat``; None
(JSON ``null``) where the warp has no mapping."""


@dataclass(frozen=True)
class RegistrationScores(Record):
    """How well one registration to PAM50 maps the subject (:func:`score_registration`), as
    the registration metrics hold it."""

    cord_dice_in_template: float
    """The subject's cord carried to PAM50 against PAM50's, over the slices the subject covers."""
    cord_dice_native: float
    """PAM50's cord carried to the subject against the subject's cord mask."""
    disc_error_mm: DiscErrors

    @property
    def unmapped_discs(self) -> int:
        """Discs the warp does not map in either direction (a ``null`` landing error)."""
        return sum(1 for e in self.disc_error_mm.values() if None in e.values())

    @property
    def mean_dice(self) -> float:
        return (float(self.cord_dice_in_template) + float(self.cord_dice_native)) / 2

    @property
    def worst_error_to_template_mm(self) -> float:
        """Largest measured landing error of a native disc in PAM50 (0 when none is)."""
        return max((e["to_template"] for e in self.disc_error_mm.values()
                    if e["to_template"] is not None), default=0.0)


def choose_engine_registration(sct: RegistrationScores, builtin: RegistrationScores, *,
                               sct_labels: str = "discs") -> tuple[RegistrationWinner, str]:
    """Under ``--engine auto``: SCT's registration or the builtin one, and why (one sentence).

    Both are scored by :func:`score_registration`. First the fewer discs without a mapping: an
    unmapped disc is a part of the subject the warp sends nowhere (SCT crops its warp 10 mm
    beyond the outer labels), which no overlap elsewhere makes up for. Then the higher mean of
    the two cord Dice: template space (the subject's cord carried to PAM50) and native space
    (PAM50's cord carried to the subject) score the two warps the outputs are made with, and
    neither direction matters more. A tie keeps SCT, the engine ``auto`` prefers.

    >>> sct = RegistrationScores(0.967, 0.721, {"3": {"to_template": 0.5, "to_anat": None}})
    >>> builtin = RegistrationScores(0.983, 0.977, {"3": {"to_template": 0.4, "to_anat": 0.6}})
    >>> choose_engine_registration(sct, builtin)
    ('builtin', 'builtin: 0 unmapped disc(s) against 1 for SCT (disc-based)')
    >>> choose_engine_registration(sct, RegistrationScores(0.983, 0.977, sct.disc_error_mm))[0]
    'builtin'
    >>> choose_engine_registration(sct, sct)
    ('sct', 'SCT (disc-based): mean cord Dice 0.844, builtin 0.844 (a tie keeps SCT)')
    """
    what = f"SCT ({sct_labels[:-1]}-based)"
    unmapped_sct, unmapped_builtin = sct.unmapped_discs, builtin.unmapped_discs
    if unmapped_sct != unmapped_builtin:
        winner: RegistrationWinner = "builtin" if unmapped_builtin < unmapped_sct else "sct"
        return winner, (f"{'builtin' if winner == 'builtin' else what}: "
                        f"{min(unmapped_sct, unmapped_builtin)} unmapped disc(s) against "
                        f"{max(unmapped_sct, unmapped_builtin)} for "
                        f"{what if winner == 'builtin' else 'builtin'}")
    dice_sct, dice_builtin = sct.mean_dice, builtin.mean_dice
    if dice_builtin > dice_sct:
        return "builtin", (f"builtin: mean cord Dice {dice_builtin:.3f}, {what} "
                           f"{dice_sct:.3f}")
    tie = " (a tie keeps SCT)" if dice_builtin == dice_sct else ""
    return "sct", f"{what}: mean cord Dice {dice_sct:.3f}, builtin {dice_builtin:.3f}{tie}"


def builtin_candidate_paths(folder: Path) -> RegistrationPaths:
    """Where the ``register_builtin`` step (``--engine auto``) writes its registration."""
    return RegistrationPaths(
        to_template=folder / "to_template.nii.gz", from_template=folder / "from_template.nii.gz",
        anat_in_template=folder / "anat_in_template.nii.gz",
        cord_in_template=folder / "cord_in_template.nii.gz",
        template_levels=folder / "template_levels.nii.gz",
        template_cord=folder / "template_cord.nii.gz",
        metrics=folder / "registration_metrics.json")


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def adopt_candidate(candidate: RegistrationPaths, paths: RegistrationPaths, *,
                    sidecar: dict[str, object], extra: dict[str, object]) -> None:
    """The builtin candidate's files as the primary outputs, their sidecars saying so."""
    for source, target in zip(candidate.all(), paths.all(), strict=True):
        if target == paths.metrics:
            metrics = json.loads(source.read_text(encoding="utf-8"))
            write_json(target, {**metrics, **extra})
            continue
        copy_file(source, target)
        if sidecar_path(source).is_file():
            fields = json.loads(sidecar_path(source).read_text(encoding="utf-8"))
            write_sidecar(target, {**fields, **sidecar})


def disc_points(discs: Path, template: Pam50) -> tuple[dict[int, np.ndarray],
                                                         dict[int, np.ndarray]]:
    disc_vol, tpl_discs = load_mask(discs), load_mask(template.label_disc)
    return (discs_from_label_array(disc_vol.data, disc_vol.affine),
            discs_from_label_array(tpl_discs.data, tpl_discs.affine))


def carry_across(anat_vol: Volume, cord_vol: Volume, template: Pam50,
                 registration: TemplateRegistration, paths: RegistrationPaths, *,
                 engine: dict[str, str], subject_points: dict[int, np.ndarray],
                 template_points: dict[int, np.ndarray],
                 extra: dict[str, object] | None = None,
                 scores: RegistrationScores | None = None,
                 sidecar: dict[str, object] | None = None) -> None:
    """Save both warps, carry images and labels across them, and score the registration.

    Whatever engine computed ``registration``, the same code resamples (``apply_field``) and
    scores it (:func:`score_registration`), unless ``scores`` (that function's result for the
    same registration) are given. ``sidecar``: fields added to the images' sidecars.
    """
    to_tpl, back = registration.anat_to_template, registration.template_to_anat
    tpl_cord = load_mask(template.cord)
    save_field(to_tpl, paths.to_template, reference=(tpl_cord.shape, tpl_cord.affine))
    save_field(back, paths.from_template)
    warped = apply_field(anat_vol.data, anat_vol.affine, to_tpl, order=3)
    save_volume(Volume(np.asarray(warped, np.float32), to_tpl.affine), paths.anat_in_template)
    warped_cord = apply_field(cord_vol.data.astype(np.float32), cord_vol.affine, to_tpl, order=1)
    save_volume(Volume((warped_cord > 0.5).astype(np.uint8), to_tpl.affine),
                paths.cord_in_template, dtype=np.uint8)
    tpl_cord_native = apply_field(tpl_cord.data.astype(np.float32), tpl_cord.affine, back,
                                  order=1) > 0.5
    save_volume(Volume(tpl_cord_native.astype(np.uint8), back.affine),
                paths.template_cord, dtype=np.uint8)
    levels_src = load_mask(template.levels) if template.levels else tpl_cord
    levels_native = apply_field(levels_src.data.astype(np.int32), levels_src.affine, back,
                                order=0)
    save_volume(Volume(levels_native.astype(np.uint8), back.affine), paths.template_levels,
                dtype=np.uint8)
    for image in (paths.anat_in_template, paths.cord_in_template, paths.template_cord,
                  paths.template_levels):
        fields: dict[str, object] = {"Description": "carried across the PAM50 registration",
                                     "SpatialReference": str(template.template_folder)}
        if image == paths.anat_in_template:
            fields["SkullStripped"] = False
        write_sidecar(image, {**fields, **fallback_fields(engine.get("fallback_reason")),
                              **(sidecar or {})})
    if scores is None:
        scores = score_registration(
            cord_vol, tpl_cord, registration, subject_points=subject_points,
            template_points=template_points, warped_cord=warped_cord,
            template_cord_native=tpl_cord_native)
    write_json(paths.metrics, {**engine, "template": template.provenance(),
                               **scores.to_json(), **(extra or {})})


def score_registration(cord_vol: Volume, tpl_cord: Volume, registration: TemplateRegistration,
                       *, subject_points: dict[int, np.ndarray],
                       template_points: dict[int, np.ndarray],
                       warped_cord: np.ndarray | None = None,
                       template_cord_native: np.ndarray | None = None
                       ) -> RegistrationScores:
    """Cord Dice in template space (over the slices the subject covers), cord Dice in native
    space (template cord carried to the anatomy vs the subject mask) and the landing error of
    every disc common to subject and template, both ways. The two resampled cords are
    recomputed unless given."""
    to_tpl, back = registration.anat_to_template, registration.template_to_anat
    if warped_cord is None:
        warped_cord = apply_field(cord_vol.data.astype(np.float32), cord_vol.affine, to_tpl,
                                  order=1)
    if template_cord_native is None:
        template_cord_native = apply_field(tpl_cord.data.astype(np.float32), tpl_cord.affine,
                                           back, order=1) > 0.5
    errors = disc_errors_mm(registration, subject_points, template_points)
    inside = np.asarray(warped_cord > 0.5)
    covered = inside.any(axis=(0, 1))
    slab = _template_slab_mask(tpl_cord, to_tpl)[:, :, covered]
    dice = mask_dice(inside[:, :, covered], slab)
    dice_native = mask_dice(template_cord_native, cord_vol.data > 0)
    finite = [e for pair in errors.values() for e in pair if np.isfinite(e)]
    logger.info("registration to PAM50: cord Dice %.3f (native %.3f), max disc error %s",
                dice, dice_native, f"{max(finite):.2f} mm" if finite else "none measured")
    unmapped = sorted(k for k, pair in errors.items() if not np.all(np.isfinite(pair)))
    if unmapped:
        logger.warning("registration to PAM50: no mapping at disc(s) %s (the warp does not "
                       "cover them); no landing error is measured there", unmapped)
    return RegistrationScores(
        cord_dice_in_template=round(dice, 4), cord_dice_native=round(dice_native, 4),
        disc_error_mm={str(k): {"to_template": mm_or_no_mapping(a), "to_anat": mm_or_no_mapping(b)}
                       for k, (a, b) in errors.items()})


NO_MAPPING = None
"""A landing error where the warp has no mapping (JSON ``null``; "no mapping" in the report)."""


def mm_or_no_mapping(distance_mm: float) -> float | None:
    """A distance rounded to a micrometre, or :data:`NO_MAPPING` where the warp gave none (NaN).

    >>> mm_or_no_mapping(1.23456), mm_or_no_mapping(float("nan"))
    (1.235, None)
    """
    return round(float(distance_mm), 3) if np.isfinite(distance_mm) else NO_MAPPING


def _template_slab_mask(template_cord: Volume, field: object) -> np.ndarray:
    """Template cord mask resampled on the slab grid of ``field`` (same world frame)."""
    assert isinstance(field, DisplacementField)
    identity = DisplacementField(np.zeros_like(field.data), field.affine)
    return np.asarray(apply_field(template_cord.data.astype(np.float32), template_cord.affine,
                                  identity, order=0) > 0.5)
