"""Inputs that cannot be right are rejected (65, one line naming the file and the check); values
outside human ranges are warned with their figures; labels are never reused across different
source files (issue 22, item 6). Tiny images, in-process CLI runs; about 20 s."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from tests.conftest import make_bids, write_nifti
from tests.reliability.test_bad_inputs import IMAGE, LABELS, error_line

MASK = LABELS / "sub-01_T2w_label-SC_mask.nii.gz"


def _run(root: Path, out: Path) -> int:
    return main([str(root), str(out), "participant", "--skip-bids-validation"])


def _all_zero(root: Path) -> None:
    write_nifti(root / IMAGE, np.zeros((8, 8, 30), np.float32))


def _complex(root: Path) -> None:
    data = np.random.default_rng(0).normal(100, 10, (8, 8, 30)) * (1 + 0.5j)
    write_nifti(root / IMAGE, data.astype(np.complex64))


def _sheared(root: Path) -> None:
    affine = np.eye(4)
    affine[0, 2] = 0.15  # x grows with the slice index: 8.5 degrees of shear
    image = np.asarray(nib.load(str(root / IMAGE)).dataobj)
    write_nifti(root / IMAGE, image, affine)
    mask = np.asarray(nib.load(str(root / MASK)).dataobj)
    write_nifti(root / MASK, mask, affine)


def _single_sagittal_slice(root: Path) -> None:
    write_nifti(root / IMAGE, np.random.default_rng(0).normal(100, 10, (1, 8, 30))
                .astype(np.float32))
    mask = np.zeros((1, 8, 30), np.uint8)
    mask[0, 3:5, :] = 1
    write_nifti(root / MASK, mask)


REJECTED: dict[str, tuple[Callable[[Path], None], str]] = {
    "all-zero image": (_all_zero, "every voxel is 0"),
    "complex64 image": (_complex, "holds complex values (complex64); give the magnitude"),
    "sheared affine": (_sheared, "has a sheared voxel grid (its axes are 8.5 degrees"),
    "one sagittal slice": (_single_sagittal_slice, "has 1 voxel(s) left-right"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_impossible_inputs_are_rejected(case: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, fragment = REJECTED[case]
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    corrupt(root)
    out = tmp_path / "out"
    assert _run(root, out) == 65
    captured = capsys.readouterr().err
    err = error_line(captured)
    assert fragment in err and "sub-01_T2w.nii.gz" in err
    assert "Warning" not in captured  # no raw Python warning (ComplexWarning)
    assert not list(out.glob("sub-01/anat/*.nii.gz"))


def test_ten_millimetre_voxels_are_warned_with_figures(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    scale = np.diag([10.0, 10.0, 10.0, 1.0])
    for path in (root / IMAGE, root / MASK):
        write_nifti(path, np.asarray(nib.load(str(path)).dataobj), scale)
    assert _run(root, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "outside the human range: voxel size 10 x 10 x 10 mm (expected 0.1-6 mm)" in err
    assert "mean CSA 400.0 mm2" in err


def test_header_without_orientation_is_warned(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    for path in (root / IMAGE, root / MASK):
        img = nib.load(str(path))
        img.set_sform(None, code=0)
        img.set_qform(None, code=0)
        nib.save(img, str(path))
    assert _run(root, tmp_path / "out") == 0
    assert "the header has no orientation (sform and qform codes 0)" in capsys.readouterr().err


def test_unparsed_file_name_never_borrows_another_image_s_labels(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    odd = root / "sub-01" / "anat" / "sub-01_acq-é_T2w.nii.gz"
    shutil.copy(root / IMAGE, odd)
    out = tmp_path / "out"
    assert _run(root, out) == 0
    assert "sub-01_acq-é_T2w.nii.gz ignored: its name is not valid BIDS" in \
        capsys.readouterr().err
    (root / IMAGE).unlink()  # the odd file alone: rejected, not given sub-01_T2w's labels
    assert _run(root, tmp_path / "out2") == 65
    assert "the file name is not valid BIDS" in error_line(capsys.readouterr().err)
