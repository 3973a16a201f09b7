"""PAM50 phantoms: real anatomy bent and stretched with an exactly known mapping."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from benchmarks.scoring import dice
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.image import vox_to_mm
from spinal_bidsapp.synth import generate_phantom_cohort, load_cohort_truth
from spinal_bidsapp.synth.cli import main
from spinal_bidsapp.synth.cohort import _phantom_labelled_discs, phantom_truth, subject_rngs
from spinal_bidsapp.synth.demo import disc_label_image
from spinal_bidsapp.synth.phantom import (
    PHANTOM_TISSUES,
    Pam50Anatomy,
    _disc_points,
    draw_phantom_subject,
    load_pam50,
    render_phantom_subject,
)
from spinal_bidsapp.synth.spine import PAM50_SMALL_OFFSET_MM
from spinal_bidsapp.synth.truth import (
    true_cord_area_mm2,
    true_pam50_to_subject_mm,
    true_subject_to_pam50_mm,
)


@pytest.fixture(scope="module")
def anatomy(pam50_dirs: tuple[Path, Path]) -> Pam50Anatomy:
    return load_pam50(*pam50_dirs)


def _phantom(anatomy: Pam50Anatomy, seed: int, index: int = 0, **options):
    geometry_rng, noise_rng = subject_rngs(seed, index)
    spec = draw_phantom_subject(geometry_rng, voxel_mm_range=(0.8, 1.0))
    return spec, render_phantom_subject(spec, anatomy, rng=noise_rng, **options)


@pytest.fixture(scope="module")
def phantoms(anatomy: Pam50Anatomy) -> list:
    return [_phantom(anatomy, 0, i, t1w=True) for i in range(2)]


def test_pam50_small_frame_offset_matches_the_disc_labels(pam50_dirs: tuple[Path, Path],
                                                          tmp_path: Path) -> None:
    full = _disc_points(pam50_dirs[0] / "PAM50_label_disc.nii.gz")
    small = _disc_points(pam50_dirs[1] / "PAM50_small_label_disc.nii.gz")
    offsets = np.array([small[d] - full[d] for d in range(2, 20)])
    np.testing.assert_allclose(offsets.mean(axis=0), PAM50_SMALL_OFFSET_MM, atol=0.3)
    np.testing.assert_allclose(offsets[:, :2], np.broadcast_to(PAM50_SMALL_OFFSET_MM[:2], (18, 2)),
                               atol=1e-3)
    assert np.abs(offsets[:, 2] - PAM50_SMALL_OFFSET_MM[2]).max() <= 1.5  # 2 mm slices in z
    shifted = nib.load(pam50_dirs[1] / "PAM50_small_label_disc.nii.gz")
    affine = shifted.affine.copy()
    affine[2, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(shifted.dataobj), affine),
             tmp_path / "PAM50_small_label_disc.nii.gz")
    with pytest.raises(InputDataError, match="offset"):
        load_pam50(pam50_dirs[0], tmp_path)


def test_phantoms_are_deterministic(anatomy: Pam50Anatomy, phantoms: list) -> None:
    spec, rendered = _phantom(anatomy, 0, 1, t1w=True)
    np.testing.assert_array_equal(rendered.t2w, phantoms[1][1].t2w)
    np.testing.assert_array_equal(rendered.t1w, phantoms[1][1].t1w)
    np.testing.assert_array_equal(rendered.cord_mask, phantoms[1][1].cord_mask)
    truth = phantom_truth(spec, anatomy, subject="02", seed=0, files={}).to_dict()
    assert truth == phantom_truth(phantoms[1][0], anatomy, subject="02", seed=0,
                                  files={}).to_dict()
    other = phantom_truth(_phantom(anatomy, 1, 1)[0], anatomy, subject="02", seed=1, files={})
    assert other.to_dict()["mapping"] != truth["mapping"]
    assert other.to_dict()["curve"] != truth["curve"]


def test_phantom_labels_and_cord_volume_are_consistent(anatomy: Pam50Anatomy,
                                                       phantoms: list) -> None:
    for spec, rendered in phantoms:
        truth = phantom_truth(spec, anatomy, subject="01", seed=0, files={})
        labels = disc_label_image(spec.curve, _phantom_labelled_discs(spec), spec.grid)
        ijk = np.argwhere(labels > 0)
        values = labels[tuple(ijk.T)]
        assert sorted(values.tolist()) == list(range(2, 9))
        assert np.all(rendered.cord_mask[tuple(ijk.T)] == 1)
        order = np.argsort(values)
        arc = spec.curve.world_to_curve(vox_to_mm(spec.grid.affine, ijk[order]))[:, 2]
        assert np.all(np.diff(arc) < -8.0)
        arcs = dict(zip(spec.mapping.discs, spec.mapping.disc_arc_mm, strict=True))
        cord = np.argwhere(rendered.cord_mask > 0)
        s = spec.curve.world_to_curve(vox_to_mm(spec.grid.affine, cord))[:, 2]
        volume = ((s >= arcs[8]) & (s <= arcs[2])).sum() * np.prod(spec.grid.voxel_mm)
        assert volume == pytest.approx(truth.cord_volume_mm3["2-8"], rel=0.02)
        s = np.linspace(arcs[8], arcs[2], 2001)
        assert np.trapezoid(true_cord_area_mm2(truth, s), s) == pytest.approx(
            truth.cord_volume_mm3["2-8"], rel=2e-3)
        for disc in range(2, 9):
            assert true_cord_area_mm2(truth, np.array(arcs[disc])) == pytest.approx(
                truth.cord_csa_mm2[disc], rel=5e-3)  # 0.5 mm profile of 0.5 mm slices


def test_true_mapping_sends_the_subject_cord_into_the_pam50_cord(
        anatomy: Pam50Anatomy, phantoms: list) -> None:
    spec, rendered = phantoms[0]
    truth = phantom_truth(spec, anatomy, subject="01", seed=0, files={})
    cord_mm = vox_to_mm(spec.grid.affine, np.argwhere(rendered.cord_mask > 0))
    template = true_subject_to_pam50_mm(truth, cord_mm)
    inverse = np.linalg.inv(anatomy.mask_affine)
    vox = template @ inverse[:3, :3].T + inverse[:3, 3]
    inside = ndimage.map_coordinates(anatomy.masks["cord"], vox.T, order=1) >= 0.5
    assert inside.mean() > 0.999
    np.testing.assert_allclose(true_pam50_to_subject_mm(truth, template), cord_mm, atol=1e-6)


def test_phantom_contrasts(phantoms: list) -> None:
    for _, rendered in phantoms:
        cord = rendered.dseg == PHANTOM_TISSUES["cord"]
        csf = rendered.dseg == PHANTOM_TISSUES["csf"]
        assert rendered.t2w[csf].mean() > 1.5 * rendered.t2w[cord].mean()
        assert rendered.t1w[cord].mean() > 2.0 * rendered.t1w[csf].mean()


def test_phantom_cohort_on_disk(pam50_dirs: tuple[Path, Path], tmp_path: Path,
                               validate_bids: Callable[[Path], dict]) -> None:
    result = generate_phantom_cohort(tmp_path, pam50_dir=pam50_dirs[0],
                                     pam50_small_dir=pam50_dirs[1], n_subjects=2, seed=0,
                                     voxel_mm_range=(0.9, 1.0), truth_warp=True)
    validate_bids(result.bids_dir)
    for truth in load_cohort_truth(tmp_path):
        sub = truth.subject
        for rel in truth.files.values():
            assert (tmp_path / rel).is_file()
        discs = nib.load(tmp_path / truth.files["T2w_labels-disc"])
        assert set(np.unique(np.asarray(discs.dataobj))) == {0, *range(2, 9)}
        warp = nib.load(tmp_path / "truth" / f"sub-{sub}"
                        / f"sub-{sub}_from-PAM50_to-T2w_mode-image_xfm.nii.gz")
        assert warp.shape == (*truth.grid.shape, 1, 3)
        assert warp.header.get_intent()[0] == "vector"
        field = np.asarray(warp.dataobj)[:, :, :, 0, :]
        rng = np.random.default_rng(0)
        ijk = np.column_stack([rng.integers(0, n, 50) for n in truth.grid.shape])
        points = vox_to_mm(truth.grid.affine, ijk)
        lps = field[tuple(ijk.T)]
        mapped = points + lps * np.array([-1.0, -1.0, 1.0])
        np.testing.assert_allclose(mapped, true_subject_to_pam50_mm(truth, points), atol=1e-3)
    # ANTs reads the field with the same convention: PAM50_cord lands on the subject cord mask
    ants = pytest.importorskip("ants")
    warped = ants.apply_transforms(
        fixed=ants.image_read(str(tmp_path / truth.files["T2w"])),
        moving=ants.image_read(str(pam50_dirs[0] / "PAM50_cord.nii.gz")),
        transformlist=[str(tmp_path / truth.files["xfm_PAM50_to_T2w"])], interpolator="linear")
    mask = np.asarray(nib.load(tmp_path / truth.files["T2w_label-SC_mask"]).dataobj)
    assert dice(warped.numpy() >= 0.5, mask) > 0.99


def test_cli_writes_a_phantom_cohort(pam50_dirs: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "cli"
    argv = ["phantom", str(out), "--n-subjects", "1", "--seed", "3", "--t1w",
            "--pam50", str(pam50_dirs[0]), "--pam50-small", str(pam50_dirs[1])]
    assert main(argv) == 0
    assert (out / "bids/sub-01/anat/sub-01_T1w.nii.gz").is_file()
    assert (out / "bids/derivatives/labels/sub-01/anat/sub-01_T1w_label-SC_mask.nii.gz").is_file()
    assert json.loads((out / "truth/cohort.json").read_text())["cohort"] == "phantom"
    assert main(["phantom", str(out), "--pam50", str(tmp_path / "missing"),
                 "--pam50-small", str(pam50_dirs[1])]) == 66
    assert main(["phantom", str(out), "--fov-discs", "8", "2"]) == 64


@pytest.fixture(scope="module")
def whole_cord_anatomy(pam50_dirs: tuple[Path, Path]) -> Pam50Anatomy:
    return load_pam50(*pam50_dirs, bottom_disc=21)


def test_whole_cord_phantoms_carry_every_pam50_disc_and_the_conus(
        whole_cord_anatomy: Pam50Anatomy) -> None:
    anatomy = whole_cord_anatomy
    assert anatomy.conus_z_mm == pytest.approx(-541.84, abs=0.01)  # PAM50 label 60, z = 40
    assert anatomy.masks["cord"].shape[2] == 991  # nothing cropped: the template's whole length
    seen_conus = 0
    for index in range(3):
        spec = draw_phantom_subject(subject_rngs(0, index)[0], voxel_mm_range=(0.8, 1.0),
                                    fov_discs=(1, 21))
        assert spec.mapping.discs == tuple(range(1, 22))
        labelled = _phantom_labelled_discs(spec, anatomy)
        labels = disc_label_image(spec.curve, labelled, spec.grid)
        ijk = np.argwhere(labels > 0)
        values = labels[tuple(ijk.T)]
        discs = sorted(v for v in values.tolist() if v != 60)
        assert discs == list(range(1, 22))  # every disc has its own voxel inside the grid
        truth = phantom_truth(spec, anatomy, subject="01", seed=0, files={})
        conus = next(d for d in truth.discs if d.disc == 60)
        disc21 = next(d for d in truth.discs if d.disc == 21)
        # the conus sits 0.5 mm above disc 21 in PAM50, times the subject's lowest stretch
        stretch = spec.mapping.level_stretch()["20-21"]
        assert conus.arc_length_mm - disc21.arc_length_mm == pytest.approx(0.5 * stretch,
                                                                          rel=1e-3)
        assert (60 in values) == (conus.voxel is not None)
        if conus.voxel is not None:
            seen_conus += 1
            assert conus.voxel != disc21.voxel
        order = np.argsort([v if v != 60 else 21.5 for v in values])
        arc = spec.curve.world_to_curve(vox_to_mm(spec.grid.affine, ijk[order]))[:, 2]
        assert np.all(np.diff(arc[:21]) < -8.0)  # C1 top to L1/L2, top down along the curve
        span = arc[0] - arc[20]
        assert 380.0 < span < 560.0  # PAM50: 473 mm from disc 1 to 21, stretched 0.77-1.27x
        z = spec.curve.z_at_arc_length(np.linspace(arc[20], arc[0], 200))
        assert 1.0 / spec.curve.curvature_at_z(z).max() >= 90.0
    assert seen_conus >= 1


def test_cervical_phantoms_keep_their_eleven_level_mapping() -> None:
    spec = draw_phantom_subject(subject_rngs(0, 0)[0])
    assert spec.mapping.discs == tuple(range(1, 12))
    with pytest.raises(ValueError, match="fov_discs"):
        draw_phantom_subject(subject_rngs(0, 0)[0], fov_discs=(3, 22))
