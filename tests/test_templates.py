"""PAM50 resolution order and the download path, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spinal_bidsapp.errors import (
    ConfigError,
    InputDataError,
    MissingInputError,
    TemporaryFailure,
)
from spinal_bidsapp.templates.pam50 import (
    PAM50_MANIFEST_NAME,
    PAM50_PIN,
    Pam50Pin,
    install_pam50_archive,
    load_pam50_pin,
    read_pam50_folder,
    record_pam50_checksum,
    resolve_pam50,
)
from spinal_bidsapp.templates.sct_layout import INFO_LABEL, read_info_label, write_info_label

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SPINAL_BIDSAPP_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))
RELEASE = "r-test"


def _need(folder: Path) -> Path:
    if not folder.is_dir():
        pytest.skip(f"test data {folder} absent (set SPINAL_BIDSAPP_TEST_DATA)")
    return folder


def _template_from_small(dest: Path) -> Path:
    """SCT layout built from PAM50_small: ``dest/template/PAM50_<name>`` (renamed from _small_)."""
    small = _need(DATA / "PAM50_small")
    (dest / "template").mkdir(parents=True)
    for src in sorted(small.glob("PAM50_small_*.nii.gz")):
        shutil.copyfile(src, dest / "template" / src.name.replace("PAM50_small_", "PAM50_"))
    return dest


def _masks_only(dest: Path) -> Path:
    full = _need(DATA / "PAM50")
    (dest / "template").mkdir(parents=True)
    for src in sorted(full.glob("PAM50_*.nii.gz")):
        shutil.copyfile(src, dest / "template" / src.name)
    return dest


# ----------------------------------------------------------------------------- local folders


def test_template_dir_in_sct_layout_lists_every_file(tmp_path: Path) -> None:
    root = _template_from_small(tmp_path / "PAM50")
    pam50 = resolve_pam50(template_dir=root, sct_dir=None, cache_dir=tmp_path / "cache",
                          allow_download=False, progress=False)
    folder = root / "template"
    assert pam50.template_folder == folder
    assert pam50.cord == folder / "PAM50_cord.nii.gz"
    assert pam50.label_disc == folder / "PAM50_label_disc.nii.gz"
    assert pam50.t2 == folder / "PAM50_t2.nii.gz"
    assert pam50.levels == folder / "PAM50_levels.nii.gz"
    assert pam50.label_disc_posterior == folder / "PAM50_label_discPosterior.nii.gz"
    assert pam50.centerline is None
    assert pam50.source == "template-dir"
    assert pam50.version == "unknown"
    assert pam50.sct_dir == root
    assert not (tmp_path / "cache").exists()


def test_template_dir_may_be_the_template_folder_itself(tmp_path: Path) -> None:
    root = _template_from_small(tmp_path / "PAM50")
    pam50 = resolve_pam50(template_dir=root / "template", sct_dir=None,
                          cache_dir=tmp_path / "cache", allow_download=False, progress=False)
    assert pam50.template_folder == root / "template"
    assert pam50.cord.is_file()


def test_masks_only_folder_has_no_t2(tmp_path: Path) -> None:
    root = _masks_only(tmp_path / "PAM50")
    pam50 = read_pam50_folder(root, source="template-dir", version="unknown")
    assert pam50.t2 is None
    assert pam50.centerline == root / "template" / "PAM50_centerline.nii.gz"
    assert pam50.csf is not None and pam50.wm is not None


def test_missing_required_files_name_folder_and_files(tmp_path: Path) -> None:
    root = _template_from_small(tmp_path / "PAM50")
    (root / "template" / "PAM50_cord.nii.gz").unlink()
    (root / "template" / "PAM50_label_disc.nii.gz").unlink()
    with pytest.raises(MissingInputError) as excinfo:
        resolve_pam50(template_dir=root, sct_dir=None, cache_dir=tmp_path / "cache",
                      allow_download=False, progress=False)
    message = str(excinfo.value)
    assert str(root / "template") in message
    assert "PAM50_cord.nii.gz" in message and "PAM50_label_disc.nii.gz" in message
    assert excinfo.value.exit_code == 66


def test_nonexistent_template_dir_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    sct_dir = tmp_path / "sct"
    _template_from_small(sct_dir / "data" / "PAM50")
    with pytest.raises(MissingInputError, match="does not exist"):
        resolve_pam50(template_dir=tmp_path / "nowhere", sct_dir=sct_dir,
                      cache_dir=tmp_path / "cache", allow_download=False, progress=False)


def test_resolution_order_template_dir_then_sct_then_cache(tmp_path: Path) -> None:
    user = _template_from_small(tmp_path / "user")
    sct_dir = tmp_path / "sct"
    _template_from_small(sct_dir / "data" / "PAM50")
    cache = tmp_path / "cache"
    _template_from_small(cache / "PAM50")

    def resolve(template_dir: Path | None, sct: Path | None) -> str:
        return resolve_pam50(template_dir=template_dir, sct_dir=sct, cache_dir=cache,
                             allow_download=False, progress=False).source

    assert resolve(user, sct_dir) == "template-dir"
    assert resolve(None, sct_dir) == "sct"
    assert resolve(None, tmp_path / "sct-without-data") == "cache"
    assert resolve(None, None) == "cache"


def test_incomplete_sct_copy_falls_through_to_cache(tmp_path: Path) -> None:
    sct_dir = tmp_path / "sct"
    _template_from_small(sct_dir / "data" / "PAM50")
    (sct_dir / "data" / "PAM50" / "template" / "PAM50_cord.nii.gz").unlink()
    cache = tmp_path / "cache"
    _template_from_small(cache / "PAM50")
    pam50 = resolve_pam50(template_dir=None, sct_dir=sct_dir, cache_dir=cache,
                          allow_download=False, progress=False)
    assert pam50.source == "cache"
    assert pam50.template_folder == cache / "PAM50" / "template"


def test_nothing_found_without_download_explains_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError) as excinfo:
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=tmp_path / "cache",
                      allow_download=False, progress=False)
    message = str(excinfo.value)
    assert "--template-dir" in message and PAM50_PIN.url in message
    assert "\n" not in message


def test_download_without_known_checksum_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="no checksum is recorded"):
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=tmp_path / "cache",
                      allow_download=True, progress=False)
    assert not (tmp_path / "cache" / "PAM50").exists()


def test_manifest_must_hold_release_url_and_sha256(tmp_path: Path) -> None:
    manifest = tmp_path / PAM50_MANIFEST_NAME
    manifest.write_text(json.dumps({"release": "r1", "url": "http://x/y.zip"}))
    with pytest.raises(ConfigError, match="sha256"):
        load_pam50_pin(manifest)
    manifest.write_text(json.dumps({"release": "r1", "url": "http://x/y.zip", "sha256": "ab"}))
    with pytest.raises(ConfigError, match="64 hex"):
        load_pam50_pin(manifest)


# ----------------------------------------------------------------------------- download path


class _Server:
    """A real HTTP server on 127.0.0.1 that serves fixed bytes, optionally cut short."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.truncate_to: int | None = None
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.truncate_to is None:
                    self.wfile.write(body)
                else:
                    self.wfile.write(body[: server.truncate_to])
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def release_zip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Zip in the release layout (``PAM50-<tag>/template/PAM50_*``) made from data/PAM50."""
    full = _need(DATA / "PAM50")
    path = tmp_path_factory.mktemp("zip") / "PAM50.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for src in sorted(full.glob("PAM50_*.nii.gz")):
            zf.write(src, f"PAM50-{RELEASE}/template/{src.name}")
        zf.writestr(f"PAM50-{RELEASE}/README.md", "test release\n")
    return path.read_bytes()


def _pin(url: str, body: bytes) -> Pam50Pin:
    return Pam50Pin(release=RELEASE, url=url, sha256=hashlib.sha256(body).hexdigest())


def _leftovers(cache: Path) -> list[str]:
    """Everything in the cache except the lock file."""
    if not cache.exists():
        return []
    return sorted(p.name for p in cache.iterdir() if p.name != ".PAM50.lock")


def test_download_verifies_extracts_and_is_reused(server: _Server, release_zip: bytes,
                                                  tmp_path: Path) -> None:
    server.routes["/PAM50.zip"] = release_zip
    cache = tmp_path / "cache"
    pin = _pin(server.url("/PAM50.zip"), release_zip)
    pam50 = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                          progress=True, pin=pin, timeout_s=10)
    assert pam50.source == "download"
    assert pam50.version == RELEASE
    assert pam50.template_folder == cache / "PAM50" / "template"
    assert pam50.cord.read_bytes() == (DATA / "PAM50" / "PAM50_cord.nii.gz").read_bytes()
    assert pam50.t2 is None
    assert (cache / "PAM50" / "README.md").is_file()
    assert _leftovers(cache) == ["PAM50"]
    server.close()  # the second resolution must not touch the network
    again = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                          progress=False, pin=pin, timeout_s=1)
    assert again.source == "cache"
    assert again.version == RELEASE
    assert again.cord == pam50.cord


def test_manifest_in_cache_supplies_the_checksum(server: _Server, release_zip: bytes,
                                                 tmp_path: Path) -> None:
    server.routes["/release.zip"] = release_zip
    cache = tmp_path / "cache"
    cache.mkdir()
    pin = _pin(server.url("/release.zip"), release_zip)
    (cache / PAM50_MANIFEST_NAME).write_text(
        json.dumps({"release": pin.release, "url": pin.url, "sha256": pin.sha256}))
    pam50 = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                          progress=False, timeout_s=10)
    assert pam50.source == "download" and pam50.version == RELEASE


def test_checksum_mismatch_leaves_nothing_in_the_cache(server: _Server, release_zip: bytes,
                                                       tmp_path: Path) -> None:
    server.routes["/PAM50.zip"] = release_zip
    cache = tmp_path / "cache"
    pin = Pam50Pin(release=RELEASE, url=server.url("/PAM50.zip"), sha256="0" * 64)
    with pytest.raises(InputDataError) as excinfo:
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                      progress=False, pin=pin, timeout_s=10)
    assert "SHA-256" in str(excinfo.value) and pin.url in str(excinfo.value)
    assert _leftovers(cache) == []


def test_server_down_gives_one_line_offline_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/PAM50.zip"
    cache = tmp_path / "cache"
    with pytest.raises(TemporaryFailure) as excinfo:
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                      progress=False, pin=Pam50Pin(release=RELEASE, url=url, sha256="0" * 64),
                      timeout_s=5)
    message = str(excinfo.value)
    assert url in message and "--template-dir" in message and "offline" in message
    assert "\n" not in message
    assert _leftovers(cache) == []


def test_http_error_is_reported_with_status(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(TemporaryFailure, match="HTTP 404"):
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=tmp_path / "cache",
                      allow_download=True, progress=False,
                      pin=Pam50Pin(release=RELEASE, url=server.url("/gone.zip"), sha256="0" * 64),
                      timeout_s=5)
    assert _leftovers(tmp_path / "cache") == []


def test_interrupted_download_leaves_no_partial_file(server: _Server, release_zip: bytes,
                                                     tmp_path: Path) -> None:
    server.routes["/PAM50.zip"] = release_zip
    server.truncate_to = len(release_zip) // 3
    cache = tmp_path / "cache"
    with pytest.raises(TemporaryFailure, match="interrupted"):
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                      progress=False, pin=_pin(server.url("/PAM50.zip"), release_zip),
                      timeout_s=10)
    assert _leftovers(cache) == []
    server.truncate_to = None  # a retry then succeeds from scratch
    pam50 = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                          progress=False, pin=_pin(server.url("/PAM50.zip"), release_zip),
                          timeout_s=10)
    assert pam50.source == "download"


def test_archive_without_template_is_rejected(server: _Server, tmp_path: Path) -> None:
    path = tmp_path / "other.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("something/else.txt", "not a template\n")
    body = path.read_bytes()
    server.routes["/other.zip"] = body
    cache = tmp_path / "cache"
    with pytest.raises(InputDataError, match="no PAM50 template"):
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                      progress=False, pin=_pin(server.url("/other.zip"), body), timeout_s=10)
    assert _leftovers(cache) == []


def test_archive_with_escaping_member_is_rejected(server: _Server, tmp_path: Path) -> None:
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("../escaped.txt", "outside\n")
    body = path.read_bytes()
    server.routes["/evil.zip"] = body
    cache = tmp_path / "cache"
    with pytest.raises(InputDataError, match="unsafe member"):
        resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=True,
                      progress=False, pin=_pin(server.url("/evil.zip"), body), timeout_s=10)
    assert not (tmp_path / "escaped.txt").exists()
    assert _leftovers(cache) == []


def test_concurrent_resolutions_download_once(server: _Server, release_zip: bytes,
                                              tmp_path: Path) -> None:
    server.routes["/PAM50.zip"] = release_zip
    cache = tmp_path / "cache"
    pin = _pin(server.url("/PAM50.zip"), release_zip)

    def resolve(_: int) -> str:
        return resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache,
                             allow_download=True, progress=False, pin=pin, timeout_s=10).source

    with ThreadPoolExecutor(max_workers=4) as pool:
        sources = sorted(pool.map(resolve, range(4)))
    assert server.requests == 1
    assert sources.count("download") == 1 and sources.count("cache") == 3
    assert _leftovers(cache) == ["PAM50"]


def test_prefetched_archive_installs_into_the_cache(release_zip: bytes, tmp_path: Path) -> None:
    archive = tmp_path / "PAM50.zip"
    archive.write_bytes(release_zip)
    cache = tmp_path / "cache"
    pin = record_pam50_checksum(archive, cache_dir=cache,
                                pin=Pam50Pin(release=RELEASE, url="http://example.invalid/x.zip",
                                             sha256=None))
    assert load_pam50_pin(cache / PAM50_MANIFEST_NAME) == pin
    assert pin.sha256 == hashlib.sha256(release_zip).hexdigest()
    pam50 = install_pam50_archive(archive, cache_dir=cache, pin=pin)
    assert pam50.version == RELEASE and pam50.cord.is_file()
    again = resolve_pam50(template_dir=None, sct_dir=None, cache_dir=cache, allow_download=False,
                          progress=False)
    assert again.source == "cache" and again.template_folder == pam50.template_folder


def test_prefetched_archive_with_wrong_checksum_is_refused(release_zip: bytes,
                                                           tmp_path: Path) -> None:
    archive = tmp_path / "PAM50.zip"
    archive.write_bytes(release_zip)
    cache = tmp_path / "cache"
    with pytest.raises(InputDataError, match="expected"):
        install_pam50_archive(archive, cache_dir=cache,
                              pin=Pam50Pin(release=RELEASE, url="http://x/y.zip", sha256="1" * 64))
    assert _leftovers(cache) == []


# ----------------------------------------------------------------------------- info_label.txt

SCT_SAVED = ("# Keyword=IndivLabels (Please DO NOT change this line)\n"  # InfoLabel.save, 7.3
             "# ID, name, file\n"
             "0, T1-weighted template, PAM50_t1.nii.gz\n"
             "16, spinal rootlets, PAM50_rootlets.nii.gz\n"
             "\n# Combined labels\n"
             "# Keyword=CombinedLabels (Please DO NOT change this line)\n"
             "# ID, name, IDgroup\n"
             "50, spinal cord, 4,5\n")
INFO_LABEL_CASES = {
    "sct_saved": SCT_SAVED,
    "written_before_issue_19": "# Keyword=IDs_templates (Please use one of the following keywords:"
                               " IDs_templates, IDs_atlas, IDs_labels)\n# ID, name, file\n"
                               "1, t2, PAM50_t1.nii.gz\n",
    "no_section": "# ID, name, file\n0, t1, PAM50_t1.nii.gz\n",
    "missing_file": "# Keyword=IndivLabels\n0, t1, PAM50_t1.nii.gz\n3, cord, absent.nii.gz\n",
    "no_spaces": "# Keyword=IndivLabels\n0,t1,PAM50_t1.nii.gz\n",
    "commas_in_name": "# Keyword=IndivLabels\n0, T1, a, b, PAM50_t1.nii.gz\n",
    "repeated_id": "# Keyword=IndivLabels\n16, a, PAM50_rootlets.nii.gz\n16, b, PAM50_t1.nii.gz\n",
    "comments_only": "# PAM50_small test layout\n",
}


def _info_label_folder(root: Path, text: str) -> Path:
    root.mkdir(parents=True)
    for name in ("PAM50_t1.nii.gz", "PAM50_rootlets.nii.gz"):
        (root / name).write_bytes(b"")
    (root / INFO_LABEL).write_text(text)
    return root / INFO_LABEL


def _ours(path: Path) -> dict[int, str] | str:
    try:
        return read_info_label(path)
    except (InputDataError, MissingInputError) as exc:
        return f"refused: {exc}"


def test_info_label_keeps_the_individual_labels_only(tmp_path: Path) -> None:
    info = _info_label_folder(tmp_path / "t", SCT_SAVED)
    assert read_info_label(info) == {0: "PAM50_t1.nii.gz", 16: "PAM50_rootlets.nii.gz"}


def test_info_label_refuses_what_sct_refuses_with_the_file_and_line(tmp_path: Path) -> None:
    old = _info_label_folder(tmp_path / "old", INFO_LABEL_CASES["written_before_issue_19"])
    with pytest.raises(InputDataError, match=r"info_label.txt line 3 .* before any '# Keyword="):
        read_info_label(old)
    absent = _info_label_folder(tmp_path / "absent", INFO_LABEL_CASES["missing_file"])
    with pytest.raises(MissingInputError, match=r"line 3 lists absent\.nii\.gz"):
        read_info_label(absent)


def test_info_label_written_is_read_back(tmp_path: Path) -> None:
    (tmp_path / "Mine_t2.nii.gz").write_bytes(b"")
    (tmp_path / "Mine_cord.nii.gz").write_bytes(b"")
    path = write_info_label(tmp_path, [(1, "T2, weighted", "Mine_t2.nii.gz"),
                                       (3, "cord", "Mine_cord.nii.gz")])
    assert path.read_text().splitlines()[0].startswith("# Keyword=IndivLabels ")
    assert read_info_label(path) == {1: "Mine_t2.nii.gz", 3: "Mine_cord.nii.gz"}
    with pytest.raises(ValueError, match="cannot list"):
        write_info_label(tmp_path, [(1, "t2", "a, b.nii.gz")])
    with pytest.raises(ValueError, match="absent"):
        write_info_label(tmp_path, [(1, "t2", "other.nii.gz")])


def sct_python(env: dict[str, str]) -> str:
    """The interpreter of the real SCT install (its scripts' shebang): SCT's own modules."""
    program = shutil.which("sct_version", path=env["PATH"])
    assert program, "sct_version not on the PATH of the real SCT environment"
    return Path(program).read_text().splitlines()[0].removeprefix("#!").strip()


@pytest.mark.sct
def test_info_label_agrees_with_sct_7_3_reader(tmp_path: Path) -> None:
    """Every case is read by SCT's own ``InfoLabel.load`` (what ``get_file_label`` and hence
    ``sct_register_to_template -t`` and ``sct_warp_template`` use) and by ours: both accept it
    with the same files, or both refuse it. Our writer's output is one of the cases."""
    from tests.conftest import real_tool_env

    env = real_tool_env("sct")
    paths = {case: _info_label_folder(tmp_path / case, text)
             for case, text in INFO_LABEL_CASES.items()}
    written = tmp_path / "written"
    written.mkdir()
    for name in ("Mine_t2.nii.gz", "Mine_cord.nii.gz"):
        (written / name).write_bytes(b"")
    paths["written"] = write_info_label(written, [(1, "t2", "Mine_t2.nii.gz"),
                                                  (3, "cord", "Mine_cord.nii.gz")])
    script = ("import json, sys\n"
              "from spinalcordtoolbox.metadata import InfoLabel\n"
              "out = {}\n"
              "for case, path in json.loads(sys.argv[1]).items():\n"
              "    info = InfoLabel()\n"
              "    try:\n"
              "        info.load(path)\n"
              "    except ValueError as exc:\n"
              "        out[case] = 'refused: ' + str(exc)\n"
              "        continue\n"
              "    first = {}\n"
              "    for i, _, file in info._indiv_labels:\n"
              "        first.setdefault(str(i), file)\n"
              "    out[case] = first\n"
              "print(json.dumps(out))\n")
    run = subprocess.run([sct_python(env), "-c", script,
                          json.dumps({k: str(v) for k, v in paths.items()})],
                         env=env, capture_output=True, text=True, timeout=120, check=True)
    theirs = json.loads(run.stdout)
    for case, path in paths.items():
        ours = _ours(path)
        sct = theirs[case]
        if isinstance(sct, str) or isinstance(ours, str):
            assert isinstance(sct, str) and isinstance(ours, str), (case, sct, ours)
        else:
            assert {int(k): v for k, v in sct.items()} == ours, case
    assert isinstance(theirs["written_before_issue_19"], str)  # the bug this guards against
    assert theirs["written"] == {"1": "Mine_t2.nii.gz", "3": "Mine_cord.nii.gz"}

