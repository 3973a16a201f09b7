"""Every displacement field the app writes is right on the whole grid of its reference image, in
every tool that applies it: no ghost anatomy (#18).

ITK, ANTs, SimpleITK and SCT take a zero displacement outside a field's grid, so a field written
on a slab of the template pulled the subject's own lower anatomy into every template slice
outside the slab. Here each kind of written field is applied as a user would, with antspyx and
SimpleITK (and ``sct_apply_transfo`` in the ``sct`` tier), on the whole grid of its reference
image, to a subject's cord mask and to the template's cord (:mod:`tests.warp_tools`):

* a 3-subject curved phantom cohort (``spinal_bidsapp-synth phantom`` with truth warps) through
  the participant level (PAM50_small, 70x70x275) and the group level with ``--register-to
  PAM50``: participant ``from-T2w_to-PAM50`` and inverse, group ``from-T2w_to-<tpl>`` and
  inverse, ``tpl-<name>_from-<name>_to-PAM50`` and inverse;
* sub-errsm30 (real T2w, manual labels) through the participant level;
* ``spinal_bidsapp-straighten`` on a phantom;
* SCT's own warp of sub-errsm30, written back by our field writer as the SCT engine does (the
  SCT-engine participant pairs themselves: `tests/test_participant_sct.py`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from spinal_bidsapp.image import load_field, save_field
from spinal_bidsapp.synth import generate_phantom_cohort
from tests.conftest import latest_log, real_tool_env
from tests.warp_tools import ants_apply, check_warp, dice, mapped, on_whole_grid, sct_apply

pytestmark = pytest.mark.slow

SUBJECTS = ("01", "02", "03")
GROUP = "Ph"


@pytest.fixture(scope="module")
def phantom_run(data_dir: Path, pam50_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root with bids/, truth/ and out/: a 3-subject phantom cohort after the participant level
    (PAM50_small) and a fast group level registered to PAM50 (about 2.5 min on 2 cores)."""
    root = tmp_path_factory.mktemp("warp_phantoms")
    generate_phantom_cohort(root, pam50_dir=data_dir / "PAM50",
                            pam50_small_dir=data_dir / "PAM50_small", n_subjects=len(SUBJECTS),
                            seed=5, truth_warp=True)
    out = root / "out"
    code = main([str(root / "bids"), str(out), "participant", "--template-dir", str(pam50_dir),
                 "--skip-bids-validation", "--nprocs", "2"])
    assert code == 0, latest_log(out, "participant")[-3000:]
    code = main([str(root / "bids"), str(out), "group", "--template-resolution", "1",
                 "--template-xy-size", "12", "--template-preset", "fast", "--template-name",
                 GROUP, "--register-to", "PAM50", "--template-dir", str(pam50_dir),
                 "--skip-bids-validation", "--nprocs", "2", "-w", str(root / "work")])
    assert code == 0, latest_log(out, "group")[-3000:]
    return root


def _anat(root: Path, subject: str) -> Path:
    return root / "out" / f"sub-{subject}" / "anat"


