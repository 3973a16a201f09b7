"""Find the PAM50 spinal cord template, or fetch the pinned release into the local cache.

Resolution order (first hit wins):

1. ``template_dir`` (``--template-dir DIR``): a folder in SCT's PAM50 layout,
   ``DIR/template/PAM50_*``, or the ``template/`` folder itself.
   An unusable folder is an error, never silently skipped.
2. ``$SCT_DIR/data/PAM50``, the copy that ``install_sct`` puts next to SCT.
3. The local cache, ``cache_dir/PAM50``.
4. A download of the pinned official release (:data:`PAM50_PIN`), when ``allow_download`` is set.

Pinning and checksums
---------------------
:data:`PAM50_PIN` is the release SCT 7.2-7.3 itself installs
(``spinalcordtoolbox/download.py``, ``DATASET_DICT["PAM50"]``): tag ``r20250730``, asset
``PAM50-r20250730.zip``. SCT does not publish a checksum for it, and none could be found in public
material, so the constant carries the URL only. The SHA-256 comes from a small JSON manifest,
``cache_dir/pam50-manifest.json`` (``{"release": ..., "url": ..., "sha256": ...}``), which the
container build writes after fetching the asset once (see ``docs/engines.md``). A download whose
checksum is unknown is refused, so nothing unverified ever lands in the cache.

Downloads stream to a temporary file in ``cache_dir`` (with a tqdm bar when stderr is a terminal),
are checked against the checksum, extracted into a temporary folder and moved into place with one
``os.rename``; a failure at any point leaves the cache as it was. A file lock serialises concurrent
runs that share the cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from filelock import FileLock, Timeout
from tqdm import tqdm

from spinal_bidsapp.config import RunConfig, sct_dir_from_environment, user_cache_dir
from spinal_bidsapp.errors import (
    ConfigError,
    InputDataError,
    MissingInputError,
    OutputNotWritableError,
    TemporaryFailure,
)
from spinal_bidsapp.runtime.files import sha256_file, write_json

logger = logging.getLogger(__name__)

PAM50_RELEASE = "r20250730"
PAM50_MANIFEST_NAME = "pam50-manifest.json"
"""Checksum manifest looked up in ``cache_dir`` when no explicit pin is given."""
_SOURCE_RECORD_NAME = ".spinal_bidsapp-source.json"
_CACHE_FOLDER_NAME = "PAM50"
_CHUNK_BYTES = 1 << 16

REQUIRED_FILES = ("PAM50_cord.nii.gz", "PAM50_label_disc.nii.gz")
"""Files without which no registration to PAM50 can run."""


@dataclass(frozen=True)
class Pam50Pin:
    """One downloadable PAM50 release: tag, URL and (when known) the SHA-256 of the zip."""

    release: str
    url: str
    sha256: str | None


PAM50_PIN = Pam50Pin(
    release=PAM50_RELEASE,
    url=(
        "https://github.com/spinalcordtoolbox/PAM50/releases/download/"
        f"{PAM50_RELEASE}/PAM50-{PAM50_RELEASE}.zip"
    ),
    sha256=None,
)
"""The release pinned by SCT 7.2/7.3; the checksum comes from :func:`load_pam50_pin`."""

PREFETCH_HINT = (
    f"pre-fetch it on a connected machine with `curl -fLO {PAM50_PIN.url}`, unzip it and pass "
    "--template-dir with the unzipped folder that holds template/ (see docs/engines.md)"
)


@dataclass(frozen=True)
class Pam50:
    """Paths of the PAM50 files found in one template folder, and where that folder came from."""

    template_folder: Path
    """Folder holding the ``PAM50_*.nii.gz`` files (SCT's ``PAM50/template``)."""
    cord: Path
    label_disc: Path
    t2: Path | None
    t1: Path | None
    t2s: Path | None
    levels: Path | None
    centerline: Path | None
    label_disc_posterior: Path | None
    csf: Path | None
    gm: Path | None
    wm: Path | None
    spinal_levels: Path | None
    rootlets: Path | None
    source: str
    """``template-dir``, ``sct``, ``cache`` or ``download``."""
    version: str
    """Release tag when known (our cache records it), else ``unknown``."""

    @property
    def sct_dir(self) -> Path:
        """The folder to pass to SCT's ``-t`` option (the parent of ``template/``).

        When the files sit directly in a folder not called ``template``, SCT cannot use it as is
        and this returns the file folder itself; the SCT engine checks the layout before calling.
        """
        folder = self.template_folder
        return folder.parent if folder.name == "template" else folder

    def provenance(self) -> dict[str, str]:
        """Plain record for ``GeneratedBy``/step ledgers."""
        return {"name": "PAM50", "version": self.version, "source": self.source,
                "path": str(self.template_folder)}



def load_pam50_pin(manifest: Path) -> Pam50Pin:
    """Read a checksum manifest ``{"release": str, "url": str, "sha256": 64 hex}``.

    Raises
    ------
    ConfigError
        The file is not valid JSON or lacks one of the three keys.
    """
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        pin = Pam50Pin(release=str(data["release"]), url=str(data["url"]),
                       sha256=str(data["sha256"]).lower())
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"PAM50 manifest {manifest} is unreadable or incomplete ({exc}); it "
                          "needs 'release', 'url' and 'sha256'") from exc
    if len(pin.sha256 or "") != 64:
        raise ConfigError(f"PAM50 manifest {manifest}: 'sha256' must be 64 hex digits")
    return pin


