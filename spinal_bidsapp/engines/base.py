"""Small interfaces that every engine (builtin, SCT, MINC) implements.

The participant and group levels only talk to these protocols; ``engines.resolve`` picks the
implementation once, at configuration time, and records its name and version for provenance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from spinal_bidsapp.config import Contrast


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
    """TotalSpineSeg step-2 labels: cord, canal, each vertebra and disc (``sct_outputs``)."""


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
