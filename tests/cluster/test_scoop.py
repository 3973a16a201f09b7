"""The group level under scoop: local workers, and a hostfile whose second host is over SSH.

Both give the outputs of the local process pool: every voxel of every image identical, the JSON
records within ``JSON_RTOL``. That the futures really ran on the other workers is read from
``/proc``: a non-origin scoop worker loads ANTs only when it runs a template registration
(``engines.builtin.jobs``), so ANTs in its memory map proves it did.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    BIN,
    SETTINGS_ARGS,
    Cohort,
    Sshd,
    app_env,
    assert_same_outputs,
)

pytestmark = pytest.mark.cluster


class WorkerWatch:
    """Samples ``/proc`` while a run lasts: the scoop workers that ``select`` picks, whether each
    loaded ANTs, and its CPU seconds."""

    def __init__(self, select: Callable[[bytes, bytes], bool]) -> None:
        self.select = select
        self.ants: dict[int, bool] = {}
        self.cpu_s: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        ticks = 100.0
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                with contextlib.suppress(OSError):
                    cmdline = (proc / "cmdline").read_bytes()
                    if b"scoop.bootstrap" not in cmdline or not self.select(
                            cmdline, (proc / "environ").read_bytes()):
                        continue
                    pid = int(proc.name)
                    fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                    self.cpu_s[pid] = (int(fields[11]) + int(fields[12])) / ticks
                    self.ants[pid] = self.ants.get(pid, False) or (
                        "site-packages/ants/" in (proc / "maps").read_text())
            time.sleep(0.2)

    @contextlib.contextmanager
    def watching(self) -> Iterator[WorkerWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def _scoop_group(scoop_args: list[str], cohort: Cohort, out: Path) -> subprocess.CompletedProcess:
    """The group level under scoop; the settings on the command line (a worker started over
    SSH does not inherit this environment)."""
    argv = [str(BIN / "python"), "-m", "scoop", *scoop_args, str(BIN / "spinal_bidsapp"),
            str(cohort.bids), str(out), "group", "--nprocs", "2", "--omp-nthreads", "1",
            *SETTINGS_ARGS]
    return subprocess.run(argv, env=app_env(), capture_output=True, text=True, timeout=900,
                          cwd=out.parent)


def _check_run(done: subprocess.CompletedProcess, out: Path) -> None:
    # scoop exits 0 even when the app failed: the template's description is the proof
    assert (out / "tpl-SpinalCord" / "template_description.json").is_file(), done.stderr[-3000:]


def test_scoop_local_workers_build_the_process_pool_template(cohort: Cohort,
                                                             tmp_path: Path) -> None:
    out = cohort.participant_copy(tmp_path / "out")
    with WorkerWatch(lambda cmd, env: b"--origin" not in cmd).watching() as watch:
        done = _scoop_group(["-n", "2"], cohort, out)
    _check_run(done, out)
    assert any(watch.ants.values()), f"no registration ran on the non-origin worker: {watch.ants}"
    assert_same_outputs(cohort.local, out)


def test_scoop_hostfile_runs_registrations_on_a_worker_started_over_ssh(
        cohort: Cohort, sshd: Sshd, tmp_path: Path) -> None:
    """Hostfile: this host twice, by its host name (the broker and the origin) and as
    127.0.0.2, a loopback address scoop takes for another host: that worker starts through
    ``ssh 127.0.0.2``, as on a second node. Where ``socket.getfqdn()`` is not the host name
    (here: ``localhost``), scoop does not know the host name as local either and starts the
    broker and the origin over SSH too; that variant passes the same checks."""
    out = cohort.participant_copy(tmp_path / "out")
    hostfile = tmp_path / "hosts.txt"
    hostfile.write_text(f"{socket.gethostname().split('.')[0]} 1\n{sshd.address} 1\n")
    with WorkerWatch(lambda cmd, env: b"SCOOP_VIA_SSH=1" in env
                     and b"--origin" not in cmd).watching() as watch:
        done = _scoop_group(["--hostfile", str(hostfile), "--ssh-executable", str(sshd.ssh)],
                            cohort, out)
    _check_run(done, out)
    assert "Accepted publickey" in sshd.log.read_text(), "scoop did not log in over SSH"
    assert watch.ants, f"no scoop worker was started over SSH:\n{done.stderr[-3000:]}"
    assert any(watch.ants.values()), f"the SSH worker ran no registration: {watch.cpu_s}"
    assert_same_outputs(cohort.local, out)
