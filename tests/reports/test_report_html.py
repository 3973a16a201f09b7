"""Subject pages, QC records, the dataset index and qc_fail.yml (Python side)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from filelock import FileLock
from report_phantom import Phantom, publish_phantom_reports

from spinal_bidsapp.errors import TemporaryFailure
from spinal_bidsapp.reports import (
    Provenance,
    QcRecord,
    QcStep,
    ReportSection,
    SubjectReport,
    build_qc_fail_yaml,
    read_qc_records,
    rebuild_qc_index,
    subject_key,
)
from spinal_bidsapp.reports.html import render_subject_report


class _Links(HTMLParser):
    """Collects every resource reference of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.ids: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.refs.append((tag, str(values[name])))
        if values.get("id"):
            self.ids.append(str(values["id"]))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _index_data(index: Path) -> dict:
    match = re.search(r'<script type="application/json" id="qc-data">(.*?)</script>',
                      index.read_text(encoding="utf-8"), re.S)
    assert match, "index has no embedded data"
    return json.loads(match.group(1))


def test_subject_key_normalises_prefixes() -> None:
    assert subject_key("sub-01", None) == "sub-01"
    assert subject_key("01", "ses-2") == subject_key("sub-01", "2") == "sub-01_ses-2"
    for bad in (("sub-", None), ("0_1", None), ("01", "ses-a b")):
        with pytest.raises(ValueError, match="not a BIDS label"):
            subject_key(*bad)
    with pytest.raises(ValueError, match="step id"):
        ReportSection("Cord seg:1", "t", Path("f.png"))


def test_subject_page_references_only_existing_local_files(published: Path) -> None:
    for name in ("sub-01.html", "sub-02_ses-pre.html"):
        page = published / name
        links = _parse(page)
        files = [ref for _, ref in links.refs if not ref.startswith("#")]
        assert files, "page links no figure"
        for ref in files:
            assert "://" not in ref and not ref.startswith("/"), f"non-local reference {ref}"
            assert (page.parent / ref.split("#")[0]).is_file(), f"{name}: broken link {ref}"
        assert {"step-seg", "step-discs", "step-reg", "metrics", "issues"} <= set(links.ids)
        anchors = [ref[1:] for _, ref in links.refs if ref.startswith("#")]
        assert set(anchors) <= set(links.ids), "navigation points to a missing section"


def test_subject_page_has_metrics_issues_and_provenance(published: Path) -> None:
    text = (published / "sub-02_ses-pre.html").read_text(encoding="utf-8")
    assert "<h1>sub-02_ses-pre" in text
    assert "76.54" in text and "76.54321" not in text and "mm²" in text
    assert "disc C1/C2 not found" in text
    assert "registration: &lt;failed&gt; &amp; retried" in text, "messages must be escaped"
    assert "spinal_bidsapp 9.9.9" in text and "engine builtin 1.0" in text
    assert "run-123" in text
    assert 'class="frames"' in text, "hover figure must render as a flicker pair"
    assert "qc/index.html" in text
    assert "<link" not in text and "<script src" not in text and "http" not in text


