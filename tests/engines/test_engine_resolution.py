"""Engine resolution with the search path arranged to include or exclude the tools.

The SCT and MINC "programs" created here are empty executables that are only looked up, never
run (except version reporters, which print a version string); they stand in for an installation
layout, not for any SCT or MINC result.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import stat
import sys
from pathlib import Path

import pytest

from spinal_bidsapp.engines import (
    minctracc_version,
    resolve_participant_engine,
    resolve_template_engine,
)
from spinal_bidsapp.engines.sct.install import REQUIRED_PROGRAMS, SctVersion
from spinal_bidsapp.errors import EngineUnavailable


def _program(folder: Path, name: str, output: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!{sys.executable}\nprint({output!r})\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _sct_tree(root: Path, *, version: str | None = "7.3",
              programs: tuple[str, ...] = REQUIRED_PROGRAMS) -> Path:
    for name in programs:
        _program(root / "bin", name)
    if version is not None:
        (root / "spinalcordtoolbox").mkdir(parents=True)
        (root / "spinalcordtoolbox" / "version.txt").write_text(version + "\n")
    return root


@pytest.fixture
def empty_path(tmp_path: Path) -> str:
    folder = tmp_path / "empty-bin"
    folder.mkdir()
    return str(folder)


def test_auto_without_sct_is_builtin(empty_path: str) -> None:
    choice = resolve_participant_engine("auto", sct_dir=None, search_path=empty_path)
    assert choice.name == "builtin" and choice.sct is None
    assert "sct_deepseg not found" in choice.reason


def test_auto_finds_sct_on_the_path_and_reads_its_version(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct")
    choice = resolve_participant_engine("auto", sct_dir=None, search_path=str(sct / "bin"))
    assert choice.name == "sct" and choice.version == "7.3"
    assert choice.sct is not None
    assert choice.sct.bin_dir == sct / "bin"
    assert choice.sct.version == SctVersion(7, 3)


def test_auto_uses_sct_dir_when_not_on_the_path(tmp_path: Path, empty_path: str) -> None:
    sct = _sct_tree(tmp_path / "sct", version="7.2")
    choice = resolve_participant_engine("auto", sct_dir=sct, search_path=empty_path)
    assert choice.name == "sct" and choice.version == "7.2"


def test_process_path_is_the_default_search_path(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sct = _sct_tree(tmp_path / "sct")
    monkeypatch.setenv("PATH", str(sct / "bin") + os.pathsep + os.environ.get("PATH", ""))
    assert resolve_participant_engine("auto", sct_dir=None).name == "sct"
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert resolve_participant_engine("auto", sct_dir=None).name == "builtin"


def test_builtin_request_ignores_an_installed_sct(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct")
    choice = resolve_participant_engine("builtin", sct_dir=sct, search_path=str(sct / "bin"))
    assert choice.name == "builtin" and choice.reason == "requested"


def test_requested_sct_when_missing_names_image_and_install(empty_path: str) -> None:
    with pytest.raises(EngineUnavailable) as excinfo:
        resolve_participant_engine("sct", sct_dir=None, search_path=empty_path)
    message = str(excinfo.value)
    assert "container image" in message and "install_sct" in message
    assert "--engine builtin" in message
    assert excinfo.value.exit_code == 64


def test_missing_sct_program_blocks_sct(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct", programs=("sct_deepseg", "sct_register_to_template"))
    with pytest.raises(EngineUnavailable, match="sct_label_vertebrae, sct_process_segmentation"):
        resolve_participant_engine("sct", sct_dir=sct, search_path=str(sct / "bin"))
    assert resolve_participant_engine("auto", sct_dir=sct,
                                      search_path=str(sct / "bin")).name == "builtin"


def test_too_old_sct_blocks_sct(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct", version="6.1")
    with pytest.raises(EngineUnavailable, match=r"older than 6\.2"):
        resolve_participant_engine("sct", sct_dir=sct, search_path=str(sct / "bin"))
    assert resolve_participant_engine("auto", sct_dir=sct,
                                      search_path=str(sct / "bin")).name == "builtin"


def test_version_from_sct_version_when_no_version_file(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct", version=None)
    _program(sct / "bin", "sct_version", "7.1")
    choice = resolve_participant_engine("sct", sct_dir=None, search_path=str(sct / "bin"))
    assert choice.version == "7.1"


def test_unparsable_sct_version_blocks_sct(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct", version=None)
    _program(sct / "bin", "sct_version", "git-master-3b3c5b22")
    with pytest.raises(EngineUnavailable, match="cannot tell which SCT release"):
        resolve_participant_engine("sct", sct_dir=None, search_path=str(sct / "bin"))


# ----------------------------------------------------------------------------- template engine


@pytest.fixture
def ipl_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "ipl"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()


@pytest.fixture
def minc_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "minc-bin"
    _program(folder, "minctracc", "minctracc 1.9.18")
    _program(folder, "nii2mnc")
    return folder


def test_template_auto_is_builtin_even_with_minc_installed(minc_bin: Path,
                                                          ipl_importable: None) -> None:
    """MINC builds the same template at many times the cost: auto never picks it."""
    choice = resolve_template_engine("auto", search_path=str(minc_bin))
    assert choice.name == "builtin"
    assert "MINC is installed" in choice.reason and "--template-engine minc" in choice.reason
    requested = resolve_template_engine("minc", search_path=str(minc_bin))
    assert requested.name == "minc" and requested.version == "minctracc 1.9.18"


def test_minctracc_version_exits_255_and_is_still_read(tmp_path: Path) -> None:
    """The real minctracc prints its version then exits 255."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "minctracc"
    script.write_text("#!/bin/sh\necho 'The program <minctracc> was built from:'\n"
                      "echo 'mni_autoreg 0.99.70'\nexit 255\n")
    script.chmod(0o755)
    assert minctracc_version(search_path=str(folder)) == "mni_autoreg 0.99.70"
    assert minctracc_version(search_path=str(tmp_path / "none")) == "unknown"


