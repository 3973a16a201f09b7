"""NIfTI input and output: the one place that opens and saves images and displacement fields.

Algorithms work on :class:`Volume` (array + affine); this module turns files into volumes with
clear errors for the inputs that users actually feed a pipeline (4-D series, 2-D images, corrupt
gzip, NaN-filled data, masks on another grid), and writes volumes back atomically.

Displacement fields (:class:`~spinal_bidsapp.geometry.fields.DisplacementField`) are ITK/ANTs
5-D NIfTI files (:func:`save_field`, :func:`load_field`): shape ``(nx, ny, nz, 1, 3)``,
float32, LPS vectors in mm, intent ``vector`` (1007), header of the reference grid; SCT, ANTs
(``antsApplyTransforms``) and SimpleITK (``DisplacementFieldTransform``) read these files
directly.

Every field is written on the **whole** grid of its reference image: ITK, ANTs, SimpleITK and
SCT take a zero displacement outside a field's grid, so a field on a slab would send every
reference point outside it to itself and pull the moving image's own anatomy in there (a
"ghost"). Reference points with no mapping (NaN in memory) are written as ANTs's own
"no valid displacement" value, float32-max: antspyx ``apply_transforms``, SimpleITK's
``DisplacementFieldTransform`` and ``sct_apply_transfo`` all send such a point outside the moving
image (measured: they resample nothing there). Constant runs of it cost little once gzipped.

On reading, float32-max (ANTs) and SCT's +-100000 ("no warping" in its straightening fields) and
anything non-finite become NaN: no mapping, never a displacement.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from numpy.typing import DTypeLike, NDArray

from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.geometry.centerline import Centerline, centerline_from_mask
from spinal_bidsapp.geometry.discs import DiscPositions, discs_from_label_array, project_discs
from spinal_bidsapp.geometry.fields import (
    RAS_TO_LPS,
    DisplacementField,
    field_from_itk_array,
    subgrid_offset,
)
from spinal_bidsapp.runtime.files import atomic_path

logger = logging.getLogger(__name__)

Affine = NDArray[np.float64]
"""(4, 4) float voxel-to-world (RAS+, mm) matrix."""

_AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class Volume:
    """A 3-D image: voxel array and its voxel-to-world (RAS+ mm) affine."""

    data: NDArray
    affine: Affine

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape[:3])  # type: ignore[return-value]

    @property
    def zooms(self) -> NDArray[np.float64]:
        """Voxel sizes in mm along the three array axes."""
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def axcodes(self) -> tuple[str, str, str]:
        return nib.aff2axcodes(self.affine)

    def with_data(self, data: NDArray) -> Volume:
        """Same grid, new voxel values."""
        if data.shape[:3] != self.data.shape[:3]:
            raise ValueError(f"shape {data.shape} does not match grid {self.data.shape}")
        return Volume(data=data, affine=self.affine)


def index_range(mask: Volume | None, axis: int, *, margin_mm: float,
                size: int | None = None) -> tuple[int, int]:
    """``[start, stop)`` indices along ``axis`` covering the mask plus ``margin_mm`` each side,
    clipped to the volume; the whole axis when the mask is missing or empty.

    >>> m = np.zeros((10, 1, 1), np.uint8); m[4:6] = 1
    >>> index_range(Volume(m, np.diag([2.0, 1, 1, 1])), 0, margin_mm=4.0)
    (2, 8)
    """
    size = size if size is not None else (mask.shape[axis] if mask is not None else 0)
    if mask is None or not np.any(mask.data > 0):
        return 0, size
    present = np.flatnonzero(np.any(mask.data > 0, axis=tuple(a for a in range(3) if a != axis)))
    margin = round(float(margin_mm / mask.zooms[axis]))
    return max(0, int(present[0]) - margin), min(size, int(present[-1]) + margin + 1)


def crop(volume: Volume, box: tuple[slice, ...]) -> Volume:
    """The sub-volume ``volume.data[box]`` with its affine moved to the box's first voxel.

    >>> cropped = crop(Volume(np.zeros((4, 4, 4)), np.eye(4)), (slice(1, 3),) * 3)
    >>> cropped.shape, cropped.affine[:3, 3].tolist()
    ((2, 2, 2), [1.0, 1.0, 1.0])
    """
    affine = np.array(volume.affine, dtype=np.float64)
    start = np.array([b.start or 0 for b in box], dtype=np.float64)
    affine[:3, 3] = affine[:3, :3] @ start + affine[:3, 3]
    return Volume(np.asarray(volume.data)[box], affine)


def best_affine(img: nib.Nifti1Image, *, path: Path | None = None) -> Affine:
    """sform when set, else qform; warn when both are set and disagree (nibabel's rule, loud)."""
    header = img.header
    sform, sform_code = header.get_sform(coded=True)
    qform, qform_code = header.get_qform(coded=True)
    if sform_code and qform_code and not np.allclose(sform, qform, atol=_AFFINE_ATOL_MM):
        logger.warning("%s: sform and qform disagree; using the sform (code %d)",
                       path or "image", int(sform_code))
    if sform_code:
        return np.asarray(sform, dtype=np.float64)
    if qform_code:
        return np.asarray(qform, dtype=np.float64)
    return np.asarray(img.affine, dtype=np.float64)


def load_volume(path: Path, *, dtype: DTypeLike = np.float32) -> Volume:
    """Read a 3-D NIfTI (a trailing singleton 4th axis is dropped).

    Raises
    ------
    MissingInputError
        The file does not exist.
    InputDataError
        The file is not a readable NIfTI, is not 3-D, is empty, or holds non-finite values only.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"image not found: {path}")
    try:
        img = nib.load(str(path))
        data = np.asanyarray(img.dataobj)  # type: ignore[attr-defined]
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, nib.filebasedimages.ImageFileError,
            ValueError) as exc:
        raise InputDataError(
            f"cannot read {path}: {exc.__class__.__name__}: {exc}; the file is truncated or not a "
            "NIfTI image, re-export or re-download it"
        ) from exc
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputDataError(f"{path} is not a NIfTI image ({type(img).__name__})")
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputDataError(
            f"{path} has {data.ndim} dimensions {data.shape}; a 3-D anatomical image is required "
            "(split a 4-D series or choose another image)"
        )
    if min(data.shape) < 1 or data.size == 0:
        raise InputDataError(f"{path} has an empty grid {data.shape}")
    if np.iscomplexobj(data):
        raise InputDataError(f"{path} holds complex values ({data.dtype}); give the magnitude "
                             "image (e.g. fslcomplex -realabs, or the scanner's magnitude export)")
    data = data.astype(dtype, copy=False)
    if np.issubdtype(data.dtype, np.floating):
        finite = np.isfinite(data)
        if not finite.any():
            raise InputDataError(f"{path} contains no finite values (all NaN/Inf)")
        if not finite.all():
            logger.warning("%s: %d non-finite voxels set to 0", path, int((~finite).sum()))
            data = np.where(finite, data, 0).astype(dtype, copy=False)
    affine = best_affine(img, path=path)
    if abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise InputDataError(f"{path} has a singular affine; fix the header (qform/sform)")
    shear = shear_degrees(affine)
    if shear > MAX_SHEAR_DEGREES:
        raise InputDataError(
            f"{path} has a sheared voxel grid (its axes are {shear:.2g} degrees from "
            "perpendicular in the sform); outputs would need a sheared header that a qform cannot "
            "hold: reslice it onto an orthogonal grid (e.g. sct_image -to-fov, or mri_convert)")
    return Volume(data=data, affine=affine)


MAX_SHEAR_DEGREES = 0.01
"""Axes further than this from perpendicular: the NIfTI qform (rotation + zooms only) cannot
describe the grid, so qform and sform of our outputs would disagree."""


def shear_degrees(affine: Affine) -> float:
    """Largest departure from 90 degrees between two voxel axes of ``affine``.

    >>> round(shear_degrees(np.array([[1, 0.1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])),
    ...       2)
    5.71
    """
    axes = np.asarray(affine, dtype=np.float64)[:3, :3]
    units = axes / np.linalg.norm(axes, axis=0)
    cosines = np.abs(units.T @ units)[np.triu_indices(3, 1)]
    return float(np.degrees(np.arcsin(np.clip(cosines.max(), 0.0, 1.0))))


def header_has_orientation(path: Path) -> bool:
    """False when the NIfTI header's sform and qform codes are both 0 (orientation unknown)."""
    header = nib.load(str(path)).header
    return bool(int(header["sform_code"]) or int(header["qform_code"]))  # type: ignore[index]


def load_mask(path: Path, *, reference: Volume | None = None, reference_path: Path | None = None,
              allow_empty: bool = False) -> Volume:
    """Read a label or mask image (integer values), optionally checking that it shares a grid.

    Raises
    ------
    InputDataError
        Different grid from ``reference``, or empty mask when ``allow_empty`` is false.
    """
    vol = load_volume(path, dtype=np.float32)
    data = np.rint(vol.data).astype(np.int32)
    if reference is not None and not same_grid(vol, reference):
        raise InputDataError(
            f"{path} is not on the grid of {reference_path or 'its image'} "
            f"({grid_difference(vol, reference)}); resample the label onto the image grid"
        )
    if not allow_empty and not data.any():
        peak = float(np.max(np.abs(vol.data)))
        if peak > 0:
            raise InputDataError(f"{path} has no voxel >= 0.5 (largest value {peak:.3g}): a "
                                 "label image of integers (a 0/1 mask) is expected")
        raise InputDataError(f"{path} is empty (no non-zero voxel); provide a non-empty label")
    return Volume(data=data, affine=vol.affine)


def grid_difference(a: Volume, b: Volume) -> str:
    """What differs between two voxel grids, with the figures of both (label vs image).

    >>> grid_difference(Volume(np.zeros((2, 2, 2)), np.eye(4)),
    ...                 Volume(np.zeros((2, 2, 2)), np.diag([1.0, 1.0, 2.0, 1.0])))
    'voxel size (1, 1, 1) vs (1, 1, 2) mm'
    """
    def fmt(values: NDArray) -> str:
        return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"

    differences = []
    if a.shape != b.shape:
        differences.append(f"shape {a.shape} vs {b.shape}")
    zooms_a = np.linalg.norm(a.affine[:3, :3], axis=0)
    zooms_b = np.linalg.norm(b.affine[:3, :3], axis=0)
    if not np.allclose(zooms_a, zooms_b, atol=1e-4):
        differences.append(f"voxel size {fmt(zooms_a)} vs {fmt(zooms_b)} mm")
    elif not np.allclose(a.affine[:3, :3], b.affine[:3, :3], atol=1e-4):
        differences.append("orientation (axis directions) differs")
    if not np.allclose(a.affine[:3, 3], b.affine[:3, 3], atol=1e-3):
        differences.append(f"origin {fmt(a.affine[:3, 3])} vs {fmt(b.affine[:3, 3])} mm")
    return "; ".join(differences) or "affines differ slightly"


def same_grid(a: Volume, b: Volume, *, atol_mm: float = _AFFINE_ATOL_MM * 10) -> bool:
    return a.shape == b.shape and np.allclose(a.affine, b.affine, atol=atol_mm)


def reorient(volume: Volume, axcodes: tuple[str, str, str] = ("R", "A", "S")) -> Volume:
    """Permute and flip the voxel axes to ``axcodes`` without resampling."""
    current = nib.orientations.io_orientation(volume.affine)
    target = nib.orientations.axcodes2ornt(axcodes)
    transform = nib.orientations.ornt_transform(current, target)
    data = nib.orientations.apply_orientation(volume.data, transform)
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.shape)
    return Volume(data=np.ascontiguousarray(data), affine=affine)


def save_volume(volume: Volume, path: Path, *, dtype: DTypeLike | None = None,
                intent: str | None = None) -> Path:
    """Write ``volume`` atomically as NIfTI-1 with matching qform and sform (code 1, scanner)."""
    data = volume.data if dtype is None else volume.data.astype(dtype)
    img = nib.Nifti1Image(data, volume.affine)
    img.set_qform(volume.affine, code=1)
    img.set_sform(volume.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if intent is not None:
        img.header.set_intent(intent)
    with atomic_path(Path(path)) as tmp:
        nib.save(img, str(tmp))
    return Path(path)


def nifti_stem(path: Path) -> str:
    """File name without ``.nii.gz`` / ``.nii``.

    >>> nifti_stem(Path("/d/sub-01_T2w.nii.gz"))
    'sub-01_T2w'
    """
    name = Path(path).name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def vox_to_mm(affine: Affine, ijk: NDArray) -> NDArray[np.float64]:
    """Voxel indices (N, 3) to world coordinates (N, 3), mm, RAS+.

    >>> vox_to_mm(np.diag([2.0, 2.0, 2.0, 1.0]), np.array([[1, 2, 3]]))
    array([[2., 4., 6.]])
    """
    ijk = np.atleast_2d(np.asarray(ijk, dtype=np.float64))
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def mm_to_vox(affine: Affine, xyz: NDArray) -> NDArray[np.float64]:
    """World coordinates (N, 3), mm, RAS+ to continuous voxel indices (N, 3).

    >>> mm_to_vox(np.diag([2.0, 2.0, 2.0, 1.0]), np.array([[2.0, 4.0, 6.0]]))
    array([[1., 2., 3.]])
    """
    xyz = np.atleast_2d(np.asarray(xyz, dtype=np.float64))
    inv = np.linalg.inv(affine)
    return xyz @ inv[:3, :3].T + inv[:3, 3]


def load_centerline(cord: Path) -> tuple[Volume, Centerline]:
    vol = load_mask(cord)
    return vol, centerline_from_mask(vol.data, vol.affine)


def read_discs(path: Path, line: Centerline) -> tuple[dict[int, np.ndarray], DiscPositions]:
    vol = load_mask(path)
    points = discs_from_label_array(vol.data, vol.affine)
    return points, project_discs(points, line)


VECTOR_INTENT_CODE = 1007

NO_MAPPING_ON_DISK = float(np.finfo(np.float32).max)
"""What a reference point without a mapping holds on disk: ANTs's own "no valid displacement"
(what ``antsApplyTransforms`` writes where a composed warp has no value)."""

NO_MAPPING_READ_MM = 5.0e4
"""A displacement component this large (50 m) is a sentinel, not anatomy: ANTs's float32-max
and SCT's +-100000 both read as "no mapping"."""


def save_field(field: DisplacementField, path: Path, *,
               reference: tuple[tuple[int, int, int], np.ndarray] | None = None) -> Path:
    """Write ``field`` atomically as an ITK/ANTs displacement field NIfTI on its reference grid.

    Parameters
    ----------
    field : DisplacementField
        NaN where a reference point has no mapping.
    reference : (shape, affine), optional
        The whole grid of the reference image when ``field`` covers only a block of it (the
        builtin registration's template slab): the file is written on that whole grid, and
        every voxel outside the block holds :data:`NO_MAPPING_ON_DISK`.

    Raises
    ------
    ValueError
        ``field``'s grid is not a block of ``reference``.
    """
    shape, affine = (field.shape, field.affine) if reference is None else reference
    i, j, k = subgrid_offset(field.shape, field.affine, shape, affine)
    nx, ny, nz = field.shape
    # one full-size array, written block by block (a 0.5 mm PAM50 field is 236 MB)
    data = np.full((*shape, 1, 3), NO_MAPPING_ON_DISK, dtype=np.float32)
    block = data[i:i + nx, j:j + ny, k:k + nz, 0, :]
    np.multiply(field.data, RAS_TO_LPS, out=block)
    block[~np.isfinite(block)] = NO_MAPPING_ON_DISK
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_intent("vector", (), name="")
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.float32)
    with atomic_path(Path(path)) as tmp:
        nib.save(img, str(tmp))
    logger.debug("wrote displacement field %s %s on grid %s", path, field.shape, shape)
    return Path(path)


def load_field(path: Path) -> DisplacementField:
    """Read an ITK/ANTs displacement field NIfTI (5-D ``(nx, ny, nz, 1, 3)``, LPS vectors).

    Raises
    ------
    MissingInputError
        The file does not exist.
    InputDataError
        The file is not a 3-D vector field.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"displacement field not found: {path}")
    img = nib.load(str(path))
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise InputDataError(f"{path} is not a NIfTI displacement field")
    data = np.asanyarray(img.dataobj)
    if data.ndim != 5 or data.shape[3] != 1 or data.shape[4] != 3:
        raise InputDataError(
            f"{path} has shape {data.shape}; an ITK displacement field is (nx, ny, nz, 1, 3)")
    field = field_from_itk_array(data, best_affine(img, path=path))
    with np.errstate(invalid="ignore"):
        no_mapping = ~np.all(np.abs(field.data) < NO_MAPPING_READ_MM, axis=-1)
    field.data[no_mapping] = np.nan
    return field
