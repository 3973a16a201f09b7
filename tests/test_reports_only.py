"""--reports-only redraws the reports from existing outputs and computes nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from spinal_bidsapp.cli.main import main
from tests.conftest import latest_log


def test_reports_only_redraws_the_report(tiny_bids: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    base = [str(tiny_bids), str(out), "participant", "--participant-label", "01",
            "--skip-bids-validation"]
    assert main(base) == 0
    page = out / "sub-01.html"
    page.unlink()
    assert main([*base, "--reports-only"]) == 0
    assert page.is_file()
    log = latest_log(out, "participant")
    assert "sub-01: report: running" in log
    assert "standardize: running" not in log and "centerline: running" not in log


def test_reports_only_without_outputs_says_what_to_do(tiny_bids: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    code = main([str(tiny_bids), str(tmp_path / "out"), "participant", "--participant-label",
                 "01", "--skip-bids-validation", "--reports-only"])
    assert code == 66
    assert "run without --reports-only first" in capsys.readouterr().err
