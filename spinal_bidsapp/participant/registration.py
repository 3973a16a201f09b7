"""Registration to PAM50, per engine, and the choice of the primary warp: run it, carry the
subject's images and labels across, score it, pick the better candidate.

Steps of the participant pipeline like those in ``steps``: paths in, files out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast

import numpy as np

from spinal_bidsapp.bids.outputs import sidecar_path, write_sidecar
from spinal_bidsapp.config import Contrast
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.image import Volume, load_mask, load_volume, save_volume
from spinal_bidsapp.participant.steps import fallback_fields
from spinal_bidsapp.runtime.files import atomic_path, write_json
from spinal_bidsapp.templates.pam50 import Pam50

if TYPE_CHECKING:
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
    from spinal_bidsapp.engines.sct import SctEngine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationPaths:
    to_template: Path
    from_template: Path
    anat_in_template: Path
    cord_in_template: Path
    template_levels: Path
    template_cord: Path
    metrics: Path

    def all(self) -> Iterator[Path]:
        yield from (self.to_template, self.from_template, self.anat_in_template,
                    self.cord_in_template, self.template_levels, self.template_cord,
                    self.metrics)


def register(anat: Path, cord: Path, discs: Path, template: Pam50,
             paths: RegistrationPaths, *, fallback_reason: str | None = None) -> None:
    """Builtin registration to PAM50 and everything carried across with it
    (``fallback_reason``: why not SCT's, recorded in the metrics and the sidecars)."""
    from spinal_bidsapp.engines.builtin.registration import register_to_template

    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    subject_points, template_points = _disc_points(discs, template)
    result = register_to_template(anat_vol, cord_vol, subject_points, load_mask(template.cord),
                                  template_points)
    engine: dict[str, str] = {"engine": "builtin"}
    if fallback_reason is not None:
        engine["fallback_reason"] = fallback_reason
    carry_across(anat_vol, cord_vol, template, result, paths, engine=engine,
                 subject_points=subject_points, template_points=template_points)


RegistrationLabels = Literal["discs", "rootlets"]


def run_sct_registration(engine: SctEngine, anat: Path, cord: Path, labels_file: Path,
                         template: Pam50, *, work_dir: Path, contrast: Contrast,
                         labels: RegistrationLabels) -> TemplateRegistration:
    """One ``sct_register_to_template`` run (``-ldisc`` or ``-lrootlet``), its warps read back.

    SCT's two warps are ITK displacement fields in our convention already: it writes
    ``warp_template2anat`` on the grid of its ``-i`` image (here the standardized anatomy, the
    grid of our ``xfm_from_template``) and ``warp_anat2template`` on the full template grid
    (the builtin engine uses a slab of it). They are read and rewritten, not resampled.
    """
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
    from spinal_bidsapp.image import load_field

    if labels == "discs":
        result = engine.register_to_template(anat, cord, labels_file,
                                             template_dir=template.sct_dir, contrast=contrast,
                                             out_dir=work_dir)
    else:
        result = engine.register_to_template_with_rootlets(
            anat, cord, labels_file, template_dir=template.sct_dir, contrast=contrast,
            out_dir=work_dir)
    to_template = load_field(result.anat_to_template)
    to_anat = load_field(result.template_to_anat)
    anat_vol = load_volume(anat)
    if to_anat.shape != anat_vol.shape or not np.allclose(to_anat.affine, anat_vol.affine,
                                                          atol=1e-4):
        raise InputDataError(f"{result.template_to_anat} is not on the grid of {anat.name}, "
                             "the image given to sct_register_to_template")
    return TemplateRegistration(anat_to_template=to_template, template_to_anat=to_anat,
                                slab_shape=to_template.shape, slab_affine=to_template.affine)


def _sct_engine_record(engine: SctEngine) -> dict[str, str]:
    return {"engine": "sct", "engine_version": engine.info.version,
            "method": engine.method("register_to_template")}


def register_sct_path(engine: SctEngine, anat: Path, cord: Path, labels_file: Path,
                      discs: Path, template: Pam50, *, work_dir: Path, contrast: Contrast,
                      labels: RegistrationLabels, metrics_out: Path) -> None:
    """One of the two SCT registrations (discs or rootlets), scored the same way, so the
    ``register`` step can compare them; the warps stay in ``work_dir``."""
    registration = run_sct_registration(engine, anat, cord, labels_file, template,
                                        work_dir=work_dir, contrast=contrast, labels=labels)
    subject_points, template_points = _disc_points(discs, template)
    scores = score_registration(load_mask(cord), load_mask(template.cord), registration,
                                subject_points=subject_points, template_points=template_points)
    write_json(metrics_out, {**_sct_engine_record(engine), "labels": labels,
                             "template": template.provenance(), **scores})


ROOTLET_DICE_TOLERANCE = 0.02
"""The rootlet-based warp may lose at most this much cord Dice (in template space) against the
disc-based one and still be primary: both are SCT's same cord-driven steps after the S-I
alignment, so a larger loss means the rootlet S-I alignment pulled the cord out of shape."""
ROOTLET_MAX_DISC_ERROR_MM = 10.0
"""Largest disc landing error (native discs carried to PAM50 by the rootlet-based warp) accepted
for a primary rootlet warp. Spinal and vertebral levels differ between people by a few mm
(rootlets are what the rootlet warp aligns), but two thirds of a cervical vertebra (~15 mm)
means a rootlet level was taken for its neighbour."""
ROOTLET_MIN_LEVELS = 2
"""Fewer spinal levels give SCT a single landmark: a translation, no S-I scaling."""


def choose_registration(discs: dict[str, object], rootlets: dict[str, object] | None, *,
                        rootlet_levels: int) -> tuple[RegistrationLabels, str]:
    """Which warp is primary, and why (one sentence for the report and the metrics JSON).

    The rootlet-based warp aligns spinal (neurological) levels, the unit of spinal cord
    function and of fMRI analyses, so it is preferred when it is trustworthy: at least
    :data:`ROOTLET_MIN_LEVELS` spinal levels, cord Dice within :data:`ROOTLET_DICE_TOLERANCE` of
    the disc-based warp, and no disc further than :data:`ROOTLET_MAX_DISC_ERROR_MM` from its
    PAM50 position. Otherwise the disc-based warp.

    >>> discs = {"cord_dice_in_template": 0.95, "disc_error_mm": {"3": {"to_template": 0.4}}}
    >>> rootlets = {"cord_dice_in_template": 0.94, "disc_error_mm": {"3": {"to_template": 3.0}}}
    >>> choose_registration(discs, rootlets, rootlet_levels=4)[0]
    'rootlets'
    >>> choose_registration(discs, None, rootlet_levels=0)[1]
    'disc-based: no rootlet-based registration'
    """
    if rootlets is None:
        return "discs", "disc-based: no rootlet-based registration"
    if rootlet_levels < ROOTLET_MIN_LEVELS:
        return "discs", (f"disc-based: the rootlets cover {rootlet_levels} spinal level(s), "
                         f"fewer than {ROOTLET_MIN_LEVELS}")
    loss = float(cast(float, discs["cord_dice_in_template"])) - float(
        cast(float, rootlets["cord_dice_in_template"]))
    if loss > ROOTLET_DICE_TOLERANCE:
        return "discs", (f"disc-based: the rootlet-based warp loses {loss:.3f} cord Dice "
                         f"(> {ROOTLET_DICE_TOLERANCE})")
    errors = cast(dict[str, dict[str, float | None]], rootlets["disc_error_mm"])
    worst = max((e["to_template"] for e in errors.values() if e["to_template"] is not None),
                default=0.0)
    if worst > ROOTLET_MAX_DISC_ERROR_MM:
        return "discs", (f"disc-based: a disc lands {worst:.1f} mm from PAM50 with the "
                         f"rootlet-based warp (> {ROOTLET_MAX_DISC_ERROR_MM:g} mm)")
    return "rootlets", (f"rootlet-based: {rootlet_levels} spinal levels, cord Dice within "
                        f"{ROOTLET_DICE_TOLERANCE} of the disc-based warp, discs within "
                        f"{worst:.1f} mm")


def select_sct_registration(anat: Path, cord: Path, discs: Path, template: Pam50,
                            paths: RegistrationPaths, alternates: dict[str, tuple[Path, Path]],
                            *, disc_dir: Path, rootlet_dir: Path | None,
                            rootlets: Path | None, builtin_dir: Path | None = None) -> None:
    """Carry the chosen warp across (the primary outputs) and keep the other ones under their
    ``desc-`` names; every path's scores and the choice go into the registration metrics.

    ``builtin_dir`` (``--engine auto``): the builtin registration, carried across there by
    :func:`register` (:func:`builtin_candidate_paths`), competes with SCT's chosen path
    (:func:`choose_engine_registration`); when it wins its outputs become the primary ones as
    they are (the builtin engine's own outputs, byte for byte), SCT's warps become alternates.
    """
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
    from spinal_bidsapp.engines.sct import REGISTRATION_OUTPUTS
    from spinal_bidsapp.engines.sct_outputs import read_rootlet_levels
    from spinal_bidsapp.image import load_field, save_field

    scores: dict[RegistrationLabels, dict[str, object]] = {
        "discs": json.loads((disc_dir / "metrics.json").read_text(encoding="utf-8"))}
    folders: dict[RegistrationLabels, Path] = {"discs": disc_dir}
    if rootlet_dir is not None:
        scores["rootlets"] = json.loads((rootlet_dir / "metrics.json").read_text(
            encoding="utf-8"))
        folders["rootlets"] = rootlet_dir
    levels = len(read_rootlet_levels(rootlets)) if rootlets is not None else 0
    chosen, reason = choose_registration(scores["discs"], scores.get("rootlets"),
                                         rootlet_levels=levels)
    path_scores: dict[str, dict[str, object]] = {
        k: {m: v[m] for m in _PATH_SCORES if m in v} for k, v in scores.items()}
    extra: dict[str, object] = {"labels": chosen, "selection": reason, "paths": path_scores}
    winner: EngineName = "sct"
    sidecar: dict[str, object] = {}
    if builtin_dir is not None:
        candidate = builtin_candidate_paths(builtin_dir)
        builtin = json.loads(candidate.metrics.read_text(encoding="utf-8"))
        path_scores["builtin"] = {m: builtin[m] for m in _PATH_SCORES}
        winner, why = choose_engine_registration(scores[chosen], builtin, sct_labels=chosen)
        extra = {"primary": "builtin" if winner == "builtin" else chosen,
                 "labels": "discs" if winner == "builtin" else chosen, "selection": why,
                 "sct_labels": chosen, "sct_selection": reason, "paths": path_scores}
        sidecar = {"Engine": winner, "EngineSelection": why}
        if winner == "builtin":
            _adopt_candidate(candidate, paths, sidecar=sidecar, extra=extra)
        else:
            for source, target in zip((candidate.to_template, candidate.from_template),
                                      alternates["builtin"], strict=True):
                copy_file(source, target)
    for labels, folder in folders.items():
        warps = [load_field(folder / "sct" / name) for name in REGISTRATION_OUTPUTS]
        if labels == chosen and winner == "sct":
            anat_vol, cord_vol = load_volume(anat), load_mask(cord)
            subject_points, template_points = _disc_points(discs, template)
            registration = TemplateRegistration(
                anat_to_template=warps[0], template_to_anat=warps[1],
                slab_shape=warps[0].shape, slab_affine=warps[0].affine)
            record = {k: str(v) for k, v in scores[labels].items()
                      if k in ("engine", "engine_version", "method")}
            carry_across(anat_vol, cord_vol, template, registration, paths, engine=record,
                         subject_points=subject_points, template_points=template_points,
                         scores={m: scores[labels][m] for m in _PATH_SCORES}, extra=extra,
                         sidecar=sidecar)
        else:
            for warp, target in zip(warps, alternates[labels], strict=True):
                save_field(warp, target)


EngineName = Literal["sct", "builtin"]


def _unmapped_discs(scores: Mapping[str, object]) -> int:
    """Discs the warp does not map in either direction (a ``null`` landing error)."""
    errors = cast(dict[str, dict[str, float | None]], scores["disc_error_mm"])
    return sum(1 for e in errors.values() if None in e.values())


def _mean_dice(scores: Mapping[str, object]) -> float:
    return (float(cast(float, scores["cord_dice_in_template"]))
            + float(cast(float, scores["cord_dice_native"]))) / 2


def choose_engine_registration(sct: Mapping[str, object], builtin: Mapping[str, object], *,
                               sct_labels: str = "discs") -> tuple[EngineName, str]:
    """Under ``--engine auto``: SCT's registration or the builtin one, and why (one sentence).

    Both are scored by :func:`score_registration`. First the fewer discs without a mapping: an
    unmapped disc is a part of the subject the warp sends nowhere (SCT crops its warp 10 mm
    beyond the outer labels), which no overlap elsewhere makes up for. Then the higher mean of
    the two cord Dice: template space (the subject's cord carried to PAM50) and native space
    (PAM50's cord carried to the subject) score the two warps the outputs are made with, and
    neither direction matters more. A tie keeps SCT, the engine ``auto`` prefers.

    >>> sct = {"cord_dice_in_template": 0.967, "cord_dice_native": 0.721,
    ...        "disc_error_mm": {"3": {"to_template": 0.5, "to_anat": None}}}
    >>> builtin = {"cord_dice_in_template": 0.983, "cord_dice_native": 0.977,
    ...            "disc_error_mm": {"3": {"to_template": 0.4, "to_anat": 0.6}}}
    >>> choose_engine_registration(sct, builtin)
    ('builtin', 'builtin: 0 unmapped disc(s) against 1 for SCT (disc-based)')
    >>> choose_engine_registration(sct, {**builtin, "disc_error_mm": sct["disc_error_mm"]})[0]
    'builtin'
    >>> choose_engine_registration(sct, sct)
    ('sct', 'SCT (disc-based): mean cord Dice 0.844, builtin 0.844 (a tie keeps SCT)')
    """
    what = f"SCT ({sct_labels[:-1]}-based)"
    unmapped_sct, unmapped_builtin = _unmapped_discs(sct), _unmapped_discs(builtin)
    if unmapped_sct != unmapped_builtin:
        winner: EngineName = "builtin" if unmapped_builtin < unmapped_sct else "sct"
        return winner, (f"{'builtin' if winner == 'builtin' else what}: "
                        f"{min(unmapped_sct, unmapped_builtin)} unmapped disc(s) against "
                        f"{max(unmapped_sct, unmapped_builtin)} for "
                        f"{what if winner == 'builtin' else 'builtin'}")
    dice_sct, dice_builtin = _mean_dice(sct), _mean_dice(builtin)
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
    import shutil

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _adopt_candidate(candidate: RegistrationPaths, paths: RegistrationPaths, *,
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


_PATH_SCORES = ("cord_dice_in_template", "cord_dice_native", "disc_error_mm")


def _disc_points(discs: Path, template: Pam50) -> tuple[dict[int, np.ndarray],
                                                         dict[int, np.ndarray]]:
    disc_vol, tpl_discs = load_mask(discs), load_mask(template.label_disc)
    return (discs_from_label_array(disc_vol.data, disc_vol.affine),
            discs_from_label_array(tpl_discs.data, tpl_discs.affine))


def carry_across(anat_vol: Volume, cord_vol: Volume, template: Pam50,
                 registration: TemplateRegistration, paths: RegistrationPaths, *,
                 engine: dict[str, str], subject_points: dict[int, np.ndarray],
                 template_points: dict[int, np.ndarray],
                 extra: dict[str, object] | None = None,
                 scores: dict[str, object] | None = None,
                 sidecar: dict[str, object] | None = None) -> None:
    """Save both warps, carry images and labels across them, and score the registration.

    Whatever engine computed ``registration``, the same code resamples (``apply_field``) and
    scores it (:func:`score_registration`), unless ``scores`` (that function's result for the
    same registration) are given. ``sidecar``: fields added to the images' sidecars.
    """
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.image import save_field

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
    write_json(paths.metrics, {**engine, "template": template.provenance(), **scores,
                               **(extra or {})})


def score_registration(cord_vol: Volume, tpl_cord: Volume, registration: TemplateRegistration,
                       *, subject_points: dict[int, np.ndarray],
                       template_points: dict[int, np.ndarray],
                       warped_cord: np.ndarray | None = None,
                       template_cord_native: np.ndarray | None = None) -> dict[str, object]:
    """Cord Dice in template space (over the slices the subject covers), cord Dice in native
    space (template cord carried to the anatomy vs the subject mask) and the landing error of
    every disc common to subject and template, both ways. The two resampled cords are
    recomputed unless given."""
    from spinal_bidsapp.engines.builtin.registration import disc_errors_mm
    from spinal_bidsapp.geometry.fields import apply_field

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
    return {"cord_dice_in_template": round(dice, 4), "cord_dice_native": round(dice_native, 4),
            "disc_error_mm": {str(k): {"to_template": mm_or_no_mapping(a),
                                       "to_anat": mm_or_no_mapping(b)}
                              for k, (a, b) in errors.items()}}


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
    from spinal_bidsapp.geometry.fields import DisplacementField, apply_field

    assert isinstance(field, DisplacementField)
    identity = DisplacementField(np.zeros_like(field.data), field.affine)
    return np.asarray(apply_field(template_cord.data.astype(np.float32), template_cord.affine,
                                  identity, order=0) > 0.5)
