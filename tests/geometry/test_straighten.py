"""Straightening fields on phantoms with a known straight form and on real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from geometry_phantoms import TubePhantom, disc_label_array, make_tube_phantom

from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.centerline import centerline_from_mask
from spinal_bidsapp.geometry.coordinates import locate_points
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.geometry.fields import (
    DisplacementField,
    apply_field,
    grid_points,
    transform_points,
)
from spinal_bidsapp.geometry.metrics import measure_disc_errors, measure_straightness
from spinal_bidsapp.geometry.straighten import straighten_to_centerline, straighten_to_line
from spinal_bidsapp.image import Volume, load_mask, load_volume, reorient


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def _roundtrip_dice(mask: Volume) -> float:
    cl = centerline_from_mask(mask.data, mask.affine)
    res = straighten_to_line(cl, mask.shape, mask.affine)
    straight = apply_field(mask.data.astype(np.float32), mask.affine, res.curve_to_straight,
                           order=1)
    back = apply_field(straight, res.curve_to_straight.affine, res.straight_to_curve, order=1)
    return _dice(back > 0.5, mask.data > 0.5)


@pytest.fixture(scope="module")
def cervical() -> TubePhantom:
    return make_tube_phantom("cervical", voxel_mm=(1.0, 1.0, 1.0), seed=11)


@pytest.fixture(scope="module")
def errsm30(data_dir: Path) -> dict[str, Volume]:
    labels = data_dir / "bids-real" / "derivatives" / "labels" / "sub-errsm30" / "anat"
    return {
        "image": load_volume(data_dir / "bids-real/sub-errsm30/anat/sub-errsm30_T2w.nii.gz"),
        "mask": load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz"),
        "discs": load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz"),
    }


def test_roundtrip_of_a_mask_keeps_dice(cervical: TubePhantom) -> None:
    assert _roundtrip_dice(cervical.mask) >= 0.95


def test_roundtrip_of_the_real_mask_keeps_dice(errsm30: dict[str, Volume]) -> None:
    assert _roundtrip_dice(errsm30["mask"]) >= 0.95


def test_helix_maps_onto_its_analytic_straight_form() -> None:
    ph = make_tube_phantom("helix", voxel_mm=(1.0, 1.0, 1.0), seed=3)
    cl = centerline_from_mask(ph.soft_mask.data, ph.soft_mask.affine)
    res = straighten_to_line(cl, ph.mask.shape, ph.mask.affine)
    assert res.straight.length_mm == pytest.approx(cl.length_mm)
    arcs = np.linspace(15.0, ph.curve_arc[-1] - 15.0, 12)
    on_curve = ph.point_at(arcs)
    tangent = ph.tangent_at(arcs)
    normal = np.cross(tangent, [0.0, 1.0, 0.0])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    for offset in (0.0, 3.0):
        q = transform_points(on_curve + offset * normal, res.straight_to_curve)
        line = res.straight.points_mm[0]
        radial = np.hypot(q[:, 0] - line[0], q[:, 1] - line[1])
        assert np.allclose(radial, offset, atol=0.25)
        # arc length along the helix becomes height along the straight line
        assert np.allclose(np.diff(q[:, 2]), np.diff(arcs), atol=0.1)
    # the straightened tube is the analytic straight cylinder (interior slices)
    straight = apply_field(ph.soft_mask.data, ph.soft_mask.affine, res.curve_to_straight,
                           order=1) > 0.5
    f = res.curve_to_straight
    pts = grid_points(f.shape, f.affine, 0, int(np.prod(f.shape))).reshape(*f.shape, 3)
    line = res.straight.points_mm[0]
    cylinder = np.hypot(pts[..., 0] - line[0], pts[..., 1] - line[1]) <= ph.radius_mm
    inner = slice(8, f.shape[2] - 8)
    assert _dice(straight[:, :, inner], cylinder[:, :, inner]) > 0.95


@pytest.mark.parametrize(("kind", "voxel"), [("sinusoid", 1.0), ("cervical", 0.5)])
def test_curved_phantoms_become_straight(kind: str, voxel: float) -> None:
    ph = make_tube_phantom(kind, voxel_mm=(voxel, voxel, voxel), seed=5)
    mask = ph.soft_mask
    cl = centerline_from_mask(mask.data, mask.affine)
    res = straighten_to_line(cl, mask.shape, mask.affine)
    metric = measure_straightness(mask.data, mask.affine, res.curve_to_straight)
    assert metric.n_slices > 0.8 * ph.curve_arc[-1] / voxel
    assert metric.rms_mm <= 0.15
    assert metric.max_mm <= 0.45


def test_straightness_metric_flags_an_unstraightened_cord(cervical: TubePhantom) -> None:
    mask = cervical.soft_mask
    cl = centerline_from_mask(mask.data, mask.affine)
    res = straighten_to_line(cl, mask.shape, mask.affine)
    f = res.curve_to_straight
    # the identity on the straight grid leaves the cord curved
    identity = DisplacementField(np.zeros_like(f.data), f.affine)
    metric = measure_straightness(mask.data, mask.affine, identity)
    assert metric.rms_mm > 1.0


def test_real_cord_straightness_matches_sct(errsm30: dict[str, Volume]) -> None:
    mask = errsm30["mask"]
    cl = centerline_from_mask(mask.data, mask.affine)
    res = straighten_to_line(cl, mask.shape, mask.affine)
    metric = measure_straightness(mask.data, mask.affine, res.curve_to_straight)
    assert metric.rms_mm <= 0.22
    assert metric.max_mm <= 0.37


@pytest.mark.parametrize("axcodes", [("L", "A", "S"), ("P", "S", "R")])
def test_storage_orientation_gives_the_same_physical_result(cervical: TubePhantom,
                                                            axcodes: tuple[str, str, str]
                                                            ) -> None:
    def run(image: Volume, mask: Volume) -> tuple[np.ndarray, DisplacementField]:
        cl = centerline_from_mask(mask.data, mask.affine)
        res = straighten_to_line(cl, mask.shape, mask.affine)
        straight = apply_field(image.data, image.affine, res.curve_to_straight, order=1)
        back = reorient(Volume(res.straight_to_curve.data, res.straight_to_curve.affine))
        return straight, DisplacementField(back.data, back.affine)

    ref_straight, ref_s2c = run(cervical.image, cervical.mask)
    img = reorient(cervical.image, axcodes)
    mask = reorient(cervical.mask, axcodes)
    assert mask.axcodes == axcodes
    straight, s2c = run(img, mask)
    assert straight.shape == ref_straight.shape
    assert np.abs(straight - ref_straight).max() < 1e-3 * np.ptp(ref_straight)
    assert np.allclose(s2c.affine, ref_s2c.affine, atol=1e-6)
    assert np.abs(s2c.data - ref_s2c.data).max() < 1e-3


def _phantom_discs(ph: TubePhantom) -> dict[int, np.ndarray]:
    return discs_from_label_array(disc_label_array(ph), ph.mask.affine)


@pytest.mark.parametrize("drop", [None, 4])
def test_discs_land_on_destination_discs(cervical: TubePhantom, drop: int | None) -> None:
    dest = make_tube_phantom("sinusoid", voxel_mm=(1.0, 1.0, 1.0), length_z_mm=130.0, seed=8)
    src_discs = _phantom_discs(cervical)
    if drop is not None:  # a gap in the input sequence: SCT crashes here
        src_discs.pop(drop)
    dst_discs = _phantom_discs(dest)
    cl = centerline_from_mask(cervical.mask.data, cervical.mask.affine)
    dcl = centerline_from_mask(dest.mask.data, dest.mask.affine)
    res = straighten_to_centerline(cl, dcl, cervical.mask.shape, cervical.mask.affine,
                                   dest.mask.shape, dest.mask.affine,
                                   input_discs=src_discs, dest_discs=dst_discs)
    err = measure_disc_errors(res, src_discs, dst_discs)
    assert len(err.values) == len(src_discs)
    assert np.abs(err.forward_mm).max() < 0.5
    assert np.abs(err.backward_mm).max() < 0.5
    if drop is not None:  # the missing disc is interpolated, not matched to a neighbour
        mapped = transform_points(cervical.discs[drop][None], res.straight_to_curve)
        miss = locate_points(dcl, mapped)[0][0] - locate_points(dcl, dst_discs[drop][None])[0][0]
        assert abs(miss) < 5.0


def test_discs_out_of_order_are_rejected(cervical: TubePhantom) -> None:
    discs = _phantom_discs(cervical)
    swapped = {3: discs[5], 4: discs[4], 5: discs[3]}
    cl = centerline_from_mask(cervical.mask.data, cervical.mask.affine)
    with pytest.raises(InputDataError, match="anatomical order"):
        straighten_to_centerline(cl, cl, cervical.mask.shape, cervical.mask.affine,
                                 cervical.mask.shape, cervical.mask.affine,
                                 input_discs=swapped, dest_discs=discs)


def test_real_subject_discs_land_on_pam50_small(errsm30: dict[str, Volume],
                                                data_dir: Path) -> None:
    tpl = data_dir / "PAM50_small"
    cord = load_volume(tpl / "PAM50_small_cord.nii.gz")
    tpl_labels = load_mask(tpl / "PAM50_small_label_disc.nii.gz")
    mask, labels = errsm30["mask"], errsm30["discs"]
    src_discs = discs_from_label_array(labels.data, labels.affine)
    dst_discs = discs_from_label_array(tpl_labels.data, tpl_labels.affine)
    assert sorted(src_discs) == [4, 5, 6] and min(dst_discs) == 2  # different top discs
    cl = centerline_from_mask(mask.data, mask.affine)
    dcl = centerline_from_mask(cord.data, cord.affine)
    res = straighten_to_centerline(cl, dcl, mask.shape, mask.affine, cord.shape, cord.affine,
                                   input_discs=src_discs, dest_discs=dst_discs)
    err = measure_disc_errors(res, src_discs, dst_discs)
    assert list(err.values) == [4, 5, 6]
    assert np.abs(err.forward_mm).max() < 0.5
    assert np.abs(err.backward_mm).max() < 0.5
    # and in world z (PAM50_small is straight): disc 4 lands at the template's disc 4 height
    mapped = transform_points(src_discs[4][None], res.straight_to_curve)[0]
    assert mapped[2] == pytest.approx(dst_discs[4][2], abs=0.5)
    assert res.curve_to_straight.shape == cord.shape


def test_destination_given_as_coordinates_preserves_arc_fraction(cervical: TubePhantom) -> None:
    cl = centerline_from_mask(cervical.mask.data, cervical.mask.affine)
    line = np.stack([np.full(13, 2.0), np.full(13, -1.0), np.linspace(-60.0, 60.0, 13)], axis=1)
    dest_affine = np.diag([1.0, 1.0, 1.0, 1.0])
    dest_affine[:3, 3] = [-10.0, -12.0, -70.0]
    res = straighten_to_centerline(cl, line, cervical.mask.shape, cervical.mask.affine,
                                   (25, 25, 141), dest_affine)
    assert res.straight.length_mm == pytest.approx(120.0)
    fractions = np.array([0.1, 0.5, 0.9])
    on_cord = cl.points_mm[np.rint(fractions * (len(cl.arc_mm) - 1)).astype(int)]
    mapped = transform_points(on_cord, res.straight_to_curve)
    assert np.allclose(mapped[:, :2], [2.0, -1.0], atol=0.05)
    assert np.allclose(mapped[:, 2], -60.0 + 120.0 * fractions, atol=0.3)


@pytest.mark.parametrize(("subject", "contrast"), [
    ("errsm30", "T2starw"),  # axial 0.5 x 0.5 x 7.5 mm, 9 slices, LAS
    ("errsm30", "T1w"),      # sagittal-ish 1 mm, RAS
    ("les01", "T2w"),        # 0.8 mm, PSR
    ("unf01", "T2w"),        # a 16 mm axial slab
])
def test_every_real_mask_straightens_and_round_trips(data_dir: Path, subject: str,
                                                     contrast: str) -> None:
    path = (data_dir / "bids-real/derivatives/labels" / f"sub-{subject}" / "anat"
            / f"sub-{subject}_{contrast}_label-SC_mask.nii.gz")
    mask = load_mask(path)
    assert _roundtrip_dice(mask) >= 0.95
    cl = centerline_from_mask(mask.data, mask.affine)
    res = straighten_to_line(cl, mask.shape, mask.affine)
    metric = measure_straightness(mask.data, mask.affine, res.curve_to_straight)
    assert metric.n_slices >= 5
    assert metric.rms_mm <= 0.25
