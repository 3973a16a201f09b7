"""Cord CSA in the PAM50 anatomical dimensions, and its comparison with SCT's normative database.

``sct_process_segmentation -perslice 1 -normalize-PAM50 1`` does not compare with norms: it
resamples each vertebral level of the subject's per-slice metrics onto the PAM50 slices of the
same level (SCT 7.3 ``metrics_to_PAM50.interpolate_metrics``), so that subjects of any height
share one slice axis. :func:`resample_to_pam50` does the same for the builtin engine and
:func:`~spinal_bidsapp.engines.sct.outputs.pam50_csa_from_sct_csv` reads SCT's own result, so both
engines feed :func:`summarise_pam50_levels` and :func:`compare_to_normative` the same
per-PAM50-slice array.

The normative database is the one SCT downloads to ``$SCT_DIR/data/PAM50_normalized_metrics``
(PAM50-normalized-metrics r20250321 for SCT 7.3): one ``sub-<site><nn>_<contrast>_PAM50.csv`` per
healthy subject, in ``sct_process_segmentation`` format with one row per PAM50 slice.

PAM50 slices are indexed along the template's superior axis, inferior -> superior, which is SCT's
``Slice (I->S)`` for the template (stored RPI in SCT's letters, LAS in nibabel's).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.engines.sct.outputs import (
    CordMorphometrics,
    read_morphometrics_csv,
    superior_axis,
)
from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.image import Affine, load_mask
from spinal_bidsapp.morphometrics import VERTEBRA_NAMES

_MAX_VERTEBRAL_LEVEL = 48
"""SCT ignores label values 49 and 50 (not vertebral levels) when it resamples to PAM50."""

_NORMATIVE_SUFFIX = "_PAM50.csv"


def pam50_slice_levels(levels: NDArray[np.integer], affine: Affine) -> NDArray[np.int_]:
    """Vertebral level of each PAM50 axial slice, inferior slice first (0 where none).

    A slice's level is the rounded mean of its non-zero labels, as SCT's
    ``get_slices_from_vertebral_levels`` decides it (halves round to even, like numpy).

    Parameters
    ----------
    levels : (X, Y, Z) int
        ``PAM50_levels``: vertebral level inside the cord, 0 elsewhere.
    affine : (4, 4) float
        Voxel to world (RAS+, mm); only the superior axis is used.

    Returns
    -------
    (S,) int
        Level per slice along the superior axis, index 0 most inferior.

    >>> labels = np.zeros((1, 1, 4), int); labels[0, 0, 1:] = [3, 2, 2]
    >>> pam50_slice_levels(labels, np.eye(4)).tolist()
    [0, 3, 2, 2]
    """
    axis, sign = superior_axis(affine)
    data = np.moveaxis(np.asarray(levels, dtype=np.float64), axis, -1)
    if sign < 0:
        data = data[..., ::-1]
    data = data.reshape(-1, data.shape[-1])
    valid = (data != 0) & np.isfinite(data)
    count = valid.sum(axis=0)
    total = np.where(valid, data, 0.0).sum(axis=0)
    mean = np.divide(total, count, out=np.zeros(count.shape), where=count > 0)
    return np.round(mean).astype(np.int_)


def read_pam50_slice_levels(path: Path) -> NDArray[np.int_]:
    """:func:`pam50_slice_levels` of a ``PAM50_levels.nii.gz`` file."""
    volume = load_mask(path)
    return pam50_slice_levels(volume.data, volume.affine)


def resample_to_pam50(subject_levels: NDArray[np.integer], values: NDArray[np.floating],
                      pam50_levels: NDArray[np.integer]) -> NDArray[np.float64]:
    """Resample a per-slice metric onto the PAM50 slices, level by level, as SCT does.

    Each complete level is stretched linearly onto the PAM50 slices of the same level. The first
    and last levels of the subject may be cut by the field of view, so they are scaled by the mean
    PAM50/subject slice-count ratio of the inner levels and anchored at their inner boundary (the
    disc they share with the next level); PAM50 slices beyond the subject's coverage stay NaN.

    Parameters
    ----------
    subject_levels : (N,) int
        Vertebral level of each subject slice, inferior slice first; 0 where unlabelled.
        Values above 48 are ignored, like SCT.
    values : (N,) float
        The metric of each subject slice (e.g. CSA in mm²); NaN where undefined.
    pam50_levels : (S,) int
        Output of :func:`pam50_slice_levels`.

    Returns
    -------
    (S,) float64
        The metric on each PAM50 slice, in the unit of ``values``; NaN outside the subject's
        levels.

    Raises
    ------
    InputDataError
        Fewer than three vertebral levels: no inner level gives the scale of the incomplete end
        levels (``sct_process_segmentation -normalize-PAM50 1`` fails there too).

    Notes
    -----
    Mirrors SCT 7.3 ``interpolate_metrics`` for one metric, including its choices: a level's
    slices need not be contiguous, the end levels use ``int(scale * n)`` PAM50 points spread over
    ``[0, scale * n]`` against the subject's ``n`` points spread over the same range, and NaN in
    ``values`` spreads to the neighbouring PAM50 slices through ``np.interp``. Deliberate
    difference: a slice has one level here, whereas SCT takes the rounded mean label of the slice
    of its labelled image; with ``-discfile`` that image is a one-voxel-per-slice centerline, so
    the two agree.

    >>> sub = np.repeat([4, 3, 2], 2); pam = np.repeat([4, 3, 2], 4)
    >>> resample_to_pam50(sub, np.repeat([30.0, 40.0, 50.0], 2), pam).tolist()[3:9]
    [30.0, 40.0, 40.0, 40.0, 40.0, 50.0]
    """
    subject_levels = np.asarray(subject_levels)
    values = np.asarray(values, dtype=np.float64)
    pam50_levels = np.asarray(pam50_levels)
    if subject_levels.shape != values.shape:
        raise ValueError(f"subject_levels {subject_levels.shape} and values {values.shape} differ")
    levels = sorted(int(v) for v in np.unique(subject_levels) if 0 < v <= _MAX_VERTEBRAL_LEVEL)
    if len(levels) < 3:
        raise InputDataError(
            f"CSA in PAM50 dimensions needs at least three vertebral levels (found {levels}): the "
            "incomplete first and last levels are scaled by the inner levels")
    slices_sub = [np.flatnonzero(subject_levels == level) for level in levels]
    slices_pam = [np.flatnonzero(pam50_levels == level) for level in levels]
    scale = float(np.mean([p.size / s.size for p, s in zip(slices_pam[1:-1], slices_sub[1:-1],
                                                            strict=True)]))
    out = np.full(pam50_levels.shape, np.nan)
    for level, sub, pam in zip(levels, slices_sub, slices_pam, strict=True):
        if level in (levels[0], levels[-1]):
            span = scale * sub.size
            x_pam = np.linspace(0.0, span, int(span))
            x_sub = np.linspace(0.0, span, sub.size)
        else:
            x_pam = np.arange(pam.size, dtype=np.float64)
            x_sub = np.linspace(0.0, pam.size - 1, sub.size)
        resampled = np.interp(x_pam, x_sub, values[sub])
        excess = resampled.size - pam.size
        if level == levels[0] and excess > 0:  # top level: keep its inferior part
            resampled = resampled[:-excess]
        elif level == levels[0] and excess < 0:
            pam = pam[:excess]
        elif level == levels[-1] and excess > 0:  # bottom level: keep its superior part
            resampled = resampled[excess:]
        elif level == levels[-1] and excess < 0:
            pam = pam[-excess:]
        out[pam] = resampled
    return out


@dataclass(frozen=True)
class Pam50LevelCsa:
    """Mean CSA of one vertebral level over the PAM50 slices where it is defined."""

    level: int
    """Vertebral level, SCT numbering (C1 = 1, T1 = 8)."""
    name: str
    n_slices: int
    """PAM50 slices (0.5 mm apart in the full-resolution template) that have a value."""
    csa_mean_mm2: float


def summarise_pam50_levels(values_pam50: NDArray[np.floating], pam50_levels: NDArray[np.integer]
                           ) -> list[Pam50LevelCsa]:
    """Per-level mean of a per-PAM50-slice CSA, top level first; levels without a value omitted.

    >>> summarise_pam50_levels(np.array([np.nan, 60.0, 70.0, 80.0]), np.array([3, 3, 2, 2]))
    [Pam50LevelCsa(level=2, name='C2', n_slices=2, csa_mean_mm2=75.0), \
Pam50LevelCsa(level=3, name='C3', n_slices=1, csa_mean_mm2=60.0)]
    """
    values_pam50 = np.asarray(values_pam50, dtype=np.float64)
    pam50_levels = np.asarray(pam50_levels)
    out = []
    for level in sorted(int(v) for v in np.unique(pam50_levels) if v > 0):
        selected = values_pam50[(pam50_levels == level) & np.isfinite(values_pam50)]
        if selected.size:
            out.append(Pam50LevelCsa(level=level, name=VERTEBRA_NAMES.get(level, str(level)),
                                     n_slices=int(selected.size),
                                     csa_mean_mm2=float(selected.mean())))
    return out


def find_normative_database(sct_dir: Path | None) -> Path | None:
    """Folder of SCT's normative CSVs (``sub-*.csv``), or None when SCT or the data is absent.

    Walks ``<sct_dir>/data/PAM50_normalized_metrics`` like ``sct_compute_compression`` and returns
    the first folder holding ``sub-*.csv`` files (``spinal_cord/`` in r20250321). The walk is
    sorted, so the answer does not depend on the file system, and skips ``canal`` folders: later
    releases keep spinal canal metrics there under the same file names.
    """
    if sct_dir is None:
        return None
    root = sct_dir / "data" / "PAM50_normalized_metrics"
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "canal")
        if any(f.startswith("sub-") and f.endswith(".csv") for f in files):
            return Path(folder)
    return None


@dataclass(frozen=True)
class NormativeLevel:
    """Healthy-control CSA of one vertebral level: statistics of the per-subject level means."""

    level: int
    name: str
    mean_mm2: float
    sd_mm2: float
    """Sample SD (ddof=1) across subjects; NaN with a single subject."""
    n_subjects: int


@dataclass(frozen=True)
class NormativeCsa:
    """Per-level normative CSA in PAM50 dimensions, top level first."""

    folder: Path
    contrast: str | None
    """Contrast the files were filtered on; None when all files were used."""
    subjects: tuple[str, ...]
    levels: tuple[NormativeLevel, ...]

    def level(self, level: int) -> NormativeLevel | None:
        return next((entry for entry in self.levels if entry.level == level), None)


def _subject_and_contrast(path: Path) -> tuple[str, str]:
    """``sub-amu01_T2w_PAM50.csv`` -> ``("sub-amu01", "T2w")``: subject first, contrast last."""
    parts = path.name[: -len(_NORMATIVE_SUFFIX)].split("_")
    return parts[0], parts[-1]


def _level_means(rows: Sequence[CordMorphometrics]) -> dict[int, float]:
    """Mean ``MEAN(area)`` per vertebral level over the rows that have one."""
    areas: dict[int, list[float]] = {}
    for row in rows:
        if row.area_mm2 is not None and len(row.vertebral_levels) == 1:
            areas.setdefault(row.vertebral_levels[0], []).append(row.area_mm2)
    return {level: float(np.mean(values)) for level, values in areas.items()}


def load_normative_csa(folder: Path, *, contrast: str | None = None) -> NormativeCsa:
    """Per-level CSA mean, SD and count across the healthy subjects of SCT's normative database.

    Each subject contributes its mean ``MEAN(area)`` over the PAM50 slices of a level where it has
    a value (SCT's ``-normalize-hc`` averages slice-wise instead, which needs all subjects on every
    slice); a subject counts for a level only if it has such a slice.

    Parameters
    ----------
    folder : Path
        Folder of ``sub-<id>_<contrast>_PAM50.csv`` files (:func:`find_normative_database`).
    contrast : str, optional
        Keep only files whose contrast entity (the last before ``_PAM50.csv``) matches, e.g.
        ``"T2w"``.

    Raises
    ------
    MissingInputError
        No normative CSV (for that contrast) in ``folder``.
    InputDataError
        A CSV is not in ``sct_process_segmentation`` format.
    """
    per_level: dict[int, list[float]] = {}
    subjects = []
    for path in sorted(folder.glob(f"sub-*{_NORMATIVE_SUFFIX}")):
        subject, file_contrast = _subject_and_contrast(path)
        if contrast is not None and file_contrast != contrast:
            continue
        subjects.append(subject)
        for level, mean in _level_means(read_morphometrics_csv(path)).items():
            per_level.setdefault(level, []).append(mean)
    if not subjects:
        which = f" for contrast {contrast}" if contrast else ""
        raise MissingInputError(
            f"no sub-*{_NORMATIVE_SUFFIX} file{which} in {folder}; reinstall it with "
            "'sct_download_data -d PAM50_normalized_metrics'")
    levels = tuple(
        NormativeLevel(level=level, name=VERTEBRA_NAMES.get(level, str(level)),
                       mean_mm2=float(np.mean(means)),
                       sd_mm2=float(np.std(means, ddof=1)) if len(means) > 1 else float("nan"),
                       n_subjects=len(means))
        for level, means in sorted(per_level.items()))
    return NormativeCsa(folder=folder, contrast=contrast, subjects=tuple(subjects), levels=levels)


@dataclass(frozen=True)
class NormativeComparison:
    """A subject's level CSA against the healthy controls of the same level."""

    level: int
    name: str
    subject_mm2: float
    normative_mean_mm2: float
    normative_sd_mm2: float
    n_subjects: int
    percent_of_normative: float
    """100 * subject / normative mean."""
    z_score: float
    """(subject - normative mean) / normative SD; NaN when the SD is NaN or 0."""


def compare_to_normative(subject_per_level: Sequence[Pam50LevelCsa], normative: NormativeCsa
                         ) -> list[NormativeComparison]:
    """Compare each subject level with the normative level; levels without norms are left out.

    Both sides are means over PAM50 slices, so a subject's incomplete first or last level is
    compared with whole-level norms.
    """
    out = []
    for entry in subject_per_level:
        norm = normative.level(entry.level)
        if norm is None:
            continue
        sd = norm.sd_mm2
        z = (entry.csa_mean_mm2 - norm.mean_mm2) / sd if np.isfinite(sd) and sd > 0 else np.nan
        out.append(NormativeComparison(
            level=entry.level, name=entry.name, subject_mm2=entry.csa_mean_mm2,
            normative_mean_mm2=norm.mean_mm2, normative_sd_mm2=sd, n_subjects=norm.n_subjects,
            percent_of_normative=100.0 * entry.csa_mean_mm2 / norm.mean_mm2,
            z_score=float(z)))
    return out