def test_missing_figure_renders_a_placeholder(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    report = SubjectReport(
        subject="03", session=None, provenance=Provenance("1", "sct"),
        sections=(ReportSection("seg", "Cord", tmp_path / "sub-03" / "figures" / "gone.png"),))
    with caplog.at_level(logging.WARNING):
        page = render_subject_report(report, tmp_path / "sub-03.html")
    assert "figure missing: sub-03/figures/gone.png" in page.read_text(encoding="utf-8")
    assert "QC figure missing" in caplog.text


def test_records_are_one_json_per_subject(published: Path) -> None:
    paths = sorted(p.name for p in (published / "qc" / "records").iterdir())
    assert paths == ["sub-01.json", "sub-02_ses-pre.json"]
    records = read_qc_records(published)
    assert [r.key for r in records] == ["sub-01", "sub-02_ses-pre"]
    second = records[1]
    assert (second.subject, second.session) == ("02", "pre")
    assert [s.step for s in second.steps] == ["seg", "discs", "reg"]
    assert second.steps[2].figures == (
        "sub-02/figures/sub-02_ses-pre_desc-seg_T2w.png",
        "sub-02/figures/sub-02_ses-pre_desc-discs_T2w.png")
    assert second.steps[0].source == "sub-02_ses-pre_T2w.nii.gz"
    assert (second.warnings, second.errors) == (1, 1)
    for record in records:
        assert (published / record.report).is_file()
        for step in record.steps:
            assert all((published / figure).is_file() for figure in step.figures)


def test_index_embeds_every_record_with_working_links(published: Path) -> None:
    index = published / "qc" / "index.html"
    data = _index_data(index)
    assert data["root"] == ".."
    assert [r["key"] for r in data["records"]] == ["sub-01", "sub-02_ses-pre"]
    assert ["seg", "FILES_SEG"] in data["failKeys"]
    for record in data["records"]:
        assert (index.parent / data["root"] / record["report"]).is_file()
    text = index.read_text(encoding="utf-8")
    assert 'id="qc-fail-yml"' in text
    assert "<link" not in text and "<script src" not in text and "http" not in text


def test_unreadable_record_is_skipped(published: Path, tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    (out / "qc" / "records").mkdir(parents=True)
    for record in read_qc_records(published):
        (out / "qc" / "records" / f"{record.key}.json").write_text(record.model_dump_json())
    (out / "qc" / "records" / "sub-99.json").write_text("{not json")
    with caplog.at_level(logging.WARNING):
        index = rebuild_qc_index(out)
    assert [r["key"] for r in _index_data(index)["records"]] == ["sub-01", "sub-02_ses-pre"]
    assert "sub-99.json" in caplog.text


def test_busy_lock_is_a_temporary_failure(tmp_path: Path) -> None:
    (tmp_path / "qc").mkdir()
    with FileLock(str(tmp_path / "qc" / ".lock")), pytest.raises(TemporaryFailure) as info:
        rebuild_qc_index(tmp_path, timeout_s=0.2)
    assert info.value.exit_code == 75
    assert not (tmp_path / "qc" / "index.html").exists()


def _publish_one(args: tuple[Path, str]) -> str:
    from report_phantom import phantom_volumes

    out, subject = args
    image, mask, discs = phantom_volumes()
    publish_phantom_reports(image, mask, discs, out, ((subject, None),))
    return subject


def test_parallel_jobs_never_lose_a_subject(phantom: Phantom, tmp_path: Path) -> None:
    subjects = [f"{n:02d}" for n in range(1, 7)]
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        assert sorted(pool.map(_publish_one, [(tmp_path, s) for s in subjects])) == subjects
    keys = [r["key"] for r in _index_data(tmp_path / "qc" / "index.html")["records"]]
    assert keys == [f"sub-{s}" for s in subjects]
    leftovers = [p.name for p in tmp_path.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def _record(key: str, *steps: tuple[str, str | None]) -> QcRecord:
    subject, _, session = key.removeprefix("sub-").partition("_ses-")
    return QcRecord(
        key=key, subject=subject, session=session or None, report=f"{key}.html",
        steps=tuple(QcStep(step=step, title=step, figures=(), anchor=f"step-{step}",
                           source=source) for step, source in steps),
        warnings=0, errors=0, version="1", engine="builtin")


RECORDS = [
    _record("sub-01", ("seg", "sub-01_T2w.nii.gz"), ("discs", "sub-01_T2w.nii.gz"),
            ("reg", "sub-01_T2w.nii.gz")),
    _record("sub-02_ses-pre", ("seg", "sub-02_ses-pre_T2w.nii.gz"),
            ("centerline", "sub-02_ses-pre_T2w.nii.gz"), ("metrics", None)),
    _record("sub-10", ("seg", "sub-10_acq-sag_T2w.nii.gz"), ("discs", None)),
]


def test_qc_fail_yaml_matches_the_manual_correction_config_format() -> None:
    failures = [("sub-10", "seg"), ("sub-01", "discs"), ("sub-01", "seg"),
                ("sub-02_ses-pre", "centerline"), ("sub-02_ses-pre", "seg"), ("sub-99", "seg")]
    text = build_qc_fail_yaml(RECORDS, failures)
    assert text == (
        "FILES_SEG:\n"
        "- sub-01_T2w.nii.gz\n"
        "- sub-02_ses-pre_T2w.nii.gz\n"
        "- sub-10_acq-sag_T2w.nii.gz\n"
        "FILES_LABEL:\n"
        "- sub-01_T2w.nii.gz\n"
        "FILES_CENTERLINE:\n"
        "- sub-02_ses-pre_T2w.nii.gz\n"
    )
    parsed = yaml.safe_load(text)
    assert list(parsed) == ["FILES_SEG", "FILES_LABEL", "FILES_CENTERLINE"]
    assert all(isinstance(v, list) and v for v in parsed.values())


def test_qc_fail_yaml_lists_uncorrectable_failures_as_comments() -> None:
    text = build_qc_fail_yaml(RECORDS, [("sub-01", "reg"), ("sub-02_ses-pre", "metrics"),
                                        ("sub-10", "discs")])
    assert text.splitlines()[0] == "{}"
    assert "# - sub-01 reg" in text and "# - sub-02_ses-pre metrics" in text
    assert "# - sub-10 discs" in text, "a correctable step without source cannot be listed"
    assert yaml.safe_load(text) == {}


def test_qc_fail_yaml_without_failures_is_an_empty_mapping() -> None:
    assert build_qc_fail_yaml(RECORDS, []) == "{}\n"
    assert yaml.safe_load(build_qc_fail_yaml(RECORDS, [])) == {}
