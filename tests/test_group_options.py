"""Group options: --register-to (the new template registered to PAM50) and --no-disc-alignment."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
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
    from spinal_bidsapp.group.target import resolve_registration_target

    folder = tmp_path / "Mine" / "template"
    folder.mkdir(parents=True)
    for key in ("t2", "cord", "label_disc"):
        (folder / f"Mine_{key}.nii.gz").write_bytes(b"")
    (folder / "info_label.txt").write_text(
        "# Keyword=IndivLabels\n1, t2, Mine_t2.nii.gz\n3, cord, Mine_cord.nii.gz\n"
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


@pytest.fixture(scope="module")
def discless_out(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A demo cohort whose disc labels were deleted, with its participant outputs (cord only)."""
    root = tmp_path_factory.mktemp("discless")
    generate_demo_cohort(root, n_subjects=3, seed=5, straight_reference=False)
    labels = sorted((root / "bids" / "derivatives" / "labels").glob(
        "sub-*/anat/*_labels-disc.nii.gz"))
    assert len(labels) == 3
    for path in labels:
        path.unlink()
    out = root / "out"
    with pytest.MonkeyPatch.context() as env:  # no PAM50 anywhere: no automatic disc labels
        env.delenv("SCT_DIR", raising=False)
        env.setenv("SPINAL_BIDSAPP_CACHE", str(root / "empty-cache"))
        assert main([str(root / "bids"), str(out), "participant", "--skip-bids-validation",
                     "--nprocs", "2"]) == 0
    assert not list(out.glob("sub-*/anat/*_desc-discs_dseg.nii.gz"))
    return root / "bids", out


def _cord_extent_mm(mask_path: Path) -> float:
    img = nib.load(str(mask_path))
    slices = np.nonzero(np.asarray(img.dataobj).any(axis=(0, 1)))[0]
    return float((slices[-1] - slices[0]) * img.header.get_zooms()[2])


def test_no_disc_alignment_builds_a_template_of_the_mean_cord_length(
        discless_out: tuple[Path, Path]) -> None:
    bids, out = discless_out
    lengths = [json.loads(p.read_text())["cord_length_mm"]
               for p in sorted(out.glob("sub-*/anat/*_desc-cord_morphometrics.json"))]
    assert len(lengths) == 3
    assert main([str(bids), str(out), "group", *GROUP_ARGS, "--no-disc-alignment"]) == 0
    tpl = out / "tpl-SpinalCord"
    description = json.loads((tpl / "template_description.json").read_text())
    assert description["Alignment"]["Mode"] == "cord_ends"
    assert description["Alignment"]["SpanMm"] == pytest.approx(np.mean(lengths), abs=0.01)
    assert description["Discs"] == {} and description["LevelLengths"] == []
    mask = tpl / "tpl-SpinalCord_res-01_label-SC_mask.nii.gz"
    assert _cord_extent_mm(mask) == pytest.approx(np.mean(lengths), abs=1.5)  # one voxel
    assert not (tpl / "tpl-SpinalCord_res-01_desc-discs_dseg.nii.gz").exists()
    assert not (tpl / "tpl-SpinalCord_res-01_desc-levels_dseg.nii.gz").exists()
    info = (tpl / "sct" / "template" / "info_label.txt").read_text()
    assert "label_disc" not in info and "3, cord, SpinalCord_cord.nii.gz" in info
    assert (out / "sub-02" / "anat" / "sub-02_space-SpinalCord_desc-preproc_T2w.nii.gz").is_file()


def test_no_disc_alignment_with_discs_aligns_the_common_end_discs(
        participant_out: tuple[Path, Path], tmp_path: Path) -> None:
    bids, out = participant_out
    assert main([str(bids), str(out), "group", *GROUP_ARGS, "--template-name", "Ends",
                 "--no-disc-alignment", "-w", str(tmp_path / "work")]) == 0
    tpl = out / "tpl-Ends"
    description = json.loads((tpl / "template_description.json").read_text())
    assert description["Alignment"]["Mode"] == "end_discs"
    ends = sorted(int(k) for k in description["Discs"])
    assert len(ends) == 2
    assert description["Discs"][str(ends[1])]["z_mm"] == pytest.approx(
        -description["Alignment"]["SpanMm"], abs=1e-3)
    labels = np.asarray(nib.load(str(tpl / "tpl-Ends_res-01_desc-discs_dseg.nii.gz")).dataobj)
    assert sorted(set(np.unique(labels).tolist()) - {0}) == ends


def test_proportional_arc_map_puts_the_span_ends_on_the_template_ends() -> None:
    from spinal_bidsapp.geometry.template_space import define_length_space, proportional_arc_map

    space = define_length_space(80.0, anchors=None, resolution_mm=1.0, xy_half_mm=5.0,
                                margin_mm=10.0)
    arc = proportional_arc_map((3.0, 103.0), space).forward(np.array([3.0, 53.0, 103.0]))
    z = np.interp(arc, space.centerline.arc_mm, space.centerline.points_mm[:, 2])
    assert z.tolist() == pytest.approx([-80.0, -40.0, 0.0])
