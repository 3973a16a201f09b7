"""Thin writer: lays synthetic subjects out as a BIDS dataset plus a truth folder.

Layout (``OUT`` is the folder given to the generator)::

    OUT/bids/dataset_description.json, README, participants.tsv, participants.json
    OUT/bids/sub-XX/anat/sub-XX_T2w.nii.gz (+ .json)            [and _T1w with --t1w]
    OUT/bids/derivatives/labels/dataset_description.json
    OUT/bids/derivatives/labels/sub-XX/anat/sub-XX_T2w_label-SC_mask.nii.gz
    OUT/bids/derivatives/labels/sub-XX/anat/sub-XX_T2w_labels-disc.nii.gz  [and _T1w_...]
    OUT/truth/cohort.json
    OUT/truth/sub-XX/sub-XX_truth.json and truth images (see the generators)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.image import Volume, save_volume
from spinal_bidsapp.runtime.files import write_json, write_text

BIDS_VERSION = "1.9.0"
GENERATOR_NAME = "spinal_bidsapp-synth"
_FILE_MODE = 0o644  # atomic writes create 0600 files; datasets are read by other users/containers


def _save(volume: Volume, path: Path, *, intent: str | None = None) -> Path:
    save_volume(volume, path, intent=intent)
    os.chmod(path, _FILE_MODE)
    return path


def _json(path: Path, data: Any) -> Path:
    write_json(path, data)
    os.chmod(path, _FILE_MODE)
    return path


def _text(path: Path, text: str) -> Path:
    write_text(path, text)
    os.chmod(path, _FILE_MODE)
    return path


def subject_labels(n_subjects: int) -> list[str]:
    """Zero-padded labels ``01, 02, ...`` (at least two digits).

    >>> subject_labels(3)
    ['01', '02', '03']
    """
    width = max(2, len(str(n_subjects)))
    return [f"{i + 1:0{width}d}" for i in range(n_subjects)]


def anat_path(bids_dir: Path, subject: str, suffix: str) -> Path:
    return bids_dir / f"sub-{subject}" / "anat" / f"sub-{subject}_{suffix}.nii.gz"


def label_path(bids_dir: Path, subject: str, suffix: str, label: str) -> Path:
    """``label`` is ``"label-SC_mask"`` or ``"labels-disc"``."""
    return (bids_dir / "derivatives" / "labels" / f"sub-{subject}" / "anat"
            / f"sub-{subject}_{suffix}_{label}.nii.gz")


def truth_dir(out_dir: Path, subject: str) -> Path:
    return out_dir / "truth" / f"sub-{subject}"


def write_dataset_files(bids_dir: Path, *, name: str, readme: str, subjects: list[str],
                        version: str) -> None:
    """Dataset-level files of the raw dataset and of its ``derivatives/labels`` dataset."""
    generated_by = [{"Name": GENERATOR_NAME, "Version": version,
                     "Description": "synthetic spinal cord images with known ground truth"}]
    _json(bids_dir / "dataset_description.json", {
        "Name": name, "BIDSVersion": BIDS_VERSION, "DatasetType": "raw",
        "License": "CC0", "Authors": ["spinal_bidsapp developers"],
        "GeneratedBy": generated_by,
    })
    _text(bids_dir / "README", readme)
    rows = ["participant_id\tsex\tage"] + [f"sub-{s}\tn/a\tn/a" for s in subjects]
    _text(bids_dir / "participants.tsv", "\n".join(rows) + "\n")
    _json(bids_dir / "participants.json", {
        "participant_id": {"Description": "synthetic subject label"},
        "sex": {"Description": "not applicable for synthetic subjects",
                "Levels": {"M": "male", "F": "female"}},
        "age": {"Description": "not applicable for synthetic subjects", "Units": "year"},
    })
    _json(bids_dir / "derivatives" / "labels" / "dataset_description.json", {
        "Name": f"{name}: manual-style labels", "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative", "GeneratedBy": generated_by,
    })


def write_anat(bids_dir: Path, subject: str, suffix: str, data: NDArray,
               affine: NDArray[np.float64]) -> Path:
    """Raw image plus its JSON sidecar."""
    path = anat_path(bids_dir, subject, suffix)
    _save(Volume(data=data, affine=affine), path)
    _json(path.with_name(path.name.replace(".nii.gz", ".json")), {
        "MagneticFieldStrength": 3, "Manufacturer": "synthetic",
        "ManufacturersModelName": GENERATOR_NAME,
    })
    return path


def write_labels(bids_dir: Path, subject: str, suffix: str, *, cord_mask: NDArray,
                 disc_labels: NDArray | None, affine: NDArray[np.float64]) -> list[Path]:
    """Cord mask and single-voxel disc labels (unless None) for the image ``sub-XX_<suffix>``.
    """
    mask_path = label_path(bids_dir, subject, suffix, "label-SC_mask")
    _save(Volume(data=cord_mask.astype(np.uint8), affine=affine), mask_path)
    if disc_labels is None:
        return [mask_path]
    disc_path = label_path(bids_dir, subject, suffix, "labels-disc")
    _save(Volume(data=disc_labels.astype(np.uint8), affine=affine), disc_path)
    return [mask_path, disc_path]


def write_truth_image(out_dir: Path, subject: str, name: str, data: NDArray,
                      affine: NDArray[np.float64], *, intent: str | None = None) -> str:
    """Save ``OUT/truth/sub-XX/sub-XX_<name>.nii.gz``; returns the path relative to ``OUT``."""
    path = truth_dir(out_dir, subject) / f"sub-{subject}_{name}.nii.gz"
    _save(Volume(data=data, affine=affine), path, intent=intent)
    return str(path.relative_to(out_dir))


def write_truth_record(out_dir: Path, subject: str, record: dict[str, Any]) -> Path:
    """``OUT/truth/sub-XX/sub-XX_truth.json``."""
    return _json(truth_dir(out_dir, subject) / f"sub-{subject}_truth.json", record)


def write_cohort_index(out_dir: Path, record: dict[str, Any]) -> Path:
    """``OUT/truth/cohort.json``: cohort kind, seed, options and the truth files in order."""
    return _json(out_dir / "truth" / "cohort.json", record)
