"""Resumable work: the one runner that decides whether a step can be skipped (not the step).

Every step leaves a ledger (``<step dir>/ledger.json``) naming what its outputs were made from
and the SHA-256 of each output; a rerun skips the step when the ledger matches and every
recorded output still exists with its hash, so an output edited by hand reruns the step. What
the outputs were made from is one of two things (:func:`run_steps`'s ``chain_key``):

- **its own inputs** (participant steps, the group level's per-subject steps, the MINC engine's
  ipl run): the SHA-256 of every input file and a digest of the parameters. Ledger
  ``{"step", "params", "inputs", "outputs"}``.
- **everything before it** (the template loop's stages inputs, iter-000 ... iter-NNN, final): a
  key chained from the previous stage's key and ledger, the first key the digest of the inputs
  and options, so a change anywhere reruns every later stage. A chained step returns the files
  it wrote, split into *products* (kept) and *state* (files the next step reads, which cleanup
  may delete): a missing state file reruns the step before it. Ledger ``{"key", "products",
  "state"}``.

Paths in a ledger are absolute, or relative to ``root`` when given (the template loop's work
dir). A step whose action resumes its own partial work (ipl skips what exists) names that folder
(``Step.resumes_in``): the runner records what the folder is being made from before the action
starts, and clears it when a rerun is made from something else, or when nothing says what it
was made from.

An independent step's check and action run under an exclusive lock on
``<step dir>/ledger.lock``: scoop may run one future twice at once (it resends a future it "lost
track of" under load, observed in the cluster tests), and the second run must wait and reuse the
first one's outputs instead of deleting its temporaries or scratch files halfway.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
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


@dataclass(frozen=True)
class Written:
    """What a chained step wrote: ``products`` are kept, ``state`` only feeds the next step."""

    products: Sequence[Path]
    state: Sequence[Path] = ()


@dataclass(frozen=True)
class Step:
    """One resumable unit of work.

    Parameters
    ----------
    name : str
        Shown in the log and recorded in the ledger.
    action : callable
        Does the work. An independent step's action writes every path in ``outputs``
        (atomically) and returns None; a chained step's action returns :class:`Written`.
    step_dir : Path
        Holds the ledger.
    inputs, params :
        What an independent step's outputs are made from (files hashed, parameters digested).
    outputs : sequence of Path
        Files an independent step must produce, declared up front.
    resumes_in : Path, optional
        A folder the action resumes from by itself; cleared unless the interrupted run that
        left it was made from the same inputs and parameters.
    """

    name: str
    action: Callable[[], Written | None]
    step_dir: Path
    inputs: Sequence[Path] = ()
    params: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[Path] = ()
    resumes_in: Path | None = None


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


def run_step(name: str, action: Callable[[], None], *, step_dir: Path, inputs: Sequence[Path],
             params: Mapping[str, Any], outputs: Sequence[Path], label: str = "",
             resumes_in: Path | None = None) -> StepRecord:
    """Run one independent step unless its ledger says its ``outputs`` are current.

    ``action`` must create every path in ``outputs`` (atomically); a missing one is an error.
    ``label`` (a subject) prefixes the log lines.
    """
    step = Step(name=name, action=action, step_dir=step_dir, inputs=inputs, params=params,
                outputs=outputs, resumes_in=resumes_in)
    return run_steps([step], prefix=f"{label}: " if label else "")[0]


def run_steps(steps: Sequence[Step], *, chain_key: str | None = None, root: Path | None = None,
              needs_state: Callable[[int], bool] | None = None,
              prefix: str = "") -> list[StepRecord]:
    """Run ``steps`` in order, skipping each one whose ledger says its outputs are current.

    Parameters
    ----------
    steps : sequence of Step
        Independent steps (``chain_key`` None; each judged on its own inputs when its turn
        comes, so a step may read what an earlier one wrote), or the stages of a chain.
    chain_key : str, optional
        Digest of what the first stage is made from; each later stage's key is the digest of
        the previous key and ledger. Only the leading stages that match are skipped.
    root : Path, optional
        Ledger paths are relative to it (a work dir that may move).
    needs_state : callable, optional
        Chain only: ``needs_state(i)`` says stage ``i`` reads stage ``i - 1``'s state files;
        when they are gone, stage ``i - 1`` runs again.
    prefix : str
        Prefix of the log lines (``"sub-01: "``, ``"template "``).
    """
    if chain_key is None:
        return [_run_independent(step, root, prefix) for step in steps]
    keys = [chain_key]
    start = len(steps)
    for index, step in enumerate(steps):
        ledger = _current_ledger(step, partial(dict, key=keys[-1]), root)
        if ledger is None:
            start = index
            break
        keys.append(params_digest([keys[-1], ledger]))
    while needs_state is not None and 0 < start < len(steps) and needs_state(start):
        previous = read_ledger(steps[start - 1].step_dir / LEDGER_NAME) or {}
        if _files_match(previous.get("state", {}), root):
            break
        start -= 1
        keys.pop()
    records = [_skipped(step, prefix) for step in steps[:start]]
    for step in steps[start:]:
        ledger = _execute(step, partial(dict, key=keys[-1]), root, prefix)
        keys.append(params_digest([keys[-1], ledger]))
        records.append(StepRecord(name=step.name, skipped=False))
    return records


def _run_independent(step: Step, root: Path | None, prefix: str) -> StepRecord:
    def identity() -> dict[str, Any]:  # inputs hashed when needed: once in a fresh run
        return {"step": step.name, "params": params_digest(step.params),
                "inputs": file_hashes(step.inputs, root=root)}

    step.step_dir.mkdir(parents=True, exist_ok=True)
    with step_lock(step.step_dir):
        if _current_ledger(step, identity, root) is not None:
            return _skipped(step, prefix)
        _execute(step, identity, root, prefix)
        return StepRecord(name=step.name, skipped=False)


def _skipped(step: Step, prefix: str) -> StepRecord:
    logger.info("%s%s: outputs are current, skipped", prefix, step.name)
    return StepRecord(name=step.name, skipped=True)


def _current_ledger(step: Step, identity: Callable[[], dict[str, Any]], root: Path | None
                    ) -> dict[str, Any] | None:
    """The step's ledger when it matches ``identity()`` and its outputs are intact, else None
    (``identity`` is called only when there is a ledger to compare it with)."""
    ledger = read_ledger(step.step_dir / LEDGER_NAME)
    if ledger is None or not all(p.is_file() for p in step.outputs):
        return None
    if any(ledger.get(k) != v for k, v in identity().items()):
        return None
    recorded = ledger.get("outputs", ledger.get("products"))
    if not isinstance(recorded, dict):
        return None
    declared = {str(p if root is None else p.relative_to(root)) for p in step.outputs}
    if step.outputs and set(recorded) != declared:
        return None
    return ledger if _files_match(recorded, root) else None


def _files_match(recorded: Mapping[str, str], root: Path | None) -> bool:
    paths = {name: Path(name) if root is None else root / name for name in recorded}
    return all(path.is_file() and sha256_file(path) == recorded[name]
               for name, path in paths.items())


def _execute(step: Step, identity: Callable[[], dict[str, Any]], root: Path | None,
             prefix: str) -> dict[str, Any]:
    """Run the action and write its ledger (``identity()`` after the action, as the inputs
    are then, + the hashes of what it wrote)."""
    step.step_dir.mkdir(parents=True, exist_ok=True)
    ledger_path = step.step_dir / LEDGER_NAME
    if step.resumes_in is not None:
        _keep_or_clear(step.resumes_in, identity(), ledger_path, prefix=f"{prefix}{step.name}")
    else:
        ledger_path.unlink(missing_ok=True)
    for output in step.outputs:  # an interrupted earlier run may have left partial temporaries
        for leftover in remove_stale_temporaries(output):
            logger.info("%s%s: removed %s left by an interrupted run", prefix, step.name,
                        leftover.name)
    logger.info("%s%s: running", prefix, step.name)
    written = step.action()
    missing = [str(p) for p in step.outputs if not p.is_file()]
    if missing:
        raise SpinalBidsAppError(f"step {step.name} did not produce {', '.join(missing)}")
    if written is None:
        recorded = {"outputs": file_hashes(step.outputs, root=root)}
    else:
        recorded = {"products": file_hashes(written.products, root=root),
                    "state": file_hashes(written.state, root=root)}
    ledger = {**identity(), **recorded}
    write_json(ledger_path, ledger)
    if written is None:
        logger.info("%s%s: done", prefix, step.name)
    return ledger


def _keep_or_clear(folder: Path, identity: Mapping[str, Any], ledger_path: Path, *,
                   prefix: str) -> None:
    """Keep ``folder`` for an action made from the same things, else clear it; then record
    what it is being made from (a ledger without outputs, which never matches)."""
    started = read_ledger(ledger_path) or {}
    if folder.exists() and any(started.get(k) != v for k, v in identity.items()):
        logger.info("%s: %s was made from other inputs or parameters; starting afresh",
                    prefix, folder.name)
        shutil.rmtree(folder)
    write_json(ledger_path, dict(identity))


@contextlib.contextmanager
def step_lock(step_dir: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the step's lock file (waits for another holder)."""
    with open(step_dir / LOCK_NAME, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
