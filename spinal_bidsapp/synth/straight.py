"""Straight-cord cohorts with a known true shape, for testing the template builder.

An unbiased template loop should converge to the mean shape of its inputs. Here that mean is
known: every subject is one straight cord anatomy (:class:`StraightAnatomy`, cord along z on
``x = y = 0``) pulled through a smooth random deformation, and the deformations sum to zero over
the cohort, so the true template is the undeformed anatomy (:func:`render_straight_anatomy`).
The inputs stand for the straightened images of the group level; the curved subjects with full
ground truth are made by :mod:`spinal_bidsapp.synth.cohort`.

Tissue edges are logistic in the elliptic radius rather than the linear ramp of
:func:`~spinal_bidsapp.synth.acquisition.soft_fraction`: the template tests and the figures of
the template benchmark (``docs/benchmarks.md``) were made with these phantoms.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from spinal_bidsapp.engines.base import TemplateSubject
from spinal_bidsapp.image import vox_to_mm
from spinal_bidsapp.synth.acquisition import Grid


@dataclass(frozen=True)
class StraightAnatomy:
    """A straight T2-like cord in a CSF canal along z, centred on ``x = y = 0`` (lengths mm).

    A tissue fraction is ``1 / (1 + exp((r - 1) / edge))`` of its elliptic radius ``r`` (1 on
    the boundary), so it is above 0.5 exactly inside the ellipse. The defaults are the template
    benchmark's cord: z-varying width and H-shaped grey matter.
    """

    cord_half_width_mm: float = 4.2
    """Left-right half-axis, mean over z."""
    cord_width_wave_mm: float = 0.6
    """Amplitude of the half-width's variation ``sin(z / 6 mm)`` (0: a constant ellipse)."""
    cord_half_depth_mm: float = 3.0
    """Antero-posterior half-axis."""
    cord_edge: float = 0.08
    """Logistic width of the cord and grey-matter edges, relative to the radius."""
    grey_matter_contrast: float = 150.0
    """Intensity added in the H-shaped grey matter (0: uniform cord)."""
    csf_half_axes_mm: tuple[float, float] = (7.0, 5.5)
    """Half-axes (left-right, antero-posterior) of the CSF canal."""
    csf_centre_y_mm: float = -0.5
    """Antero-posterior position of the canal centre."""
    csf_edge: float = 0.08
    """Logistic width of the canal edge, relative to the radius."""
    background: float = 150.0
    """Intensity outside the canal."""
    csf_contrast: float = 850.0
    """Intensity added inside the canal."""
    cord_contrast: float = 650.0
    """Intensity removed inside the cord."""


@dataclass(frozen=True)
class StraightTissues:
    """The anatomy sampled at some points (arrays of the points' shape)."""

    image: NDArray[np.float32]
    """T2-like intensity."""
    cord: NDArray[np.float64]
    """Cord fraction, 0-1."""
    csf: NDArray[np.float64]
    """Canal fraction (CSF and the cord inside it), 0-1."""


@dataclass(frozen=True)
class StraightSubject:
    """One subject of a straight cohort, on the cohort's grid."""

    image: NDArray[np.float32]
    """Deformed anatomy plus Gaussian noise."""
    cord_mask: NDArray[np.bool_]
    """Deformed cord fraction above 0.5."""


def _logistic_fraction(r: NDArray, edge: float) -> NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp((r - 1.0) / edge))


def grid_mm(grid: Grid) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """World coordinates ``x, y, z`` (mm) of the voxel centres, each an array of ``grid.shape``.

    >>> x, y, z = grid_mm(Grid(shape=(2, 1, 3), affine=np.diag([-0.5, 1.0, 2.0, 1.0])))
    >>> x[:, 0, 0].tolist(), z[0, 0].tolist()
    ([0.0, -0.5], [0.0, 2.0, 4.0])
    """
    ijk = np.indices(grid.shape, dtype=np.float64).reshape(3, -1).T
    xyz = vox_to_mm(grid.affine, ijk).T.reshape(3, *grid.shape)
    return xyz[0], xyz[1], xyz[2]


def render_straight_anatomy(anatomy: StraightAnatomy, x_mm: NDArray, y_mm: NDArray,
                            z_mm: NDArray) -> StraightTissues:
    """Sample ``anatomy`` at world points given by three arrays of one shape (mm)."""
    x, y = x_mm, y_mm
    a = anatomy.cord_half_width_mm + anatomy.cord_width_wave_mm * np.sin(z_mm / 6.0)
    b = anatomy.cord_half_depth_mm
    cord = _logistic_fraction(np.sqrt((x / a) ** 2 + (y / b) ** 2), anatomy.cord_edge)
    horns = np.maximum(
        _logistic_fraction(np.sqrt(((np.abs(x) - 0.45 * a) / (0.22 * a)) ** 2
                                   + (y / (0.75 * b)) ** 2), anatomy.cord_edge),
        _logistic_fraction(np.maximum(np.abs(x) / (0.45 * a), np.abs(y) / (0.22 * b)),
                           anatomy.cord_edge))
    csf_a, csf_b = anatomy.csf_half_axes_mm
    csf_r = np.sqrt((x / csf_a) ** 2 + ((y - anatomy.csf_centre_y_mm) / csf_b) ** 2)
    csf = _logistic_fraction(csf_r, anatomy.csf_edge)
    image = (anatomy.background + anatomy.csf_contrast * csf - anatomy.cord_contrast * cord
             + anatomy.grey_matter_contrast * cord * horns)
    return StraightTissues(image=image.astype(np.float32), cord=cord, csf=csf)


def _draw_displacement(rng: np.random.Generator, x: NDArray, y: NDArray, *,
                       smoothing_vox: tuple[float, float, float], amplitude_mm: float,
                       z_scale: float | None,
                       scale_range: tuple[float, float] | None) -> NDArray[np.float64]:
    """One subject's displacement ``(3, *shape)`` (mm), before the cohort mean is removed."""
    noise = rng.normal(size=(3, *x.shape))
    field = np.stack([ndimage.gaussian_filter(c, smoothing_vox) for c in noise])
    normalised = field if z_scale is None else field[:2]
    field = field / np.abs(normalised).max() * amplitude_mm
    if z_scale is not None:
        field[2] *= z_scale
    if scale_range is not None:
        scale = rng.uniform(*scale_range)
        field[0] += x * (scale - 1.0)
        field[1] += y * (scale - 1.0)
    return field


def draw_straight_cohort(grid: Grid, n_subjects: int, *, seed: int, anatomy: StraightAnatomy,
                         smoothing_vox: tuple[float, float, float], amplitude_mm: float,
                         z_scale: float | None, scale_range: tuple[float, float] | None,
                         noise_sd: float) -> list[StraightSubject]:
    """Subjects = ``anatomy`` pulled through smooth random deformations summing to zero.

    Parameters
    ----------
    grid
        Where the anatomy is sampled: ``grid.affine`` maps voxels to the anatomy's mm.
    n_subjects, seed
        Cohort size; all draws come from ``numpy.random.default_rng(seed)``.
    anatomy
        The true (mean) anatomy.
    smoothing_vox
        Gaussian sigma (voxels) smoothing white noise into each displacement component.
    amplitude_mm
        Largest in-plane displacement component of a subject (of all three components when
        ``z_scale`` is None), before the cohort mean is removed.
    z_scale
        Through-plane component relative to the in-plane ones; None: drawn like them.
    scale_range
        Bounds of a uniform per-subject in-plane scale about the cord axis; None: no scaling.
    noise_sd
        Standard deviation of the Gaussian noise added to each image.
    """
    rng = np.random.default_rng(seed)
    x, y, z = grid_mm(grid)
    fields = [_draw_displacement(rng, x, y, smoothing_vox=smoothing_vox,
                                 amplitude_mm=amplitude_mm, z_scale=z_scale,
                                 scale_range=scale_range)
              for _ in range(n_subjects)]
    mean = np.mean(fields, axis=0)
    subjects = []
    for field in fields:
        d = field - mean
        tissues = render_straight_anatomy(anatomy, x + d[0], y + d[1], z + d[2])
        image = tissues.image + rng.normal(0, noise_sd, grid.shape).astype(np.float32)
        subjects.append(StraightSubject(image=image, cord_mask=tissues.cord > 0.5))
    return subjects


def write_straight_cohort(root: Path, subjects: list[StraightSubject],
                          affine: NDArray) -> list[TemplateSubject]:
    """Write ``sub-<i>_T2w.nii.gz`` and ``sub-<i>_cordmask.nii.gz`` (float32, ``i`` from 00).

    ``affine`` is stored in the headers; it may differ from the grid the subjects were drawn on.
    Plain nibabel headers, not :func:`~spinal_bidsapp.image.save_volume`'s (qform, units): the
    benchmark's inputs keep the exact files its figures were made from.
    """
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for i, subject in enumerate(subjects):
        paths = root / f"sub-{i:02d}_T2w.nii.gz", root / f"sub-{i:02d}_cordmask.nii.gz"
        nib.save(nib.Nifti1Image(subject.image, affine), paths[0])
        nib.save(nib.Nifti1Image(subject.cord_mask.astype(np.float32), affine), paths[1])
        written.append(TemplateSubject(label=f"sub-{i:02d}", image=paths[0], cord_mask=paths[1]))
    return written
