"""Builtin template loop on tiny phantoms: convergence, unbiasedness, resume, parallel equality."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from numpy.typing import NDArray

from spinal_bidsapp.engines.base import TemplateSubject
from spinal_bidsapp.engines.builtin import Stage, build_template, preset_options
from spinal_bidsapp.engines.builtin.averaging import correlation_in_mask, mirror_axis
from spinal_bidsapp.engines.builtin.jobs import RegistrationJob, register_item
from spinal_bidsapp.engines.builtin.protocol import (
    TemplateOptions,
    level_pyramid,
    registration_argv,
)
from spinal_bidsapp.engines.builtin.template import iteration_dir
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.fields import compose_fields
from spinal_bidsapp.image import load_field, load_volume
from spinal_bidsapp.synth.acquisition import Grid
from spinal_bidsapp.synth.straight import (
    StraightAnatomy,
    draw_straight_cohort,
    grid_mm,
    render_straight_anatomy,
    write_straight_cohort,
)

SHAPE = (24, 24, 40)
AFFINE = np.array([[-1.0, 0, 0, 11.5], [0, 1.0, 0, -11.5], [0, 0, 1.0, -19.5], [0, 0, 0, 1]])


ANATOMY = StraightAnatomy(cord_half_width_mm=3.5, cord_width_wave_mm=0.0, cord_half_depth_mm=2.6,
                          cord_edge=0.15, grey_matter_contrast=0.0, csf_centre_y_mm=0.5,
                          csf_edge=0.1, background=400.0, csf_contrast=600.0, cord_contrast=700.0)
"""Dark elliptic cord inside bright CSF, centred in x (symmetric), z-invariant."""
DRAWN_ON = Grid(shape=SHAPE, affine=np.diag([-1.0, 1.0, 1.0, 1.0]) @ AFFINE)
"""The phantoms are drawn with x mirrored with respect to AFFINE (x = i - 11.5); the anatomy is
symmetric, so only the direction of the random deformations depends on it."""


def true_anatomy() -> NDArray:
    return render_straight_anatomy(ANATOMY, *grid_mm(DRAWN_ON)).image


def make_cohort(root: Path, n: int, *, seed: int = 0) -> list[TemplateSubject]:
    """Subjects = the true anatomy pulled through smooth zero-mean random deformations."""
    subjects = draw_straight_cohort(DRAWN_ON, n, seed=seed, anatomy=ANATOMY,
                                    smoothing_vox=(4, 4, 6), amplitude_mm=3.5, z_scale=None,
                                    scale_range=None, noise_sd=20.0)
    return write_straight_cohort(root, subjects, AFFINE)


def _data(path: Path) -> NDArray:
    return load_volume(path, dtype=np.float64).data


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("template")
    subjects = make_cohort(root, 4)
    options = preset_options("fast")
    result = build_template(subjects, work_dir=root / "work", options=options, nprocs=2)
    return root, subjects, options, result


def test_template_converges_towards_the_true_shape(built) -> None:
    _, _, options, result = built
    truth = true_anatomy()
    gradient = np.linalg.norm(np.gradient(truth), axis=0)
    edges = gradient > 0.3 * gradient.max()
    corr = [correlation_in_mask(_data(it.average), truth, edges) for it in result.iterations]
    rms = [float(np.sqrt(np.mean((_data(it.average) - truth)[edges] ** 2)))
           for it in result.iterations]
    assert len(result.iterations) == options.n_iterations + 1
    assert corr[-1] > corr[0] + 0.003 and corr[-1] > 0.995
    assert corr[-1] >= max(corr[1:]) - 2e-4
    assert rms[-1] < 0.6 * rms[0]
    record = json.loads(result.convergence.read_text())["iterations"]
    sd = [r["median_sd_in_mask"] for r in record]
    assert sd[-1] < 0.5 * sd[0]
    assert record[-1]["rms_change_in_mask"] < record[1]["rms_change_in_mask"]


def test_mean_warp_after_shape_update_is_near_zero(built) -> None:
    root, _, options, result = built
    warps = sorted((iteration_dir(root / "work", options.n_iterations) / "warps").glob("*.nii"))
    assert len(warps) == 4
    fields = [load_field(p).data.astype(np.float64) for p in warps]
    mirrored = [np.flip(f, axis=0) * np.array([-1.0, 1.0, 1.0]) for f in fields]
    fields += mirrored  # symmetric mode: the population includes the mirrored subjects
    mask = _data(result.mask) > 0
    mean_norm = np.linalg.norm(np.mean(fields, axis=0), axis=-1)[mask]
    subject_norm = np.linalg.norm(np.stack(fields), axis=-1)[:, mask]
    assert np.sqrt(np.mean(subject_norm ** 2)) > 0.3
    assert np.sqrt(np.mean(mean_norm ** 2)) < 0.02 * np.sqrt(np.mean(subject_norm ** 2))


def test_final_warps_are_mutual_inverses(built) -> None:
    _, subjects, _, result = built
    assert [w.label for w in result.warps] == [s.label for s in subjects]
    forward = load_field(result.warps[0].subject_to_template)
    inverse = load_field(result.warps[0].template_to_subject)
    round_trip = compose_fields(inverse, forward).data
    inner = (slice(3, -3), slice(3, -3), slice(3, -3))
    assert np.abs(round_trip[inner]).max() < 0.1
    assert _data(result.cord_probability).max() <= 1.0
    assert set(np.unique(_data(result.mask))) <= {0.0, 1.0}


def test_resume_after_deleting_last_iteration_gives_identical_result(built) -> None:
    root, subjects, options, result = built
    copy = root / "resumed"
    shutil.copytree(root / "work", copy)
    last = iteration_dir(copy, options.n_iterations)
    shutil.rmtree(last)
    shutil.rmtree(copy / "final")
    first_avg = iteration_dir(copy, 1) / "avg.nii.gz"
    mtime = first_avg.stat().st_mtime_ns
    resumed = build_template(subjects, work_dir=copy, options=options, nprocs=2)
    assert first_avg.stat().st_mtime_ns == mtime  # earlier iterations were skipped
    assert last.is_dir()
    for a, b in ((result.template, resumed.template), (result.sd, resumed.sd),
                 (result.cord_probability, resumed.cord_probability)):
        assert a is not None and b is not None
        np.testing.assert_array_equal(_data(a), _data(b))
    np.testing.assert_array_equal(load_field(result.warps[1].subject_to_template).data,
                                  load_field(resumed.warps[1].subject_to_template).data)


def test_one_and_two_processes_give_the_same_template(tmp_path: Path) -> None:
    subjects = make_cohort(tmp_path, 3, seed=1)
    options = TemplateOptions(protocol=(Stage(4.0, 1), Stage(2.0, 1)), symmetric=False,
                              coarse_iterations=20, fine_iterations=10)
    one = build_template(subjects, work_dir=tmp_path / "one", options=options, nprocs=1)
    two = build_template(subjects, work_dir=tmp_path / "two", options=options, nprocs=2)
    a, b = _data(one.template), _data(two.template)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    wa = load_field(one.warps[2].template_to_subject).data
    wb = load_field(two.warps[2].template_to_subject).data
    assert np.abs(wa - wb).max() <= 1e-5 * max(np.abs(wa).max(), 1e-3)


def test_inputs_on_another_grid_are_rejected(tmp_path: Path) -> None:
    subjects = make_cohort(tmp_path, 2)
    shifted = AFFINE.copy()
    shifted[0, 3] += 2.0
    nib.save(nib.Nifti1Image(load_volume(subjects[1].image).data, shifted), subjects[1].image)
    with pytest.raises(InputDataError, match="not on the template grid"):
        build_template(subjects, work_dir=tmp_path / "work", options=preset_options("fast"))


def test_labels_must_be_unique_and_file_safe(tmp_path: Path) -> None:
    subject = TemplateSubject(label="sub 01", image=tmp_path / "a", cord_mask=tmp_path / "b")
    with pytest.raises(InputDataError):
        build_template([subject, subject], work_dir=tmp_path, options=preset_options("fast"))


def test_oblique_grid_cannot_be_mirrored() -> None:
    c, s = np.cos(0.3), np.sin(0.3)
    oblique = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(InputDataError, match="oblique"):
        mirror_axis(oblique)


def test_level_sets_shrink_and_smoothing_in_mm() -> None:
    options = preset_options("seed")
    coarse = level_pyramid(8.0, voxel_mm=0.5, shape=(201, 201, 700), options=options)
    fine = level_pyramid(1.0, voxel_mm=0.5, shape=(201, 201, 700), options=options)
    assert coarse.shrink_factors == (16, 1) and coarse.iterations == (20, 0)
    assert fine.shrink_factors == (4, 2, 1) and fine.iterations == (40, 20, 0)
    assert fine.sigmas_mm[1] == pytest.approx(0.5) and fine.sigmas_mm[-1] == 0.0
    tiny = level_pyramid(8.0, voxel_mm=1.0, shape=SHAPE, options=options)
    assert max(tiny.shrink_factors) == 3


def test_registration_command_is_syn_only_with_seed_and_warm_start(tmp_path: Path) -> None:
    options = TemplateOptions(seed=7, metric="CC")
    pyramid = level_pyramid(2.0, voxel_mm=1.0, shape=(64, 64, 64), options=options)
    argv = registration_argv(fixed=tmp_path / "t.nii.gz", moving=tmp_path / "s.nii.gz",
                             out_prefix=tmp_path / "r_", pyramid=pyramid, options=options,
                             initial_warp=tmp_path / "w.nii.gz")
    text = " ".join(argv)
    assert argv.count("--transform") == 1 and "SyN[0.1,3,0]" in text
    assert f"CC[{tmp_path}/t.nii.gz,{tmp_path}/s.nii.gz,1,1]" in text
    assert "--random-seed 7" in text and f"--initial-moving-transform {tmp_path}/w.nii.gz" in text
    assert "--shrink-factors 4x2x1" in text and "--smoothing-sigmas 2x1x0mm" in text
    assert "Affine" not in text and "Rigid" not in text
    mattes = registration_argv(fixed=tmp_path / "t.nii.gz", moving=tmp_path / "s.nii.gz",
                               out_prefix=tmp_path / "r_", pyramid=pyramid,
                               options=TemplateOptions(), initial_warp=None)
    assert f"Mattes[{tmp_path}/t.nii.gz,{tmp_path}/s.nii.gz,1,32]" in mattes
    assert "--initial-moving-transform" not in mattes
    assert "MeanSquares" not in " ".join(registration_argv(
        fixed=tmp_path / "t.nii.gz", moving=tmp_path / "s.nii.gz", out_prefix=tmp_path / "r_",
        pyramid=pyramid, options=TemplateOptions(cord_weight=0.0), initial_warp=None,
        cords=(tmp_path / "p.nii.gz", tmp_path / "c.nii.gz")))
    cord = registration_argv(fixed=tmp_path / "t.nii.gz", moving=tmp_path / "s.nii.gz",
                             out_prefix=tmp_path / "r_", pyramid=pyramid,
                             options=TemplateOptions(cord_weight=2.0), initial_warp=None,
                             cords=(tmp_path / "p.nii.gz", tmp_path / "c.nii.gz"))
    assert cord.count("--metric") == 2 and cord.count("--transform") == 1
    assert f"MeanSquares[{tmp_path}/p.nii.gz,{tmp_path}/c.nii.gz,2,0]" in cord
    with pytest.raises(ValueError, match="cannot take a path"):
        registration_argv(fixed=tmp_path / "a,b.nii.gz", moving=tmp_path / "s.nii.gz",
                          out_prefix=tmp_path / "r_", pyramid=pyramid, options=options,
                          initial_warp=None)


def test_warm_start_resume_recomputes_missing_warps(tmp_path: Path) -> None:
    subjects = make_cohort(tmp_path, 3, seed=2)
    options = TemplateOptions(protocol=(Stage(4.0, 1), Stage(2.0, 2)), symmetric=False,
                              refine=True, coarse_iterations=20, fine_iterations=10)
    full = build_template(subjects, work_dir=tmp_path / "w", options=options, nprocs=2)
    reference = _data(full.template)
    assert not (iteration_dir(tmp_path / "w", 1) / "warps").exists()  # cleaned after iter 3
    shutil.rmtree(iteration_dir(tmp_path / "w", 3))  # last iteration lost ...
    shutil.rmtree(iteration_dir(tmp_path / "w", 2) / "warps")  # ... and the warps it starts from
    initial = iteration_dir(tmp_path / "w", 0) / "avg.nii.gz"
    mtime = initial.stat().st_mtime_ns
    resumed = build_template(subjects, work_dir=tmp_path / "w", options=options, nprocs=2)
    assert initial.stat().st_mtime_ns == mtime  # steps back to iteration 1 only
    assert (iteration_dir(tmp_path / "w", 2) / "warps").is_dir()
    np.testing.assert_array_equal(_data(resumed.template), reference)


def test_a_finished_registration_is_reused_until_its_inputs_change(tmp_path: Path) -> None:
    """The registration ledger lets a killed iteration resume from its finished registrations."""
    subjects = make_cohort(tmp_path, 2, seed=2)
    options = TemplateOptions(protocol=(Stage(4.0, 1),), symmetric=False, coarse_iterations=10,
                              fine_iterations=5)
    fixed = tmp_path / "template.nii.gz"
    shutil.copyfile(subjects[0].image, fixed)
    pyramid = level_pyramid(4.0, voxel_mm=1.0, shape=SHAPE, options=options)
    job = RegistrationJob(fixed=fixed, moving=Path(subjects[1].image), initial_warp=None,
                          out_warp=tmp_path / "registration" / "s1" / "warp.nii",
                          scratch_dir=tmp_path / "scratch" / "s1", pyramid=pyramid,
                          options=options)
    assert register_item(job) > 0
    written = job.out_warp.stat().st_mtime_ns
    assert register_item(job) == 0.0
    assert job.out_warp.stat().st_mtime_ns == written
    shutil.copyfile(subjects[1].image, fixed)  # another template: the registration reruns
    assert register_item(job) > 0
    assert job.out_warp.stat().st_mtime_ns != written
