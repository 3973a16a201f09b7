"""The one resume runner: independent steps, chained stages, a folder an action resumes from.

The ledger layouts are written out literally here: they are the on-disk format of existing work
folders (written before the runners were merged), which must keep resuming.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from spinal_bidsapp.errors import SpinalBidsAppError
from spinal_bidsapp.runtime.files import sha256_file
from spinal_bidsapp.runtime.ledger import (
    LEDGER_NAME,
    Step,
    Written,
    params_digest,
    run_step,
    run_steps,
)


class Calls:
    """Counts the actions that really ran."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def copy(self, name: str, src: Path, dst: Path, suffix: str = "") -> None:
        self.names.append(name)
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text(src.read_text() + suffix)


def _independent(calls: Calls, tmp_path: Path, *, params: dict | None = None) -> bool:
    src, dst = tmp_path / "in.txt", tmp_path / "out" / "out.txt"
    record = run_step("copy", lambda: calls.copy("copy", src, dst), step_dir=tmp_path / "work",
                      inputs=[src], params=params or {"n": 1}, outputs=[dst], label="sub-01")
    return record.skipped


def test_independent_ledger_has_the_existing_format(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a")
    _independent(Calls(), tmp_path)
    ledger = json.loads((tmp_path / "work" / LEDGER_NAME).read_text())
    src, dst = tmp_path / "in.txt", tmp_path / "out" / "out.txt"
    assert ledger == {"step": "copy", "params": params_digest({"n": 1}),
                      "inputs": {str(src): sha256_file(src)},
                      "outputs": {str(dst): sha256_file(dst)}}
    assert list(ledger) == ["step", "params", "inputs", "outputs"]


def test_independent_step_reruns_only_when_something_changed(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture
                                                             ) -> None:
    calls = Calls()
    src, dst = tmp_path / "in.txt", tmp_path / "out" / "out.txt"
    src.write_text("a")
    assert not _independent(calls, tmp_path)
    with caplog.at_level("INFO"):
        assert _independent(calls, tmp_path)
    assert "sub-01: copy: outputs are current, skipped" in caplog.text
    src.write_text("b")  # a changed input
    assert not _independent(calls, tmp_path)
    assert not _independent(calls, tmp_path, params={"n": 2})  # a changed parameter
    dst.write_text("edited by hand")
    assert not _independent(calls, tmp_path, params={"n": 2})
    assert dst.read_text() == "b"
    assert calls.names == ["copy"] * 4


def test_a_ledger_written_by_the_earlier_runner_is_current(tmp_path: Path) -> None:
    src, dst = tmp_path / "in.txt", tmp_path / "out" / "out.txt"
    src.write_text("a")
    dst.parent.mkdir()
    dst.write_text("a")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / LEDGER_NAME).write_text(json.dumps(
        {"step": "copy", "params": params_digest({"n": 1}),
         "inputs": {str(src): sha256_file(src)}, "outputs": {str(dst): sha256_file(dst)}}))
    calls = Calls()
    assert _independent(calls, tmp_path)
    assert calls.names == []


def test_a_step_that_does_not_write_its_output_fails(tmp_path: Path) -> None:
    with pytest.raises(SpinalBidsAppError, match="did not produce"):
        run_step("nothing", lambda: None, step_dir=tmp_path, inputs=[], params={},
                 outputs=[tmp_path / "never.txt"])
    assert not (tmp_path / LEDGER_NAME).exists()


