"""Template space: level lengths, disc positions, grid, intensity flattening."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import DiscPositions
from spinal_bidsapp.geometry.template_space import (
    average_levels,
    define_template_space,
    disc_label_array,
    level_label_array,
    normalize_intensity,
)


def _discs(values: list[int], arcs: list[float]) -> DiscPositions:
    return DiscPositions(np.array(values), np.array(arcs, dtype=float), np.zeros(len(values)))


def test_mean_level_lengths_use_every_subject_that_has_the_level() -> None:
    cohort = {"sub-01": _discs([2, 3, 4], [100.0, 80.0, 62.0]),
              "sub-02": _discs([3, 4, 5], [90.0, 70.0, 50.0]),
              "sub-03": _discs([2, 4], [60.0, 20.0])}  # a gap: contributes no level
    levels = average_levels(cohort)
    assert [(lv.upper, lv.mean_mm, lv.n_subjects) for lv in levels] == [
        (2, 20.0, 1), (3, 19.0, 2), (4, 20.0, 1)]


def test_disjoint_disc_ranges_are_an_error_naming_subjects() -> None:
    cohort = {"sub-01": _discs([2, 3], [50.0, 30.0]), "sub-02": _discs([5, 6], [40.0, 20.0])}
    with pytest.raises(InputDataError, match=r"3-4, 4-5.*sub-01: discs 2-3.*sub-02: discs 5-6"):
        average_levels(cohort)
    levels = average_levels(cohort, first_disc=5, last_disc=6)
    assert [lv.upper for lv in levels] == [5]


def test_grid_is_centred_on_the_line_and_discs_land_on_voxels() -> None:
    levels = average_levels({"a": _discs([2, 3, 4], [40.0, 20.5, 0.0])})
    space = define_template_space(levels, resolution_mm=0.5, xy_half_mm=10, margin_mm=5)
    centre = space.affine @ np.array([space.shape[0] // 2, space.shape[1] // 2, 0, 1.0])
    assert np.allclose(centre[:2], 0.0)
    assert space.disc_z_mm.tolist() == [0.0, -19.5, -40.0]
    labels = disc_label_array(space)
    assert sorted(np.unique(labels[labels > 0]).tolist()) == [2, 3, 4]
    cord = np.zeros(space.shape)
    cord[space.shape[0] // 2, space.shape[1] // 2, :] = 1
    levels_img = level_label_array(space, cord)
    assert set(np.unique(levels_img).tolist()) == {0, 2, 3}


def test_intensity_is_flattened_along_the_cord() -> None:
    z = np.arange(60)
    image = np.ones((9, 9, 60), np.float32) * (100 + 3 * z)[None, None, :]
    cord = np.zeros_like(image)
    cord[3:6, 3:6, 10:50] = 1
    flat = normalize_intensity(image, cord, voxel_z_mm=1.0, smooth_mm=1.0)
    centre = flat[4, 4, 12:48]
    assert np.allclose(centre, 1000.0, rtol=0.02)
