"""Builtin intervertebral disc labelling: match the spine next to the cord against PAM50 (#8).

Method (our own, after the idea of SCT's ``sct_label_vertebrae``, see
docs/reference/sct.md §7.1; its C2/C3 detector replaced by a classical C2 anchor, step 0):

0. **C2 anchor** (:func:`c2c3_anchor`, no hint given). When the field shows the top of the
   spine, the topmost disc below >= 20 mm of disc-free bone (C2 body and dens; other cervical
   vertebrae are 15-20 mm), with two cervical-sized vertebrae (12-21 mm) below it, is C2/C3.
   If the pattern match (step 3) puts C2/C3 more than 8 mm from it, the anchor sets the level
   (the match is redone as if hinted ``3@anchor``) and the confidence is capped at 0.4
   (flagged); if they agree, the confidence is ``min(1, ncc / 0.3)``. No anchor: unchanged.
   When the image shows no C2, an anchor found on another image of the same session
   (:func:`find_session_cues`, e.g. a T1w that reaches higher than its T2w) is used in the same
   way if it lies within this cord's height.

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
   match (+-4 mm) of a 24 mm window of the template strip around that disc, which absorbs
   level-to-level differences in body height.
5. **Disc band.** From the disc the level is surest of (the hinted or anchored one, else the one
   whose band is nearest its step-4 position), the discs are found one by one up and down the
   cord on the disc band (:func:`walk_discs`: the next band within +-30 % of a vertebra of where
   the template spacing puts it), as far as each direction has bands; so a spine whose
   proportions differ from PAM50's is followed vertebra by vertebra, not by one linear map.
   Each remaining disc (but disc 2, the C1/C2 joint, which has no disc band) is moved
   to its own extremum within +-4 mm on the mean of the rows 10-16 mm deep (mid vertebral body,
   where a disc is one band between two dark endplates; smoothed 1 mm; sub-mm by a parabola):
   the brightest point on T2w-like contrasts; on T1w the sign of that band at the matched discs
   decides (bright discs on sub-errsm30's gradient-echo T1w, dark on a spin-echo T1w). Where
   the extremum is at the edge of the search or within 2 mm of the end of the strip (a disc cut
   by the field of view), the disc band of another image of the session is searched the same
   way (:class:`SessionCues`: a peak within +-4 mm, at a height this cord covers); failing
   that, the step 4 position is kept. This places the disc centre: PAM50 phantoms within 1 mm;
   the sub-errsm30 reference labels sit at the upper endplate, 2-3 mm above the centre
   (docs/benchmarks.md).

The labels are single voxels on the cord centerline (SCT numbering, value N = disc above
vertebra N). The cervical pattern repeats, so a short field of view can match one level off
almost as well as at the right level. Without a hint, ``confidence`` therefore measures the
*margin* between the best match and the best match one level away (> 8 mm in the template):
``min(1, margin / 0.1)``. On sub-errsm30 (55 mm of cervical spine) the margin is 0.001-0.04 and
the match is right: C3/C4 and C4/C5 within 3 mm of the manual labels, in agreement
with SCT's body labels (and C5/C6, cut by the field, when placed on the session T1w's band);
on PAM50 phantoms (C1-T1) the margin is 0.07-0.44 and every disc is within 1 mm. With a hint
the level is the user's and ``confidence`` is ``min(1, ncc / 0.3)``.
Below :data:`LOW_CONFIDENCE` the pipeline flags the labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.config import Contrast
from spinal_bidsapp.engines.base import DiscLabelResult, EngineInfo
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.geometry.discs import discs_from_label_array, project_discs
from spinal_bidsapp.image import load_mask, load_volume, mm_to_vox, save_volume

logger = logging.getLogger(__name__)

METHOD = "builtin PAM50 strip matching in front of the cord (spinal_bidsapp #8)"
LOW_CONFIDENCE = 0.5
"""Confidence below which the disc identification is reported as uncertain: without a hint, a
match one level away correlates within 0.05 of the best one; with a hint, the best correlation
is below 0.15."""

_DEPTHS_MM = np.arange(6.0, 24.5, 1.0)
_LATERAL_MM = (-2.0, -1.0, 0.0, 1.0, 2.0)
_HIGHPASS_MM = 8.0
_SCALES = np.arange(0.8, 1.2501, 0.025)
_HINT_TOLERANCE_MM = 4.0
_REFINE_MM = 4.0
_WINDOW_MM = 12.0
_MIN_OVERLAP_MM = 30.0
_AMBIGUITY_MM = 8.0
_MARGIN_REF = 0.1
_NCC_REF = 0.3
_BAND_MM = (10.0, 16.0)
_PEAK_SIGMA_MM = 1.0
_PEAK_MM = 4.0
_EDGE_MM = 2
_WALK_WIDTH = 0.3
"""Search half-width of :func:`walk_discs`, as a fraction of the expected disc spacing."""
_NOT_A_DISC = 2
"""PAM50's disc 2 is the C1/C2 joint beside the dens: no disc band to refine on."""
C2C3 = 3
"""SCT value of the C2/C3 disc, the one the C2 anchor names."""
_C2_RUN_MM = 20.0
"""Disc-free bone above C2/C3 in the field of view: C2 (body + dens) is 30-40 mm tall from its
lower disc to the dens tip, every other cervical vertebra 15-20 mm from disc to disc."""
_C2_PEAK = 0.5
"""Minimum height of a disc peak on the disc band (mean of unit-variance strip rows)."""
_C2_QUIET = 0.35
"""Above the anchor disc (beyond its own band) the band stays below this fraction of the anchor
peak: not even the lower half of a disc cut by the end of the field."""
_C2_QUIET_FROM_MM = 5.0
"""Where the anchor disc's own band has ended (half a disc height plus the 1 mm smoothing)."""
_LABELLED_FRACTION = 0.5
"""At least this fraction of the subject's cord must map between the template's first and last
labelled discs (widened by one level) for a confident level: beyond them the pattern match
aligns vertebrae the template cannot name (PAM50_small has no disc below T12/L1, so a lumbar
image matches the bottom of the strip)."""
_OFF_TEMPLATE_CONFIDENCE = 0.4
"""Confidence cap (below :data:`LOW_CONFIDENCE`: flagged) for such a match."""
_LEVEL_MM = 20.0
_C2_SPACING_MM = (12.0, 21.0)
"""Disc-to-disc spacing of the two vertebrae below the anchor (cervical context): C3-C7 are
15-20 mm (PAM50 16-18 mm), thoracic vertebrae 22-30 mm, lumbar 28-45 mm."""
_C2_BELOW = 2
"""Vertebrae below the anchor whose cervical spacing is required."""
_C2_SKEW = 0.5
"""On T1w, |skewness| of the disc band below which its polarity is not trusted (no anchor)."""
_C2_DISAGREE = 0.4
"""Confidence cap when the anchor overrules the pattern (below :data:`LOW_CONFIDENCE`)."""


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
    :data:`_AMBIGUITY_MM` from the best one (another level); None if there is none."""

    @property
    def margin(self) -> float:
        """``ncc`` minus the runner-up's: how unambiguous the level identification is."""
        return self.ncc - (self.runner_up[2] if self.runner_up is not None else -1.0)


