"""The strip in front of the cord and its match against PAM50's (steps 1-4 of the builtin disc
labelling, :mod:`spinal_bidsapp.engines.builtin.disclabel`).

These are the array functions of the pattern match, kept apart from the labelling that uses
them so that each can be read, and tested, on arrays alone: no file, no log above DEBUG.

1. **Strip.** Along the cord centerline (fitted to the cord mask), the image is sampled every
   1 mm of arc on a band in front of the cord: 6-24 mm along the anterior normal (the canal's
   front wall, the discs and the vertebral bodies), averaged over +-2 mm left-right. The same
   strip is sampled in the PAM50 T2 template along its straight centerline, where the disc
   positions are known (``PAM50_label_disc``).
2. **Pattern.** Each depth row is high-pass filtered (minus its 8 mm Gaussian average) and scaled
   to unit variance, so only the alternation of discs and vertebral bodies is left, not the
   intensity level or the bias field. For T1w the template pattern is inverted. This fits
   neither T1w polarity exactly: on sub-errsm30's T1w the discs are bright and the bodies dark
   at every depth, whereas the PAM50 T2 strip is bright at mid-body within 12 mm of the cord
   (epidural veins) and bright at the discs deeper; on that T1w, the inverted pattern locates
   the discs within 3 mm given one disc, but without a hint it does not find the level
   (flagged, docs/benchmarks.md).
3. **Match.** A linear map ``template arc = offset + scale * subject arc`` (scale 0.8-1.25: body
   height varies between subjects) is searched exhaustively; the score is the normalised
   cross-correlation of the two strips over their overlap. A hint ``init_disc=(value, z_mm)``
   (like SCT's ``-initz``) keeps only maps that put that disc within 4 mm of ``z_mm``.
4. **Refine.** Each template disc mapped into the field of view is moved to the best local
   match (+-4 mm) of a 24 mm window of the template strip around that disc
   (:func:`refine_disc`), which absorbs level-to-level differences in body height.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.geometry.discs import discs_from_label_array, project_discs
from spinal_bidsapp.image import mm_to_vox

DEPTHS_MM = np.arange(6.0, 24.5, 1.0)
"""Depths of the strip rows along the anterior normal (mm in front of the cord centre)."""
_LATERAL_MM = (-2.0, -1.0, 0.0, 1.0, 2.0)
_HIGHPASS_MM = 8.0
_SCALES = np.arange(0.8, 1.2501, 0.025)
_HINT_TOLERANCE_MM = 4.0
_REFINE_MM = 4.0
_WINDOW_MM = 12.0
MIN_OVERLAP_MM = 30.0
"""Shortest overlap of subject and template strips a match is scored on (and so the shortest
cord the labelling accepts)."""
AMBIGUITY_MM = 8.0
"""Maps that put the middle of the subject more than this apart read different levels."""


@dataclass(frozen=True)
class DiscTemplate:
    """PAM50 strip and disc positions, computed once per template (see :func:`template_strip`)."""

    strip: NDArray[np.float64]
    """(n_depths, n_arc) high-passed strip, 1 mm arc steps from the inferior end."""
    disc_arc_mm: dict[int, float]
    """Disc value -> arc position (mm) on the template centerline."""


@dataclass(frozen=True)
class StripMatch:
    """Result of :func:`match_strip`: ``template arc = offset + scale * subject arc``."""

    offset: float
    scale: float
    ncc: float
    runner_up: tuple[float, float, float] | None
    """``(offset, scale, ncc)`` of the best map that puts the middle of the subject more than
    :data:`AMBIGUITY_MM` from the best one (another level); None if there is none."""

    @property
    def margin(self) -> float:
        """``ncc`` minus the runner-up's: how unambiguous the level identification is."""
        return self.ncc - (self.runner_up[2] if self.runner_up is not None else -1.0)


