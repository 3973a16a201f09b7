"""Exit codes and messages of the command line (BIDS Apps execution spec)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from spinal_bidsapp import __version__
from spinal_bidsapp.cli.main import main


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_bids_app_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--participant-label", "--skip-bids-validation", "--engine", "--config-file",
                 "--nprocs", "--omp-nthreads", "--work-dir", "--first-disc"):
        assert flag in text


def test_unknown_analysis_level_exits_17(tiny_bids: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tiny_bids), str(tmp_path / "out"), "subject"], capsys)
    assert code == 17
    assert "unknown analysis level 'subject'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [[], ["--nprocs", "two"], ["--engine", "fsl"],
                                  ["--no-such-flag"]])
def test_usage_errors_exit_64_with_one_line(argv: list[str], tiny_bids: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = [str(tiny_bids), str(tmp_path / "out"), "participant"] if argv else []
    code, err = _run(base + argv, capsys)
    assert code == 64
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_bids_dir_exits_66(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"], capsys)
    assert code == 66
    assert str(tmp_path / "nope") in err


def test_unknown_participant_exits_18(tiny_bids: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tiny_bids), str(tmp_path / "out"), "participant",
                      "--participant-label", "99", "--skip-bids-validation"], capsys)
    assert code == 18
    assert "sub-99" in err and "available: sub-01" in err


def test_label_with_path_characters_exits_64(tiny_bids: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tiny_bids), str(tmp_path / "out"), "participant",
                      "--participant-label", "sub-01/../../etc"], capsys)
    assert code == 64
    assert "invalid label" in err
    assert not (tmp_path / "etc").exists()


def test_unwritable_output_exits_73(tiny_bids: Path, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = _run([str(tiny_bids), str(blocker / "out"), "participant",
                      "--skip-bids-validation"], capsys)
    assert code == 73
    assert "cannot create output folder" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_output_exits_73(tiny_bids: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o500)
    code, _ = _run([str(tiny_bids), str(out), "participant", "--skip-bids-validation"], capsys)
    assert code == 73


def test_invalid_dataset_exits_16(tiny_bids: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tiny_bids / "dataset_description.json").write_text(json.dumps({"Name": "no version"}))
    code, err = _run([str(tiny_bids), str(tmp_path / "out"), "participant"], capsys)
    assert code == 16
    assert "failed BIDS validation" in err


def test_verbose_shows_traceback(tiny_bids: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tiny_bids), str(tmp_path / "out"), "participant",
                      "--participant-label", "99", "--skip-bids-validation", "-v"], capsys)
    assert code == 18
    assert "Traceback" in err


def test_module_entry_point_runs(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "spinal_bidsapp", "--version"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_subject_without_labels_fails_alone(tiny_bids: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    labels = tiny_bids / "derivatives" / "labels" / "sub-01" / "anat"
    (labels / "sub-01_T2w_label-SC_mask.nii.gz").unlink()
    out = tmp_path / "out"
    code, err = _run([str(tiny_bids), str(out), "participant", "--skip-bids-validation",
                      "--participant-label", "01", "02", "--nprocs", "1"], capsys)
    assert code == 1
    assert "sub-01" in err or "sub-01" in (out / "logs").joinpath(
        next(p.name for p in (out / "logs").glob("participant_*.log"))).read_text()
    assert (out / "sub-02" / "anat" / "sub-02_desc-preproc_T2w.nii.gz").is_file()
    assert not list((out / "sub-01").glob("anat/*_mask.nii.gz"))
