"""Logging to the console and to ``<out>/logs/``, and progress bars for long loops."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is at emit time (tests and tqdm swap it)."""

    @property
    def stream(self):  # type: ignore[override,unused-ignore,no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        return None


def setup_logging(log_file: Path | None, *, verbose: int) -> None:
    """Console at INFO (DEBUG with -vv), file always at DEBUG; safe to call more than once."""
    root = logging.getLogger("spinal_bidsapp")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = _StderrHandler()
    console.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    console.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S"))
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file_handler)
    root.propagate = False


def _ignore(count: int) -> None:
    return None


@contextlib.contextmanager
def progress_bar(total: int, *, desc: str, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when it is a terminal (yields its ``update``); a no-op otherwise."""
    if not sys.stderr.isatty() or total <= 1:
        yield _ignore
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False) as bar:
        yield bar.update
