"""The interfaces every engine implements, and what the levels hand them.

The participant pipeline talks to one :class:`ParticipantEngine` (SCT or builtin): the three
steps every engine provides (:meth:`~ParticipantEngine.segment_cord`,
:meth:`~ParticipantEngine.label_discs`, :meth:`~ParticipantEngine.register_to_template`), the
CSA in PAM50 dimensions, and the optional capabilities it declares in
:attr:`~ParticipantEngine.capabilities` (``spine``, ``rootlets``). The group level talks to one
:class:`TemplateBuilder` (builtin or MINC). ``engines`` (``__init__``) picks the implementation
once per run and records its name and version for provenance.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.bids.outputs import sidecar_path
from spinal_bidsapp.config import Contrast
from spinal_bidsapp.runtime.records import Record
from spinal_bidsapp.templates.pam50 import Pam50

T = TypeVar("T")


@dataclass(frozen=True)
class EngineInfo:
    """Provenance of an engine: written into ``GeneratedBy`` and every step ledger."""

    name: str
    version: str


@dataclass(frozen=True)
class SegmentationResult:
    cord_mask: Path
    """Binary cord mask on the grid of the input image."""
    confidence: float | None = None
    """0-1 overall confidence when the method provides one (builtin engine); None otherwise."""


@dataclass(frozen=True)
class DiscLabelResult:
    discs: Path
    """Single-voxel disc labels on the input grid, SCT numbering.

    Value N = the disc just above vertebra N.
    """


@dataclass(frozen=True)
class SpineResult:
    discs: Path
    """Single-voxel disc labels at the posterior tip of each disc, SCT numbering."""
    labels: Path
    """TotalSpineSeg step-2 labels: cord, canal, each vertebra and disc (``sct.outputs``)."""


@dataclass(frozen=True)
class RootletResult:
    rootlets: Path
    """Rootlet segmentation on the input grid; value = spinal level (C1..C8 = 1..8, T1 = 9)."""


@dataclass(frozen=True)
class RegistrationResult:
    anat_to_template: Path
    """ITK displacement field on the template grid.

    Stored as ``_from-<contrast>_to-<template>_mode-image_xfm``.
    """
    template_to_anat: Path
    """ITK displacement field on the anatomical grid (the inverse mapping)."""


Capability = Literal["segment_cord", "label_discs", "register_to_template", "spine", "rootlets",
                     "csa_pam50"]
"""What a participant step asks of an engine. Every engine does the first three and
``csa_pam50``; ``spine`` (vertebrae, discs and canal) and ``rootlets`` only where declared."""


def fallback_fields(reason: str | None) -> dict[str, object]:
    """Sidecar fields of a builtin output made in place of another engine's (none otherwise)."""
    return {} if reason is None else {"Engine": "builtin", "FallbackReason": reason}


@dataclass(frozen=True)
class Companion:
    """Another image of the session (the builtin disc labelling reads its C2 and disc band)."""

    image: Path
    cord_mask: Path | None
    """Its manual cord mask, if any (else the builtin segmentation is run on it)."""
    contrast: Contrast


@dataclass(frozen=True)
class UnitFiles:
    """What every engine step of one subject/session reads."""

    source: Path
    """The BIDS image (sidecars cite it)."""
    anat: Path
    """Its standardized copy (``desc-preproc``, RAS), the image the engines work on."""
    contrast: Contrast
    bids_dir: Path
    companions: tuple[Companion, ...] = ()


@dataclass(frozen=True)
class DiscOutputs:
    """The files a disc step writes: labels, their names, and the cord's vertebral levels."""

    discs: Path
    lut: Path
    levels: Path
    levels_lut: Path

    def all(self) -> list[Path]:
        return [self.discs, sidecar_path(self.discs), self.lut, self.levels, self.levels_lut]


@dataclass(frozen=True)
class DiscOptions:
    """``--first-disc``/``--last-disc`` and the ``--init-disc`` hint."""

    first_disc: int | None
    last_disc: int | None
    init_disc: str | None
    """As given (ledger parameter)."""
    init_disc_hint: tuple[int, float] | None
    """Parsed: ``(disc value, z mm)``."""

    @property
    def limits(self) -> dict[str, int | None]:
        return {"first_disc": self.first_disc, "last_disc": self.last_disc}


