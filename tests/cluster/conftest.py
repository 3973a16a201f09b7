"""Distributed execution for real: a tiny cohort run locally, a one-node SLURM cluster (munged,
slurmctld, slurmd) and an SSH server, all started here in temporary folders and stopped after.

The daemons come from Debian's ``slurm-wlm``/``munge``/``openssh-server`` packages, installed by
``scripts/install-system-deps.sh`` (``make test`` runs it); where they are absent the tests
skip, saying so. The job scripts are the ones printed in ``docs/hpc.md``, extracted from it.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
HPC_DOC = REPO / "docs" / "hpc.md"
BIN = Path(sys.executable).parent
"""The venv that runs the tests: its ``spinal_bidsapp`` is the native install the recipes use."""
SETTINGS = {
    "SPINAL_BIDSAPP_SKIP_BIDS_VALIDATION": "1",
    "SPINAL_BIDSAPP_TEMPLATE_RESOLUTION": "1.5",
    "SPINAL_BIDSAPP_TEMPLATE_XY_SIZE": "12",
    "SPINAL_BIDSAPP_TEMPLATE_PRESET": "fast",
}
"""A template small enough for a test (read by the app from the environment, as documented)."""
SETTINGS_ARGS = ["--skip-bids-validation", "--template-resolution", "1.5", "--template-xy-size",
                 "12", "--template-preset", "fast"]
"""The same settings as command-line options."""
SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def tool(name: str) -> str:
    """Absolute path of a system program, or skip the test naming the missing package."""
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in SBIN if os.access(f"{d}/{name}", os.X_OK)), None)
    if found is None:
        why = (f"{name} is not installed: scripts/install-system-deps.sh installs "
               "slurm-wlm, munge and openssh-server (make test runs it as root)")
        if os.environ.get("CI"):  # CI installs them: a missing one there is a broken install
            pytest.fail(why)
        pytest.skip(why)
    return found


def app_env(**extra: str) -> dict[str, str]:
    """This process's environment, the test settings, one thread per tool, the venv first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SPINAL_BIDSAPP_"))}
    env.update(SETTINGS, ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}")
    env.setdefault("USER", getpass.getuser())
    env.update(extra)
    return env


def doc_block(name: str) -> str:
    """The code block after the paragraph of ``docs/hpc.md`` that starts with ```name```."""
    text = HPC_DOC.read_text(encoding="utf-8")
    match = re.search(rf"^`{re.escape(name)}`[^\n]*(?:\n[^\n]+)*?:\n\n```\n(.*?)^```", text,
                      re.M | re.S)
    assert match, f"docs/hpc.md has no code block introduced by `{name}`"
    return match.group(1)


def free_port() -> int:
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float,
               poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(poll_s)


