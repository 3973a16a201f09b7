"""The SCT participant engine: SCT's cord segmentation, spine task (vertebrae, discs, canal),
rootlets, registration to PAM50 and CSA in PAM50 dimensions, as steps of the participant pipeline.

It runs SCT's programs through :class:`~spinal_bidsapp.engines.sct.commands.SctEngine` (the pinned
release's command lines) and turns their outputs into ours (grids checked, sidecars, LUTs). What
SCT cannot run here (a model not installed, a missing program, no network) the pipeline hands to
:attr:`SctParticipantEngine.fallback`, the builtin engine, in one place
(``participant.pipeline``). Under ``--engine auto`` the builtin registration competes with
SCT's (:attr:`SctParticipantEngine.candidate`, :func:`select_sct_registration`), so ``auto`` is
never worse than the builtin engine.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.bids.outputs import raw_uri, sidecar_path, write_lut, write_sidecar
from spinal_bidsapp.config import SCT_CONTRAST, Contrast
from spinal_bidsapp.engines.base import (
    Capability,
    DiscLabelling,
    DiscOptions,
    ParticipantEngine,
    RegistrationPaths,
    SpinePaths,
    SpineRecord,
    StepRunner,
    UnitFiles,
)
from spinal_bidsapp.engines.builtin.participant import BuiltinParticipantEngine
from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
from spinal_bidsapp.engines.registration import (
    RegistrationScores,
    RegistrationWinner,
    adopt_candidate,
    builtin_candidate_paths,
    carry_across,
    choose_engine_registration,
    copy_file,
    disc_points,
    registration_inputs,
    score_registration,
)
from spinal_bidsapp.engines.sct.commands import REGISTRATION_OUTPUTS, SctEngine
from spinal_bidsapp.engines.sct.install import Capability as SctCapability
from spinal_bidsapp.engines.sct.install import SctInstall, SctVersion
from spinal_bidsapp.engines.sct.outputs import (
    check_spine_levels,
    pam50_csa_from_sct_csv,
    read_rootlet_levels,
    spinal_levels_from_rootlets,
    spine_labels_from_totalspineseg,
)
from spinal_bidsapp.errors import EngineUnavailable, InputDataError, SpinalBidsAppError
from spinal_bidsapp.geometry.discs import (
    DISC_NAMES,
    VERTEBRA_NAMES,
    largest_disc_blobs,
    spinal_level_name,
)
from spinal_bidsapp.image import load_field, load_mask, load_volume, save_field, save_volume
from spinal_bidsapp.runtime.files import write_json
from spinal_bidsapp.templates.pam50 import Pam50

logger = logging.getLogger(__name__)

_TOOL_CAPABILITY: dict[Capability, SctCapability] = {
    "segment_cord": "segment_cord", "label_discs": "label_discs",
    "register_to_template": "register_to_template", "spine": "spine", "rootlets": "rootlets",
    "csa_pam50": "measure_cord"}
"""The SCT program each step capability runs (``csa_pam50``: ``sct_process_segmentation``)."""

TEMPLATE_NAME = "PAM50"
ROOTLET_LAST_DISC = 9
"""T1/T2: an image whose highest disc is below it shows no level SCT's rootlet model covers
(C2-T1)."""


class SctParticipantEngine:
    """:class:`~spinal_bidsapp.engines.base.ParticipantEngine` on SCT.

    ``fallback``: the builtin engine, for the steps SCT cannot run here. ``candidate``
    (``--engine auto``): the builtin engine whose registration competes with SCT's; None with
    ``--engine sct`` (the user asked for SCT's registration).
    """

    title = "SCT"
    lacking: Mapping[str, str] = {}
    discs_need_template = False

    def __init__(self, install: SctInstall, *, threads: int, fallback: BuiltinParticipantEngine,
                 candidate: BuiltinParticipantEngine | None) -> None:
        self.tool = SctEngine(install, threads=threads)
        self.info = self.tool.info
        self.fallback: ParticipantEngine | None = fallback
        self.candidate = candidate
        self.sct_dir: Path | None = install.sct_dir
        self.version_text = install.version_text
        spine: set[Capability] = {"spine"} if install.version >= SctVersion(7, 0) else set()
        """TotalSpineSeg (SCT 7.0+); 6.x labels discs with sct_label_vertebrae."""
        self.capabilities: frozenset[Capability] = frozenset(
            {"segment_cord", "label_discs", "register_to_template", "rootlets", "csa_pam50",
             *spine})
        self.params: dict[str, object] = {"engine": "sct", "sct_version": install.version_text}
        """Ledger parameters of every SCT step: switching SCT release reruns them."""

    def generated_by(self) -> dict[str, str]:
        return {"Spinal Cord Toolbox": self.version_text or "unknown"}

    def unavailable(self, capability: Capability) -> str | None:
        return self.tool.unavailable(_TOOL_CAPABILITY[capability])

    def method(self, capability: Capability) -> str:
        return self.tool.method(_TOOL_CAPABILITY[capability])

    def step_params(self, params: Mapping[str, object], fallback_reason: str | None = None
                    ) -> dict[str, object]:
        return {**self.params, **params}

    def segment_cord(self, run: StepRunner, unit: UnitFiles, cord: Path, *,
                     fallback_reason: str | None = None) -> None:
        run.step("segment", lambda: segment_sct(
            self.tool, unit.anat, cord, work_dir=run.work / "segment" / "sct",
            contrast=unit.contrast, source=unit.source, bids_dir=unit.bids_dir),
            inputs=[unit.anat], outputs=[cord, sidecar_path(cord)],
            params=self.step_params({"contrast": unit.contrast}))

    def label_discs(self, unit: UnitFiles, cord: Path, *, work_dir: Path, options: DiscOptions,
                    template: Pam50 | None, spine: SpinePaths | None,
                    fallback_reason: str | None = None) -> DiscLabelling | None:
        """The ``spine`` step's posterior-tip discs when it ran, else SCT's disc labelling."""
        if spine is not None:
            return DiscLabelling(label=lambda: discs_from_spine(spine),
                                 inputs=[unit.anat, cord, spine.discs, spine.check],
                                 params=self.step_params(options.limits))
        return DiscLabelling(
            label=lambda: label_discs_sct(self.tool, unit.anat, cord, work_dir=work_dir / "sct",
                                          contrast=unit.contrast),
            inputs=[unit.anat, cord],
            params=self.step_params({"contrast": unit.contrast, **options.limits}))

    def segment_spine(self, run: StepRunner, unit: UnitFiles, paths: SpinePaths) -> SpinePaths:
        run.step("spine", lambda: spine_sct(
            self.tool, unit.anat, paths, work_dir=run.work / "spine" / "sct",
            source=unit.source, bids_dir=unit.bids_dir),
            inputs=[unit.anat], outputs=paths.all(), params=dict(self.params))
        return paths

    def segment_rootlets(self, run: StepRunner, unit: UnitFiles, rootlets: Path,
                         lut: Path) -> Path:
        run.step("rootlets", lambda: rootlets_sct(
            self.tool, unit.anat, rootlets, lut, work_dir=run.work / "rootlets" / "sct",
            source=unit.source, bids_dir=unit.bids_dir),
            inputs=[unit.anat], outputs=[rootlets, sidecar_path(rootlets), lut],
            params=dict(self.params))
        return rootlets

    def rootlets_unsupported(self, contrast: Contrast, disc_values: Sequence[int] | None
                             ) -> str | None:
        """SCT's rootlet model: T2w images showing a cervical level."""
        if contrast != "T2w":
            return f"SCT's rootlet model is trained on T2w, this anatomy is {contrast}"
        if disc_values is not None and min(disc_values) > ROOTLET_LAST_DISC:
            return "the image shows no cervical level (rootlets are segmented from C2 to T1)"
        return None

    def csa_pam50_levels(self, template: Pam50) -> Path | None:
        """SCT's own PAM50 levels: ``-normalize-PAM50`` reads them, not ours."""
        levels = self.tool.install.sct_dir / "data" / "PAM50" / "template" / \
            "PAM50_levels.nii.gz"
        if not levels.is_file():
            raise EngineUnavailable(f"SCT's own {levels} is missing "
                                    "(sct_process_segmentation -normalize-PAM50 reads it)")
        return levels

    def measure_csa_pam50(self, cord: Path, discs: Path, *, work_dir: Path, n_slices: int
                          ) -> tuple[NDArray[np.float64], str] | None:
        """``sct_process_segmentation -perslice 1 -normalize-PAM50 1``."""
        result = self.tool.measure_cord(cord, discs, out_dir=work_dir / "sct", per="slice",
                                        normalize_pam50=True)
        return (pam50_csa_from_sct_csv(result.rows, n_slices),
                f"SCT {self.tool.info.version} sct_process_segmentation -normalize-PAM50 1")

    def register_to_template(self, run: StepRunner, unit: UnitFiles, cord: Path, discs: Path,
                             template: Pam50, paths: RegistrationPaths, *,
                             rootlets: Path | None, fallback_reason: str | None = None
                             ) -> RegistrationPaths:
        """SCT registrations (``register_discs``, and ``register_rootlets`` when the rootlets
        were segmented), the builtin candidate under ``--engine auto`` (``register_builtin``),
        then the primary one chosen and carried across (``register``)."""
        inputs = registration_inputs(unit.anat, cord, discs, template)
        image: Path | None = getattr(template, SCT_CONTRAST[unit.contrast])  # Pam50.t2, .t1...
        if image is not None and image not in inputs:
            inputs = [*inputs, image]
        params = {**self.params, **template.provenance(), "contrast": unit.contrast}
        self._register_path(run, unit, "discs", discs, cord, discs, template, inputs, params)
        rootlet_dir = None
        if rootlets is not None:
            try:
                rootlet_dir = run.engine_step(
                    "register_rootlets", "register_to_template",
                    lambda engine, _: self._register_path(run, unit, "rootlets", rootlets, cord,
                                                          discs, template,
                                                          [*inputs, rootlets], params),
                    fallback=False)
            except SpinalBidsAppError as exc:
                run.warn(f"rootlet-based registration failed, the disc-based one is used: "
                         f"{exc}")
        builtin_dir = self._register_candidate(run, unit, cord, discs, template)
        alternates = {labels: (run.path(f"xfm_to_template_{labels}", template=TEMPLATE_NAME),
                               run.path(f"xfm_from_template_{labels}", template=TEMPLATE_NAME))
                      for labels in ("discs", "rootlets", "builtin")}
        chosen_inputs = [*inputs, run.work / "register_discs" / "metrics.json"]
        if rootlet_dir is not None:
            chosen_inputs += [rootlet_dir / "metrics.json"]
        select_params = {**params, "rootlets": rootlet_dir is not None}
        if builtin_dir is not None:
            chosen_inputs += [builtin_candidate_paths(builtin_dir).metrics]
            select_params["candidates"] = ["sct", "builtin"]
        run.step("register", lambda: select_sct_registration(
            unit.anat, cord, discs, template, paths, alternates,
            disc_dir=run.work / "register_discs", rootlet_dir=rootlet_dir,
            rootlets=rootlets if rootlet_dir is not None else None, builtin_dir=builtin_dir),
            inputs=chosen_inputs, outputs=list(paths.all()), params=select_params)
        return paths

    def _register_path(self, run: StepRunner, unit: UnitFiles, labels: RegistrationLabels,
                       labels_file: Path, cord: Path, discs: Path, template: Pam50,
                       inputs: list[Path], params: dict[str, object]) -> Path:
        """``register_discs`` / ``register_rootlets``: one SCT registration and its scores; its
        work folder."""
        folder = run.work / f"register_{labels}"
        run.step(f"register_{labels}", lambda: register_sct_path(
            self.tool, unit.anat, cord, labels_file, discs, template, work_dir=folder / "sct",
            contrast=unit.contrast, labels=labels, metrics_out=folder / "metrics.json"),
            inputs=[*inputs, labels_file], params=params,
            outputs=[*(folder / "sct" / n for n in REGISTRATION_OUTPUTS),
                     folder / "metrics.json"])
        return folder

    def _register_candidate(self, run: StepRunner, unit: UnitFiles, cord: Path, discs: Path,
                            template: Pam50) -> Path | None:
        """``--engine auto`` only: the builtin registration as a candidate, so that auto is never
        worse than the builtin engine; its folder, or None when it was not asked for or failed
        (a warning: SCT's registration stands)."""
        if self.candidate is None:
            return None
        try:
            folder = self.candidate.register_candidate(run, unit, cord, discs, template)
        except SpinalBidsAppError as exc:
            run.warn(f"the builtin registration (a candidate under --engine auto) failed, "
                     f"SCT's is used: {exc}")
            return None
        run.record_engine_step("register_builtin", self.candidate,
                               "builtin registration, the --engine auto candidate against SCT's")
        return folder


def segment_sct(engine: SctEngine, anat: Path, target: Path, *, work_dir: Path,
                contrast: Contrast, source: Path, bids_dir: Path) -> None:
    """SCT cord segmentation of the standardized anatomy, imported as the cord mask.

    SCT writes its mask on the grid of its input, so it must match ``anat`` exactly.
    """
    result = engine.segment_cord(anat, contrast=contrast, out_dir=work_dir)
    reference = load_volume(anat)
    mask = load_mask(result.cord_mask, reference=reference, reference_path=anat)
    if not (mask.data > 0).any():
        raise InputDataError(f"{source.name}: SCT found no spinal cord; add a manual cord mask "
                             "to derivatives/labels")
    save_volume(reference.with_data((mask.data > 0).astype(np.uint8)), target, dtype=np.uint8)
    write_sidecar(target, {
        "Sources": [raw_uri(bids_dir, source)],
        "Description": "spinal cord mask (SCT automatic segmentation, review it)",
        "Method": engine.method("segment_cord")})


def label_discs_sct(engine: SctEngine, anat: Path, cord: Path, *, work_dir: Path,
                    contrast: Contrast) -> tuple[Path, dict[str, object]]:
    """SCT disc labels of the standardized anatomy (checked and used like manual ones by the
    pipeline), and their sidecar fields."""
    result = engine.label_discs(anat, cord, contrast=contrast, out_dir=work_dir)
    return result.discs, {
        "Description": "disc labels (SCT automatic labelling, review the levels)",
        "Method": engine.method("label_discs")}


def discs_from_spine(spine: SpinePaths) -> tuple[Path, dict[str, object]]:
    """SCT's posterior-tip disc labels (from the ``spine`` step), to be checked and used like
    manual ones; they stay at the posterior tip, where ``sct_register_to_template -ldisc`` wants
    them."""
    check = SpineRecord.read(spine.check)
    return spine.discs, {
        "Description": "disc labels (SCT automatic labelling, review the levels)",
        "Method": check.method, "Consistent": check.consistent, "Problems": check.problems}


def spine_sct(engine: SctEngine, anat: Path, paths: SpinePaths, *, work_dir: Path,
              source: Path, bids_dir: Path) -> None:
    """Vertebrae, discs and canal from SCT's spine task, in SCT numbering, with a consistency
    check (levels complete and unique, discs in order and between their vertebrae)."""
    result = engine.segment_spine(anat, out_dir=work_dir)
    reference = load_volume(anat)
    tss = load_mask(result.labels, reference=reference, reference_path=anat, allow_empty=True)
    disc_vol = load_mask(result.discs, reference=reference, reference_path=anat,
                         allow_empty=True)
    spine = spine_labels_from_totalspineseg(tss.data)
    points, repeated = largest_disc_blobs(disc_vol.data, disc_vol.affine)
    check = check_spine_levels(spine.vertebrae, points, reference.affine,
                               unnumbered=spine.unnumbered)
    problems = [*(f"disc {DISC_NAMES[d]} labelled at several places" for d in repeated),
                *check.problems]
    if not spine.vertebrae.any():
        problems.insert(0, "no vertebra found")
    method = engine.method("label_discs")
    save_volume(reference.with_data(spine.vertebrae), paths.vertebrae, dtype=np.uint8)
    write_lut(paths.vertebrae_lut, {v: ("sacrum" if v == 25 else VERTEBRA_NAMES[v])
                                    for v in check.vertebrae})
    save_volume(reference.with_data(spine.canal.astype(np.uint8)), paths.canal, dtype=np.uint8)
    for image, what in ((paths.vertebrae, "vertebral bodies, SCT vertebral levels"),
                        (paths.canal, "spinal canal: cord and CSF")):
        write_sidecar(image, {"Sources": [raw_uri(bids_dir, source)],
                              "Description": f"{what} (SCT automatic segmentation, review it)",
                              "Method": method})
    shutil.copyfile(result.discs, paths.discs)
    write_json(paths.check, SpineRecord(
        method=method, vertebrae=[VERTEBRA_NAMES[v] for v in check.vertebrae],
        discs=[DISC_NAMES[d] for d in sorted(points)], problems=problems,
        consistent=not problems).to_json())


def rootlets_sct(engine: SctEngine, anat: Path, rootlets_out: Path, lut_out: Path, *,
                 work_dir: Path, source: Path, bids_dir: Path) -> None:
    """Dorsal rootlets (value = spinal level) on the standardized anatomy."""
    result = engine.segment_rootlets(anat, contrast="T2w", out_dir=work_dir)
    reference = load_volume(anat)
    vol = load_mask(result.rootlets, reference=reference, reference_path=anat, allow_empty=True)
    data = np.rint(vol.data).astype(np.uint8)
    levels = spinal_levels_from_rootlets(data, reference.affine)
    if not levels:
        raise InputDataError(f"{source.name}: SCT found no rootlet")
    save_volume(reference.with_data(data), rootlets_out, dtype=np.uint8)
    write_lut(lut_out, {e.level: spinal_level_name(e.level) for e in levels})
    write_sidecar(rootlets_out, {
        "Sources": [raw_uri(bids_dir, source)],
        "Description": "dorsal nerve rootlets, value = spinal level (SCT automatic "
                       "segmentation, review it)",
        "Method": f"SCT {engine.info.version} sct_deepseg rootlets",
        "SpinalLevels": {spinal_level_name(e.level): {
            "superior_mm": round(e.superior_mm, 2), "inferior_mm": round(e.inferior_mm, 2),
            "voxels": e.voxels} for e in levels}})


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
    subject_points, template_points = disc_points(discs, template)
    scores = score_registration(load_mask(cord), load_mask(template.cord), registration,
                                subject_points=subject_points, template_points=template_points)
    write_json(metrics_out, {**_sct_engine_record(engine), "labels": labels,
                             "template": template.provenance(), **scores.to_json()})


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


def choose_registration(discs: RegistrationScores, rootlets: RegistrationScores | None, *,
                        rootlet_levels: int) -> tuple[RegistrationLabels, str]:
    """Which warp is primary, and why (one sentence for the report and the metrics JSON).

    The rootlet-based warp aligns spinal (neurological) levels, the unit of spinal cord
    function and of fMRI analyses, so it is preferred when it is trustworthy: at least
    :data:`ROOTLET_MIN_LEVELS` spinal levels, cord Dice within :data:`ROOTLET_DICE_TOLERANCE` of
    the disc-based warp, and no disc further than :data:`ROOTLET_MAX_DISC_ERROR_MM` from its
    PAM50 position. Otherwise the disc-based warp.

    >>> discs = RegistrationScores(0.95, 0.9, {"3": {"to_template": 0.4, "to_anat": 0.5}})
    >>> rootlets = RegistrationScores(0.94, 0.9, {"3": {"to_template": 3.0, "to_anat": 0.5}})
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
    loss = float(discs.cord_dice_in_template) - float(rootlets.cord_dice_in_template)
    if loss > ROOTLET_DICE_TOLERANCE:
        return "discs", (f"disc-based: the rootlet-based warp loses {loss:.3f} cord Dice "
                         f"(> {ROOTLET_DICE_TOLERANCE})")
    worst = rootlets.worst_error_to_template_mm
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
    :func:`~spinal_bidsapp.engines.builtin.participant.register` (:func:`builtin_candidate_paths`),
    competes with SCT's chosen path
    (:func:`choose_engine_registration`); when it wins its outputs become the primary ones as
    they are (the builtin engine's own outputs, byte for byte), SCT's warps become alternates.
    """
    metrics: dict[RegistrationLabels, dict[str, object]] = {
        "discs": json.loads((disc_dir / "metrics.json").read_text(encoding="utf-8"))}
    folders: dict[RegistrationLabels, Path] = {"discs": disc_dir}
    if rootlet_dir is not None:
        metrics["rootlets"] = json.loads((rootlet_dir / "metrics.json").read_text(
            encoding="utf-8"))
        folders["rootlets"] = rootlet_dir
    scores = {labels: RegistrationScores.from_json(m) for labels, m in metrics.items()}
    levels = len(read_rootlet_levels(rootlets)) if rootlets is not None else 0
    chosen, reason = choose_registration(scores["discs"], scores.get("rootlets"),
                                         rootlet_levels=levels)
    path_scores: dict[str, dict[str, object]] = {k: v.to_json() for k, v in scores.items()}
    extra: dict[str, object] = {"labels": chosen, "selection": reason, "paths": path_scores}
    winner: RegistrationWinner = "sct"
    sidecar: dict[str, object] = {}
    if builtin_dir is not None:
        candidate = builtin_candidate_paths(builtin_dir)
        builtin = RegistrationScores.from_json(json.loads(candidate.metrics.read_text(
            encoding="utf-8")))
        path_scores["builtin"] = builtin.to_json()
        winner, why = choose_engine_registration(scores[chosen], builtin, sct_labels=chosen)
        extra = {"primary": "builtin" if winner == "builtin" else chosen,
                 "labels": "discs" if winner == "builtin" else chosen, "selection": why,
                 "sct_labels": chosen, "sct_selection": reason, "paths": path_scores}
        sidecar = {"Engine": winner, "EngineSelection": why}
        if winner == "builtin":
            adopt_candidate(candidate, paths, sidecar=sidecar, extra=extra)
        else:
            for source, target in zip((candidate.to_template, candidate.from_template),
                                      alternates["builtin"], strict=True):
                copy_file(source, target)
    for labels, folder in folders.items():
        warps = [load_field(folder / "sct" / name) for name in REGISTRATION_OUTPUTS]
        if labels == chosen and winner == "sct":
            anat_vol, cord_vol = load_volume(anat), load_mask(cord)
            subject_points, template_points = disc_points(discs, template)
            registration = TemplateRegistration(
                anat_to_template=warps[0], template_to_anat=warps[1],
                slab_shape=warps[0].shape, slab_affine=warps[0].affine)
            record = {k: str(v) for k, v in metrics[labels].items()
                      if k in ("engine", "engine_version", "method")}
            carry_across(anat_vol, cord_vol, template, registration, paths, engine=record,
                         subject_points=subject_points, template_points=template_points,
                         scores=scores[labels], extra=extra,
                         sidecar=sidecar)
        else:
            for warp, target in zip(warps, alternates[labels], strict=True):
                save_field(warp, target)