def test_template_auto_without_tools_is_builtin(empty_path: str, ipl_importable: None) -> None:
    choice = resolve_template_engine("auto", search_path=empty_path)
    assert choice.name == "builtin"
    assert "minctracc" in choice.reason and "nii2mnc" in choice.reason


def test_template_minc_without_nii2mnc_is_unavailable(minc_bin: Path,
                                                      ipl_importable: None) -> None:
    (minc_bin / "nii2mnc").unlink()
    with pytest.raises(EngineUnavailable, match="nii2mnc"):
        resolve_template_engine("minc", search_path=str(minc_bin))


def test_template_minc_without_ipl_is_unavailable(minc_bin: Path) -> None:
    if importlib.util.find_spec("ipl") is not None:
        pytest.skip("nist_mni_pipelines (ipl) is installed here")
    with pytest.raises(EngineUnavailable, match="ipl"):
        resolve_template_engine("minc", search_path=str(minc_bin))
    assert resolve_template_engine("auto", search_path=str(minc_bin)).name == "builtin"


def test_template_builtin_request(minc_bin: Path, ipl_importable: None) -> None:
    assert resolve_template_engine("builtin", search_path=str(minc_bin)).name == "builtin"


def test_sct_6_needs_the_legacy_cord_program(tmp_path: Path) -> None:
    sct = _sct_tree(tmp_path / "sct", version="6.5")
    with pytest.raises(EngineUnavailable, match="sct_deepseg_sc"):
        resolve_participant_engine("sct", sct_dir=sct, search_path=str(sct / "bin"))
    _program(sct / "bin", "sct_deepseg_sc")
    assert resolve_participant_engine("sct", sct_dir=sct,
                                      search_path=str(sct / "bin")).version == "6.5"


def test_version_file_follows_the_programs_found_not_a_stale_sct_dir(tmp_path: Path) -> None:
    stale = _sct_tree(tmp_path / "old-sct", version="6.1", programs=())
    current = _sct_tree(tmp_path / "sct", version="7.3")
    choice = resolve_participant_engine("sct", sct_dir=stale, search_path=str(current / "bin"))
    assert choice.version == "7.3"
