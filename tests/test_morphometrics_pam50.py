"""CSA in PAM50 dimensions (SCT's -normalize-PAM50 rule) and the normative database reader."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.engines.sct.outputs import pam50_csa_from_sct_csv, read_morphometrics_csv
from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.participant.morphometrics_pam50 import (
    Pam50LevelCsa,
    compare_to_normative,
    find_normative_database,
    load_normative_csa,
    pam50_slice_levels,
    read_pam50_slice_levels,
    resample_to_pam50,
    summarise_pam50_levels,
)

# Header and cell style of the real normative CSVs, checked against
# spinalcordtoolbox/PAM50-normalized-metrics r20250321 spinal_cord/sub-amu01_T2w_PAM50.csv (the
# release SCT 7.3 downloads): one row per PAM50 slice (`Slice (I->S)` 40..984), `VertLevel` always
# filled, metric cells empty outside the subject's coverage; files `sub-<site><nn>_T2w_PAM50.csv`
# in `spinal_cord/`, next to a top-level participants.tsv.
HEADER = ("Timestamp,SCT Version,Filename,Slice (I->S),VertLevel,DistancePMJ,MEAN(area),STD(area),"
          "MEAN(angle_AP),STD(angle_AP),MEAN(angle_RL),STD(angle_RL),MEAN(diameter_AP),"
          "STD(diameter_AP),MEAN(diameter_RL),STD(diameter_RL),MEAN(eccentricity),"
          "STD(eccentricity),MEAN(orientation),STD(orientation),MEAN(solidity),STD(solidity),"
          "SUM(length)")


def write_sct_pam50_csv(path: Path, slices: list[int], levels: list[int],
                        areas: list[float | None]) -> Path:
    lines = [HEADER]
    for z, level, area in zip(slices, levels, areas, strict=True):
        cell = "" if area is None else repr(area)
        lines.append(f"2025-01-30 15:37:23,git-master-310834f5*,sub/anat/seg.nii.gz,{z},{level},,"
                     f"{cell}" + "," * 16)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def levels_i_to_s(lengths: list[int], top: int) -> np.ndarray:
    """Per-slice levels, inferior slice first, for levels ``top, top+1, ...`` of these lengths
    (given top level first)."""
    return np.concatenate([np.full(n, top + i) for i, n in enumerate(lengths)])[::-1]


toy_pam = levels_i_to_s([10] * 5, top=2)  # a toy template: C2..C6, 10 slices each


def test_constant_csa_per_level_maps_to_the_same_constants():
    subject = levels_i_to_s([7, 13, 17, 9, 12], top=2)
    csa = {2: 80.0, 3: 75.0, 4: 70.0, 5: 72.0, 6: 65.0}
    out = resample_to_pam50(subject, np.array([csa[int(v)] for v in subject]), toy_pam)
    for level, value in csa.items():
        got = out[toy_pam == level]
        assert np.all(np.isnan(got) | (got == value))
        assert np.isfinite(got).any()
    for level in (3, 4, 5):  # complete inner levels fill their PAM50 level
        assert np.all(out[toy_pam == level] == csa[level])


def test_levels_twice_as_long_map_a_ramp_exactly():
    subject = levels_i_to_s([20] * 5, top=2)
    ramp = np.concatenate([np.linspace(0.0, 9.0, 20) * 2.0 + 50.0] * 5)
    out = resample_to_pam50(subject, ramp, toy_pam)
    for level in (3, 4, 5):
        np.testing.assert_allclose(out[toy_pam == level], np.arange(10) * 2.0 + 50.0)
    # end levels: scale 0.5 -> 10 PAM50 points spread over [0, 10], the subject's 20 over the same
    x_end = np.linspace(0.0, 10.0, 10)
    subject_x = np.linspace(0.0, 10.0, 20)
    expected = np.interp(x_end, subject_x, np.linspace(0.0, 9.0, 20) * 2.0 + 50.0)
    np.testing.assert_allclose(out[toy_pam == 2], expected)
    np.testing.assert_allclose(out[toy_pam == 6], expected)


def test_short_end_levels_fill_only_the_slices_next_to_the_inner_levels():
    # scale 10/20 = 0.5 from the inner levels: 6 subject slices -> int(3.0) = 3 PAM50 slices
    subject = levels_i_to_s([6, 20, 20, 20, 6], top=2)
    out = resample_to_pam50(subject, np.full(subject.size, 60.0), toy_pam)
    top = out[toy_pam == 2]  # inferior slice first: the top level keeps its inferior slices
    bottom = out[toy_pam == 6]  # the bottom level keeps its superior slices
    assert np.isfinite(top[:3]).all() and np.isnan(top[3:]).all()
    assert np.isnan(bottom[:-3]).all() and np.isfinite(bottom[-3:]).all()


def test_long_end_levels_are_cropped_at_their_outer_end():
    # scale 0.5: 30 subject slices -> 15 PAM50 points, 5 more than the PAM50 level holds
    subject = levels_i_to_s([30, 20, 20, 20, 30], top=2)
    values = np.zeros(subject.size)
    values[subject == 2] = np.arange(30.0)
    values[subject == 6] = np.arange(30.0)
    out = resample_to_pam50(subject, values, toy_pam)
    full = np.interp(np.linspace(0, 15, 15), np.linspace(0, 15, 30), np.arange(30.0))
    np.testing.assert_allclose(out[toy_pam == 2], full[:10])
    np.testing.assert_allclose(out[toy_pam == 6], full[5:])


def test_subject_slices_outside_levels_and_extra_labels_are_ignored():
    core = levels_i_to_s([10] * 5, top=2)
    subject = np.concatenate([[0, 0, 50], core, [49, 0]])  # 49/50: not vertebral levels (SCT)
    values = np.concatenate([[1e6] * 3, np.full(core.size, 70.0), [1e6] * 2])
    out = resample_to_pam50(subject, values, toy_pam)
    assert np.all(out == 70.0)


def test_fewer_than_three_levels_cannot_be_scaled():
    subject = levels_i_to_s([10, 10], top=3)
    with pytest.raises(InputDataError, match="three vertebral levels"):
        resample_to_pam50(subject, np.ones(subject.size), toy_pam)


def test_slice_level_is_the_rounded_mean_label():
    labels = np.zeros((3, 1, 4), int)
    labels[:, 0, 0] = [2, 2, 3]  # mean 2.33 -> 2
    labels[:, 0, 1] = [3, 3, 4]  # 3.33 -> 3
    labels[:, 0, 2] = [0, 0, 0]
    labels[:2, 0, 3] = [4, 5]  # 4.5 -> 4 (half to even, like SCT's np.round)
    assert pam50_slice_levels(labels, np.eye(4)).tolist() == [2, 3, 0, 4]
    flipped = np.diag([1.0, 1.0, -1.0, 1.0])  # superior = decreasing k: order reversed
    assert pam50_slice_levels(labels, flipped).tolist() == [4, 0, 3, 2]


def test_real_pam50_slice_levels_are_ordered_and_complete(data_dir):
    path = data_dir / "PAM50" / "PAM50_levels.nii.gz"
    levels = read_pam50_slice_levels(path)
    assert levels.size == 991
    labelled = levels[levels > 0]
    assert set(labelled.tolist()) == set(range(1, 21))  # C1..L1, none missing
    assert np.all(np.diff(labelled) <= 0), "levels must decrease from inferior to superior"
    first, last = np.flatnonzero(levels)[[0, -1]]
    assert np.all(levels[first:last + 1] > 0), "no unlabelled slice between labelled ones"
    # the same template stored with the superior axis first and reversed gives the same answer
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    moved = np.moveaxis(data, 2, 0)[::-1]
    affine = img.affine[:, [2, 0, 1, 3]].copy()
    affine[:, 3] = img.affine @ np.array([0, 0, data.shape[2] - 1, 1])
    affine[:, 0] *= -1
    assert np.array_equal(pam50_slice_levels(moved, affine), levels)


def test_real_pam50_levels_resample_a_short_subject(data_dir):
    pam = read_pam50_slice_levels(data_dir / "PAM50" / "PAM50_levels.nii.gz")
    subject = levels_i_to_s([12, 30, 31, 29, 15], top=2)  # C2 (cut) .. C6 (cut), 1 mm slices
    out = resample_to_pam50(subject, np.full(subject.size, 70.0), pam)
    covered = np.unique(pam[np.isfinite(out)])
    assert covered.tolist() == [2, 3, 4, 5, 6]
    for level in (3, 4, 5):
        assert np.all(out[pam == level] == 70.0)


def test_summary_averages_the_defined_slices_of_each_level():
    values = np.array([np.nan, 60.0, 64.0, 80.0, 90.0, np.nan])
    levels = np.array([0, 3, 3, 2, 2, 1])
    assert summarise_pam50_levels(values, levels) == [
        Pam50LevelCsa(level=2, name="C2", n_slices=2, csa_mean_mm2=85.0),
        Pam50LevelCsa(level=3, name="C3", n_slices=2, csa_mean_mm2=62.0)]


def test_sct_csv_and_builtin_resampling_give_the_same_array(tmp_path):
    subject = levels_i_to_s([6, 20, 20, 20, 6], top=2)
    builtin = resample_to_pam50(subject, np.linspace(60, 80, subject.size), toy_pam)
    areas = [None if math.isnan(v) else float(v) for v in builtin]
    csv = write_sct_pam50_csv(tmp_path / "sub-01_T2w_PAM50.csv", list(range(toy_pam.size)),
                              toy_pam.tolist(), areas)
    from_sct = pam50_csa_from_sct_csv(read_morphometrics_csv(csv), toy_pam.size)
    np.testing.assert_array_equal(from_sct, builtin)
    assert summarise_pam50_levels(from_sct, toy_pam) == summarise_pam50_levels(builtin, toy_pam)


def test_sct_csv_must_be_per_slice_inside_the_template(tmp_path):
    csv = write_sct_pam50_csv(tmp_path / "a.csv", [5], [2], [70.0])
    with pytest.raises(InputDataError, match="PAM50 slice"):
        pam50_csa_from_sct_csv(read_morphometrics_csv(csv), 5)
    text = (tmp_path / "a.csv").read_text().replace(",5,2,", ",3:4,2,")
    (tmp_path / "b.csv").write_text(text)
    with pytest.raises(InputDataError, match="PAM50 slice"):
        pam50_csa_from_sct_csv(read_morphometrics_csv(tmp_path / "b.csv"), 10)


def write_normative_folder(folder: Path) -> Path:
    # PAM50 slices 0..5: level 3 on 0-2, level 2 on 3-5
    slices, levels = list(range(6)), [3, 3, 3, 2, 2, 2]
    write_sct_pam50_csv(folder / "sub-amu01_T2w_PAM50.csv", slices, levels,
                        [70.0, 72.0, 74.0, 80.0, 82.0, None])  # C3 72, C2 81
    write_sct_pam50_csv(folder / "sub-amu02_T2w_PAM50.csv", slices, levels,
                        [60.0, 60.0, 60.0, 70.0, 70.0, 70.0])  # C3 60, C2 70
    write_sct_pam50_csv(folder / "sub-cmrra01_T2w_PAM50.csv", slices, levels,
                        [66.0, 66.0, 66.0, None, None, None])  # C3 66, no C2
    write_sct_pam50_csv(folder / "sub-amu01_T1w_PAM50.csv", slices, levels, [1.0] * 6)
    (folder.parent / "participants.tsv").write_text("participant_id\tsex\tage\n")
    return folder


def test_normative_reader_averages_subject_level_means(tmp_path):
    folder = write_normative_folder(tmp_path / "spinal_cord")
    norm = load_normative_csa(folder, contrast="T2w")
    assert norm.subjects == ("sub-amu01", "sub-amu02", "sub-cmrra01")
    c2, c3 = norm.level(2), norm.level(3)
    assert c2 is not None and c3 is not None and norm.level(4) is None
    assert (c2.n_subjects, c3.n_subjects) == (2, 3)
    assert c2.mean_mm2 == pytest.approx(75.5) and c2.sd_mm2 == pytest.approx(np.std([81, 70],
                                                                                     ddof=1))
    assert c3.mean_mm2 == pytest.approx(66.0) and c3.sd_mm2 == pytest.approx(6.0)
    assert load_normative_csa(folder).level(3).n_subjects == 4  # T1w file counted without filter
    with pytest.raises(MissingInputError, match="T2starw"):
        load_normative_csa(folder, contrast="T2starw")


def test_normative_database_is_found_where_sct_installs_it(tmp_path):
    root = tmp_path / "sct" / "data" / "PAM50_normalized_metrics"
    write_sct_pam50_csv(root / "canal" / "sub-amu01_T2w_PAM50.csv", [0], [2], [200.0])
    write_normative_folder(root / "spinal_cord")
    assert find_normative_database(tmp_path / "sct") == root / "spinal_cord"
    assert find_normative_database(tmp_path / "elsewhere") is None
    assert find_normative_database(None) is None


def test_comparison_reports_percent_and_z_score(tmp_path):
    norm = load_normative_csa(write_normative_folder(tmp_path / "db"), contrast="T2w")
    subject = [Pam50LevelCsa(level=2, name="C2", n_slices=3, csa_mean_mm2=60.4),
               Pam50LevelCsa(level=3, name="C3", n_slices=3, csa_mean_mm2=72.0),
               Pam50LevelCsa(level=7, name="C7", n_slices=3, csa_mean_mm2=50.0)]
    rows = compare_to_normative(subject, norm)
    assert [r.level for r in rows] == [2, 3]  # no norms for C7
    c2, c3 = rows
    assert c2.percent_of_normative == pytest.approx(80.0)
    assert c2.z_score == pytest.approx((60.4 - 75.5) / np.std([81, 70], ddof=1))
    assert c3.z_score == pytest.approx(1.0) and c3.n_subjects == 3
