"""Render QC pages from the report model with jinja2 (templates ship in ``reports/templates``).

Pages are self-contained: CSS and JavaScript are inline, images are referenced by relative path,
nothing is loaded from the network, and they work opened straight from disk (``file://``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2

from spinal_bidsapp.reports.model import QcRecord, ReportSection, SubjectReport
from spinal_bidsapp.runtime.files import write_text

logger = logging.getLogger(__name__)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("spinal_bidsapp.reports", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["metric"] = format_metric
    return env


def format_metric(value: float | int | str) -> str:
    """Metric cell text: floats to 4 significant digits, others unchanged.

    >>> format_metric(76.54321), format_metric(3), format_metric("C2-C5")
    ('76.54', '3', 'C2-C5')
    """
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def relative_link(target: Path, folder: Path) -> str:
    """URL of ``target`` relative to ``folder`` (POSIX separators).

    >>> relative_link(Path("/out/sub-01/figures/a.png"), Path("/out"))
    'sub-01/figures/a.png'
    >>> relative_link(Path("/out/sub-01.html"), Path("/out/qc"))
    '../sub-01.html'
    """
    return Path(os.path.relpath(Path(target).absolute(), Path(folder).absolute())).as_posix()


def section_anchors(sections: Sequence[ReportSection]) -> list[str]:
    """HTML ids of the sections: ``step-<step>`` for the first of a step, then ``-2``, ``-3``...

    >>> secs = [ReportSection(s, "t", Path("f.png")) for s in ("seg", "reg", "reg")]
    >>> section_anchors(secs)
    ['step-seg', 'step-reg', 'step-reg-2']
    """
    seen: dict[str, int] = {}
    anchors = []
    for section in sections:
        seen[section.step] = seen.get(section.step, 0) + 1
        n = seen[section.step]
        anchors.append(f"step-{section.step}" + (f"-{n}" if n > 1 else ""))
    return anchors


def _figure_context(figure: Path | None, page: Path) -> dict[str, Any] | None:
    if figure is None:
        return None
    exists = Path(figure).is_file()
    if not exists:
        logger.warning("QC figure missing: %s (the report shows a placeholder)", figure)
    return {"href": relative_link(figure, page.parent), "exists": exists}


def render_subject_report(report: SubjectReport, page: Path, *,
                          index: Path | None = None, heading: str | None = None) -> Path:
    """Write the subject's HTML page to ``page`` (atomically) and return it.

    ``page`` is the report path owned by the caller, normally
    ``<out>/sub-<label>[_ses-<label>].html``; figures are linked relative to it. ``index``, if
    given, is the dataset QC index the page links back to. ``heading`` replaces the subject key
    as the page title (the group page uses the same layout).
    """
    page = Path(page)
    anchors = section_anchors(report.sections)
    sections = [
        {
            "anchor": anchor,
            "step": section.step,
            "title": section.title,
            "caption": section.caption,
            "figure": _figure_context(section.figure, page),
            "hover": _figure_context(section.hover_figure, page),
            "source": section.source.name if section.source else "",
        }
        for anchor, section in zip(anchors, report.sections, strict=True)
    ]
    html = _environment().get_template("subject.html.j2").render(
        report=report, key=heading or report.key, sections=sections,
        index_link=relative_link(index, page.parent) if index is not None else "",
    )
    write_text(page, html)
    logger.info("%s: QC report written to %s", heading or report.key, page)
    return page


def render_qc_index(records: Sequence[QcRecord], index: Path, *, out_dir: Path,
                    fail_keys: dict[str, str]) -> Path:
    """Write the dataset QC index (reviewer page) listing ``records``.

    The records and the step -> ``qc_fail.yml`` key table are embedded as JSON; the inline
    script builds the table, keeps pass/fail marks in ``localStorage`` and previews/downloads
    ``qc_fail.yml``. ``out_dir`` is the root the record paths are relative to.
    """
    index = Path(index)
    root = relative_link(Path(out_dir), index.parent)
    data = {
        "root": root,
        # a list, not an object: tojson sorts object keys and the task order matters
        "failKeys": [[step, task] for step, task in fail_keys.items()],
        "records": [record.model_dump(mode="json") for record in records],
    }
    html = _environment().get_template("index.html.j2").render(data=data, count=len(records))
    write_text(index, html)
    logger.info("QC index written to %s (%d reports)", index, len(records))
    return index
