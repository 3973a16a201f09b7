"""Pure QC view preparation: slice choice, outlines, crop boxes in mm, disc names."""

from __future__ import annotations

import numpy as np
import pytest
from report_phantom import DISCS, SHAPE, ZOOMS_MM, Phantom

from spinal_bidsapp.image import Volume, reorient, vox_to_mm
from spinal_bidsapp.reports.views import (
    BoxMM,
    axial_crop,
    checkerboard,
    choose_axial_slices,
    disc_name,
    find_disc_points,
    intensity_window,
    make_panel,
    midcord_index,
    outline_segments,
    spread_labels,
    vertebra_bands,
    vertebra_name,
)


@pytest.mark.parametrize(("value", "name"), [
    (1, "C1"), (2, "C1/C2"), (3, "C2/C3"), (7, "C6/C7"), (8, "C7/T1"), (9, "T1/T2"),
    (19, "T11/T12"), (20, "T12/L1"), (24, "L4/L5"), (25, "L5/S1"), (30, "S5/Co"),
    (49, "PMG"), (50, "PMJ"), (60, "conus"), (99, "label 99"),
])
def test_disc_names_follow_sct_numbering(value: int, name: str) -> None:
    assert disc_name(value) == name


def test_vertebra_name_rejects_values_outside_the_spine() -> None:
    assert [vertebra_name(v) for v in (1, 7, 8, 19, 20, 24, 25)] == \
        ["C1", "C7", "T1", "T12", "L1", "L5", "S1"]
    for bad in (0, 31, 49):
        with pytest.raises(ValueError, match="no vertebra"):
            vertebra_name(bad)


def test_vertebra_bands_name_the_vertebra_between_consecutive_discs() -> None:
    # disc 2 (C1/C2) and disc 3 (C2/C3) bound vertebra C2; disc 8 is C7/T1
    bands = vertebra_bands([(8, 0.0), (3, 100.0), (2, 120.0), (4, 80.0), (50, 150.0)])
    assert [(b.name, b.lo_mm, b.hi_mm) for b in bands] == [
        ("C2", 100.0, 120.0), ("C3", 80.0, 100.0), ("C4-C7", 0.0, 80.0)]


def test_midcord_index_is_the_cord_r_index(phantom: Phantom) -> None:
    ras_mask = reorient(phantom.mask)
    expected = round(16.0 / ZOOMS_MM[0])
    assert midcord_index(ras_mask, ras_mask.shape) == expected
    empty = ras_mask.with_data(np.zeros_like(ras_mask.data))
    assert midcord_index(empty, SHAPE) == SHAPE[0] // 2
    assert midcord_index(None, SHAPE) == SHAPE[0] // 2


def test_axial_slices_spread_over_the_cord_superior_first() -> None:
    data = np.zeros((5, 5, 100), np.uint8)
    data[2, 2, 10:90] = 1
    data[2, 2, 48:53] = 0  # a gap in the middle of the cord
    slices = choose_axial_slices(Volume(data, np.eye(4)), 5)
    assert slices == sorted(slices, reverse=True)
    assert len(slices) == 5
    assert all(data[2, 2, k] for k in slices), "every chosen slice must contain cord"
    assert 10 <= min(slices) < 20 and 80 <= max(slices) < 90
    gaps = np.diff(sorted(slices))
    assert gaps.min() >= 12, f"slices bunched together: {slices}"
    assert choose_axial_slices(Volume(np.zeros((3, 3, 9)), np.eye(4)), 4) == []
    with pytest.raises(ValueError):
        choose_axial_slices(Volume(data, np.eye(4)), 0)


def _reference_outline_length(mask: np.ndarray, pixel_mm: tuple[float, float]) -> float:
    """Plain loop: every mask pixel edge facing a non-mask pixel (or the border)."""
    rows, cols = mask.shape
    total = 0.0
    for r in range(rows):
        for c in range(cols):
            if not mask[r, c]:
                continue
            for dr, dc, length in ((-1, 0, pixel_mm[1]), (1, 0, pixel_mm[1]),
                                   (0, -1, pixel_mm[0]), (0, 1, pixel_mm[0])):
                rr, cc = r + dr, c + dc
                if not (0 <= rr < rows and 0 <= cc < cols and mask[rr, cc]):
                    total += length
    return total


