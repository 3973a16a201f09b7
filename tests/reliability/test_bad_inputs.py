"""Bad inputs: one clear line naming the file, the documented exit code, nothing half-written."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from tests.conftest import make_bids, write_nifti

LABELS = Path("derivatives") / "labels" / "sub-01" / "anat"
IMAGE = Path("sub-01") / "anat" / "sub-01_T2w.nii.gz"


def error_line(stderr: str) -> str:
    """The single ``spinal_bidsapp: error:`` line (log lines above it are INFO/WARNING)."""
    lines = [line for line in stderr.splitlines() if line.startswith("spinal_bidsapp: error")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def _disc_labels(root: Path, values: dict[int, int]) -> None:
    """Single-voxel disc labels at slice z (value -> z) on the cord centre."""
    data = np.zeros((8, 8, 30), np.uint8)
    for value, z in values.items():
        data[3, 3, z] = value
    write_nifti(root / LABELS / "sub-01_T2w_labels-disc.nii.gz", data)


def _truncate(root: Path) -> None:
    path = root / IMAGE
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _four_d(root: Path) -> None:
    write_nifti(root / IMAGE, np.ones((8, 8, 30, 3), np.float32))


def _two_d(root: Path) -> None:
    write_nifti(root / IMAGE, np.ones((8, 30), np.float32))


def _zero_bytes(root: Path) -> None:
    (root / IMAGE).write_bytes(b"")


def _nan_filled(root: Path) -> None:
    write_nifti(root / IMAGE, np.full((8, 8, 30), np.nan, np.float32))


def _mask_other_grid(root: Path) -> None:
    write_nifti(root / LABELS / "sub-01_T2w_label-SC_mask.nii.gz", np.ones((8, 8, 20), np.uint8))


def _empty_mask(root: Path) -> None:
    write_nifti(root / LABELS / "sub-01_T2w_label-SC_mask.nii.gz", np.zeros((8, 8, 30), np.uint8))


def _short_cord(root: Path) -> None:
    mask = np.zeros((8, 8, 30), np.uint8)
    mask[3:5, 3:5, 10:19] = 1
    write_nifti(root / LABELS / "sub-01_T2w_label-SC_mask.nii.gz", mask)


def _discs_out_of_order(root: Path) -> None:
    _disc_labels(root, {3: 5, 4: 25})  # disc 3 (C2/C3) below disc 4 (C3/C4)


def _discs_duplicated(root: Path) -> None:
    data = np.zeros((8, 8, 30), np.uint8)
    data[3, 3, 25] = 3
    data[3, 3, 10] = 4
    data[3, 3, 5] = 4
    write_nifti(root / LABELS / "sub-01_T2w_labels-disc.nii.gz", data)


def _discs_unknown(root: Path) -> None:
    _disc_labels(root, {3: 25, 77: 10})


CASES: dict[str, tuple[Callable[[Path], None], int, str]] = {
    "truncated gzip": (_truncate, 65, "sub-01_T2w.nii.gz"),
    "4-D image": (_four_d, 65, "4 dimensions"),
    "2-D image": (_two_d, 65, "2 dimensions"),
    "zero-byte file": (_zero_bytes, 65, "sub-01_T2w.nii.gz"),
    "NaN-filled image": (_nan_filled, 65, "no finite values"),
    "mask on another grid": (_mask_other_grid, 65, "not on the grid"),
    "empty cord mask": (_empty_mask, 65, "empty"),
    "cord shorter than 20 mm": (_short_cord, 66, "less than --min-cord-coverage"),
    "discs out of order": (_discs_out_of_order, 65, "not in anatomical order"),
    "discs duplicated": (_discs_duplicated, 65, "several separate places"),
    "unknown disc value": (_discs_unknown, 65, "unknown disc label values [77]"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_fails_cleanly(case: str, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    corrupt, code, fragment = CASES[case]
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    corrupt(root)
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation"]) == code
    err = error_line(capsys.readouterr().err)
    assert fragment in err
    assert "sub-01" in err
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_corrupt_image_is_caught_by_validation_first(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    _truncate(root)
    assert main([str(root), str(tmp_path / "out"), "participant"]) in (16, 65)
    assert "Traceback" not in capsys.readouterr().err


def test_other_subjects_finish_when_one_is_corrupt(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"], "02": ["T2w"]})
    _nan_filled(root)
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation",
                 "--nprocs", "2"]) == 1
    assert (out / "sub-02" / "anat" / "sub-02_desc-cord_morphometrics.json").is_file()
    assert not (out / "sub-01" / "anat" / "sub-01_desc-preproc_T2w.nii.gz").exists()


def test_manual_labels_are_never_modified(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    _disc_labels(root, {3: 25, 4: 10})
    labels = sorted((root / "derivatives").rglob("*"))
    before = {p: p.read_bytes() for p in labels if p.is_file()}
    assert main([str(root), str(tmp_path / "out"), "participant",
                 "--skip-bids-validation"]) == 0
    assert {p: p.read_bytes() for p in labels if p.is_file()} == before


@pytest.mark.parametrize("content, fragment", [
    ({"nprocs": 2, "unknown_option": 1}, "unknown setting(s) 'unknown_option'"),
    ({"min_cord_coverage_mm": "long"}, "min_cord_coverage_mm"),
    ({"engine": "fsl"}, "engine"),
])
def test_config_file_errors_are_readable(content: dict, fragment: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    config = tmp_path / "config.json"
    config.write_text(json.dumps(content))
    code = main([str(root), str(tmp_path / "out"), "participant", "--config-file", str(config)])
    err = error_line(capsys.readouterr().err)
    assert code == 64
    assert fragment in err and str(config) in err


def test_gzip_header_check_is_not_fooled_by_valid_gzip_of_garbage(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture
                                                                  [str]) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    (root / IMAGE).write_bytes(gzip.compress(b"not a nifti header" * 30))
    assert main([str(root), str(tmp_path / "out"), "participant",
                 "--skip-bids-validation"]) == 65
    assert "sub-01_T2w.nii.gz" in capsys.readouterr().err


def test_image_loader_never_returns_partial_arrays(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    img = nib.load(str(root / IMAGE))
    assert img.shape == (8, 8, 30)


def test_symlinked_images_as_in_datalad_datasets(tmp_path: Path) -> None:
    root = make_bids(tmp_path / "bids", {"01": ["T2w"]})
    annex = tmp_path / "annex" / "objects" / "x.nii.gz"
    annex.parent.mkdir(parents=True)
    (root / IMAGE).rename(annex)
    (root / IMAGE).symlink_to(annex)
    out = tmp_path / "out"
    assert main([str(root), str(out), "participant", "--skip-bids-validation"]) == 0
    sidecar = json.loads((out / "sub-01" / "anat" / "sub-01_desc-preproc_T2w.json").read_text())
    assert sidecar["Sources"] == ["bids:raw:sub-01/anat/sub-01_T2w.nii.gz"]


def test_partial_files_of_a_killed_writer_are_removed_by_the_rerun(tmp_path: Path) -> None:
    from spinal_bidsapp.runtime.files import atomic_path, remove_stale_temporaries

    target = tmp_path / "sub-01_label-SC_mask.nii.gz"
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt  # a normal interruption cleans up ...
    assert list(tmp_path.iterdir()) == []
    stale = tmp_path / ".sub-01_label-SC_mask.abcd1234.tmp.nii.gz"  # ... SIGKILL does not
    stale.write_bytes(b"half")
    other = tmp_path / ".sub-02_label-SC_mask.abcd1234.tmp.nii.gz"
    other.write_bytes(b"someone else's")
    assert remove_stale_temporaries(target) == [stale]
    assert other.exists() and not target.exists()
