"""Error and warning messages say what is actually wrong (issue 22, item 7). Tiny datasets, real
CLI runs; about 20 s. (Environment errors naming the variable and the YAML config file are in
test_settings.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from tests.conftest import make_bids, write_nifti
from tests.reliability.test_bad_inputs import LABELS, error_line

MASK = LABELS / "sub-01_T2w_label-SC_mask.nii.gz"


def _run(root: Path, out: Path) -> int:
    return main([str(root), str(out), "participant", "--skip-bids-validation"])


def test_grid_message_names_the_origin_when_only_the_origin_differs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    mask = np.zeros((8, 8, 30), np.uint8)
    mask[3:5, 3:5, :] = 1
    shifted = np.eye(4)
    shifted[:3, 3] = [0.0, 0.0, 5.0]
    write_nifti(root / MASK, mask, shifted)
    assert _run(root, tmp_path / "out") == 65
    err = error_line(capsys.readouterr().err)
    assert "origin (0, 0, 5) vs (0, 0, 0) mm" in err
    assert "shape" not in err  # the shapes are the same: do not print them


def test_mask_below_one_half_is_not_called_empty(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    mask = np.zeros((8, 8, 30), np.float32)
    mask[3:5, 3:5, :] = 0.49  # a probability map, not a mask
    write_nifti(root / MASK, mask)
    assert _run(root, tmp_path / "out") == 65
    err = error_line(capsys.readouterr().err)
    assert "no voxel >= 0.5 (largest value 0.49)" in err
    assert "no non-zero voxel" not in err


def test_one_axial_slice_is_a_coverage_problem(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]}, shape=(8, 8, 1), with_labels=False)
    assert _run(root, tmp_path / "out") == 66
    err = error_line(capsys.readouterr().err)
    assert ("the cord covers at most 1.0 mm, the image's length along the cord (1 axial "
            "slice(s)), less than --min-cord-coverage") in err
    assert "mask" not in err  # the user gave no mask


def test_long_lists_of_bad_values_are_cut(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    discs = np.zeros((8, 8, 30), np.uint8)
    discs.reshape(-1)[: 114] = np.arange(100, 214)  # 114 values, none a disc
    write_nifti(root / LABELS / "sub-01_T2w_labels-disc.nii.gz", discs)
    assert _run(root, tmp_path / "out") == 65
    err = error_line(capsys.readouterr().err)
    assert "(114 values)" in err
    assert len(err) < 600


def test_missing_pam50_is_named_as_the_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("SCT_DIR", raising=False)
    monkeypatch.setenv("SPINAL_BIDSAPP_CACHE", str(tmp_path / "empty-cache"))
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    assert main([str(root), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "--engine", "builtin"]) == 0
    err = capsys.readouterr().err
    assert "PAM50 is not available, so the discs could not be labelled automatically" in err
    assert "--template-dir" in err