@pytest.mark.parametrize("subject", SUBJECTS)
def test_participant_warps_on_the_whole_grids(phantom_run: Path, pam50_dir: Path,
                                              data_dir: Path, subject: str) -> None:
    anat, pam50_cord = _anat(phantom_run, subject), pam50_dir / "template" / "PAM50_cord.nii.gz"
    prefix = f"sub-{subject}_"
    cord = anat / f"{prefix}label-SC_mask.nii.gz"
    forward = anat / f"{prefix}from-T2w_to-PAM50_mode-image_xfm.nii.gz"
    slab = anat / f"{prefix}space-PAM50_label-SC_mask.nii.gz"
    assert nib.load(str(slab)).shape[2] < nib.load(str(pam50_cord)).shape[2]  # a real slab
    into_pam50 = check_warp(cord, pam50_cord, forward, own_output=slab)
    # the done-when measure: no ghost, and the template cord over the slices the warp covers
    covered = mapped(forward).any(axis=(0, 1))
    assert not into_pam50["ants"][:, :, ~covered].any()
    template_cord = np.asarray(nib.load(str(pam50_cord)).dataobj)[:, :, covered] > 0
    assert dice(into_pam50["ants"][:, :, covered], template_cord) >= 0.9
    # the template's cord carried into the subject: like the app's, and like the truth
    back = anat / f"{prefix}from-PAM50_to-T2w_mode-image_xfm.nii.gz"
    into_subject = check_warp(pam50_cord, cord, back,
                              own_output=anat / f"{prefix}label-SC_desc-PAM50_mask.nii.gz")
    truth = phantom_run / "truth" / f"sub-{subject}" / \
        f"sub-{subject}_from-PAM50_to-T2w_mode-image_xfm.nii.gz"
    # the truth maps into the 0.5 mm PAM50's world frame (PAM50_small's is shifted)
    true_cord = ants_apply(data_dir / "PAM50" / "PAM50_cord.nii.gz", cord, truth) > 0.5
    assert dice(into_subject["ants"], true_cord) >= 0.85


@pytest.mark.parametrize("subject", SUBJECTS)
def test_group_subject_warps_on_the_whole_grids(phantom_run: Path, subject: str) -> None:
    anat, tpl = _anat(phantom_run, subject), phantom_run / "out" / f"tpl-{GROUP}"
    prefix = f"sub-{subject}_"
    template_cord = tpl / f"tpl-{GROUP}_res-01_label-SC_mask.nii.gz"
    cord = anat / f"{prefix}label-SC_mask.nii.gz"
    check_warp(cord, template_cord, anat / f"{prefix}from-T2w_to-{GROUP}_mode-image_xfm.nii.gz",
               own_output=anat / f"{prefix}space-{GROUP}_label-SC_mask.nii.gz")
    check_warp(template_cord, cord,
               anat / f"{prefix}from-{GROUP}_to-T2w_mode-image_xfm.nii.gz")


def test_group_template_to_pam50_warps_on_the_whole_grids(phantom_run: Path,
                                                          pam50_dir: Path) -> None:
    tpl = phantom_run / "out" / f"tpl-{GROUP}"
    template_cord = tpl / f"tpl-{GROUP}_res-01_label-SC_mask.nii.gz"
    pam50_cord = pam50_dir / "template" / "PAM50_cord.nii.gz"
    slab = tpl / f"tpl-{GROUP}_space-PAM50_label-SC_mask.nii.gz"
    forward = tpl / f"tpl-{GROUP}_from-{GROUP}_to-PAM50_mode-image_xfm.nii.gz"
    assert nib.load(str(slab)).shape[2] < nib.load(str(pam50_cord)).shape[2]
    into_pam50 = check_warp(template_cord, pam50_cord, forward, own_output=slab)
    covered = mapped(forward).any(axis=(0, 1))
    assert not covered.all() and not into_pam50["ants"][:, :, ~covered].any()
    check_warp(pam50_cord, template_cord,
               tpl / f"tpl-{GROUP}_from-PAM50_to-{GROUP}_mode-image_xfm.nii.gz")


