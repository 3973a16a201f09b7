"""Analytic spine curve with cross-section frames: the geometry behind the synthetic cohorts.

Deliberately independent of :mod:`spinal_bidsapp.geometry`, so that the synthetic ground truth can
check it. The centre line is a graph over world z (superior),

``c(z) = (x0 + sx (z - zc) + sum_k Ax_k sin(wx_k (z - zc) + px_k),  y(z) likewise,  z)``,

with arc length ``s`` measured from ``z = zc`` (increasing superiorly). Each point has an
orthonormal frame ``(e_u, e_v, t)``: ``t`` is the unit tangent, ``e_v`` the world anterior axis
projected onto the plane normal to ``t`` and ``e_u = e_v x t`` (close to world right). A point is
written in curve coordinates ``(u, v, s)``: world ``p = c(z(s)) + u e_u + v e_v``. Cross-sections
``s = const`` are planes perpendicular to the curve, so this is a true bending, not a shear.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

_ANTERIOR = np.array([0.0, 1.0, 0.0])
_TABLE_STEP_MM = 0.05
_NEWTON_ITERATIONS = 12
_NEWTON_MAX_STEP_MM = 10.0


@dataclass(frozen=True)
class SineSum:
    """One centre-line coordinate: ``offset + slope (z - zc) + sum_k A sin(w (z - zc) + p)``.

    ``amplitudes_mm``, ``wavenumbers_per_mm`` and ``phases_rad`` have the same length.
    """

    offset_mm: float = 0.0
    slope: float = 0.0
    amplitudes_mm: tuple[float, ...] = ()
    wavenumbers_per_mm: tuple[float, ...] = ()
    phases_rad: tuple[float, ...] = ()

    def derivatives(self, dz: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
        """Value, first and second derivative at ``dz = z - zc`` (same shape as ``dz``)."""
        value = self.offset_mm + self.slope * dz
        first = np.full_like(dz, self.slope)
        second = np.zeros_like(dz)
        for amp, wav, pha in zip(self.amplitudes_mm, self.wavenumbers_per_mm, self.phases_rad,
                                 strict=True):
            arg = wav * dz + pha
            sin, cos = np.sin(arg), np.cos(arg)
            value = value + amp * sin
            first = first + amp * wav * cos
            second = second - amp * wav * wav * sin
        return value, first, second

    def to_dict(self) -> dict[str, object]:
        return {"offset_mm": self.offset_mm, "slope": self.slope,
                "amplitudes_mm": list(self.amplitudes_mm),
                "wavenumbers_per_mm": list(self.wavenumbers_per_mm),
                "phases_rad": list(self.phases_rad)}

    @classmethod
    def from_dict(cls, data: dict) -> SineSum:
        return cls(offset_mm=float(data["offset_mm"]), slope=float(data["slope"]),
                   amplitudes_mm=tuple(float(a) for a in data["amplitudes_mm"]),
                   wavenumbers_per_mm=tuple(float(w) for w in data["wavenumbers_per_mm"]),
                   phases_rad=tuple(float(p) for p in data["phases_rad"]))


@dataclass(frozen=True)
class SpineCurve:
    """Centre line ``c(z) = (x(z), y(z), z)`` for ``|z - zc| <= half_length_mm``.

    ``x`` bends the curve in the coronal plane, ``y`` in the sagittal plane (world RAS, mm).
    """

    x: SineSum
    y: SineSum
    zc_mm: float = 0.0
    half_length_mm: float = 250.0
    _z_table: NDArray[np.float64] = field(init=False, repr=False, compare=False)
    _s_table: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = round(2 * self.half_length_mm / _TABLE_STEP_MM) + 1
        dz = np.linspace(-self.half_length_mm, self.half_length_mm, n)
        speed = np.linalg.norm(self._derivatives(dz)[1], axis=-1)
        # The speed |c'| is smooth, so the trapezoid rule on a 0.05 mm table is accurate to
        # well below 1e-4 mm over the whole table.
        steps = 0.5 * (speed[1:] + speed[:-1]) * np.diff(dz)
        s = np.concatenate([[0.0], np.cumsum(steps)])
        s -= np.interp(0.0, dz, s)
        object.__setattr__(self, "_z_table", dz + self.zc_mm)
        object.__setattr__(self, "_s_table", s)

    # -- evaluation ---------------------------------------------------------------------------
    def _derivatives(self, dz: NDArray[np.float64]) -> tuple[NDArray, NDArray, NDArray]:
        x, dx, ddx = self.x.derivatives(dz)
        y, dy, ddy = self.y.derivatives(dz)
        zero = np.zeros_like(dz)
        point = np.stack([x, y, dz + self.zc_mm], axis=-1)
        first = np.stack([dx, dy, np.ones_like(dz)], axis=-1)
        second = np.stack([ddx, ddy, zero], axis=-1)
        return point, first, second

    def point_at_z(self, z_mm: NDArray) -> NDArray[np.float64]:
        """Centre-line points ``(..., 3)`` mm, world RAS, at heights ``z_mm``."""
        return self._derivatives(np.asarray(z_mm, dtype=np.float64) - self.zc_mm)[0]

    def arc_length_at_z(self, z_mm: NDArray) -> NDArray[np.float64]:
        """Arc length ``s`` (mm, 0 at ``zc``, positive superiorly) at heights ``z_mm``."""
        return np.interp(np.asarray(z_mm, dtype=np.float64), self._z_table, self._s_table)

    def z_at_arc_length(self, s_mm: NDArray) -> NDArray[np.float64]:
        """Inverse of :meth:`arc_length_at_z` (table interpolation plus one Newton step)."""
        s_mm = np.asarray(s_mm, dtype=np.float64)
        z = np.interp(s_mm, self._s_table, self._z_table)
        speed = np.linalg.norm(self._derivatives(z - self.zc_mm)[1], axis=-1)
        return z - (self.arc_length_at_z(z) - s_mm) / speed

    def frames_at_z(self, z_mm: NDArray) -> tuple[NDArray, NDArray, NDArray]:
        """Unit vectors ``(e_u, e_v, t)``, each ``(..., 3)``, world RAS, at heights ``z_mm``."""
        first = self._derivatives(np.asarray(z_mm, dtype=np.float64) - self.zc_mm)[1]
        tangent = first / np.linalg.norm(first, axis=-1, keepdims=True)
        e_v = _ANTERIOR - (tangent @ _ANTERIOR)[..., None] * tangent
        e_v /= np.linalg.norm(e_v, axis=-1, keepdims=True)
        e_u = np.cross(e_v, tangent)
        return e_u, e_v, tangent

    def curvature_at_z(self, z_mm: NDArray) -> NDArray[np.float64]:
        """Curvature (1/mm) ``|c' x c''| / |c'|^3``."""
        _, first, second = self._derivatives(np.asarray(z_mm, dtype=np.float64) - self.zc_mm)
        return (np.linalg.norm(np.cross(first, second), axis=-1)
                / np.linalg.norm(first, axis=-1) ** 3)

    # -- coordinate changes -------------------------------------------------------------------
    def curve_to_world(self, uvs: NDArray) -> NDArray[np.float64]:
        """Curve coordinates ``(N, 3)`` ``(u, v, s)`` mm to world points ``(N, 3)`` mm, RAS."""
        uvs = np.atleast_2d(np.asarray(uvs, dtype=np.float64))
        z = self.z_at_arc_length(uvs[:, 2])
        e_u, e_v, _ = self.frames_at_z(z)
        return self.point_at_z(z) + uvs[:, :1] * e_u + uvs[:, 1:2] * e_v

    def world_to_curve(self, points_mm: NDArray) -> NDArray[np.float64]:
        """World points ``(N, 3)`` mm, RAS, to curve coordinates ``(N, 3)`` ``(u, v, s)`` mm.

        The foot point on the curve is found by Newton iterations on
        ``g(z) = (p - c(z)) . c'(z) = 0`` started at the point's own height; it is unique for
        points closer to the curve than its radius of curvature.

        >>> curve = SpineCurve(x=SineSum(), y=SineSum(offset_mm=2.0))
        >>> curve.world_to_curve(np.array([[1.0, 5.0, 7.0]])).round(6)
        array([[1., 3., 7.]])
        """
        points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        z = self.foot_z(points)
        e_u, e_v, _ = self.frames_at_z(z)
        delta = points - self.point_at_z(z)
        return np.stack([np.einsum("ij,ij->i", delta, e_u), np.einsum("ij,ij->i", delta, e_v),
                         self.arc_length_at_z(z)], axis=-1)

    def foot_z(self, points_mm: NDArray) -> NDArray[np.float64]:
        """Height ``z`` of the nearest curve point for each world point ``(N, 3)``."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        px, py, pz = points[:, 0], points[:, 1], points[:, 2]
        lo, hi = self._z_table[0], self._z_table[-1]
        z = np.clip(pz, lo, hi)
        for _ in range(_NEWTON_ITERATIONS):
            dz = z - self.zc_mm
            x, dx, ddx = self.x.derivatives(dz)
            y, dy, ddy = self.y.derivatives(dz)
            rx, ry = px - x, py - y
            g = rx * dx + ry * dy + (pz - z)
            dg = rx * ddx + ry * ddy - (dx * dx + dy * dy + 1.0)
            dg = np.minimum(dg, -0.1)  # keep the step a descent step far from the curve
            step = np.clip(g / dg, -_NEWTON_MAX_STEP_MM, _NEWTON_MAX_STEP_MM)
            z = np.clip(z - step, lo, hi)
            if np.abs(step).max(initial=0.0) < 1e-9:
                break
        return z

    # -- persistence --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        return {"kind": "sine_sum_graph_over_z", "zc_mm": self.zc_mm,
                "half_length_mm": self.half_length_mm, "x": self.x.to_dict(),
                "y": self.y.to_dict()}

    @classmethod
    def from_dict(cls, data: dict) -> SpineCurve:
        return cls(x=SineSum.from_dict(data["x"]), y=SineSum.from_dict(data["y"]),
                   zc_mm=float(data["zc_mm"]), half_length_mm=float(data["half_length_mm"]))


