"""The group level end to end on a small synthetic cohort (participant outputs first)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
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


@pytest.mark.sct
def test_real_sct_registers_a_new_subject_to_the_sct_ready_template(
        group_run: tuple[Path, int], tmp_path: Path) -> None:
    """``sct_register_to_template -t tpl-<name>/sct`` (real SCT 7.3, its default steps) takes the
    group's SCT-ready folder and registers a demo subject the template never saw. Measured both
    ways through SCT's own outputs: the subject cord carried to the template by
    ``sct_apply_transfo`` with SCT's ``warp_anat2template`` vs the template cord (Dice over the
    template slices the subject covers, as the participant level scores it), and each
    template disc carried to the subject through ``warp_anat2template`` / each subject disc
    through ``warp_template2anat`` (points mapped by the fields, no voxel rounding) vs its
    counterpart (mm)."""
    from spinal_bidsapp.engines.builtin.registration import TemplateRegistration, disc_errors_mm
    from spinal_bidsapp.geometry.discs import discs_from_label_array
    from spinal_bidsapp.geometry.metrics import mask_dice
    from spinal_bidsapp.image import load_field, load_mask
    from tests.conftest import real_tool_env
    from tests.real_sct import binary_on, run_sct

    env = real_tool_env("sct")
    assert group_run[1] == 0
    tpl_sct = group_run[0] / "tpl-SpinalCord" / "sct"
    generate_demo_cohort(tmp_path / "new", n_subjects=1, seed=11, straight_reference=False)
    image = tmp_path / "new" / "bids" / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    labels = tmp_path / "new" / "bids" / "derivatives" / "labels" / "sub-01" / "anat"
    cord = labels / "sub-01_T2w_label-SC_mask.nii.gz"
    discs = labels / "sub-01_T2w_labels-disc.nii.gz"
    reg = tmp_path / "reg"
    run_sct(env, ["sct_register_to_template", "-i", str(image), "-s", str(cord),
                  "-ldisc", str(discs), "-t", str(tpl_sct), "-c", "t2", "-ofolder", str(reg)],
            cwd=reg)
    template_t2 = tpl_sct / "template" / "SpinalCord_t2.nii.gz"
    run_sct(env, ["sct_apply_transfo", "-i", str(cord), "-d", str(template_t2),
                  "-w", str(reg / "warp_anat2template.nii.gz"), "-x", "linear",
                  "-o", str(reg / "cord_in_template.nii.gz")], cwd=reg)
    template_cord = load_mask(tpl_sct / "template" / "SpinalCord_cord.nii.gz")
    carried = binary_on(reg / "cord_in_template.nii.gz", template_cord.shape,
                        template_cord.affine)
    covered = carried.any(axis=(0, 1))  # the template cord runs past this subject's ends
    assert mask_dice(carried[:, :, covered], template_cord.data[:, :, covered] > 0) >= 0.95

    fields = TemplateRegistration(load_field(reg / "warp_anat2template.nii.gz"),
                                  load_field(reg / "warp_template2anat.nii.gz"),
                                  template_cord.shape, template_cord.affine)
    subject_discs, template_discs = (
        discs_from_label_array(v.data, v.affine) for v in (
            load_mask(discs), load_mask(tpl_sct / "template" / "SpinalCord_label_disc.nii.gz")))
    errors = disc_errors_mm(fields, subject_discs, template_discs)
    assert sorted(errors) == sorted(template_discs) == list(range(2, 9))
    assert max(max(e) for e in errors.values()) <= 1.0, errors
