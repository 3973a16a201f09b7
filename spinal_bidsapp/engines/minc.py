"""MINC template engine: the seed's nist_mni_pipelines (ipl) ANIMAL loop, run as an external tool.

Path (``docs/reference/minc_ipl.md`` §2, ``sct.md`` §3.7-3.8): NIfTI inputs -> MINC2 (``nii2mnc``),
a subjects CSV (scan, mask), a generated driver calling
``ipl.model.generate_nonlinear.generate_nonlinear_model_csv`` with the run's options
(:func:`minc_options`: ``--template-preset`` -> protocol, seed 8/4/2/1 mm x 4; ``--no-symmetric``
-> ``symmetric``; ``refine`` as the seed), run as ``python -m scoop -n N driver.py`` through
:func:`~spinal_bidsapp.engines.tools.run_tool` (scoop exits 0 when ipl raised: the outputs are
checked), then every ``avg.NNN`` / ``sd.NNN`` back to NIfTI (``mnc2nii``) on the input grid.

Pinned: nist_mni_pipelines commit :data:`NIST_MNI_PIPELINES_COMMIT` (the one neuropoly/template
uses; ``ipl/model`` is identical at the scoop-era HEAD). The upstream moved to the NIST-MNI
organisation in 2024 and replaced scoop by Ray (``@ray.remote``), so this driver does not run
with newer upstream code. As in the seed, ipl registers with one all-ones mask per subject, so
its own average mask is the whole field of view; the template's cord mask and probability come
from the subjects' cord masks carried through ipl's final per-subject transforms
(:meth:`MincTemplateBuilder._warp_cord_masks`). Those transforms stay MINC ``.xfm`` grids (not
exported as ITK fields), so the result has no warps.

ipl mirrors about world x = 0 (``minc_ipl.md`` §2.4): the MINC copies are shifted so that the
grid centre (the cord midline of straightened inputs) is at x = 0, and shifted back on the way
out. Conversions go through a RAS-ordered copy: Debian's ``nii2mnc`` 2.3.00 writes a wrong
origin for permuted axes (e.g. PSR; checked in ``tests/engines/test_minc.py``), axis flips are
handled.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from spinal_bidsapp.engines.base import (
    EngineInfo,
    TemplateBuildResult,
    TemplateIteration,
    TemplateSubject,
)
from spinal_bidsapp.engines.builtin.averaging import median_in_mask, rms_in_mask
from spinal_bidsapp.engines.builtin.protocol import (
    FAST_PROTOCOL,
    SEED_PROTOCOL,
    PresetName,
    Stage,
)
from spinal_bidsapp.engines.tools import find_tool, run_tool
from spinal_bidsapp.errors import EngineUnavailable, InputDataError
from spinal_bidsapp.image import Volume, load_volume, reorient, same_grid, save_volume
from spinal_bidsapp.runtime.files import write_json, write_text
from spinal_bidsapp.runtime.ledger import run_step

logger = logging.getLogger(__name__)


def minctracc_version(*, search_path: str | None = None, timeout_s: float = 60.0) -> str:
    """What ``minctracc -version`` says it was built from ("mni_autoreg 0.99.70"), or "unknown".

    minctracc prints ``The program <minctracc> was built from:`` then the package and version,
    and exits 255 (its argument parser stops there): that status counts as success, and the
    last line is the version.
    """
    path = find_tool("minctracc", search_path=search_path)
    if path is None:
        return "unknown"
    try:
        done = subprocess.run([str(path), "-version"], capture_output=True, text=True,
                              timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("%s -version failed: %s; version unknown", path, exc)
        return "unknown"
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()
             if line.strip()]
    if done.returncode not in (0, 255) or not lines:
        logger.warning("%s -version exited with %d; version unknown", path, done.returncode)
        return "unknown"
    return lines[-1]

NIST_MNI_PIPELINES_COMMIT = "cadc7219e79d6edb90742e1e340f8eee76332006"
"""vfonov/nist_mni_pipelines commit pinned by neuropoly/template (scoop era; newer: Ray)."""

CONTAINER_IMAGE = ("the spinal_bidsapp container image (minc-toolkit-v2, nist_mni_pipelines "
                   f"{NIST_MNI_PIPELINES_COMMIT[:8]} and scoop inside)")
REQUIRED_PROGRAMS = ("minctracc", "nii2mnc", "mnc2nii")
REQUIRED_MODULES = ("ipl", "scoop")
MINC_ENVIRONMENT = {"MINC_FORCE_V2": "1", "VOLUME_CACHE_THRESHOLD": "-1"}
"""Write MINC2 (HDF5) files; never block-cache volumes (slow and error-prone in minctracc)."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class MincTemplateOptions:
    """ipl ``generate_nonlinear_model`` options (defaults: the seed's ``generate_template.py``).

    ``level_mm`` of every stage must be one of ipl's minctracc steps (32, 16, 12, 8, 6, 4, 2, 1,
    0.5); ipl fails with "No iterations were performed!" otherwise.
    """

    protocol: tuple[Stage, ...] = SEED_PROTOCOL
    symmetric: bool = True
    refine: bool = True
    timeout_s: float = 14 * 24 * 3600.0
    conversion_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        bad = [s.level_mm for s in self.protocol if s.level_mm not in _IPL_LEVELS]
        if bad:
            raise ValueError(f"ipl levels must be among {sorted(_IPL_LEVELS)}, got {bad}")

    @property
    def n_iterations(self) -> int:
        return sum(stage.iterations for stage in self.protocol)


