"""Atomic file writes: a crash never leaves a truncated output behind.

Every writer in the package goes through :func:`atomic_path`: write to a temporary name in the
destination folder, then ``os.replace`` onto the final name (atomic on POSIX within one
filesystem).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from spinal_bidsapp.errors import OutputIOError, OutputNotWritableError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the final suffixes (``.nii.gz``) so format-sniffing writers such as
    nibabel pick the right format. On any exception the temporary file is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputNotWritableError(
            f"cannot create folder {path.parent}: {exc.strerror}; check permissions or choose "
            "another output directory"
        ) from exc
    suffix = "".join(path.suffixes) or ""
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.",
                                        suffix=f".tmp{suffix}", dir=path.parent)
    except PermissionError as exc:
        raise OutputNotWritableError(
            f"cannot write into folder {path.parent}: {exc.strerror}; fix its permissions or "
            "choose another output directory"
        ) from exc
    except OSError as exc:
        raise OutputIOError(f"could not write {path}: {exc}") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; outputs are shared
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputIOError(f"could not write {path}: {exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by a writer that was killed (SIGKILL skips cleanup)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    stale = sorted(path.parent.glob(f".{path.name.split('.')[0]}.*.tmp*"))
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return stale


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(chunk_bytes), b""):
            digest.update(chunk)
    return digest.hexdigest()
