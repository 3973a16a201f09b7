"""Apply a written displacement field as a user would, with standard tools (#18): antspyx
``ants.apply_transforms``, SimpleITK ``DisplacementFieldTransform`` + ``Resample`` and SCT's
``sct_apply_transfo``, always on the **whole** grid of the field's reference image, and compare
with the app's own resampling."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

from spinal_bidsapp.geometry.fields import apply_field, subgrid_offset
from spinal_bidsapp.image import load_field, load_volume


def ants_apply(moving: Path, reference: Path, warp: Path) -> np.ndarray:
    """``moving`` (a mask) resampled linearly on ``reference``'s grid through ``warp`` by ANTs."""
    import ants

    fixed = ants.image_read(str(reference))
    image = ants.image_read(str(moving)).clone("float")
    return np.asarray(ants.apply_transforms(fixed, image, [str(warp)],
                                            interpolator="linear").numpy())


def sitk_apply(moving: Path, reference: Path, warp: Path) -> np.ndarray:
    """The same with SimpleITK (its arrays are (k, j, i): transposed back)."""
    import SimpleITK as sitk  # noqa: N813 (its customary name)

    field = sitk.ReadImage(str(warp), sitk.sitkVectorFloat64)
    transform = sitk.DisplacementFieldTransform(field)
    image = sitk.ReadImage(str(moving), sitk.sitkFloat32)
    out = sitk.Resample(image, sitk.ReadImage(str(reference)), transform, sitk.sitkLinear, 0.0)
    return np.asarray(sitk.GetArrayFromImage(out)).transpose(2, 1, 0)


def sct_apply(moving: Path, reference: Path, warp: Path, out: Path,
              env: dict[str, str]) -> np.ndarray:
    """The same with the real ``sct_apply_transfo`` (ITK displacement field, LPS)."""
    subprocess.run(["sct_apply_transfo", "-i", str(moving), "-d", str(reference), "-w",
                    str(warp), "-o", str(out), "-x", "linear", "-v", "0"],
                   env=env, check=True, capture_output=True, timeout=600)
    return np.asarray(nib.load(str(out)).dataobj, dtype=np.float32)


def own_apply(moving: Path, warp: Path) -> np.ndarray:
    """The app's own resampling (``apply_field``) of ``moving`` through the written file."""
    volume, field = load_volume(moving), load_field(warp)
    return np.asarray(apply_field(volume.data.astype(np.float32), volume.affine, field, order=1))


def mapped(warp: Path) -> np.ndarray:
    """Voxels of ``warp`` that carry a displacement (neither float32-max nor non-finite)."""
    data = np.asarray(nib.load(str(warp)).dataobj)[:, :, :, 0, :]
    return np.all(np.isfinite(data) & (np.abs(data) < 1e30), axis=-1)


def on_whole_grid(image: Path, reference: Path) -> np.ndarray:
    """A mask written on a block of ``reference``'s grid (a slab), put on the whole grid."""
    part, whole = nib.load(str(image)), nib.load(str(reference))
    i, j, k = subgrid_offset(part.shape[:3], part.affine, whole.shape[:3], whole.affine)
    out = np.zeros(whole.shape[:3], bool)
    nx, ny, nz = part.shape[:3]
    out[i:i + nx, j:j + ny, k:k + nz] = np.asarray(part.dataobj) > 0
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def check_warp(moving: Path, reference: Path, warp: Path, *,
               own_output: Path | None = None) -> dict[str, np.ndarray]:
    """Rule 1 of #18 for one field; returns each tool's mask (``own`` is the app's).

    The file is on the whole grid of ``reference``; ANTs and SimpleITK give ``moving`` nowhere the
    field has no mapping, and the app's resampling (Dice >= 0.99) where it has one; the app's own
    output image (``own_output``, possibly on a slab) is that same resampling.
    """
    field_img, ref_img = nib.load(str(warp)), nib.load(str(reference))
    assert field_img.shape[:3] == ref_img.shape[:3], f"{warp.name} is not on the whole grid"
    assert np.allclose(field_img.affine, ref_img.affine, atol=1e-4)
    covered = mapped(warp)
    own = own_apply(moving, warp) > 0.5
    assert not (own & ~covered).any()
    results = {"own": own}
    if own_output is not None:
        written = on_whole_grid(own_output, reference)
        assert not (written & ~covered).any()
        assert dice(written, own) >= 0.99, (warp.name, dice(written, own))
    for name, tool in (("ants", ants_apply), ("sitk", sitk_apply)):
        result = tool(moving, reference, warp) > 0.5
        ghost = int((result & ~covered).sum())
        assert ghost == 0, f"{name}: {ghost} voxels of {moving.name} outside the covered region"
        assert dice(result, own) >= 0.99, (name, warp.name, dice(result, own))
        results[name] = result
    return results
