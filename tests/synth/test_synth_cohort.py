"""Written demo cohorts: BIDS validity, file layout, determinism and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.synth import generate_demo_cohort, load_cohort_truth
from spinal_bidsapp.synth.cli import main


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo_cohort(out, n_subjects=2, seed=0, t1w=True)
    return out


def test_demo_cohort_is_a_valid_bids_dataset(cohort: Path,
                                             validate_bids: Callable[[Path], dict]) -> None:
    report = validate_bids(cohort / "bids")
    assert sorted(report["summary"]["subjects"]) == ["01", "02"]
    description = json.loads((cohort / "bids" / "dataset_description.json").read_text())
    assert {"Name", "BIDSVersion", "Authors", "License"} <= description.keys()
    labels = json.loads((cohort / "bids/derivatives/labels/dataset_description.json").read_text())
    assert labels["DatasetType"] == "derivative"


def test_demo_cohort_layout(cohort: Path) -> None:
    bids = cohort / "bids"
    for sub in ("01", "02"):
        for suffix in ("T2w", "T1w"):
            image = bids / f"sub-{sub}/anat/sub-{sub}_{suffix}.nii.gz"
            assert image.is_file() and image.with_name(f"sub-{sub}_{suffix}.json").is_file()
            labels = bids / f"derivatives/labels/sub-{sub}/anat"
            mask = nib.load(labels / f"sub-{sub}_{suffix}_label-SC_mask.nii.gz")
            discs = nib.load(labels / f"sub-{sub}_{suffix}_labels-disc.nii.gz")
            assert mask.shape == discs.shape == nib.load(image).shape
            np.testing.assert_allclose(mask.affine, nib.load(image).affine)
            assert set(np.unique(np.asarray(discs.dataobj))) == {0, *range(2, 9)}
        assert (cohort / f"truth/sub-{sub}/sub-{sub}_truth.json").is_file()
    assert not list(bids.rglob("*truth*")), "ground truth must stay outside the dataset"
    tsv = (bids / "participants.tsv").read_text().splitlines()
    assert tsv[0].startswith("participant_id") and tsv[1:] == ["sub-01\tn/a\tn/a",
                                                                "sub-02\tn/a\tn/a"]


def test_truth_records_point_at_existing_files(cohort: Path) -> None:
    truths = load_cohort_truth(cohort)
    assert [t.subject for t in truths] == ["01", "02"]
    for truth in truths:
        assert truth.cohort == "demo"
        for rel in truth.files.values():
            assert (cohort / rel).is_file(), rel
        image = nib.load(cohort / truth.files["T2w"])
        np.testing.assert_allclose(image.affine, truth.grid.affine, atol=1e-5)
        assert image.shape == truth.grid.shape


def test_same_seed_writes_identical_files(cohort: Path, tmp_path: Path) -> None:
    generate_demo_cohort(tmp_path, n_subjects=1, seed=0, straight_reference=False)
    again = json.loads((tmp_path / "truth/sub-01/sub-01_truth.json").read_text())
    first = json.loads((cohort / "truth/sub-01/sub-01_truth.json").read_text())
    first["files"] = again["files"] = {}
    assert again == first
    for rel in ("bids/sub-01/anat/sub-01_T2w.nii.gz",
                "bids/derivatives/labels/sub-01/anat/sub-01_T2w_labels-disc.nii.gz"):
        np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / rel).dataobj),
                                      np.asarray(nib.load(cohort / rel).dataobj))


def test_cli_writes_a_demo_cohort(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert main(["demo", str(out), "--n-subjects", "1", "--seed", "5",
                 "--no-straight-reference"]) == 0
    assert capsys.readouterr().out.strip() == str(out.absolute())
    assert (out / "bids/sub-01/anat/sub-01_T2w.nii.gz").is_file()
    assert not (out / "bids/sub-01/anat/sub-01_T1w.nii.gz").exists()
    assert not list((out / "truth/sub-01").glob("*space-straight*"))
    assert json.loads((out / "truth/cohort.json").read_text())["seed"] == 5


def test_cli_rejects_bad_arguments(tmp_path: Path) -> None:
    assert main(["demo", str(tmp_path), "--n-subjects", "0"]) == 64
    assert main(["nonsense", str(tmp_path)]) == 64