def sample_strip(data: NDArray, affine: NDArray[np.float64], line: Centerline
                 ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """High-passed strip in front of the cord, every 1 mm of arc.

    Returns
    -------
    strip : (n_depths, n_arc) float, unit variance per depth row
    arc_mm : (n_arc,) float, mm, arc position of each column (from the inferior end)
    """
    arc = np.arange(0.0, line.length_mm + 1e-9, 1.0)
    idx = np.clip(np.rint(arc / max(line.step_mm, 1e-9)).astype(int), 0, len(line.arc_mm) - 1)
    points, ant, right = line.points_mm[idx], line.normals_anterior[idx], line.normals_right[idx]
    rows = np.zeros((len(DEPTHS_MM), len(arc)))
    for d, depth in enumerate(DEPTHS_MM):
        for lateral in _LATERAL_MM:
            pts = points + depth * ant + lateral * right
            rows[d] += ndimage.map_coordinates(np.asarray(data, np.float64),
                                               mm_to_vox(affine, pts).T, order=1,
                                               mode="nearest")
    rows -= ndimage.gaussian_filter1d(rows, _HIGHPASS_MM, axis=1, mode="nearest")
    rows /= rows.std(axis=1, keepdims=True) + 1e-9
    return rows, line.arc_mm[idx]


def template_strip(t2: NDArray, t2_affine: NDArray[np.float64], cord: NDArray,
                   cord_affine: NDArray[np.float64], label_disc: NDArray,
                   label_affine: NDArray[np.float64]) -> DiscTemplate:
    """Strip and disc positions of the PAM50 template (T2, cord and disc label arrays)."""
    line = centerline_from_mask(cord, cord_affine)
    strip, _ = sample_strip(t2, t2_affine, line)
    discs = project_discs(discs_from_label_array(label_disc, label_affine), line)
    return DiscTemplate(strip=strip, disc_arc_mm={int(v): float(s) for v, s in
                                                  zip(discs.values, discs.arc_mm, strict=True)})


def _resample(strip: NDArray, positions_mm: NDArray) -> tuple[NDArray, NDArray[np.bool_]]:
    """Columns of a 1 mm strip at fractional arc positions; mask of positions inside it."""
    inside = (positions_mm >= 0) & (positions_mm <= strip.shape[1] - 1)
    cols = ndimage.map_coordinates(strip, [np.repeat(np.arange(strip.shape[0]), len(positions_mm)),
                                           np.tile(positions_mm, strip.shape[0])], order=1,
                                   mode="nearest").reshape(strip.shape[0], -1)
    return cols, inside


def _ncc(a: NDArray, b: NDArray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    return float((a * b).sum() / (np.sqrt((a * a).sum() * (b * b).sum()) + 1e-9))


def match_strip(subject: NDArray, subject_arc: NDArray, template: DiscTemplate, *,
                invert: bool, hint: tuple[int, float] | None = None) -> StripMatch:
    """Best linear map from the subject strip onto the template strip, and its runner-up.

    ``hint`` is ``(disc value, subject arc mm)``. The runner-up is the best map that puts the
    middle of the subject more than :data:`AMBIGUITY_MM` away from the best one (another
    level); without a hint, the margin between the two measures how unambiguous the level
    identification is.

    A subject strip cut from the template at arc 70 mm maps back there, scale 1:

    >>> strip = np.random.default_rng(0).standard_normal((3, 200))
    >>> tpl = DiscTemplate(strip=strip, disc_arc_mm={3: 150.0})
    >>> match = match_strip(strip[:, 70:130], np.arange(0.0, 60.0), tpl, invert=False)
    >>> round(match.offset, 6), round(match.scale, 6), round(match.ncc, 3)
    (70.0, 1.0, 1.0)
    """
    pattern = -template.strip if invert else template.strip
    n_tpl = pattern.shape[1]
    middle = 0.5 * subject_arc[-1]
    tried: list[tuple[float, float, float]] = []
    for scale in _SCALES:
        if hint is not None:
            centre = template.disc_arc_mm[hint[0]] - scale * hint[1]
            offsets = np.arange(centre - _HINT_TOLERANCE_MM, centre + _HINT_TOLERANCE_MM + 0.1,
                                1.0)
        else:
            offsets = np.arange(-scale * subject_arc[-1], n_tpl, 1.0)
        for offset in offsets:
            cols, inside = _resample(pattern, offset + scale * subject_arc)
            if inside.sum() * scale < min(MIN_OVERLAP_MM, 0.8 * subject_arc[-1] * scale):
                continue
            tried.append((float(offset), float(scale),
                          _ncc(subject[:, inside], cols[:, inside])))
    if not tried:
        raise InputDataError("the cord is longer than the template strip; cannot match discs")
    scores = np.array([t[2] for t in tried])
    centres = np.array([t[0] + t[1] * middle for t in tried])
    best = int(np.argmax(scores))
    other = np.flatnonzero(np.abs(centres - centres[best]) > AMBIGUITY_MM)
    runner_up = tried[int(other[np.argmax(scores[other])])] if other.size else None
    return StripMatch(*tried[best], runner_up=runner_up)


def refine_disc(subject: NDArray, subject_arc: NDArray, pattern: NDArray, tpl_arc: float,
                guess: float, scale: float) -> float:
    """Subject arc of one disc: best local match of the template window around it."""
    window = np.arange(-_WINDOW_MM, _WINDOW_MM + 0.1, 1.0)
    best, best_score = guess, -np.inf
    for shift in np.arange(-_REFINE_MM, _REFINE_MM + 0.1, 0.5):
        sub_pos = guess + shift + window / scale
        ok = (sub_pos >= subject_arc[0]) & (sub_pos <= subject_arc[-1])
        if ok.sum() < len(window) // 3:
            return guess
        sub_cols, _ = _resample(subject, np.interp(sub_pos[ok], subject_arc,
                                                   np.arange(len(subject_arc))))
        tpl_cols, _ = _resample(pattern, tpl_arc + window[ok])
        score = _ncc(sub_cols, tpl_cols)
        if score > best_score:
            best, best_score = float(guess + shift), score
    return float(best)
