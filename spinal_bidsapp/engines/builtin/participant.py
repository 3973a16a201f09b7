"""The builtin participant engine: our cord segmentation, disc labelling against PAM50's T2,
registration to PAM50 and CSA interpolation, as steps of the participant pipeline.

It is the engine of ``--engine builtin`` (and of ``auto`` without SCT), and the fallback of the
SCT engine for every step SCT cannot run here (:attr:`SctParticipantEngine.fallback
<spinal_bidsapp.engines.sct.participant.SctParticipantEngine.fallback>`); ``fallback_reason``
says why, in the sidecars and the ledger parameters, so that a rerun with SCT's model installed
runs SCT again. No vertebra, canal or rootlet segmentation (:attr:`lacking`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.outputs import raw_uri, sidecar_path, write_sidecar
from spinal_bidsapp.config import Contrast
from spinal_bidsapp.engines.base import (
    Capability,
    Companion,
    DiscLabelling,
    DiscOptions,
    EngineInfo,
    ParticipantEngine,
    RegistrationPaths,
    SpinePaths,
    StepRunner,
    UnitFiles,
    fallback_fields,
)
from spinal_bidsapp.engines.builtin import disclabel
from spinal_bidsapp.engines.builtin import segment as builtin_segment
from spinal_bidsapp.engines.builtin.disc_strip import template_strip
from spinal_bidsapp.engines.builtin.disclabel import SessionCues, find_session_cues
from spinal_bidsapp.engines.builtin.registration import register_to_template
from spinal_bidsapp.engines.registration import (
    builtin_candidate_paths,
    carry_across,
    disc_points,
    registration_inputs,
)
from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.image import load_mask, load_volume, reorient, save_volume
from spinal_bidsapp.templates.pam50 import Pam50

logger = logging.getLogger(__name__)


class BuiltinParticipantEngine:
    """:class:`~spinal_bidsapp.engines.base.ParticipantEngine` on our own algorithms."""

    title = "builtin"
    capabilities: frozenset[Capability] = frozenset(
        {"segment_cord", "label_discs", "register_to_template", "csa_pam50"})
    fallback: ParticipantEngine | None = None
    lacking: Mapping[str, str] = {
        "vertebrae and canal": "the builtin engine has no vertebra or canal segmentation (SCT's "
                               "spine task); run with --engine sct",
        "rootlets": "the builtin engine has no rootlet segmentation; run with --engine sct on a "
                    "T2w image for rootlets and rootlet-based registration"}
    discs_need_template = True

    def __init__(self, *, sct_dir: Path | None = None) -> None:
        self.info = EngineInfo(name="builtin", version=__version__)
        self.sct_dir = sct_dir
        """``$SCT_DIR`` when set: SCT's normative database, even without the SCT engine."""

    def generated_by(self) -> dict[str, str]:
        return {"spinal_bidsapp-builtin": __version__}

    def unavailable(self, capability: Capability) -> str | None:
        return None

    def method(self, capability: Capability) -> str:
        return "builtin"

    def step_params(self, params: Mapping[str, object], fallback_reason: str | None = None
                    ) -> dict[str, object]:
        """Unchanged from the builtin engine's own unless it stands in for another engine."""
        out: dict[str, object] = {"engine": "builtin", **params}
        if fallback_reason is not None:
            out["fallback"] = fallback_reason
        return out

    def segment_cord(self, run: StepRunner, unit: UnitFiles, cord: Path, *,
                     fallback_reason: str | None = None) -> None:
        run.step("segment", lambda: segment(unit.source, cord, contrast=unit.contrast,
                                            bids_dir=unit.bids_dir,
                                            fallback_reason=fallback_reason),
                 inputs=[unit.source], outputs=[cord, sidecar_path(cord)],
                 params=self.step_params({"contrast": unit.contrast}, fallback_reason))

    def label_discs(self, unit: UnitFiles, cord: Path, *, work_dir: Path, options: DiscOptions,
                    template: Pam50 | None, spine: SpinePaths | None,
                    fallback_reason: str | None = None) -> DiscLabelling | None:
        """Against PAM50's T2 profile; None without it."""
        if template is None or template.t2 is None:
            return None
        t2 = template.t2
        companions = unit.companions
        return DiscLabelling(
            label=lambda: label_discs(unit.anat, cord, template, work_dir / "discs_auto.nii.gz",
                                      contrast=unit.contrast, init_disc=options.init_disc_hint,
                                      companions=companions, fallback_reason=fallback_reason),
            inputs=[unit.anat, cord, t2, template.cord, template.label_disc,
                    *(p for c in companions for p in (c.image, c.cord_mask) if p is not None)],
            params=self.step_params({"contrast": unit.contrast, "init_disc": options.init_disc,
                                     **options.limits}, fallback_reason))

    def register_to_template(self, run: StepRunner, unit: UnitFiles, cord: Path, discs: Path,
                             template: Pam50, paths: RegistrationPaths, *,
                             rootlets: Path | None, fallback_reason: str | None = None
                             ) -> RegistrationPaths:
        """Disc-matched straightening and in-plane SyN (step ``register``); no rootlets."""
        run.step("register", lambda: register(unit.anat, cord, discs, template, paths,
                                              fallback_reason=fallback_reason),
                 inputs=registration_inputs(unit.anat, cord, discs, template),
                 outputs=list(paths.all()),
                 params=self.step_params(template.provenance(), fallback_reason))
        return paths

    def register_candidate(self, run: StepRunner, unit: UnitFiles, cord: Path, discs: Path,
                           template: Pam50) -> Path:
        """The builtin registration as a candidate against another engine's (step
        ``register_builtin``, carried across in its work folder, :func:`builtin_candidate_paths`);
        its folder."""
        folder = run.work / "register_builtin"
        candidate = builtin_candidate_paths(folder)
        run.step("register_builtin", lambda: register(unit.anat, cord, discs, template,
                                                      candidate),
                 inputs=registration_inputs(unit.anat, cord, discs, template),
                 outputs=list(candidate.all()),
                 params=self.step_params(template.provenance(), None))
        return folder

    def segment_spine(self, run: StepRunner, unit: UnitFiles, paths: SpinePaths) -> SpinePaths:
        raise NotImplementedError("the builtin engine declares no spine capability")

    def segment_rootlets(self, run: StepRunner, unit: UnitFiles, rootlets: Path,
                         lut: Path) -> Path:
        raise NotImplementedError("the builtin engine declares no rootlets capability")

    def rootlets_unsupported(self, contrast: Contrast, disc_values: Sequence[int] | None
                             ) -> str | None:
        return "the builtin engine has no rootlet segmentation"

    def csa_pam50_levels(self, template: Pam50) -> Path | None:
        """PAM50's own levels, when the folder has them."""
        if template.levels is None or not template.levels.is_file():
            return None
        return template.levels

    def measure_csa_pam50(self, cord: Path, discs: Path, *, work_dir: Path, n_slices: int
                          ) -> tuple[NDArray[np.float64], str] | None:
        return None  # the pipeline's interpolation of our per-slice CSA is the builtin method


