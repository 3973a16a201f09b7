"""Centerline fitting, dense resampling and cord coordinates."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_phantoms import distance_to_polyline, make_tube_phantom

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import (
    centerline_from_mask,
    centerline_from_points,
    dominant_axis,
)
from spinal_bidsapp.image import Volume, reorient


def test_empty_mask_raises_input_error() -> None:
    with pytest.raises(InputDataError, match="empty"):
        centerline_from_mask(np.zeros((5, 5, 5)), np.eye(4))


def test_single_slice_mask_raises_input_error() -> None:
    mask = np.zeros((5, 5, 5))
    mask[2, 2, 3] = 1
    with pytest.raises(InputDataError, match="single slice"):
        centerline_from_mask(mask, np.eye(4))


def test_dominant_axis_follows_world_superior() -> None:
    psr = np.array([[0, 0, 1, 0], [-1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    assert dominant_axis(psr) == 1
    assert dominant_axis(np.eye(4)) == 2


def test_centerline_is_dense_uniform_and_ordered_upwards(sinusoid) -> None:
    cl = centerline_from_mask(sinusoid.soft_mask.data, sinusoid.soft_mask.affine, step_mm=0.25)
    steps = np.diff(cl.arc_mm)
    assert np.allclose(steps, steps[0]) and steps[0] <= 0.25 + 1e-9
    seg = np.linalg.norm(np.diff(cl.points_mm, axis=0), axis=1)
    assert np.allclose(seg, steps, atol=2e-3)  # arc parameter is real arc length
    assert cl.points_mm[-1, 2] > cl.points_mm[0, 2]
    assert np.all(cl.tangents[:, 2] > 0)
    # frames: orthonormal, right-handed, anterior-anchored
    assert np.allclose(np.einsum("ij,ij->i", cl.tangents, cl.normals_right), 0, atol=1e-9)
    assert np.allclose(np.cross(cl.normals_right, cl.normals_anterior), cl.tangents, atol=1e-9)
    assert np.all(cl.normals_anterior[:, 1] > 0.9)
    # not quantised to slices: z of samples is not restricted to voxel centres
    frac = np.abs(cl.points_mm[:, 2] - np.rint(cl.points_mm[:, 2]))
    assert np.mean(frac > 0.05) > 0.5


def test_centerline_follows_analytic_curve(sinusoid) -> None:
    cl = centerline_from_mask(sinusoid.soft_mask.data, sinusoid.soft_mask.affine)
    dist = distance_to_polyline(cl.points_mm[::8], sinusoid.curve_points)
    assert dist.max() < 0.35
    assert np.sqrt(np.mean(dist**2)) < 0.15
    assert abs(cl.length_mm - sinusoid.curve_arc[-1]) < 1.0


def test_thick_slice_axial_centerline_is_smooth_and_close() -> None:
    ph = make_tube_phantom("cervical", voxel_mm=(0.5, 0.5, 7.5), seed=2)
    cl = centerline_from_mask(ph.soft_mask.data, ph.soft_mask.affine)
    assert cl.step_mm <= 0.25 + 1e-9
    dist = distance_to_polyline(cl.points_mm[::8], ph.curve_points)
    assert dist.max() < 0.6


@pytest.mark.parametrize("axcodes", [("L", "A", "S"), ("P", "S", "R"), ("I", "L", "P")])
def test_centerline_does_not_depend_on_storage_orientation(sinusoid, axcodes) -> None:
    ref = centerline_from_mask(sinusoid.mask.data, sinusoid.mask.affine)
    moved = reorient(Volume(sinusoid.mask.data, sinusoid.mask.affine), axcodes)
    other = centerline_from_mask(moved.data, moved.affine)
    assert other.points_mm.shape == ref.points_mm.shape
    assert np.allclose(other.points_mm, ref.points_mm, atol=1e-6)
    assert np.allclose(other.normals_anterior, ref.normals_anterior, atol=1e-6)


def test_centerline_from_points_reproduces_a_circle_arc() -> None:
    theta = np.linspace(-0.6, 0.6, 200)
    radius = 80.0
    pts = np.stack([radius * (1 - np.cos(theta)), np.zeros_like(theta), radius * np.sin(theta)],
                   axis=1)
    cl = centerline_from_points(pts[::-1], smooth_mm=0)  # given top first
    assert cl.points_mm[0, 2] < cl.points_mm[-1, 2]
    assert cl.length_mm == pytest.approx(radius * 1.2, abs=1e-3)
    assert np.allclose(np.linalg.norm(cl.points_mm - [radius, 0, 0], axis=1), radius, atol=1e-3)
