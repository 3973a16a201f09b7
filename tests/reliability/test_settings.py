"""Every documented spelling of a setting works, wrong ones are errors naming the culprit, and
unwritable output folders give exit 73 (issue 22, item 5). Real CLI subprocesses on a tiny
dataset; about 40 s."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_bids


def _app(*args: str | Path, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPINAL_BIDSAPP_")
               or k in ("SPINAL_BIDSAPP_TEST_DATA", "SPINAL_BIDSAPP_CACHE")}
    return subprocess.run([sys.executable, "-m", "spinal_bidsapp", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=300,
                          env={**environ, **(env or {})})


def _error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("spinal_bidsapp: error")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr
    return lines[0]


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return make_bids(tmp_path / "bids", {"10": ["T2w"]})


def _run(bids: Path, *extra: str, env: dict[str, str] | None = None
         ) -> subprocess.CompletedProcess[str]:
    return _app(bids, bids.parent / "out", "participant", "--skip-bids-validation", *extra,
                env=env)


def test_numeric_participant_label_from_environment_and_config_file(bids: Path) -> None:
    done = _run(bids, env={"SPINAL_BIDSAPP_PARTICIPANT_LABEL": "10"})
    assert done.returncode == 0, done.stderr[-2000:]
    config = bids.parent / "config.json"
    config.write_text(json.dumps({"participant_label": 10}))
    done = _run(bids, "--config-file", str(config))
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("variable, value, code, fragment", [
    ("SPINAL_BIDSAPP_MIN_CORD_COVERAGE", "100", 66, "less than --min-cord-coverage"),
    ("SPINAL_BIDSAPP_MIN_CORD_COVERAGE_MM", "100", 66, "less than --min-cord-coverage"),
    ("SPINAL_BIDSAPP_TEMPLATE_RESOLUTION", "9", 64,
     "template_resolution_mm [from SPINAL_BIDSAPP_TEMPLATE_RESOLUTION]"),
    ("SPINAL_BIDSAPP_MIN_CORD_COVRAGE", "100", 64,
     "SPINAL_BIDSAPP_MIN_CORD_COVRAGE (did you mean SPINAL_BIDSAPP_MIN_CORD_COVERAGE?)"),
    ("SPINAL_BIDSAPP_NPROCS", "zero", 64, "nprocs [from SPINAL_BIDSAPP_NPROCS]"),
])
def test_environment_variables_by_option_name(variable: str, value: str, code: int,
                                              fragment: str, bids: Path) -> None:
    done = _run(bids, env={variable: value})
    assert done.returncode == code, done.stderr[-2000:]
    assert fragment in _error(done.stderr)


def test_bids_filter_file_from_environment(bids: Path) -> None:
    filters = bids.parent / "filters.json"
    filters.write_text(json.dumps({"T2w": {"acquisition": "nomatch"}}))
    done = _run(bids, env={"SPINAL_BIDSAPP_BIDS_FILTER_FILE": str(filters)})
    assert done.returncode == 18, done.stderr[-2000:]  # the filter excludes the only image


@pytest.mark.parametrize("content, code, fragment", [
    ({"template_resolution": 1.0, "min_cord_coverage": 100}, 66, "less than --min-cord-coverage"),
    ({"no_symmetric": True, "template_resolution": 9}, 64, "template_resolution_mm [from config"),
    ({"template_resoluton": 1.0}, 64, "did you mean 'template_resolution'?"),
])
def test_config_file_takes_long_option_names(content: dict, code: int, fragment: str,
                                             bids: Path) -> None:
    config = bids.parent / "config.json"
    config.write_text(json.dumps(content))
    done = _run(bids, "--config-file", str(config))
    assert done.returncode == code, done.stderr[-2000:]
    assert fragment in _error(done.stderr)


def test_yaml_config_file_is_named_as_such(bids: Path) -> None:
    config = bids.parent / "config.yaml"
    config.write_text("nprocs: 2\n")
    done = _run(bids, "--config-file", str(config))
    assert done.returncode == 64
    assert "YAML is not supported" in _error(done.stderr)


@pytest.mark.parametrize("value, code, fragment", [
    ("labels=/nonexistent", 66, "labels folder not found: /nonexistent"),
    ("foo=/tmp", 64, "unknown derivative name 'foo'"),
])
def test_derivative_folders_are_checked(value: str, code: int, fragment: str,
                                        bids: Path) -> None:
    done = _run(bids, "-d", value)
    assert done.returncode == code, done.stderr[-2000:]
    assert fragment in _error(done.stderr)


@contextlib.contextmanager
def _unwritable(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files: mode 555, or for root (who ignores modes) the immutable
    attribute (``chattr +i``; skipped where the file system or the container refuses it)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("root ignores permission bits and chattr +i is not permitted here")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


@pytest.mark.parametrize("folder", ["sub-10/anat", "logs"])
def test_unwritable_existing_output_folder_gives_exit_73(folder: str, bids: Path) -> None:
    out = bids.parent / "out"
    (out / folder).mkdir(parents=True)
    with _unwritable(out / folder):
        done = _app(bids, out, "participant", "--skip-bids-validation")
    assert done.returncode == 73, done.stderr[-2000:]
    assert folder in _error(done.stderr)
