"""The per-subject cord reference: an ordered list of resumable steps.

Each step reads the files the previous steps wrote and is skipped when its ledger says its
outputs are current (``steps.run_step``):

1. ``standardize``: the chosen anatomy reoriented to RAS (``desc-preproc``), not resampled.
2. ``cord_mask``: manual mask from ``derivatives/labels`` (always wins), else ``segment``: SCT's
   ``sct_deepseg`` on the standardized anatomy (SCT engine), or the builtin segmentation (builtin
   engine, or auto without SCT), flagged when its confidence is low.
3. ``centerline``: dense centerline, cord-coverage check (``--min-cord-coverage``).
4. ``discs``: manual disc labels (always win), else ``label_discs``: SCT's disc labelling (SCT
   engine) or the builtin labelling against the PAM50 T2 (``--init-disc`` hint); checked against
   the centerline; vertebral levels of the cord mask.
5. ``morphometrics``: length, volume, angle-corrected CSA per slice and per level.
6. ``register``: to PAM50 (builtin: disc-matched straightening + in-plane SyN; SCT:
   ``sct_register_to_template``), warps both ways; images and labels are carried across, and the
   registration scored, by the same code for both engines.
7. ``report``: QC figures, the subject page, the QC record and the dataset QC index.

The engine is resolved once per unit; the engine-run steps (``segment``, ``label_discs``,
``register``) record its name and version in their ledger parameters, so switching engine or SCT
release reruns them. Without disc labels, 6 is skipped with a warning (the report says why).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from filelock import FileLock, Timeout

from spinal_bidsapp import cordref_steps as steps
from spinal_bidsapp.bids.outputs import derivative_path, sidecar_path, subject_report_path
from spinal_bidsapp.config import RunConfig, apply_thread_limits
from spinal_bidsapp.engines import EngineChoice
from spinal_bidsapp.engines.base import Contrast
from spinal_bidsapp.errors import MissingInputError, TemporaryFailure
from spinal_bidsapp.participant import ParticipantUnit
from spinal_bidsapp.steps import LEDGER_NAME, StepRecord, run_step

if TYPE_CHECKING:
    from spinal_bidsapp.engines.sct import SctEngine

logger = logging.getLogger(__name__)

UNIT_LOCK_TIMEOUT_S = 5


@dataclass(frozen=True)
class UnitSummary:
    label: str
    steps_run: tuple[str, ...]
    steps_skipped: tuple[str, ...]
    warnings: tuple[str, ...]


def _resolve_engine(config: RunConfig) -> EngineChoice:
    from spinal_bidsapp.config import sct_dir_from_environment
    from spinal_bidsapp.engines import resolve_participant_engine

    return resolve_participant_engine(config.participant.engine,
                                      sct_dir=sct_dir_from_environment())


def resolve_participant_engines(config: RunConfig) -> dict[str, str]:
    """Engine names and versions for provenance (raises ``EngineUnavailable`` when missing)."""
    from spinal_bidsapp import __version__

    choice = _resolve_engine(config)
    logger.info("Participant engine: %s (%s)", choice.name, choice.reason)
    if choice.name == "sct":
        return {"Spinal Cord Toolbox": choice.version or "unknown"}
    return {"spinal_bidsapp-builtin": __version__}


def process_unit(unit: ParticipantUnit, *, config: RunConfig, threads: int) -> UnitSummary:
    """Run every step of the cord reference for one subject/session (under a per-unit lock)."""
    apply_thread_limits(threads)
    logger.debug("%s: %d thread(s) for ITK/BLAS in this worker", unit.label, threads)
    ex = config.execution
    work = ex.resolved_work_dir / unit.source.entity_prefix
    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / ".lock"), timeout=UNIT_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise TemporaryFailure(
            f"{unit.label} is being processed by another job (lock {work / '.lock'}); "
            "wait for it to finish"
        ) from exc
    try:
        out = ex.output_dir.resolve()
        for folder in ("anat", "figures"):  # partial files of a killed run of this unit
            for leftover in (out / unit.source.subject_dir / folder).glob(".*.tmp*"):
                leftover.unlink(missing_ok=True)
        return _Pipeline(unit, config, out, work, engine=_resolve_engine(config),
                         threads=threads).run()
    finally:
        lock.release()


class _Pipeline:
    """The steps of one unit; holds its paths so each step call stays one readable line."""

    def __init__(self, unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                 engine: EngineChoice, threads: int) -> None:
        self.unit, self.config, self.out, self.work = unit, config, out, work
        self.engine, self.threads = engine, threads
        self.records: list[StepRecord] = []
        self.warnings: list[str] = []
        self.engine_params: dict[str, str] = {"engine": engine.name}
        if engine.name == "sct":
            self.engine_params["sct_version"] = engine.version or "unknown"

    def path(self, kind: str, *, template: str | None = None, figure: str | None = None) -> Path:
        return derivative_path(self.out, kind, self.unit.source, template=template,
                               figure=figure)

    def step(self, name: str, action: Callable[[], None], *, inputs: Sequence[Path],
             outputs: Sequence[Path], params: dict | None = None) -> None:
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
                                     params=params or {}, outputs=outputs,
                                     label=self.unit.label))

    def run(self) -> UnitSummary:
        src, labels, part = self.unit.source, self.unit.labels, self.config.participant
        anat, cord = self.path("anat_preproc"), self.path("cord_mask")
        self.step("standardize", lambda: steps.standardize(src.path, anat,
                                                           bids_dir=self.config.execution.bids_dir),
                  inputs=[src.path], outputs=[anat, sidecar_path(anat)])
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
        discs = self._discs(cord)
        morph, morph_json = self.path("morphometrics"), self.path("morphometrics_json")
        quality: dict[str, object] = {"cord_mask": steps.read_quality(cord),
                                      "discs": steps.read_quality(discs) if discs else None}
        self.step("morphometrics", lambda: steps.morphometrics(cord, discs, morph, morph_json,
                                                               quality=quality),
                  inputs=[cord] + ([discs] if discs else []), outputs=[morph, morph_json],
                  params={"quality": quality})
        registration = self._register(anat, cord, discs)
        self._report(anat, cord, discs, morph_json, registration)
        return UnitSummary(
            label=self.unit.label,
            steps_run=tuple(r.name for r in self.records if not r.skipped),
            steps_skipped=tuple(r.name for r in self.records if r.skipped),
            warnings=tuple(self.warnings))

    def _uses_builtin(self) -> bool:
        """Builtin engine requested, or ``auto`` without a usable SCT."""
        return self.engine.name == "builtin"

    def _sct(self) -> SctEngine:
        from spinal_bidsapp.engines.sct import SctEngine

        assert self.engine.sct is not None
        return SctEngine(self.engine.sct, threads=self.threads)

    def _segment(self, cord: Path) -> None:
        """No manual mask: SCT or builtin segmentation (step ``segment``)."""
        src = self.unit.source
        contrast = cast(Contrast, src.suffix)
        bids_dir = self.config.execution.bids_dir
        params = {**self.engine_params, "contrast": contrast}
        if not self._uses_builtin():
            anat = self.path("anat_preproc")
            self.step("segment", lambda: steps.segment_sct(
                self._sct(), anat, cord, work_dir=self.work / "segment" / "sct",
                contrast=contrast, source=src.path, bids_dir=bids_dir),
                inputs=[anat], outputs=[cord, sidecar_path(cord)], params=params)
            return
        self.step("segment", lambda: steps.segment(src.path, cord, contrast=contrast,
                                                   bids_dir=bids_dir),
                  inputs=[src.path], outputs=[cord, sidecar_path(cord)], params=params)
        self._flag_quality("cord segmentation", cord)

    def _flag_quality(self, what: str, output: Path) -> None:
        quality = steps.read_quality(output)
        if quality.get("low_confidence"):
            self.warnings.append(
                f"builtin {what} has low confidence ({quality['confidence']} < "
                f"{quality['threshold']}): review {output.name} before using its measures")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])

    def _automatic_discs(self, cord: Path) -> Path | None:
        """No manual discs: SCT or builtin labelling against PAM50 (step ``label_discs``)."""
        part, src = self.config.participant, self.unit.source
        anat, discs, lut = self.path("anat_preproc"), self.path("discs"), self.path("discs_lut")
        levels, levels_lut = self.path("levels"), self.path("levels_lut")
        contrast = cast(Contrast, src.suffix)
        outputs = [discs, sidecar_path(discs), lut, levels, levels_lut]
        if not self._uses_builtin():
            self.step("label_discs", lambda: steps.label_discs_sct(
                self._sct(), anat, cord, discs, lut, levels, levels_lut,
                work_dir=self.work / "label_discs" / "sct", contrast=contrast,
                first_disc=part.first_disc, last_disc=part.last_disc),
                inputs=[anat, cord], outputs=outputs,
                params={**self.engine_params, "contrast": contrast,
                        "first_disc": part.first_disc, "last_disc": part.last_disc})
            return discs
        template = steps.find_template(self.config)
        if template is None or template.t2 is None:
            return None
        self.step("label_discs", lambda: steps.label_discs(
            anat, cord, template, self.work / "label_discs" / "discs_auto.nii.gz", discs, lut,
            levels, levels_lut, contrast=contrast, init_disc=part.init_disc_hint,
            first_disc=part.first_disc, last_disc=part.last_disc),
            inputs=[anat, cord, template.t2, template.cord, template.label_disc],
            outputs=outputs,
            params={**self.engine_params, "contrast": contrast, "init_disc": part.init_disc,
                    "first_disc": part.first_disc, "last_disc": part.last_disc})
        self._flag_quality("disc labelling", discs)
        return discs

    def _discs(self, cord: Path) -> Path | None:
        manual = self.unit.labels.discs
        if manual is None:
            automatic = self._automatic_discs(cord)
            if automatic is not None:
                return automatic
            self.warnings.append(
                "no disc labels in derivatives/labels (add <image>_labels-disc.nii.gz): "
                "per-level metrics and the registration to PAM50 were skipped")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
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

    def _register(self, anat: Path, cord: Path,
                  discs: Path | None) -> steps.RegistrationPaths | None:
        if discs is None:
            return None
        template = steps.find_template(self.config)
        if template is None:
            self.warnings.append(
                "PAM50 not available (pass --template-dir or pre-fetch it): registration skipped")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
            return None
        name = "PAM50"
        paths = steps.RegistrationPaths(
            to_template=self.path("xfm_to_template", template=name),
            from_template=self.path("xfm_from_template", template=name),
            anat_in_template=self.path("anat_in_template", template=name),
            cord_in_template=self.path("cord_mask_in_template", template=name),
            template_levels=self.path("template_levels_native", template=name),
            template_cord=self.path("template_cord_native", template=name),
            metrics=self.work / "register" / "registration_metrics.json")
        inputs = [anat, cord, discs, template.cord, template.label_disc]
        inputs += [p for p in (template.levels, template.t2) if p is not None]
        params = {**self.engine_params, **template.provenance()}
        if self._uses_builtin():
            self.step("register", lambda: steps.register(anat, cord, discs, template, paths),
                      inputs=inputs, outputs=list(paths.all()), params=params)
            return paths
        contrast = cast(Contrast, self.unit.source.suffix)
        image = {"T2w": template.t2, "T1w": template.t1, "T2starw": template.t2s}[contrast]
        inputs += [image] if image is not None and image not in inputs else []
        self.step("register", lambda: steps.register_sct(
            self._sct(), anat, cord, discs, template, paths,
            work_dir=self.work / "register" / "sct", contrast=contrast),
            inputs=inputs, outputs=list(paths.all()), params={**params, "contrast": contrast})
        return paths

    def _report(self, anat: Path, cord: Path, discs: Path | None, morph_json: Path,
                registration: steps.RegistrationPaths | None) -> None:
        from spinal_bidsapp.cordref_report import build_report

        page = subject_report_path(self.out, self.unit.source)
        figure = lambda name: self.path("figure", figure=name)  # noqa: E731
        inputs = [anat, cord, morph_json] + ([discs] if discs else [])
        if registration is not None:
            inputs += [registration.anat_in_template, registration.template_cord]
        self.step("report", lambda: build_report(
            self.unit, self.config, page=page, anat=anat, cord=cord, discs=discs,
            morph_json=morph_json, registration=registration, figure=figure,
            warnings=tuple(self.warnings)),
            inputs=inputs, outputs=[page], params={"warnings": self.warnings})
