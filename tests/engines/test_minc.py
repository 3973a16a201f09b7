"""MINC template engine: real NIfTI <-> MINC conversions (Debian minc-tools), driver and command.

The conversions run for real wherever ``nii2mnc``/``mnc2nii`` exist (``apt-get install
minc-tools``); the ipl loop itself runs against the real MINC engine of ``make real-tools``
(marker ``minc``, environment from ``real_tool_env("minc")``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.engines.base import TemplateSubject
from spinal_bidsapp.engines.builtin.protocol import Stage
from spinal_bidsapp.engines.minc import (
    MINC_ENVIRONMENT,
    NIST_MNI_PIPELINES_COMMIT,
    MincTemplateBuilder,
    MincTemplateOptions,
    centre_x_shift,
    check_minc_available,
    driver_source,
    ipl_options,
    minc_to_nifti,
    nifti_to_minc,
    scoop_argv,
    subjects_csv_text,
)
from spinal_bidsapp.errors import EngineUnavailable, InputDataError
from spinal_bidsapp.image import Volume, load_volume, save_volume

needs_minc_tools = pytest.mark.skipif(
    shutil.which("nii2mnc") is None or shutil.which("mnc2nii") is None,
    reason="nii2mnc/mnc2nii not installed (apt-get install minc-tools)")


def _affine(axcodes: str, zooms: tuple[float, float, float] = (0.5, 0.7, 0.9)) -> np.ndarray:
    ornt = nib.orientations.axcodes2ornt(tuple(axcodes))
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for voxel_axis, (world_axis, flip) in enumerate(ornt):
        affine[int(world_axis), voxel_axis] = flip * zooms[voxel_axis]
    affine[:3, 3] = [3.2, -5.1, 7.7]
    return affine


def _minc_dimension(path: Path, name: str) -> tuple[int, float, float]:
    out = subprocess.run(["mincinfo", "-dimlength", name, "-attvalue", f"{name}:step",
                          "-attvalue", f"{name}:start", str(path)], capture_output=True,
                         text=True, check=True, env={**os.environ, **MINC_ENVIRONMENT})
    length, step, start = out.stdout.split()
    return int(length), float(step), float(start)


@needs_minc_tools
@pytest.mark.parametrize("axcodes", ["RAS", "LAS", "PSR"])
def test_nifti_minc_round_trip_keeps_values_and_world_geometry(tmp_path: Path,
                                                               axcodes: str) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(100, 20, (7, 9, 11)).astype(np.float32)
    source = Volume(data, _affine(axcodes))
    save_volume(source, tmp_path / "in.nii.gz")
    mnc = nifti_to_minc(tmp_path / "in.nii.gz", tmp_path / "in.mnc", log_file=tmp_path / "a.log")
    # the MINC file itself has the right world geometry (what minctracc sees)
    ras = nib.as_closest_canonical(nib.Nifti1Image(data, source.affine))
    for axis, name in enumerate(("xspace", "yspace", "zspace")):
        length, step, start = _minc_dimension(mnc, name)
        assert length == ras.shape[axis]
        assert step == pytest.approx(ras.affine[axis, axis], abs=1e-5)
        assert start == pytest.approx(ras.affine[axis, 3], abs=1e-4)
    back = minc_to_nifti(mnc, tmp_path / "back.nii.gz", reference=source,
                         log_file=tmp_path / "b.log")
    result = load_volume(back)
    assert result.axcodes == tuple(axcodes)
    np.testing.assert_allclose(result.affine, source.affine, atol=1e-5)
    np.testing.assert_allclose(result.data, data, rtol=1e-6, atol=1e-4)


@needs_minc_tools
def test_shift_puts_the_grid_centre_on_x0_in_minc_and_is_undone(tmp_path: Path) -> None:
    source = Volume(np.arange(5 * 4 * 3, dtype=np.float32).reshape(5, 4, 3), _affine("LAS"))
    save_volume(source, tmp_path / "in.nii.gz")
    shift = centre_x_shift(source.affine, source.shape)
    mnc = nifti_to_minc(tmp_path / "in.nii.gz", tmp_path / "in.mnc", log_file=tmp_path / "a.log",
                        shift_mm=shift)
    length, step, start = _minc_dimension(mnc, "xspace")
    assert start + step * (length - 1) / 2 == pytest.approx(0.0, abs=1e-4)
    back = load_volume(minc_to_nifti(mnc, tmp_path / "b.nii.gz", reference=source,
                                     log_file=tmp_path / "b.log", shift_mm=shift))
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-5)
    np.testing.assert_array_equal(back.data, source.data)


@needs_minc_tools
def test_minc_on_another_grid_is_rejected(tmp_path: Path) -> None:
    save_volume(Volume(np.ones((4, 5, 6), np.float32), _affine("RAS")), tmp_path / "a.nii.gz")
    mnc = nifti_to_minc(tmp_path / "a.nii.gz", tmp_path / "a.mnc", log_file=tmp_path / "a.log")
    other = Volume(np.ones((4, 5, 6), np.float32), _affine("RAS", (1.0, 1.0, 1.0)))
    with pytest.raises(InputDataError, match="not on the template grid"):
        minc_to_nifti(mnc, tmp_path / "b.nii.gz", reference=other, log_file=tmp_path / "b.log")


def test_driver_calls_ipl_with_the_seed_options(tmp_path: Path) -> None:
    text = driver_source(subjects_csv=tmp_path / "subjects.csv",
                         work_prefix=tmp_path / "model_nl_all", options=MincTemplateOptions())
    compile(text, "driver.py", "exec")
    assert "from ipl.model.generate_nonlinear import generate_nonlinear_model_csv" in text
    assert 'if __name__ == "__main__":' in text
    assert f"work_prefix={str(tmp_path / 'model_nl_all')!r}" in text
    assert ("options={'symmetric': True, 'protocol': [{'iter': 4, 'level': 8}, "
            "{'iter': 4, 'level': 4}, {'iter': 4, 'level': 2}, {'iter': 4, 'level': 1}], "
            "'refine': True}") in text
    assert NIST_MNI_PIPELINES_COMMIT in text


def test_scoop_command_and_subjects_csv(tmp_path: Path) -> None:
    argv = scoop_argv(tmp_path / "driver.py", nprocs=4, python=Path("/usr/bin/python3"))
    assert argv == ["/usr/bin/python3", "-m", "scoop", "-n", "4", str(tmp_path / "driver.py")]
    assert scoop_argv(tmp_path / "d.py", nprocs=1)[0] == sys.executable
    text = subjects_csv_text([(Path("/w/a.mnc"), Path("/w/m.mnc")),
                              (Path("/w/b.mnc"), Path("/w/m.mnc"))])
    assert text == "/w/a.mnc,/w/m.mnc\n/w/b.mnc,/w/m.mnc\n"
    with pytest.raises(ValueError, match="comma"):
        subjects_csv_text([(Path("/w/a,b.mnc"), Path("/w/m.mnc"))])


def test_ipl_levels_are_checked() -> None:
    assert ipl_options(MincTemplateOptions(protocol=(Stage(0.5, 2),)))["protocol"] == [
        {"iter": 2, "level": 0.5}]
    with pytest.raises(ValueError, match="ipl levels"):
        MincTemplateOptions(protocol=(Stage(3.0, 4),))


def test_missing_minc_names_the_container_image(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="spinal_bidsapp container image") as info:
        check_minc_available(search_path=str(tmp_path))
    assert "minctracc" in str(info.value) and "--template-engine builtin" in str(info.value)


@pytest.mark.minc
def test_ipl_builds_a_template_from_phantoms(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The real ipl loop in this process's engine (tools from ``real_tool_env``): every
    iteration converted back, the cord mask carried through ipl's transforms (not its
    all-ones mask), the real minctracc version recorded."""
    from test_template import make_cohort  # tests/engines is on sys.path under pytest

    from tests.conftest import real_tool_env

    for name, value in real_tool_env("minc").items():
        monkeypatch.setenv(name, value)
    subjects: list[TemplateSubject] = make_cohort(tmp_path, 3)
    options = MincTemplateOptions(protocol=(Stage(4.0, 2),))  # level 2 is 4x slower
    builder = MincTemplateBuilder(options)
    assert not builder.info.version.startswith("unknown")
    result = builder.build_template(subjects, work_dir=tmp_path / "w", nprocs=2)
    template = load_volume(result.template)
    assert template.shape == load_volume(subjects[0].image).shape
    assert len(result.iterations) == 2 and result.convergence.is_file()
    assert all(it.average.is_file() and it.sd.is_file() for it in result.iterations)
    cord = load_volume(result.mask).data > 0
    truth = np.mean([load_volume(s.cord_mask).data > 0.5 for s in subjects], axis=0) >= 0.5
    assert 0 < cord.mean() < 0.5  # ipl's own mask is the whole grid
    assert 2 * (cord & truth).sum() / (cord.sum() + truth.sum()) > 0.7
    assert result.protocol["engine"] == "minc" and result.protocol["iterations"] == 2
