"""The disc band: where each disc is one band between two endplates, its peaks, the
disc-by-disc walk and the C2/C3 anchor (steps 0 and 5 of the builtin disc labelling,
:mod:`spinal_bidsapp.engines.builtin.disclabel`).

The pattern match (:mod:`~spinal_bidsapp.engines.builtin.disc_strip`) reads the level from the
whole strip; these functions read single discs from one profile of it, the mean of the rows
10-16 mm deep (mid vertebral body), and work on that array alone.

0. **C2 anchor** (:func:`c2c3_anchor`). When the field shows the top of the spine, the
   topmost disc below >= 20 mm of disc-free bone (C2 body and dens; other cervical vertebrae
   are 15-20 mm), with two cervical-sized vertebrae (12-21 mm) below it, is C2/C3.
5. **Disc band.** From the disc the level is surest of (:func:`walk_from_surest_disc`: the
   hinted or anchored one, else the one whose band is nearest its step-4 position), the discs
   are found one by one up and down the cord on the disc band (:func:`walk_discs`: the next
   band within +-30 % of a vertebra of where the template spacing puts it), as far as each
   direction has bands; so a spine whose proportions differ from PAM50's is followed vertebra
   by vertebra, not by one linear map. Each remaining disc (but disc 2, the C1/C2 joint, which
   has no disc band) is moved to its own extremum within +-4 mm (:func:`peak_near`; smoothed
   1 mm; sub-mm by a parabola): the brightest point on T2w-like contrasts; on T1w the sign of
   that band at the matched discs decides (:func:`band_polarity`: bright discs on
   sub-errsm30's gradient-echo T1w, dark on a spin-echo T1w). Where the extremum is at the
   edge of the search or within 2 mm of the end of the strip (a disc cut by the field of
   view), there is no peak.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.config import Contrast
from spinal_bidsapp.engines.builtin.disc_strip import DEPTHS_MM, DiscTemplate

_BAND_MM = (10.0, 16.0)
_PEAK_SIGMA_MM = 1.0
PEAK_MM = 4.0
"""Half-width of the search for a disc's own band extremum around where it is expected."""
EDGE_MM = 2
"""A band extremum this close to the end of the strip is a disc cut by the field of view."""
_WALK_WIDTH = 0.3
"""Search half-width of :func:`walk_discs`, as a fraction of the expected disc spacing."""
NOT_A_DISC = 2
"""PAM50's disc 2 is the C1/C2 joint beside the dens: no disc band to refine on."""
C2C3 = 3
"""SCT value of the C2/C3 disc, the one the C2 anchor names."""
_C2_RUN_MM = 20.0
"""Disc-free bone above C2/C3 in the field of view: C2 (body + dens) is 30-40 mm tall from its
lower disc to the dens tip, every other cervical vertebra 15-20 mm from disc to disc."""
DISC_PEAK = 0.5
"""Minimum height of a disc peak on the disc band (mean of unit-variance strip rows)."""
_C2_QUIET = 0.35
"""Above the anchor disc (beyond its own band) the band stays below this fraction of the anchor
peak: not even the lower half of a disc cut by the end of the field."""
_C2_QUIET_FROM_MM = 5.0
"""Where the anchor disc's own band has ended (half a disc height plus the 1 mm smoothing)."""
_C2_SPACING_MM = (12.0, 21.0)
"""Disc-to-disc spacing of the two vertebrae below the anchor (cervical context): C3-C7 are
15-20 mm (PAM50 16-18 mm), thoracic vertebrae 22-30 mm, lumbar 28-45 mm."""
_C2_BELOW = 2
"""Vertebrae below the anchor whose cervical spacing is required."""
_C2_SKEW = 0.5
"""On T1w, |skewness| of the disc band below which its polarity is not trusted (no anchor)."""


def disc_band(subject: NDArray) -> NDArray[np.float64]:
    """Mean of the strip rows 10-16 mm in front of the cord (the middle of the vertebral
    bodies, where each disc is one band between two endplates), lightly smoothed."""
    lo, hi = _BAND_MM
    rows = (lo <= DEPTHS_MM) & (hi >= DEPTHS_MM)
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
              half_width_mm: float = PEAK_MM) -> float | None:
    """Arc of the disc's own band extremum within +-``half_width_mm`` of ``guess`` (parabolic
    sub-mm position), or None when the extremum is at the edge of the search (no disc there).

    >>> arc = np.arange(0.0, 30.0)
    >>> band = -((arc - 10.3) ** 2)
    >>> round(peak_near(band, arc, 8.0, 1.0), 6), peak_near(band, arc, 3.0, 1.0)
    (10.3, None)
    """
    lo = max(0, int(np.searchsorted(subject_arc, guess - half_width_mm)))
    hi = min(len(subject_arc), int(np.searchsorted(subject_arc, guess + half_width_mm, "right")))
    if hi - lo < 3:
        return None
    values = polarity * band[lo:hi]
    k = int(np.argmax(values))
    if k == 0 or k == hi - lo - 1 or not EDGE_MM <= lo + k <= len(subject_arc) - 1 - EDGE_MM:
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
    order = sorted((v for v in template.disc_arc_mm if v != NOT_A_DISC),
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
            width = max(PEAK_MM, _WALK_WIDTH * abs(tpl_step) / current)
            peak = peak_near(band, subject_arc, expected, polarity, width)
            if peak is None or (peak - found[prev]) * tpl_step <= 0:
                break
            found[value] = peak
            ratios.append(tpl_step / (peak - found[prev]))
            prev = value
    return found


def walk_from_surest_disc(band: NDArray, arc: NDArray, guesses: dict[int, float],
                          template: DiscTemplate, *, fixed: tuple[int, float] | None,
                          scale: float, polarity: float) -> dict[int, float]:
    """:func:`walk_discs` from the disc the level is surest of: the one a hint (or the C2
    anchor) fixes, its band found near its refined template position or else near the fixed
    position; without one, the disc whose band is nearest to its template position. Only a
    clear band (>= 0.5, as for the anchor) starts a walk; none: empty."""
    if not polarity:
        return {}

    def clear_peak(near: float) -> float | None:
        peak = peak_near(band, arc, near, polarity)
        if peak is None or polarity * float(np.interp(peak, arc, band)) < DISC_PEAK:
            return None
        return peak

    start, peak = -1, None
    if fixed is not None and fixed[0] != NOT_A_DISC:
        start = fixed[0]
        for near in (guesses.get(start), fixed[1]):
            peak = clear_peak(near) if near is not None else None
            if peak is not None:
                break
    elif fixed is None:
        offsets = [(abs(p - g), v, p) for v, g in guesses.items()
                   if v != NOT_A_DISC and arc[0] <= g <= arc[-1]
                   and (p := clear_peak(g)) is not None]
        if offsets:
            _, start, peak = min(offsets)
    if peak is None:
        return {}
    return walk_discs(band, arc, template, start=start, start_arc=peak, scale=scale,
                      polarity=polarity)


def band_peaks(values: NDArray, min_height: float) -> NDArray[np.intp]:
    """Indices of the local maxima of ``values`` at least ``min_height`` high (the first of a
    plateau; never an end).

    >>> band_peaks(np.array([0.0, 1.0, 0.2, 0.4, 0.3, 0.9, 0.9]), 0.5)
    array([1, 5])
    """
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
    peaks = band_peaks(values, DISC_PEAK)
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
