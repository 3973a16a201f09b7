"""Integration tier: the group level with the real MINC engine (minctracc, ipl under scoop).

One small demo cohort (3 subjects, 1.5 mm template grid 16 mm across) goes through the
participant level once (builtin engine), then three group runs in subprocesses with the
environment of the real tools (``real_tool_env("minc")``): the builtin template (the
reference), and the MINC template with ``--template-preset fast`` symmetric and
``--no-symmetric``. What ipl ran is read back from its own work folder (iterations written,
mirrored copies or not), not only from our record.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.engines.builtin.protocol import FAST_PROTOCOL
from spinal_bidsapp.synth import generate_demo_cohort
from tests.conftest import real_tool_env

pytestmark = [pytest.mark.minc, pytest.mark.slow]

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "8", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "2"]
"""An 11 x 11 x 75 grid: minctracc's cost grows with the field of view (16 mm across here)."""
FAST_STAGES = [{"level_mm": s.level_mm, "iterations": s.iterations} for s in FAST_PROTOCOL]


def _app(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spinal_bidsapp", *argv], env=env, text=True,
                          capture_output=True, timeout=1800, check=False)


@pytest.fixture(scope="module")
def minc_env() -> dict[str, str]:
    return {**real_tool_env("minc"), "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1",
            "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory, minc_env: dict[str, str]) -> Path:
    """Participant outputs of 3 demo subjects, and the builtin template of them (reference)."""
    root = tmp_path_factory.mktemp("minc-cohort")
    generate_demo_cohort(root, n_subjects=3, seed=3, straight_reference=False)
    bids, out = str(root / "bids"), str(root / "out")
    done = _app([bids, out, "participant", "--engine", "builtin", "--skip-bids-validation",
                 "--nprocs", "2"], minc_env)
    assert done.returncode == 0, done.stderr[-3000:]
    done = _app([bids, out, "group", *GROUP_ARGS, "--template-engine", "builtin",
                 "--template-name", "Builtin", "-w", str(root / "work-builtin")], minc_env)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _minc_group(cohort: Path, env: dict[str, str], name: str, *extra: str) -> Path:
    done = _app([str(cohort / "bids"), str(cohort / "out"), "group", *GROUP_ARGS,
                 "--template-engine", "minc", "--template-name", name,
                 "-w", str(cohort / f"work-{name}"), *extra], env)
    assert done.returncode == 0, done.stderr[-3000:]
    return cohort / "out" / f"tpl-{name}"


def _mask(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj) > 0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def test_minc_group_honours_the_options_and_publishes_a_real_cord(
        cohort: Path, minc_env: dict[str, str]) -> None:
    """Both runs in one test: under pytest-xdist a second test could land on another worker
    and build the cohort a second time."""
    for symmetric in (True, False):
        _check_minc_template(cohort, minc_env, symmetric=symmetric)


def _check_minc_template(cohort: Path, minc_env: dict[str, str], *, symmetric: bool) -> None:
    name = "MincSym" if symmetric else "MincAsym"
    tpl = _minc_group(cohort, minc_env, name, *([] if symmetric else ["--no-symmetric"]))
    protocol = json.loads((tpl / "template_description.json").read_text())["Protocol"]
    assert protocol["engine"] == "minc" and protocol["requested_engine"] == "minc"
    assert protocol["preset"] == "fast" and protocol["stages"] == FAST_STAGES
    assert protocol["symmetric"] is symmetric
    # ipl's own folder: exactly the fast preset's iterations ran, mirrored copies only if asked
    ipl = cohort / f"work-{name}" / "group" / "template" / "model_nl_all"
    n = sum(s.iterations for s in FAST_PROTOCOL)
    assert protocol["iterations"] == n
    assert sorted(int(p.name) for p in ipl.iterdir() if p.name.isdigit()) == list(
        range(1, n + 1))
    assert (ipl / f"avg.{n:03d}.mnc").is_file() and not (ipl / f"avg.{n + 1:03d}.mnc").exists()
    assert (ipl / "flip").is_dir() is symmetric
    # the real minctracc version, as the program reports it (it exits 255 after printing it)
    shown = subprocess.run(["minctracc", "-version"], env=minc_env, capture_output=True,
                           text=True, check=False)
    built_from = [line.strip() for line in (shown.stdout + shown.stderr).splitlines()
                  if line.strip()][-1]
    assert protocol["version"].startswith(built_from) and "unknown" not in protocol["version"]
    # a cord, not ipl's all-ones field of view: small, and where the builtin template has it
    prefix = f"tpl-{name}_res-01"
    cord = _mask(tpl / f"{prefix}_label-SC_mask.nii.gz")
    builtin = _mask(cohort / "out" / "tpl-Builtin" / "tpl-Builtin_res-01_label-SC_mask.nii.gz")
    assert 0.5 * builtin.mean() < cord.mean() < min(2 * builtin.mean(), 0.5)
    assert _dice(cord, builtin) > 0.8
    probability = np.asarray(nib.load(str(tpl / f"{prefix}_label-SC_probseg.nii.gz")).dataobj)
    assert probability.min() >= 0 and probability.max() <= 1
    if symmetric:
        np.testing.assert_allclose(probability, probability[::-1], atol=1e-5)
    levels = np.asarray(nib.load(str(tpl / f"{prefix}_desc-levels_dseg.nii.gz")).dataobj) > 0
    assert levels.any() and not (levels & ~cord).any()
    sct_cord = _mask(tpl / "sct" / "template" / f"{name}_cord.nii.gz")
    assert np.array_equal(sct_cord, cord)


def _process_tree(root: int) -> dict[int, str]:
    """Every descendant of ``root`` (pid -> command name), read from /proc."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        head, tail = text.rsplit(")", 1)
        fields = tail.split()
        if fields[0] in ("Z", "X"):
            continue
        pid = int(stat.parent.name)
        names[pid] = head.split("(", 1)[1]
        children.setdefault(int(fields[1]), []).append(pid)
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = names[child]
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_killing_the_app_kills_scoop_and_minctracc(cohort: Path, minc_env: dict[str, str],
                                                   tmp_path: Path) -> None:
    """Issue 22, item 2, with the real MINC engine: scoop runs in a session of its own, so a
    SIGKILL of the app's whole process group used to leave scoop and minctracc running for as
    long as the template took. Now the tool's watchdog takes its tree down with the app."""
    argv = [sys.executable, "-m", "spinal_bidsapp", str(cohort / "bids"),
            str(cohort / "out"), "group", *GROUP_ARGS, "--template-engine", "minc",
            "--template-name", "Killed", "-w", str(tmp_path / "work")]
    with open(tmp_path / "stderr.txt", "w") as stderr:
        app = subprocess.Popen(argv, env=minc_env, stdout=subprocess.DEVNULL, stderr=stderr,
                               start_new_session=True)
    tree: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 600
        while "minctracc" not in tree.values():
            assert app.poll() is None, (tmp_path / "stderr.txt").read_text()[-2000:]
            assert time.monotonic() < deadline, f"no minctracc within 600 s: {tree}"
            time.sleep(0.2)
            tree = _process_tree(app.pid)
        tree.update(_process_tree(app.pid))
        assert any("scoop" in name or "python" in name for name in tree.values()), tree
        os.killpg(app.pid, signal.SIGKILL)  # the app's whole group; scoop has its own session
        app.wait(timeout=30)
        deadline = time.monotonic() + 20
        while any(map(_alive, tree)) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = {pid: name for pid, name in tree.items() if _alive(pid)}
        assert left == {}, f"still running after the app was killed: {left}"
    finally:  # on failure, take down the groups the tree ran in (later children included)
        for pid in tree:
            try:
                group = os.getpgid(pid)
                if group != os.getpgrp():
                    os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass
