"""Pure scoring helpers for benchmarks on synthetic cohorts (arrays in, numbers out).

Everything here works on arrays, affines and :class:`~spinal_bidsapp.synth.truth.SubjectTruth`
records; nothing reads files, so the helpers are easy to test and to reuse from any benchmark.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.synth.truth import SubjectTruth, TemplateSpace, true_subject_to_pam50_mm


def dice(a: NDArray, b: NDArray) -> float:
    """Dice overlap of two masks (non-zero = inside); 1.0 when both are empty.

    >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.6666666666666666
    """
    a, b = np.asarray(a) != 0, np.asarray(b) != 0
    if a.shape != b.shape:
        raise ValueError(f"masks differ in shape: {a.shape} vs {b.shape}")
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def masked_correlation(a: NDArray, b: NDArray, mask: NDArray) -> float:
    """Pearson correlation of two images over the voxels where ``mask`` is non-zero.

    >>> masked_correlation(np.arange(4.0), 2 * np.arange(4.0) + 1, np.array([1, 1, 1, 0]))
    1.0
    """
    inside = np.asarray(mask) != 0
    x = np.asarray(a, dtype=np.float64)[inside]
    y = np.asarray(b, dtype=np.float64)[inside]
    if x.size < 2:
        raise ValueError("the mask selects fewer than two voxels")
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denominator == 0 else round(float((x * y).sum() / denominator), 12)


def label_points_mm(labels: NDArray, affine: NDArray) -> dict[int, NDArray[np.float64]]:
    """Centroid (world mm, RAS) of each non-zero label value of a point-label image.

    >>> labels = np.zeros((3, 3, 3), int); labels[1, 2, 0] = 4
    >>> label_points_mm(labels, np.eye(4))[4].tolist()
    [1.0, 2.0, 0.0]
    """
    labels = np.asarray(labels)
    points = {}
    for value in np.unique(labels[labels != 0]):
        ijk = np.argwhere(labels == value).mean(axis=0)
        points[int(value)] = ijk @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]
    return points


@dataclass(frozen=True)
class DiscErrors:
    """Disc position errors of one subject against its truth (mm)."""

    euclidean_mm: dict[int, float]  # distance to the true disc centre
    along_cord_mm: dict[int, float]  # signed arc-length error (positive = predicted too high)
    missing: tuple[int, ...]  # labelled in the truth, absent from the prediction
    extra: tuple[int, ...]  # predicted, not labelled in the truth

    @property
    def mean_euclidean_mm(self) -> float:
        return float(np.mean(list(self.euclidean_mm.values()))) if self.euclidean_mm else np.nan


def disc_position_errors(truth: SubjectTruth,
                         predicted_mm: Mapping[int, NDArray]) -> DiscErrors:
    """Compare predicted disc positions (subject world mm, keyed by SCT disc number) to the truth.

    Only discs labelled in the truth (inside the field of view) are scored.
    """
    true_mm = truth.disc_positions_mm()
    common = sorted(set(true_mm) & set(predicted_mm))
    predicted = np.array([np.asarray(predicted_mm[d], dtype=np.float64) for d in common])
    arc_predicted = truth.curve.world_to_curve(predicted)[:, 2] if common else np.zeros(0)
    arc_true = {d.disc: d.arc_length_mm for d in truth.discs}
    euclidean = {d: float(np.linalg.norm(p - true_mm[d])) for d, p in zip(common, predicted,
                                                                           strict=True)}
    along = {d: float(s - arc_true[d]) for d, s in zip(common, arc_predicted, strict=True)}
    return DiscErrors(euclidean_mm=euclidean, along_cord_mm=along,
                      missing=tuple(sorted(set(true_mm) - set(predicted_mm))),
                      extra=tuple(sorted(set(predicted_mm) - set(true_mm))))


def disc_spread_mm(positions: Sequence[Mapping[int, NDArray]]) -> dict[int, float]:
    """Across-subject spread of each disc in a common space (e.g. after registration).

    For every disc present in at least two subjects: the root-mean-square distance (mm) of the
    subjects' positions to their mean. Zero means the discs coincide exactly.

    >>> disc_spread_mm([{2: np.array([0.0, 0, 1])}, {2: np.array([0.0, 0, -1])}])
    {2: 1.0}
    """
    discs = sorted({d for subject in positions for d in subject})
    spread = {}
    for disc in discs:
        points = np.array([np.asarray(s[disc], dtype=np.float64) for s in positions if disc in s])
        if len(points) >= 2:
            deviation = points - points.mean(axis=0)
            spread[disc] = float(np.sqrt((deviation ** 2).sum(axis=1).mean()))
    return spread


def mapping_error_mm(truth: SubjectTruth, subject_points_mm: NDArray, predicted_mm: NDArray, *,
                     space: TemplateSpace = "PAM50") -> NDArray[np.float64]:
    """Distance (mm) between predicted template positions of subject points and the true ones.

    Parameters
    ----------
    subject_points_mm : (N, 3) float, mm, subject world RAS
    predicted_mm : (N, 3) float, mm, template world RAS (as estimated by a registration)
    space : template frame of ``predicted_mm`` (``"PAM50"`` or ``"PAM50_small"``)
    """
    expected = true_subject_to_pam50_mm(truth, subject_points_mm, space=space)
    return np.linalg.norm(np.atleast_2d(predicted_mm) - expected, axis=1)
