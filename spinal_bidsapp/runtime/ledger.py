"""Resumable steps: the runner, not the step, decides whether work can be skipped.

A ledger (``<step work dir>/ledger.json``) records the SHA-256 of every input file, the parameters
(with engine versions) and the SHA-256 of every output. A step is skipped when the ledger matches
and every output still exists with the recorded hash, so an output edited by hand, a changed
input or a new parameter value reruns the step.

The check and the action run under an exclusive lock on ``<step work dir>/ledger.lock``: scoop
may run one future twice at once (it resends a future it "lost track of" under load, observed
in the cluster tests), and the second run must wait and reuse the first one's outputs instead of
deleting its temporaries or scratch files halfway.

The template loop's chained stages (``engines.builtin.ledger.run_stages``) build on the same
digest, file hashes and ledger reader; see that module for why they need their own runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spinal_bidsapp.errors import SpinalBidsAppError
from spinal_bidsapp.runtime.files import remove_stale_temporaries, sha256_file, write_json

logger = logging.getLogger(__name__)

LEDGER_NAME = "ledger.json"
LOCK_NAME = "ledger.lock"


@dataclass(frozen=True)
class StepRecord:
    name: str
    skipped: bool


def params_digest(params: Any) -> str:
    """SHA-256 of the JSON form of ``params`` (sorted keys; other objects as ``str``)."""
    text = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hashes(paths: Sequence[Path], *, root: Path | None = None) -> dict[str, str]:
    """Path -> SHA-256 of each file, keyed by the path (relative to ``root`` when given)."""
    return {str(p if root is None else p.relative_to(root)): sha256_file(p) for p in paths}


def read_ledger(path: Path) -> dict[str, Any] | None:
    """A ledger's content, or None when it is missing, unreadable or not a JSON object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _ledger_matches(ledger_path: Path, inputs: Sequence[Path], digest: str,
                    outputs: Sequence[Path]) -> bool:
    if not ledger_path.is_file() or not all(p.is_file() for p in outputs):
        return False
    ledger = read_ledger(ledger_path)
    if ledger is None:
        return False
    return (ledger.get("params") == digest
            and ledger.get("inputs") == file_hashes(inputs)
            and ledger.get("outputs") == file_hashes(outputs))


def run_step(name: str, action: Callable[[], None], *, step_dir: Path, inputs: Sequence[Path],
             params: Mapping[str, Any], outputs: Sequence[Path], label: str = "") -> StepRecord:
    """Run ``action`` unless a matching ledger says its ``outputs`` are current.

    ``action`` must create every path in ``outputs`` (atomically); a missing one is an error.
    """
    step_dir.mkdir(parents=True, exist_ok=True)
    with step_lock(step_dir):
        ledger_path = step_dir / LEDGER_NAME
        digest = params_digest(params)
        prefix = f"{label}: " if label else ""
        if _ledger_matches(ledger_path, inputs, digest, outputs):
            logger.info("%s%s: outputs are current, skipped", prefix, name)
            return StepRecord(name=name, skipped=True)
        ledger_path.unlink(missing_ok=True)
        for output in outputs:  # an interrupted earlier run may have left partial temporaries
            for leftover in remove_stale_temporaries(output):
                logger.info("%s%s: removed %s left by an interrupted run", prefix, name,
                            leftover.name)
        logger.info("%s%s: running", prefix, name)
        action()
        missing = [str(p) for p in outputs if not p.is_file()]
        if missing:
            raise SpinalBidsAppError(f"step {name} did not produce {', '.join(missing)}")
        write_json(ledger_path, {"step": name, "params": digest, "inputs": file_hashes(inputs),
                                 "outputs": file_hashes(outputs)})
        logger.info("%s%s: done", prefix, name)
        return StepRecord(name=name, skipped=False)


@contextlib.contextmanager
def step_lock(step_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the step's lock file (waits for another holder)."""
    with open(step_dir / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
