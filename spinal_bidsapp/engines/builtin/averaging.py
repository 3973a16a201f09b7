"""Pure array steps of the template loop: mirroring, running moments, symmetrisation, statistics.

Nothing here opens a file; :mod:`spinal_bidsapp.engines.builtin.template` does the I/O.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.errors import InputDataError


def mirror_axis(affine: NDArray[np.float64]) -> int:
    """Voxel axis along world x (left-right); the grid must not be oblique in x.

    >>> mirror_axis(np.diag([-0.5, 0.5, 0.5, 1.0]))
    0
    >>> mirror_axis(np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]]))
    1
    """
    rotation = np.asarray(affine, dtype=np.float64)[:3, :3]
    directions = rotation / np.linalg.norm(rotation, axis=0)
    axis = int(np.argmax(np.abs(directions[0])))
    others = [a for a in range(3) if a != axis]
    if not np.isclose(abs(directions[0, axis]), 1.0, atol=1e-4) or not np.allclose(
            directions[0, others], 0.0, atol=1e-4):
        raise InputDataError(
            "symmetric template building needs a grid with one voxel axis along world x (L-R); "
            "this grid is oblique, resample it or build a non-symmetric template")
    return axis


def symmetrise(data: NDArray, axis: int) -> NDArray[np.float64]:
    """Average of ``data`` and its mirror (ipl's ``symmetrize``), float64.

    >>> symmetrise(np.array([[[1.0]], [[3.0]]]), 0).ravel().tolist()
    [2.0, 2.0]
    """
    values = np.asarray(data, dtype=np.float64)
    return 0.5 * (values + np.flip(values, axis=axis))


def mirror_field_x(data: NDArray, axis: int) -> NDArray[np.float32]:
    """Mirror a RAS displacement field about the grid centre: flip ``axis``, negate world x.

    >>> u = np.zeros((2, 1, 1, 3)); u[0, 0, 0] = [1.0, 2.0, 3.0]
    >>> mirror_field_x(u, 0)[1, 0, 0].tolist()
    [-1.0, 2.0, 3.0]
    """
    mirrored = np.array(np.flip(data, axis=axis), dtype=np.float32)
    mirrored[..., 0] *= -1.0
    return mirrored


class RunningMoments:
    """Mean and population SD of a stream of equally shaped arrays (float64 sums).

    >>> m = RunningMoments()
    >>> for value in (1.0, 3.0):
    ...     m.add(np.full((1,), value))
    >>> m.mean().tolist(), m.sd().tolist()
    ([2.0], [1.0])
    """

    def __init__(self, *, squares: bool = True) -> None:
        self.count = 0
        self._squares = squares
        self._sum: NDArray[np.float64] | None = None
        self._sum_sq: NDArray[np.float64] | None = None

    def add(self, values: NDArray) -> None:
        x = np.asarray(values, dtype=np.float64)
        if self._sum is None:
            self._sum = np.zeros_like(x)
            if self._squares:
                self._sum_sq = np.zeros_like(x)
        self._sum += x
        if self._sum_sq is not None:
            self._sum_sq += x * x
        self.count += 1

    def mean(self) -> NDArray[np.float64]:
        if self._sum is None:
            raise ValueError("no array was added")
        return self._sum / self.count

    def mean_square(self) -> NDArray[np.float64]:
        if self._sum_sq is None:
            raise ValueError("no array was added, or squares are not tracked")
        return self._sum_sq / self.count

    def sd(self) -> NDArray[np.float64]:
        return sd_from_moments(self.mean(), self.mean_square())


def sd_from_moments(mean: NDArray, mean_square: NDArray) -> NDArray[np.float64]:
    """Population SD from E[x] and E[x^2].

    >>> sd_from_moments(np.array([2.0]), np.array([5.0])).tolist()
    [1.0]
    """
    mean = np.asarray(mean, dtype=np.float64)
    return np.sqrt(np.maximum(np.asarray(mean_square, dtype=np.float64) - mean * mean, 0.0))


def mask_from_probability(probability: NDArray, threshold: float = 0.5) -> NDArray[np.uint8]:
    """Template mask: cord probability at or above ``threshold`` (ipl: ``A >= 0.5``).

    >>> mask_from_probability(np.array([0.2, 0.5, 0.9])).tolist()
    [0, 1, 1]
    """
    return (np.asarray(probability) >= threshold).astype(np.uint8)


def median_in_mask(values: NDArray, mask: NDArray) -> float:
    """Median of ``values`` over the non-zero voxels of ``mask`` (NaN for an empty mask).

    >>> median_in_mask(np.array([1.0, 5.0, 2.0]), np.array([1, 0, 1]))
    1.5
    """
    selected = np.asarray(values)[np.asarray(mask) > 0]
    return float(np.median(selected)) if selected.size else float("nan")


def rms_in_mask(values: NDArray, mask: NDArray) -> float:
    """Root mean square over the mask; for vectors ``(..., 3)`` the RMS of the norm.

    >>> rms_in_mask(np.array([3.0, 4.0, 100.0]), np.array([1, 1, 0]))
    3.5355339059327378
    """
    arr = np.asarray(values, dtype=np.float64)
    inside = np.asarray(mask) > 0
    if arr.ndim == inside.ndim + 1:
        arr = np.linalg.norm(arr, axis=-1)
    selected = arr[inside]
    return float(np.sqrt(np.mean(selected * selected))) if selected.size else float("nan")


def correlation_in_mask(a: NDArray, b: NDArray, mask: NDArray) -> float:
    """Pearson correlation of ``a`` and ``b`` over the mask.

    >>> correlation_in_mask(np.array([1.0, 2, 3]), np.array([2.0, 4, 6]), np.ones(3))
    1.0
    """
    inside = np.asarray(mask) > 0
    x = np.asarray(a, dtype=np.float64)[inside]
    y = np.asarray(b, dtype=np.float64)[inside]
    x = x - x.mean()
    y = y - y.mean()
    denominator = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return round(float((x * y).sum()) / denominator, 12) if denominator > 0 else float("nan")
