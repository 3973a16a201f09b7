"""The SLURM recipes of docs/hpc.md, run as printed on a one-node cluster started by the test.

``study.env`` is the doc's block followed by the test's paths and the native launcher
(``RUN=(<venv>/bin/spinal_bidsapp)``); the job scripts and ``submit.sh`` are the doc's text. The
app's settings (a 1.5 mm template, the fast preset) come from ``SPINAL_BIDSAPP_*`` variables in
the submitting environment, which SLURM passes on to the jobs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cluster.conftest import (
    Cohort,
    Slurm,
    assert_same_outputs,
    wait_until,
    write_recipes,
)

pytestmark = pytest.mark.cluster


def _submitted(stdout: str) -> str:
    match = re.search(r"Submitted batch job (\d+)", stdout)
    assert match, stdout
    return match.group(1)


def _assert_completed(slurm: Slurm, before: dict[str, str], jobs: Path, n: int) -> None:
    new = {k: v for k, v in slurm.job_states().items() if k not in before}
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}"
                     for p in sorted((jobs / "logs").glob("*.out")))
    assert len(new) == n and set(new.values()) == {"COMPLETED"}, f"{new}\n{logs}"


def test_participant_array_then_group_job_as_documented(cohort: Cohort, slurm: Slurm,
                                                        tmp_path: Path) -> None:
    """submit.sh: subjects.txt, the participant array (3 tasks into one OUTPUT_DIR), the group
    job after it (afterok); the outputs are those of the local run."""
    scratch = tmp_path / "scratch"
    jobs = write_recipes(tmp_path / "jobs", bids=cohort.bids, scratch=scratch)
    before = slurm.job_states()
    slurm.run("bash", "submit.sh", cwd=jobs)
    assert (jobs / "subjects.txt").read_text().split() == ["01", "02", "03"]
    slurm.wait_for_empty_queue()
    _assert_completed(slurm, before, jobs, 4)
    assert_same_outputs(cohort.local, scratch / "out")


def test_group_scoop_job_as_documented(cohort: Cohort, slurm: Slurm, tmp_path: Path) -> None:
    """group-scoop.sh on the allocation's one node: the host file from ``scontrol show
    hostnames``, scoop workers on it, the local run's template. Submitted with ``--nodes=1
    --ntasks-per-node=2`` (command-line options override the script's #SBATCH lines), the only
    two changes for a one-node, two-core cluster."""
    scratch = tmp_path / "scratch"
    cohort.participant_copy(scratch / "out")
    jobs = write_recipes(tmp_path / "jobs", bids=cohort.bids, scratch=scratch)
    before = slurm.job_states()
    slurm.run("sbatch", "--nodes=1", "--ntasks-per-node=2", "group-scoop.sh", cwd=jobs)
    slurm.wait_for_empty_queue()
    _assert_completed(slurm, before, jobs, 1)
    assert (scratch / "hosts.txt").read_text().split()[1] == "2"
    assert_same_outputs(cohort.local, scratch / "out")


def test_group_job_killed_mid_iteration_resumes_from_its_finished_registrations(
        cohort: Cohort, slurm: Slurm, tmp_path: Path) -> None:
    """group.sh is cancelled with SIGKILL (``scancel --signal=KILL --full``) as soon as the first
    registration of template iteration 3 has finished; resubmitted as printed, it skips
    iterations 1-2 and that registration, runs the others, and ends with the local run's
    outputs. The killed job is submitted with ``--cpus-per-task=1`` (so ``--nprocs 1``): its
    registrations run one after the other, and the kill surely falls between two of them."""
    scratch = tmp_path / "scratch"
    cohort.participant_copy(scratch / "out")
    jobs = write_recipes(tmp_path / "jobs", bids=cohort.bids, scratch=scratch)
    iteration = scratch / "work" / "group" / "group" / "template" / "iter-003"
    killed = _submitted(slurm.run("sbatch", "--cpus-per-task=1", "group.sh", cwd=jobs))

    def finished() -> list[str]:
        return sorted(p.parent.name for p in iteration.glob("registration/*/ledger.json"))

    def first_registration_done() -> bool:
        if finished():
            return True
        assert killed in slurm.queue(), (jobs / "logs" / f"group_{killed}.out").read_text()
        return False

    wait_until(first_registration_done, "a registration of iteration 3 finished", 600,
               poll_s=0.02)
    slurm.run("scancel", "--signal=KILL", "--full", killed)
    wait_until(lambda: killed not in slurm.queue(), "the killed job left the queue", 60)
    assert slurm.job_states()[killed] == "CANCELLED"
    done_before_kill = finished()
    assert not (iteration / "ledger.json").exists(), "the kill came after iteration 3 ended"
    assert 1 <= len(done_before_kill) < 3

    resumed = _submitted(slurm.run("sbatch", "group.sh", cwd=jobs))
    slurm.wait_for_empty_queue()
    assert slurm.job_states()[resumed] == "COMPLETED"
    log = (jobs / "logs" / f"group_{resumed}.out").read_text()
    for k in (1, 2):
        assert f"template iter-00{k}: outputs are current, skipped" in log
    third = log.split("template iter-003: running")[1].split("template iter-004: running")[0]
    for label in ("sub-01", "sub-02", "sub-03"):
        expected = ("outputs are current, skipped" if label in done_before_kill
                    else "running")
        assert f"{label}_image.nii.gz: registration: {expected}" in third, (label, third)
    assert_same_outputs(cohort.local, scratch / "out")
