"""The per-subject cord reference: an ordered list of resumable steps.

Steps (each skipped when its ledger says the outputs are current):

1. ``standardize``: the chosen anatomy reoriented to RAS (``desc-preproc``), no resampling.
2. ``cord_mask``: manual cord mask from ``derivatives/labels`` (always wins), else the engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from spinal_bidsapp.bids.labels import LABEL_TAGS
from spinal_bidsapp.bids.outputs import derivative_path, raw_uri, sidecar_path, write_sidecar
from spinal_bidsapp.config import RunConfig, apply_thread_limits
from spinal_bidsapp.errors import MissingInputError, TemporaryFailure
from spinal_bidsapp.image import load_mask, load_volume, reorient, save_volume
from spinal_bidsapp.participant import ParticipantUnit
from spinal_bidsapp.steps import run_step

logger = logging.getLogger(__name__)

UNIT_LOCK_TIMEOUT_S = 5


@dataclass(frozen=True)
class UnitSummary:
    label: str
    steps_run: tuple[str, ...]
    steps_skipped: tuple[str, ...]


def resolve_participant_engines(config: RunConfig) -> dict[str, str]:
    """Engine names and versions for provenance (raises ``EngineUnavailable`` when missing)."""
    from spinal_bidsapp import __version__

    return {"spinal_bidsapp-builtin": __version__} if config.participant.engine != "sct" else {}


def _standardize(source: Path, target: Path, *, bids_dir: Path) -> None:
    save_volume(reorient(load_volume(source)), target)
    write_sidecar(target, {"Sources": [raw_uri(bids_dir, source)], "SkullStripped": False,
                           "Description": "anatomy reoriented to RAS, not resampled"})


def _manual_cord_mask(image: Path, mask: Path, target: Path) -> None:
    reference = load_volume(image)
    vol = load_mask(mask, reference=reference, reference_path=image)
    binary = reorient(vol.with_data((vol.data > 0).astype(np.uint8)))
    save_volume(binary, target, dtype=np.uint8)
    write_sidecar(target, {"Sources": [mask.resolve().as_uri()],
                           "Description": "spinal cord mask (manual, from derivatives/labels)"})


def process_unit(unit: ParticipantUnit, *, config: RunConfig, threads: int) -> UnitSummary:
    """Run every step of the cord reference for one subject/session."""
    apply_thread_limits(threads)
    ex = config.execution
    out = ex.output_dir.resolve()
    work = ex.resolved_work_dir / unit.source.entity_prefix
    work.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(work / ".lock"), timeout=UNIT_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout as exc:
        raise TemporaryFailure(
            f"{unit.label} is being processed by another job (lock {work / '.lock'}); "
            "wait for it to finish"
        ) from exc
    try:
        return _run_steps(unit, config, out, work)
    finally:
        lock.release()


def _run_steps(unit: ParticipantUnit, config: RunConfig, out: Path, work: Path) -> UnitSummary:
    src = unit.source
    anat = derivative_path(out, "anat_preproc", src)
    cord = derivative_path(out, "cord_mask", src)
    bids_dir = config.execution.bids_dir
    records = [run_step("standardize", lambda: _standardize(src.path, anat, bids_dir=bids_dir),
                        step_dir=work / "standardize", inputs=[src.path], params={},
                        outputs=[anat, sidecar_path(anat)], label=unit.label)]
    if unit.labels.cord_mask is not None:
        manual = unit.labels.cord_mask
        records.append(run_step("cord_mask", lambda: _manual_cord_mask(src.path, manual, cord),
                                step_dir=work / "cord_mask", inputs=[src.path, manual],
                                params={"source": "manual"},
                                outputs=[cord, sidecar_path(cord)], label=unit.label))
    else:
        expected = config.execution.labels_dir / src.subject_dir / src.datatype / (
            f"{src.stem}_{LABEL_TAGS['cord_mask'][0]}.nii.gz")
        raise MissingInputError(
            f"{unit.label}: no cord mask: none in derivatives/labels (expected e.g. {expected}) "
            "and no segmentation engine can produce one; add the manual mask or use "
            "--engine sct in the container"
        )
    return UnitSummary(label=unit.label,
                       steps_run=tuple(r.name for r in records if not r.skipped),
                       steps_skipped=tuple(r.name for r in records if r.skipped))
