"""Straight-cord cohorts: the true shape, the zero-mean deformations, seeds and written files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.synth.acquisition import Grid
from spinal_bidsapp.synth.straight import (
    StraightAnatomy,
    StraightSubject,
    draw_straight_cohort,
    grid_mm,
    render_straight_anatomy,
    write_straight_cohort,
)


def _centred_grid(shape: tuple[int, int, int], voxel_mm: float) -> Grid:
    affine = np.diag([-voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:2, 3] = [(shape[0] - 1) / 2 * voxel_mm, -(shape[1] - 1) / 2 * voxel_mm]
    return Grid(shape=shape, affine=affine)


GRID = _centred_grid((32, 32, 24), 0.5)
CORD = StraightAnatomy()


def _cohort(n: int, *, seed: int, anatomy: StraightAnatomy = CORD,
            amplitude_mm: float = 1.5, noise_sd: float = 30.0) -> list[StraightSubject]:
    return draw_straight_cohort(GRID, n, seed=seed, anatomy=anatomy, smoothing_vox=(6, 6, 12),
                                amplitude_mm=amplitude_mm, z_scale=0.3, scale_range=(0.9, 1.1),
                                noise_sd=noise_sd)


def test_true_cord_is_a_straight_elliptic_tube_of_the_stated_half_axes() -> None:
    grid = _centred_grid((41, 41, 12), 0.25)
    x, y, z = grid_mm(grid)
    tissues = render_straight_anatomy(StraightAnatomy(cord_width_wave_mm=0.0), x, y, z)
    mask = tissues.cord > 0.5
    assert np.array_equal(mask, (x / 4.2) ** 2 + (y / 3.0) ** 2 < 1.0)
    assert all(np.array_equal(mask[..., k], mask[..., 0]) for k in range(grid.shape[2]))
    assert mask[..., 0].sum() * 0.25 ** 2 == pytest.approx(np.pi * 4.2 * 3.0, rel=0.02)
    canal = (tissues.csf > 0.5) & ~mask
    assert np.all(tissues.csf[mask] > 0.5)
    assert np.median(tissues.image[mask]) < np.median(tissues.image[canal]) - 400  # T2-like


def test_cord_half_width_follows_the_wave_along_z() -> None:
    grid = _centred_grid((41, 21, 80), 0.25)
    x, y, z = grid_mm(grid)
    mask = render_straight_anatomy(CORD, x, y, z).cord > 0.5
    half_width = np.abs(np.where(mask, x, 0.0)).max(axis=(0, 1))
    expected = 4.2 + 0.6 * np.sin(z[0, 0] / 6.0)
    assert np.abs(half_width - expected).max() <= 0.25
    assert np.ptp(half_width) > 0.5


def test_without_deformation_or_noise_every_subject_is_the_truth() -> None:
    truth = render_straight_anatomy(CORD, *grid_mm(GRID))
    subjects = draw_straight_cohort(GRID, 3, seed=0, anatomy=CORD,
                                    smoothing_vox=(6, 6, 12), amplitude_mm=0.0, z_scale=0.3,
                                    scale_range=None, noise_sd=0.0)
    for subject in subjects:
        assert np.array_equal(subject.image, truth.image)
        assert np.array_equal(subject.cord_mask, truth.cord > 0.5)


def test_subjects_differ_by_seed_and_a_seed_reproduces_its_cohort() -> None:
    first, again, other = _cohort(3, seed=5), _cohort(3, seed=5), _cohort(3, seed=6)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.cord_mask, b.cord_mask)
    assert not np.array_equal(first[0].cord_mask, other[0].cord_mask)
    assert not np.array_equal(first[0].cord_mask, first[1].cord_mask)
    assert all(s.image.dtype == np.float32 and s.image.shape == GRID.shape for s in first)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cohort_mean_is_the_truth_because_deformations_sum_to_zero(seed: int) -> None:
    smooth = StraightAnatomy(cord_edge=0.4, csf_edge=0.4, grey_matter_contrast=0.0)
    truth = render_straight_anatomy(smooth, *grid_mm(GRID)).image.astype(np.float64)
    images = np.array([s.image for s in _cohort(3, seed=seed, anatomy=smooth,
                                                amplitude_mm=0.5, noise_sd=0.0)], np.float64)
    mean_error = np.sqrt(np.mean((images.mean(axis=0) - truth) ** 2))
    subject_error = np.sqrt(np.mean((images - truth) ** 2))
    assert subject_error > 3.0  # the subjects are deformed ...
    assert mean_error < 0.15 * subject_error  # ... but only to second order on average


def test_subject_scale_is_about_the_cord_axis_and_relative_to_the_cohort() -> None:
    x, y, z = grid_mm(GRID)
    x, y = x[..., 0], y[..., 0]

    def area_and_extents(mask: np.ndarray) -> tuple[int, float, float]:
        return int(mask.sum()), float(np.abs(x[mask]).max()), float(np.abs(y[mask]).max())

    truth = area_and_extents(render_straight_anatomy(CORD, x, y, z[..., 0]).cord
                             > 0.5)
    subjects = draw_straight_cohort(GRID, 2, seed=5, anatomy=CORD,
                                    smoothing_vox=(6, 6, 12), amplitude_mm=0.0, z_scale=0.3,
                                    scale_range=(0.8, 1.2), noise_sd=0.0)
    small, large = sorted(area_and_extents(s.cord_mask[..., 0]) for s in subjects)
    assert small[0] < 0.9 * truth[0] and large[0] > 1.1 * truth[0]
    assert small[1] < truth[1] < large[1] and small[2] < truth[2] < large[2]  # both axes
    for subject in subjects:
        mask = subject.cord_mask[..., 0]
        assert abs(x[mask].mean()) < 1e-9 and abs(y[mask].mean()) < 1e-9  # about the axis


def test_written_cohort_keeps_arrays_and_stores_the_given_affine(tmp_path: Path) -> None:
    subjects = _cohort(2, seed=3)
    affine = np.diag([-1.0, 1.0, 1.0, 1.0]) @ GRID.affine
    written = write_straight_cohort(tmp_path / "new", subjects, affine)
    assert [w.label for w in written] == ["sub-00", "sub-01"]
    for subject, files in zip(subjects, written, strict=True):
        image, mask = nib.load(files.image), nib.load(files.cord_mask)
        assert np.array_equal(image.affine, affine) and np.array_equal(mask.affine, affine)
        assert np.array_equal(np.asanyarray(image.dataobj), subject.image)
        assert np.array_equal(np.asanyarray(mask.dataobj), subject.cord_mask.astype(np.float32))
