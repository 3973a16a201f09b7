"""Builtin intervertebral disc labelling: match the spine next to the cord against PAM50 (#8).

This module labels one image and decides what needs the whole picture: which of the pattern
match and the C2 anchor sets the level, how sure the result is, the other reading a reviewer
should check, what another image of the session adds, and the engine
(:class:`BuiltinDiscLabeler`). The array work is in two pure modules:
:mod:`~spinal_bidsapp.engines.builtin.disc_strip` (steps 1-4: the strip in front of the cord,
matched against PAM50's) and :mod:`~spinal_bidsapp.engines.builtin.disc_peaks` (steps 0 and 5:
the disc band, the disc-by-disc walk and the C2/C3 anchor), where each step is described.

Method (our own, after the idea of SCT's ``sct_label_vertebrae``, see
docs/reference/sct.md §7.1; its C2/C3 detector replaced by a classical C2 anchor, step 0):

0. **C2 anchor** (no hint given). If the pattern match (step 3) puts C2/C3 more than 8 mm from
   the anchor, the anchor sets the level (the match is redone as if hinted ``3@anchor``) and
   the confidence is capped at 0.4 (flagged); if they agree, the confidence is
   ``min(1, ncc / 0.3)``. No anchor: unchanged. When the image shows no C2, an anchor found on
   another image of the same session (:func:`find_session_cues`, e.g. a T1w that reaches
   higher than its T2w) is used in the same way if it lies within this cord's height.
1-4. **Strip, pattern, match, refine**: each template disc mapped into the field of view gets a
   position from the best linear map of the template strip onto the subject's.
5. **Disc band.** The discs are walked and moved to their own band extremum. Where a disc has
   none (cut by the field of view, or indistinct), the disc band of another image of the
   session is searched the same way (:class:`SessionCues`: a peak within +-4 mm, at a height
   this cord covers); failing that, the step 4 position is kept. This places the disc centre:
   PAM50 phantoms within 1 mm; the sub-errsm30 reference labels sit at the upper endplate,
   2-3 mm above the centre (docs/benchmarks.md).

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

from spinal_bidsapp.config import Contrast
from spinal_bidsapp.engines.base import DiscLabelResult, EngineInfo
from spinal_bidsapp.engines.builtin.disc_peaks import (
    C2C3,
    DISC_PEAK,
    EDGE_MM,
    NOT_A_DISC,
    PEAK_MM,
    anchor_polarity,
    band_peaks,
    band_polarity,
    c2c3_anchor,
    disc_band,
    peak_near,
    walk_from_surest_disc,
)
from spinal_bidsapp.engines.builtin.disc_strip import (
    AMBIGUITY_MM,
    MIN_OVERLAP_MM,
    DiscTemplate,
    match_strip,
    refine_disc,
    sample_strip,
    template_strip,
)
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.image import load_mask, load_volume, mm_to_vox, save_volume

logger = logging.getLogger(__name__)

METHOD = "builtin PAM50 strip matching in front of the cord (spinal_bidsapp #8)"
LOW_CONFIDENCE = 0.5
"""Confidence below which the disc identification is reported as uncertain: without a hint, a
match one level away correlates within 0.05 of the best one; with a hint, the best correlation
is below 0.15."""

_MARGIN_REF = 0.1
_NCC_REF = 0.3
_LABELLED_FRACTION = 0.5
"""At least this fraction of the subject's cord must map between the template's first and last
labelled discs (widened by one level) for a confident level: beyond them the pattern match
aligns vertebrae the template cannot name (PAM50_small has no disc below T12/L1, so a lumbar
image matches the bottom of the strip)."""
_OFF_TEMPLATE_CONFIDENCE = 0.4
"""Confidence cap (below :data:`LOW_CONFIDENCE`: flagged) for such a match."""
_LEVEL_MM = 20.0
_C2_DISAGREE = 0.4
"""Confidence cap when the anchor overrules the pattern (below :data:`LOW_CONFIDENCE`)."""


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
    if line.length_mm < MIN_OVERLAP_MM:
        raise InputDataError(f"the cord covers {line.length_mm:.0f} mm; disc labelling needs "
                             f"at least {MIN_OVERLAP_MM:.0f} mm")
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
                     - anchor) <= AMBIGUITY_MM
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
            guesses[value] = refine_disc(subject, arc, pattern, tpl_arc, guess, scale)
        elif arc[0] - PEAK_MM < guess < arc[-1] + PEAK_MM:
            guesses[value] = guess
    polarity = band_polarity(band, arc, [g for g in guesses.values() if arc[0] <= g <= arc[-1]],
                             contrast=contrast)
    walked = walk_from_surest_disc(band, arc, guesses, template, fixed=fixed, scale=scale,
                                   polarity=polarity)
    guesses = {**walked, **guesses}
    points: dict[int, NDArray[np.float64]] = {}
    placed_arc: dict[int, float] = {}
    borrowed: list[int] = []

    def own_band(value: int, guess: float) -> float | None:
        """The disc's band extremum here: walked, else near its guess unless the walk gave
        that band to another disc."""
        if not polarity or value == NOT_A_DISC:
            return None
        if value in walked:
            return walked[value]
        peak = peak_near(band, arc, guess, polarity)
        if peak is None or any(abs(peak - w) < PEAK_MM for w in walked.values()):
            return None
        return peak

    for value, guess in guesses.items():
        peak = own_band(value, guess)
        if peak is None and value != NOT_A_DISC and session_peaks.size \
                and not (fixed is not None and value == fixed[0]):
            near = session_peaks[np.abs(session_peaks - guess) <= PEAK_MM]
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
    if not z.min() - EDGE_MM <= z_mm <= z.max() + EDGE_MM:
        return None
    return arc_at_height(line, z_mm)


def find_session_cues(data: NDArray, affine: NDArray[np.float64], cord: NDArray, *,
                      contrast: Contrast) -> SessionCues | None:
    """:class:`SessionCues` of one image, on its disc band alone (no template); None when its
    cord is shorter than 30 mm."""
    line = centerline_from_mask(cord, affine)
    if line.length_mm < MIN_OVERLAP_MM:
        return None
    subject, arc = sample_strip(data, affine, line)
    band = disc_band(subject)
    polarity = anchor_polarity(band, contrast=contrast)

    anchor = c2c3_anchor(band, arc, polarity)
    peaks = [] if polarity == 0 else [
        peak_near(band, arc, float(arc[k]), polarity)
        for k in band_peaks(polarity * band, DISC_PEAK)]
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
    candidates = [v for v in placed_arc if v != NOT_A_DISC] or list(placed_arc)
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