def test_errsm30_participant_warps_on_the_whole_grids(bids_real: Path, pam50_dir: Path,
                                                      tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main([str(bids_real), str(out), "participant", "--participant-label", "errsm30",
                 "--template-dir", str(pam50_dir), "--skip-bids-validation", "--nprocs", "1"])
    assert code == 0, latest_log(out, "participant")[-3000:]
    anat, pam50_cord = out / "sub-errsm30" / "anat", pam50_dir / "template" / "PAM50_cord.nii.gz"
    cord = anat / "sub-errsm30_label-SC_mask.nii.gz"
    forward = anat / "sub-errsm30_from-T2w_to-PAM50_mode-image_xfm.nii.gz"
    into_pam50 = check_warp(cord, pam50_cord, forward,
                            own_output=anat / "sub-errsm30_space-PAM50_label-SC_mask.nii.gz")
    covered = mapped(forward).any(axis=(0, 1))
    assert covered.sum() < 0.5 * covered.size  # C3-C6 of the whole PAM50
    assert not into_pam50["ants"][:, :, ~covered].any()
    check_warp(pam50_cord, cord, anat / "sub-errsm30_from-PAM50_to-T2w_mode-image_xfm.nii.gz",
               own_output=anat / "sub-errsm30_label-SC_desc-PAM50_mask.nii.gz")
    metrics = json.loads(next((out / "work" / "sub-errsm30" / "register").glob("*.json"))
                         .read_text())
    assert all(e["to_template"] is not None for e in metrics["disc_error_mm"].values())


def test_straighten_warps_on_the_whole_grids(phantom_run: Path, tmp_path: Path) -> None:
    anat = _anat(phantom_run, "01")
    image, cord = anat / "sub-01_desc-preproc_T2w.nii.gz", anat / "sub-01_label-SC_mask.nii.gz"
    proc = subprocess.run([sys.executable, "-m", "spinal_bidsapp.cli.straighten", "-i",
                           str(image), "-s", str(cord), "-o", str(tmp_path)],
                          capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr
    straight_ref = tmp_path / "straight_ref.nii.gz"
    to_straight = check_warp(cord, straight_ref, tmp_path / "warp_curve2straight.nii.gz")
    straight_cord = tmp_path / "straight_cord.nii.gz"
    ref = nib.load(str(straight_ref))
    nib.save(nib.Nifti1Image(to_straight["own"].astype(np.uint8), ref.affine), str(straight_cord))
    check_warp(straight_cord, cord, tmp_path / "warp_straight2curve.nii.gz")


def test_sct_warp_keeps_its_no_mapping_through_our_writer(data_dir: Path, tmp_path: Path) -> None:
    """SCT's real template->anat warp (float32-max where ANTs had no value), read and written back
    as the SCT engine does: same grid, same voxels without a mapping, same resampling."""
    original = data_dir / "sct-reference" / "sub-errsm30_T2w_warp-PAM50small2anat.nii.gz"
    rewritten = save_field(load_field(original), tmp_path / "rewritten_xfm.nii.gz")
    assert np.array_equal(mapped(rewritten), mapped(original)) and not mapped(original).all()
    pam50_cord = data_dir / "PAM50_small" / "PAM50_small_cord.nii.gz"
    cord = data_dir / "bids-real" / "derivatives" / "labels" / "sub-errsm30" / "anat" / \
        "sub-errsm30_T2w_label-SC_mask.nii.gz"
    ours = check_warp(pam50_cord, cord, rewritten)
    theirs = ants_apply(pam50_cord, cord, original) > 0.5
    assert dice(ours["ants"], theirs) >= 0.99


@pytest.mark.sct
def test_sct_apply_transfo_gives_no_ghost_on_the_whole_template(phantom_run: Path,
                                                                pam50_dir: Path,
                                                                tmp_path: Path) -> None:
    """SCT's own convention (``sct_apply_transfo``: ITK displacement, LPS) on the whole PAM50_small
    grid: the subject's cord only where the warp maps, there as the app resamples it."""
    env = real_tool_env("sct")
    anat, pam50_cord = _anat(phantom_run, "01"), pam50_dir / "template" / "PAM50_cord.nii.gz"
    forward = anat / "sub-01_from-T2w_to-PAM50_mode-image_xfm.nii.gz"
    result = sct_apply(anat / "sub-01_label-SC_mask.nii.gz", pam50_cord, forward,
                       tmp_path / "cord_in_pam50.nii.gz", env) > 0.5
    assert result.shape == nib.load(str(pam50_cord)).shape
    assert not (result & ~mapped(forward)).any()
    own = on_whole_grid(anat / "sub-01_space-PAM50_label-SC_mask.nii.gz", pam50_cord)
    assert dice(result, own) >= 0.99
