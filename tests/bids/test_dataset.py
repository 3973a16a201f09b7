"""Discovery on the real multi-subject dataset and on tiny synthetic trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinal_bidsapp.bids.dataset import (
    SourceImage,
    choose_anatomy,
    find_anatomy,
    index_dataset,
    select_subjects,
)
from spinal_bidsapp.bids.labels import find_manual_labels, manual_label_path
from spinal_bidsapp.errors import MissingInputError, NoDataSelectedError


def test_real_dataset_subjects_and_contrasts(bids_real: Path, tmp_path: Path) -> None:
    ds = index_dataset(bids_real, database_dir=tmp_path / "db")
    assert ds.subjects == ["errsm30", "les01", "lumbar01", "ms01", "unf01"]
    t2 = find_anatomy(ds, "errsm30", None, contrasts=["T2w", "T1w"], datatype="anat")
    assert [s.path.name for s in t2] == ["sub-errsm30_T2w.nii.gz"]
    t1 = find_anatomy(ds, "errsm30", None, contrasts=["T1w"], datatype="anat")
    assert t1[0].suffix == "T1w"
    star = find_anatomy(ds, "unf01", None, contrasts=["T2starw"], datatype="anat")
    assert star[0].stem == "sub-unf01_T2starw"


def test_real_labels_are_found_per_contrast(bids_real: Path, tmp_path: Path) -> None:
    ds = index_dataset(bids_real, database_dir=tmp_path / "db")
    labels_dir = bids_real / "derivatives" / "labels"
    t2 = find_anatomy(ds, "errsm30", None, contrasts=["T2w"], datatype="anat")[0]
    found = find_manual_labels(labels_dir, t2)
    assert found.cord_mask and found.cord_mask.name == "sub-errsm30_T2w_label-SC_mask.nii.gz"
    assert found.discs and found.discs.name == "sub-errsm30_T2w_labels-disc.nii.gz"
    assert found.centerline and found.centerline.name.endswith("_label-centerline.nii.gz")
    t1 = find_anatomy(ds, "errsm30", None, contrasts=["T1w"], datatype="anat")[0]
    t1_labels = find_manual_labels(labels_dir, t1)
    assert t1_labels.cord_mask is not None and t1_labels.discs is None
    ms = find_anatomy(ds, "ms01", None, contrasts=["T2w"], datatype="anat")[0]
    assert not find_manual_labels(labels_dir, ms).any
    # the path the warnings advise for corrected labels is the one that is looked up
    for source in (t2, t1, ms):
        for kind in ("cord_mask", "discs", "centerline"):
            advised = manual_label_path(labels_dir, source, kind)  # type: ignore[arg-type]
            found_path = getattr(find_manual_labels(labels_dir, source), kind)
            assert found_path in (None, advised) and advised.parent.name == "anat"
    assert manual_label_path(labels_dir, t2, "discs") == found.discs


def test_fallback_to_second_contrast(tiny_bids: Path) -> None:
    ds = index_dataset(tiny_bids)
    found = find_anatomy(ds, "03", None, contrasts=["T2w", "T1w"], datatype="anat")
    assert [s.suffix for s in found] == ["T1w"]


def test_select_subjects_reports_missing_labels(tiny_bids: Path) -> None:
    ds = index_dataset(tiny_bids)
    assert select_subjects(ds, ["02"]) == ["02"]
    with pytest.raises(NoDataSelectedError, match="sub-07"):
        select_subjects(ds, ["01", "07"])


def test_not_a_bids_dataset(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match=r"dataset_description\.json"):
        index_dataset(tmp_path)


def test_labelled_run_is_preferred_then_highest_run(tmp_path: Path) -> None:
    def src(run: str) -> SourceImage:
        return SourceImage(tmp_path / f"sub-01_run-{run}_T2w.nii.gz", "01", None, "T2w", "anat",
                           (("run", run),))
    runs = [src("1"), src("2"), src("3")]
    assert choose_anatomy(runs, labelled=set()).entities == (("run", "3"),)
    assert choose_anatomy(runs, labelled={runs[0].path}).entities == (("run", "1"),)


def test_label_variants_are_accepted(tmp_path: Path) -> None:
    source = SourceImage(tmp_path / "sub-01_T2w.nii.gz", "01", None, "T2w", "anat")
    folder = tmp_path / "labels" / "sub-01" / "anat"
    folder.mkdir(parents=True)
    (folder / "sub-01_T2w_seg-manual.nii.gz").write_bytes(b"")
    (folder / "sub-01_T2w_labels-disc-manual.nii.gz").write_bytes(b"")
    found = find_manual_labels(tmp_path / "labels", source)
    assert found.cord_mask and found.cord_mask.name == "sub-01_T2w_seg-manual.nii.gz"
    assert found.discs and found.discs.name.endswith("labels-disc-manual.nii.gz")
    assert found.centerline is None
