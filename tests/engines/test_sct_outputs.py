"""Reading real SCT outputs (shared/data/sct-reference, sub-errsm30) into our conventions."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.engines.sct.outputs import (
    check_spine_levels,
    disc_voxels_from_levels,
    parse_sct_ranges,
    read_morphometrics_csv,
    read_rootlet_levels,
    spine_labels_from_totalspineseg,
    superior_axis,
    write_discs_from_labeled_segmentation,
)
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.image import load_mask


@pytest.fixture(scope="module")
def reference(data_dir: Path) -> Path:
    folder = data_dir / "sct-reference"
    if not folder.is_dir():
        pytest.skip(f"{folder} absent")
    return folder


def _voxels(path: Path) -> dict[int, tuple[int, ...]]:
    data = load_mask(path).data
    return {int(data[tuple(ijk)]): tuple(int(v) for v in ijk) for ijk in np.argwhere(data)}


def test_discs_from_labeled_segmentation_sit_on_the_manual_disc_voxels(
        reference: Path, data_dir: Path, tmp_path: Path) -> None:
    """The discs land on the manual disc voxels, top to bottom. Their values are SCT's: the
    labeled segmentation is kept as SCT wrote it, one level high (levels 2..5 where the manual
    discs, C3/C4 to C5/C6, bound levels 3..6)."""
    labeled = reference / "sub-errsm30_T2w_seg-manual_labeled.nii.gz"
    result = write_discs_from_labeled_segmentation(labeled, tmp_path / "discs.nii.gz")
    manual = _voxels(data_dir / "bids-real" / "derivatives" / "labels" / "sub-errsm30" / "anat"
                     / "sub-errsm30_T2w_labels-disc.nii.gz")
    ours = _voxels(result.discs)
    assert sorted(ours) == [3, 4, 5]  # levels 2..5 -> discs between them
    assert sorted(manual) == [4, 5, 6]
    assert [ours[v] for v in sorted(ours)] == [manual[v] for v in sorted(manual)]
    assert np.allclose(load_mask(result.discs).affine, load_mask(labeled).affine)


def test_disc_sits_between_the_levels_on_a_reversed_superior_axis() -> None:
    levels = np.zeros((5, 5, 40), dtype=np.int16)
    levels[2, 2, 0:10] = 3   # index 0 is superior because the affine flips z
    levels[2, 3, 10:25] = 4
    levels[2, 2, 25:40] = 6  # level 5 missing: no disc 5 or 6
    affine = np.diag([1.0, 1.0, -1.0, 1.0])
    assert superior_axis(affine) == (2, -1)
    # midpoint of slices 9 (bottom of 3) and 10 (top of 4) rounds half to even: slice 10
    assert disc_voxels_from_levels(levels, affine) == {4: (2, 3, 10)}


def test_labeled_segmentation_with_one_level_has_no_disc(tmp_path: Path) -> None:
    path = tmp_path / "one_level.nii.gz"
    data = np.zeros((4, 4, 8), dtype=np.int16)
    data[1, 1, 2:6] = 3
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(path))
    with pytest.raises(InputDataError, match="no two consecutive"):
        write_discs_from_labeled_segmentation(path, tmp_path / "discs.nii.gz")


def test_rootlet_segmentation_gives_spinal_levels_top_first(reference: Path) -> None:
    levels = read_rootlet_levels(reference / "sub-errsm30_T2w_rootlets-deepseg.nii.gz")
    assert [e.level for e in levels] == [3, 4, 5, 6]
    centres = [e.centre_mm[2] for e in levels]
    assert centres == sorted(centres, reverse=True)
    for extent in levels:
        assert extent.inferior_mm <= extent.centre_mm[2] <= extent.superior_mm
        assert extent.voxels > 0
    manual = read_rootlet_levels(reference / "sub-errsm30_T2w_rootlets-manual.nii.gz")
    assert [e.level for e in manual] == [5, 6, 7]
    by_level = {e.level: e for e in levels}
    # the same spinal level lands at a similar height in the automatic and manual masks
    assert abs(by_level[5].centre_mm[2] - manual[0].centre_mm[2]) < 40


@pytest.mark.parametrize(("text", "expected"), [
    ("", ()), ("4", (4,)), ("2:3", (2, 3)), ("1:3;5", (1, 2, 3, 5)), ("165:167", (165, 166, 167)),
])
def test_parse_sct_ranges(text: str, expected: tuple[int, ...]) -> None:
    assert parse_sct_ranges(text) == expected


# Column layout of SCT 7.3 aggregate_slicewise.save_as_csv (checked against the CSV cached by
# SCT's own CI, testing/batch_processing/cached_results/t2/csa_c2c3.csv); values are ours.
SCT_73_HEADER = (
    "Timestamp,SCT Version,Filename,Slice (I->S),VertLevel,DistancePMJ,MEAN(area),STD(area),"
    "MEAN(angle_AP),STD(angle_AP),MEAN(angle_RL),STD(angle_RL),MEAN(diameter_AP),"
    "STD(diameter_AP),MEAN(diameter_AP_ellipse),STD(diameter_AP_ellipse),MEAN(diameter_RL),"
    "STD(diameter_RL),MEAN(eccentricity),STD(eccentricity),MEAN(orientation),STD(orientation),"
    "MEAN(solidity),STD(solidity),SUM(length)"
)


def test_morphometrics_csv_per_level(tmp_path: Path) -> None:
    rows = [
        '"2026-01-01 10:00:00","7.3","/w/seg.nii.gz","30:47","3","",70.5,2.5,1.0,0.5,2.0,0.4,'
        "8.0,0.2,8.1,0.2,11.5,0.3,0.7,0.02,0.3,1.5,0.96,0.01,18.2",
        '"2026-01-01 10:00:00","7.3","/w/seg.nii.gz","12:29","4","",nan,,1.0,0.5,2.0,0.4,'
        "8.0,0.2,8.1,0.2,11.5,0.3,0.7,0.02,0.3,1.5,0.96,0.01,18.0",
    ]
    path = tmp_path / "csa.csv"
    path.write_text("\n".join([SCT_73_HEADER, *rows]) + "\n")
    parsed = read_morphometrics_csv(path)
    assert [r.vertebral_levels for r in parsed] == [(3,), (4,)]
    first = parsed[0]
    assert first.slices == tuple(range(30, 48))
    assert first.area_mm2 == 70.5 and first.area_std_mm2 == 2.5
    assert first.diameter_ap_mm == 8.0 and first.diameter_rl_mm == 11.5
    assert first.angle_ap_deg == 1.0 and first.angle_rl_deg == 2.0
    assert first.length_mm == 18.2 and first.sct_version == "7.3"
    assert parsed[1].area_mm2 is None and parsed[1].area_std_mm2 is None


def test_morphometrics_csv_with_fewer_columns(tmp_path: Path) -> None:
    path = tmp_path / "csa.csv"
    path.write_text("Filename,Slice (I->S),VertLevel,MEAN(area),STD(area)\n"
                    "seg.nii.gz,145:168,4,73.3,2.2\nseg.nii.gz,30,,38.8,0.0\n")
    parsed = read_morphometrics_csv(path)
    assert parsed[0].area_mm2 == 73.3 and parsed[0].length_mm is None
    assert parsed[1].slices == (30,) and parsed[1].vertebral_levels == ()
    assert parsed[1].sct_version is None


def test_non_sct_csv_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(InputDataError, match="Slice"):
        read_morphometrics_csv(path)


# ----------------------------------------------------------------- TotalSpineSeg and the check


def _spine(levels: list[int], *, height: int = 10, gap: int = 2) -> np.ndarray:
    """Vertebral bodies stacked from the top (high z) down, SCT numbering, on a 1 mm grid."""
    shape_z = len(levels) * (height + gap) + 2
    vertebrae = np.zeros((6, 6, shape_z), np.uint8)
    top = shape_z - 1
    for level in levels:
        vertebrae[1:5, 1:5, top - height + 1:top + 1] = level
        top -= height + gap
    return vertebrae


def _disc_points(vertebrae: np.ndarray) -> dict[int, np.ndarray]:
    """A disc in each gap, between vertebra N-1 (above) and N (below)."""
    points = {}
    for value in np.unique(vertebrae[vertebrae > 0]):
        top = np.argwhere(vertebrae == value)[:, 2].max()
        points[int(value)] = np.array([3.0, 3.0, top + 1.5])
    return points


def test_totalspineseg_labels_map_to_sct_numbering() -> None:
    tss = np.array([[[11, 17, 21, 32, 41, 45, 50, 63, 67, 71, 82, 91, 95, 100, 1, 2]]])
    spine = spine_labels_from_totalspineseg(tss)
    assert spine.vertebrae.ravel()[:7].tolist() == [1, 7, 8, 19, 20, 24, 25]
    assert spine.disc_regions.ravel()[7:14].tolist() == [3, 7, 8, 19, 20, 24, 25]
    assert spine.canal.ravel().tolist() == [False] * 14 + [True, True]
    assert spine.unnumbered == ()


def test_a_consistent_spine_passes_the_check() -> None:
    vertebrae = _spine([3, 4, 5, 6])
    check = check_spine_levels(vertebrae, _disc_points(vertebrae), np.eye(4))
    assert check.consistent and check.vertebrae == (3, 4, 5, 6) and check.discs == (3, 4, 5, 6)


def test_the_check_finds_missing_duplicated_and_misplaced_levels() -> None:
    vertebrae = _spine([3, 4, 6, 7])  # C5 missing
    points = _disc_points(vertebrae)
    del points[7]  # its disc too
    points[4], points[3] = points[3], points[4]  # two discs swapped
    vertebrae[1:5, 1:5, 0:1] = 3  # a second, large piece of C3 at the bottom
    vertebrae[1:5, 1:5, 1:2] = 3
    problems = check_spine_levels(vertebrae, points, np.eye(4)).problems
    assert "missing C5" in problems
    assert "missing disc C6/C7" in problems
    assert "C3 labelled at 2 separate places" in problems
    assert "discs C2/C3 and C3/C4 out of order" in problems
    assert any(p.startswith("disc C3/C4 is not between C3 and C4") for p in problems)


def test_a_speck_of_a_vertebra_is_not_a_duplicate() -> None:
    vertebrae = _spine([3, 4])
    vertebrae[0, 0, 0] = 3
    assert check_spine_levels(vertebrae, _disc_points(vertebrae), np.eye(4)).consistent


def test_transitional_vertebrae_are_reported() -> None:
    spine = spine_labels_from_totalspineseg(np.array([[[45, 46, 50]]]))
    assert spine.unnumbered == ("L6",)
    check = check_spine_levels(spine.vertebrae, {}, np.eye(4), unnumbered=spine.unnumbered)
    assert check.problems[0].startswith("L6 present")
