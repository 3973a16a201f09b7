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
   registration scored, by the same code for both engines. Under ``--engine auto`` the builtin
   registration is computed too (``register_builtin``) and the better-scoring of the two is
   primary (``registration.choose_engine_registration``).
7. ``report``: QC figures, the subject page, the QC record and the dataset QC index.

The engine is resolved once per unit; the engine-run steps (``segment``, ``label_discs``,
``register``) record its name and version in their ledger parameters, so switching engine or SCT
release reruns them. Without disc labels, 6 is skipped with a warning (the report says why).

With SCT, each engine step degrades on its own (:meth:`_Pipeline._engine_step`, the one place
where this is decided): a step SCT cannot run here (its deep-learning model is not installed, a
program or Python module is missing, the network it needs is unreachable) runs the builtin
implementation instead, or is skipped when it has none (``spine``, ``rootlets``); a failure caused
by the data stays a failure. Manual labels never trigger a deep-learning step: with manual discs,
SCT's ``spine`` task does not run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, cast

import numpy as np
from filelock import FileLock, Timeout

from spinal_bidsapp.bids.labels import find_manual_labels, manual_label_path
from spinal_bidsapp.bids.outputs import derivative_path, sidecar_path, subject_report_path
from spinal_bidsapp.config import SCT_CONTRAST, Contrast, RunConfig, apply_thread_limits
from spinal_bidsapp.engines import EngineChoice
from spinal_bidsapp.engines.tools import ExternalToolError
from spinal_bidsapp.errors import (
    EngineUnavailable,
    InputDataError,
    MissingInputError,
    SpinalBidsAppError,
    TemporaryFailure,
)
from spinal_bidsapp.participant import steps
from spinal_bidsapp.participant.registration import (
    RegistrationLabels,
    RegistrationPaths,
    builtin_candidate_paths,
    register,
    register_sct_path,
    select_sct_registration,
)
from spinal_bidsapp.participant.units import ParticipantUnit
from spinal_bidsapp.runtime.ledger import LEDGER_NAME, StepRecord, run_step
from spinal_bidsapp.templates.pam50 import find_template

if TYPE_CHECKING:
    from spinal_bidsapp.engines.sct import Capability, SctEngine
    from spinal_bidsapp.templates.pam50 import Pam50

logger = logging.getLogger(__name__)
T = TypeVar("T")

UNIT_LOCK_TIMEOUT_S = 5
HUMAN_VOXEL_MM = (0.1, 6.0)
"""Voxel sizes of spinal cord MRI (0.25 mm in-plane to 5-6 mm axial slices)."""
HUMAN_CORD_LENGTH_MM = 600.0
HUMAN_CSA_MM2 = (15.0, 200.0)
"""Mean cord CSA over the imaged levels: about 40-100 mm2 in adults, wide margins."""
ROOTLET_LAST_DISC = 9
"""T1/T2: an image whose highest disc is below it shows no level SCT's rootlet model covers
(C2-T1)."""


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
        if ex.reports_only:
            return _Pipeline(unit, config, out, work, engine=_resolve_engine(config),
                             threads=threads).run()
        return _run_recorded(unit, config, out, work, threads=threads)
    finally:
        lock.release()


def _run_recorded(unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                  threads: int) -> UnitSummary:
    """Run the pipeline, recording its state for the group level (``bids.status``); a failed
    unit's files leave the outputs and the QC index lists it as failed."""
    from spinal_bidsapp.bids import status

    key, run_uuid = unit.label, config.execution.run_uuid
    status.record_running(out, key, run_uuid=run_uuid)
    try:
        summary = _Pipeline(unit, config, out, work, engine=_resolve_engine(config),
                            threads=threads).run()
    except Exception as exc:
        code = exc.exit_code if isinstance(exc, SpinalBidsAppError) else 1
        error = str(exc) if isinstance(exc, SpinalBidsAppError) else \
            f"unexpected {exc.__class__.__name__}: {exc}"
        status.record_failure(out, key, run_uuid=run_uuid, exit_code=code, error=error)
        status.quarantine_outputs(out, unit.source, work / "failed-outputs")
        _publish_failure(unit, config, out, error)
        raise
    status.record_success(
        out, key, run_uuid=run_uuid,
        inputs=status.unit_inputs(unit.source, unit.labels),
        outputs={kind: derivative_path(out, kind, unit.source)
                 for kind in status.GROUP_OUTPUTS})
    return summary