_IPL_LEVELS = frozenset({32.0, 16.0, 12.0, 8.0, 6.0, 4.0, 2.0, 1.0, 0.5})

MINC_PRESETS: dict[str, tuple[Stage, ...]] = {"seed": SEED_PROTOCOL, "fast": FAST_PROTOCOL}
"""``--template-preset`` -> ipl protocol: the builtin loop's levels and iteration counts (all
of them are minctracc steps ipl knows), so that both engines run the same schedule."""


def minc_options(preset: PresetName, *, symmetric: bool) -> MincTemplateOptions:
    """ipl options for the run's ``--template-preset`` and ``--no-symmetric``.

    >>> minc_options("fast", symmetric=False).n_iterations
    4
    """
    if preset not in MINC_PRESETS:
        raise ValueError(f"unknown template preset {preset!r} ({', '.join(MINC_PRESETS)})")
    return MincTemplateOptions(protocol=MINC_PRESETS[preset], symmetric=symmetric)


def check_minc_available(*, search_path: str | None = None) -> None:
    """Raise :class:`EngineUnavailable` unless the MINC programs and ipl/scoop are usable."""
    missing = [name for name in REQUIRED_PROGRAMS if find_tool(name, search_path=search_path)
               is None]
    missing += [f"the Python module {name}" for name in REQUIRED_MODULES
                if importlib.util.find_spec(name) is None]
    if missing:
        raise EngineUnavailable(
            f"the MINC template engine needs {', '.join(missing)}; use {CONTAINER_IMAGE}, or "
            "choose --template-engine builtin")


def ipl_options(options: MincTemplateOptions) -> dict[str, object]:
    """The ``options`` dict passed to ``generate_nonlinear_model_csv``.

    >>> ipl_options(MincTemplateOptions())["protocol"][0]
    {'iter': 4, 'level': 8}
    """
    return {
        "symmetric": options.symmetric,
        "protocol": [{"iter": s.iterations, "level": _ipl_level(s.level_mm)}
                     for s in options.protocol],
        "refine": options.refine,
    }


def _ipl_level(level_mm: float) -> int | float:
    return int(level_mm) if float(level_mm).is_integer() else level_mm


def driver_source(*, subjects_csv: Path, work_prefix: Path, options: MincTemplateOptions) -> str:
    """Python source of the scoop driver (every scoop worker imports it: keep the main guard)."""
    return (
        '"""Generated by spinal_bidsapp.engines.minc: the seed\'s generate_template.py.\n\n'
        f"nist_mni_pipelines {NIST_MNI_PIPELINES_COMMIT}; run as python -m scoop -n N "
        f'{"driver.py"}\n"""\n\n'
        "from ipl.model.generate_nonlinear import generate_nonlinear_model_csv\n\n"
        'if __name__ == "__main__":\n'
        "    generate_nonlinear_model_csv(\n"
        f"        {str(subjects_csv)!r},\n"
        f"        work_prefix={str(work_prefix)!r},\n"
        f"        options={ipl_options(options)!r},\n"
        "    )\n"
    )


