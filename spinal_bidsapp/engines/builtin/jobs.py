"""Per-subject work units of the template loop, run in worker processes by ``map_isolated``.

Each unit is a top-level function taking one frozen, picklable job (paths and plain values) and
writing its outputs atomically; all data moves through files, so units can run in a local process
pool or on scoop workers sharing the filesystem.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np

from spinal_bidsapp.config import apply_thread_limits
from spinal_bidsapp.engines.builtin.protocol import Pyramid, TemplateOptions, registration_argv
from spinal_bidsapp.errors import SpinalBidsAppError
from spinal_bidsapp.geometry.fields import apply_field, compose_fields, invert_field
from spinal_bidsapp.image import Volume, load_field, load_volume, save_field, save_volume
from spinal_bidsapp.runtime.ledger import run_step

logger = logging.getLogger(__name__)


class TemplateBuildError(SpinalBidsAppError):
    """A template registration or update failed."""

    exit_code = 1


@dataclass(frozen=True)
class RegistrationJob:
    """Register ``moving`` (a subject) to ``fixed`` (the current template)."""

    fixed: Path
    moving: Path
    initial_warp: Path | None
    """Warm start: the subject's corrected warp from the previous iteration."""
    out_warp: Path
    """Total template -> subject displacement (pull field on the template grid); its folder
    holds the registration's ledger."""
    scratch_dir: Path
    pyramid: Pyramid
    options: TemplateOptions
    cords: tuple[Path, Path] | None = None
    """Template cord probability and subject cord mask (the cord term, ``options.cord_weight``)."""


@dataclass(frozen=True)
class ResampleJob:
    """Fold the shape update into a subject's warp and resample the subject once."""

    warp: Path
    mean_inverse: Path
    image: Path
    cord_mask: Path
    out_warp: Path
    out_image: Path
    out_mask: Path


@dataclass(frozen=True)
class InverseJob:
    warp: Path
    out_inverse: Path


def register_item(job: RegistrationJob) -> float:
    """Run one SyN registration unless its ledger says it is done; returns its wall time in
    seconds (0 when skipped).

    The ledger (in ``out_warp``'s folder) holds the hashes of the template, the subject and the
    warm start and the registration parameters, so a group run killed mid-iteration (a
    cancelled cluster job, SIGKILL) resumes from its last finished registration: the rerun
    repeats the iteration's stage but not the registrations that had finished.
    """
    started = time.monotonic()
    inputs = [job.fixed, job.moving, *([job.initial_warp] if job.initial_warp else [])]
    record = run_step("registration", partial(_register, job), step_dir=job.out_warp.parent,
                      inputs=inputs, outputs=[job.out_warp], label=job.moving.name,
                      params={"pyramid": asdict(job.pyramid),
                              "options": job.options.ledger_params()})
    return 0.0 if record.skipped else time.monotonic() - started


def _register(job: RegistrationJob) -> None:
    """antsRegistration of ``job``, its total warp written to ``job.out_warp``.

    With a warm start, antsRegistration writes the initial warp and the new increment
    separately; the total is ``increment`` then ``initial`` on template points, composed here.
    """
    apply_thread_limits(job.options.threads_per_worker)
    import ants  # heavy: imported in the worker only

    shutil.rmtree(job.scratch_dir, ignore_errors=True)
    job.scratch_dir.mkdir(parents=True)
    prefix = job.scratch_dir / "reg_"
    argv = registration_argv(fixed=job.fixed, moving=job.moving, out_prefix=prefix,
                             pyramid=job.pyramid, options=job.options,
                             initial_warp=job.initial_warp, cords=job.cords)
    logger.debug("antsRegistration %s", " ".join(argv))
    try:
        ants.registration(fixed=argv, moving=None)
    except RuntimeError as exc:
        raise TemplateBuildError(f"registration of {job.moving.name} to {job.fixed} failed: "
                                 f"{exc}") from exc
    if job.initial_warp is None:
        total = load_field(prefix.with_name("reg_0Warp.nii.gz"))
    else:
        increment = load_field(prefix.with_name("reg_1Warp.nii.gz"))
        total = compose_fields(increment, load_field(job.initial_warp))
    save_field(total, job.out_warp)
    shutil.rmtree(job.scratch_dir, ignore_errors=True)


def resample_item(job: ResampleJob) -> None:
    """Corrected warp = mean inverse then subject warp; resample image (cubic) and mask (linear).

    One interpolation of the input per iteration: the composed field is applied to the subject's
    original image, never to a previously resampled one.
    """
    corrected = compose_fields(load_field(job.mean_inverse), load_field(job.warp))
    save_field(corrected, job.out_warp)
    image = load_volume(job.image)
    warped = apply_field(image.data, image.affine, corrected, order=3)
    save_volume(Volume(warped, corrected.affine), job.out_image, dtype=np.float32)
    mask = load_volume(job.cord_mask)
    warped_mask = np.clip(apply_field(mask.data, mask.affine, corrected, order=1), 0.0, 1.0)
    save_volume(Volume(warped_mask, corrected.affine), job.out_mask, dtype=np.float32)


def invert_item(job: InverseJob) -> None:
    """Template -> subject field: the inverse of the final subject -> template warp."""
    warp = load_field(job.warp)
    save_field(invert_field(warp, warp.shape, warp.affine), job.out_inverse)
