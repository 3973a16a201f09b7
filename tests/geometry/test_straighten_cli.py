"""The ``spinal_bidsapp-straighten`` command."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from geometry_phantoms import make_tube_phantom

from spinal_bidsapp.cli.straighten import main
from spinal_bidsapp.geometry.fields import apply_field
from spinal_bidsapp.image import Volume, load_field, save_volume

OUTPUTS = {"img_straight.nii.gz", "straight_ref.nii.gz", "warp_curve2straight.nii.gz",
           "warp_straight2curve.nii.gz"}


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("phantom")
    ph = make_tube_phantom("cervical", voxel_mm=(1.0, 1.0, 1.0), axcodes=("P", "S", "R"), seed=4)
    return (save_volume(ph.image, root / "img.nii.gz"),
            save_volume(ph.mask, root / "img_seg.nii.gz"))


def test_writes_sct_outputs_and_prints_the_residual(phantom_files, tmp_path, capsys) -> None:
    image, seg = phantom_files
    out = tmp_path / "out"
    assert main(["-i", str(image), "-s", str(seg), "-o", str(out), "--xy-size", "8"]) == 0
    assert {p.name for p in out.iterdir()} == OUTPUTS
    text = capsys.readouterr().out
    assert "RMS" in text and "max" in text
    rms = float(text.split("RMS")[1].split("mm")[0])
    assert 0.0 < rms < 0.3
    warp = nib.load(str(out / "warp_curve2straight.nii.gz"))
    assert warp.shape[3:] == (1, 3) and int(warp.header["intent_code"]) == 1007
    assert warp.shape[0] == warp.shape[1] == 17  # +-8 mm at 1 mm
    # the written straight image is the input pulled through the written field
    img = nib.load(str(image))
    expected = apply_field(np.asanyarray(img.dataobj), img.affine,
                           load_field(out / "warp_curve2straight.nii.gz"), order=3)
    written = np.asanyarray(nib.load(str(out / "img_straight.nii.gz")).dataobj)
    assert np.allclose(written, expected, atol=1e-3)


def test_disc_matching_onto_a_template(data_dir: Path, tmp_path: Path, capsys) -> None:
    labels = data_dir / "bids-real/derivatives/labels/sub-errsm30/anat"
    tpl = data_dir / "PAM50_small"
    argv = ["-i", str(data_dir / "bids-real/sub-errsm30/anat/sub-errsm30_T2w.nii.gz"),
            "-s", str(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz"),
            "--dest", str(tpl / "PAM50_small_cord.nii.gz"),
            "--ldisc-input", str(labels / "sub-errsm30_T2w_labels-disc.nii.gz"),
            "--ldisc-dest", str(tpl / "PAM50_small_label_disc.nii.gz"), "-o", str(tmp_path)]
    assert main(argv) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("disc")]
    assert [ln.split(":")[0] for ln in lines] == ["disc 4", "disc 5", "disc 6"]
    errors = [float(tok) for ln in lines for tok in ln.replace(",", " ").split()
              if tok.startswith(("+", "-"))]
    assert len(errors) == 6 and max(abs(e) for e in errors) < 0.5
    warp = nib.load(str(tmp_path / "warp_curve2straight.nii.gz"))
    assert warp.shape[:3] == nib.load(str(tpl / "PAM50_small_cord.nii.gz")).shape


def test_missing_input_exits_66(tmp_path: Path, capsys) -> None:
    code = main(["-i", str(tmp_path / "none.nii.gz"), "-s", "x", "-o", str(tmp_path)])
    assert code == 66
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]


def test_empty_mask_exits_65(phantom_files, tmp_path: Path, capsys) -> None:
    image, _ = phantom_files
    img = nib.load(str(image))
    empty = save_volume(Volume(np.zeros(img.shape, np.uint8), img.affine), tmp_path / "e.nii.gz")
    assert main(["-i", str(image), "-s", str(empty), "-o", str(tmp_path / "o")]) == 65
    assert "empty" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("extra", [["--ldisc-input", "a.nii.gz"],
                                   ["--ldisc-input", "a", "--ldisc-dest", "b"],
                                   ["--xy-size", "-3"]])
def test_bad_flag_combinations_exit_64(phantom_files, tmp_path: Path, extra) -> None:
    image, seg = phantom_files
    assert main(["-i", str(image), "-s", str(seg), "-o", str(tmp_path), *extra]) == 64
