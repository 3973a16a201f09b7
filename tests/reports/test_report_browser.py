"""The QC pages in a real headless Chromium: JavaScript runs, pages render, YAML matches Python.

Skipped when no ``chromium`` is on PATH (the Makefile installs it with ``apt-get install -y
chromium``).
"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.reports import build_qc_fail_yaml, read_qc_records

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")

WINDOW = (1200, 1600)


def _chromium(tmp_path: Path, url: str, *extra: str) -> str:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}",
            f"--window-size={WINDOW[0]},{WINDOW[1]}", *extra, url]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False)
    assert result.returncode == 0, f"chromium exit {result.returncode}: {result.stderr[-2000:]}"
    return result.stdout


def _screenshot(tmp_path: Path, url: str, name: str) -> np.ndarray:
    from matplotlib.image import imread

    png = tmp_path / name
    _chromium(tmp_path, url, f"--screenshot={png}")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(str(png))
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0])
    return pixels


def _assert_not_blank(pixels: np.ndarray) -> None:
    grey = pixels[..., :3].mean(axis=-1)
    assert grey.std() > 0.05, "screenshot is blank"
    assert (grey < 0.2).mean() > 0.01, "no dark pixels: figures did not load"


def test_index_rows_are_built_by_javascript(published: Path, tmp_path: Path) -> None:
    index = published / "qc" / "index.html"
    assert 'class="qc-row"' not in index.read_text(encoding="utf-8")
    dom = _chromium(tmp_path, index.as_uri(), "--dump-dom")
    for key in ("sub-01", "sub-02_ses-pre"):
        assert re.search(rf'<tr class="qc-row[^"]*" data-key="{key}">', dom), f"no row {key}"
    assert dom.count('class="card') == 6
    assert "0 passed, 0 failed, 6 unrated steps" in dom
    assert re.search(r'<pre id="qc-fail-yml">\{\}\s*</pre>', dom)


def test_hash_marks_give_the_same_yaml_as_python(published: Path, tmp_path: Path) -> None:
    failures = [("sub-01", "seg"), ("sub-02_ses-pre", "discs"), ("sub-02_ses-pre", "reg")]
    fragment = "fail=" + ",".join(f"{key}:{step}" for key, step in failures)
    fragment += "&pass=sub-01:discs"
    url = (published / "qc" / "index.html").as_uri() + "#" + fragment
    dom = _chromium(tmp_path, url, "--dump-dom")
    match = re.search(r'<pre id="qc-fail-yml">(.*?)</pre>', dom, re.S)
    assert match, "no qc_fail.yml preview in the DOM"
    from_js = html.unescape(match.group(1))
    expected = build_qc_fail_yaml(read_qc_records(published), failures)
    assert from_js == expected
    assert "FILES_SEG:\n- sub-01_T2w.nii.gz\n" in from_js
    assert "FILES_LABEL:\n- sub-02_ses-pre_T2w.nii.gz\n" in from_js
    assert "# - sub-02_ses-pre reg" in from_js
    assert "1 passed, 3 failed, 2 unrated steps" in dom


def test_index_screenshot_shows_thumbnails(published: Path, tmp_path: Path) -> None:
    _assert_not_blank(_screenshot(tmp_path, (published / "qc" / "index.html").as_uri(),
                                  "index.png"))


def test_subject_page_renders_in_chromium(published: Path, tmp_path: Path) -> None:
    page = published / "sub-02_ses-pre.html"
    _assert_not_blank(_screenshot(tmp_path, page.as_uri(), "subject.png"))
    dom = _chromium(tmp_path, page.as_uri(), "--dump-dom")
    assert 'id="step-seg"' in dom and 'id="metrics"' in dom