def find_template_folder(folder: Path) -> Path | None:
    """Return the folder that holds ``PAM50_*`` files: ``folder/template`` or ``folder`` itself."""
    for candidate in (folder / "template", folder):
        if any((candidate / name).is_file() for name in (*REQUIRED_FILES, "PAM50_t2.nii.gz")):
            return candidate
    return None


def read_pam50_folder(folder: Path, *, source: str, version: str) -> Pam50:
    """Collect the PAM50 files of ``folder`` (SCT layout, or the ``template/`` folder itself).

    Raises
    ------
    MissingInputError
        ``folder`` does not exist, or lacks ``PAM50_cord.nii.gz`` / ``PAM50_label_disc.nii.gz``.
    """
    if not folder.is_dir():
        raise MissingInputError(f"PAM50 folder {folder} does not exist")
    template_folder = find_template_folder(folder) or folder
    missing = [name for name in REQUIRED_FILES if not (template_folder / name).is_file()]
    if missing:
        raise MissingInputError(
            f"PAM50 folder {template_folder} lacks {', '.join(missing)}; point --template-dir at "
            "a folder in SCT's PAM50 layout (DIR/template/PAM50_cord.nii.gz, ...)"
        )

    def optional(name: str) -> Path | None:
        path = template_folder / name
        return path if path.is_file() else None

    return Pam50(
        template_folder=template_folder,
        cord=template_folder / REQUIRED_FILES[0],
        label_disc=template_folder / REQUIRED_FILES[1],
        t2=optional("PAM50_t2.nii.gz"),
        t1=optional("PAM50_t1.nii.gz"),
        t2s=optional("PAM50_t2s.nii.gz"),
        levels=optional("PAM50_levels.nii.gz"),
        centerline=optional("PAM50_centerline.nii.gz"),
        label_disc_posterior=optional("PAM50_label_discPosterior.nii.gz"),
        csf=optional("PAM50_csf.nii.gz"),
        gm=optional("PAM50_gm.nii.gz"),
        wm=optional("PAM50_wm.nii.gz"),
        spinal_levels=optional("PAM50_spinal_levels.nii.gz"),
        rootlets=optional("PAM50_rootlets.nii.gz"),
        source=source,
        version=version,
    )


def resolve_pam50(*, template_dir: Path | None, sct_dir: Path | None, cache_dir: Path,
                  allow_download: bool, progress: bool, pin: Pam50Pin | None = None,
                  timeout_s: float = 60.0, lock_timeout_s: float = 600.0) -> Pam50:
    """Find PAM50: ``template_dir`` > ``sct_dir/data/PAM50`` > ``cache_dir/PAM50`` > download.

    Parameters
    ----------
    template_dir : Path or None
        ``--template-dir``; when given it must be usable (no fallback).
    sct_dir : Path or None
        ``$SCT_DIR`` as read by the config; its ``data/PAM50`` is used when complete.
    cache_dir : Path
        Our cache; the release is extracted to ``cache_dir/PAM50``.
    allow_download : bool
        Download :data:`PAM50_PIN` when nothing local is found.
    progress : bool
        Show a tqdm bar during the download (only when stderr is a terminal).
    pin : Pam50Pin, optional
        Release to download; default: ``cache_dir/pam50-manifest.json`` if present, else
        :data:`PAM50_PIN` (whose checksum is unknown, so the download is refused).
    timeout_s : float
        Socket timeout of the download, seconds.
    lock_timeout_s : float
        How long to wait for another process filling the same cache.

    Raises
    ------
    MissingInputError
        A required file is missing, or PAM50 was not found and downloads are off or unverifiable.
    TemporaryFailure
        The download failed (offline, server error, truncated), or the cache lock timed out.
    InputDataError
        The downloaded archive does not match its checksum or is not a PAM50 release.
    """
    if template_dir is not None:
        return read_pam50_folder(Path(template_dir).absolute(), source="template-dir",
                                 version=_recorded_version(Path(template_dir)))
    if sct_dir is not None:
        sct_pam50 = Path(sct_dir) / "data" / "PAM50"
        if sct_pam50.is_dir():
            try:
                return read_pam50_folder(sct_pam50.absolute(), source="sct",
                                         version=_recorded_version(sct_pam50))
            except MissingInputError as exc:
                logger.warning("ignoring the PAM50 copy of SCT: %s", exc)
        else:
            logger.debug("no PAM50 in %s", sct_pam50)
    cached = Path(cache_dir).absolute() / _CACHE_FOLDER_NAME
    if cached.is_dir():
        return read_pam50_folder(cached, source="cache", version=_recorded_version(cached))
    if pin is None:
        manifest = Path(cache_dir) / PAM50_MANIFEST_NAME
        pin = load_pam50_pin(manifest) if manifest.is_file() else PAM50_PIN
    if not allow_download:
        raise MissingInputError(
            f"PAM50 template not found (no --template-dir, no $SCT_DIR/data/PAM50, nothing in "
            f"{cached}) and downloads are disabled; pass --template-dir DIR or {PREFETCH_HINT}"
        )
    return download_pam50(pin, cache_dir=Path(cache_dir).absolute(), progress=progress,
                          timeout_s=timeout_s, lock_timeout_s=lock_timeout_s)


