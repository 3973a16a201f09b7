"""Group options: --register-to (the new template registered to PAM50) and --no-disc-alignment."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli import main
from spinal_bidsapp.synth import generate_demo_cohort

pytestmark = pytest.mark.slow

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "2"]


@pytest.fixture(scope="module")
def participant_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A demo cohort with manual discs and its participant outputs (no PAM50 registration)."""
    root = tmp_path_factory.mktemp("cohort")
    generate_demo_cohort(root, n_subjects=3, seed=3, straight_reference=False)
    out = root / "out"
    assert main([str(root / "bids"), str(out), "participant", "--skip-bids-validation",
                 "--nprocs", "2"]) == 0
    return root / "bids", out


def test_register_to_pam50_lands_the_template_discs_on_pam50(
        participant_out: tuple[Path, Path], pam50_dir: Path, tmp_path: Path) -> None:
    bids, out = participant_out
    code = main([str(bids), str(out), "group", *GROUP_ARGS, "--template-name", "Reg",
                 "--register-to", "PAM50", "--template-dir", str(pam50_dir),
                 "-w", str(tmp_path / "work")])
    assert code == 0
    tpl = out / "tpl-Reg"
    forward = tpl / "tpl-Reg_from-Reg_to-PAM50_mode-image_xfm.nii.gz"
    inverse = tpl / "tpl-Reg_from-PAM50_to-Reg_mode-image_xfm.nii.gz"
    resampled = tpl / "tpl-Reg_space-PAM50_T2w.nii.gz"
    for path in (forward, inverse, resampled, tpl / "tpl-Reg_space-PAM50_label-SC_mask.nii.gz"):
        assert path.is_file(), path.name
    pam50_grid = nib.load(str(pam50_dir / "template" / "PAM50_cord.nii.gz"))
    in_pam50 = nib.load(str(resampled))
    assert in_pam50.shape[:2] == pam50_grid.shape[:2]
    assert np.allclose(in_pam50.header.get_zooms()[:3], pam50_grid.header.get_zooms()[:3])
    template = nib.load(str(tpl / "tpl-Reg_res-01_T2w.nii.gz"))
    assert nib.load(str(inverse)).shape[:3] == template.shape
    record = json.loads((tpl / "template_description.json").read_text())["RegisteredTo"]
    assert record["Template"] == "PAM50"
    assert len(record["DiscErrorMm"]) >= 3
    assert record["MaxDiscErrorMm"] <= 1.0
    page = (out / "tpl-Reg.html").read_text()
    assert "tpl-Reg in PAM50 space" in page
    assert (tpl / "figures" / "template_in_PAM50.png").is_file()


def test_register_to_a_template_folder_reads_its_info_label(tmp_path: Path) -> None:
    from spinal_bidsapp.config import RunConfig
    from spinal_bidsapp.group_outputs import resolve_registration_target

    folder = tmp_path / "Mine" / "template"
    folder.mkdir(parents=True)
    for key in ("t2", "cord", "label_disc"):
        (folder / f"Mine_{key}.nii.gz").write_bytes(b"")
    (folder / "info_label.txt").write_text(
        "# ID, name, file\n1, t2, Mine_t2.nii.gz\n3, cord, Mine_cord.nii.gz\n"
        "10, label_disc, Mine_label_disc.nii.gz\n")
    config = RunConfig(execution={"bids_dir": tmp_path / "b", "output_dir": tmp_path / "o",
                                  "analysis_level": "group"},
                       group={"register_to": str(tmp_path / "Mine")})
    target = resolve_registration_target(config, "T2w")
    assert (target.name, target.cord.name, target.discs.name, target.image) == (
        "Mine", "Mine_cord.nii.gz", "Mine_label_disc.nii.gz", folder / "Mine_t2.nii.gz")


def test_register_to_needs_disc_alignment(tmp_path: Path) -> None:
    bids = tmp_path / "bids"
    bids.mkdir()
    code = main([str(bids), str(tmp_path / "out"), "group", "--register-to", "PAM50",
                 "--no-disc-alignment", "--skip-bids-validation"])
    assert code == 64


def test_register_to_a_missing_folder_is_an_error_before_any_work(
        participant_out: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = participant_out
    code = main([str(bids), str(out), "group", *GROUP_ARGS, "--template-name", "Missing",
                 "--register-to", str(tmp_path / "nowhere"), "-w", str(tmp_path / "work")])
    assert code == 66
    assert not (tmp_path / "work" / "group" / "straight").exists()
