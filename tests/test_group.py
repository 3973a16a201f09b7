"""The group level end to end on a small synthetic cohort (participant outputs first)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli import main
from spinal_bidsapp.synth import generate_demo_cohort
from tests.conftest import latest_log

pytestmark = pytest.mark.slow

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "2"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cohort")
    generate_demo_cohort(root, n_subjects=3, seed=3, straight_reference=False)
    return root


@pytest.fixture(scope="module")
def group_run(cohort: Path) -> tuple[Path, int]:
    out = cohort / "out"
    assert main([str(cohort / "bids"), str(out), "participant", "--skip-bids-validation",
                 "--nprocs", "2"]) == 0
    return out, main([str(cohort / "bids"), str(out), "group", *GROUP_ARGS])


def test_template_folders_are_complete(group_run: tuple[Path, int]) -> None:
    out, code = group_run
    assert code == 0
    tpl = out / "tpl-SpinalCord"
    for suffix in ("T2w", "desc-sd_T2w", "label-SC_mask", "label-SC_probseg",
                   "desc-discs_dseg", "desc-levels_dseg", "desc-centerline_mask"):
        assert (tpl / f"tpl-SpinalCord_res-01_{suffix}.nii.gz").is_file(), suffix
    description = json.loads((tpl / "template_description.json").read_text())
    assert description["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    info = (tpl / "sct" / "template" / "info_label.txt").read_text()
    assert "1, t2, SpinalCord_t2.nii.gz" in info and "10, label_disc" in info
    assert (tpl / "iterations" / "convergence.json").is_file()


def test_template_discs_sit_at_the_mean_level_lengths(group_run: tuple[Path, int]) -> None:
    tpl = group_run[0] / "tpl-SpinalCord"
    description = json.loads((tpl / "template_description.json").read_text())
    discs = description["Discs"]
    lengths = {lv["upper_disc"]: lv["mean_mm"] for lv in description["LevelLengths"]}
    for upper, length in lengths.items():
        gap = discs[str(upper)]["z_mm"] - discs[str(upper + 1)]["z_mm"]
        assert gap == pytest.approx(length, abs=2e-3)  # both rounded to 1 um
    img = nib.load(str(tpl / "tpl-SpinalCord_res-01_desc-discs_dseg.nii.gz"))
    assert set(np.unique(np.asarray(img.dataobj))) - {0} == {int(k) for k in discs}


def test_subject_warps_and_images_in_template_space(group_run: tuple[Path, int]) -> None:
    anat = group_run[0] / "sub-02" / "anat"
    assert (anat / "sub-02_from-T2w_to-SpinalCord_mode-image_xfm.nii.gz").is_file()
    assert (anat / "sub-02_from-SpinalCord_to-T2w_mode-image_xfm.nii.gz").is_file()
    warped = nib.load(str(anat / "sub-02_space-SpinalCord_desc-preproc_T2w.nii.gz"))
    template = nib.load(str(group_run[0] / "tpl-SpinalCord" / "tpl-SpinalCord_res-01_T2w.nii.gz"))
    assert warped.shape == template.shape


def test_rerun_resumes_without_recomputing(group_run: tuple[Path, int], cohort: Path) -> None:
    out = group_run[0]
    template = out / "tpl-SpinalCord" / "tpl-SpinalCord_res-01_T2w.nii.gz"
    before = np.asarray(nib.load(str(template)).dataobj)
    assert main([str(cohort / "bids"), str(out), "group", *GROUP_ARGS]) == 0
    log = latest_log(out, "group")
    assert "straighten: outputs are current, skipped" in log
    assert "iteration 1/" not in log
    assert np.array_equal(np.asarray(nib.load(str(template)).dataobj), before)


def test_group_needs_two_subjects_with_outputs(cohort: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main([str(cohort / "bids"), str(out), "participant", "--participant-label", "01",
                 "--skip-bids-validation"]) == 0
    code = main([str(cohort / "bids"), str(out), "group", *GROUP_ARGS])
    assert code == 65