def _publish_failure(unit: ParticipantUnit, config: RunConfig, out: Path, error: str) -> None:
    """A QC index entry saying the unit failed, with its error and a link to the run's log."""
    from spinal_bidsapp import __version__
    from spinal_bidsapp.reports.model import QcRecord, subject_key
    from spinal_bidsapp.reports.qc import rebuild_qc_index, write_qc_record

    src, ex = unit.source, config.execution
    write_qc_record(QcRecord(
        key=subject_key(f"sub-{src.subject}", f"ses-{src.session}" if src.session else None),
        subject=src.subject, session=src.session,
        report=f"logs/{ex.analysis_level}_{ex.run_uuid}.log", steps=(), warnings=0, errors=1,
        version=__version__, engine=config.participant.engine, failure=error), out)
    rebuild_qc_index(out)


class _Pipeline:
    """The steps of one unit; holds its paths so each step call stays one readable line."""

    def __init__(self, unit: ParticipantUnit, config: RunConfig, out: Path, work: Path, *,
                 engine: EngineChoice, threads: int) -> None:
        self.unit, self.config, self.out, self.work = unit, config, out, work
        self.engine, self.threads = engine, threads
        self.records: list[StepRecord] = []
        self.warnings: list[str] = []
        self.notes: list[str] = []
        """What was not done and why, when that is expected (not a warning)."""
        self.engine_params: dict[str, str] = {"engine": engine.name}
        if engine.name == "sct":
            self.engine_params["sct_version"] = engine.version or "unknown"
        self.engine_steps: dict[str, steps.EngineStep] = {}
        """Which engine ran each engine step, and why not SCT when SCT was chosen."""

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
        quality: dict[str, object] = {"cord_mask": steps.read_quality(cord),
                                      "discs": steps.read_quality(discs) if discs else None,
                                      "spine": steps.read_spine_check(spine.check if spine
                                                                      else None)}
        canal = spine.canal if spine is not None else None
        self.step("morphometrics", lambda: steps.morphometrics(cord, discs, morph, morph_json,
                                                               quality=quality, canal=canal),
                  inputs=[cord] + [p for p in (discs, canal) if p is not None],
                  outputs=[morph, morph_json], params={"quality": quality})
        self._check_human_ranges(anat, morph_json)
        csa_pam50 = self._csa_in_pam50(cord, discs, morph)
        registration = self._register(anat, cord, discs, rootlets)
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
        import json

        import nibabel as nib

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
        import nibabel as nib

        from spinal_bidsapp.errors import InsufficientCoverageError

        img = cast(nib.Nifti1Image, nib.load(str(anat)))  # RAS: axis 2 runs along the cord
        extent = float(img.shape[2] * np.linalg.norm(img.affine[:3, 2]))
        needed = self.config.participant.min_cord_coverage_mm
        if extent < needed:
            raise InsufficientCoverageError(
                f"{self.unit.source.path.name}: the cord covers at most {extent:.1f} mm, the "
                f"image's length along the cord ({img.shape[2]} axial slice(s)), less than "
                f"--min-cord-coverage {needed:g} mm; use an image covering more of the cord")

    def _runs_spine_task(self) -> bool:
        """SCT engine with TotalSpineSeg (SCT 7.0+); 6.x labels discs with label_vertebrae."""
        from spinal_bidsapp.engines.sct import SctVersion

        return self.engine.sct is not None and self.engine.sct.version >= SctVersion(7, 0)

    def _spine(self) -> steps.SpinePaths | None:
        """SCT engine without manual discs: vertebrae, discs and canal (step ``spine``). With
        manual discs it does not run (manual labels never trigger a deep-learning step)."""
        if self._uses_builtin() or not self._runs_spine_task():
            return None
        if self.unit.labels.discs is not None:
            self.notes.append("vertebrae and canal: not segmented, the disc labels are manual "
                              "(SCT's spine task runs only to label discs)")
            return None
        src, anat, work = self.unit.source, self.path("anat_preproc"), self.work / "spine"
        paths = steps.SpinePaths(vertebrae=self.path("vertebrae"),
                                 vertebrae_lut=self.path("vertebrae_lut"),
                                 canal=self.path("canal_mask"), discs=work / "discs_sct.nii.gz",
                                 check=work / "spine_check.json")

        def by_sct(engine: SctEngine) -> steps.SpinePaths:
            self.step("spine", lambda: steps.spine_sct(
                engine, anat, paths, work_dir=work / "sct", source=src.path,
                bids_dir=self.config.execution.bids_dir),
                inputs=[anat], outputs=paths.all(), params=dict(self.engine_params))
            return paths

        if self._engine_step("spine", "spine", sct=by_sct, builtin=None) is None:
            return None
        check = steps.read_spine_check(paths.check) or {}
        if not check.get("consistent", True):
            self.warnings.append("SCT vertebra/disc labels are inconsistent ("
                                 + "; ".join(map(str, cast(list, check["problems"])))
                                 + "): review them, or add disc labels to derivatives/labels")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
        return paths

    def _rootlets(self, discs: Path | None) -> Path | None:
        """SCT engine, T2w, cervical coverage: dorsal rootlets (step ``rootlets``); a failure here
        is a warning, and the next run tries again."""
        if self._uses_builtin():
            return None
        src = self.unit.source
        if src.suffix != "T2w":
            self.notes.append(f"rootlets: not segmented, SCT's rootlet model is trained on T2w, "
                              f"this anatomy is {src.suffix}")
            return None
        if discs is not None and min(steps.read_disc_values(discs)) > ROOTLET_LAST_DISC:
            self.notes.append("rootlets: not segmented, the image shows no cervical level "
                              "(rootlets are segmented from C2 to T1)")
            return None
        anat, rootlets, lut = (self.path("anat_preproc"), self.path("rootlets"),
                               self.path("rootlets_lut"))

        def by_sct(engine: SctEngine) -> Path:
            self.step("rootlets", lambda: steps.rootlets_sct(
                engine, anat, rootlets, lut, work_dir=self.work / "rootlets" / "sct",
                source=src.path, bids_dir=self.config.execution.bids_dir),
                inputs=[anat], outputs=[rootlets, sidecar_path(rootlets), lut],
                params=dict(self.engine_params))
            return rootlets

        try:
            return self._engine_step("rootlets", "rootlets", sct=by_sct, builtin=None)
        except SpinalBidsAppError as exc:
            self.warnings.append(f"rootlet segmentation failed, registration uses the discs "
                                 f"only: {exc}")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
            return None

    def _csa_in_pam50(self, cord: Path, discs: Path | None, morph: Path) -> Path | None:
        """Step ``csa_pam50``: CSA in the PAM50 anatomical dimensions (SCT's
        ``sct_process_segmentation -normalize-PAM50``, else the builtin interpolation), and
        against SCT's norms when installed; omitted with a note when the levels or PAM50's
        levels are missing."""
        from spinal_bidsapp.config import sct_dir_from_environment
        from spinal_bidsapp.participant.morphometrics_pam50 import find_normative_database

        what = "CSA in PAM50 space"
        template = find_template(self.config)
        sct_root = (self.engine.sct.sct_dir if self.engine.sct is not None
                    else sct_dir_from_environment())
        reason = ("no disc labels" if discs is None else
                  "PAM50 not available" if template is None else None)
        if reason is not None or discs is None or template is None:
            self.notes.append(f"{what}: not computed, {reason}")
            return None
        out_json = self.path("morphometrics_pam50_json", template="PAM50")
        out_tsv = self.path("morphometrics_pam50", template="PAM50")
        normative = find_normative_database(sct_root)
        params = {"normative": str(normative)}

        def run(levels_file: Path, engine: SctEngine | None, step_params: dict[str, object],
                fallback: str | None) -> Path:
            self.step("csa_pam50", lambda: steps.csa_in_pam50(
                morph, discs, cord, levels_file, out_tsv, out_json,
                contrast=self.unit.source.suffix, engine=engine, normative_root=normative,
                work_dir=self.work / "csa_pam50" / "sct", fallback_reason=fallback),
                inputs=[morph, discs, cord, levels_file], outputs=[out_tsv, out_json],
                params=step_params)
            return out_json

        def by_sct(engine: SctEngine) -> Path:
            levels = engine.install.sct_dir / "data" / "PAM50" / "template" / "PAM50_levels.nii.gz"
            if not levels.is_file():  # -normalize-PAM50 reads SCT's own PAM50, not ours
                raise EngineUnavailable(f"SCT's own {levels} is missing "
                                        "(sct_process_segmentation -normalize-PAM50 reads it)")
            return run(levels, engine, {**self.engine_params, **params}, None)

        def by_builtin(fallback: str | None) -> Path | None:
            if template.levels is None or not template.levels.is_file():
                self.notes.append(f"{what}: not computed, the PAM50 folder has no "
                                  "PAM50_levels.nii.gz")
                return None
            return run(template.levels, None, self._builtin_params(params, fallback), fallback)

        try:
            return self._engine_step("csa_pam50", "measure_cord", sct=by_sct,
                                     builtin=by_builtin)
        except InputDataError as exc:
            self.notes.append(f"{what}: not computed, {exc}")
        except ExternalToolError as exc:  # an optional summary: SCT failing on it spares the rest
            self.warnings.append(f"{what}: not computed, {exc}")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
        return None

    def _engine_step(self, step: str, capability: Capability, *,
                     sct: Callable[[SctEngine], T] | None,
                     builtin: Callable[[str | None], T | None] | None,
                     unavailable: str | None = None) -> T | None:
        """Run one engine step: THE place where a step degrades from SCT to builtin.

        With the builtin engine, ``builtin(None)``. With SCT, ``sct(engine)`` unless SCT cannot
        do ``capability`` here, known beforehand (``unavailable``, given by the pipeline, or
        :meth:`SctEngine.unavailable`: a model that is not installed) or when it runs
        (:class:`EngineUnavailable`: a missing program, model, Python module or network); then
        ``builtin(reason)``, or nothing when the step has no builtin implementation. Any other
        failure (the data's) propagates. What ran, and why, is recorded for the log, the
        sidecars (through ``reason``) and the report.
        """
        if self._uses_builtin():
            self.engine_steps[step] = steps.EngineStep(step, "builtin", "builtin")
            return builtin(None) if builtin is not None else None
        engine = self._sct()
        reason = unavailable or engine.unavailable(capability)
        if reason is None and sct is not None:
            try:
                result = sct(engine)
            except EngineUnavailable as exc:
                reason = str(exc)
            else:
                self.engine_steps[step] = steps.EngineStep(step, "sct",
                                                           engine.method(capability))
                return result
        reason = reason or "no SCT implementation"
        ran: Literal["builtin", "skipped"] = "builtin" if builtin is not None else "skipped"
        self.engine_steps[step] = steps.EngineStep(step, ran, ran, fallback_reason=reason)
        logger.warning("%s: %s: %s instead of SCT: %s", self.unit.label, step,
                       "builtin" if ran == "builtin" else "skipped", reason)
        return builtin(reason) if builtin is not None else None

    @staticmethod
    def _builtin_params(params: Mapping[str, object], fallback: str | None
                        ) -> dict[str, object]:
        """Ledger parameters of a builtin step (unchanged from the builtin engine's unless it
        stands in for SCT, so a rerun with the model installed runs SCT again)."""
        out: dict[str, object] = {"engine": "builtin", **params}
        if fallback is not None:
            out["fallback"] = fallback
        return out

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
        anat = self.path("anat_preproc")

        def by_sct(engine: SctEngine) -> None:
            self.step("segment", lambda: steps.segment_sct(
                engine, anat, cord, work_dir=self.work / "segment" / "sct",
                contrast=contrast, source=src.path, bids_dir=bids_dir),
                inputs=[anat], outputs=[cord, sidecar_path(cord)],
                params={**self.engine_params, "contrast": contrast})

        def by_builtin(fallback: str | None) -> None:
            self.step("segment", lambda: steps.segment(src.path, cord, contrast=contrast,
                                                       bids_dir=bids_dir,
                                                       fallback_reason=fallback),
                      inputs=[src.path], outputs=[cord, sidecar_path(cord)],
                      params=self._builtin_params({"contrast": contrast}, fallback))
            self._flag_quality("cord segmentation", cord)

        self._engine_step("segment", "segment_cord", sct=by_sct, builtin=by_builtin)

    def _flag_quality(self, what: str, output: Path) -> None:
        quality = steps.read_quality(output)
        if not quality.get("low_confidence"):
            return
        if what == "disc labelling":
            advice = steps.disc_review_advice(
                quality, subject=self.unit.source.subject,
                labels_path=manual_label_path(self.config.execution.labels_dir,
                                              self.unit.source, "discs"))
        else:
            advice = f"review {output.name} before using its measures"
        self.warnings.append(f"builtin {what} has low confidence ({quality['confidence']} < "
                             f"{quality['threshold']}): {advice}")
        logger.warning("%s: %s", self.unit.label, self.warnings[-1])

    def _automatic_discs(self, cord: Path, spine: steps.SpinePaths | None) -> Path | None:
        """No manual discs: SCT's (from the ``spine`` step) or builtin labelling against PAM50
        (step ``label_discs``)."""
        part, src = self.config.participant, self.unit.source
        anat, discs, lut = self.path("anat_preproc"), self.path("discs"), self.path("discs_lut")
        levels, levels_lut = self.path("levels"), self.path("levels_lut")
        contrast = cast(Contrast, src.suffix)
        outputs = [discs, sidecar_path(discs), lut, levels, levels_lut]
        limits = {"first_disc": part.first_disc, "last_disc": part.last_disc}

        def by_sct(engine: SctEngine) -> Path:
            if spine is not None:
                self.step("label_discs", lambda: steps.label_discs_from_spine(
                    anat, spine, cord, discs, lut, levels, levels_lut, **limits),
                    inputs=[anat, cord, spine.discs, spine.check], outputs=outputs,
                    params={**self.engine_params, **limits})
                return discs
            self.step("label_discs", lambda: steps.label_discs_sct(
                engine, anat, cord, discs, lut, levels, levels_lut,
                work_dir=self.work / "label_discs" / "sct", contrast=contrast, **limits),
                inputs=[anat, cord], outputs=outputs,
                params={**self.engine_params, "contrast": contrast, **limits})
            return discs

        def by_builtin(fallback: str | None) -> Path | None:
            template = find_template(self.config)
            if template is None or template.t2 is None:
                return None
            companions = [steps.Companion(c.path, find_manual_labels(
                self.config.execution.labels_dir, c).cord_mask, cast(Contrast, c.suffix))
                for c in self.unit.companions]
            self.step("label_discs", lambda: steps.label_discs(
                anat, cord, template, self.work / "label_discs" / "discs_auto.nii.gz", discs,
                lut, levels, levels_lut, contrast=contrast, init_disc=part.init_disc_hint,
                companions=companions, fallback_reason=fallback, **limits),
                inputs=[anat, cord, template.t2, template.cord, template.label_disc,
                        *(p for c in companions for p in (c.image, c.cord_mask)
                          if p is not None)],
                outputs=outputs,
                params=self._builtin_params({"contrast": contrast,
                                             "init_disc": part.init_disc, **limits}, fallback))
            self._flag_quality("disc labelling", discs)
            return discs

        spine_skipped = (self.engine_steps["spine"].fallback_reason
                         if spine is None and "spine" in self.engine_steps else None)
        return self._engine_step("label_discs", "label_discs", sct=by_sct, builtin=by_builtin,
                                 unavailable=spine_skipped)

    def _discs(self, cord: Path, spine: steps.SpinePaths | None) -> Path | None:
        manual = self.unit.labels.discs
        if manual is None:
            automatic = self._automatic_discs(cord, spine)
            if automatic is not None:
                return automatic
            template = find_template(self.config)
            if self._uses_builtin() and (template is None or template.t2 is None):
                self.warnings.append(
                    "PAM50 is not available, so the discs could not be labelled automatically, "
                    "and there are no disc labels in derivatives/labels: per-level metrics and "
                    "the registration to PAM50 were skipped; give a PAM50 folder with "
                    "--template-dir (or set SCT_DIR, or pre-fetch it into the cache: "
                    "docs/troubleshooting.md, Offline machines), or add "
                    "<image>_labels-disc.nii.gz to derivatives/labels")
            else:
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

    def _register(self, anat: Path, cord: Path, discs: Path | None,
                  rootlets: Path | None) -> RegistrationPaths | None:
        if discs is None:
            return None
        template = find_template(self.config)
        if template is None:
            self.warnings.append(
                "PAM50 not available (pass --template-dir or pre-fetch it): registration skipped")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
            return None
        name = "PAM50"
        paths = RegistrationPaths(
            to_template=self.path("xfm_to_template", template=name),
            from_template=self.path("xfm_from_template", template=name),
            anat_in_template=self.path("anat_in_template", template=name),
            cord_in_template=self.path("cord_mask_in_template", template=name),
            template_levels=self.path("template_levels_native", template=name),
            template_cord=self.path("template_cord_native", template=name),
            metrics=self.work / "register" / "registration_metrics.json")
        inputs = [anat, cord, discs, template.cord, template.label_disc]
        inputs += [p for p in (template.levels, template.t2) if p is not None]

        def by_builtin(fallback: str | None) -> RegistrationPaths:
            self.step("register", lambda: register(anat, cord, discs, template, paths,
                                                         fallback_reason=fallback),
                      inputs=inputs, outputs=list(paths.all()),
                      params=self._builtin_params(template.provenance(), fallback))
            return paths

        return self._engine_step(
            "register", "register_to_template", builtin=by_builtin,
            sct=lambda engine: self._register_sct(anat, cord, discs, rootlets, template, paths,
                                                  inputs))

    def _register_sct(self, anat: Path, cord: Path, discs: Path, rootlets: Path | None,
                      template: Pam50, paths: RegistrationPaths,
                      inputs: list[Path]) -> RegistrationPaths:
        """SCT registrations (discs, and rootlets when segmented), the primary one chosen; under
        ``--engine auto`` the builtin registration competes too (:meth:`_register_builtin`)."""
        name = "PAM50"
        builtin_inputs = inputs
        params: dict[str, object] = {**self.engine_params, **template.provenance()}
        contrast = cast(Contrast, self.unit.source.suffix)
        image: Path | None = getattr(template, SCT_CONTRAST[contrast])  # Pam50.t2, .t1, .t2s
        if image is not None and image not in inputs:
            inputs = [*inputs, image]
        params = {**params, "contrast": contrast}
        self._register_sct_path("discs", discs, discs, template, inputs, params)
        rootlet_dir = None

        def by_rootlets(engine: SctEngine) -> Path:
            assert rootlets is not None
            self._register_sct_path("rootlets", rootlets, discs, template, [*inputs, rootlets],
                                    params)
            return self.work / "register_rootlets"

        if rootlets is not None:
            try:
                rootlet_dir = self._engine_step("register_rootlets", "register_to_template",
                                                sct=by_rootlets, builtin=None)
            except SpinalBidsAppError as exc:
                self.warnings.append(f"rootlet-based registration failed, the disc-based one "
                                     f"is used: {exc}")
                logger.warning("%s: %s", self.unit.label, self.warnings[-1])
        builtin_dir = self._register_builtin(anat, cord, discs, template, builtin_inputs)
        alternates = {labels: (self.path(f"xfm_to_template_{labels}", template=name),
                               self.path(f"xfm_from_template_{labels}", template=name))
                      for labels in ("discs", "rootlets", "builtin")}
        chosen_inputs = [*inputs, self.work / "register_discs" / "metrics.json"]
        if rootlet_dir is not None:
            chosen_inputs += [rootlet_dir / "metrics.json"]
        select_params = {**params, "rootlets": rootlet_dir is not None}
        if builtin_dir is not None:
            chosen_inputs += [builtin_candidate_paths(builtin_dir).metrics]
            select_params["candidates"] = ["sct", "builtin"]
        self.step("register", lambda: select_sct_registration(
            anat, cord, discs, template, paths, alternates,
            disc_dir=self.work / "register_discs", rootlet_dir=rootlet_dir,
            rootlets=rootlets if rootlet_dir is not None else None, builtin_dir=builtin_dir),
            inputs=chosen_inputs, outputs=list(paths.all()), params=select_params)
        return paths

    def _register_builtin(self, anat: Path, cord: Path, discs: Path, template: Pam50,
                          inputs: list[Path]) -> Path | None:
        """``--engine auto`` only: the builtin registration as a candidate (step
        ``register_builtin``, carried across in its work folder), so that auto is never worse
        than the builtin engine; its folder, or None when it was not asked for or failed (a
        warning: SCT's registration stands)."""
        if self.config.participant.engine != "auto":
            return None  # --engine sct: the user asked for SCT's registration
        folder = self.work / "register_builtin"
        candidate = builtin_candidate_paths(folder)
        try:
            self.step("register_builtin", lambda: register(anat, cord, discs, template,
                                                                 candidate),
                      inputs=inputs, outputs=list(candidate.all()),
                      params=self._builtin_params(template.provenance(), None))
        except SpinalBidsAppError as exc:
            self.warnings.append(f"the builtin registration (a candidate under --engine auto) "
                                 f"failed, SCT's is used: {exc}")
            logger.warning("%s: %s", self.unit.label, self.warnings[-1])
            return None
        self.engine_steps["register_builtin"] = steps.EngineStep(
            "register_builtin", "builtin", "builtin registration, the --engine auto candidate "
            "against SCT's")
        return folder

    def _register_sct_path(self, labels: RegistrationLabels, labels_file: Path,
                           discs: Path, template: Pam50, inputs: list[Path],
                           params: dict[str, object]) -> None:
        """``register_discs`` / ``register_rootlets``: one SCT registration and its scores."""
        from spinal_bidsapp.engines.sct import REGISTRATION_OUTPUTS

        contrast = cast(Contrast, self.unit.source.suffix)
        folder = self.work / f"register_{labels}"
        self.step(f"register_{labels}", lambda: register_sct_path(
            self._sct(), self.path("anat_preproc"), self.path("cord_mask"), labels_file, discs,
            template, work_dir=folder / "sct", contrast=contrast, labels=labels,
            metrics_out=folder / "metrics.json"),
            inputs=[*inputs, labels_file], params=params,
            outputs=[*(folder / "sct" / n for n in REGISTRATION_OUTPUTS),
                     folder / "metrics.json"])

    def _report(self, anat: Path, cord: Path, discs: Path | None, morph_json: Path,
                registration: RegistrationPaths | None, *,
                spine: steps.SpinePaths | None, rootlets: Path | None,
                csa_pam50: Path | None) -> None:
        from spinal_bidsapp.participant.report import ReportInputs, build_report

        page = subject_report_path(self.out, self.unit.source)
        figure = lambda name: self.path("figure", figure=name)  # noqa: E731
        inputs = ReportInputs(anat=anat, cord=cord, discs=discs, morph_json=morph_json,
                              registration=registration, spine=spine, rootlets=rootlets,
                              csa_pam50=csa_pam50,
                              engine=self.engine.name, notes=tuple(self.notes),
                              engine_steps=tuple(self.engine_steps.values()))
        self.step("report", lambda: build_report(
            self.unit, self.config, inputs, page=page, figure=figure,
            warnings=tuple(self.warnings)),
            inputs=inputs.files(), outputs=[page],
            params={"warnings": self.warnings, "notes": self.notes,
                    "engine_steps": [list(e.__dict__.values())
                                     for e in self.engine_steps.values()]})