def scoop_argv(driver: Path, *, nprocs: int, python: Path | None = None) -> list[str]:
    """``python -m scoop -n N driver.py`` (scoop counts the root process as one worker)."""
    return [str(python or Path(sys.executable)), "-m", "scoop", "-n", str(max(1, nprocs)),
            str(driver)]


def subjects_csv_text(rows: Sequence[tuple[Path, Path]]) -> str:
    """ipl's CSV: ``scan.mnc,mask.mnc`` per line, no header, no quoting (paths without commas)."""
    lines = []
    for scan, mask in rows:
        if "," in str(scan) or "," in str(mask):
            raise ValueError(f"ipl's CSV cannot hold a path with a comma: {scan}, {mask}")
        lines.append(f"{scan},{mask}")
    return "\n".join(lines) + "\n"


def shifted(affine: NDArray[np.float64], shift_mm: Sequence[float]) -> NDArray[np.float64]:
    """``affine`` with its world origin moved by ``shift_mm`` (RAS, mm).

    >>> shifted(np.eye(4), (2.0, 0.0, 0.0))[:3, 3].tolist()
    [2.0, 0.0, 0.0]
    """
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] += np.asarray(shift_mm, dtype=np.float64)
    return out


def centre_x_shift(affine: NDArray[np.float64], shape: Sequence[int]
                   ) -> tuple[float, float, float]:
    """World shift putting the grid centre on x = 0: ipl mirrors about world x = 0 (§2.4).

    >>> centre_x_shift(np.diag([-0.5, 0.5, 0.5, 1.0]), (11, 4, 4))
    (2.5, 0.0, 0.0)
    """
    centre = np.asarray(affine)[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + np.asarray(
        affine)[:3, 3]
    return (-float(centre[0]), 0.0, 0.0)


def nifti_to_minc(src: Path, dst: Path, *, log_file: Path, timeout_s: float = 600.0,
                  shift_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> Path:
    """Convert a NIfTI volume to MINC2 float through a RAS-ordered copy (no resampling).

    ``shift_mm`` moves the world origin (RAS mm) of the MINC copy, e.g. to put the cord
    midline on x = 0 for ipl's mirror.
    """
    volume = load_volume(src, dtype=np.float32)
    ras = reorient(Volume(volume.data, shifted(volume.affine, shift_mm)), ("R", "A", "S"))
    staging = dst.with_name(f".{dst.name}.staging.nii")
    tmp = dst.with_name(f".{dst.name}.tmp.mnc")
    save_volume(ras, staging, dtype=np.float32)
    tmp.unlink(missing_ok=True)  # nii2mnc has no -clobber
    try:
        run_tool(["nii2mnc", "-float", staging, tmp], log_file=log_file, expected_outputs=[tmp],
                 threads=1, timeout_s=timeout_s, extra_env=MINC_ENVIRONMENT)
        os.replace(tmp, dst)
    finally:
        staging.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return dst


def minc_to_nifti(src: Path, dst: Path, *, reference: Volume, log_file: Path,
                  timeout_s: float = 600.0, shift_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> Path:
    """Convert a MINC volume back to NIfTI on ``reference``'s grid (voxel order and affine).

    ``shift_mm`` is the shift applied by :func:`nifti_to_minc`; it is undone here.

    Raises
    ------
    InputDataError
        The MINC volume is not on the reference grid (after reordering the axes).
    """
    staging = dst.with_name(f".{dst.name}.staging.nii")
    staging.parent.mkdir(parents=True, exist_ok=True)  # mnc2nii exits 0 without a folder
    staging.unlink(missing_ok=True)
    try:
        run_tool(["mnc2nii", "-nii", "-float", src, staging], log_file=log_file,
                 expected_outputs=[staging], threads=1, timeout_s=timeout_s,
                 extra_env=MINC_ENVIRONMENT)
        volume = reorient(load_volume(staging, dtype=np.float32), reference.axcodes)
    finally:
        staging.unlink(missing_ok=True)
    volume = Volume(volume.data, shifted(volume.affine, [-float(v) for v in shift_mm]))
    if not same_grid(volume, reference):
        raise InputDataError(f"{src} is not on the template grid after conversion "
                             f"(shape {volume.shape} vs {reference.shape})")
    save_volume(Volume(volume.data, reference.affine), dst, dtype=np.float32)
    return dst


class MincTemplateBuilder:
    """:class:`~spinal_bidsapp.engines.base.TemplateBuilder` running ipl under scoop."""

    def __init__(self, options: MincTemplateOptions | None = None, *,
                 search_path: str | None = None) -> None:
        check_minc_available(search_path=search_path)
        self.options = options or MincTemplateOptions()
        version = minctracc_version(search_path=search_path)
        self.info = EngineInfo(name="minc", version=f"{version}; nist_mni_pipelines "
                                                    f"{NIST_MNI_PIPELINES_COMMIT[:8]}")

    def build_template(self, subjects: Sequence[TemplateSubject], *, work_dir: Path,
                       nprocs: int) -> TemplateBuildResult:
        """Convert, run ipl, carry the cord masks through its final transforms, convert back.

        A rerun resumes (:func:`~spinal_bidsapp.runtime.ledger.run_step`): a finished ipl run
        is skipped; an interrupted one resumes, ipl skipping every output that exists (its own
        rule), unless the images or options changed since, in which case its folder is cleared
        first.
        """
        work_dir = Path(work_dir).absolute()
        if len(subjects) < 2 or any(not _LABEL.match(s.label) for s in subjects):
            raise InputDataError("a MINC template needs at least two subjects with file-safe "
                                 "labels")
        reference = load_volume(subjects[0].image)
        shift = centre_x_shift(reference.affine, reference.shape)
        for subject in subjects:
            for path in (subject.image, subject.cord_mask):
                if not same_grid(load_volume(path), reference):
                    raise InputDataError(f"{path} is not on the template grid of "
                                         f"{subjects[0].image}")
        prefix = work_dir / "model_nl_all"
        n = self.options.n_iterations
        outputs = [prefix / f"avg.{n:03d}.mnc", prefix / f"sd.{n:03d}.mnc",
                   prefix / f"avg.{n:03d}_mask.mnc"]
        outputs += [path for s in subjects for path in self._final_transforms(prefix, s.label)]
        run_step("ipl", partial(self._run_ipl, subjects, work_dir, prefix, outputs, reference,
                                shift, nprocs),
                 step_dir=work_dir, inputs=[Path(s.image) for s in subjects],
                 params={"options": ipl_options(self.options), "version": self.info.version,
                         "labels": [s.label for s in subjects]},
                 outputs=outputs, label="MINC template", resumes_in=prefix)
        cords = self._warp_cord_masks(subjects, prefix, work_dir, reference, shift)
        return self._convert_outputs(prefix, work_dir, reference, shift, cords)

    def _run_ipl(self, subjects: Sequence[TemplateSubject], work_dir: Path, prefix: Path,
                 outputs: Sequence[Path], reference: Volume, shift: Sequence[float],
                 nprocs: int) -> None:
        """MINC copies of the images, ipl's CSV and driver, ``python -m scoop`` (``outputs``
        checked: scoop exits 0 when ipl raised)."""
        logs = work_dir / "logs"
        mnc = work_dir / "mnc"
        mask = mnc / "mask_all.mnc"
        ones = Volume(np.ones(reference.shape, np.float32), reference.affine)
        save_volume(ones, work_dir / "mask_all.nii.gz")
        nifti_to_minc(work_dir / "mask_all.nii.gz", mask, log_file=logs / "nii2mnc_mask.log",
                      shift_mm=shift)
        rows = []
        for subject in subjects:
            scan = mnc / f"{subject.label}.mnc"
            nifti_to_minc(subject.image, scan, log_file=logs / f"nii2mnc_{subject.label}.log",
                          timeout_s=self.options.conversion_timeout_s, shift_mm=shift)
            rows.append((scan, mask))
        csv = work_dir / "subjects.csv"
        write_text(csv, subjects_csv_text(rows))
        driver = work_dir / "generate_template.py"
        write_text(driver, driver_source(subjects_csv=csv, work_prefix=prefix,
                                         options=self.options))
        run_tool(scoop_argv(driver, nprocs=nprocs), log_file=logs / "ipl_generate_model.log",
                 expected_outputs=outputs, threads=1, timeout_s=self.options.timeout_s,
                 cwd=work_dir, extra_env=MINC_ENVIRONMENT)

    def _final_transforms(self, prefix: Path, label: str) -> list[Path]:
        """ipl's last corrected subject -> template transforms (and the mirror's, symmetric).

        ipl names them after the scan's basename, ``.mnc`` included (``minc_ipl.md`` §2.8).
        """
        n = self.options.n_iterations
        base = prefix / str(n) / f"{label}.mnc_corr.{n:03d}"
        return [Path(f"{base}.xfm"), *([Path(f"{base}_f.xfm")] if self.options.symmetric
                                        else [])]

    def _warp_cord_masks(self, subjects: Sequence[TemplateSubject], prefix: Path,
                         work_dir: Path, reference: Volume, shift: Sequence[float]
                         ) -> list[Path]:
        """Every subject's cord mask through ipl's own final transform, as ipl moves its scan.

        ipl averages one all-ones mask (the seed's), which gives no cord; the cord masks take
        the path of the scans instead: ``itk_resample`` (linear, so the result is a fraction)
        with the last iteration's ``<name>_corr`` transform onto the final average. In
        symmetric mode the mirrored mask (mirror about the grid centre, world x = 0 in MINC,
        as ipl's ``flip_volume_x``) goes through the ``_f`` transform, as ipl's mirrored scan.
        Returns the warped masks on the template grid (NIfTI), 2 per subject when symmetric.
        """
        n = self.options.n_iterations
        model = prefix / f"avg.{n:03d}.mnc"
        folder = work_dir / "cord"
        shutil.rmtree(folder, ignore_errors=True)  # cheap; never stale
        x_axis = world_x_axis(reference.affine)
        warped = []
        for subject in subjects:
            cord = load_volume(subject.cord_mask, dtype=np.float32).data
            copies = [cord, np.flip(cord, axis=x_axis)] if self.options.symmetric else [cord]
            for data, xfm, tag in zip(copies, self._final_transforms(prefix, subject.label),
                                      ("", "_f"), strict=False):
                name = f"{subject.label}{tag}"
                save_volume(Volume(data, reference.affine), folder / f"{name}.nii.gz")
                source = nifti_to_minc(folder / f"{name}.nii.gz", folder / f"{name}.mnc",
                                       log_file=work_dir / "logs" / f"nii2mnc_cord_{name}.log",
                                       shift_mm=shift)
                out = folder / f"{name}_warped.mnc"
                run_tool(["itk_resample", source, out, "--order", "1", "--transform", xfm,
                          "--like", model], log_file=work_dir / "logs" / f"cord_{name}.log",
                         expected_outputs=[out], threads=1,
                         timeout_s=self.options.conversion_timeout_s,
                         extra_env=MINC_ENVIRONMENT)
                warped.append(minc_to_nifti(out, folder / f"{name}_warped.nii.gz",
                                            reference=reference,
                                            log_file=work_dir / "logs" / "mnc2nii_cord.log",
                                            timeout_s=self.options.conversion_timeout_s,
                                            shift_mm=shift))
        return warped

    def _convert_outputs(self, prefix: Path, work_dir: Path, reference: Volume,
                         shift: Sequence[float], cords: Sequence[Path]) -> TemplateBuildResult:
        out = work_dir / "nifti"
        logs = work_dir / "logs"
        levels = [s.level_mm for s in self.options.protocol for _ in range(s.iterations)]
        iterations = []
        for k in range(1, self.options.n_iterations + 1):
            paths = []
            sources = {"avg": f"avg.{k:03d}.mnc", "sd": f"sd.{k:03d}.mnc",
                       "mask": f"avg.{k:03d}_mask.mnc"}
            for name, source in sources.items():
                src = prefix / source
                dst = out / f"{name}.{k:03d}.nii.gz"
                minc_to_nifti(src, dst, reference=reference, log_file=logs / "mnc2nii.log",
                              timeout_s=self.options.conversion_timeout_s, shift_mm=shift)
                paths.append(dst)
            iterations.append(TemplateIteration(index=k, level_mm=levels[k - 1],
                                                average=paths[0], sd=paths[1]))
        probability = cord_probability([load_volume(c).data for c in cords],
                                       x_axis=world_x_axis(reference.affine),
                                       symmetric=self.options.symmetric)
        prob_path = save_volume(Volume(probability, reference.affine),
                                out / "cord_probability.nii.gz", dtype=np.float32)
        mask_path = save_volume(Volume((probability >= 0.5).astype(np.uint8), reference.affine),
                                out / "cord_mask.nii.gz", dtype=np.uint8)
        convergence = work_dir / "convergence.json"
        write_json(convergence, {"engine": "minc", "version": self.info.version,
                                 "options": ipl_options(self.options),
                                 "iterations": _convergence_records(out, levels)})
        n = self.options.n_iterations
        return TemplateBuildResult(template=out / f"avg.{n:03d}.nii.gz",
                                   sd=out / f"sd.{n:03d}.nii.gz", mask=mask_path,
                                   cord_probability=prob_path, iterations=tuple(iterations),
                                   warps=(), convergence=convergence,
                                   protocol=protocol_record(self.options, self.info))


def protocol_record(options: MincTemplateOptions, info: EngineInfo) -> dict[str, object]:
    """What ipl ran, for ``template_description.json``.

    >>> protocol_record(MincTemplateOptions(), EngineInfo("minc", "x"))["iterations"]
    16
    """
    return {"engine": "minc", "version": info.version,
            "stages": [{"level_mm": s.level_mm, "iterations": s.iterations}
                       for s in options.protocol],
            "iterations": options.n_iterations, "symmetric": options.symmetric,
            "refine": options.refine, "ipl_options": ipl_options(options),
            "cord_mask": "mean of the subjects' cord masks through ipl's final per-subject "
                         "transforms (itk_resample, linear), >= 0.5"}


def world_x_axis(affine: NDArray[np.float64]) -> int:
    """The voxel axis along world x (the mirror axis).

    >>> world_x_axis(np.array([[0, 0, 2.0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]]))
    2
    """
    return int(np.argmax(np.abs(np.asarray(affine)[0, :3])))


def cord_probability(warped: Sequence[NDArray], *, x_axis: int, symmetric: bool) -> NDArray:
    """Mean of the warped cord masks, symmetrised as ipl symmetrises its averages.

    >>> p = cord_probability([np.array([1.0, 0.0]), np.array([1.0, 1.0])], x_axis=0,
    ...                      symmetric=True)
    >>> p.tolist()
    [0.75, 0.75]
    """
    probability = np.clip(np.mean(np.asarray(warped, dtype=np.float32), axis=0), 0.0, 1.0)
    if symmetric:
        probability = 0.5 * (probability + np.flip(probability, axis=x_axis))
    return probability.astype(np.float32)


def _convergence_records(out: Path, levels: Sequence[float]) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    previous = None
    for k, level in enumerate(levels, start=1):
        average = load_volume(out / f"avg.{k:03d}.nii.gz").data
        mask = load_volume(out / f"mask.{k:03d}.nii.gz").data
        record: dict[str, object] = {
            "iteration": k, "level_mm": level,
            "median_sd_in_mask": median_in_mask(load_volume(out / f"sd.{k:03d}.nii.gz").data,
                                                mask)}
        if previous is not None:
            record["rms_change_in_mask"] = rms_in_mask(average - previous, mask)
        records.append(record)
        previous = average
    return records


__all__ = [
    "CONTAINER_IMAGE",
    "MINC_ENVIRONMENT",
    "NIST_MNI_PIPELINES_COMMIT",
    "MincTemplateBuilder",
    "MincTemplateOptions",
    "check_minc_available",
    "driver_source",
    "ipl_options",
    "minc_to_nifti",
    "nifti_to_minc",
    "scoop_argv",
    "subjects_csv_text",
]
