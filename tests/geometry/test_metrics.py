"""Straightness and disc-error measures."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.geometry.fields import DisplacementField
from spinal_bidsapp.geometry.metrics import line_residuals, measure_straightness


def _plain_line_distances(points: np.ndarray) -> np.ndarray:
    """Reference: brute-force the direction on a fine sphere grid, then point-line distances."""
    centred = points - points.mean(axis=0)
    best, best_cost = None, np.inf
    for theta in np.linspace(0, np.pi, 181):
        for phi in np.linspace(0, 2 * np.pi, 361):
            d = np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
            dist = np.linalg.norm(centred - np.outer(centred @ d, d), axis=1)
            cost = np.sum(dist**2)
            if cost < best_cost:
                best, best_cost = dist, cost
    assert best is not None
    return best


def test_line_residuals_match_a_bruteforce_fit() -> None:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 40, 30)
    pts = np.outer(t, [0.2, -0.1, 1.0]) + rng.normal(0, 0.3, (30, 3))
    ours, reference = line_residuals(pts), _plain_line_distances(pts)
    assert np.sum(ours**2) <= np.sum(reference**2) + 1e-9  # least squares: never worse
    assert np.allclose(ours, reference, atol=0.2)  # the reference grid is 1 degree


def test_a_tilted_straight_tube_is_perfectly_straight() -> None:
    shape = (30, 30, 40)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre_i, centre_j = 10 + 0.2 * kk, 12 + 0.1 * kk
    mask = ((ii - centre_i) ** 2 + (jj - centre_j) ** 2 <= 16).astype(np.float32)
    identity = DisplacementField(np.zeros((*shape, 3), np.float32), np.eye(4))
    metric = measure_straightness(mask, np.eye(4), identity)
    assert metric.n_slices == shape[2] - 4
    assert metric.rms_mm < 0.2  # only voxel quantisation of the tilted discs


def test_a_bent_tube_is_not_straight() -> None:
    shape = (40, 30, 40)
    ii, jj, kk = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    centre_i = 10 + 8 * np.sin(np.pi * kk / 39)
    mask = ((ii - centre_i) ** 2 + (jj - 15) ** 2 <= 16).astype(np.float32)
    identity = DisplacementField(np.zeros((*shape, 3), np.float32), np.eye(4))
    metric = measure_straightness(mask, np.eye(4), identity)
    assert metric.max_mm == pytest.approx(8 * 0.6, rel=0.35)
