"""Displacement fields: ITK file format, application, composition, inversion, point labels."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from spinal_bidsapp.geometry.fields import (
    DisplacementField,
    apply_field,
    apply_field_to_point_labels,
    compose_fields,
    grid_points,
    invert_field,
    invert_points,
    transform_points,
)
from spinal_bidsapp.image import load_field, save_field

sitk = pytest.importorskip("SimpleITK")


def _smooth_field(shape, affine, amplitude=2.0, seed=0) -> DisplacementField:
    """A smooth, invertible RAS field: sums of low-frequency sines."""
    rng = np.random.default_rng(seed)
    p = grid_points(shape, affine, 0, int(np.prod(shape)))
    u = np.zeros_like(p)
    for c in range(3):
        k = rng.normal(0, 0.04, 3)
        u[:, c] = amplitude * np.sin(p @ k + rng.uniform(0, np.pi))
    return DisplacementField(u.reshape(*shape, 3).astype(np.float32), affine)


def _oblique_affine() -> np.ndarray:
    angle = 0.3
    rot = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                    [-np.sin(angle), 0, np.cos(angle)]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.2, 0.9, 1.5]) @ np.array([[0, 0, 1], [-1, 0, 0], [0, 1, 0]])
    aff[:3, 3] = [20.0, -15.0, 7.0]
    return aff


def test_field_file_is_itk_5d_float32_lps_vector(tmp_path: Path) -> None:
    field = DisplacementField(np.zeros((4, 5, 6, 3), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]))
    field.data[1, 2, 3] = [1.0, 2.0, 3.0]
    path = save_field(field, tmp_path / "warp.nii.gz")
    img = nib.load(str(path))
    assert img.shape == (4, 5, 6, 1, 3)
    assert img.get_data_dtype() == np.float32
    assert int(img.header["intent_code"]) == 1007
    assert np.allclose(np.asanyarray(img.dataobj)[1, 2, 3, 0], [-1.0, -2.0, 3.0])
    back = load_field(path)
    assert np.array_equal(back.data, field.data) and np.allclose(back.affine, field.affine)


def test_simpleitk_resampling_with_our_field_matches_apply_field(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    moving_aff = _oblique_affine()
    moving = rng.normal(100, 30, (30, 28, 26)).astype(np.float32)
    moving = ndimage.gaussian_filter(moving, 1.5)
    centre = moving_aff[:3, :3] @ (np.array(moving.shape) - 1) / 2 + moving_aff[:3, 3]
    ref_aff = np.diag([1.1, 1.0, 1.3, 1.0])
    ref_aff[:3, 3] = centre - np.array([1.1, 1.0, 1.3]) * (np.array([24, 22, 20]) - 1) / 2
    field = _smooth_field((24, 22, 20), ref_aff, amplitude=3.0)
    ours = apply_field(moving, moving_aff, field, order=1)
    nib.save(nib.Nifti1Image(moving, moving_aff), str(tmp_path / "moving.nii.gz"))
    save_field(field, tmp_path / "warp.nii.gz")
    disp = sitk.Cast(sitk.ReadImage(str(tmp_path / "warp.nii.gz")), sitk.sitkVectorFloat64)
    ref = sitk.Image(disp.GetSize(), sitk.sitkFloat32)
    ref.CopyInformation(disp)
    transform = sitk.DisplacementFieldTransform(disp)
    out = sitk.Resample(sitk.ReadImage(str(tmp_path / "moving.nii.gz"), sitk.sitkFloat32), ref,
                        transform, sitk.sitkLinear, 0.0)
    theirs = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    assert (ours > 0).mean() > 0.5  # most samples fall inside the moving image
    assert np.abs(theirs - ours).max() < 1e-3 * np.ptp(ours)


def test_apply_field_identity_and_translation() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(12, 11, 10)).astype(np.float32)
    aff = _oblique_affine()
    ident = DisplacementField(np.zeros((12, 11, 10, 3), np.float32), aff)
    for order in (0, 1, 3):
        assert np.allclose(apply_field(data, aff, ident, order=order), data, atol=1e-4)
    # a translation by exactly one voxel along the first axis
    shift = np.broadcast_to(aff[:3, 0], (12, 11, 10, 3)).astype(np.float32)
    moved = apply_field(data, aff, DisplacementField(shift.copy(), aff), order=1)
    assert np.allclose(moved[:-1], data[1:], atol=1e-4)
    assert np.all(moved[-1] == 0)


def test_nearest_neighbour_keeps_label_values() -> None:
    labels = np.zeros((20, 20, 20), np.int16)
    labels[5:12, 6:14, 4:15] = 7
    labels[12:16, 6:14, 4:15] = 9
    field = _smooth_field((20, 20, 20), np.eye(4), amplitude=1.5)
    out = apply_field(labels, np.eye(4), field, order=0)
    assert out.dtype == labels.dtype and set(np.unique(out)) <= {0, 7, 9}


def test_point_labels_are_mapped_exactly() -> None:
    aff = np.diag([0.8, 0.8, 1.0, 1.0])
    field = _smooth_field((40, 40, 40), aff, amplitude=2.0, seed=3)
    labels = np.zeros((40, 40, 40), np.uint8)
    labels[20, 20, 10], labels[18, 22, 30] = 3, 4
    out, points = apply_field_to_point_labels(labels, aff, field)
    for value, ijk in ((3, (20, 20, 10)), (4, (18, 22, 30))):
        source = aff[:3, :3] @ np.array(ijk, float) + aff[:3, 3]
        # the mapped point is pulled back exactly onto the source label
        assert np.allclose(transform_points(points[value][None], field)[0], source, atol=1e-3)
        assert np.count_nonzero(out == value) == 1


def test_compose_two_translations_and_a_smooth_field() -> None:
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    a = DisplacementField(np.full((10, 10, 10, 3), [1.0, 0.0, 0.5], np.float32), aff)
    b = DisplacementField(np.full((30, 30, 30, 3), [0.0, -2.0, 1.0], np.float32), aff)
    assert np.allclose(compose_fields(a, b).data, [1.0, -2.0, 1.5])
    f = _smooth_field((16, 16, 16), aff, seed=4)
    g = _smooth_field((16, 16, 16), aff, seed=5)
    fg = compose_fields(f, g)
    p = np.array([[5.3, 7.1, 8.4]])
    expected = transform_points(transform_points(p, f), g)
    assert np.allclose(transform_points(p, fg), expected, atol=0.05)


def test_inverse_field_undoes_the_forward_field() -> None:
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    field = _smooth_field((24, 24, 24), aff, amplitude=2.0, seed=6)
    inverse = invert_field(field, (24, 24, 24), aff)
    roundtrip = compose_fields(inverse, field)
    inner = roundtrip.data[5:-5, 5:-5, 5:-5]
    assert np.abs(inner).max() < 0.05
    x = np.array([[11.2, 12.5, 9.9]])
    assert np.allclose(transform_points(invert_points(x, field), field), x, atol=1e-3)


def test_ants_applies_our_field_like_apply_field(tmp_path: Path) -> None:
    ants = pytest.importorskip("ants")
    rng = np.random.default_rng(9)
    moving_aff = _oblique_affine()
    moving = ndimage.gaussian_filter(rng.normal(100, 30, (26, 24, 22)), 1.5).astype(np.float32)
    centre = moving_aff[:3, :3] @ (np.array(moving.shape) - 1) / 2 + moving_aff[:3, 3]
    ref_aff = np.diag([1.0, 1.1, 1.2, 1.0])
    ref_aff[:3, 3] = centre - np.array([1.0, 1.1, 1.2]) * (np.array([20, 18, 16]) - 1) / 2
    field = _smooth_field((20, 18, 16), ref_aff, amplitude=2.5, seed=10)
    nib.save(nib.Nifti1Image(moving, moving_aff), str(tmp_path / "moving.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((20, 18, 16), np.float32), ref_aff),
             str(tmp_path / "ref.nii.gz"))
    save_field(field, tmp_path / "warp.nii.gz")
    out = ants.apply_transforms(fixed=ants.image_read(str(tmp_path / "ref.nii.gz")),
                                moving=ants.image_read(str(tmp_path / "moving.nii.gz")),
                                transformlist=[str(tmp_path / "warp.nii.gz")],
                                interpolator="linear")
    ours = apply_field(moving, moving_aff, field, order=1)
    assert (ours > 0).mean() > 0.5
    assert np.abs(out.numpy() - ours).max() < 1e-3 * np.ptp(ours)


def _slab_case(tmp_path: Path) -> tuple[Path, Path, Path, np.ndarray, DisplacementField]:
    """A moving image of ones everywhere, a reference grid 20 slices long, and a field that maps
    (a 1.5 mm shift) only on its slices 8-11: written with the whole grid as its reference."""
    whole = np.diag([1.0, 1.0, 2.0, 1.0])
    slab_affine = whole.copy()
    slab_affine[2, 3] = 16.0
    field = DisplacementField(np.full((6, 6, 4, 3), 0.0, np.float32), slab_affine)
    field.data[..., 0] = 1.5
    moving = tmp_path / "moving.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 6, 40), np.float32), np.eye(4)), str(moving))
    reference = tmp_path / "reference.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((6, 6, 20), np.float32), whole), str(reference))
    warp = save_field(field, tmp_path / "warp.nii.gz", reference=((6, 6, 20), whole))
    inside = np.zeros((6, 6, 20), bool)
    inside[:, :, 8:12] = True
    return moving, reference, warp, inside, field


def test_a_slab_field_is_written_on_the_whole_reference_grid(tmp_path: Path) -> None:
    _, reference, warp, inside, field = _slab_case(tmp_path)
    img = nib.load(str(warp))
    assert img.shape == (6, 6, 20, 1, 3)
    assert np.allclose(img.affine, nib.load(str(reference)).affine)
    data = np.asanyarray(img.dataobj)
    assert np.all(data[~inside] == np.finfo(np.float32).max)
    assert np.allclose(data[inside][:, 0], [-1.5, 0.0, 0.0])  # LPS on disk
    back = load_field(warp)
    assert np.isnan(back.data[~inside]).all()
    assert np.array_equal(back.data[:, :, 8:12], field.data)
    with pytest.raises(ValueError, match="not a block"):
        save_field(field, tmp_path / "bad.nii.gz", reference=((6, 6, 3), np.eye(4)))


def test_standard_tools_resample_nothing_where_a_written_field_has_no_mapping(
        tmp_path: Path) -> None:
    """antspyx and SimpleITK on the whole reference grid: the moving image (ones everywhere,
    so any identity fallback would show) only where the field maps, as our apply_field."""
    from tests.warp_tools import ants_apply, sitk_apply

    moving, reference, warp, inside, _ = _slab_case(tmp_path)
    ours = apply_field(np.ones((8, 6, 40), np.float32), np.eye(4), load_field(warp), order=1)
    assert np.all(ours[~inside] == 0.0) and np.all(ours[inside] == 1.0)
    for tool in (ants_apply, sitk_apply):
        out = tool(moving, reference, warp)
        assert np.all(out[~inside] == 0.0), tool.__name__
        assert np.allclose(out[inside], 1.0), tool.__name__


def test_sentinels_read_as_no_mapping_and_propagate(tmp_path: Path) -> None:
    """float32-max (ANTs) and +-100000 (SCT's straightening) read as NaN; points, compositions
    and inverses through them have no mapping (never the identity); NaN is written float32-max."""
    data = np.zeros((4, 4, 6, 1, 3), np.float32)
    data[:, :, 0] = np.finfo(np.float32).max
    data[:, :, 1] = -100000.0
    data[:, :, 2, 0, 2] = 100000.0
    path = tmp_path / "sentinels.nii.gz"
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_intent("vector", (), name="")
    nib.save(img, str(path))
    field = load_field(path)
    assert np.isnan(field.data[:, :, :3]).all() and np.isfinite(field.data[:, :, 3:]).all()
    points = transform_points(np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 4.0]]), field)
    assert np.isnan(points[0]).all() and np.allclose(points[1], [1.0, 1.0, 4.0])
    composed = compose_fields(field, field)
    assert np.isnan(composed.data[:, :, 0]).all() and np.isfinite(composed.data[:, :, 4]).all()
    inverse = invert_field(field, field.shape, field.affine)
    assert np.isnan(inverse.data[:, :, 0]).all() and np.isfinite(inverse.data[:, :, 5]).all()
    written = np.asanyarray(nib.load(str(save_field(composed, tmp_path / "c.nii.gz"))).dataobj)
    assert np.all(written[:, :, 0] == np.finfo(np.float32).max)