@dataclass(frozen=True)
class SpinePaths:
    """Outputs of the ``spine`` step (SCT's TotalSpineSeg)."""

    vertebrae: Path
    vertebrae_lut: Path
    canal: Path
    discs: Path
    """Posterior-tip disc labels as SCT wrote them (work folder), SCT numbering."""
    check: Path
    """Consistency check (work folder, JSON)."""

    def all(self) -> list[Path]:
        return [self.vertebrae, sidecar_path(self.vertebrae), self.vertebrae_lut, self.canal,
                sidecar_path(self.canal), self.discs, self.check]


@dataclass(frozen=True)
class DiscLabelling:
    """An automatic disc labelling as the ``label_discs`` step runs it."""

    label: Callable[[], tuple[Path, dict[str, object]]]
    """Writes the raw labels; returns their path and the sidecar fields of the checked ones."""
    inputs: list[Path]
    params: dict[str, object]
    """Ledger parameters."""


@dataclass(frozen=True)
class SpineRecord(Record):
    """The ``spine`` step's record (``spine_check.json``): method, what was found, the consistency
    check's problems (``sct.outputs.check_spine_levels``)."""

    method: str
    vertebrae: list[str]
    discs: list[str]
    problems: list[str]
    consistent: bool

    @classmethod
    def read(cls, path: Path) -> SpineRecord:
        return cls.from_json(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class RegistrationPaths:
    """The outputs of a registration to PAM50 (``register``), the metrics in the work folder."""

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


class StepRunner(Protocol):
    """What an engine needs of the pipeline that calls it: run a resumable step (skipped when
    its ledger is current), run a nested engine step with the pipeline's fallback rule, record
    which engine ran a step, and warn."""

    work: Path
    """The unit's work folder (one sub-folder per step)."""

    def step(self, name: str, action: Callable[[], None], *, inputs: Sequence[Path],
             outputs: Sequence[Path], params: Mapping[str, object] | None = None) -> None:
        ...

    def engine_step(self, step: str, capability: Capability,
                    call: Callable[[ParticipantEngine, str | None], T], *,
                    fallback: bool = True) -> T | None:
        ...

    def record_engine_step(self, step: str, engine: ParticipantEngine, method: str) -> None:
        ...

    def path(self, kind: str, *, template: str | None = None) -> Path:
        """The unit's derivative of ``kind`` (``bids.outputs`` names it)."""
        ...

    def warn(self, message: str) -> None:
        ...


class ParticipantEngine(Protocol):
    """The engine a participant pipeline calls (SCT or builtin).

    Each step method runs its work as one or more resumable steps of ``run`` (the step bodies
    live in the engine, the order and the fallback in the pipeline). ``fallback_reason``: why
    this engine stands in for another one (recorded in its sidecars and ledgers).
    """

    info: EngineInfo
    title: str
    """How the log and the report name it (``SCT``, ``builtin``)."""
    capabilities: frozenset[Capability]
    fallback: ParticipantEngine | None
    """The engine that runs a step this one cannot run here; None: no other engine."""
    lacking: Mapping[str, str]
    """What this engine never provides, and the advice, for the report (``{"rootlets": ...}``)."""
    discs_need_template: bool
    """The automatic disc labelling matches against PAM50's T2 (so needs it)."""
    sct_dir: Path | None
    """The SCT installation the engine runs, if any (SCT's normative database lives there)."""

    def generated_by(self) -> dict[str, str]:
        """Name and version for the dataset's ``GeneratedBy``."""
        ...

    def unavailable(self, capability: Capability) -> str | None:
        """Why ``capability`` cannot run here, known before running it; None otherwise."""
        ...

    def method(self, capability: Capability) -> str:
        """What ``capability`` runs (``'SCT 7.3 sct_deepseg spinalcord'``, ``'builtin'``)."""
        ...

    def segment_cord(self, run: StepRunner, unit: UnitFiles, cord: Path, *,
                     fallback_reason: str | None = None) -> None:
        ...

    def label_discs(self, unit: UnitFiles, cord: Path, *, work_dir: Path, options: DiscOptions,
                    template: Pam50 | None, spine: SpinePaths | None,
                    fallback_reason: str | None = None) -> DiscLabelling | None:
        """How this engine labels the discs (the pipeline checks and imports them like manual
        ones), or None when it cannot here."""
        ...

    def register_to_template(self, run: StepRunner, unit: UnitFiles, cord: Path, discs: Path,
                             template: Pam50, paths: RegistrationPaths, *,
                             rootlets: Path | None, fallback_reason: str | None = None
                             ) -> RegistrationPaths:
        ...

    def segment_spine(self, run: StepRunner, unit: UnitFiles, paths: SpinePaths) -> SpinePaths:
        """``spine`` capability only."""
        ...

    def segment_rootlets(self, run: StepRunner, unit: UnitFiles, rootlets: Path,
                         lut: Path) -> Path:
        """``rootlets`` capability only."""
        ...

    def rootlets_unsupported(self, contrast: Contrast, disc_values: Sequence[int] | None
                             ) -> str | None:
        """``rootlets`` capability: why the engine does not segment rootlets on this image (its
        contrast, the disc values it shows; None: no labels), or None when it does."""
        ...

    def csa_pam50_levels(self, template: Pam50) -> Path | None:
        """The PAM50 levels file the CSA in PAM50 dimensions is resampled on; None when the
        template has none (raises :class:`~spinal_bidsapp.errors.EngineUnavailable` when this
        engine needs a file that is missing here)."""
        ...

    def measure_csa_pam50(self, cord: Path, discs: Path, *, work_dir: Path, n_slices: int
                          ) -> tuple[NDArray[np.float64], str] | None:
        """CSA per PAM50 slice and the method, measured by the engine itself; None: use the
        builtin interpolation of our per-slice CSA."""
        ...

    def step_params(self, params: Mapping[str, object], fallback_reason: str | None = None
                    ) -> dict[str, object]:
        """Ledger parameters of a step this engine runs (its name and version included, so
        switching engine or release reruns the step)."""
        ...


class CordSegmenter(Protocol):
    info: EngineInfo

    def segment_cord(self, image: Path, *, contrast: Contrast,
                     out_dir: Path) -> SegmentationResult:
        ...


class DiscLabeler(Protocol):
    info: EngineInfo

    def label_discs(self, image: Path, cord_mask: Path, *, contrast: Contrast,
                    out_dir: Path) -> DiscLabelResult:
        ...


class TemplateRegistrar(Protocol):
    info: EngineInfo

    def register_to_template(self, image: Path, cord_mask: Path, discs: Path, *,
                             template_dir: Path, contrast: Contrast,
                             out_dir: Path) -> RegistrationResult:
        ...


class RootletSegmenter(Protocol):
    info: EngineInfo

    def segment_rootlets(self, image: Path, *, contrast: Contrast, out_dir: Path) -> RootletResult:
        ...


@dataclass(frozen=True)
class TemplateSubject:
    """One input of a template build: an image already on the common (straight) template grid."""

    label: str
    """File-name-safe identifier, e.g. ``sub-01`` or ``sub-01_ses-02`` (letters, digits, _ -)."""
    image: Path
    """Straightened, intensity-normalised image on the template grid."""
    cord_mask: Path
    """Cord mask (0-1) on the same grid."""


@dataclass(frozen=True)
class TemplateIteration:
    """Outputs of one template iteration (index 0 is the initial average)."""

    index: int
    level_mm: float | None
    """Registration level of the iteration; None for the initial average."""
    average: Path
    sd: Path


@dataclass(frozen=True)
class SubjectWarps:
    """Final warps of one subject, ITK displacement fields (LPS) on the template grid."""

    label: str
    subject_to_template: Path
    """Moves the subject into the template (pull field: template point -> subject point)."""
    template_to_subject: Path
    """Moves the template onto the subject (the inverse mapping)."""


@dataclass(frozen=True)
class TemplateBuildResult:
    template: Path
    sd: Path
    """Voxelwise SD of the resampled subjects at the last iteration."""
    mask: Path
    """Template cord mask (cord probability >= 0.5)."""
    cord_probability: Path | None
    """Mean of the warped cord masks; None when the engine does not produce it."""
    iterations: tuple[TemplateIteration, ...]
    warps: tuple[SubjectWarps, ...]
    """Per-subject final warps; empty when the engine cannot export them as ITK fields."""
    convergence: Path
    """JSON record: per iteration, median SD inside the mask and RMS change of the average."""
    protocol: Mapping[str, object] = field(default_factory=dict)
    """What actually ran (engine, version, stages, symmetric, where the cord mask comes from),
    recorded as is in ``template_description.json``."""


class TemplateBuilder(Protocol):
    info: EngineInfo

    def build_template(self, subjects: Sequence[TemplateSubject], *, work_dir: Path,
                       nprocs: int) -> TemplateBuildResult:
        ...