def _chain(calls: Calls, work: Path, key: str) -> list[bool]:
    """inputs -> a (state: a_state) -> b (reads a_state) -> c."""
    (work / "source.txt").parent.mkdir(parents=True, exist_ok=True)

    def stage(name: str, previous: str) -> Written:
        calls.copy(name, work / previous, work / name / "out.txt", suffix=name)
        state = work / name / "state.txt"
        state.write_text(f"state of {name}")
        if name == "b":
            assert (work / "a" / "state.txt").is_file(), "b needs a's state"
        return Written(products=[work / name / "out.txt"], state=[state])

    steps = [Step(name="a", action=lambda: stage("a", "source.txt"), step_dir=work / "a"),
             Step(name="b", action=lambda: stage("b", "a/out.txt"), step_dir=work / "b"),
             Step(name="c", action=lambda: stage("c", "b/out.txt"), step_dir=work / "c")]
    records = run_steps(steps, chain_key=key, root=work, needs_state=lambda i: i == 1,
                        prefix="template ")
    return [r.skipped for r in records]


def test_chained_ledger_has_the_existing_format(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "source.txt").write_text("s")
    _chain(Calls(), work, "k0")
    a = json.loads((work / "a" / LEDGER_NAME).read_text())
    assert a == {"key": "k0", "products": {"a/out.txt": sha256_file(work / "a" / "out.txt")},
                 "state": {"a/state.txt": sha256_file(work / "a" / "state.txt")}}
    b = json.loads((work / "b" / LEDGER_NAME).read_text())
    assert b["key"] == params_digest(["k0", a])
    assert list(b) == ["key", "products", "state"]


def test_chain_skips_the_matching_stages_and_steps_back_for_missing_state(tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    (work / "source.txt").write_text("s")
    calls = Calls()
    assert _chain(calls, work, "k0") == [False, False, False]
    assert _chain(calls, work, "k0") == [True, True, True]
    (work / "c" / "out.txt").unlink()  # the last stage's product: only c reruns
    assert _chain(calls, work, "k0") == [True, True, False]
    (work / "b" / "out.txt").write_text("edited")  # b reruns, and c after it
    (work / "a" / "state.txt").unlink()  # ... but b needs a's state: a reruns too
    assert _chain(calls, work, "k0") == [False, False, False]
    assert _chain(calls, work, "k1") == [False, False, False]  # another first key
    assert calls.names == ["a", "b", "c", "c", "a", "b", "c", "a", "b", "c"]
    assert (work / "c" / "out.txt").read_text() == "sabc"


_KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from spinal_bidsapp.runtime.ledger import run_step

    work, version = Path(sys.argv[1]), sys.argv[2]
    partial = work / "partial"

    def action():
        partial.mkdir(exist_ok=True)
        done = sorted(p.name for p in partial.iterdir())
        for name in ("one", "two"):
            if name not in done:
                (partial / name).write_text(version)
                if name == "one" and sys.argv[3] == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
        (work / "final.txt").write_text(" ".join((partial / n).read_text()
                                                  for n in ("one", "two")))

    run_step("ipl", action, step_dir=work, inputs=[], params={"version": version},
             outputs=[work / "final.txt"], resumes_in=partial)
""")


def _run_resumable(work: Path, version: str, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _KILLED_RUN, str(work), version, mode],
                          capture_output=True, text=True, check=False)


def test_a_killed_action_resumes_its_folder_only_when_made_from_the_same_things(
        tmp_path: Path) -> None:
    same, other = tmp_path / "same", tmp_path / "other"
    for work in (same, other):
        work.mkdir()
        assert _run_resumable(work, "v1", "kill").returncode == -9
        assert (work / "partial" / "one").read_text() == "v1"
    assert _run_resumable(same, "v1", "finish").returncode == 0
    assert (same / "final.txt").read_text() == "v1 v1"  # resumed: "one" kept
    assert _run_resumable(other, "v2", "finish").returncode == 0
    assert (other / "final.txt").read_text() == "v2 v2"  # cleared: made from v1


def test_a_folder_nothing_says_anything_about_is_cleared(tmp_path: Path) -> None:
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "one").write_text("unknown origin")
    assert _run_resumable(tmp_path, "v1", "finish").returncode == 0
    assert (tmp_path / "final.txt").read_text() == "v1 v1"
