"""Cord coordinates: foot points, in-plane offsets and their inverse."""

from __future__ import annotations

import numpy as np
from geometry_phantoms import distance_to_polyline

from spinal_bidsapp.geometry.centerline import (
    centerline_from_points,
    sample_centerline,
    straight_centerline,
)
from spinal_bidsapp.geometry.coordinates import cord_coordinates, cord_to_world, locate_points


def test_locate_points_matches_bruteforce_reference(sinusoid) -> None:
    cl = centerline_from_points(sinusoid.curve_points[::25], smooth_mm=0)
    rng = np.random.default_rng(7)
    arc = rng.uniform(5, cl.length_mm - 5, 300)
    foot, _, right, anterior = sample_centerline(cl, arc)
    a, b = rng.uniform(-8, 8, 300), rng.uniform(-8, 8, 300)
    pts = foot + a[:, None] * right + b[:, None] * anterior
    s, ra, an = locate_points(cl, pts)
    assert np.allclose(s, arc, atol=2e-3)
    assert np.allclose(ra, a, atol=2e-3) and np.allclose(an, b, atol=2e-3)
    # plain reference: the foot point is the nearest point of a very dense polyline
    dense = np.stack([np.interp(np.arange(0, cl.length_mm, 0.005), cl.arc_mm, cl.points_mm[:, c])
                      for c in range(3)], axis=1)
    assert np.allclose(distance_to_polyline(pts[:40], dense), np.hypot(ra, an)[:40], atol=5e-3)


def test_cord_to_world_inverts_cord_coordinates_beyond_the_ends() -> None:
    cl = centerline_from_points(np.array([[0, 0, 0], [2, 1, 20], [3, 4, 40.0]]), smooth_mm=0)
    rng = np.random.default_rng(3)
    pts = rng.uniform([-10, -10, -15], [10, 10, 55], (500, 3))
    s, a, b = locate_points(cl, pts)
    assert (s < 0).any() and (s > cl.length_mm).any()
    assert np.allclose(cord_to_world(cl, s, a, b), pts, atol=1e-3)


def test_cord_coordinates_on_a_straight_line_are_exact() -> None:
    cl = straight_centerline(np.array([1.0, 2.0, 30.0]), 30.0)
    pts = np.array([[4.0, 0.0, 10.0], [1.0, 2.0, 29.9], [0.0, 5.0, -7.0]])
    s, a, b = cord_coordinates(cl, pts, np.zeros(3))
    assert np.allclose(s, [10.0, 29.9, -7.0]) and np.allclose(a, [3, 0, -1])
    assert np.allclose(b, [-2, 0, 3])
