"""Run external tools (SCT, MINC, ANTs binaries): the one helper every engine goes through.

:func:`run_tool` takes an argv list (never a shell string), caps native thread pools in the
child's environment, saves stdout and stderr to the step's log file, enforces a timeout, and checks
that the outputs declared up front exist afterwards. :func:`discover_tool` is the ``which`` of the
package and also records the tool's version for provenance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from spinal_bidsapp.config import thread_environment
from spinal_bidsapp.errors import EngineUnavailable, OutputNotWritableError, SpinalBidsAppError
from spinal_bidsapp.runtime.lifetime import start_watchdog, stop_watchdog

logger = logging.getLogger(__name__)

class ExternalToolError(SpinalBidsAppError):
    """An external tool failed: non-zero exit, timeout, or a declared output is missing.

    ``log_file`` is the tool's full log (None when it could not be written); engines read it to
    tell a failure of their environment (a model that is not installed) from one of the data.
    """

    exit_code = 1

    def __init__(self, message: str, *, log_file: Path | None = None) -> None:
        super().__init__(message)
        self.log_file = log_file


@dataclass(frozen=True)
class ToolInfo:
    """Where a tool lives and which version it reports (for ``GeneratedBy`` and step ledgers)."""

    name: str
    path: Path
    version: str


@dataclass(frozen=True)
class ToolRun:
    """A finished, successful tool run."""

    argv: tuple[str, ...]
    log_file: Path
    duration_s: float
    outputs: tuple[Path, ...]
    """The declared outputs, all verified to exist, in the order given."""


def find_tool(name: str, *, search_path: str | None = None) -> Path | None:
    """Absolute path of executable ``name`` on ``search_path`` (default: the process ``PATH``)."""
    found = shutil.which(name, path=search_path)
    return Path(found).absolute() if found else None


def discover_tool(name: str, *, version_args: Sequence[str], search_path: str | None = None,
                  timeout_s: float = 60.0) -> ToolInfo | None:
    """Locate ``name`` and ask it for its version (``name *version_args``, first output line).

    Returns None when the tool is not on the path. A tool that is found but cannot report a
    version gets ``version="unknown"`` (logged), since a version string only feeds provenance.
    """
    path = find_tool(name, search_path=search_path)
    if path is None:
        return None
    try:
        done = subprocess.run([str(path), *version_args], capture_output=True, text=True,
                              timeout=timeout_s, check=False, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning("%s was found at %s but did not report its version: %s", name, path, exc)
        return ToolInfo(name=name, path=path, version="unknown")
    lines = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
    version = next((line for line in lines if line), "")
    if done.returncode != 0 or not version:
        logger.warning("%s %s exited with %d; version unknown", path, " ".join(version_args),
                       done.returncode)
        return ToolInfo(name=name, path=path, version="unknown")
    return ToolInfo(name=name, path=path, version=version)


def run_tool(argv: Sequence[str | Path], *, log_file: Path, expected_outputs: Sequence[Path],
             threads: int, timeout_s: float, cwd: Path | None = None,
             extra_env: Mapping[str, str] | None = None) -> ToolRun:
    """Run one external command and check its declared outputs.

    Parameters
    ----------
    argv : sequence of str or Path
        Program and arguments; no shell is involved, so nothing needs quoting.
    log_file : Path
        Receives a header (command, working folder, thread caps) then the tool's stdout and
        stderr, interleaved in the order written; overwritten on every run.
    expected_outputs : sequence of Path
        Files the tool must have created; checked after a zero exit status.
    threads : int
        Thread cap of the child (every :data:`spinal_bidsapp.config.THREAD_VARIABLES`).
    timeout_s : float
        Wall-clock limit, seconds; the whole process group is killed when it expires.
    cwd : Path, optional
        Working folder of the child (never of this process).
    extra_env : mapping, optional
        Extra variables for the child (e.g. ``TMPDIR``); they override inherited values.

    Raises
    ------
    EngineUnavailable
        The program does not exist or is not executable.
    ExternalToolError
        Non-zero exit status, timeout, or a missing declared output; the message names the tool,
        the command and the log file.
    """
    args = [str(part) for part in argv]
    if not args:
        raise ValueError("run_tool needs a program name")
    tool = Path(args[0]).name
    command = shlex.join(args)
    env = {**os.environ, **thread_environment(threads), **(extra_env or {})}
    try:
        log_file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot create log folder {log_file.parent}: {exc}") from exc
    logger.debug("running %s (log %s)", command, log_file)
    started = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as log:
        log.write(f"$ {command}\n# cwd: {cwd or Path.cwd()}\n# threads: {threads}\n")
        log.flush()
        try:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=cwd, env=env,
                                    start_new_session=True)
        except (FileNotFoundError, PermissionError) as exc:
            raise EngineUnavailable(f"cannot run {tool}: {exc.strerror} ({args[0]}); is it "
                                    "installed and on PATH?") from exc
        watchdog = start_watchdog(proc.pid)  # kills the tree if this process dies first
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            log.write(f"\n# killed after {timeout_s:g} s timeout\n")
            raise ExternalToolError(f"{tool} did not finish within {timeout_s:g} s and was "
                                    f"stopped (command: {command}); see {log_file}",
                                    log_file=log_file) from None
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            stop_watchdog(watchdog)
    duration = time.monotonic() - started
    if returncode != 0:
        tail = " | ".join(log_tail(_read_log(log_file))) or "(no output)"
        raise ExternalToolError(f"{tool} failed with exit code {returncode}: {tail} (command: "
                                f"{command}; full log: {log_file})", log_file=log_file)
    missing = [str(path) for path in expected_outputs if not Path(path).is_file()]
    if missing:
        raise ExternalToolError(f"{tool} exited normally but did not write {', '.join(missing)} "
                                f"(command: {command}); see {log_file}", log_file=log_file)
    logger.debug("%s finished in %.1f s", tool, duration)
    return ToolRun(argv=tuple(args), log_file=log_file, duration_s=duration,
                   outputs=tuple(Path(p) for p in expected_outputs))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the child and everything it started (it leads its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _read_log(log_file: Path) -> str:
    try:
        return log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
"""Terminal colour and cursor codes (SCT colours every line it prints)."""
_NOISE = re.compile(
    r"^(Total runtime;|\$ |# (cwd|threads):|-+$|=+$)"  # SCT's closing line, our header, rules
    r"|\d+%\|")  # tqdm progress bars
MAX_TAIL_CHARS = 300
"""Longest line kept in an error message (SCT prints whole exception reprs on one line)."""


def log_tail(text: str, *, lines: int = 3) -> list[str]:
    """The last ``lines`` meaningful lines of a tool's output, for an error message.

    ANSI codes are stripped; blank lines, progress bars, our log header, SCT's closing
    ``Total runtime`` line and the frames of Python tracebacks are skipped, so
    what remains ends with the exception or the tool's own error message.

    >>> log_tail("$ sct_deepseg\\nModel x is not installed.\\nTraceback (most recent call last):"
    ...          "\\n  File 'a.py', line 1\\n    main()\\nValueError: bad\\n"
    ...          "\\x1b[0mTotal runtime; 0.1 seconds.\\x1b[0m\\n")
    ['Model x is not installed.', 'ValueError: bad']
    """
    kept: list[str] = []
    in_traceback = False
    for raw in ANSI_ESCAPE.sub("", text).splitlines():
        line = raw.strip()
        if line.startswith("Traceback (most recent call last)"):
            in_traceback = True
            continue
        if in_traceback and raw[:1].isspace():  # a frame: file, line and code
            continue
        in_traceback = False
        if line and not _NOISE.search(line):
            kept.append(line if len(line) <= MAX_TAIL_CHARS else line[:MAX_TAIL_CHARS] + "...")
    return kept[-lines:]