def segment(image: Path, target: Path, *, contrast: Contrast, bids_dir: Path,
            fallback_reason: str | None = None) -> None:
    """Builtin cord segmentation (no manual mask), reoriented like the anatomy, with its quality.

    The sidecar records the method, the overall and per-slice confidence and ``LowConfidence``
    (overall confidence below ``segment.LOW_CONFIDENCE``), and ``FallbackReason`` when it stands
    in for SCT's.
    """
    vol = load_volume(image)
    result = builtin_segment.segment_cord(vol.data, vol.affine, contrast=contrast)
    if not result.mask.any():
        raise InputDataError(f"{image.name}: the builtin segmentation found no spinal cord; add a "
                             "manual cord mask to derivatives/labels")
    save_volume(reorient(vol.with_data(result.mask)), target, dtype=np.uint8)
    write_sidecar(target, {
        "Sources": [raw_uri(bids_dir, image)],
        "Description": "spinal cord mask (builtin automatic segmentation, review it)",
        "Method": builtin_segment.METHOD, "Confidence": round(result.confidence, 3),
        "MedianAreaMM2": round(result.median_area_mm2, 1),
        "ConfidenceThreshold": builtin_segment.LOW_CONFIDENCE,
        "LowConfidence": bool(result.confidence < builtin_segment.LOW_CONFIDENCE),
        "SliceConfidence": [round(float(c), 3) for c in result.slice_confidence],
        **fallback_fields(fallback_reason)})