def download_pam50(pin: Pam50Pin, *, cache_dir: Path, progress: bool, timeout_s: float,
                   lock_timeout_s: float) -> Pam50:
    """Download, verify and extract ``pin`` into ``cache_dir/PAM50`` (atomic, locked)."""
    if pin.sha256 is None:
        raise MissingInputError(
            f"no checksum is recorded for {pin.url} (expected in "
            f"{cache_dir / PAM50_MANIFEST_NAME}, written by the container build), so it will not "
            f"be downloaded; pass --template-dir DIR or {PREFETCH_HINT}"
        )
    target = cache_dir / _CACHE_FOLDER_NAME
    with _cache_lock(cache_dir, lock_timeout_s=lock_timeout_s):
        if target.is_dir():  # another process finished while we waited
            return read_pam50_folder(target, source="cache", version=_recorded_version(target))
        archive = _fetch_verified(pin, cache_dir=cache_dir, progress=progress,
                                  timeout_s=timeout_s)
        try:
            _extract_into_place(archive, pin, target=target)
        finally:
            archive.unlink(missing_ok=True)
    logger.info("PAM50 %s downloaded to %s", pin.release, target)
    return read_pam50_folder(target, source="download", version=pin.release)


def install_pam50_archive(archive: Path, *, cache_dir: Path, pin: Pam50Pin,
                          lock_timeout_s: float = 600.0) -> Pam50:
    """Install a release zip fetched beforehand (offline machines, container builds).

    The archive's SHA-256 must equal ``pin.sha256`` when that is known; when it is not, the
    computed checksum is recorded next to the files. An existing ``cache_dir/PAM50`` is kept.

    Raises
    ------
    InputDataError
        Checksum mismatch, not a zip, or no PAM50 template inside.
    """
    sha256 = sha256_file(archive)
    if pin.sha256 is not None and sha256 != pin.sha256:
        raise InputDataError(f"{archive} has SHA-256 {sha256}, expected {pin.sha256} for PAM50 "
                             f"{pin.release}; fetch it again from {pin.url}")
    target = Path(cache_dir).absolute() / _CACHE_FOLDER_NAME
    with _cache_lock(target.parent, lock_timeout_s=lock_timeout_s):
        if not target.is_dir():
            _extract_into_place(archive, Pam50Pin(pin.release, pin.url, sha256), target=target)
    return read_pam50_folder(target, source="cache", version=_recorded_version(target))


def record_pam50_checksum(archive: Path, *, cache_dir: Path, pin: Pam50Pin = PAM50_PIN
                          ) -> Pam50Pin:
    """Write ``cache_dir/pam50-manifest.json`` with the SHA-256 of ``archive`` (container build).

    Run once at image build time, after fetching ``pin.url``; later downloads of the same
    release (e.g. into another cache) are then verified against it.
    """
    recorded = Pam50Pin(release=pin.release, url=pin.url, sha256=sha256_file(archive))
    write_json(Path(cache_dir) / PAM50_MANIFEST_NAME,
               {"release": recorded.release, "url": recorded.url, "sha256": recorded.sha256})
    return recorded


