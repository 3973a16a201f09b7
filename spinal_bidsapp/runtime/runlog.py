"""Logging to the console and to ``<out>/logs/``, and progress bars for long loops."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

FORMAT = "%(asctime)s [%(levelname)s] %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg,unused-ignore]
    """Writes to whatever ``sys.stderr`` is at emit time (tests and tqdm swap it)."""

    @property
    def stream(self):  # type: ignore[override,unused-ignore,no-untyped-def]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        return None


FILE_ONLY = {"file_only": True}
"""``extra=`` of a record meant for the log file only (a traceback the console summarised);
the console shows it too with ``-v``."""


class _ConsoleFormatter(logging.Formatter):
    """One line per record: tracebacks go to the log file only, unless ``-v``."""

    def __init__(self, *, tracebacks: bool) -> None:
        super().__init__("%(asctime)s [%(levelname)s] %(message)s", "%H:%M:%S")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        if self.tracebacks:
            return super().format(record)
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            return super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


class _LogFileHandler(logging.FileHandler):
    """A log file that, once it cannot be written (disk full), says so in one console line and
    stops, instead of logging's ``--- Logging error ---`` traceback for every record."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging API)
        if self.broken:
            return
        self.broken = True
        error = sys.exc_info()[1]
        sys.stderr.write(f"spinal_bidsapp: warning: cannot write the log file "
                         f"{self.baseFilename} ({error}); logging to the console only\n")


def setup_logging(log_file: Path | None, *, verbose: int) -> None:
    """Console at INFO (DEBUG with -vv), one line per record (tracebacks with -v); the file
    always at DEBUG, with tracebacks; safe to call more than once."""
    root = logging.getLogger("spinal_bidsapp")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    console = _StderrHandler()
    console.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    console.setFormatter(_ConsoleFormatter(tracebacks=verbose >= 1))
    if verbose < 1:
        console.addFilter(_not_file_only)
    root.addHandler(console)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = _LogFileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(file_handler)
    root.propagate = False


def one_line(text: str, *, limit: int = 400) -> str:
    """``text`` on one line (a console error is one line), cut at ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _ignore(count: int) -> None:
    return None


@contextlib.contextmanager
def progress_bar(total: int, *, desc: str, unit: str = "it") -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr when it is a terminal (yields its ``update``); a no-op otherwise."""
    if not sys.stderr.isatty() or total <= 1:
        yield _ignore
        return

    with tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False) as bar:
        yield bar.update
