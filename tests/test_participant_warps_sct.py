"""Real SCT 7.3 uses the participant level's PAM50 warps as its own (issue 19).

The builtin engine registers sub-errsm30 (real T2w) to the PAM50 that the real-tools install
builds (``REAL_TOOLS/PAM50_small``, 1x1x2 mm, in SCT's layout); then real
``sct_warp_template -a 0`` takes ``from-PAM50_to-T2w`` and real ``sct_apply_transfo`` takes
``from-T2w_to-PAM50``, and their results are compared with the app's own resampling through the
same warps. The forward comparison is made inside the slab the app's own space-PAM50 outputs
cover: outside the field's grid SCT (like ITK and ANTs) moves nothing, which is the warp
helper's part of issue 19, not this one's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.image import Volume, load_volume
from tests.conftest import REAL_TOOLS, real_tool_env
from tests.real_sct import binary_on, run_sct

pytestmark = [pytest.mark.sct, pytest.mark.slow]

SUBJECT = "sub-errsm30"


@pytest.fixture(scope="module")
def pam50_small() -> Path:
    """The PAM50 folder SCT accepts that ``scripts/install-real-tools.sh`` builds (info_label.txt
    and all), with the real SCT environment checked first."""
    real_tool_env("sct")
    folder = REAL_TOOLS / "PAM50_small"
    assert (folder / "template" / "info_label.txt").is_file(), f"{folder}: run make real-tools"
    return folder


@pytest.fixture(scope="module")
def anat(tmp_path_factory: pytest.TempPathFactory, bids_real: Path, pam50_small: Path) -> Path:
    """The participant outputs of sub-errsm30, builtin engine, registered to ``pam50_small``."""
    out = tmp_path_factory.mktemp("warps") / "out"
    code = main([str(bids_real), str(out), "participant", "--participant-label", "errsm30",
                 "--engine", "builtin", "--template-dir", str(pam50_small),
                 "--skip-bids-validation", "--nprocs", "1"])
    assert code == 0
    return out / SUBJECT / "anat"


def _crop_to(volume: Volume, slab: Volume) -> np.ndarray:
    """``volume`` (on the full template grid) on ``slab``, a crop of that grid along its third
    axis, as the app writes its space-PAM50 outputs."""
    shift = np.linalg.solve(volume.affine, slab.affine)
    k0 = round(float(shift[2, 3]))
    crop = np.eye(4)
    crop[2, 3] = k0
    assert np.allclose(shift, crop, atol=1e-3) and slab.shape[:2] == volume.shape[:2], (
        "the slab is not a crop of the template grid")
    return np.asarray(volume.data[:, :, k0:k0 + slab.shape[2]])


def test_sct_warp_template_with_our_inverse_warp_matches_our_template_cord(
        anat: Path, pam50_small: Path, tmp_path: Path) -> None:
    """``sct_warp_template -d <anat> -w <from-PAM50_to-T2w> -a 0``: its PAM50 cord in the
    subject vs the app's ``label-SC_desc-PAM50_mask`` (both linear, thresholded at 0.5)."""
    env = real_tool_env("sct")
    image = anat / f"{SUBJECT}_desc-preproc_T2w.nii.gz"
    run_sct(env, ["sct_warp_template", "-d", str(image),
                  "-w", str(anat / f"{SUBJECT}_from-PAM50_to-T2w_mode-image_xfm.nii.gz"),
                  "-a", "0", "-t", str(pam50_small), "-ofolder", str(tmp_path)], cwd=tmp_path)
    ours = load_volume(anat / f"{SUBJECT}_label-SC_desc-PAM50_mask.nii.gz")
    theirs = binary_on(tmp_path / "template" / "PAM50_cord.nii.gz", ours.shape, ours.affine)
    assert mask_dice(theirs, ours.data > 0) >= 0.95


def test_sct_apply_transfo_with_our_forward_warp_matches_our_space_pam50_outputs(
        anat: Path, pam50_small: Path, tmp_path: Path) -> None:
    """``sct_apply_transfo -i <anat | cord mask> -d PAM50_t2 -w <from-T2w_to-PAM50>`` vs the
    app's ``space-PAM50`` image and cord mask, on the slab they cover."""
    env = real_tool_env("sct")
    warp = anat / f"{SUBJECT}_from-T2w_to-PAM50_mode-image_xfm.nii.gz"
    pam50_t2 = pam50_small / "template" / "PAM50_t2.nii.gz"
    for name, source, interp in (
            ("anat", f"{SUBJECT}_desc-preproc_T2w.nii.gz", "spline"),
            ("cord", f"{SUBJECT}_label-SC_mask.nii.gz", "linear")):
        run_sct(env, ["sct_apply_transfo", "-i", str(anat / source), "-d", str(pam50_t2),
                      "-w", str(warp), "-x", interp, "-o", str(tmp_path / f"{name}.nii.gz")],
                cwd=tmp_path)
    our_cord = load_volume(anat / f"{SUBJECT}_space-PAM50_label-SC_mask.nii.gz")
    their_cord = _crop_to(load_volume(tmp_path / "cord.nii.gz"), our_cord) > 0.5
    assert mask_dice(their_cord, our_cord.data > 0) >= 0.95
    our_image = load_volume(anat / f"{SUBJECT}_space-PAM50_desc-preproc_T2w.nii.gz")
    their_image = _crop_to(load_volume(tmp_path / "anat.nii.gz"), our_image)
    assert np.corrcoef(their_image.ravel(), our_image.data.ravel())[0, 1] >= 0.99