def test_outline_matches_a_plain_reference_on_random_masks() -> None:
    rng = np.random.default_rng(42)
    for _ in range(20):
        mask = rng.random((rng.integers(1, 12), rng.integers(1, 12))) > 0.5
        pixel_mm = (float(rng.uniform(0.3, 3)), float(rng.uniform(0.3, 3)))
        segments = outline_segments(mask, pixel_mm)
        lengths = np.linalg.norm(segments[:, 1] - segments[:, 0], axis=1)
        assert lengths.sum() == pytest.approx(_reference_outline_length(mask, pixel_mm))


def test_outline_of_a_block_traces_its_pixel_edges_in_mm() -> None:
    mask = np.zeros((4, 5), bool)
    mask[1:3, 1:4] = True  # rows 1-2, cols 1-3
    segments = outline_segments(mask, (2.0, 0.5))  # pixels 2 mm tall, 0.5 mm wide
    assert len(segments) == 2 * (2 + 3)
    xs, ys = segments[..., 0], segments[..., 1]
    # height 8 mm: row 0 spans y 6..8, so rows 1-2 span y 2..6; cols 1-3 span x 0.5..2
    assert xs.min() == pytest.approx(0.5) and xs.max() == pytest.approx(2.0)
    assert ys.min() == pytest.approx(2.0) and ys.max() == pytest.approx(6.0)


def test_sagittal_panel_has_true_mm_extent_anterior_left_superior_up(phantom: Phantom) -> None:
    ras = reorient(phantom.image)
    data = np.zeros(ras.shape, np.float32)
    data[20, -1, 5] = 7.0  # most anterior voxel, low
    data[20, 3, -1] = 9.0  # posterior, most superior
    panel = make_panel(ras.with_data(data), None, axis=0, index=20)
    assert panel.letters == ("A", "P", "S", "I")
    assert panel.extent == pytest.approx((0, SHAPE[1] * ZOOMS_MM[1], 0, SHAPE[2] * ZOOMS_MM[2]))
    assert panel.image.shape == (SHAPE[2], SHAPE[1])
    assert panel.image[:, 0].max() == 7.0, "anterior must be the left column"
    assert panel.image[0, :].max() == 9.0, "superior must be the top row"


def test_axial_panel_is_radiological_anterior_up(phantom: Phantom) -> None:
    ras = reorient(phantom.image)
    data = np.zeros(ras.shape, np.float32)
    data[-1, 10, 7] = 5.0  # patient right-most
    data[3, -1, 7] = 6.0  # anterior-most
    panel = make_panel(ras.with_data(data), None, axis=2, index=7)
    assert panel.letters == ("R", "L", "A", "P")
    assert panel.image[:, 0].max() == 5.0
    assert panel.image[0, :].max() == 6.0


def test_vox_to_xy_lands_on_the_pixel_showing_that_voxel(phantom: Phantom) -> None:
    ras_image, ras_mask = reorient(phantom.image), reorient(phantom.mask)
    index = midcord_index(ras_mask, ras_mask.shape)
    panel = make_panel(ras_image, ras_mask, axis=0, index=index)
    assert panel.mask is not None
    ijk = np.argwhere(ras_mask.data[index:index + 1] > 0) + np.array([index, 0, 0])
    xy = panel.vox_to_xy(ijk)
    height = panel.extent[3]
    cols = np.floor(xy[:, 0] / panel.pixel_mm[1]).astype(int)
    rows = np.floor((height - xy[:, 1]) / panel.pixel_mm[0]).astype(int)
    assert panel.mask[rows, cols].all()


def test_crop_box_in_mm_projects_onto_the_expected_rectangle(phantom: Phantom) -> None:
    ras = reorient(phantom.image)
    start, stop = (5, 10, 4), (30, 40, 30)
    box = BoxMM.from_voxel_bounds(ras.affine, start, stop)
    assert box.lo == pytest.approx(np.array(start) * ZOOMS_MM - np.array(ZOOMS_MM) / 2)
    assert box.hi == pytest.approx(np.array(stop) * ZOOMS_MM - np.array(ZOOMS_MM) / 2)
    panel = make_panel(ras, None, axis=0, index=20)
    x, y, width, height = panel.box_to_rect(box, ras.affine)
    # anterior on the left: the box's anterior edge (A index 40) sits 10 columns from the left
    assert x == pytest.approx((SHAPE[1] - 40) * ZOOMS_MM[1])
    assert width == pytest.approx(30 * ZOOMS_MM[1])
    assert y == pytest.approx(4 * ZOOMS_MM[2])
    assert height == pytest.approx(26 * ZOOMS_MM[2])


