"""The real Deno validator on valid and broken datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spinal_bidsapp.bids.validate import validate_dataset
from spinal_bidsapp.errors import InvalidDatasetError


def test_valid_dataset_passes(tiny_bids: Path, tmp_path: Path) -> None:
    report = validate_dataset(tiny_bids, work_dir=tmp_path / "work")
    assert report.errors == []


def test_real_dataset_passes_with_warnings(bids_real: Path, tmp_path: Path) -> None:
    report = validate_dataset(bids_real, work_dir=tmp_path / "work")
    assert report.errors == [] and report.warnings


def test_broken_dataset_fails_with_summary(tiny_bids: Path, tmp_path: Path) -> None:
    (tiny_bids / "sub-01" / "anat" / "sub-01_T2w.json").write_text("{not json")
    (tiny_bids / "sub-02" / "anat" / "sub-02_bogus.txt").write_text("x")
    with pytest.raises(InvalidDatasetError) as info:
        validate_dataset(tiny_bids, work_dir=tmp_path / "work")
    assert "NOT_INCLUDED" in str(info.value) or "JSON" in str(info.value)


def test_issues_of_unselected_subjects_are_ignored(tiny_bids: Path, tmp_path: Path) -> None:
    (tiny_bids / "sub-02" / "anat" / "sub-02_bogus.txt").write_text("x")
    report = validate_dataset(tiny_bids, work_dir=tmp_path / "work", ignore_subjects=["02"])
    assert report.errors == []


def test_unreadable_description_is_an_error(tiny_bids: Path, tmp_path: Path) -> None:
    (tiny_bids / "dataset_description.json").write_text("{" + json.dumps({"Name": "x"}))
    with pytest.raises(InvalidDatasetError, match="JSON"):
        validate_dataset(tiny_bids, work_dir=tmp_path / "work")
