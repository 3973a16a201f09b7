"""Manual labels in ``derivatives/labels``: cord mask, disc labels, centerline, per source image.

Manual labels always win over anything computed, and this package never writes into the labels
folder. Accepted names (``<source stem>`` is the raw file name without extension, e.g.
``sub-01_T2w``; the first pattern of each kind is the neuropoly/template seed layout):

===========  ======================================================================================
kind         accepted ``<source stem>_<tag>.nii[.gz]`` tags
===========  ======================================================================================
cord mask    ``label-SC_mask``, ``seg-manual``, ``label-SC_seg``, ``desc-cord_mask``,
             ``label-SC_dseg``
discs        ``labels-disc``, ``labels-disc-manual``, ``label-discs_dlabel``,
             ``labels-disc_dlabel``
centerline   ``label-centerline``, ``label-centerline_mask``, ``centerline-manual``
===========  ======================================================================================
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spinal_bidsapp.bids.dataset import SourceImage

logger = logging.getLogger(__name__)

LabelKind = Literal["cord_mask", "discs", "centerline"]

LABEL_TAGS: dict[LabelKind, tuple[str, ...]] = {
    "cord_mask": ("label-SC_mask", "seg-manual", "label-SC_seg", "desc-cord_mask",
                  "label-SC_dseg"),
    "discs": ("labels-disc", "labels-disc-manual", "label-discs_dlabel", "labels-disc_dlabel"),
    "centerline": ("label-centerline", "label-centerline_mask", "centerline-manual"),
}
EXTENSIONS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ManualLabels:
    """Manual label files found for one source image (None where absent)."""

    cord_mask: Path | None = None
    discs: Path | None = None
    centerline: Path | None = None

    @property
    def any(self) -> bool:
        return any((self.cord_mask, self.discs, self.centerline))


def find_manual_labels(labels_dir: Path, source: SourceImage) -> ManualLabels:
    """Look up each kind of label for ``source`` under ``labels_dir`` (first accepted tag wins)."""
    folder = labels_dir / source.subject_dir / source.datatype
    found: dict[str, Path] = {}
    if folder.is_dir():
        for kind, tags in LABEL_TAGS.items():
            for tag in tags:
                hit = next((folder / f"{source.stem}_{tag}{ext}" for ext in EXTENSIONS
                            if (folder / f"{source.stem}_{tag}{ext}").is_file()), None)
                if hit is not None:
                    found[kind] = hit
                    break
    logger.debug("%s: manual labels %s", source.stem, found)
    return ManualLabels(**found)


def manual_label_path(labels_dir: Path, source: SourceImage, kind: LabelKind) -> Path:
    """Where a user puts a manual label of ``kind`` for ``source`` (the first accepted tag)."""
    return (labels_dir / source.subject_dir / source.datatype
            / f"{source.stem}_{LABEL_TAGS[kind][0]}{EXTENSIONS[0]}")


def labelled_sources(labels_dir: Path, candidates: list[SourceImage]) -> set[Path]:
    """Paths of the candidates that have at least one manual label."""
    return {c.path for c in candidates if find_manual_labels(labels_dir, c).any}
