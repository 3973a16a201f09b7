"""Read and write displacement fields as ITK/ANTs 5-D NIfTI files (the edge of ``geometry``).

On disk: shape ``(nx, ny, nz, 1, 3)``, float32, LPS vectors in mm, intent ``vector`` (1007),
header of the reference grid; SCT, ANTs (``antsApplyTransforms``) and SimpleITK
(``DisplacementFieldTransform``) read these files directly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.files import atomic_path
from spinal_bidsapp.geometry.fields import (
    DisplacementField,
    field_from_itk_array,
    field_to_itk_array,
)
from spinal_bidsapp.image import best_affine

logger = logging.getLogger(__name__)

VECTOR_INTENT_CODE = 1007


def save_field(field: DisplacementField, path: Path) -> Path:
    """Write ``field`` atomically as an ITK/ANTs displacement field NIfTI."""
    data = field_to_itk_array(field)
    img = nib.Nifti1Image(data, field.affine)
    img.set_qform(field.affine, code=1)
    img.set_sform(field.affine, code=1)
    img.header.set_intent("vector", (), name="")
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_data_dtype(np.float32)
    with atomic_path(Path(path)) as tmp:
        nib.save(img, str(tmp))
    logger.debug("wrote displacement field %s %s", path, field.shape)
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
    return field_from_itk_array(data, best_affine(img, path=path))