def label_discs(anat: Path, cord: Path, template: Pam50, work_labels: Path, *, contrast: Contrast,
                init_disc: tuple[int, float] | None, companions: Sequence[Companion] = (),
                fallback_reason: str | None = None) -> tuple[Path, dict[str, object]]:
    """Builtin disc labels (no manual labels) in ``work_labels``, and the sidecar fields of the
    checked labels (``fallback_reason``: why not SCT's).

    ``companions``: other images of the session, for a C2 anchor (used only when the anatomy
    shows no C2 itself and no hint is given) and for the discs whose band the anatomy's field
    cuts (see :func:`session_cues`)."""
    if template.t2 is None:
        raise MissingInputError(f"{template.template_folder} has no PAM50_t2.nii.gz, which the "
                                "builtin disc labelling matches against; add the disc labels")
    t2, tpl_cord, tpl_discs = (load_volume(template.t2), load_mask(template.cord),
                               load_mask(template.label_disc))
    pattern = template_strip(t2.data, t2.affine, tpl_cord.data, tpl_cord.affine, tpl_discs.data,
                             tpl_discs.affine)
    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    source, cues = session_cues(companions)
    result = disclabel.label_discs(anat_vol.data, anat_vol.affine, cord_vol.data, pattern,
                                   contrast=contrast, init_disc=init_disc, session=cues)
    if not result.labels.any():
        raise InputDataError(f"{anat.name}: the builtin disc labelling found no disc in the "
                             "field of view; add disc labels to derivatives/labels")
    save_volume(anat_vol.with_data(result.labels), work_labels, dtype=np.uint8)
    alt = result.alternative
    return work_labels, {
        "Description": "disc labels (builtin automatic labelling, review the levels)",
        "Method": disclabel.METHOD, "Confidence": round(result.confidence, 3),
        "ConfidenceThreshold": disclabel.LOW_CONFIDENCE,
        "LowConfidence": bool(result.confidence < disclabel.LOW_CONFIDENCE),
        "Correlation": round(result.ncc, 3),
        "Margin": None if result.margin is None else round(result.margin, 3),
        "InitDisc": list(init_disc) if init_disc is not None else None,
        "AlternativeReading": None if alt is None else {
            "Disc": alt.value, "WorldZmm": round(float(alt.point_mm[2]), 1),
            "AlternativeDisc": alt.alternative_value, "Correlation": round(alt.ncc, 3)},
        "C2C3Anchor": None if result.c2c3_anchor_mm is None else {
            "Source": source if result.anchor_from_session else anat.name,
            "WorldZmm": round(float(result.c2c3_anchor_mm[2]), 1),
            "AgreesWithPattern": result.anchor_agrees},
        "DiscsFromSession": None if not result.discs_from_session else {
            "Source": source, "Discs": list(result.discs_from_session)},
        **fallback_fields(fallback_reason)}


def session_cues(companions: Sequence[Companion]) -> tuple[str | None, SessionCues | None]:
    """``(image name, cues)`` of the companion to use: the first one that shows C2 (a C2/C3
    anchor), else the first one with a cord long enough to read; ``(None, None)`` if none. A
    companion that cannot be read or segmented is skipped with a log message: it only ever
    adds evidence."""
    found: list[tuple[str, SessionCues]] = []
    for companion in companions:
        try:
            vol = load_volume(companion.image)
            cord = (load_mask(companion.cord_mask, reference=vol,
                              reference_path=companion.image).data
                    if companion.cord_mask is not None else
                    builtin_segment.segment_cord(vol.data, vol.affine,
                                                 contrast=companion.contrast).mask)
            cues = find_session_cues(vol.data, vol.affine, cord, contrast=companion.contrast)
        except (InputDataError, MissingInputError, OSError, ValueError) as exc:
            logger.info("session cues: %s skipped (%s)", companion.image.name, exc)
            continue
        if cues is None:
            continue
        if cues.c2c3_mm is not None:
            logger.info("C2 anchor: C2/C3 at z %.1f mm on %s", cues.c2c3_mm[2],
                        companion.image.name)
            return companion.image.name, cues
        found.append((companion.image.name, cues))
    return found[0] if found else (None, None)


def register(anat: Path, cord: Path, discs: Path, template: Pam50,
             paths: RegistrationPaths, *, fallback_reason: str | None = None) -> None:
    """Builtin registration to PAM50 and everything carried across with it
    (``fallback_reason``: why not SCT's, recorded in the metrics and the sidecars)."""
    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    subject_points, template_points = disc_points(discs, template)
    result = register_to_template(anat_vol, cord_vol, subject_points, load_mask(template.cord),
                                  template_points)
    engine: dict[str, str] = {"engine": "builtin"}
    if fallback_reason is not None:
        engine["fallback_reason"] = fallback_reason
    carry_across(anat_vol, cord_vol, template, result, paths, engine=engine,
                 subject_points=subject_points, template_points=template_points)
