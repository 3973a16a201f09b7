"""Spinal Cord Toolbox (SCT) engine: cord, discs, rootlets, registration to PAM50, morphometry.

Pinned release: **SCT 7.3** (:data:`SCT_PINNED_VERSION`). Why 7.3: it is the newest SCT
release (2026-05-08; 7.4 is still a development version); it has the ``sct_deepseg TASK`` syntax
(7.0+), the ``spine`` task with the stable ``<out>_totalspineseg_discs.nii.gz`` output (7.2+),
``sct_process_segmentation -discfile`` (7.1+) and ``sct_register_to_template -lrootlet`` (7.0+);
and it predates the sc-crop models that 7.4 downloads at first use (an offline-container hazard).
It installs PAM50 ``r20250730``, the release :mod:`spinal_bidsapp.templates.pam50` pins.

Commands per installed version (all built by the pure ``build_*_argv`` functions below):

* cord: ``sct_deepseg spinalcord -i -o`` (7.0+); ``sct_deepseg_sc -i -c t2|t1|t2s -o`` (6.x).
* vertebrae, discs and canal, ``disc_method="auto"``: ``sct_deepseg spine -i -o OUT -label-vert
  1`` -> ``OUT_totalspineseg_discs`` (posterior-tip disc labels) and ``OUT_totalspineseg_all``
  (step-2 labels: each vertebra and disc, cord, canal) (7.2+); ``sct_deepseg totalspineseg -i -o
  OUT`` -> ``OUT_step1_levels`` and ``OUT_step2_output`` (+ every step-1 intermediate) (7.0-7.1);
  ``sct_label_vertebrae -i -s -c t2|t1 -ofolder`` -> ``<seg>_labeled_discs`` (6.x, or any version
  with ``disc_method="label_vertebrae"``).
* rootlets: ``sct_deepseg rootlets -i -o`` (7.0+); ``sct_deepseg -task seg_spinal_rootlets_t2w``
  (6.2-6.5).
* registration: ``sct_register_to_template -i -s -ldisc -c t2|t1|t2s -t PAM50 -ofolder`` ->
  ``warp_anat2template.nii.gz``, ``warp_template2anat.nii.gz`` (all versions); the rootlet variant
  passes ``-lrootlet`` *instead of* ``-ldisc`` (7.0+; SCT ignores ``-ldisc`` when both are given).
* morphometry: ``sct_process_segmentation -i -discfile -o CSV`` with ``-vert 1:30 -perlevel 1``
  or ``-perslice 1 [-normalize-PAM50 1]`` (7.1+; older releases have no ``-discfile``).

The task was renamed ``totalspineseg`` -> ``spine`` in **7.2** (SCT ``CHANGES.md`` 7.2, PR #5097,
checked in the 7.2 tag's ``deepseg/models.py``); ``docs/reference/sct.md`` §7.2 says 7.3, which is
wrong. ``sct_label_vertebrae`` can also be chosen explicitly (``disc_method="label_vertebrae"``).

The tests marked ``sct`` run the real SCT 7.3 that ``make real-tools`` installs without its
deep-learning models; :meth:`SctEngine.unavailable` and :func:`environment_failure` say when a
capability cannot run here, so the pipeline falls back per step (``participant.pipeline``). The
models themselves run only in the container. No command here passes an orientation string; SCT's
"opposite-letter" ones (its ``RPI`` is nibabel ``LAS``) are never used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spinal_bidsapp.config import SCT_CONTRAST, Contrast
from spinal_bidsapp.engines.base import (
    DiscLabelResult,
    EngineInfo,
    RegistrationResult,
    RootletResult,
    SegmentationResult,
    SpineResult,
)
from spinal_bidsapp.engines.sct.install import (
    Capability,
    DiscMethod,
    SctInstall,
    SctVersion,
    deepseg_task,
    disc_method_for,
    environment_failure,
    missing_models,
    sct_unavailable_message,
)
from spinal_bidsapp.engines.sct.outputs import CordMorphometrics, read_morphometrics_csv
from spinal_bidsapp.engines.tools import (
    ExternalToolError,
    log_tail,
    run_tool,
)
from spinal_bidsapp.errors import EngineUnavailable, InputDataError, MissingInputError
from spinal_bidsapp.image import nifti_stem
from spinal_bidsapp.templates.sct_layout import read_info_label

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------- command builders


def build_segment_cord_argv(version: SctVersion, *, image: Path, contrast: Contrast,
                            out: Path) -> list[str]:
    """Cord segmentation: ``sct_deepseg spinalcord`` (7.0+), else legacy ``sct_deepseg_sc``."""
    if version >= SctVersion(7, 0):
        return ["sct_deepseg", "spinalcord", "-i", str(image), "-o", str(out)]
    return ["sct_deepseg_sc", "-i", str(image), "-c", SCT_CONTRAST[contrast],
            "-ofolder", str(out.parent), "-o", str(out)]


@dataclass(frozen=True)
class DiscCommand:
    """A disc-labelling command line and the files it is expected to write."""

    argv: list[str]
    discs: Path
    """Single-voxel disc labels, SCT numbering."""
    outputs: tuple[Path, ...]
    """Every declared output (``discs`` included)."""



@dataclass(frozen=True)
class SpineCommand:
    """The spine-task command line and its two outputs."""

    argv: list[str]
    discs: Path
    """Posterior-tip disc labels, SCT numbering (TotalSpineSeg ``step1_levels``)."""
    labels: Path
    """TotalSpineSeg step-2 labels: each vertebra and disc, cord and canal."""
    outputs: tuple[Path, ...]


def build_spine_argv(version: SctVersion, *, image: Path, out_dir: Path) -> SpineCommand:
    """TotalSpineSeg with its second model (individual vertebrae): ``spine -label-vert 1`` (7.2+)
    or ``totalspineseg`` without ``-step1-only`` (7.0-7.1, which writes every intermediate)."""
    tool = disc_method_for(version, "deepseg")
    if tool == "spine":
        base = out_dir / "spine.nii.gz"
        discs, labels = (out_dir / "spine_totalspineseg_discs.nii.gz",
                         out_dir / "spine_totalspineseg_all.nii.gz")
        return SpineCommand(argv=["sct_deepseg", "spine", "-i", str(image), "-o", str(base),
                                  "-label-vert", "1"],
                            discs=discs, labels=labels, outputs=(discs, labels))
    base = out_dir / "tss.nii.gz"
    discs, labels = out_dir / "tss_step1_levels.nii.gz", out_dir / "tss_step2_output.nii.gz"
    return SpineCommand(argv=["sct_deepseg", "totalspineseg", "-i", str(image), "-o", str(base)],
                        discs=discs, labels=labels, outputs=(discs, labels))


def build_label_discs_argv(version: SctVersion, *, image: Path, cord_mask: Path,
                           contrast: Contrast, out_dir: Path, method: DiscMethod = "auto"
                           ) -> DiscCommand:
    """Disc labels (value N = disc above vertebra N), by version and method; see module table."""
    tool = disc_method_for(version, method)
    if tool != "label_vertebrae":
        spine = build_spine_argv(version, image=image, out_dir=out_dir)
        return DiscCommand(argv=spine.argv, discs=spine.discs, outputs=spine.outputs)
    if contrast not in ("T2w", "T1w"):
        raise InputDataError(f"sct_label_vertebrae handles T1w and T2w images only, not "
                             f"{contrast}; provide disc labels in derivatives/labels or use "
                             "another anatomy")
    stem = nifti_stem(cord_mask)
    discs = out_dir / f"{stem}_labeled_discs.nii.gz"
    return DiscCommand(
        argv=["sct_label_vertebrae", "-i", str(image), "-s", str(cord_mask), "-c",
              SCT_CONTRAST[contrast], "-ofolder", str(out_dir)],
        discs=discs, outputs=(discs, out_dir / f"{stem}_labeled.nii.gz"))


def describe_segment_cord(version: SctVersion) -> str:
    """The program (and task) :func:`build_segment_cord_argv` runs, for sidecars and reports.

    >>> describe_segment_cord(SctVersion(7, 3))
    'sct_deepseg spinalcord'
    """
    return "sct_deepseg spinalcord" if version >= SctVersion(7, 0) else "sct_deepseg_sc"


def describe_label_discs(version: SctVersion, method: DiscMethod = "auto") -> str:
    """The program (and task) :func:`build_label_discs_argv` runs.

    >>> describe_label_discs(SctVersion(7, 3))
    'sct_deepseg spine'
    """
    tool = disc_method_for(version, method)
    return "sct_label_vertebrae" if tool == "label_vertebrae" else f"sct_deepseg {tool}"


def build_rootlets_argv(version: SctVersion, *, image: Path, out: Path) -> list[str]:
    """Rootlet segmentation (values = spinal levels): task ``rootlets`` (7.0+) or 6.x name."""
    if version >= SctVersion(7, 0):
        return ["sct_deepseg", "rootlets", "-i", str(image), "-o", str(out)]
    return ["sct_deepseg", "-task", "seg_spinal_rootlets_t2w", "-i", str(image), "-o", str(out)]


REGISTRATION_OUTPUTS = ("warp_anat2template.nii.gz", "warp_template2anat.nii.gz")


def build_register_argv(version: SctVersion, *, image: Path, cord_mask: Path,
                        template_dir: Path, contrast: Contrast, out_dir: Path,
                        discs: Path | None = None, rootlets: Path | None = None) -> list[str]:
    """``sct_register_to_template`` with disc labels, or with rootlets (7.0+) instead.

    Exactly one of ``discs`` / ``rootlets``: SCT 7.x silently ignores ``-ldisc`` when
    ``-lrootlet`` is also given, so passing both would hide what was used.
    """
    if (discs is None) == (rootlets is None):
        raise ValueError("give exactly one of discs or rootlets")
    if rootlets is not None and version < SctVersion(7, 0):
        raise EngineUnavailable(sct_unavailable_message(
            f"rootlet-based registration needs SCT 7.0 or newer, SCT {version} is installed"))
    labels = ["-ldisc", str(discs)] if discs is not None else ["-lrootlet", str(rootlets)]
    return ["sct_register_to_template", "-i", str(image), "-s", str(cord_mask), *labels,
            "-c", SCT_CONTRAST[contrast], "-t", str(template_dir), "-ofolder", str(out_dir)]


MorphometryMode = Literal["level", "slice"]


def build_process_segmentation_argv(version: SctVersion, *, cord_mask: Path, discs: Path,
                                    out_csv: Path, per: MorphometryMode,
                                    normalize_pam50: bool = False) -> list[str]:
    """Cord morphometry (angle-corrected CSA...) per vertebral level or per slice.

    ``per="level"`` adds ``-vert 1:30 -perlevel 1`` (SCT aggregates per level only for the levels
    listed in ``-vert``; absent ones are skipped). ``normalize_pam50`` resamples per-slice
    metrics to PAM50 slices; SCT requires ``-perslice 1`` for it and reads its *own*
    ``$SCT_DIR/data/PAM50``.
    """
    if version < SctVersion(7, 1):
        raise EngineUnavailable(sct_unavailable_message(
            f"sct_process_segmentation -discfile needs SCT 7.1 or newer, SCT {version} is "
            "installed"))
    if normalize_pam50 and per != "slice":
        raise ValueError("normalize_pam50 needs per='slice' (SCT: -normalize-PAM50 requires "
                         "-perslice 1)")
    argv = ["sct_process_segmentation", "-i", str(cord_mask), "-discfile", str(discs),
            "-o", str(out_csv)]
    if per == "level":
        return [*argv, "-vert", "1:30", "-perlevel", "1"]
    return [*argv, "-perslice", "1", *(["-normalize-PAM50", "1"] if normalize_pam50 else [])]


# --------------------------------------------------------------------------------- readers


# ---------------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class MorphometryResult:
    csv: Path
    rows: tuple[CordMorphometrics, ...]


class SctEngine:
    """Implements CordSegmenter, DiscLabeler, TemplateRegistrar (and rootlets, morphometry).

    Each method writes into ``out_dir`` (created if needed), logs the tool output to
    ``out_dir/<step>.log``, points SCT's temporary files at ``out_dir/tmp`` and returns paths on
    the input grid (warps: on the template and anatomical grids).
    """

    def __init__(self, install: SctInstall, *, threads: int, timeout_s: float = 7200.0,
                 disc_method: DiscMethod = "auto") -> None:
        self.install = install
        self.info = EngineInfo(name="sct", version=install.version_text)
        self.threads = threads
        self.timeout_s = timeout_s
        self.disc_method: DiscMethod = disc_method
        disc_method_for(install.version, disc_method)  # fail now, not mid-run

    def method(self, capability: Capability) -> str:
        """``'SCT 7.3 sct_deepseg spinalcord'``: what a capability runs, for sidecars/reports."""
        if capability == "segment_cord":
            what = describe_segment_cord(self.install.version)
        elif capability in ("label_discs", "spine"):
            what = describe_label_discs(self.install.version,
                                        self.disc_method if capability == "label_discs"
                                        else "deepseg")
        elif capability == "rootlets":
            what = "sct_deepseg rootlets"
        elif capability == "measure_cord":
            what = "sct_process_segmentation"
        else:
            what = "sct_register_to_template"
        return f"SCT {self.install.version_text} {what}"

    def unavailable(self, capability: Capability) -> str | None:
        """Why ``capability`` cannot run with this installation, known before running it (its
        deep-learning models are not installed); None when nothing is known against it.

        SCT would try to download a missing model at first use; we never let it do so in the
        middle of a run (offline containers, reproducibility): the models are installed
        beforehand with ``sct_deepseg TASK -install``.
        """
        task = deepseg_task(self.install.version, capability, self.disc_method)
        missing = missing_models(self.install, task) if task is not None else []
        if not missing:
            return None
        folder = self.install.sct_dir / "data" / "deepseg_models"
        return (f"SCT's model {', '.join(missing)} for sct_deepseg {task} is not installed in "
                f"{folder} (install it with: sct_deepseg {task} -install)")

    def _check(self, capability: Capability) -> None:
        reason = self.unavailable(capability)
        if reason is not None:
            raise EngineUnavailable(reason)

    def _run(self, argv: list[str], *, step: str, out_dir: Path,
             outputs: tuple[Path, ...]) -> None:
        """Run one SCT program; a failure its log shows is not the data's (no model, no
        network, a missing Python module) is raised as :class:`EngineUnavailable`."""
        tmp = out_dir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        program = [str(self.install.program(argv[0])), *argv[1:]]
        try:
            run_tool(program, log_file=out_dir / f"{step}.log", expected_outputs=outputs,
                     threads=self.threads, timeout_s=self.timeout_s, cwd=out_dir,
                     extra_env={"TMPDIR": str(tmp), "SCT_PROGRESS_BAR": "off"})
        except ExternalToolError as exc:
            text = exc.log_file.read_text(errors="replace") if exc.log_file is not None and \
                exc.log_file.is_file() else ""
            cause = environment_failure(text)
            if cause is None:
                raise
            last = " | ".join(log_tail(text, lines=1))
            raise EngineUnavailable(f"{argv[0]} cannot run here: {cause} (last output: {last}; "
                                    f"full log: {exc.log_file})") from exc

    def segment_cord(self, image: Path, *, contrast: Contrast, out_dir: Path
                     ) -> SegmentationResult:
        self._check("segment_cord")
        out = out_dir / "cord_seg.nii.gz"
        argv = build_segment_cord_argv(self.install.version, image=image, contrast=contrast,
                                       out=out)
        self._run(argv, step="segment_cord", out_dir=out_dir, outputs=(out,))
        return SegmentationResult(cord_mask=out)

    def label_discs(self, image: Path, cord_mask: Path, *, contrast: Contrast,
                    out_dir: Path) -> DiscLabelResult:
        self._check("label_discs")
        command = build_label_discs_argv(self.install.version, image=image, cord_mask=cord_mask,
                                         contrast=contrast, out_dir=out_dir,
                                         method=self.disc_method)
        self._run(command.argv, step="label_discs", out_dir=out_dir, outputs=command.outputs)
        return DiscLabelResult(discs=command.discs)

    def segment_spine(self, image: Path, *, out_dir: Path) -> SpineResult:
        """Vertebrae, discs, cord and canal (TotalSpineSeg, SCT 7.0+)."""
        self._check("spine")
        command = build_spine_argv(self.install.version, image=image, out_dir=out_dir)
        self._run(command.argv, step="segment_spine", out_dir=out_dir, outputs=command.outputs)
        return SpineResult(discs=command.discs, labels=command.labels)

    def segment_rootlets(self, image: Path, *, contrast: Contrast, out_dir: Path
                         ) -> RootletResult:
        if contrast != "T2w":
            raise InputDataError(f"SCT's rootlets model is trained on T2w (and MP2RAGE) images, "
                                 f"not {contrast}; skip rootlets for this anatomy")
        self._check("rootlets")
        out = out_dir / "rootlets.nii.gz"
        argv = build_rootlets_argv(self.install.version, image=image, out=out)
        self._run(argv, step="segment_rootlets", out_dir=out_dir, outputs=(out,))
        return RootletResult(rootlets=out)

    def register_to_template(self, image: Path, cord_mask: Path, discs: Path, *,
                             template_dir: Path, contrast: Contrast,
                             out_dir: Path) -> RegistrationResult:
        return self._register(image, cord_mask, template_dir=template_dir, contrast=contrast,
                              out_dir=out_dir, discs=discs, rootlets=None)

    def register_to_template_with_rootlets(self, image: Path, cord_mask: Path, rootlets: Path,
                                           *, template_dir: Path, contrast: Contrast,
                                           out_dir: Path) -> RegistrationResult:
        return self._register(image, cord_mask, template_dir=template_dir, contrast=contrast,
                              out_dir=out_dir, discs=None, rootlets=rootlets)

    def _register(self, image: Path, cord_mask: Path, *, template_dir: Path, contrast: Contrast,
                  out_dir: Path, discs: Path | None, rootlets: Path | None) -> RegistrationResult:
        check_sct_template(template_dir, contrast=contrast, rootlets=rootlets is not None)
        argv = build_register_argv(self.install.version, image=image, cord_mask=cord_mask,
                                   template_dir=template_dir, contrast=contrast,
                                   out_dir=out_dir, discs=discs, rootlets=rootlets)
        warps = tuple(out_dir / name for name in REGISTRATION_OUTPUTS)
        self._run(argv, step="register_to_template", out_dir=out_dir, outputs=warps)
        return RegistrationResult(anat_to_template=warps[0], template_to_anat=warps[1])

    def measure_cord(self, cord_mask: Path, discs: Path, *, out_dir: Path,
                     per: MorphometryMode, normalize_pam50: bool = False) -> MorphometryResult:
        out_csv = out_dir / f"morphometry_per{per}.csv"
        argv = build_process_segmentation_argv(self.install.version, cord_mask=cord_mask,
                                               discs=discs, out_csv=out_csv, per=per,
                                               normalize_pam50=normalize_pam50)
        self._run(argv, step=f"measure_cord_per{per}", out_dir=out_dir, outputs=(out_csv,))
        return MorphometryResult(csv=out_csv, rows=tuple(read_morphometrics_csv(out_csv)))


ROOTLET_LABEL_IDS = (16, 17)
"""``info_label.txt`` IDs ``sct_register_to_template -lrootlet`` reads: the template rootlets and
their mid-points (SCT 7.x ``scripts/sct_register_to_template.py``)."""


def check_sct_template(template_dir: Path, *, contrast: Contrast, rootlets: bool = False) -> None:
    """SCT's ``-t`` needs ``template/info_label.txt``, the cord mask, disc labels and the contrast
    (and, with ``rootlets``, the template rootlets listed under IDs 16 and 17).

    Raises
    ------
    MissingInputError
        Names the folder and the missing files.
    InputDataError
        With ``rootlets``: an ``info_label.txt`` SCT cannot parse.
    """
    folder = Path(template_dir) / "template"
    needed = ["info_label.txt", "PAM50_cord.nii.gz", "PAM50_label_disc.nii.gz",
              f"PAM50_{SCT_CONTRAST[contrast]}.nii.gz"]
    if rootlets and (folder / "info_label.txt").is_file():
        listed = read_info_label(folder / "info_label.txt")
        needed += [listed.get(i, f"info_label.txt ID {i}") for i in ROOTLET_LABEL_IDS]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise MissingInputError(f"{folder} lacks {', '.join(missing)}, which "
                                "sct_register_to_template needs; pass a complete PAM50 folder "
                                "(SCT's $SCT_DIR/data/PAM50 or the official release "
                                "r20250730)")
