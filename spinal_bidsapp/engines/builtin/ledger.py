"""Resume machinery of the template loop: chained stage ledgers.

Every stage (inputs, iter-000 ... iter-NNN, final) writes ``<work>/<stage>/ledger.json`` with a
key and the SHA-256 of its outputs, split into *products* (kept) and *state* (the per-subject
warps, which cleanup may delete). A stage's key is the digest of the previous stage's key and
ledger, the first key the digest of the inputs and options, so a change anywhere reruns
everything after it. A rerun skips the leading stages whose ledger matches and whose products are
intact, steps back while the next stage needs state that is gone, and runs the rest in order.

Why not ``runtime.ledger.run_step`` per stage (it provides the digest, the file hashes and the
ledger reader used here): a stage's validity depends on every stage before it (the chained key,
not its own inputs' hashes), its outputs are split into products and state that cleanup deletes
(a missing state file must rerun the *previous* stage, which ``run_step`` cannot express), and
its ledger (``key``, ``products``, ``state``, paths relative to the work dir) is the on-disk
format existing work dirs and the resume tests rely on; ``run_step``'s ledger (``step``,
``params``, ``inputs``, ``outputs``, absolute paths) cannot carry it without a format change.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spinal_bidsapp.runtime.files import sha256_file, write_json
from spinal_bidsapp.runtime.ledger import LEDGER_NAME, file_hashes, params_digest, read_ledger

logger = logging.getLogger(__name__)

Stage = tuple[str, Callable[[], tuple[list[Path], list[Path]]]]
"""Name (folder under the work dir) and action returning (products, state)."""


digest = params_digest
"""SHA-256 of the JSON form of a value (sorted keys): the stage keys."""


def _ledger_path(work_dir: Path, name: str) -> Path:
    return work_dir / name / LEDGER_NAME


def _read_ledger(work_dir: Path, name: str) -> dict[str, Any] | None:
    return read_ledger(_ledger_path(work_dir, name))


def _files_match(root: Path, recorded: dict[str, str]) -> bool:
    return all((root / rel).is_file() and sha256_file(root / rel) == expected
               for rel, expected in recorded.items())


def run_stages(work_dir: Path, stages: Sequence[Stage], key0: str, *,
               needs_state: Callable[[int], bool]) -> None:
    """Skip every leading stage whose ledger matches; run the rest in order.

    Parameters
    ----------
    stages : sequence of Stage
        In order; each action must create every path it returns.
    key0 : str
        Digest of the inputs and options.
    needs_state : callable
        ``needs_state(i)``: stage ``i`` reads stage ``i - 1``'s state files.
    """
    keys = [key0]
    start = len(stages)
    for index, (name, _) in enumerate(stages):
        ledger = _read_ledger(work_dir, name)
        if ledger is None or ledger.get("key") != keys[-1] or not _files_match(
                work_dir, ledger.get("products", {})):
            start = index
            break
        keys.append(digest([keys[-1], ledger]))
    while 0 < start < len(stages) and needs_state(start):
        previous = _read_ledger(work_dir, stages[start - 1][0]) or {}
        if _files_match(work_dir, previous.get("state", {})):
            break
        start -= 1
        keys.pop()
    for name, _ in stages[:start]:
        logger.info("template %s: outputs are current, skipped", name)
    for name, action in stages[start:]:
        logger.info("template %s: running", name)
        _ledger_path(work_dir, name).unlink(missing_ok=True)
        products, state = action()
        ledger = {"key": keys[-1], "products": file_hashes(products, root=work_dir),
                  "state": file_hashes(state, root=work_dir)}
        write_json(_ledger_path(work_dir, name), ledger)
        keys.append(digest([keys[-1], ledger]))
