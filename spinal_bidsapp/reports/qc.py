"""Dataset QC index: one JSON record per subject, an index rebuilt from them, ``qc_fail.yml``.

Layout under the output directory::

    qc/records/sub-<label>[_ses-<label>].json   one record per report, written atomically
    qc/index.html                               reviewer page, rebuilt from all records
    qc/.lock                                    held while the index is rebuilt

Participant jobs running in parallel each write only their own record, then rebuild the index
under the lock, so no job loses another's entry; the index can be rebuilt at any time from the
records (:func:`rebuild_qc_index`).

``qc_fail.yml`` follows the ``-config`` file of SCT's manual-correction tool
(``spinalcordtoolbox/manual-correction``, ``manual_correction.py``): a mapping from task keys to
lists of BIDS *image* file names, e.g.::

    FILES_SEG:
    - sub-01_T2w.nii.gz
    FILES_LABEL:
    - sub-02_ses-pre_T2w.nii.gz

The tool keeps only the base names, finds each image as ``<path-img>/sub-X/[ses-Y/]anat/<name>``
and its label by adding a suffix (``-suffix-files-seg _label-SC_mask``, ``-suffix-files-label
_labels-disc`` ...). Failed steps with no manual-correction task (registration, metrics) are listed
as YAML comments, so the file stays valid input for the tool. Nothing failed gives ``{}`` (an
empty file would load as ``None``, which the tool cannot iterate). Older releases of the tool read
the session from the name with the regex ``ses-..`` and so only handle two-character session
labels; current ones take the whole label.

Reviewer marks live in the browser (``localStorage``, keyed by the index's path); the reviewer
page can preset them from its URL fragment: ``index.html#fail=sub-01:seg,sub-02:discs&pass=...``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

from filelock import FileLock, Timeout
from pydantic import ValidationError

from spinal_bidsapp.errors import TemporaryFailure
from spinal_bidsapp.reports.html import (
    relative_link,
    render_qc_index,
    render_subject_report,
    section_anchors,
)
from spinal_bidsapp.reports.model import QcRecord, QcStep, ReportSection, SubjectReport
from spinal_bidsapp.runtime.files import write_text

logger = logging.getLogger(__name__)

QC_DIR = "qc"
LOCK_TIMEOUT_S = 600.0

QC_FAIL_KEYS: dict[str, str] = {
    "seg": "FILES_SEG",
    "discs": "FILES_LABEL",
    "pmj": "FILES_PMJ",
    "centerline": "FILES_CENTERLINE",
}
"""Report step -> manual-correction task key, in the tool's own key order."""


def qc_record(report: SubjectReport, *, out_dir: Path, page: Path) -> QcRecord:
    """Summary of ``report`` for the index: one entry per step, paths relative to ``out_dir``."""
    by_step: dict[str, list[tuple[str, ReportSection]]] = {}
    for anchor, section in zip(section_anchors(report.sections), report.sections, strict=True):
        by_step.setdefault(section.step, []).append((anchor, section))
    steps = []
    for step, items in by_step.items():
        figures = [relative_link(figure, out_dir) for _, section in items
                   for figure in (section.figure, section.hover_figure) if figure is not None]
        sources = [section.source.name for _, section in items if section.source is not None]
        steps.append(QcStep(step=step, title=items[0][1].title, figures=tuple(figures),
                            anchor=items[0][0], source=sources[0] if sources else None))
    return QcRecord(
        key=report.key, subject=report.subject.removeprefix("sub-"),
        session=report.session.removeprefix("ses-") if report.session else None,
        report=relative_link(page, out_dir), steps=tuple(steps),
        warnings=len(report.warnings), errors=len(report.errors),
        version=report.provenance.version, engine=report.provenance.engine,
        generated=report.provenance.generated,
    )


def record_path(out_dir: Path, key: str) -> Path:
    return Path(out_dir) / QC_DIR / "records" / f"{key}.json"


def write_qc_record(record: QcRecord, out_dir: Path) -> Path:
    """Write the record atomically to ``<out>/qc/records/<key>.json`` (no lock needed)."""
    path = record_path(out_dir, record.key)
    write_text(path, record.model_dump_json(indent=2) + "\n")
    return path


def read_qc_records(out_dir: Path) -> list[QcRecord]:
    """All readable records, sorted by key; unreadable ones are skipped with a warning."""
    records = []
    for path in sorted((Path(out_dir) / QC_DIR / "records").glob("sub-*.json")):
        try:
            records.append(QcRecord.model_validate_json(path.read_text(encoding="utf-8")))
        except (OSError, ValidationError) as exc:
            logger.warning("skipping unreadable QC record %s: %s", path, exc)
    return sorted(records, key=lambda r: r.key)


def rebuild_qc_index(out_dir: Path, *, timeout_s: float = LOCK_TIMEOUT_S) -> Path:
    """Regenerate ``<out>/qc/index.html`` from every record, holding ``<out>/qc/.lock``.

    Raises
    ------
    TemporaryFailure
        Another process held the lock for longer than ``timeout_s``.
    """
    qc_dir = Path(out_dir) / QC_DIR
    qc_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(qc_dir / ".lock"), timeout=timeout_s):
            return render_qc_index(read_qc_records(out_dir), qc_dir / "index.html",
                                   out_dir=Path(out_dir), fail_keys=QC_FAIL_KEYS)
    except Timeout as exc:
        raise TemporaryFailure(
            f"QC index lock {qc_dir / '.lock'} busy for {timeout_s:g} s; rerun later or remove "
            "the lock file if no other job is running"
        ) from exc


def publish_subject_report(report: SubjectReport, *, out_dir: Path, page: Path) -> Path:
    """Render the subject page, write its QC record and rebuild the index; returns the page."""
    render_subject_report(report, page, index=Path(out_dir) / QC_DIR / "index.html")
    write_qc_record(qc_record(report, out_dir=out_dir, page=page), out_dir)
    rebuild_qc_index(out_dir)
    return Path(page)


def build_qc_fail_yaml(records: Sequence[QcRecord], failures: Iterable[tuple[str, str]]) -> str:
    """``qc_fail.yml`` text for the failed ``(key, step)`` pairs (same output as the index page).

    >>> rec = QcRecord(key="sub-01", subject="01", session=None, report="sub-01.html",
    ...                steps=(QcStep(step="seg", title="Cord", figures=(), anchor="step-seg",
    ...                              source="sub-01_T2w.nii.gz"),),
    ...                warnings=0, errors=0, version="0", engine="builtin")
    >>> print(build_qc_fail_yaml([rec], [("sub-01", "seg")]), end="")
    FILES_SEG:
    - sub-01_T2w.nii.gz
    """
    failed = set(failures)
    files: dict[str, set[str]] = {key: set() for key in QC_FAIL_KEYS.values()}
    uncorrectable: set[str] = set()
    for record in records:
        for step in record.steps:
            if (record.key, step.step) not in failed:
                continue
            task = QC_FAIL_KEYS.get(step.step)
            if task is not None and step.source:
                files[task].add(step.source)
            else:
                uncorrectable.add(f"{record.key} {step.step}")
    lines = []
    for task, names in files.items():
        if names:
            lines.append(f"{task}:")
            lines.extend(f"- {name}" for name in sorted(names))
    if not lines:
        lines.append("{}")
    if uncorrectable:
        lines.append("# failed steps without a manual-correction task (rerun or exclude):")
        lines.extend(f"# - {entry}" for entry in sorted(uncorrectable))
    return "\n".join(lines) + "\n"
