"""Ground truth of synthetic subjects: the JSON record, its reader and the exact true mappings.

Every synthetic subject is defined by a spine curve (subject world <-> curve coordinates
``(u, v, s)``, see :mod:`spinal_bidsapp.synth.curve`) and a :class:`TemplateMapping` (curve
coordinates <-> straight PAM50 world). Composing both gives the exact subject <-> PAM50 mapping
that benchmarks use to score registration, straightening and templates.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.synth.acquisition import Grid
from spinal_bidsapp.synth.curve import SpineCurve
from spinal_bidsapp.synth.spine import PAM50_CORD_XY_MM, PAM50_SMALL_OFFSET_MM

TRUTH_SCHEMA = "spinal_bidsapp.synth.truth/1"
TemplateSpace = Literal["PAM50", "PAM50_small"]


@dataclass(frozen=True)
class TemplateMapping:
    """Curve coordinates ``(u, v, s)`` <-> straight template world (PAM50 0.5 mm frame, mm).

    ``x = x0 + u / scale_u``, ``y = y0 + v / scale_v`` and ``z = Z(s)``, with ``Z`` piecewise
    linear through the disc pairs ``(disc_arc_mm[i], disc_template_z_mm[i])`` and extended
    linearly beyond the end discs with the slope of the end levels. ``1 / Z'`` is the per-level
    stretch of the subject relative to the template.
    """

    discs: tuple[int, ...]
    disc_arc_mm: tuple[float, ...]
    disc_template_z_mm: tuple[float, ...]
    cross_scale: tuple[float, float] = (1.0, 1.0)
    template_xy_mm: tuple[float, float] = PAM50_CORD_XY_MM

    def __post_init__(self) -> None:
        if np.any(np.diff(self.disc_arc_mm) >= 0) or np.any(np.diff(self.disc_template_z_mm) >= 0):
            raise ValueError("discs must be listed top to bottom with decreasing positions")

    def straight_to_template(self, uvs: NDArray) -> NDArray[np.float64]:
        """``(N, 3)`` curve coordinates to ``(N, 3)`` PAM50 world points (mm, RAS)."""
        uvs = np.atleast_2d(np.asarray(uvs, dtype=np.float64))
        z = _piecewise_linear(uvs[:, 2], self.disc_arc_mm, self.disc_template_z_mm)
        return np.column_stack([self.template_xy_mm[0] + uvs[:, 0] / self.cross_scale[0],
                                self.template_xy_mm[1] + uvs[:, 1] / self.cross_scale[1], z])

    def template_to_straight(self, points_mm: NDArray) -> NDArray[np.float64]:
        """Inverse of :meth:`straight_to_template`."""
        points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
        s = _piecewise_linear(points[:, 2], self.disc_template_z_mm, self.disc_arc_mm)
        return np.column_stack([(points[:, 0] - self.template_xy_mm[0]) * self.cross_scale[0],
                                (points[:, 1] - self.template_xy_mm[1]) * self.cross_scale[1], s])

    def level_stretch(self) -> dict[str, float]:
        """Subject level length / template level length, keyed ``"2-3"`` etc."""
        return {f"{a}-{b}": float((sa - sb) / (za - zb)) for a, b, sa, sb, za, zb in zip(
            self.discs[:-1], self.discs[1:], self.disc_arc_mm[:-1], self.disc_arc_mm[1:],
            self.disc_template_z_mm[:-1], self.disc_template_z_mm[1:], strict=True)}

    def to_dict(self) -> dict[str, object]:
        return {"model": "x = x0 + u / scale_u, y = y0 + v / scale_v, z = piecewise linear in s "
                         "through the disc pairs (linear extension beyond the end discs)",
                "template": "PAM50 (0.5 mm frame; PAM50_small = PAM50 + small_offset_mm)",
                "small_offset_mm": PAM50_SMALL_OFFSET_MM.tolist(),
                "discs": list(self.discs), "disc_arc_mm": list(self.disc_arc_mm),
                "disc_template_z_mm": list(self.disc_template_z_mm),
                "cross_scale": list(self.cross_scale), "template_xy_mm": list(self.template_xy_mm),
                "level_stretch": self.level_stretch()}

    @classmethod
    def from_dict(cls, data: dict) -> TemplateMapping:
        return cls(discs=tuple(int(d) for d in data["discs"]),
                   disc_arc_mm=tuple(float(s) for s in data["disc_arc_mm"]),
                   disc_template_z_mm=tuple(float(z) for z in data["disc_template_z_mm"]),
                   cross_scale=(float(data["cross_scale"][0]), float(data["cross_scale"][1])),
                   template_xy_mm=(float(data["template_xy_mm"][0]),
                                   float(data["template_xy_mm"][1])))


def _piecewise_linear(x: NDArray, xp_decreasing: tuple[float, ...],
                      fp_decreasing: tuple[float, ...]) -> NDArray[np.float64]:
    xp, fp = np.asarray(xp_decreasing)[::-1], np.asarray(fp_decreasing)[::-1]
    y = np.interp(x, xp, fp)
    low_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    high_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * low_slope, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * high_slope, y)


@dataclass(frozen=True)
class DiscTruth:
    """One disc: SCT number, name, arc length, world position (RAS mm) and label voxel."""

    disc: int
    name: str
    arc_length_mm: float
    position_mm: tuple[float, float, float]
    voxel: tuple[int, int, int] | None  # labelled voxel; None when not labelled (outside FOV)

    def to_dict(self) -> dict[str, object]:
        return {"disc": self.disc, "name": self.name, "arc_length_mm": self.arc_length_mm,
                "position_mm": list(self.position_mm),
                "voxel": None if self.voxel is None else list(self.voxel),
                "in_fov": self.voxel is not None}

    @classmethod
    def from_dict(cls, data: dict) -> DiscTruth:
        voxel = data.get("voxel")
        return cls(disc=int(data["disc"]), name=str(data["name"]),
                   arc_length_mm=float(data["arc_length_mm"]),
                   position_mm=tuple(float(p) for p in data["position_mm"]),  # type: ignore[arg-type]
                   voxel=None if voxel is None else tuple(int(i) for i in voxel))  # type: ignore[arg-type]


@dataclass(frozen=True)
class SubjectTruth:
    """Ground truth of one synthetic subject (see ``docs/benchmarks.md``, Synthetic cohorts)."""

    subject: str
    cohort: Literal["demo", "phantom"]
    seed: int
    curve: SpineCurve
    grid: Grid
    mapping: TemplateMapping
    discs: tuple[DiscTruth, ...]
    cord_csa_mm2: dict[int, float]  # true cord cross-section area at each disc
    cord_volume_mm3: dict[str, float]  # between two discs, keyed "2-8"
    cord_csa_profile: dict[str, list[float]] = field(default_factory=dict)  # see true_cord_area
    parameters: dict = field(default_factory=dict)  # anatomy, bias, noise: for provenance
    files: dict[str, str] = field(default_factory=dict)  # role -> path relative to OUT

    def disc_positions_mm(self, *, in_fov_only: bool = True) -> dict[int, NDArray[np.float64]]:
        return {d.disc: np.asarray(d.position_mm) for d in self.discs
                if d.voxel is not None or not in_fov_only}

    def to_dict(self) -> dict[str, object]:
        return {"schema": TRUTH_SCHEMA, "subject": self.subject, "cohort": self.cohort,
                "seed": self.seed, "curve": self.curve.to_dict(), "grid": self.grid.to_dict(),
                "mapping": self.mapping.to_dict(), "discs": [d.to_dict() for d in self.discs],
                "cord_csa_mm2": {str(k): v for k, v in self.cord_csa_mm2.items()},
                "cord_volume_mm3": self.cord_volume_mm3,
                "cord_csa_profile": self.cord_csa_profile, "parameters": self.parameters,
                "files": self.files}

    @classmethod
    def from_dict(cls, data: dict) -> SubjectTruth:
        if data.get("schema") != TRUTH_SCHEMA:
            raise ValueError(f"not a synthetic truth record ({data.get('schema')!r})")
        return cls(subject=str(data["subject"]), cohort=data["cohort"], seed=int(data["seed"]),
                   curve=SpineCurve.from_dict(data["curve"]), grid=Grid.from_dict(data["grid"]),
                   mapping=TemplateMapping.from_dict(data["mapping"]),
                   discs=tuple(DiscTruth.from_dict(d) for d in data["discs"]),
                   cord_csa_mm2={int(k): float(v) for k, v in data["cord_csa_mm2"].items()},
                   cord_volume_mm3={k: float(v) for k, v in data["cord_volume_mm3"].items()},
                   cord_csa_profile={k: [float(x) for x in v]
                                     for k, v in data.get("cord_csa_profile", {}).items()},
                   parameters=dict(data.get("parameters", {})), files=dict(data.get("files", {})))


def load_truth(path: Path) -> SubjectTruth:
    """Read ``OUT/truth/sub-XX/sub-XX_truth.json``."""
    return SubjectTruth.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def load_cohort_truth(out_dir: Path) -> list[SubjectTruth]:
    """All subject truths of a generated cohort (``OUT`` as given to the generator), by subject."""
    index = json.loads((Path(out_dir) / "truth" / "cohort.json").read_text(encoding="utf-8"))
    return [load_truth(Path(out_dir) / rel) for rel in index["truth_files"]]


def true_cord_area_mm2(truth: SubjectTruth, arc_length_mm: NDArray) -> NDArray[np.float64]:
    """True cord cross-section area (mm2, perpendicular to the cord) at arc lengths ``s``.

    Interpolated from the profile stored every 0.5 mm over the field of view; NaN outside it.
    """
    profile = truth.cord_csa_profile
    s, area = np.asarray(profile["arc_length_mm"]), np.asarray(profile["area_mm2"])
    return np.interp(np.asarray(arc_length_mm, dtype=np.float64), s, area, left=np.nan,
                     right=np.nan)


def true_subject_to_straight_mm(truth: SubjectTruth, points_mm: NDArray) -> NDArray[np.float64]:
    """Subject world points ``(N, 3)`` (RAS mm) to curve coordinates ``(u, v, s)`` (mm)."""
    return truth.curve.world_to_curve(points_mm)


def true_straight_to_subject_mm(truth: SubjectTruth, uvs: NDArray) -> NDArray[np.float64]:
    """Curve coordinates ``(N, 3)`` ``(u, v, s)`` to subject world points (RAS mm)."""
    return truth.curve.curve_to_world(uvs)


def true_subject_to_pam50_mm(truth: SubjectTruth, points_mm: NDArray, *,
                             space: TemplateSpace = "PAM50") -> NDArray[np.float64]:
    """Exact subject -> template point mapping.

    Parameters
    ----------
    points_mm : (N, 3) float, mm, subject world RAS
    space : ``"PAM50"`` for the 0.5 mm PAM50 frame, ``"PAM50_small"`` for the 1x1x2 mm frame.

    Returns
    -------
    (N, 3) float, mm, template world RAS
    """
    template = truth.mapping.straight_to_template(truth.curve.world_to_curve(points_mm))
    return template + PAM50_SMALL_OFFSET_MM if space == "PAM50_small" else template


def true_pam50_to_subject_mm(truth: SubjectTruth, points_mm: NDArray, *,
                             space: TemplateSpace = "PAM50") -> NDArray[np.float64]:
    """Exact template -> subject point mapping, inverse of :func:`true_subject_to_pam50_mm`."""
    points = np.atleast_2d(np.asarray(points_mm, dtype=np.float64))
    if space == "PAM50_small":
        points = points - PAM50_SMALL_OFFSET_MM
    return truth.curve.curve_to_world(truth.mapping.template_to_straight(points))
