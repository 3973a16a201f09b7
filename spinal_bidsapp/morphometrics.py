"""Cord morphometrics: length, volume, angle-corrected cross-sectional area per slice and level.

Pure functions on arrays. The CSA of a slice is the mask area in the acquisition plane times the
cosine of the angle between the slice normal and the cord tangent (the area of the cut
perpendicular to the cord), as ``sct_process_segmentation`` does; slices are taken along the voxel
axis closest to superior-inferior, so the result does not depend on the storage orientation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.geometry.centerline import Centerline, dominant_axis
from spinal_bidsapp.geometry.coordinates import locate_points
from spinal_bidsapp.geometry.discs import (
    VERTEBRA_NAMES,
    DiscPositions,
    compute_vertebral_distribution,
)


@dataclass(frozen=True)
class SliceMetrics:
    """Per-slice measurements, one row per slice that contains cord.

    Attributes
    ----------
    slice_index : (K,) int, index along the superior-inferior voxel axis
    arc_mm : (K,) float64, mm, arc position of the slice centroid on the centerline
    centroid_mm : (K, 3) float64, mm, world RAS+
    area_mm2 : (K,) float64, mm^2, mask area in the acquisition plane
    angle_deg : (K,) float64, degrees between slice normal and cord tangent
    csa_mm2 : (K,) float64, mm^2, angle-corrected cross-sectional area
    level : (K,) int, vertebral level (vertebra number) or 0 when outside the labelled discs
    """

    slice_index: NDArray[np.int64]
    arc_mm: NDArray[np.float64]
    centroid_mm: NDArray[np.float64]
    area_mm2: NDArray[np.float64]
    angle_deg: NDArray[np.float64]
    csa_mm2: NDArray[np.float64]
    level: NDArray[np.int64]


@dataclass(frozen=True)
class LevelMetrics:
    level: int
    name: str
    n_slices: int
    csa_mean_mm2: float
    csa_sd_mm2: float
    csa_min_mm2: float
    csa_max_mm2: float


def measure_slices(mask: NDArray, affine: NDArray[np.float64], centerline: Centerline,
                   discs: DiscPositions | None = None) -> SliceMetrics:
    """Angle-corrected CSA of every slice of a binary cord mask.

    Examples
    --------
    >>> from spinal_bidsapp.geometry.centerline import centerline_from_mask
    >>> m = np.zeros((12, 12, 10)); m[3:8, 4:8, :] = 1
    >>> cl = centerline_from_mask(m, np.eye(4))
    >>> measure_slices(m, np.eye(4), cl).csa_mm2[:3].tolist()
    [20.0, 20.0, 20.0]
    """
    binary = np.asarray(mask) > 0.5
    aff = np.asarray(affine, dtype=np.float64)
    axis = dominant_axis(aff)
    in_plane = [a for a in range(3) if a != axis]
    normal = np.cross(aff[:3, in_plane[0]], aff[:3, in_plane[1]])
    pixel_area = float(np.linalg.norm(normal))
    normal /= pixel_area
    moved = np.moveaxis(binary, axis, -1)
    counts = moved.sum(axis=(0, 1))
    keep = np.nonzero(counts)[0]
    centroids_vox = np.zeros((len(keep), 3))
    for row, k in enumerate(keep):
        ij = np.argwhere(moved[..., k]).mean(axis=0)
        centroids_vox[row, in_plane[0]], centroids_vox[row, in_plane[1]] = ij
        centroids_vox[row, axis] = k
    centroids = centroids_vox @ aff[:3, :3].T + aff[:3, 3]
    arc, _, _ = locate_points(centerline, centroids)
    tangents = _tangents_at(centerline, arc)
    cosine = np.clip(np.abs(tangents @ normal), 0.0, 1.0)
    area = counts[keep].astype(np.float64) * pixel_area
    level = np.zeros(len(keep), dtype=np.int64)
    if discs is not None and len(discs.values):
        level = _levels_at(centerline, discs, arc)
    return SliceMetrics(slice_index=keep.astype(np.int64), arc_mm=arc, centroid_mm=centroids,
                        area_mm2=area, angle_deg=np.degrees(np.arccos(cosine)),
                        csa_mm2=area * cosine, level=level)


def _tangents_at(centerline: Centerline, arc: NDArray[np.float64]) -> NDArray[np.float64]:
    idx = np.clip(np.searchsorted(centerline.arc_mm, arc), 0, len(centerline.arc_mm) - 1)
    return centerline.tangents[idx]


def _levels_at(centerline: Centerline, discs: DiscPositions,
               arc: NDArray[np.float64]) -> NDArray[np.int64]:
    """Vertebral level N between disc N (above) and disc N+1 (below); 0 outside the discs."""
    dist = compute_vertebral_distribution(centerline, discs)
    idx = np.clip(np.searchsorted(centerline.arc_mm, arc), 0, len(centerline.arc_mm) - 1)
    upper = dist.upper_disc[idx]
    inside = ~np.isnan(dist.fraction[idx])
    return np.where(inside & (upper >= 1) & (upper <= 30), upper, 0).astype(np.int64)


def summarise_levels(slices: SliceMetrics) -> list[LevelMetrics]:
    """Mean, SD, min and max CSA per vertebral level (levels with cord only)."""
    out = []
    for level in sorted(set(int(v) for v in slices.level) - {0}):
        csa = slices.csa_mm2[slices.level == level]
        out.append(LevelMetrics(level=level, name=VERTEBRA_NAMES.get(level, str(level)),
                                n_slices=int(csa.size), csa_mean_mm2=float(csa.mean()),
                                csa_sd_mm2=float(csa.std(ddof=1)) if csa.size > 1 else 0.0,
                                csa_min_mm2=float(csa.min()), csa_max_mm2=float(csa.max())))
    return out


def cord_volume_mm3(mask: NDArray, affine: NDArray[np.float64]) -> float:
    voxel = abs(float(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))
    return float((np.asarray(mask) > 0.5).sum()) * voxel
