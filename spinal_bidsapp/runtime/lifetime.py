"""Child processes never outlive the run: pool workers and external tool trees die with it.

- SIGTERM in the main process raises :class:`~spinal_bidsapp.errors.Terminated` (a
  ``KeyboardInterrupt``), so it unwinds like Ctrl-C: temporary folders are removed, tool process
  groups and pool workers are killed, the log says so, and ``cli.main`` exits 143.
- Pool workers ask the kernel for SIGKILL when their parent dies (Linux ``PR_SET_PDEATHSIG``), so
  a SIGKILLed main process cannot leave them running.
- An external tool runs in its own session (so a timeout can kill its whole tree); a watchdog
  process kills that session's process group when the process that started the tool
  disappears, whichever way it died.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from types import FrameType

from spinal_bidsapp.errors import Terminated

PR_SET_PDEATHSIG = 1

WATCHDOG_POLL_S = 0.5

_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while True:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        break  # the tool's whole tree has ended
    if os.getppid() != parent:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    time.sleep(float(sys.argv[3]))
"""
"""Runs as ``python -c`` in a session of its own (a killpg of the app's group must not reach
it; the tool's group is in another session, which it cannot join). Its parent is the process
running the tool, so a change of ``getppid()`` means that process died (it was re-parented)."""


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (no-op elsewhere).

    ``expected_parent`` closes the race of a parent that died before the request: then this
    process exits at once.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    if os.getppid() != expected_parent:
        os._exit(128 + int(sig))


def worker_initializer(parent: int) -> None:
    """Pool worker set-up: die with the main process; SIGTERM kills (the main's handler, which
    raises, is inherited through fork and must not run in a worker)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    die_with_parent(parent)


def start_watchdog(group: int) -> subprocess.Popen[bytes] | None:
    """A watchdog that kills process group ``group`` if this process dies before the group ends.

    Stop it with :func:`stop_watchdog` once the tool has ended. Returns None where process groups
    do not exist.
    """
    if os.name != "posix":
        return None
    try:
        return subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(group),
             str(WATCHDOG_POLL_S)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
    except OSError:  # no fork: nothing can watch
        return None


def stop_watchdog(watchdog: subprocess.Popen[bytes] | None) -> None:
    if watchdog is None:
        return
    with contextlib.suppress(ProcessLookupError):
        watchdog.kill()
    watchdog.wait()


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (restored after).
    """
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
