"""Curve geometry of the generators, checked against slow, plainly written references."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.synth.curve import SineSum, SpineCurve, draw_curve


def _brute_force_foot(curve: SpineCurve, point: np.ndarray) -> tuple[float, np.ndarray]:
    """Nearest curve point by dense sampling (0.01 mm in z) over +-120 mm."""
    z = np.arange(-120.0, 120.0, 0.01) + curve.zc_mm
    samples = curve.point_at_z(z)
    best = int(np.argmin(np.linalg.norm(samples - point, axis=1)))
    return float(z[best]), samples[best]


def _polyline_length(curve: SpineCurve, z0: float, z1: float) -> float:
    z = np.linspace(z0, z1, 200001)
    return float(np.linalg.norm(np.diff(curve.point_at_z(z), axis=0), axis=1).sum())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_world_to_curve_finds_the_nearest_curve_point(seed: int) -> None:
    rng = np.random.default_rng(seed)
    curve = draw_curve(rng)
    uvs = np.column_stack([rng.uniform(-20, 20, 30), rng.uniform(-25, 30, 30),
                           rng.uniform(-60, 60, 30)])
    points = curve.curve_to_world(uvs)
    z_foot = curve.foot_z(points)
    for point, z in zip(points, z_foot, strict=True):
        z_ref, foot_ref = _brute_force_foot(curve, point)
        assert z == pytest.approx(z_ref, abs=0.02)
        assert np.linalg.norm(curve.point_at_z(z) - point) <= np.linalg.norm(foot_ref - point)


@pytest.mark.parametrize("seed", [0, 3])
def test_curve_coordinates_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    curve = draw_curve(rng)
    uvs = np.column_stack([rng.uniform(-20, 20, 5000), rng.uniform(-25, 30, 5000),
                           rng.uniform(-80, 80, 5000)])
    np.testing.assert_allclose(curve.world_to_curve(curve.curve_to_world(uvs)), uvs, atol=1e-6)


def test_cross_sections_are_perpendicular_to_the_curve() -> None:
    curve = draw_curve(np.random.default_rng(4))
    z = np.linspace(-80, 80, 33)
    e_u, e_v, tangent = curve.frames_at_z(z)
    frames = np.stack([e_u, e_v, tangent], axis=-1)
    np.testing.assert_allclose(np.einsum("nji,njk->nik", frames, frames),
                               np.broadcast_to(np.eye(3), frames.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(frames), 1.0, atol=1e-12)
    # the tangent is the direction of the curve (finite difference), e_u points to the right
    step = curve.point_at_z(z + 1e-4) - curve.point_at_z(z - 1e-4)
    np.testing.assert_allclose(tangent, step / np.linalg.norm(step, axis=1, keepdims=True),
                               atol=1e-7)
    assert np.all(e_u[:, 0] > 0.9) and np.all(e_v[:, 1] > 0.9)


def test_arc_length_matches_polyline_length() -> None:
    curve = draw_curve(np.random.default_rng(5))
    for z0, z1 in [(0.0, 50.0), (-70.0, 30.0)]:
        s = curve.arc_length_at_z(np.array([z0, z1]))
        assert s[1] - s[0] == pytest.approx(_polyline_length(curve, z0, z1), abs=1e-4)
    assert curve.arc_length_at_z(np.array(curve.zc_mm)) == pytest.approx(0.0, abs=1e-9)
    s = np.linspace(-90, 90, 50)
    np.testing.assert_allclose(curve.arc_length_at_z(curve.z_at_arc_length(s)), s, atol=1e-6)


def test_straight_tilted_curve_has_exact_arc_length() -> None:
    curve = SpineCurve(x=SineSum(slope=0.75), y=SineSum(offset_mm=3.0))
    assert curve.arc_length_at_z(np.array(40.0)) == pytest.approx(50.0, abs=1e-9)
    uvs = curve.world_to_curve(np.array([[0.0, 3.0, 0.0], [30.0, 3.0, 40.0]]))
    np.testing.assert_allclose(uvs[:, 2], [0.0, 50.0], atol=1e-9)
    np.testing.assert_allclose(uvs[:, :2], 0.0, atol=1e-9)


def test_drawn_curves_keep_their_radius_of_curvature() -> None:
    z = np.linspace(-100, 100, 401)
    radii = [1 / draw_curve(np.random.default_rng(seed)).curvature_at_z(z).max()
             for seed in range(20)]
    assert min(radii) >= 90.0


def test_curve_serialisation_round_trip() -> None:
    curve = draw_curve(np.random.default_rng(6))
    again = SpineCurve.from_dict(curve.to_dict())
    assert again == curve
    z = np.linspace(-50, 50, 11)
    np.testing.assert_array_equal(again.point_at_z(z), curve.point_at_z(z))
