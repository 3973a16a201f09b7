"""What the latest participant run of each subject/session did, so the group level never uses
stale or partial outputs.

``<out>/logs/status/<unit>.json`` is rewritten at the start of every participant run of a unit
(``running``), and at its end (``succeeded``, with the SHA-256 of its inputs and of the outputs the
group level reads; or ``failed``, with the error). The group level accepts a unit only when its
latest run succeeded and neither those inputs (image, manual labels) nor those outputs changed
since: a later run with other parameters either succeeds (new outputs, new record) or fails (the
unit is skipped), so parameters are covered by the same record.

A failed unit's files are moved out of the derivative tree into
``<work>/<unit>/failed-outputs/`` (they would otherwise look like results, old or partial), and
the QC index lists it as failed with its error.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from spinal_bidsapp.bids.dataset import SourceImage
from spinal_bidsapp.bids.labels import ManualLabels
from spinal_bidsapp.bids.outputs import subject_report_path
from spinal_bidsapp.runtime.files import sha256_file, write_json

logger = logging.getLogger(__name__)

GROUP_OUTPUTS = ("anat_preproc", "cord_mask", "discs")
"""The participant outputs the group level reads (their hashes are recorded)."""


def status_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / "logs" / "status" / f"{key}.json"


def unit_inputs(source: SourceImage, labels: ManualLabels) -> dict[str, Path]:
    """Input files of a unit by role (the image and each manual label found)."""
    inputs = {"image": source.path}
    for kind in ("cord_mask", "discs", "centerline"):
        path = getattr(labels, kind)
        if path is not None:
            inputs[kind] = Path(path)
    return inputs


def _digests(files: Mapping[str, Path]) -> dict[str, dict[str, str]]:
    return {role: {"name": path.name, "sha256": sha256_file(path)}
            for role, path in files.items() if path.is_file()}


def record_running(out_dir: Path, key: str, *, run_uuid: str) -> None:
    write_json(status_path(out_dir, key), {"state": "running", "run": run_uuid})


def record_success(out_dir: Path, key: str, *, run_uuid: str, inputs: Mapping[str, Path],
                   outputs: Mapping[str, Path]) -> None:
    write_json(status_path(out_dir, key), {"state": "succeeded", "run": run_uuid,
                                           "inputs": _digests(inputs),
                                           "outputs": _digests(outputs)})


def record_failure(out_dir: Path, key: str, *, run_uuid: str, exit_code: int,
                   error: str) -> None:
    write_json(status_path(out_dir, key), {"state": "failed", "run": run_uuid,
                                           "exit_code": exit_code, "error": error})


def read_status(out_dir: Path, key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(status_path(out_dir, key).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def unfinished_reason(out_dir: Path, key: str) -> str | None:
    """Why the unit's latest participant run gave no results (failed or unfinished), if so."""
    status = read_status(out_dir, key) or {"state": "succeeded"}
    state = status.get("state")
    if state == "failed":
        return (f"its latest participant run failed (exit {status.get('exit_code')}: "
                f"{status.get('error')}); fix that and rerun the participant level")
    if state != "succeeded":
        return ("its latest participant run did not finish (interrupted, or still running); "
                "rerun the participant level")
    return None


def stale_reason(out_dir: Path, key: str, *, inputs: Mapping[str, Path],
                 outputs: Mapping[str, Path]) -> str | None:
    """Why the unit's outputs must not be used (None when they are the latest run's, current).
    """
    status = read_status(out_dir, key)
    if status is None:
        return (f"no record of the participant run that made its outputs "
                f"({status_path(out_dir, key)}); rerun the participant level")
    unfinished = unfinished_reason(out_dir, key)
    if unfinished is not None:
        return unfinished
    for what, files in (("inputs", inputs), ("outputs", outputs)):
        recorded = status.get(what) or {}
        now = _digests(files)
        for role in sorted(set(recorded) | set(now)):
            before, after = recorded.get(role), now.get(role)
            if before == after:
                continue
            name = (after or before or {}).get("name", role)
            if what == "inputs":
                change = ("is new" if before is None else "was removed" if after is None
                          else "changed")
                return (f"input {name} {change} since its participant outputs were made; "
                        "rerun the participant level")
            return (f"output {name} was changed or removed after its participant run; rerun "
                    "the participant level")
    return None


RAW_ENTITIES = ("ses", "task", "acq", "ce", "rec", "dir", "run", "echo", "flip", "inv", "mt",
                "part", "chunk")
"""Entities of raw file names: after a unit's prefix they mean another source image's file."""


def _derived_from(name: str, prefix: str) -> bool:
    """``name`` is a derivative of the image with entity ``prefix`` (not of a sibling image
    whose prefix extends it, e.g. ``sub-01_acq-sag_`` for ``sub-01_``)."""
    if not name.startswith(prefix):
        return False
    return name[len(prefix):].split("-", 1)[0] not in RAW_ENTITIES


def quarantine_outputs(out_dir: Path, source: SourceImage, dest: Path) -> list[Path]:
    """Move the unit's derivative files (and its report page) into ``dest``; returns them."""
    out_dir = Path(out_dir)
    prefix = f"{source.entity_prefix}_"
    folder = out_dir / source.subject_dir
    candidates: Sequence[Path] = [
        *(p for sub in (source.datatype, "figures") for p in sorted((folder / sub).glob("*"))
          if _derived_from(p.name, prefix)),
        subject_report_path(out_dir, source)]
    moved = []
    for path in candidates:
        if not path.is_file():
            continue
        target = dest / path.relative_to(out_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(path), str(target))
        moved.append(target)
    if moved:
        logger.info("%s: %d file(s) of the failed run moved out of the outputs into %s",
                    source.entity_prefix, len(moved), dest)
    return moved