def draw_curve(rng: np.random.Generator, *, coronal_tilt_deg: float = 5.0,
               sagittal_tilt_deg: float = 10.0, sagittal_amplitude_mm: float = 8.0,
               coronal_amplitude_mm: float = 2.5, min_radius_mm: float = 90.0,
               half_length_mm: float = 250.0, checked_half_mm: float = 100.0) -> SpineCurve:
    """Random smooth spine curve: a tilt plus one or two long sine waves per plane.

    Wavelengths are 120-300 mm so that, within a cervical field of view, the curve looks like a
    lordosis or a gentle scoliotic bend (over the whole cord, like the alternating lordoses and
    kyphosis). Amplitudes are reduced if needed so that the radius of curvature stays above
    ``min_radius_mm`` over ``+-checked_half_mm`` around the curve centre, which keeps the
    nearest-point search unique for everything the generators draw (< 40 mm from the curve).
    ``half_length_mm`` is the z range the curve is defined over (its arc-length table).
    """
    def _axis(amplitude: float, max_tilt_deg: float) -> SineSum:
        n_waves = int(rng.integers(1, 3))
        tilt = float(np.tan(np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg))))
        return SineSum(offset_mm=0.0, slope=tilt,
                       amplitudes_mm=tuple(float(a) for a in
                                           rng.uniform(0.3, 1.0, n_waves) * amplitude
                                           * rng.choice([-1.0, 1.0], n_waves)),
                       wavenumbers_per_mm=tuple(float(2 * np.pi / w)
                                                for w in rng.uniform(120.0, 300.0, n_waves)),
                       phases_rad=tuple(float(p) for p in rng.uniform(0, 2 * np.pi, n_waves)))

    x = _axis(coronal_amplitude_mm, coronal_tilt_deg)
    y = _axis(sagittal_amplitude_mm, sagittal_tilt_deg)
    z = np.linspace(-checked_half_mm, checked_half_mm, round(2 * checked_half_mm) + 1)
    for _ in range(20):
        curve = SpineCurve(x=x, y=y, half_length_mm=half_length_mm)
        kappa = float(curve.curvature_at_z(z).max())
        if kappa <= 1.0 / min_radius_mm:
            return curve
        x = _scaled(x, 0.8)
        y = _scaled(y, 0.8)
    return SpineCurve(x=SineSum(slope=x.slope), y=SineSum(slope=y.slope),
                      half_length_mm=half_length_mm)


def _scaled(axis: SineSum, factor: float) -> SineSum:
    return SineSum(offset_mm=axis.offset_mm, slope=axis.slope,
                   amplitudes_mm=tuple(a * factor for a in axis.amplitudes_mm),
                   wavenumbers_per_mm=axis.wavenumbers_per_mm, phases_rad=axis.phases_rad)
