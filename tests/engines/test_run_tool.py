"""run_tool and discover_tool against real subprocesses.

The scripts written here are stand-ins for *a* command-line tool, used only to exercise the runner
(exit codes, timeouts, logs, declared outputs); they never stand in for SCT results.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from spinal_bidsapp.config import THREAD_VARIABLES, thread_environment
from spinal_bidsapp.engines.tools import (
    ExternalToolError,
    discover_tool,
    find_tool,
    run_tool,
)
from spinal_bidsapp.errors import EngineUnavailable


def _script(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!{sys.executable}\nimport json, os, sys, time\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


_WATCHED = [*THREAD_VARIABLES, "EXTRA_VAR"]
WRITER = f"""
out = sys.argv[1:]
print("env", json.dumps({{k: os.environ.get(k) for k in {_WATCHED!r}}}))
print("argv", json.dumps(sys.argv[1:]))
print("to stderr", file=sys.stderr)
for path in out:
    if path.endswith(".nii.gz"):
        open(path, "w").write("x")
"""


def test_run_tool_caps_threads_logs_output_and_returns_declared_files(tmp_path: Path) -> None:
    tool = _script(tmp_path, "writer", WRITER)
    outputs = [tmp_path / "out" / "a.nii.gz", tmp_path / "out" / "b.nii.gz"]
    outputs[0].parent.mkdir()
    log = tmp_path / "logs" / "step.log"
    run = run_tool([tool, *outputs], log_file=log, expected_outputs=outputs, threads=3,
                   timeout_s=30, extra_env={"EXTRA_VAR": "yes"})
    assert run.outputs == tuple(outputs)
    assert all(p.is_file() for p in outputs)
    text = log.read_text()
    assert text.startswith(f"$ {tool} ")
    env = json.loads(next(ln for ln in text.splitlines() if ln.startswith("env "))[4:])
    assert env == {**thread_environment(3), "EXTRA_VAR": "yes"}
    assert "to stderr" in text
    assert run.duration_s >= 0


def test_arguments_reach_the_tool_verbatim_without_a_shell(tmp_path: Path) -> None:
    tool = _script(tmp_path, "writer", WRITER)
    tricky = "a b; touch $HOME/pwned && echo `id`"
    log = tmp_path / "step.log"
    run_tool([tool, tricky, "*"], log_file=log, expected_outputs=[], threads=1, timeout_s=30)
    argv_line = next(ln for ln in log.read_text().splitlines() if ln.startswith("argv "))
    assert json.loads(argv_line[5:]) == [tricky, "*"]


def test_nonzero_exit_names_tool_command_code_and_log(tmp_path: Path) -> None:
    tool = _script(tmp_path, "failing_tool",
                   'print("segmentation failed: empty image", file=sys.stderr)\nsys.exit(3)')
    log = tmp_path / "fail.log"
    with pytest.raises(ExternalToolError) as excinfo:
        run_tool([tool, "-i", "x.nii.gz"], log_file=log, expected_outputs=[], threads=1,
                 timeout_s=30)
    message = str(excinfo.value)
    assert "failing_tool failed with exit code 3" in message
    assert f"{tool} -i x.nii.gz" in message
    assert str(log) in message
    assert "segmentation failed: empty image" in message
    assert excinfo.value.exit_code == 1


def test_failure_message_shows_the_cause_not_the_closing_line(tmp_path: Path) -> None:
    # the shape of an SCT failure: coloured lines, a traceback, then a coloured closing line
    tool = _script(tmp_path, "coloured_tool", r"""
print("\x1b[0mloading the model\x1b[0m")
try:
    raise ValueError("no spinal cord in this image")
except ValueError:
    import traceback
    traceback.print_exc()
print("\x1b[0mTotal runtime; 0.113 seconds.\x1b[0m")
sys.exit(1)""")
    log = tmp_path / "coloured.log"
    with pytest.raises(ExternalToolError) as excinfo:
        run_tool([tool], log_file=log, expected_outputs=[], threads=1, timeout_s=30)
    message = str(excinfo.value)
    assert "loading the model | ValueError: no spinal cord in this image" in message
    assert "\x1b" not in message and "Total runtime" not in message and "File " not in message
    assert f"full log: {log}" in message and excinfo.value.log_file == log


def test_timeout_kills_the_tool_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    tool = _script(tmp_path, "slow_tool", f"""
import subprocess
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
open({str(pid_file)!r}, "w").write(str(child.pid))
time.sleep(60)
""")
    log = tmp_path / "slow.log"
    started = time.monotonic()
    with pytest.raises(ExternalToolError) as excinfo:
        run_tool([tool], log_file=log, expected_outputs=[], threads=1, timeout_s=2)
    assert time.monotonic() - started < 20
    assert "slow_tool did not finish within 2 s" in str(excinfo.value)
    assert str(log) in str(excinfo.value)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the tool's own child survived the timeout"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.is_file() and status.read_text().split()[2] == "Z")


def test_missing_declared_output_is_an_error(tmp_path: Path) -> None:
    tool = _script(tmp_path, "writer", WRITER)
    written = tmp_path / "written.nii.gz"
    forgotten = tmp_path / "forgotten.nii.gz"
    log = tmp_path / "partial.log"
    with pytest.raises(ExternalToolError) as excinfo:
        run_tool([tool, written], log_file=log, expected_outputs=[written, forgotten],
                 threads=1, timeout_s=30)
    message = str(excinfo.value)
    assert f"did not write {forgotten}" in message
    assert str(written) not in message.split("(command")[0]
    assert str(log) in message


def test_missing_program_is_engine_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailable, match="no_such_tool"):
        run_tool([tmp_path / "no_such_tool"], log_file=tmp_path / "x.log", expected_outputs=[],
                 threads=1, timeout_s=5)


def test_discover_tool_reports_path_and_version(tmp_path: Path) -> None:
    _script(tmp_path, "fake_version_tool", 'print("")\nprint("7.3")')
    info = discover_tool("fake_version_tool", version_args=[], search_path=str(tmp_path))
    assert info is not None
    assert info.path == tmp_path / "fake_version_tool"
    assert info.version == "7.3"
    assert find_tool("fake_version_tool", search_path=str(tmp_path / "elsewhere")) is None
    assert discover_tool("fake_version_tool", version_args=[],
                         search_path=str(tmp_path / "elsewhere")) is None


def test_discover_tool_without_a_version_says_unknown(tmp_path: Path) -> None:
    _script(tmp_path, "mute_tool", "sys.exit(2)")
    info = discover_tool("mute_tool", version_args=["--version"], search_path=str(tmp_path))
    assert info is not None and info.version == "unknown"