@dataclass(frozen=True)
class AlternativeReading:
    """The other level the evidence allows, stated on one labelled disc, so that a reviewer
    can check the one disc and confirm or correct the levels with ``--init-disc``."""

    value: int
    """Our value of that disc."""
    point_mm: NDArray[np.float64]
    """(3,) world position of that disc."""
    alternative_value: int
    """Its value under the other reading."""
    ncc: float
    """Correlation of the other reading (the pattern match's runner-up, or the pattern match
    itself when the C2 anchor overruled it)."""


@dataclass(frozen=True)
class DiscLabelling:
    """Result of :func:`label_discs`."""

    labels: NDArray[np.uint8]
    """(nx, ny, nz) single-voxel disc labels on the cord centerline, input grid."""
    disc_points_mm: dict[int, NDArray[np.float64]]
    """Disc value -> (3,) world RAS+ mm position on the centerline."""
    confidence: float
    """0-1: without a hint ``min(1, margin / 0.1)``, with one ``min(1, ncc / 0.3)``."""
    ncc: float
    """Normalised cross-correlation of the best match (-1..1)."""
    scale: float
    """Subject-to-template arc-length ratio of the match."""
    margin: float | None
    """Correlation of the best match minus that of the best match one level away; None when
    ``init_disc`` fixed the level."""
    c2c3_anchor_mm: NDArray[np.float64] | None = None
    """(3,) world position of the C2/C3 disc found by :func:`c2c3_anchor` (None: absent, or
    ``init_disc`` given)."""
    anchor_agrees: bool | None = None
    """Whether the unhinted pattern match put C2/C3 within 8 mm of the anchor (None: no anchor);
    when it does not, the anchor sets the level."""
    anchor_from_session: bool = False
    """The anchor was found on another image of the session (``session``), not on
    this one."""
    alternative: AlternativeReading | None = None
    """Without a hint: the runner-up level (or, when the anchor overruled the pattern, the
    pattern's level); None with a hint."""
    discs_from_session: tuple[int, ...] = ()
    """Discs without a band of their own here (cut by the field of view, or indistinct), placed
    on the band seen on another image of the session."""