@contextlib.contextmanager
def _cache_lock(cache_dir: Path, *, lock_timeout_s: float) -> Iterator[None]:
    """Create ``cache_dir`` and hold its PAM50 lock (one writer across processes)."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot create the cache folder {cache_dir}: {exc}") from exc
    lock = FileLock(str(cache_dir / f".{_CACHE_FOLDER_NAME}.lock"), timeout=lock_timeout_s)
    try:
        lock.acquire()
    except Timeout as exc:
        raise TemporaryFailure(f"another process has held the PAM50 cache lock in {cache_dir} for "
                               f"more than {lock_timeout_s:.0f} s; retry later") from exc
    try:
        yield
    finally:
        lock.release()


def _fetch_verified(pin: Pam50Pin, *, cache_dir: Path, progress: bool, timeout_s: float) -> Path:
    """Stream ``pin.url`` to a temporary file in ``cache_dir``; return it once its hash matches."""
    fd, name = tempfile.mkstemp(prefix=f".PAM50-{pin.release}.", suffix=".zip.part", dir=cache_dir)
    part = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            sha256 = _stream(pin.url, out, progress=progress, timeout_s=timeout_s)
        if sha256 != pin.sha256:
            raise InputDataError(
                f"PAM50 download from {pin.url} has SHA-256 {sha256}, expected "
                f"{pin.sha256}; nothing was cached (a proxy or a changed release?); retry, or "
                f"pass --template-dir DIR"
            )
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part


def _stream(url: str, out: BinaryIO, *, progress: bool, timeout_s: float) -> str:
    """Copy ``url`` into ``out``; return the SHA-256 of the bytes; refuse a short transfer."""
    digest = hashlib.sha256()
    offline = (f"cannot download PAM50 from {url}: {{reason}}; if this machine is offline, pass "
               f"--template-dir DIR or {PREFETCH_HINT}")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            length_header = response.headers.get("Content-Length")
            expected = int(length_header) if length_header else None
            received = 0
            with tqdm(total=expected, unit="B", unit_scale=True, desc="PAM50",
                      disable=not (progress and sys.stderr.isatty()), file=sys.stderr) as bar:
                for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as exc:
        raise TemporaryFailure(offline.format(reason=f"HTTP {exc.code} {exc.reason}")) from exc
    except urllib.error.URLError as exc:
        raise TemporaryFailure(offline.format(reason=str(exc.reason))) from exc
    except (http.client.HTTPException, OSError) as exc:
        raise TemporaryFailure(offline.format(reason=f"transfer interrupted ({exc!r})")) from exc
    if expected is not None and received != expected:
        raise TemporaryFailure(offline.format(
            reason=f"transfer interrupted after {received} of {expected} bytes"))
    return digest.hexdigest()


def _extract_into_place(archive: Path, pin: Pam50Pin, *, target: Path) -> None:
    """Unzip into a temporary folder next to ``target``, check it, then rename it into place."""
    staging = Path(tempfile.mkdtemp(prefix=".PAM50-extract-", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as zf:
                root = staging.resolve()
                for member in zf.namelist():
                    if not (staging / member).resolve().is_relative_to(root):
                        raise InputDataError(f"PAM50 archive from {pin.url} has an unsafe member "
                                             f"name {member!r}; refusing to extract it")
                zf.extractall(staging)
        except zipfile.BadZipFile as exc:
            raise InputDataError(f"PAM50 download from {pin.url} is not a zip archive") from exc
        entries = [p for p in staging.iterdir() if not p.name.startswith(".")]
        release_root = entries[0] if len(entries) == 1 and entries[0].is_dir() else staging
        if find_template_folder(release_root) is None:
            raise InputDataError(f"the archive from {pin.url} holds no PAM50 template folder")
        read_pam50_folder(release_root, source="download", version=pin.release)
        write_json(release_root / _SOURCE_RECORD_NAME,
                   {"release": pin.release, "url": pin.url, "sha256": pin.sha256})
        os.rename(release_root, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _recorded_version(folder: Path) -> str:
    """Release tag from our source record (written on download), else ``unknown``."""
    record = folder / _SOURCE_RECORD_NAME
    if not record.is_file():
        return "unknown"
    try:
        return str(json.loads(record.read_text(encoding="utf-8"))["release"])
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("unreadable PAM50 source record %s", record)
        return "unknown"


def find_template(config: RunConfig) -> Pam50 | None:
    """PAM50 from --template-dir, $SCT_DIR, or the cache; None when none is available offline."""
    try:
        return resolve_pam50(template_dir=config.participant.template_dir,
                             sct_dir=sct_dir_from_environment(), cache_dir=user_cache_dir(),
                             allow_download=False, progress=False)
    except MissingInputError:
        if config.participant.template_dir is not None:
            raise
        return None
