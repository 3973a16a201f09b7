"""The contrast templates' coverage-weighted average streams over the subjects."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.group.contrasts import ContrastJob, _weighted_moments
from spinal_bidsapp.image import Volume, save_volume


def _job(tmp_path: Path, label: str, rng: np.random.Generator, affine: np.ndarray) -> tuple:
    job = ContrastJob(label=label, contrast="T1w", image=tmp_path / "raw.nii.gz", cord=None,
                      anat=tmp_path / "anat.nii.gz", anat_cord=tmp_path / "cord.nii.gz",
                      to_straight=tmp_path / "field.nii.gz", loop_warp=None,
                      coverage=tmp_path / "coverage.nii.gz",
                      template_affine=tuple(tuple(r) for r in affine.tolist()), seed=0,
                      step_dir=tmp_path / label)
    job.step_dir.mkdir()
    image = rng.uniform(0, 1000, (5, 4, 6)).astype(np.float32)
    weight = (rng.uniform(size=image.shape) > 0.3).astype(np.uint8)
    cord = rng.uniform(size=image.shape).astype(np.float32)
    save_volume(Volume(image, affine), job.outputs["image"])
    save_volume(Volume(weight, affine), job.outputs["weight"], dtype=np.uint8)
    save_volume(Volume(cord, affine), job.outputs["cord"])
    return job, image, weight, cord


def test_weighted_moments_match_the_stacked_formula(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    affine = np.diag([-0.5, 0.5, 0.5, 1.0])
    jobs, images, weights, cords = zip(*(_job(tmp_path, f"s{i}", rng, affine)
                                         for i in range(3)), strict=True)
    got_affine, shape, total, mean, sd, probability = _weighted_moments(jobs)
    w = np.stack(weights).astype(np.float64)
    x = np.stack(images).astype(np.float64)
    expected_total = w.sum(axis=0)
    safe = np.where(expected_total > 0, expected_total, 1.0)
    expected_mean = (w * x).sum(axis=0) / safe
    expected_sd = np.sqrt((w * (x - expected_mean) ** 2).sum(axis=0) / safe)
    expected_probability = np.where(expected_total > 0,
                                    (w * np.stack(cords)).sum(axis=0) / safe, 0.0)
    assert shape == (5, 4, 6)
    np.testing.assert_allclose(got_affine, affine)
    np.testing.assert_array_equal(total, expected_total)
    assert (expected_total == 0).any()  # uncovered voxels are exercised
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-12)
    np.testing.assert_allclose(sd, expected_sd, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(probability, expected_probability, rtol=1e-6)
    with pytest.raises(InputDataError, match="no subject"):
        _weighted_moments([])