@dataclass(frozen=True)
class SessionCues:
    """What another image of the same session (same scanner frame) shows of the spine, for an
    image whose field shows less: a T1w often reaches higher or lower than the T2w it goes with.
    Head motion between the two scans is not corrected (a mm or two)."""

    c2c3_mm: NDArray[np.float64] | None
    """(3,) world position of its C2/C3 disc by :func:`c2c3_anchor`; None if it shows no C2."""
    disc_peaks_mm: NDArray[np.float64]
    """(n, 3) world positions of its disc band peaks (values >= 0.5, sub-mm, on its cord
    centerline, none within 2 mm of its field's ends); their levels are not known."""


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
    rows = np.zeros((len(_DEPTHS_MM), len(arc)))
    for d, depth in enumerate(_DEPTHS_MM):
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
    middle of the subject more than :data:`_AMBIGUITY_MM` away from the best one (another
    level); without a hint, the margin between the two measures how unambiguous the level
    identification is.
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
            if inside.sum() * scale < min(_MIN_OVERLAP_MM, 0.8 * subject_arc[-1] * scale):
                continue
            tried.append((float(offset), float(scale),
                          _ncc(subject[:, inside], cols[:, inside])))
    if not tried:
        raise InputDataError("the cord is longer than the template strip; cannot match discs")
    scores = np.array([t[2] for t in tried])
    centres = np.array([t[0] + t[1] * middle for t in tried])
    best = int(np.argmax(scores))
    other = np.flatnonzero(np.abs(centres - centres[best]) > _AMBIGUITY_MM)
    runner_up = tried[int(other[np.argmax(scores[other])])] if other.size else None
    return StripMatch(*tried[best], runner_up=runner_up)


