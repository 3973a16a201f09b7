"""BIDS validation with the reference (Deno) validator, ``bids-validator-deno`` from PyPI."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from spinal_bidsapp.errors import InvalidDatasetError, UsageError

logger = logging.getLogger(__name__)

VALIDATOR = "bids-validator-deno"
TIMEOUT_S = 600


@dataclass(frozen=True)
class ValidationIssue:
    code: str
    severity: str
    location: str
    message: str


@dataclass(frozen=True)
class ValidationReport:
    issues: tuple[ValidationIssue, ...]

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    def summary(self, severity: str, *, limit: int = 5) -> str:
        """``CODE (n files: a, b, ...)`` for the most frequent codes of one severity."""
        chosen = [i for i in self.issues if i.severity == severity]
        counts = Counter(i.code for i in chosen)
        parts = []
        for code, n in counts.most_common(limit):
            where = sorted({i.location for i in chosen if i.code == code and i.location})[:2]
            parts.append(f"{code} ({n}x{': ' + ', '.join(where) if where else ''})")
        more = len(counts) - limit
        return "; ".join(parts) + (f"; and {more} more codes" if more > 0 else "")


def find_validator() -> Path:
    """The validator executable: next to this Python first (a venv), then on PATH."""
    beside = Path(sys.executable).with_name(VALIDATOR)
    if beside.is_file():
        return beside
    found = shutil.which(VALIDATOR)
    if found is None:
        raise UsageError(
            f"{VALIDATOR} not found; install it with 'pip install bids-validator-deno' or pass "
            "--skip-bids-validation"
        )
    return Path(found)


def parse_report(payload: dict) -> ValidationReport:
    """Read the validator's ``--format json`` output."""
    raw = payload.get("issues", {}).get("issues", [])
    issues = tuple(
        ValidationIssue(code=str(i.get("code", "")), severity=str(i.get("severity", "")),
                        location=str(i.get("location", "")),
                        message=str(i.get("issueMessage") or i.get("subCode") or ""))
        for i in raw
    )
    return ValidationReport(issues=issues)


def run_validator(dataset_dir: Path, *, work_dir: Path,
                  ignore_subjects: Sequence[str] = ()) -> ValidationReport:
    """Validate ``dataset_dir``; issues located in unselected subjects are dropped.

    (The validator's ``-c`` ignore list does not filter its JSON output in 3.0.x, so the filtering
    happens here.)
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    out_path = work_dir / "bids_validation.json"
    argv = [str(find_validator()), str(dataset_dir), "--format", "json", "-o", str(out_path),
            "--no-color"]
    logger.debug("Running %s", " ".join(argv))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise UsageError(
            f"{VALIDATOR} did not finish in {TIMEOUT_S} s on {dataset_dir}; rerun with "
            "--skip-bids-validation if the dataset is known to be valid"
        ) from exc
    if not out_path.is_file():
        raise UsageError(
            f"{VALIDATOR} failed on {dataset_dir} (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[:300]}"
        )
    report = parse_report(json.loads(out_path.read_text(encoding="utf-8")))
    skipped = tuple(f"/sub-{s}/" for s in ignore_subjects)
    return ValidationReport(tuple(i for i in report.issues if not i.location.startswith(skipped)))


def validate_dataset(dataset_dir: Path, *, work_dir: Path,
                     ignore_subjects: Sequence[str] = ()) -> ValidationReport:
    """Validate and raise ``InvalidDatasetError`` (exit 16) on errors; warnings are logged."""
    report = run_validator(dataset_dir, work_dir=work_dir, ignore_subjects=ignore_subjects)
    if report.warnings:
        logger.warning("BIDS validation: %d warnings: %s", len(report.warnings),
                       report.summary("warning"))
    if report.errors:
        raise InvalidDatasetError(
            f"{dataset_dir} failed BIDS validation with {len(report.errors)} error(s): "
            f"{report.summary('error')}; fix the dataset or pass --skip-bids-validation "
            f"(full report: {work_dir / 'bids_validation.json'})"
        )
    logger.info("BIDS validation passed (%d warnings)", len(report.warnings))
    return report
