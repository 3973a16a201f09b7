"""Read and write displacement fields as ITK/ANTs 5-D NIfTI files (the edge of ``geometry``).

On disk: shape ``(nx, ny, nz, 1, 3)``, float32, LPS vectors in mm, intent ``vector`` (1007),
header of the reference grid; SCT, ANTs (``antsApplyTransforms``) and SimpleITK
(``DisplacementFieldTransform``) read these files directly.

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

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.geometry.fields import (
    RAS_TO_LPS,
    DisplacementField,
    field_from_itk_array,
    subgrid_offset,
)
from spinal_bidsapp.image import best_affine
from spinal_bidsapp.runtime.files import atomic_path

logger = logging.getLogger(__name__)

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