@contextlib.contextmanager
def daemon(argv: list[str], log: Path, env: dict[str, str] | None = None
           ) -> Iterator[subprocess.Popen[bytes]]:
    """Start a foreground daemon; stop it (SIGTERM, then SIGKILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------------- the cohort


@dataclass(frozen=True)
class Cohort:
    bids: Path
    participant: Path
    """OUTPUT_DIR after a local participant run (no group outputs)."""
    local: Path
    """OUTPUT_DIR after local participant and group runs (process pool, --nprocs 2)."""

    def participant_copy(self, out: Path) -> Path:
        shutil.copytree(self.participant, out)
        return out


@pytest.fixture(scope="session")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Cohort:
    """Three synthetic subjects (spinal_bidsapp-synth), run locally at both levels; built once
    per session, also when xdist spreads the cluster tests over several workers (their shared
    session folder, under a lock)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return _make_cohort(tmp_path_factory.mktemp("cluster-cohort"))
    shared = tmp_path_factory.getbasetemp().parent  # this session's, shared by its workers
    with open(shared / "cluster-cohort.lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        root = shared / "cluster-cohort"
        if not (root / "complete").is_file():
            shutil.rmtree(root, ignore_errors=True)
            _make_cohort(root)
            (root / "complete").touch()
        return Cohort(bids=root / "bids", participant=root / "participant", local=root / "local")


def _make_cohort(root: Path) -> Cohort:
    root.mkdir(parents=True, exist_ok=True)
    env = app_env()
    subprocess.run([str(BIN / "spinal_bidsapp-synth"), "demo", str(root), "--n-subjects", "3",
                    "--seed", "3", "--no-straight-reference"], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    participant = root / "participant"
    subprocess.run([str(BIN / "spinal_bidsapp"), str(root / "bids"), str(participant),
                    "participant", "--nprocs", "2"], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    local = root / "local"
    shutil.copytree(participant, local)
    subprocess.run([str(BIN / "spinal_bidsapp"), str(root / "bids"), str(local), "group",
                    "--nprocs", "2"], check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return Cohort(bids=root / "bids", participant=participant, local=local)


# ------------------------------------------------------------------------- SLURM


@dataclass(frozen=True)
class Slurm:
    conf: Path
    env: dict[str, str]

    def run(self, *argv: str, cwd: Path | None = None, env: dict[str, str] | None = None
            ) -> str:
        done = subprocess.run(list(argv), cwd=cwd, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr.strip()}"
        return done.stdout

    def queue(self) -> list[str]:
        return self.run("squeue", "-h", "-o", "%i").split()

    def wait_for_empty_queue(self, timeout_s: float = 900) -> None:
        wait_until(lambda: not self.queue(), "SLURM jobs finished", timeout_s, poll_s=0.5)

    def job_states(self) -> dict[str, str]:
        """JobId (array tasks as ``<array>_<task>``) -> JobState of the jobs slurmctld keeps."""
        states = {}
        for line in self.run("scontrol", "show", "job", "-o").splitlines():
            fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
            if "JobId" not in fields:
                continue
            name = fields["JobId"]
            if fields.get("ArrayTaskId"):
                name = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
            states[name] = fields.get("JobState", "?")
        return states


SLURM_CONF = """\
ClusterName=spinaltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
SlurmUser={user}
SlurmdUser={user}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=3600
KillWait=5
MailProg=/bin/true
NodeName={host} NodeAddr=127.0.0.1 CPUs=16 RealMemory=70000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
"""One node that announces 16 CPUs and 70 GB (``config_overrides``: slurmd reports the configured
figures, not the machine's), so the recipes' ``#SBATCH`` requests fit as printed; no accounting
database. Processes are tracked by process group (``proctrack/pgid``; clusters use cgroups):
``linuxproc`` follows the parent chain only, so it lost the app once ``scancel`` had killed the
batch shell, ended the job while the app still ran, and the resubmitted job found the group
level still locked (exit 75)."""


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """munged + slurmctld + slurmd on this machine, configured and logging under a tmp folder."""
    munged, slurmctld, slurmd = tool("munged"), tool("slurmctld"), tool("slurmd")
    tool("sbatch")
    if os.geteuid() != 0:
        pytest.skip("slurmd starts jobs as their user only when run as root (CI runs as root)")
    root = tmp_path_factory.mktemp("slurm")
    for sub in ("state", "spool", "log", "munge", "munge-run"):
        (root / sub).mkdir()
    (root / "munge").chmod(0o700)
    (root / "munge-run").chmod(0o755)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    sock = root / "munge-run" / "munge.socket"
    # the node's name is this machine's name for scoop (``scoop.utils.localHostnames``: the
    # short ``getfqdn()``), so the host file of group-scoop.sh starts its workers directly
    host = socket.getfqdn().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(SLURM_CONF.format(host=host, ctld_port=free_port(), d_port=free_port(),
                                      munge_socket=sock, user=getpass.getuser(), root=root))
    env = app_env(SLURM_CONF=str(conf))
    with contextlib.ExitStack() as stack:
        stack.enter_context(daemon(
            [munged, "-F", "--force", f"--socket={sock}", f"--key-file={key}",
             f"--log-file={root / 'log' / 'munged.log'}",
             f"--pid-file={root / 'munge' / 'munged.pid'}",
             f"--seed-file={root / 'munge' / 'munged.seed'}"], root / "log" / "munged.out"))
        wait_until(sock.exists, "munged socket", 20)
        stack.enter_context(daemon([slurmctld, "-D", "-i", "-f", str(conf)],
                                   root / "log" / "slurmctld.out", env))
        stack.enter_context(daemon([slurmd, "-D", "-f", str(conf), "-N", host],
                                   root / "log" / "slurmd.out", env))
        cluster = Slurm(conf=conf, env=env)

        def node_idle() -> bool:
            with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                return cluster.run("sinfo", "-h", "-o", "%t").strip() == "idle"
            return False

        wait_until(node_idle, f"one-node SLURM cluster up (logs in {root / 'log'})", 60)
        try:
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.run("scancel", "--full", "--signal=KILL", "--user", getpass.getuser())
                wait_until(lambda: not cluster.queue(), "jobs cancelled", 30)


def write_recipes(folder: Path, *, bids: Path, scratch: Path) -> Path:
    """The job scripts of docs/hpc.md, verbatim, in ``folder``; ``study.env`` is the doc's block
    followed by the test's settings (the native install in this venv, tmp paths)."""
    (folder / "logs").mkdir(parents=True, exist_ok=True)  # as submit.sh does
    for name in ("participant.sh", "group.sh", "group-scoop.sh", "submit.sh"):
        (folder / name).write_text(doc_block(name))
        (folder / name).chmod(0o755)
    (folder / "study.env").write_text(
        doc_block("study.env")
        + "\n# --- the test's settings: this machine's paths, the native install of the venv\n"
        + f"BIDS={bids}\nSCRATCH={scratch}\nRUN=({BIN / 'spinal_bidsapp'})\n"
        + f"SCOOP_PYTHON={BIN / 'python'}\nSCOOP_APP={BIN / 'spinal_bidsapp'}\n")
    return folder


# ------------------------------------------------------------------------- SSH


@dataclass(frozen=True)
class Sshd:
    ssh: Path
    """An ``ssh`` for scoop's ``--ssh-executable``: this server's port and key; the remote
    command is prefixed with ``export SCOOP_VIA_SSH=1;`` so the test can find its processes."""
    log: Path
    address: str


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An SSH server on 127.0.0.1 and 127.0.0.2 (a loopback address scoop does not know as
    local), accepting one generated key, with its own config, host key and log (nothing in
    ~/.ssh is touched)."""
    server, keygen, client = tool("sshd"), tool("ssh-keygen"), tool("ssh")
    root = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)],
                       check=True)
    shutil.copyfile(root / "client_key.pub", root / "authorized_keys")
    (root / "authorized_keys").chmod(0o600)
    port, address = free_port(), "127.0.0.2"
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nListenAddress {address}\n"
        f"HostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\nPrintMotd no\n")
    if os.geteuid() == 0:  # sshd's privilege separation folder (created by its init script)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    ssh = root / "ssh"
    ssh.write_text(
        "#!/bin/bash\n# scoop's ssh: this test server, and a marker on the remote command\n"
        'last="${@: -1}"\nset -- "${@:1:$#-1}"\n'
        f"exec {client} -F /dev/null -p {port} -i {root / 'client_key'} -o IdentitiesOnly=yes "
        '-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "$@" '
        '"export SCOOP_VIA_SSH=1; $last"\n')
    ssh.chmod(0o755)
    log = root / "sshd.log"
    with daemon([server, "-D", "-e", "-f", str(root / "sshd_config"), "-E", str(log)],
                root / "sshd.out"):
        def answers() -> bool:
            done = subprocess.run([str(ssh), "-oBatchMode=yes", address, "true"],
                                  capture_output=True, timeout=30)
            return done.returncode == 0

        wait_until(answers, f"sshd on {address}:{port} (log {log})", 30, poll_s=0.5)
        yield Sshd(ssh=ssh, log=log, address=address)


# ------------------------------------------------------------------------- comparisons


JSON_RTOL = 1e-9
"""Relative tolerance of the numbers in JSON records. Not zero: a process started over SSH does
not inherit ``OPENBLAS_NUM_THREADS=1``, and multi-threaded BLAS sums change the last digit of
some figures (observed: the template grid's origin, -100.75691309596797 vs ...787 mm)."""


def _outputs(root: Path) -> dict[str, Path]:
    """Result files of an OUTPUT_DIR: not the work folder, logs, QC pages or figures."""
    return {p.relative_to(root).as_posix(): p for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).as_posix().startswith(
                ("work/", "logs/", "qc/"))
            and p.suffix not in {".html", ".png", ".svg"} and ".lock" not in p.name
            and not p.name.startswith("index")}


def _assert_close(x: object, y: object, where: str) -> None:
    """JSON values equal, numbers within JSON_RTOL, wall-clock ``timing`` records ignored."""
    if isinstance(x, dict) and isinstance(y, dict):
        keys = set(x) - {"timing"}
        assert keys == set(y) - {"timing"}, where
        for key in keys:
            _assert_close(x[key], y[key], f"{where}.{key}")
    elif isinstance(x, list) and isinstance(y, list):
        assert len(x) == len(y), where
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            _assert_close(u, v, f"{where}[{i}]")
    elif isinstance(x, float) or isinstance(y, float):
        assert y == pytest.approx(x, rel=JSON_RTOL, abs=1e-12), where
    else:
        assert x == y, where


def assert_same_outputs(a: Path, b: Path, *, image_rtol: float = 0.0) -> None:
    """The same result files in two OUTPUT_DIRs: every image's voxels within ``image_rtol`` of
    its maximum (0: identical) on the same grid, tables byte for byte, JSON records as
    :func:`_assert_close` (run-specific files aside: the dataset description, logs)."""
    left, right = _outputs(a), _outputs(b)
    assert left and sorted(left) == sorted(right)
    for name, path in left.items():
        if name.endswith(".nii.gz"):
            x, y = nib.load(str(path)), nib.load(str(right[name]))
            u, v = np.asarray(x.dataobj), np.asarray(y.dataobj)
            assert np.array_equal(x.affine, y.affine) and u.shape == v.shape, name
            scale = max(float(np.abs(u).max()), 1e-12)
            assert np.max(np.abs(u.astype(np.float64) - v), initial=0.0) <= image_rtol * scale, \
                name
        elif name.endswith(".json") and name != "dataset_description.json":
            _assert_close(json.loads(path.read_text()), json.loads(right[name].read_text()),
                          name)
        elif name.endswith((".tsv", ".txt")):
            assert path.read_bytes() == right[name].read_bytes(), name
