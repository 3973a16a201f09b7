"""Disc numbering, label parsing, projection, vertebral distribution and arc maps."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import centerline_from_points, straight_centerline
from spinal_bidsapp.geometry.discs import (
    DISC_NAMES,
    DiscPositions,
    arc_map_from_discs,
    compute_vertebral_distribution,
    discs_from_label_array,
    project_discs,
)


def test_disc_names_follow_sct_numbering() -> None:
    assert DISC_NAMES[1].startswith("skull-C1")
    assert DISC_NAMES[2] == "C1/C2"
    assert DISC_NAMES[3] == "C2/C3"
    assert DISC_NAMES[8] == "C7/T1"
    assert DISC_NAMES[20] == "T12/L1"
    assert DISC_NAMES[25] == "L5/S1"
    assert "PMG" in DISC_NAMES[49] and "PMJ" in DISC_NAMES[50] and "conus" in DISC_NAMES[60]


def test_labels_single_voxels_and_blob_centroids() -> None:
    lab = np.zeros((10, 10, 30), dtype=np.uint8)
    lab[4, 5, 25] = 3
    lab[4:6, 5, 10:12] = 4  # a 2x1x2 blob
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = [-2.0, 1.0, 3.0]
    discs = discs_from_label_array(lab, affine)
    assert sorted(discs) == [3, 4]
    assert np.allclose(discs[3], [0.0, 3.5, 53.0])
    assert np.allclose(discs[4], [0.25, 3.5, 24.0])


def test_unknown_label_values_are_listed() -> None:
    lab = np.zeros((5, 5, 20), dtype=np.int16)
    lab[2, 2, 3], lab[2, 2, 8], lab[2, 2, 12] = 3, 48, 77
    with pytest.raises(InputDataError, match=r"\[48, 77\]"):
        discs_from_label_array(lab, np.eye(4))


def test_duplicated_label_values_are_listed() -> None:
    lab = np.zeros((5, 5, 20), dtype=np.int16)
    lab[2, 2, 3] = lab[2, 2, 15] = 4
    lab[2, 2, 9] = 5
    with pytest.raises(InputDataError, match=r"\[4\]"):
        discs_from_label_array(lab, np.eye(4))


def test_empty_label_image_raises() -> None:
    with pytest.raises(InputDataError, match="empty"):
        discs_from_label_array(np.zeros((3, 3, 3)), np.eye(4))


def test_discs_out_of_anatomical_order_raise() -> None:
    cl = straight_centerline(np.zeros(3), 60.0)
    discs = {3: np.array([0, 0, -40.0]), 5: np.array([0, 0, -10.0]), 4: np.array([0, 0, -25.0])}
    with pytest.raises(InputDataError, match="anatomical order"):
        project_discs(discs, cl)


def test_projection_uses_the_normal_plane_on_a_curved_cord() -> None:
    theta = np.linspace(-0.5, 0.5, 101)
    pts = np.stack([60 * (1 - np.cos(theta)), np.zeros_like(theta), 60 * np.sin(theta)], axis=1)
    cl = centerline_from_points(pts, smooth_mm=0)
    # a posterior-tip label 6 mm behind the cord at theta = 0.2
    on_cord = np.array([60 * (1 - np.cos(0.2)), 0.0, 60 * np.sin(0.2)])
    pos = project_discs({4: on_cord + np.array([0, -6.0, 0])}, cl)
    assert pos.arc_mm[0] == pytest.approx(60 * (0.2 + 0.5), abs=1e-3)
    assert pos.offset_mm[0] == pytest.approx(6.0, abs=1e-3)


def test_vertebral_distribution_fraction_and_offsets() -> None:
    cl = straight_centerline(np.zeros(3), 100.0, step_mm=0.5)
    pos = DiscPositions(values=np.array([2, 3, 5]), arc_mm=np.array([90.0, 70.0, 30.0]),
                        offset_mm=np.zeros(3))
    dist = compute_vertebral_distribution(cl, pos)
    at = {float(s): i for i, s in enumerate(cl.arc_mm)}
    assert dist.upper_disc[at[95.0]] == 0 and dist.offset_mm[at[95.0]] == pytest.approx(-5.0)
    assert dist.upper_disc[at[80.0]] == 2 and dist.fraction[at[80.0]] == pytest.approx(0.5)
    # the gap (disc 4 missing) is one span from 3 to 5
    assert dist.upper_disc[at[40.0]] == 3 and dist.fraction[at[40.0]] == pytest.approx(0.75)
    assert dist.upper_disc[at[10.0]] == 5 and np.isnan(dist.fraction[at[10.0]])
    assert dist.offset_mm[at[10.0]] == pytest.approx(20.0)


def test_arc_map_matches_discs_by_value_not_by_rank() -> None:
    # input starts at disc 3, destination at disc 1: a rank-based match would shift a level
    src = DiscPositions(np.array([3, 4, 5]), np.array([60.0, 40.0, 20.0]), np.zeros(3))
    dst = DiscPositions(np.array([1, 2, 3, 4, 5, 6]),
                        np.array([200.0, 180.0, 160.0, 145.0, 130.0, 110.0]), np.zeros(6))
    amap = arc_map_from_discs(src, dst)
    assert np.allclose(amap.forward(src.arc_mm), [160.0, 145.0, 130.0])
    assert np.allclose(amap.inverse(np.array([160.0, 145.0, 130.0])), src.arc_mm)
    # fractions within a level, mm beyond the end discs
    assert amap.forward(np.array([50.0]))[0] == pytest.approx(152.5)
    assert amap.forward(np.array([70.0]))[0] == pytest.approx(170.0)
    assert amap.forward(np.array([5.0]))[0] == pytest.approx(115.0)


def test_arc_map_interpolates_across_a_gap() -> None:
    src = DiscPositions(np.array([3, 5]), np.array([60.0, 20.0]), np.zeros(2))
    dst = DiscPositions(np.array([3, 4, 5]), np.array([100.0, 90.0, 70.0]), np.zeros(3))
    amap = arc_map_from_discs(src, dst)
    assert np.allclose(amap.forward(np.array([60.0, 40.0, 20.0])), [100.0, 85.0, 70.0])


def test_arc_map_without_common_disc_raises() -> None:
    src = DiscPositions(np.array([3]), np.array([10.0]), np.zeros(1))
    dst = DiscPositions(np.array([7]), np.array([10.0]), np.zeros(1))
    with pytest.raises(InputDataError, match="no value in common"):
        arc_map_from_discs(src, dst)
