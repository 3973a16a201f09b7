"""Small interfaces that every engine (builtin, SCT, MINC) implements.

The participant and group levels only talk to these protocols; ``engines.resolve`` picks the
implementation once, at configuration time, and records its name and version for provenance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

Contrast = Literal["T2w", "T1w", "T2starw"]
"""BIDS suffix of the anatomy that drives a step."""


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
