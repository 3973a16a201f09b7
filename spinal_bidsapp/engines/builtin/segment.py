"""Builtin spinal cord segmentation: classical image analysis, no trained weights (issue #8).

Three stages, all on the image reoriented to RAS so that every z-slice is an axial cut:

1. **Detection** (:func:`ring_score`). In each axial slice the cord is a disc surrounded by a
   ring of CSF: darker than the ring on T2w/T2*w (bright CSF), brighter on T1w (dark CSF). The
   score of a point is the contrast between an elliptical disc and the *weakest* of the four
   quadrants (anterior, posterior, left, right) of the ring around it, taken at three cord sizes.
   Using the weakest quadrant rather than the ring mean rejects one-sided edges (fat next to
   muscle, vessel walls), which have a strong mean contrast but no ring.
2. **Centerline** (:func:`track_centerline`). The best local maxima of each slice are linked by
   dynamic programming (Viterbi: detection score minus a penalty on the in-plane jump between
   slices), then the path is smoothed by a weighted local-linear fit that rejects outlying
   slices (residual > 3 MAD) and is iterated. Slices without a cord (brainstem, below the conus)
   have low scores and low weight, so they neither pull the path nor enter the mask.
3. **Boundary** (:func:`fit_boundary`). From the centre, 64 rays are cast in the axial plane. On
   each ray the edge is placed where the intensity crosses 40 % of the way from the cord level
   (median within 1.5 mm of the centre) to the first CSF extremum along the ray: a threshold
   between the two tissue levels, which also places edges blurred by partial volume. The
   textbook half-maximum (50 %) gives masks 5-25 % larger than the manual masks of bids-real;
   40 % was chosen on those images (docs/benchmarks.md, Builtin segmentation). Radii that
   disagree with their angular neighbours are replaced by the neighbours' median, then smoothed
   across slices. We chose rays + threshold over active contours, level sets or graph cuts
   because the cord is star-shaped around its centre, the rule has no weights to tune per
   contrast, it is sub-voxel accurate, and every slice yields an explicit measure of how well it
   worked. Centre and boundary are fitted twice (the second time around the centroid of the
   first mask).

T2*w (:data:`PROFILES`): cord and CSF differ little and the grey matter is brighter than the
white matter, so the ring detector alone is unreliable. :func:`track_cord_in_canal` first finds
the canal (bright against bone and muscle, quadrant mean), then the cord inside it (within
6 mm; cord score + canal score), because where the canal is wide its centre lies in the CSF
beside the cord. An edge is also accepted where the intensity first *drops* clearly (lateral
CSF is often not resolved). Dice 0.78-0.88 on bids-real (docs/benchmarks.md).

Confidence of a slice = (fraction of rays whose edge agrees within 1 mm with its angular
neighbours) x min(1, CNR / 5) x (area within 15-250 mm2), where CNR is the median CSF-minus-cord
contrast along the rays divided by the image noise (:func:`estimate_noise`). The overall
confidence is the mean over the slices kept in the mask, times an area plausibility factor
(:func:`area_plausibility`: 1 up to a median cord area of 100 mm2, 0 from 130 mm2), because a
mask that takes in CSF has consistent, high-contrast edges and would otherwise look confident.
Below :data:`LOW_CONFIDENCE` the pipeline flags the mask for review. It detects missing or
noisy contrast and grossly oversized masks, not a cord-like structure in the wrong place nor a
mask 10-20 % too large.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.signal import fftconvolve

from spinal_bidsapp.config import Contrast
from spinal_bidsapp.engines.base import EngineInfo, SegmentationResult
from spinal_bidsapp.image import Volume, load_volume, reorient, save_volume

logger = logging.getLogger(__name__)

CsfPolarity = Literal["bright", "dark"]
"""CSF brighter than the cord (T2w, T2*w) or darker (T1w)."""


@dataclass(frozen=True)
class ContrastProfile:
    """How the cord looks in one contrast: what to detect and which edge to follow."""

    csf: CsfPolarity
    detect: Literal["cord", "canal"]
    """``cord``: the cord inside its CSF ring; ``canal``: the whole canal (cord + CSF) against
    bone and muscle, for T2*w where cord and CSF differ too little for the ring."""
    edge: Literal["csf", "any"]
    """``csf``: edge towards the first CSF extremum; ``any``: towards the first clear change
    either way (T2*w, whose lateral CSF is often not resolved)."""


PROFILES: dict[str, ContrastProfile] = {
    "T2w": ContrastProfile(csf="bright", detect="cord", edge="csf"),
    "T1w": ContrastProfile(csf="dark", detect="cord", edge="csf"),
    "T2starw": ContrastProfile(csf="bright", detect="canal", edge="any"),
}

METHOD = "builtin ring detection + Viterbi centerline + half-maximum rays (spinal_bidsapp #8)"
LOW_CONFIDENCE = 0.5
"""Overall confidence below which a builtin segmentation is reported as needing review."""
KEEP_SLICE_CONFIDENCE = 0.25
"""Slices below this confidence are left out of the mask (no cord found there)."""

_CORD_SIZES_MM = ((4.0, 3.0), (5.0, 3.5), (6.5, 4.5))
"""Semi-axes (left-right, anterior-posterior) of the disc templates."""
_RING_MM = 2.5
_CANAL_SIZES_MM = ((7.0, 5.5), (9.0, 7.0))
_CORD_IN_CANAL_MM = 6.0
"""T2*w: the cord centre is searched within this distance of the canal centre."""
_N_RAYS = 64
_RAY_STEP_MM = 0.1
_RAY_MAX_MM = 11.0
_CNR_REF = 5.0
"""Cord-to-CSF contrast-to-noise ratio at which a slice gets full confidence."""
_AREA_RANGE_MM2 = (15.0, 250.0)
"""Cross-sectional areas outside this range are not a cord (confidence 0)."""
_MIN_RISE = 0.04
"""Smallest CSF-minus-cord contrast (normalised units) accepted as a CSF maximum."""
_MIN_RISE_ANY = 0.12
"""The same with ``edge='any'`` (T2*w): above the grey/white matter contrast."""
_CORE_ANY_MM = 3.0
"""With ``edge='any'``, the cord level is the median within this radius (grey and white)."""
_CLEAR_CHANGE = 0.15
"""Smallest cord-to-surroundings change (normalised units) followed by ``edge='any'``: above the
grey/white matter contrast of T2*w."""
_ITERATIONS = 2
"""Boundary fits; each after the first is centred on the previous mask."""
_WEAK = 0.3
"""Detections below this fraction of the 90th-percentile score get no weight in the path fit."""
_EDGE_FRACTION = 0.4
"""Edge threshold, as a fraction of the way from the cord level to the CSF extremum."""
_AREA_PLAUSIBLE_MM2 = (100.0, 130.0)
"""Median cord area (mm2) up to which the overall confidence is kept, and from which it is 0:
the manual masks of bids-real have medians of 50-80 mm2, the synthetic subjects 60-92 mm2; a
mask that includes CSF (sub-unf01 T2*w: 119 mm2 for a manual 77 mm2) is larger."""


@dataclass(frozen=True)
class CordSegmentation:
    """Result of :func:`segment_cord` (arrays on the input grid, world RAS+ mm)."""

    mask: NDArray[np.uint8]
    """(nx, ny, nz) binary cord mask on the input grid."""
    centerline_mm: NDArray[np.float64]
    """(K, 3) cord centre of each kept axial slice (RAS grid), inferior to superior."""
    slice_confidence: NDArray[np.float64]
    """(nz_ras,) confidence of every axial slice of the RAS grid, 0 where no cord was kept."""
    confidence: float
    """Mean confidence over the kept slices times :func:`area_plausibility` (0 when none)."""
    median_area_mm2: float
    """Median cross-sectional area of the mask over the kept axial slices (0 when none)."""


def area_plausibility(median_area_mm2: float) -> float:
    """1 for a normal cord area, falling linearly to 0 over :data:`_AREA_PLAUSIBLE_MM2`.

    >>> area_plausibility(80.0), area_plausibility(115.0), area_plausibility(140.0)
    (1.0, 0.5, 0.0)
    """
    low, high = _AREA_PLAUSIBLE_MM2
    return float(np.clip((high - median_area_mm2) / (high - low), 0.0, 1.0))


def segment_cord(data: NDArray, affine: NDArray[np.float64], *,
                 contrast: Contrast) -> CordSegmentation:
    """Segment the spinal cord of a 3-D image.

    Parameters
    ----------
    data : (nx, ny, nz) float, any orientation
    affine : (4, 4) float, voxel to world RAS+ mm
    contrast : {'T2w', 'T1w', 'T2starw'}
        Selects the :data:`PROFILES` entry.

    Returns
    -------
    CordSegmentation
    """
    source = Volume(np.asarray(data, np.float32), np.asarray(affine, np.float64))
    ras = reorient(source)
    zooms = ras.zooms
    image = _normalise(ras.data)
    noise = estimate_noise(image)
    profile = PROFILES[contrast]
    sign = 1.0 if profile.csf == "bright" else -1.0
    if profile.detect == "cord":
        centers, weights = track_centerline(ring_score(image, zooms, sign=sign), zooms)
    else:
        centers, weights = track_cord_in_canal(image, zooms, sign=sign)
    mask = np.zeros(ras.shape, np.uint8)
    conf = np.zeros(ras.shape[2])
    for _ in range(_ITERATIONS):
        radii, conf = fit_boundary(image, zooms, centers, sign=sign, noise=noise,
                                   either_way=profile.edge == "any")
        keep = _kept_slices(conf)
        mask = rasterise(radii, centers, zooms, ras.shape, keep)
        centers, weights = _recentre(mask, centers, weights, keep, zooms)
    conf = np.where(keep, conf, 0.0)
    areas = mask.sum(axis=(0, 1))[keep] * float(zooms[0] * zooms[1])
    median_area = float(np.median(areas)) if keep.any() else 0.0
    overall = float(conf[keep].mean()) * area_plausibility(median_area) if keep.any() else 0.0
    points = np.c_[centers[keep], np.flatnonzero(keep)] @ ras.affine[:3, :3].T + ras.affine[:3, 3]
    back = _to_source_grid(Volume(mask, ras.affine), source)
    logger.debug("builtin cord segmentation: %d slices kept, median area %.0f mm2, "
                 "confidence %.2f", keep.sum(), median_area, overall)
    return CordSegmentation(mask=back, centerline_mm=points, slice_confidence=conf,
                            confidence=overall, median_area_mm2=median_area)


def _normalise(data: NDArray) -> NDArray[np.float32]:
    """Intensities scaled so that the 1st-99.5th percentiles of non-zero voxels span 0-1."""
    values = data[data > 0] if (data > 0).sum() > 100 else data.ravel()
    low, high = np.percentile(values, [1.0, 99.5])
    return ((data - low) / max(float(high - low), 1e-6)).astype(np.float32)


def estimate_noise(image: NDArray) -> float:
    """Noise SD from neighbour differences along the first axis (robust MAD), floor 0.005."""
    diff = np.diff(image, axis=0)
    diff = diff[diff != 0]
    if diff.size == 0:
        return 0.005
    return max(float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2)), 0.005)


def _ellipse(zooms: NDArray, a_mm: float, b_mm: float, half: int) -> NDArray[np.float64]:
    x = np.arange(-half, half + 1) * zooms[0]
    y = np.arange(-half, half + 1) * zooms[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    return np.asarray((xx / a_mm) ** 2 + (yy / b_mm) ** 2)


def ring_score(image: NDArray, zooms: NDArray, *, sign: float,
               sizes: tuple[tuple[float, float], ...] = _CORD_SIZES_MM,
               ring_mm: float = _RING_MM,
               combine: Literal["weakest", "second", "mean"] = "weakest"
               ) -> NDArray[np.float32]:
    """Disc-in-ring score of every voxel (axial slices = last axis).

    ``sign * (ring - disc mean)`` where ring is the weakest of the four ring quadrants (or the
    second weakest, or their mean), maximised over the disc ``sizes`` (semi-axes left-right,
    anterior-posterior, mm); the image is smoothed first (1 mm in-plane, and 1 mm across slices
    when they are <= 2 mm).
    """
    sigma_z = 1.0 / zooms[2] if zooms[2] <= 2.0 else 0.0
    smooth = ndimage.gaussian_filter(image, (1.0 / zooms[0], 1.0 / zooms[1], sigma_z))
    best = np.full(image.shape, -np.inf, np.float32)
    for a_mm, b_mm in sizes:
        half = int(np.ceil((a_mm + ring_mm) / min(zooms[0], zooms[1])))
        padded = np.pad(smooth, ((half, half), (half, half), (0, 0)), mode="edge")
        inner = _ellipse(zooms, a_mm, b_mm, half)
        outer = _ellipse(zooms, a_mm + ring_mm, b_mm + ring_mm, half)
        disc = _mean_filter(padded, inner <= 1.0, half)
        x, y = np.meshgrid(np.arange(-half, half + 1), np.arange(-half, half + 1),
                           indexing="ij")
        ring = (inner > 1.0) & (outer <= 1.0)
        quadrants = (np.abs(y) >= np.abs(x)) & (y > 0), (np.abs(y) >= np.abs(x)) & (y < 0), \
            (np.abs(x) > np.abs(y)) & (x > 0), (np.abs(x) > np.abs(y)) & (x < 0)
        means = [_mean_filter(padded, ring & q, half) for q in quadrants]
        stack = sign * np.stack(means)
        if combine == "mean":
            ring_value = stack.mean(axis=0)
        else:
            ring_value = np.sort(stack, axis=0)[0 if combine == "weakest" else 1]
        best = np.maximum(best, (ring_value - sign * disc).astype(np.float32))
    return best


def track_cord_in_canal(image: NDArray, zooms: NDArray, *,
                        sign: float) -> tuple[NDArray, NDArray]:
    """Cord path found in two stages: the canal, then the cord inside it (T2*w).

    The canal (bright against bone and muscle, quadrant mean) is found reliably, but where the
    canal is wide (upper cervical cord) its centre lies in the CSF beside the cord. The second
    stage tracks the sum of the normalised canal score and a cord score (disc darker than its
    ring, second-weakest quadrant: tolerates one side without CSF), searched only within
    :data:`_CORD_IN_CANAL_MM` of the first path.

    Returns
    -------
    centers : (nz, 2) float, voxel (x, y)
    weights : (nz,) float, 0-1
    """
    canal = ring_score(image, zooms, sign=-sign, sizes=_CANAL_SIZES_MM, ring_mm=3.0,
                       combine="mean")
    canal_centers, _ = track_centerline(canal, zooms)
    cord = ring_score(image, zooms, sign=sign, combine="second")
    score = cord / _robust_max(cord) + canal / _robust_max(canal)
    x = np.arange(image.shape[0])[:, None]
    y = np.arange(image.shape[1])[None, :]
    for z in range(image.shape[2]):
        far = np.hypot((x - canal_centers[z, 0]) * zooms[0],
                       (y - canal_centers[z, 1]) * zooms[1]) > _CORD_IN_CANAL_MM
        score[:, :, z][far] = -1.0
    return track_centerline(score, zooms)


def _robust_max(score: NDArray) -> float:
    return max(float(np.percentile(score, 99.9)), 1e-6)


def _mean_filter(padded: NDArray, footprint: NDArray[np.bool_], half: int) -> NDArray:
    kernel = footprint.astype(np.float32) / footprint.sum()
    out = fftconvolve(padded, kernel[::-1, ::-1, None], mode="same", axes=(0, 1))
    return out[half:-half, half:-half]


def _candidates(score: NDArray, zooms: NDArray, k: int = 6) -> tuple[NDArray, NDArray]:
    """Top ``k`` local maxima per slice: positions (nz, k, 2) voxels and scores (nz, k)."""
    size = (max(3, round(4.0 / float(zooms[0]))), max(3, round(4.0 / float(zooms[1]))), 1)
    peaks = (score == ndimage.maximum_filter(score, size=size)) & (score > 0)
    nz = score.shape[2]
    pos = np.zeros((nz, k, 2))
    val = np.full((nz, k), -1.0)
    for z in range(nz):
        ij = np.argwhere(peaks[:, :, z])
        if len(ij) == 0:
            ij = np.array([np.unravel_index(np.argmax(score[:, :, z]), score.shape[:2])])
        order = np.argsort(score[ij[:, 0], ij[:, 1], z])[::-1][:k]
        pos[z, :len(order)] = ij[order]
        val[z, :len(order)] = score[ij[order, 0], ij[order, 1], z]
    return pos, val


def track_centerline(score: NDArray, zooms: NDArray, *,
                     jump_penalty: float = 0.15) -> tuple[NDArray, NDArray]:
    """Most plausible cord path through the slice detections, smoothed robustly.

    Returns
    -------
    centers : (nz, 2) float, voxel (x, y) of the cord centre in every slice
    weights : (nz,) float, detection score of each slice relative to the best slice (0-1)
    """
    pos, val = _candidates(score, zooms)
    scale = max(float(np.percentile(val[:, 0], 90)), 1e-6)
    node = np.clip(val / scale, -1.0, 1.5)
    nz, k = val.shape
    total = node[0].copy()
    back = np.zeros((nz, k), int)
    for z in range(1, nz):
        jump = np.linalg.norm((pos[z][:, None, :] - pos[z - 1][None, :, :]) * zooms[:2], axis=2)
        cost = total[None, :] - jump_penalty * jump ** 2 / zooms[2]
        back[z] = np.argmax(cost, axis=1)
        total = node[z] + cost[np.arange(k), back[z]]
    path = np.zeros(nz, int)
    path[-1] = int(np.argmax(total))
    for z in range(nz - 1, 0, -1):
        path[z - 1] = back[z, path[z]]
    raw = pos[np.arange(nz), path]
    weights = np.clip((node[np.arange(nz), path] - _WEAK) / (1.0 - _WEAK), 0.0, 1.0)
    return smooth_path(raw, weights, zooms), weights


def smooth_path(raw: NDArray, weights: NDArray, zooms: NDArray, *,
                bandwidth_mm: float = 8.0) -> NDArray[np.float64]:
    """Weighted local-linear fit of (nz, 2) voxel positions along z, rejecting outliers."""
    nz = len(raw)
    z_mm = np.arange(nz) * zooms[2]
    bw = max(bandwidth_mm, 1.5 * zooms[2])
    inlier = weights > 0.05
    fit = raw.astype(np.float64)
    for _ in range(3):
        w = weights * inlier + 1e-6
        fit = _local_linear(z_mm, raw, w, bw)
        resid = np.linalg.norm((raw - fit) * zooms[:2], axis=1)
        mad = np.median(resid[inlier]) if inlier.any() else 0.0
        inlier = (weights > 0.05) & (resid <= max(3.0 * 1.4826 * mad, 2.0))
    return fit


def _local_linear(t: NDArray, y: NDArray, w: NDArray, bandwidth: float) -> NDArray[np.float64]:
    kern = np.exp(-0.5 * ((t[:, None] - t[None, :]) / bandwidth) ** 2) * w[None, :]
    out = np.zeros_like(y, dtype=np.float64)
    for i in range(len(t)):
        sw = kern[i].sum()
        tm = (kern[i] * t).sum() / sw
        ym = (kern[i][:, None] * y).sum(axis=0) / sw
        var = (kern[i] * (t - tm) ** 2).sum()
        slope = ((kern[i] * (t - tm))[:, None] * (y - ym)).sum(axis=0) / var if var > 1e-9 \
            else 0.0
        out[i] = ym + slope * (t[i] - tm)
    return out


def fit_boundary(image: NDArray, zooms: NDArray, centers: NDArray, *,
                 sign: float, noise: float, either_way: bool = False
                 ) -> tuple[NDArray, NDArray]:
    """Cord radius along ``_N_RAYS`` in-plane rays in every slice (half-maximum rule).

    Returns
    -------
    radii : (nz, n_rays) float, mm
    confidence : (nz,) float, 0-1
    """
    smooth = ndimage.gaussian_filter(image, (0.5 / zooms[0], 0.5 / zooms[1], 0.0))
    angles = np.linspace(0.0, 2 * np.pi, _N_RAYS, endpoint=False)
    r = np.arange(0.0, _RAY_MAX_MM, _RAY_STEP_MM)
    nz = image.shape[2]
    radii = np.full((nz, _N_RAYS), np.nan)
    conf = np.zeros(nz)
    for z in range(nz):
        xs = centers[z, 0] + np.cos(angles)[:, None] * r[None, :] / zooms[0]
        ys = centers[z, 1] + np.sin(angles)[:, None] * r[None, :] / zooms[1]
        prof = sign * ndimage.map_coordinates(smooth[:, :, z], [xs, ys], order=1,
                                              mode="nearest")
        radii[z], conf[z] = _ray_edges(prof, r, either_way=either_way, noise=noise)
    radii = _regularise(radii, conf, zooms)
    return radii, conf


def _ray_edges(prof: NDArray, r: NDArray, *, either_way: bool,
               noise: float) -> tuple[NDArray, float]:
    """Half-maximum edge on each ray; CSF = first local maximum clearly above the cord level.

    With ``either_way``, a ray that drops clearly (bone, muscle) before reaching a CSF maximum
    is mirrored about the cord level, so that the same rule finds the edge of that drop.
    """
    cord = float(np.median(prof[:, r <= (_CORE_ANY_MM if either_way else 1.5)]))
    start = int(np.searchsorted(r, 1.5))
    min_rise = _MIN_RISE_ANY if either_way else _MIN_RISE
    rises = np.stack([_local_max(ray, start) for ray in prof]) & (prof - cord > min_rise)
    drops = (cord - prof > _CLEAR_CHANGE) & (np.arange(len(r)) >= start)
    edges = np.full(len(prof), np.nan)
    contrasts = []
    for i in range(len(prof)):
        rise, drop = np.flatnonzero(rises[i]), np.flatnonzero(drops[i])
        ray = prof[i]
        if either_way and len(drop) and (len(rise) == 0 or drop[0] < rise[0]):
            ray = 2 * cord - ray
            rise = np.flatnonzero(_local_max(ray, start) & (ray - cord > _CLEAR_CHANGE))
        if len(rise) == 0:
            continue
        p = rise[0]
        half = cord + _EDGE_FRACTION * (ray[p] - cord)
        below = np.flatnonzero(ray[:p] < half)
        if len(below) == 0:
            continue
        j = below[-1]
        t = (half - ray[j]) / max(ray[j + 1] - ray[j], 1e-9)
        edges[i] = r[j] + t * (r[1] - r[0])
        contrasts.append(ray[p] - cord)
    return edges, _slice_confidence(edges, contrasts, noise)


def _slice_confidence(edges: NDArray, contrasts: list[float], noise: float) -> float:
    """Consistent rays x contrast-to-noise x plausible area (see the module docstring)."""
    ok = np.isfinite(edges)
    if ok.sum() < 3:
        return 0.0
    idx = np.arange(len(edges))
    filled = np.interp(idx, idx[ok], edges[ok], period=len(edges))
    smooth = ndimage.median_filter(filled, size=9, mode="wrap")
    consistent = float((ok & (np.abs(edges - smooth) <= 1.0)).mean())
    cnr = float(np.median(contrasts)) / noise
    area_mm2 = 0.5 * float((smooth ** 2).sum()) * 2 * np.pi / len(edges)
    plausible = _AREA_RANGE_MM2[0] <= area_mm2 <= _AREA_RANGE_MM2[1]
    return consistent * min(1.0, cnr / _CNR_REF) * float(plausible)


def _local_max(ray: NDArray, start: int) -> NDArray[np.bool_]:
    """Local maxima of a 1-D profile from index ``start`` on (its last sample counts)."""
    peak = np.zeros(len(ray), bool)
    peak[1:-1] = (ray[1:-1] >= ray[:-2]) & (ray[1:-1] >= ray[2:])
    peak[-1] = True
    peak[:start] = False
    return peak


def _regularise(radii: NDArray, conf: NDArray, zooms: NDArray) -> NDArray[np.float64]:
    """Fill missing rays, replace angular outliers, smooth across slices."""
    out = radii.copy()
    n = radii.shape[1]
    idx = np.arange(n)
    for z in range(len(out)):
        ok = np.isfinite(out[z])
        if ok.sum() < 3:
            out[z] = np.nan
            continue
        out[z] = np.interp(idx, idx[ok], out[z, ok], period=n)
        med = ndimage.median_filter(out[z], size=9, mode="wrap")
        out[z] = np.where(np.abs(out[z] - med) > 1.0, med, out[z])
        out[z] = ndimage.uniform_filter1d(out[z], 3, mode="wrap")
    bad = ~np.isfinite(out[:, 0]) | (conf < KEEP_SLICE_CONFIDENCE)
    good = np.flatnonzero(~bad)
    if len(good):
        for z in np.flatnonzero(bad):
            out[z] = out[good[np.argmin(np.abs(good - z))]]
    if zooms[2] <= 2.0 and len(out) >= 3:
        out = ndimage.median_filter(out, size=(3, 1), mode="nearest")
    return out


def _kept_slices(conf: NDArray) -> NDArray[np.bool_]:
    """Slices of the longest run whose confidence (median over 3 slices) is high enough."""
    ok = ndimage.median_filter(conf, size=min(3, len(conf)), mode="nearest") \
        >= KEEP_SLICE_CONFIDENCE
    labels, n = ndimage.label(ok)
    if n == 0:
        return np.zeros_like(ok)
    sizes = ndimage.sum(ok, labels, range(1, n + 1))
    return np.asarray(labels == 1 + int(np.argmax(sizes)))


def rasterise(radii: NDArray, centers: NDArray, zooms: NDArray, shape: tuple[int, int, int],
              keep: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """Voxels whose centre lies inside the star-shaped contour of each kept slice."""
    mask = np.zeros(shape, np.uint8)
    n = radii.shape[1]
    x = np.arange(shape[0])[:, None]
    y = np.arange(shape[1])[None, :]
    for z in np.flatnonzero(keep):
        dx = (x - centers[z, 0]) * zooms[0]
        dy = (y - centers[z, 1]) * zooms[1]
        angle = np.mod(np.arctan2(dy, dx), 2 * np.pi) / (2 * np.pi) * n
        limit = np.interp(angle.ravel(), np.arange(n + 1),
                          np.r_[radii[z], radii[z, 0]]).reshape(angle.shape)
        mask[:, :, z] = np.hypot(dx, dy) <= limit
    return mask


def _recentre(mask: NDArray, centers: NDArray, weights: NDArray, keep: NDArray,
              zooms: NDArray) -> tuple[NDArray, NDArray]:
    """Centroid of each kept slice of the mask, smoothed like the detections."""
    raw = centers.copy()
    w = weights.copy()
    for z in np.flatnonzero(keep):
        ij = np.argwhere(mask[:, :, z])
        if len(ij):
            raw[z] = ij.mean(axis=0)
            w[z] = 1.0
    return smooth_path(raw, w, zooms, bandwidth_mm=4.0), w


def _to_source_grid(mask: Volume, source: Volume) -> NDArray[np.uint8]:
    """Undo :func:`reorient` (a pure axis permutation and flip)."""
    back = reorient(mask, tuple(source.axcodes))  # type: ignore[arg-type]
    return np.asarray(back.data, np.uint8)


class BuiltinCordSegmenter:
    """:class:`~spinal_bidsapp.engines.base.CordSegmenter` on :func:`segment_cord`."""

    def __init__(self, version: str) -> None:
        self.info = EngineInfo(name="spinal_bidsapp-builtin", version=version)

    def segment_cord(self, image: Path, *, contrast: Contrast,
                     out_dir: Path) -> SegmentationResult:
        vol = load_volume(image)
        result = segment_cord(vol.data, vol.affine, contrast=contrast)
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        out = save_volume(vol.with_data(result.mask), Path(out_dir) / f"{name}_seg.nii.gz",
                          dtype=np.uint8)
        return SegmentationResult(cord_mask=out, confidence=result.confidence)
