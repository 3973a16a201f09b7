"""The participant level end to end on the real multi-subject dataset."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from spinal_bidsapp.bids.validate import find_validator
from spinal_bidsapp.cli.main import main
from tests.conftest import latest_log

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory, bids_real: Path,
             pam50_dir: Path) -> tuple[Path, int, float]:
    out = tmp_path_factory.mktemp("real") / "out"
    start = time.perf_counter()
    code = main([str(bids_real), str(out), "participant", "--template-dir", str(pam50_dir),
                 "--nprocs", "2"])
    return out, code, time.perf_counter() - start


def test_unlabelled_subjects_are_segmented_and_short_cords_fail_alone(
        real_run: tuple[Path, int, float]) -> None:
    out, code, _ = real_run
    assert code == 1
    log = next((out / "logs").glob("participant_*.log")).read_text()
    assert "sub-unf01 failed: sub-unf01_T2w.nii.gz: the cord covers" in log
    for done in ("errsm30", "les01", "ms01", "lumbar01"):
        assert (out / f"sub-{done}" / "anat" / f"sub-{done}_label-SC_mask.nii.gz").is_file()
        assert (out / f"sub-{done}.html").is_file()
    for auto in ("ms01", "lumbar01"):
        sidecar = json.loads((out / f"sub-{auto}" / "anat" / f"sub-{auto}_label-SC_mask.json")
                             .read_text())
        assert "builtin" in sidecar["Method"] and 0.0 <= sidecar["Confidence"] <= 1.0


def test_registration_to_pam50_meets_the_bar(real_run: tuple[Path, int, float]) -> None:
    out = real_run[0]
    metrics = json.loads(next((out / "work" / "sub-errsm30" / "register").glob("*.json"))
                         .read_text())
    assert metrics["cord_dice_in_template"] >= 0.85
    for errors in metrics["disc_error_mm"].values():
        assert errors["to_template"] <= 1.0 and errors["to_anat"] <= 1.0
    anat = out / "sub-errsm30" / "anat"
    assert (anat / "sub-errsm30_from-T2w_to-PAM50_mode-image_xfm.nii.gz").is_file()
    assert (anat / "sub-errsm30_from-PAM50_to-T2w_mode-image_xfm.nii.gz").is_file()


def test_subject_without_manual_discs_gets_builtin_discs_flagged(
        real_run: tuple[Path, int, float]) -> None:
    anat = real_run[0] / "sub-les01" / "anat"
    morph = json.loads((anat / "sub-les01_desc-cord_morphometrics.json").read_text())
    assert morph["quality"]["cord_mask"]["source"] == "manual"
    discs = morph["quality"]["discs"]
    assert discs["source"] == "builtin" and discs["low_confidence"] == (
        discs["confidence"] < discs["threshold"])
    assert morph["csa_mean_mm2"] > 20


def test_per_level_csa_of_errsm30(real_run: tuple[Path, int, float]) -> None:
    anat = real_run[0] / "sub-errsm30" / "anat"
    morph = json.loads((anat / "sub-errsm30_desc-cord_morphometrics.json").read_text())
    assert [level["name"] for level in morph["levels"]] == ["C4", "C5"]  # between discs 4-6
    for level in morph["levels"]:
        assert 50 < level["csa_mean_mm2"] < 110


def test_csa_in_pam50_dimensions_of_errsm30(real_run: tuple[Path, int, float]) -> None:
    anat = real_run[0] / "sub-errsm30" / "anat"
    native = json.loads((anat / "sub-errsm30_desc-cord_morphometrics.json").read_text())
    summary = json.loads((anat / "sub-errsm30_space-PAM50_desc-cord_morphometrics.json")
                         .read_text())
    assert summary["method"].startswith("builtin")
    # levels as SCT derives them from discs 4-6: C3 above disc 4, C6 below disc 6 (partial)
    assert [(e["name"], e["partial"]) for e in summary["levels"]] == [
        ("C3", True), ("C4", False), ("C5", False), ("C6", True)]
    for level in native["levels"]:  # a whole level keeps its mean CSA when stretched
        stretched = next(e for e in summary["levels"] if e["name"] == level["name"])
        assert stretched["csa_mean_mm2"] == pytest.approx(level["csa_mean_mm2"], rel=0.05)
    assert summary["normative"] is None
    page = (real_run[0] / "sub-errsm30.html").read_text()
    assert "CSA C4, PAM50 dimensions" in page and "no rootlet segmentation" in page


def test_outputs_are_a_valid_derivative_dataset(real_run: tuple[Path, int, float]) -> None:
    out = real_run[0]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    proc = subprocess.run([str(find_validator()), str(out), "--format", "json"],
                          capture_output=True, text=True, check=False)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []


def test_rerun_reuses_every_step(real_run: tuple[Path, int, float], bids_real: Path,
                                 pam50_dir: Path) -> None:
    out, _, first = real_run
    start = time.perf_counter()
    code = main([str(bids_real), str(out), "participant", "--template-dir", str(pam50_dir),
                 "--participant-label", "errsm30", "--skip-bids-validation"])
    again = time.perf_counter() - start
    assert code == 0
    log = latest_log(out, "participant")
    assert "sub-errsm30: register: outputs are current, skipped" in log
    assert "register: running" not in log
    assert again < first


def test_coverage_threshold_is_configurable(bids_real: Path, tmp_path: Path) -> None:
    code = main([str(bids_real), str(tmp_path / "out"), "participant", "--participant-label",
                 "unf01", "--min-cord-coverage", "10", "--skip-bids-validation"])
    assert code == 0
    code = main([str(bids_real), str(tmp_path / "out2"), "participant", "--participant-label",
                 "unf01", "--skip-bids-validation"])
    assert code == 66