def _refine(subject: NDArray, subject_arc: NDArray, pattern: NDArray, tpl_arc: float,
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


def disc_band(subject: NDArray) -> NDArray[np.float64]:
    """Mean of the strip rows 10-16 mm in front of the cord (the middle of the vertebral
    bodies, where each disc is one band between two endplates), lightly smoothed."""
    lo, hi = _BAND_MM
    rows = (lo <= _DEPTHS_MM) & (hi >= _DEPTHS_MM)
    return ndimage.gaussian_filter1d(subject[rows].mean(axis=0), _PEAK_SIGMA_MM,
                                     mode="nearest")


def band_polarity(band: NDArray, subject_arc: NDArray, guesses: list[float], *,
                  contrast: Contrast) -> float:
    """+1 if the discs are brighter than the bodies on ``band``, -1 if darker, 0 if unclear.

    T2w-like contrasts: +1 (bright disc between dark endplates, on real T2w and on PAM50).
    T1w: both occur (bright discs on a gradient-echo T1w such as sub-errsm30's, dark discs on a
    spin-echo T1w), so the sign of the band at the matched disc positions decides.
    """
    if contrast != "T1w":
        return 1.0
    if not guesses:
        return 0.0
    mean = float(np.mean(np.interp(guesses, subject_arc, band)))
    return float(np.sign(mean)) if abs(mean) > 0.2 else 0.0


def peak_near(band: NDArray, subject_arc: NDArray, guess: float, polarity: float,
              half_width_mm: float = _PEAK_MM) -> float | None:
    """Arc of the disc's own band extremum within +-``half_width_mm`` of ``guess`` (parabolic
    sub-mm position), or None when the extremum is at the edge of the search (no disc there)."""
    lo = max(0, int(np.searchsorted(subject_arc, guess - half_width_mm)))
    hi = min(len(subject_arc), int(np.searchsorted(subject_arc, guess + half_width_mm, "right")))
    if hi - lo < 3:
        return None
    values = polarity * band[lo:hi]
    k = int(np.argmax(values))
    if k == 0 or k == hi - lo - 1 or not _EDGE_MM <= lo + k <= len(subject_arc) - 1 - _EDGE_MM:
        return None
    a, b, c = values[k - 1], values[k], values[k + 1]
    denominator = a - 2 * b + c
    delta = 0.5 * (a - c) / denominator if denominator < 0 else 0.0
    return float(np.interp(lo + k + np.clip(delta, -0.5, 0.5), np.arange(len(subject_arc)),
                           subject_arc))


def walk_discs(band: NDArray, subject_arc: NDArray, template: DiscTemplate, *, start: int,
               start_arc: float, scale: float, polarity: float) -> dict[int, float]:
    """Band extremum of each disc, found disc by disc from ``start`` (at ``start_arc``) up and
    down the cord, as SCT's ``sct_label_vertebrae`` walks from C2/C3.

    The next disc is searched within +-30 % of one vertebra (at least +-4 mm) around where the
    template's spacing to it, divided by the current scale, puts it; the scale is then updated
    from the spacings found so far (median), so a spine whose proportions differ from PAM50's
    (one subject's C5 taller than PAM50's, or a uniform analytic phantom) is followed vertebra
    by vertebra rather than by one linear map. A direction stops at the first disc without a
    band extremum (cut by the field of view, or indistinct): those discs keep the template
    position. Disc 2 (the C1/C2 joint, no band) ends the upward walk.
    """
    order = sorted((v for v in template.disc_arc_mm if v != _NOT_A_DISC),
                   key=lambda v: template.disc_arc_mm[v])
    if start not in order:
        return {}
    found = {start: start_arc}
    ratios: list[float] = []
    i0 = order.index(start)
    for steps in (order[i0 + 1:], order[i0 - 1::-1] if i0 else []):
        prev = start
        for value in steps:
            tpl_step = template.disc_arc_mm[value] - template.disc_arc_mm[prev]
            current = float(np.median(ratios)) if ratios else scale
            expected = found[prev] + tpl_step / current
            width = max(_PEAK_MM, _WALK_WIDTH * abs(tpl_step) / current)
            peak = peak_near(band, subject_arc, expected, polarity, width)
            if peak is None or (peak - found[prev]) * tpl_step <= 0:
                break
            found[value] = peak
            ratios.append(tpl_step / (peak - found[prev]))
            prev = value
    return found


def band_peaks(values: NDArray, min_height: float) -> NDArray[np.intp]:
    """Indices of the local maxima of ``values`` at least ``min_height`` high."""
    mid = values[1:-1]
    return np.flatnonzero((mid > values[:-2]) & (mid >= values[2:]) & (mid >= min_height)) + 1


def anchor_polarity(band: NDArray, *, contrast: Contrast) -> float:
    """Sign of the discs on ``band`` for the anchor, before any match: +1 on T2w-like contrasts;
    on T1w the sign of the band's skewness (narrow disc bands between long vertebral bodies skew
    the band towards the discs' sign), 0 when ``|skew| < 0.5``."""
    if contrast != "T1w":
        return 1.0
    centred = band - band.mean()
    skew = float((centred ** 3).mean() / ((centred ** 2).mean() ** 1.5 + 1e-12))
    return float(np.sign(skew)) if abs(skew) >= _C2_SKEW else 0.0


def c2c3_anchor(band: NDArray, subject_arc: NDArray, polarity: float) -> float | None:
    """Arc (mm) of the C2/C3 disc when the field of view shows C2, else None.

    The rule (after SCT's ``detect_c2c3``, done on the disc band): C2, body plus dens, is the
    only vertebra with more than about 20 mm of bone and no disc above its lower disc. Take the
    topmost disc peak of ``polarity * band`` (local maximum >= 0.5). It is C2/C3 if

    1. the strip goes on at least ``max(20 mm, spacing below + 1 mm)`` above it (the bone above
       is taller than the vertebra below, and taller than any subaxial cervical vertebra);
    2. from 5 mm above it to the end of the strip the band stays below 0.35 of its peak: no
       other disc, not even the lower half of one cut by the end of the field;
    3. cervical context: the next two discs below are peaks too, each 12-21 mm below the
       previous (C3 and C4 heights; thoracic and lumbar vertebrae are taller, so a tall lumbar
       or thoracic body under the top of a lumbar field does not qualify).

    When the cord or the field ends close above the top disc, rule 1 fails: no anchor.
    """
    if polarity == 0:
        return None
    values = polarity * band
    peaks = band_peaks(values, _C2_PEAK)
    if len(peaks) < _C2_BELOW + 1:
        return None
    top = int(peaks[-1])
    spacings = np.diff(subject_arc[peaks[-_C2_BELOW - 1:]])
    if not ((spacings >= _C2_SPACING_MM[0]) & (spacings <= _C2_SPACING_MM[1])).all():
        return None
    if subject_arc[-1] - subject_arc[top] < max(_C2_RUN_MM, float(spacings[-1]) + 1.0):
        return None
    above = values[subject_arc > subject_arc[top] + _C2_QUIET_FROM_MM]
    if above.size == 0 or float(above.max()) >= _C2_QUIET * float(values[top]):
        return None
    refined = peak_near(band, subject_arc, float(subject_arc[top]), polarity)
    return float(subject_arc[top]) if refined is None else refined


def label_discs(data: NDArray, affine: NDArray[np.float64], cord: NDArray,
                template: DiscTemplate, *, contrast: Contrast,
                init_disc: tuple[int, float] | None = None,
                session: SessionCues | None = None) -> DiscLabelling:
    """Disc labels of one image.

    Parameters
    ----------
    data : (nx, ny, nz) float image, any orientation
    affine : (4, 4) float, voxel to world RAS+ mm
    cord : (nx, ny, nz) cord mask on the same grid
    template : from :func:`template_strip`
    contrast : T1w inverts the template pattern
    init_disc : (disc value, world z mm), optional
        A disc the user has identified (as SCT's ``-initz``), placed at the centerline point
        nearest to that height.
    session : from :func:`find_session_cues` on another image of the same session, optional
        Its C2/C3 disc is used when this image shows no C2 itself, no hint is given and the
        anchor lies within this cord's height; it counts as this image's anchor would. Its disc
        band peaks place the discs that have no band here (cut by the field of view).

    Raises
    ------
    InputDataError
        The cord is shorter than 30 mm, or ``init_disc`` names a disc the template lacks.
    """
    line = centerline_from_mask(cord, affine)
    if line.length_mm < _MIN_OVERLAP_MM:
        raise InputDataError(f"the cord covers {line.length_mm:.0f} mm; disc labelling needs "
                             f"at least {_MIN_OVERLAP_MM:.0f} mm")
    subject, arc = sample_strip(data, affine, line)
    hint = None
    if init_disc is not None:
        value, z_mm = init_disc
        if value not in template.disc_arc_mm:
            raise InputDataError(f"init disc {value} is not labelled in the template "
                                 f"(available: {sorted(template.disc_arc_mm)})")
        hint = (value, arc_at_height(line, z_mm))
    invert = contrast == "T1w"
    band = disc_band(subject)
    anchor = (c2c3_anchor(band, arc, anchor_polarity(band, contrast=contrast))
              if hint is None and C2C3 in template.disc_arc_mm else None)
    from_session = False
    if anchor is None and hint is None and session is not None \
            and session.c2c3_mm is not None and C2C3 in template.disc_arc_mm:
        anchor = arc_within(line, float(session.c2c3_mm[2]))
        from_session = anchor is not None
    session_peaks = np.array([] if session is None else
                             [a for a in (arc_within(line, float(p[2]))
                                          for p in session.disc_peaks_mm) if a is not None])
    match = match_strip(subject, arc, template, invert=invert, hint=hint)
    agrees: bool | None = None
    fixed = hint
    margin = match.margin if hint is None else None  # of the pattern match alone
    other = match.runner_up if hint is None else None
    if anchor is not None:
        agrees = abs((template.disc_arc_mm[C2C3] - match.offset) / match.scale
                     - anchor) <= _AMBIGUITY_MM
        if not agrees:
            fixed = (C2C3, anchor)
            other = (match.offset, match.scale, match.ncc)
            match = match_strip(subject, arc, template, invert=invert, hint=fixed)
    offset, scale, score = match.offset, match.scale, match.ncc
    pattern = -template.strip if invert else template.strip
    guesses: dict[int, float] = {}
    for value, tpl_arc in template.disc_arc_mm.items():
        guess = (tpl_arc - offset) / scale
        if arc[0] <= guess <= arc[-1]:
            guesses[value] = _refine(subject, arc, pattern, tpl_arc, guess, scale)
        elif arc[0] - _PEAK_MM < guess < arc[-1] + _PEAK_MM:
            guesses[value] = guess
    polarity = band_polarity(band, arc, [g for g in guesses.values() if arc[0] <= g <= arc[-1]],
                             contrast=contrast)
    walked = _walk_from_best(band, arc, guesses, template, fixed=fixed, scale=scale,
                             polarity=polarity)
    guesses = {**walked, **guesses}
    points: dict[int, NDArray[np.float64]] = {}
    placed_arc: dict[int, float] = {}
    borrowed: list[int] = []

    def own_band(value: int, guess: float) -> float | None:
        """The disc's band extremum here: walked, else near its guess unless the walk gave
        that band to another disc."""
        if not polarity or value == _NOT_A_DISC:
            return None
        if value in walked:
            return walked[value]
        peak = peak_near(band, arc, guess, polarity)
        if peak is None or any(abs(peak - w) < _PEAK_MM for w in walked.values()):
            return None
        return peak

    for value, guess in guesses.items():
        peak = own_band(value, guess)
        if peak is None and value != _NOT_A_DISC and session_peaks.size \
                and not (fixed is not None and value == fixed[0]):
            near = session_peaks[np.abs(session_peaks - guess) <= _PEAK_MM]
            if near.size:
                peak = float(near[np.argmin(np.abs(near - guess))])
                borrowed.append(value)
        if peak is not None:
            s = peak
        elif arc[0] <= guess <= arc[-1]:
            s = guess
        else:
            continue
        if fixed is not None and value == fixed[0] and peak is None:
            s = fixed[1]
        points[value] = point_at_arc(line, s)
        placed_arc[value] = float(s)
    labels = np.zeros(np.shape(cord), np.uint8)
    for value, point in points.items():
        ijk = np.rint(mm_to_vox(affine, point)[0]).astype(int)
        ijk = np.clip(ijk, 0, np.array(labels.shape) - 1)
        labels[tuple(ijk)] = value
    logger.debug("disc labelling: scale %.3f, ncc %.3f, discs %s", scale, score, sorted(points))
    if margin is not None and anchor is None:
        confidence = min(1.0, max(0.0, margin) / _MARGIN_REF)
    else:
        confidence = min(1.0, max(0.0, score) / _NCC_REF)
        if agrees is False:
            confidence *= _C2_DISAGREE
    labelled = labelled_fraction(offset + scale * arc[0], offset + scale * arc[-1], template)
    if labelled < _LABELLED_FRACTION:
        logger.debug("disc labelling: %.0f %% of the cord maps onto labelled template levels",
                     100 * labelled)
        confidence = min(confidence, _OFF_TEMPLATE_CONFIDENCE)
    anchor_mm = (None if anchor is None else
                 point_at_arc(line, anchor))
    alternative = (None if other is None else
                   alternative_reading(placed_arc, points, other, 0.5 * arc[-1], template))
    return DiscLabelling(labels=labels, disc_points_mm=points, confidence=confidence, ncc=score,
                         scale=scale, margin=margin, c2c3_anchor_mm=anchor_mm,
                         anchor_agrees=agrees, anchor_from_session=from_session,
                         alternative=alternative, discs_from_session=tuple(sorted(borrowed)))


def _walk_from_best(band: NDArray, arc: NDArray, guesses: dict[int, float],
                    template: DiscTemplate, *, fixed: tuple[int, float] | None, scale: float,
                    polarity: float) -> dict[int, float]:
    """:func:`walk_discs` from the disc the level is surest of: the one a hint (or the C2
    anchor) fixes, its band found near its refined template position or else near the fixed
    position; without one, the disc whose band is nearest to its template position. Only a
    clear band (>= 0.5, as for the anchor) starts a walk; none: empty."""
    if not polarity:
        return {}

    def clear_peak(near: float) -> float | None:
        peak = peak_near(band, arc, near, polarity)
        if peak is None or polarity * float(np.interp(peak, arc, band)) < _C2_PEAK:
            return None
        return peak

    start, peak = -1, None
    if fixed is not None and fixed[0] != _NOT_A_DISC:
        start = fixed[0]
        for near in (guesses.get(start), fixed[1]):
            peak = clear_peak(near) if near is not None else None
            if peak is not None:
                break
    elif fixed is None:
        offsets = [(abs(p - g), v, p) for v, g in guesses.items()
                   if v != _NOT_A_DISC and arc[0] <= g <= arc[-1]
                   and (p := clear_peak(g)) is not None]
        if offsets:
            _, start, peak = min(offsets)
    if peak is None:
        return {}
    return walk_discs(band, arc, template, start=start, start_arc=peak, scale=scale,
                      polarity=polarity)


def arc_at_height(line: Centerline, z_mm: float) -> float:
    """Arc (mm) of the centerline point nearest to world height ``z_mm`` (a hint or an anchor
    given as a height, as SCT's ``-initz``)."""
    return float(line.arc_mm[int(np.argmin(np.abs(line.points_mm[:, 2] - z_mm)))])


def point_at_arc(line: Centerline, arc_mm: float) -> NDArray[np.float64]:
    """(3,) world position of the centerline point nearest to ``arc_mm`` (a copy)."""
    return line.points_mm[int(np.argmin(np.abs(line.arc_mm - arc_mm)))].copy()


def arc_within(line: Centerline, z_mm: float) -> float | None:
    """:func:`arc_at_height`, or None when ``z_mm`` is more than 2 mm beyond the cord's ends (a
    position seen on another image of the session, outside this cord)."""
    z = line.points_mm[:, 2]
    if not z.min() - _EDGE_MM <= z_mm <= z.max() + _EDGE_MM:
        return None
    return arc_at_height(line, z_mm)


def find_session_cues(data: NDArray, affine: NDArray[np.float64], cord: NDArray, *,
                      contrast: Contrast) -> SessionCues | None:
    """:class:`SessionCues` of one image, on its disc band alone (no template); None when its
    cord is shorter than 30 mm."""
    line = centerline_from_mask(cord, affine)
    if line.length_mm < _MIN_OVERLAP_MM:
        return None
    subject, arc = sample_strip(data, affine, line)
    band = disc_band(subject)
    polarity = anchor_polarity(band, contrast=contrast)

    anchor = c2c3_anchor(band, arc, polarity)
    peaks = [] if polarity == 0 else [
        peak_near(band, arc, float(arc[k]), polarity)
        for k in band_peaks(polarity * band, _C2_PEAK)]
    return SessionCues(c2c3_mm=None if anchor is None else point_at_arc(line, anchor),
                       disc_peaks_mm=np.array([point_at_arc(line, p) for p in peaks
                                               if p is not None]).reshape(-1, 3))


def alternative_reading(placed_arc: dict[int, float], points: dict[int, NDArray[np.float64]],
                        other: tuple[float, float, float], middle_mm: float,
                        template: DiscTemplate) -> AlternativeReading | None:
    """The other reading, stated on the placed disc nearest the middle of the cord (the best
    placed one; never disc 2, which has no band): the template disc nearest to where the
    other map ``(offset, scale, ncc)`` sends that disc, other than its own value.

    >>> tpl = DiscTemplate(strip=np.zeros((1, 100)), disc_arc_mm={3: 80.0, 4: 62.0, 5: 44.0})
    >>> alt = alternative_reading({3: 40.0, 4: 22.0}, {3: np.zeros(3), 4: np.ones(3)},
    ...                           (22.0, 1.0, 0.4), 30.0, tpl)
    >>> (alt.value, alt.alternative_value)
    (4, 5)
    """
    candidates = [v for v in placed_arc if v != _NOT_A_DISC] or list(placed_arc)
    if not candidates:
        return None
    value = min(candidates, key=lambda v: abs(placed_arc[v] - middle_mm))
    offset, scale, ncc = other
    mapped = offset + scale * placed_arc[value]
    alternatives = {v: a for v, a in template.disc_arc_mm.items() if v != value}
    if not alternatives:
        return None
    alternative = min(alternatives, key=lambda v: abs(alternatives[v] - mapped))
    return AlternativeReading(value=value, point_mm=points[value].copy(),
                              alternative_value=int(alternative), ncc=float(ncc))


def labelled_fraction(start_mm: float, end_mm: float, template: DiscTemplate) -> float:
    """Fraction of the template arc span ``[start_mm, end_mm]`` (the subject's cord mapped onto
    the template) that lies between the template's first and last labelled discs, each widened
    by one vertebral level.

    >>> tpl = DiscTemplate(strip=np.zeros((1, 300)), disc_arc_mm={19: 100.0, 3: 250.0})
    >>> labelled_fraction(120.0, 200.0, tpl), labelled_fraction(0.0, 100.0, tpl)
    (1.0, 0.2)
    """
    low = min(template.disc_arc_mm.values()) - _LEVEL_MM
    high = max(template.disc_arc_mm.values()) + _LEVEL_MM
    span = max(end_mm - start_mm, 1e-6)
    return float(max(0.0, min(end_mm, high) - max(start_mm, low)) / span)


class BuiltinDiscLabeler:
    """:class:`~spinal_bidsapp.engines.base.DiscLabeler` on :func:`label_discs`."""

    def __init__(self, version: str, *, template: DiscTemplate,
                 init_disc: tuple[int, float] | None = None) -> None:
        self.info = EngineInfo(name="spinal_bidsapp-builtin", version=version)
        self.template = template
        self.init_disc = init_disc

    @classmethod
    def from_files(cls, version: str, *, t2: Path, cord: Path, label_disc: Path,
                   init_disc: tuple[int, float] | None = None) -> BuiltinDiscLabeler:
        """Build the template strip from PAM50 files (T2, cord, label_disc)."""
        t2_vol, cord_vol, disc_vol = load_volume(t2), load_mask(cord), load_mask(label_disc)
        tpl = template_strip(t2_vol.data, t2_vol.affine, cord_vol.data, cord_vol.affine,
                             disc_vol.data, disc_vol.affine)
        return cls(version, template=tpl, init_disc=init_disc)

    def label_discs(self, image: Path, cord_mask: Path, *, contrast: Contrast,
                    out_dir: Path) -> DiscLabelResult:
        vol = load_volume(image)
        cord = load_mask(cord_mask, reference=vol, reference_path=image)
        result = label_discs(vol.data, vol.affine, cord.data, self.template, contrast=contrast,
                             init_disc=self.init_disc)
        name = image.name.removesuffix(".gz").removesuffix(".nii")
        out = save_volume(vol.with_data(result.labels), Path(out_dir) / f"{name}_discs.nii.gz",
                          dtype=np.uint8)
        return DiscLabelResult(discs=out)
