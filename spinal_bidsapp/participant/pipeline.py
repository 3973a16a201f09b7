"""The per-subject cord reference: an ordered list of resumable steps calling the engine.

Each step reads the files the previous steps wrote and is skipped when its ledger says its
outputs are current (``runtime.ledger.run_step``):

1. ``standardize``: the chosen anatomy reoriented to RAS (``desc-preproc``), not resampled.
2. ``cord_mask``: manual mask from ``derivatives/labels`` (always wins), else ``segment``: the
   engine's cord segmentation (SCT's ``sct_deepseg``, or the builtin one, flagged when its
   confidence is low).
3. ``centerline``: dense centerline, cord-coverage check (``--min-cord-coverage``).
4. [``spine``: engines that declare it (SCT 7.0+), without manual discs: vertebrae, canal and
   disc points.]
5. ``discs``: manual disc labels (always win), else ``label_discs``: the engine's labelling (the
   ``spine`` step's discs, SCT's labelling, or the builtin one against the PAM50 T2 with the
   ``--init-disc`` hint), checked against the centerline like manual ones; vertebral levels of
   the cord mask.
6. [``rootlets``: engines that declare it (SCT), T2w with cervical levels.]
7. ``morphometrics``: length, volume, angle-corrected CSA per slice and per level.
8. ``csa_pam50``: CSA in PAM50 dimensions (the engine's measure or the builtin interpolation).
9. ``register``: the engine's registration to PAM50 (builtin: disc-matched straightening +
   in-plane SyN; SCT: ``register_discs`` [+ ``register_rootlets``] [+ the builtin candidate
   ``register_builtin`` under ``--engine auto``], then the primary warp chosen); images and
   labels are carried across, and the registration scored, by the same code for every engine
   (``engines.registration``).
10. ``report``: QC figures, the subject page, the QC record and the dataset QC index.

The engine (:class:`~spinal_bidsapp.engines.base.ParticipantEngine`) is resolved once per unit;
the pipeline asks it what it can do (``capabilities``) and never looks at its name. Its steps
record its name and version in their ledger parameters, so switching engine or SCT release reruns
them. Without disc labels, the registration is skipped with a warning (the report says why).

Each engine step degrades on its own (:meth:`_Pipeline._engine_step`, the one place where this is
decided): a step the engine cannot run here (its deep-learning model is not installed, a program
or Python module is missing, the network it needs is unreachable) runs on the engine's
``fallback`` (the builtin engine) instead, or is skipped when the fallback lacks that capability
(``spine``, ``rootlets``); a failure caused by the data stays a failure. Manual labels never
trigger a deep-learning step: with manual discs, the ``spine`` step does not run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TypeVar, cast

import nibabel as nib
import numpy as np

from spinal_bidsapp.bids.labels import find_manual_labels, manual_label_path
from spinal_bidsapp.bids.outputs import derivative_path, sidecar_path, subject_report_path
from spinal_bidsapp.config import Contrast, RunConfig
from spinal_bidsapp.engines.base import (
    Capability,
    Companion,
    DiscOptions,
    DiscOutputs,
    ParticipantEngine,
    RegistrationPaths,
    SpinePaths,
    SpineRecord,
    UnitFiles,
)
from spinal_bidsapp.engines.tools import ExternalToolError
from spinal_bidsapp.errors import (
    EngineUnavailable,
    InputDataError,
    InsufficientCoverageError,
    MissingInputError,
    SpinalBidsAppError,
)
from spinal_bidsapp.participant import steps
from spinal_bidsapp.participant.morphometrics_pam50 import find_normative_database
from spinal_bidsapp.participant.records import EngineStep, Quality
from spinal_bidsapp.participant.report import ReportInputs, build_report
from spinal_bidsapp.participant.units import ParticipantUnit
from spinal_bidsapp.runtime.ledger import LEDGER_NAME, StepRecord, run_step
from spinal_bidsapp.templates.pam50 import Pam50, find_template

logger = logging.getLogger(__name__)
T = TypeVar("T")

HUMAN_VOXEL_MM = (0.1, 6.0)
"""Voxel sizes of spinal cord MRI (0.25 mm in-plane to 5-6 mm axial slices)."""
HUMAN_CORD_LENGTH_MM = 600.0
HUMAN_CSA_MM2 = (15.0, 200.0)
"""Mean cord CSA over the imaged levels: about 40-100 mm2 in adults, wide margins."""
TEMPLATE_NAME = "PAM50"


@dataclass(frozen=True)
class UnitSummary:
    label: str
    steps_run: tuple[str, ...]
    steps_skipped: tuple[str, ...]
    warnings: tuple[str, ...]


def run_pipeline(unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                 engine: ParticipantEngine) -> UnitSummary:
    """Every step of the cord reference for one unit, in order, on ``engine`` (the caller holds
    the unit's lock: :func:`spinal_bidsapp.participant.unit_run.process_unit`)."""
    return _Pipeline(unit, config, out, work, engine=engine).run()


class _Pipeline:
    """The steps of one unit; holds its paths so each step call stays one readable line.

    It is also the :class:`~spinal_bidsapp.engines.base.StepRunner` the engine runs its steps
    through (:meth:`step`, :meth:`engine_step`, :meth:`record_engine_step`, :meth:`path`,
    :meth:`warn`)."""

    def __init__(self, unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                 engine: ParticipantEngine) -> None:
        self.unit, self.config, self.out, self.work = unit, config, out, work
        self.engine = engine
        self.records: list[StepRecord] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        """What was not done and why, when that is expected (not a warning)."""
        self.engine_steps: dict[str, EngineStep] = {}
        """Which engine ran each engine step, and why not the run's engine when it could not."""

    # ------------------------------------------------------------------- the engine's runner

    def path(self, kind: str, *, template: str | None = None, figure: str | None = None) -> Path:
        return derivative_path(self.out, kind, self.unit.source, template=template,
                               figure=figure)

    def step(self, name: str, action: Callable[[], None], *, inputs: Sequence[Path],
             outputs: Sequence[Path], params: Mapping[str, object] | None = None) -> None:
        if self.config.execution.reports_only:
            if name != "report":  # reuse what exists, compute nothing
                missing = [p.name for p in outputs if not p.is_file()]
                if missing:
                    raise MissingInputError(
                        f"{self.unit.label}: --reports-only needs the outputs of step {name} "
                        f"({missing[0]} is missing); run without --reports-only first")
                self.records.append(StepRecord(name=name, skipped=True))
                return
            (self.work / name / LEDGER_NAME).unlink(missing_ok=True)  # always redraw
        self.records.append(run_step(name, action, step_dir=self.work / name, inputs=inputs,
                                     params=dict(params or {}), outputs=outputs,
                                     label=self.unit.label))

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        logger.warning("%s: %s", self.unit.label, message)

    def record_engine_step(self, step: str, engine: ParticipantEngine, method: str) -> None:
        self.engine_steps[step] = EngineStep(step, engine.info.name, method, label=engine.title)

    def engine_step(self, step: str, capability: Capability,
                    call: Callable[[ParticipantEngine, str | None], T], *,
                    fallback: bool = True) -> T | None:
        return self._engine_step(step, capability, call, fallback=fallback)

    def _engine_step(self, step: str, capability: Capability,
                     call: Callable[[ParticipantEngine, str | None], T | None], *,
                     unavailable: str | None = None, fallback: bool = True) -> T | None:
        """Run one engine step: THE place where a step degrades to another engine.

        An engine without a fallback runs ``call(engine, None)`` as is. Otherwise the engine
        runs it unless it cannot do ``capability`` here, known beforehand (``unavailable``, given
        by the pipeline, or :meth:`ParticipantEngine.unavailable`: a model that is not
        installed) or when it runs (:class:`EngineUnavailable`: a missing program, model, Python
        module or network); then ``call(engine.fallback, reason)``, or nothing when the fallback
        lacks the capability (or ``fallback`` is False). Any other failure (the data's)
        propagates. What ran, and why, is recorded for the log, the sidecars (through
        ``reason``) and the report.
        """
        engine = self.engine
        if engine.fallback is None:
            self.record_engine_step(step, engine, engine.method(capability))
            return call(engine, None)
        reason = unavailable or engine.unavailable(capability)
        if reason is None:
            try:
                result = call(engine, None)
            except EngineUnavailable as exc:
                reason = str(exc)
            else:
                self.record_engine_step(step, engine, engine.method(capability))
                return result
        stand_in = engine.fallback if fallback and capability in engine.fallback.capabilities \
            else None
        ran = stand_in.info.name if stand_in is not None else "skipped"
        label = f"{stand_in.title} ({engine.title} fallback)" if stand_in is not None else ran
        self.engine_steps[step] = EngineStep(step, ran, ran, fallback_reason=reason, label=label)
        logger.warning("%s: %s: %s instead of %s: %s", self.unit.label, step, ran, engine.title,
                       reason)
        return call(stand_in, reason) if stand_in is not None else None

    # ------------------------------------------------------------------------- the steps

    @cached_property
    def template(self) -> Pam50 | None:
        return find_template(self.config)

    def unit_files(self) -> UnitFiles:
        src = self.unit.source
        labels_dir = self.config.execution.labels_dir
        return UnitFiles(
            source=src.path, anat=self.path("anat_preproc"), contrast=cast(Contrast, src.suffix),
            bids_dir=self.config.execution.bids_dir,
            companions=tuple(Companion(c.path, find_manual_labels(labels_dir, c).cord_mask,
                                       cast(Contrast, c.suffix))
                             for c in self.unit.companions))

    def run(self) -> UnitSummary:
        src, labels, part = self.unit.source, self.unit.labels, self.config.participant
        anat, cord = self.path("anat_preproc"), self.path("cord_mask")
        self.step("standardize", lambda: steps.standardize(src.path, anat,
                                                           bids_dir=self.config.execution.bids_dir),
                  inputs=[src.path], outputs=[anat, sidecar_path(anat)])
        self._check_extent(anat)
        manual_cord = labels.cord_mask
        if manual_cord is not None:
            self.step("cord_mask", lambda: steps.import_label_mask(src.path, manual_cord, cord),
                      inputs=[src.path, manual_cord], outputs=[cord, sidecar_path(cord)])
        else:
            self._segment(cord)
        centerline_mask = self.path("centerline_mask")
        centerline_table = self.path("centerline_table")
        self.step("centerline", lambda: steps.centerline(
            cord, centerline_mask, centerline_table, min_coverage_mm=part.min_cord_coverage_mm,
            image_name=src.path.name),
            inputs=[cord], outputs=[centerline_mask, centerline_table],
            params={"min_coverage_mm": part.min_cord_coverage_mm})
        spine = self._spine()
        discs = self._discs(cord, spine)
        rootlets = self._rootlets(discs)
        morph, morph_json = self.path("morphometrics"), self.path("morphometrics_json")
        quality: dict[str, object] = {
            "cord_mask": Quality.read(cord).to_json(),
            "discs": Quality.read(discs).to_json() if discs else None,
            "spine": SpineRecord.read(spine.check).to_json() if spine else None}
        canal = spine.canal if spine is not None else None
        self.step("morphometrics", lambda: steps.morphometrics(cord, discs, morph, morph_json,
                                                               quality=quality, canal=canal),
                  inputs=[cord] + [p for p in (discs, canal) if p is not None],
                  outputs=[morph, morph_json], params={"quality": quality})
        self._check_human_ranges(anat, morph_json)
        csa_pam50 = self._csa_in_pam50(cord, discs, morph)
        registration = self._register(cord, discs, rootlets)
        self._report(anat, cord, discs, morph_json, registration, spine=spine,
                     rootlets=rootlets, csa_pam50=csa_pam50)
        return UnitSummary(
            label=self.unit.label,
            steps_run=tuple(r.name for r in self.records if not r.skipped),
            steps_skipped=tuple(r.name for r in self.records if r.skipped),
            warnings=tuple(self.warnings))

    def _check_human_ranges(self, anat: Path, morph_json: Path) -> None:
        """Warn, with the figures, where the voxel size or the measures fall outside what a
        human spinal cord gives (a wrong header scale, a mask of something else)."""
        zooms = cast(nib.Nifti1Image, nib.load(str(anat))).header.get_zooms()[:3]
        measures = json.loads(morph_json.read_text(encoding="utf-8"))
        problems = []
        low, high = HUMAN_VOXEL_MM
        if any(not low <= float(z) <= high for z in zooms):
            problems.append(f"voxel size {' x '.join(f'{float(z):.3g}' for z in zooms)} mm "
                            f"(expected {low:g}-{high:g} mm)")
        length = float(measures.get("cord_length_mm") or 0.0)
        if length > HUMAN_CORD_LENGTH_MM:
            problems.append(f"cord length {length:.0f} mm (a whole adult cord is about 450 mm)")
        csa = measures.get("csa_mean_mm2")
        low, high = HUMAN_CSA_MM2
        if csa is not None and not low <= float(csa) <= high:
            problems.append(f"mean CSA {float(csa):.1f} mm2 (expected {low:g}-{high:g} mm2)")
        if problems:
            self.warnings.append("outside the human range: " + "; ".join(problems)
                                 + "; check the image header's voxel size and the cord mask")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])

    def _check_extent(self, anat: Path) -> None:
        """The image must be able to hold ``--min-cord-coverage`` of cord at all (one axial
        slice cannot): said before any cord mask is looked for (exit 66)."""
        img = cast(nib.Nifti1Image, nib.load(str(anat)))  # RAS: axis 2 runs along the cord
        extent = float(img.shape[2] * np.linalg.norm(img.affine[:3, 2]))
        needed = self.config.participant.min_cord_coverage_mm
        if extent < needed:
            raise InsufficientCoverageError(
                f"{self.unit.source.path.name}: the cord covers at most {extent:.1f} mm, the "
                f"image's length along the cord ({img.shape[2]} axial slice(s)), less than "
                f"--min-cord-coverage {needed:g} mm; use an image covering more of the cord")

    def _segment(self, cord: Path) -> None:
        """No manual mask: the engine's segmentation (step ``segment``)."""
        unit = self.unit_files()
        self._engine_step("segment", "segment_cord", lambda engine, fallback: engine.segment_cord(
            self, unit, cord, fallback_reason=fallback))
        self._flag_quality("cord segmentation", cord)

    def _flag_quality(self, what: str, output: Path) -> None:
        """Warn where a method that reports its confidence was not sure."""
        quality = Quality.read(output)
        if not quality.low_confidence:
            return
        if what == "disc labelling":
            advice = steps.disc_review_advice(
                quality, subject=self.unit.source.subject,
                labels_path=manual_label_path(self.config.execution.labels_dir,
                                              self.unit.source, "discs"))
        else:
            advice = f"review {output.name} before using its measures"
        self.warn(f"{quality.source} {what} has low confidence ({quality.confidence} < "
                  f"{quality.threshold}): {advice}")

    def _spine(self) -> SpinePaths | None:
        """Engines with the ``spine`` capability, without manual discs: vertebrae, discs and
        canal (step ``spine``). With manual discs it does not run (manual labels never trigger a
        deep-learning step)."""
        if "spine" not in self.engine.capabilities:
            return None
        if self.unit.labels.discs is not None:
            self.notes.append("vertebrae and canal: not segmented, the disc labels are manual "
                              "(SCT's spine task runs only to label discs)")
            return None
        work = self.work / "spine"
        paths = SpinePaths(vertebrae=self.path("vertebrae"),
                           vertebrae_lut=self.path("vertebrae_lut"),
                           canal=self.path("canal_mask"), discs=work / "discs_sct.nii.gz",
                           check=work / "spine_check.json")
        unit = self.unit_files()
        if self._engine_step("spine", "spine", lambda engine, _: engine.segment_spine(
                self, unit, paths)) is None:
            return None
        check = SpineRecord.read(paths.check)
        if not check.consistent:
            self.warn("SCT vertebra/disc labels are inconsistent (" + "; ".join(check.problems)
                      + "): review them, or add disc labels to derivatives/labels")
        return paths

    def _automatic_discs(self, cord: Path, spine: SpinePaths | None) -> Path | None:
        """No manual discs: the engine's labelling (step ``label_discs``), checked and used like
        manual labels."""
        part = self.config.participant
        out = DiscOutputs(discs=self.path("discs"), lut=self.path("discs_lut"),
                          levels=self.path("levels"), levels_lut=self.path("levels_lut"))
        options = DiscOptions(first_disc=part.first_disc, last_disc=part.last_disc,
                              init_disc=part.init_disc, init_disc_hint=part.init_disc_hint)
        unit = self.unit_files()

        def call(engine: ParticipantEngine, fallback: str | None) -> Path | None:
            labelling = engine.label_discs(unit, cord, work_dir=self.work / "label_discs",
                                           options=options, template=self.template, spine=spine,
                                           fallback_reason=fallback)
            if labelling is None:
                return None
            self.step("label_discs", lambda: steps.import_automatic_discs(
                unit.anat, labelling, cord, out, options),
                inputs=labelling.inputs, outputs=out.all(), params=labelling.params)
            self._flag_quality("disc labelling", out.discs)
            return out.discs

        spine_skipped = (self.engine_steps["spine"].fallback_reason
                         if spine is None and "spine" in self.engine_steps else None)
        return self._engine_step("label_discs", "label_discs", call, unavailable=spine_skipped)

    def _discs(self, cord: Path, spine: SpinePaths | None) -> Path | None:
        manual = self.unit.labels.discs
        if manual is None:
            automatic = self._automatic_discs(cord, spine)
            if automatic is not None:
                return automatic
            template = self.template
            if self.engine.discs_need_template and (template is None or template.t2 is None):
                self.warn(
                    "PAM50 is not available, so the discs could not be labelled automatically, "
                    "and there are no disc labels in derivatives/labels: per-level metrics and "
                    "the registration to PAM50 were skipped; give a PAM50 folder with "
                    "--template-dir (or set SCT_DIR, or pre-fetch it into the cache: "
                    "docs/troubleshooting.md, Offline machines), or add "
                    "<image>_labels-disc.nii.gz to derivatives/labels")
            else:
                self.warn(
                    "no disc labels in derivatives/labels (add <image>_labels-disc.nii.gz): "
                    "per-level metrics and the registration to PAM50 were skipped")
            return None
        part = self.config.participant
        discs, lut = self.path("discs"), self.path("discs_lut")
        levels, levels_lut = self.path("levels"), self.path("levels_lut")
        src = self.unit.source.path
        self.step("discs", lambda: steps.import_discs(
            src, manual, cord, discs, lut, levels, levels_lut,
            first_disc=part.first_disc, last_disc=part.last_disc),
            inputs=[src, manual, cord], outputs=[discs, lut, levels, levels_lut],
            params={"first_disc": part.first_disc, "last_disc": part.last_disc})
        return discs

    def _rootlets(self, discs: Path | None) -> Path | None:
        """Engines with the ``rootlets`` capability, T2w, cervical coverage: dorsal rootlets
        (step ``rootlets``); a failure here is a warning, and the next run tries again."""
        if "rootlets" not in self.engine.capabilities:
            return None
        unit = self.unit_files()
        why_not = self.engine.rootlets_unsupported(
            unit.contrast, steps.read_disc_values(discs) if discs is not None else None)
        if why_not is not None:
            self.notes.append(f"rootlets: not segmented, {why_not}")
            return None
        rootlets, lut = self.path("rootlets"), self.path("rootlets_lut")
        try:
            return self._engine_step("rootlets", "rootlets", lambda engine, _: (
                engine.segment_rootlets(self, unit, rootlets, lut)))
        except SpinalBidsAppError as exc:
            self.warn(f"rootlet segmentation failed, registration uses the discs only: {exc}")
            return None

    def _csa_in_pam50(self, cord: Path, discs: Path | None, morph: Path) -> Path | None:
        """Step ``csa_pam50``: CSA in the PAM50 anatomical dimensions (the engine's measure,
        e.g. SCT's ``sct_process_segmentation -normalize-PAM50``, else the builtin
        interpolation), and against SCT's norms when installed; omitted with a note when the
        levels or PAM50's levels are missing."""
        what = "CSA in PAM50 space"
        template = self.template
        reason = ("no disc labels" if discs is None else
                  "PAM50 not available" if template is None else None)
        if reason is not None or discs is None or template is None:
            self.notes.append(f"{what}: not computed, {reason}")
            return None
        out_json = self.path("morphometrics_pam50_json", template=TEMPLATE_NAME)
        out_tsv = self.path("morphometrics_pam50", template=TEMPLATE_NAME)
        normative = find_normative_database(self.engine.sct_dir)
        params = {"normative": str(normative)}

        def call(engine: ParticipantEngine, fallback: str | None) -> Path | None:
            levels_file = engine.csa_pam50_levels(template)
            if levels_file is None:
                self.notes.append(f"{what}: not computed, the PAM50 folder has no "
                                  "PAM50_levels.nii.gz")
                return None
            self.step("csa_pam50", lambda: steps.csa_in_pam50(
                morph, discs, cord, levels_file, out_tsv, out_json,
                contrast=self.unit.source.suffix,
                measure=lambda n_slices: engine.measure_csa_pam50(
                    cord, discs, work_dir=self.work / "csa_pam50", n_slices=n_slices),
                normative_root=normative, fallback_reason=fallback),
                inputs=[morph, discs, cord, levels_file], outputs=[out_tsv, out_json],
                params=engine.step_params(params, fallback))
            return out_json

        try:
            return self._engine_step("csa_pam50", "csa_pam50", call)
        except InputDataError as exc:
            self.notes.append(f"{what}: not computed, {exc}")
        except ExternalToolError as exc:  # an optional summary: a failure spares the rest
            self.warn(f"{what}: not computed, {exc}")
        return None

    def _register(self, cord: Path, discs: Path | None,
                  rootlets: Path | None) -> RegistrationPaths | None:
        if discs is None:
            return None
        template = self.template
        if template is None:
            self.warn("PAM50 not available (pass --template-dir or pre-fetch it): registration "
                      "skipped")
            return None
        name = TEMPLATE_NAME
        paths = RegistrationPaths(
            to_template=self.path("xfm_to_template", template=name),
            from_template=self.path("xfm_from_template", template=name),
            anat_in_template=self.path("anat_in_template", template=name),
            cord_in_template=self.path("cord_mask_in_template", template=name),
            template_levels=self.path("template_levels_native", template=name),
            template_cord=self.path("template_cord_native", template=name),
            metrics=self.work / "register" / "registration_metrics.json")
        unit = self.unit_files()
        return self._engine_step(
            "register", "register_to_template", lambda engine, fallback: (
                engine.register_to_template(self, unit, cord, discs, template, paths,
                                            rootlets=rootlets, fallback_reason=fallback)))

    def _report(self, anat: Path, cord: Path, discs: Path | None, morph_json: Path,
                registration: RegistrationPaths | None, *,
                spine: SpinePaths | None, rootlets: Path | None,
                csa_pam50: Path | None) -> None:
        page = subject_report_path(self.out, self.unit.source)
        figure = lambda name: self.path("figure", figure=name)  # noqa: E731
        # which engine ran each step is news only where a step could run on another engine
        shown = tuple(self.engine_steps.values()) if self.engine.fallback is not None else ()
        inputs = ReportInputs(anat=anat, cord=cord, discs=discs, morph_json=morph_json,
                              registration=registration, spine=spine, rootlets=rootlets,
                              csa_pam50=csa_pam50, notes=tuple(self.notes),
                              engine_steps=shown, lacking=tuple(self.engine.lacking.items()))
        self.step("report", lambda: build_report(
            self.unit, self.config, inputs, page=page, figure=figure,
            warnings=tuple(self.warnings)),
            inputs=inputs.files(), outputs=[page],
            params={"warnings": self.warnings, "notes": self.notes,
                    "engine_steps": [e.ledger_params() for e in self.engine_steps.values()]})
