"""Group --contrasts: extra-contrast templates on the driving template's grid (#10 part 1).

Demo cohort with T1w (same grid as T2w) and T2*w (thick-slice axial slab) images; the PAM50
phantom cohort is in tests/group/test_phantom_contrasts.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from spinal_bidsapp.synth import generate_demo_cohort

pytestmark = pytest.mark.slow

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "2"]
PREFIX = "tpl-SpinalCord_res-01"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo cohort with T2w, T1w and T2*w images (and labels), participant level run on T2w."""
    root = tmp_path_factory.mktemp("multicontrast")
    generate_demo_cohort(root, n_subjects=3, seed=3, t1w=True, t2starw=True,
                         straight_reference=False)
    assert main([str(root / "bids"), str(root / "out"), "participant", "--contrast", "T2w",
                 "--skip-bids-validation", "--nprocs", "2"]) == 0
    return root


def _copy_cohort(cohort: Path, dest: Path) -> tuple[Path, Path]:
    shutil.copytree(cohort / "bids", dest / "bids")
    shutil.copytree(cohort / "out", dest / "out")
    return dest / "bids", dest / "out"


def _mask(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj) > 0


def _dice_on_slices(a: np.ndarray, b: np.ndarray, runs: list[list[int]]) -> float:
    """Cord Dice over the template slices listed as [first, last] runs."""
    slices = np.zeros(a.shape[2], bool)
    for first, last in runs:
        slices[first:last + 1] = True
    a, b = a[:, :, slices], b[:, :, slices]
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_t1w_template_shares_the_grid_and_cord_of_the_t2w_template(
        cohort: Path, tmp_path: Path) -> None:
    bids, out = _copy_cohort(cohort, tmp_path)
    assert main([str(bids), str(out), "group", *GROUP_ARGS, "--contrasts", "T2w", "T1w",
                 "-w", str(tmp_path / "work")]) == 0
    tpl = out / "tpl-SpinalCord"
    t2, t1 = (nib.load(str(tpl / f"{PREFIX}_{c}.nii.gz")) for c in ("T2w", "T1w"))
    discs = nib.load(str(tpl / f"{PREFIX}_desc-discs_dseg.nii.gz"))
    for image in (t1, discs):
        assert image.shape == t2.shape
        assert np.allclose(image.affine, t2.affine)
    assert (tpl / f"{PREFIX}_desc-sd_T1w.nii.gz").is_file()
    assert np.asarray(t1.dataobj).max() > 0
    a = _mask(tpl / f"{PREFIX}_label-SC_mask.nii.gz")
    b = _mask(tpl / f"{PREFIX}_label-SC_desc-T1w_mask.nii.gz")
    description = json.loads((tpl / "template_description.json").read_text())
    assert description["Contrasts"] == ["T2w", "T1w"]
    record = description["ContrastTemplates"]["T1w"]
    # T1w shares the T2w grid: it covers every slice where the T2w template has cord
    cord_slices = np.flatnonzero(a.any(axis=(0, 1)))
    assert record["DiceSlices"][0][0] <= cord_slices[0]
    assert record["DiceSlices"][-1][1] >= cord_slices[-1]
    dice = _dice_on_slices(a, b, record["DiceSlices"])
    assert dice >= 0.95
    assert record["CordMaskDice"] == pytest.approx(dice, abs=1e-3)
    assert record["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    assert record["DiscOffsetMm"] == 0.0
    info = (tpl / "sct" / "template" / "info_label.txt").read_text()
    assert "0, t1, SpinalCord_t1.nii.gz" in info and "1, t2, SpinalCord_t2.nii.gz" in info
    assert (tpl / "sct" / "template" / "SpinalCord_t1.nii.gz").is_file()
    assert "Contrast templates" in (out / "tpl-SpinalCord.html").read_text()
    assert (tpl / "figures" / "contrasts.png").is_file()


def test_a_subject_without_t1w_still_counts_for_t2w(cohort: Path, tmp_path: Path) -> None:
    bids, out = _copy_cohort(cohort, tmp_path)
    for path in [*bids.glob("sub-03/anat/sub-03_T1w*"),
                 *bids.glob("derivatives/labels/sub-03/anat/sub-03_T1w_*")]:
        path.unlink()
    # sub-01 keeps its T1w image but loses its manual T1w cord mask: registered with the T2w one
    (bids / "derivatives" / "labels" / "sub-01" / "anat" / "sub-01_T1w_label-SC_mask.nii.gz"
     ).unlink()
    assert main([str(bids), str(out), "group", *GROUP_ARGS, "--contrasts", "T2w", "T1w",
                 "-w", str(tmp_path / "work")]) == 0
    tpl = out / "tpl-SpinalCord"
    description = json.loads((tpl / "template_description.json").read_text())
    assert description["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    assert description["ContrastTemplates"]["T1w"]["Subjects"] == ["sub-01", "sub-02"]
    assert description["ContrastTemplates"]["T1w"]["CordMaskDice"] >= 0.95
    assert (tpl / f"{PREFIX}_T1w.nii.gz").is_file()


def test_t2starw_template_from_thick_axial_slabs(cohort: Path, tmp_path: Path) -> None:
    """T2*w stacks (0.5x0.5x5 mm, LAS, a C3/C4-C5/C6 slab) on the T2w template's grid."""
    bids, out = _copy_cohort(cohort, tmp_path)
    assert main([str(bids), str(out), "group", *GROUP_ARGS, "--contrasts", "T2w", "T2starw",
                 "-w", str(tmp_path / "work")]) == 0
    tpl = out / "tpl-SpinalCord"
    t2 = nib.load(str(tpl / f"{PREFIX}_T2w.nii.gz"))
    star = nib.load(str(tpl / f"{PREFIX}_T2starw.nii.gz"))
    assert star.shape == t2.shape and np.allclose(star.affine, t2.affine)
    assert (tpl / "sct" / "template" / "SpinalCord_t2s.nii.gz").is_file()
    record = json.loads((tpl / "template_description.json").read_text())["ContrastTemplates"]
    assert "T1w" not in record
    entry = record["T2starw"]
    assert entry["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    assert entry["DiscOffsetMm"] == 0.0
    # each subject's slab spans its discs 4 to 6: the template's slab must sit between the
    # template's discs 4 and 6 (1.5 mm slices; a T2*w slice is 5 mm thick)
    discs = np.asarray(nib.load(str(tpl / f"{PREFIX}_desc-discs_dseg.nii.gz")).dataobj)
    low, high = sorted(int(np.argwhere(discs == d)[0][2]) for d in (4, 6))
    runs = entry["DiceSlices"]
    first, last = runs[0][0], runs[-1][1]
    assert low - 2 <= first and last <= high + 2
    covered = sum(b - a + 1 for a, b in runs)
    assert covered >= 0.8 * (high - low + 1)
    assert entry["CoveredLengthMm"] == pytest.approx(covered * abs(t2.affine[2, 2]))
    a = _mask(tpl / f"{PREFIX}_label-SC_mask.nii.gz")
    b = _mask(tpl / f"{PREFIX}_label-SC_desc-T2starw_mask.nii.gz")
    mask_slices = np.flatnonzero(b.any(axis=(0, 1)))
    assert low - 3 <= mask_slices[0] and mask_slices[-1] <= high + 3
    seen = np.flatnonzero(np.asarray(star.dataobj).any(axis=(0, 1)))
    assert low - 6 <= seen[0] and seen[-1] <= high + 6
    dice = _dice_on_slices(a, b, runs)
    assert dice >= 0.95
    assert entry["CordMaskDice"] == pytest.approx(dice, abs=1e-3)
    # per subject, the registration stage kept has the best cord overlap of those tried
    for subject in entry["Subjects"]:
        stages = entry["SubjectRegistration"][subject]
        assert set(stages["CordDice"]) == {"scanner", "affine", "nonlinear"}
        assert stages["CordDice"][stages["Kept"]] == max(stages["CordDice"].values())
    page = (out / "tpl-SpinalCord.html").read_text()
    assert "cord-mask Dice, T2starw vs driving template" in page
    assert "Contrast templates" in page


def test_the_first_contrast_must_drive_the_template(cohort: Path, tmp_path: Path) -> None:
    code = main([str(cohort / "bids"), str(cohort / "out"), "group", *GROUP_ARGS,
                 "--contrasts", "T1w", "-w", str(tmp_path / "work")])
    assert code == 64
    assert not (tmp_path / "work" / "group" / "straight").exists()


def test_contrasts_with_the_minc_engine_stop_at_startup(
        cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MINC returns no per-subject warps to compose with: a one-line usage error, no work."""
    code = main([str(cohort / "bids"), str(tmp_path / "out"), "group", *GROUP_ARGS,
                 "--template-engine", "minc", "--contrasts", "T2w", "T1w",
                 "-w", str(tmp_path / "work")])
    assert code == 64
    message = [line for line in capsys.readouterr().err.splitlines()
               if "--template-engine builtin" in line]
    assert len(message) == 1 and "--contrasts T2w T1w" in message[0]
    assert not (tmp_path / "work" / "group").exists()


def test_auto_engine_with_contrasts_asks_for_the_builtin_loop(
        cohort: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Even where MINC is installed, ``auto`` asks for the engine that returns per-subject warps
    when there are extra contrasts (and stays ``auto`` without them)."""
    import spinal_bidsapp.engines as engines
    import spinal_bidsapp.group.build as build
    from spinal_bidsapp.cli.parser import parse_config

    asked: list[str] = []

    def record(kind: str, **_: object) -> engines.EngineChoice:
        asked.append(kind)
        return engines.EngineChoice(name="builtin", version=None, reason="test")

    monkeypatch.setattr(build, "resolve_template_engine", record)
    argv = [str(cohort / "bids"), str(cohort / "out"), "group", *GROUP_ARGS]
    for contrasts in (["T2w", "T1w"], ["T2w"]):
        build.template_builder(parse_config([*argv, "--contrasts", *contrasts]))
    build.template_builder(parse_config([*argv, "--template-engine", "builtin",
                                          "--contrasts", "T2w", "T2starw"]))
    assert asked == ["builtin", "auto", "builtin"]


@pytest.mark.parametrize("contrast", ["T1w", "T2starw"])
def test_real_contrasts_of_one_session_are_aligned_on_the_cord(contrast: str,
                                                               bids_real: Path) -> None:
    """sub-errsm30: T1w (1 mm RAS) and T2*w (axial 0.5x0.5x7.5 mm) onto its T2w (PSR); the
    nonlinear step after the affine one is kept, raises the cord overlap, moves the cord by a
    few mm at most and leaves everything outside its box around the cord to the affine."""
    from spinal_bidsapp.engines.builtin.contrast_registration import (
        NONLINEAR_BOX_MM,
        register_contrast,
    )
    from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
    from spinal_bidsapp.geometry.metrics import mask_dice
    from spinal_bidsapp.image import load_mask, load_volume, reorient

    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"
    anat = reorient(load_volume(bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz"))
    cord = reorient(load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz"))
    image = load_volume(bids_real / "sub-errsm30" / "anat" / f"sub-errsm30_{contrast}.nii.gz")
    mask = load_mask(labels / f"sub-errsm30_{contrast}_label-SC_mask.nii.gz")
    result = register_contrast(anat, cord, image, mask, seed=0)
    assert set(result.fields) == {"scanner", "affine", "nonlinear"}

    def overlap(pull: DisplacementField) -> float:
        moved = apply_field(mask.data.astype(np.float32), mask.affine, pull, order=1) > 0.5
        seen = apply_field(np.ones(mask.shape, np.float32), mask.affine, pull, order=1) > 0.99
        slices = seen.any(axis=(0, 1))
        return mask_dice(moved[:, :, slices], cord.data[:, :, slices] > 0)

    scanner, affine, nonlinear = (overlap(result.fields[k])
                                  for k in ("scanner", "affine", "nonlinear"))
    assert not result.fields["scanner"].data.any()
    assert affine >= max(0.9, scanner)
    assert result.kept == "nonlinear"
    assert nonlinear == pytest.approx(result.dice["nonlinear"], abs=1e-6)
    assert nonlinear > affine
    step = np.linalg.norm(result.field.data - result.fields["affine"].data, axis=-1)
    assert step.max() <= 3.0
    # outside the box around the driving cord, the field is the affine one
    index = np.argwhere(cord.data > 0)
    pad = int(np.ceil(NONLINEAR_BOX_MM)) + 1  # 1 mm voxels
    inside = np.zeros(step.shape, bool)
    inside[tuple(slice(max(a - pad, 0), b + pad + 1)
                 for a, b in zip(index.min(axis=0), index.max(axis=0), strict=True))] = True
    assert step[~inside].max() < 1e-3