def test_crop_box_from_the_storage_grid_matches_the_ras_grid(phantom: Phantom) -> None:
    """A crop expressed on the stored (P I L) grid is the same world box."""
    ijk = np.argwhere(phantom.mask.data > 0)
    box = BoxMM.from_voxel_bounds(phantom.mask.affine, ijk.min(0), ijk.max(0) + 1)
    ras = reorient(phantom.mask)
    ras_ijk = np.argwhere(ras.data > 0)
    ras_box = BoxMM.from_voxel_bounds(ras.affine, ras_ijk.min(0), ras_ijk.max(0) + 1)
    assert box.lo == pytest.approx(ras_box.lo) and box.hi == pytest.approx(ras_box.hi)


def test_axial_crop_is_centred_on_the_cord(phantom: Phantom) -> None:
    ras_image, ras_mask = reorient(phantom.image), reorient(phantom.mask)
    k = 30
    rows, cols = axial_crop(ras_mask, k, half_width_mm=6.0)
    panel = make_panel(ras_image, ras_mask, axis=2, index=k, row_range=rows, col_range=cols)
    assert panel.mask is not None
    r, c = (np.array(panel.mask.shape) - 1) // 2
    assert panel.mask[r, c], "crop centre must be on the cord"
    assert panel.extent[1] == pytest.approx(panel.extent[3], rel=0.15), "square in mm"
    assert panel.extent[1] == pytest.approx(12.0, abs=2 * ZOOMS_MM[0])


def test_axial_crop_pads_past_the_volume_edge() -> None:
    data = np.zeros((10, 10, 3), np.uint8)
    data[0, 0, 1] = 1
    mask = Volume(data, np.eye(4))
    rows, cols = axial_crop(mask, 1, half_width_mm=3.0)
    panel = make_panel(mask.with_data(data.astype(np.float32)), mask, axis=2, index=1,
                       row_range=rows, col_range=cols)
    assert panel.image.shape == (7, 7)
    assert panel.mask is not None and panel.mask[3, 3]
    assert panel.image.sum() == 1.0


def test_disc_points_are_named_and_ordered_superior_first(phantom: Phantom) -> None:
    points = find_disc_points(reorient(phantom.discs))
    assert [p.value for p in points] == sorted(DISCS)
    assert [p.name for p in points] == ["C1/C2", "C2/C3", "C3/C4", "C4/C5", "C5/C6"]
    for point in points:
        assert point.xyz_mm[2] == pytest.approx(DISCS[point.value], abs=ZOOMS_MM[2] / 2)
        assert vox_to_mm(reorient(phantom.discs).affine, point.ijk[None])[0] == \
            pytest.approx(point.xyz_mm)


def test_intensity_window_ignores_zero_padding_and_outliers() -> None:
    rng = np.random.default_rng(3)
    values = np.concatenate([np.zeros(5000), rng.normal(100, 5, 2000), [1e6]])
    lo, hi = intensity_window(values)
    assert 80 < lo < 100 < hi < 130
    assert intensity_window(np.zeros(10)) == (0.0, 1.0)


def test_checkerboard_alternates_square_tiles() -> None:
    a, b = np.zeros((12, 18)), np.ones((12, 18))
    board = checkerboard(a, b, tiles=4)
    assert board[0, 0] == 0 and board[0, 3] == 1 and board[3, 0] == 1 and board[3, 3] == 0
    assert board.mean() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        checkerboard(a, np.ones((3, 3)))


def test_spread_labels_keeps_order_and_minimum_gap() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        y = rng.uniform(0, 50, rng.integers(1, 15))
        placed = spread_labels(y, min_gap=4.0, lower=0.0)
        order = np.argsort(-y, kind="stable")
        assert np.all(np.diff(placed[order]) <= -4.0 + 1e-9), "gap or order broken"
        if placed.min() > 0.0:
            assert np.all(placed <= y + 1e-9), "labels only move down unless at the floor"
    spaced = np.array([40.0, 30.0, 20.0])
    assert spread_labels(spaced, min_gap=4.0).tolist() == spaced.tolist()
