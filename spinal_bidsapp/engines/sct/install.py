"""Where SCT is and what it can do here: its version, its programs, its deep-learning models.

The pinned release and the oldest one whose commands are built are :data:`SCT_PINNED_VERSION` and
:data:`SCT_MIN_VERSION` (why 7.3: :mod:`spinal_bidsapp.engines.sct.commands`). A missing model, a
missing program or an unreachable network is read from SCT's own log
(:func:`environment_failure`), so the participant pipeline can fall back per step instead of
failing the subject.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spinal_bidsapp.engines.tools import (
    discover_tool,
    find_tool,
)
from spinal_bidsapp.errors import EngineUnavailable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class SctVersion:
    """Release number ``major.minor`` (patch, ``.devN`` and ``.postN`` suffixes are dropped)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


SCT_PINNED_VERSION = SctVersion(7, 3)
SCT_MIN_VERSION = SctVersion(6, 2)
"""Oldest release with every task we use (the rootlets model arrived in 6.2)."""
CONTAINER_IMAGE = "the spinal_bidsapp container image (SCT 7.3 inside)"
INSTALL_HINT = (
    "git clone --branch 7.3 --depth 1 https://github.com/spinalcordtoolbox/spinalcordtoolbox "
    "&& cd spinalcordtoolbox && ./install_sct -iy, then export SCT_DIR and put $SCT_DIR/bin "
    "on PATH"
)
REQUIRED_PROGRAMS = ("sct_deepseg", "sct_register_to_template", "sct_label_vertebrae",
                     "sct_process_segmentation")
"""Programs every supported release must provide (6.x also needs ``sct_deepseg_sc``)."""


DiscMethod = Literal["auto", "deepseg", "label_vertebrae"]


def parse_sct_version(text: str) -> SctVersion:
    """``'7.3'``, ``'7.4.dev0'``, ``'6.4.post1'`` -> :class:`SctVersion`.

    >>> parse_sct_version("7.4.dev0")
    SctVersion(major=7, minor=4)

    Raises
    ------
    ValueError
        No ``major.minor`` at the start (e.g. ``git-master-<sha>`` from a git checkout).
    """
    match = re.match(r"\s*v?(\d+)\.(\d+)", text)
    if match is None:
        raise ValueError(f"not an SCT release number: {text.strip()!r}")
    return SctVersion(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class SctInstall:
    """An SCT installation: the folder of its programs and its version."""

    bin_dir: Path
    version: SctVersion
    version_text: str
    """As reported (``version.txt`` or ``sct_version``), for provenance."""

    def program(self, name: str) -> Path:
        return self.bin_dir / name

    @property
    def sct_dir(self) -> Path:
        """``$SCT_DIR``: the folder holding ``bin/`` and ``data/`` (models, PAM50)."""
        return self.bin_dir.parent

    def missing_programs(self) -> list[str]:
        """Programs this release needs that are absent from :attr:`bin_dir`."""
        needed = [*REQUIRED_PROGRAMS]
        if self.version < SctVersion(7, 0):
            needed.append("sct_deepseg_sc")
        return [name for name in needed if not self.program(name).is_file()]


def locate_sct(*, sct_dir: Path | None, search_path: str | None = None) -> SctInstall | None:
    """Find SCT (``sct_dir/bin`` first, then the search path) and read its version.

    Returns None when no ``sct_deepseg`` is found. The version comes from
    ``<SCT_DIR>/spinalcordtoolbox/version.txt`` (SCT's own source of truth; ``SCT_DIR`` is
    derived from the program folder when not given) or, failing that, from ``sct_version``.

    Raises
    ------
    EngineUnavailable
        SCT is present but its version cannot be read or is older than :data:`SCT_MIN_VERSION`.
    """
    deepseg = None
    if sct_dir is not None:
        deepseg = find_tool("sct_deepseg", search_path=str(Path(sct_dir) / "bin"))
    deepseg = deepseg or find_tool("sct_deepseg", search_path=search_path)
    if deepseg is None:
        return None
    bin_dir = deepseg.parent
    roots = [deepseg.resolve().parent.parent, *([Path(sct_dir)] if sct_dir is not None else [])]
    text = _read_version_file(roots)
    if text is None:
        info = discover_tool("sct_version", version_args=[], search_path=str(bin_dir))
        text = info.version if info is not None else "unknown"
    try:
        version = parse_sct_version(text)
    except ValueError as exc:
        raise EngineUnavailable(f"cannot tell which SCT release is installed in {bin_dir} "
                                f"({exc}); use {CONTAINER_IMAGE}, or install SCT "
                                f"{SCT_PINNED_VERSION}: {INSTALL_HINT}") from exc
    if version < SCT_MIN_VERSION:
        raise EngineUnavailable(f"SCT {version} in {bin_dir} is older than {SCT_MIN_VERSION}; "
                                f"use {CONTAINER_IMAGE}, or install SCT {SCT_PINNED_VERSION}: "
                                f"{INSTALL_HINT}")
    if version != SCT_PINNED_VERSION:
        logger.warning("SCT %s found in %s; spinal_bidsapp is tested with SCT %s", version,
                       bin_dir, SCT_PINNED_VERSION)
    return SctInstall(bin_dir=bin_dir, version=version, version_text=text.strip())


def _read_version_file(roots: list[Path]) -> str | None:
    for root in roots:
        for candidate in (root / "spinalcordtoolbox" / "version.txt", root / "version.txt"):
            if candidate.is_file():
                text = candidate.read_text(encoding="utf-8").strip()
                if text:
                    return text
    return None


def sct_unavailable_message(detail: str) -> str:
    return (f"the SCT engine needs the Spinal Cord Toolbox {SCT_PINNED_VERSION}: {detail}; use "
            f"{CONTAINER_IMAGE}, install SCT ({INSTALL_HINT}), or choose --engine builtin")


# ------------------------------------------------------------------------------ capabilities

Capability = Literal["segment_cord", "label_discs", "spine", "rootlets", "register_to_template",
                     "measure_cord"]
"""What a pipeline step asks the engine to do (one :class:`SctEngine` method each)."""

DEEPSEG_MODELS: dict[str, tuple[str, ...]] = {
    "spinalcord": ("model_seg_sc_contrast_agnostic_nnunet",),
    "spine": ("model_seg_spine_contrast_agnostic",),
    "rootlets": ("model_seg_spinal_rootlets_nnunet",),
}
"""Models of each ``sct_deepseg`` task we run, as SCT 7.3 names them (``TASKS[task]['models']``
in ``spinalcordtoolbox/deepseg/models.py``); SCT keeps them in ``$SCT_DIR/data/deepseg_models``."""


def deepseg_task(version: SctVersion, capability: Capability,
                 method: DiscMethod = "auto") -> str | None:
    """The ``sct_deepseg`` task a capability runs on this release; None when it runs none
    (registration, morphometry, ``sct_label_vertebrae``) or predates the task syntax (6.x)."""
    if version < SctVersion(7, 0):
        return None
    if capability == "segment_cord":
        return "spinalcord"
    if capability == "rootlets":
        return "rootlets"
    if capability == "spine" or (capability == "label_discs"
                                 and disc_method_for(version, method) != "label_vertebrae"):
        return "spine" if version >= SctVersion(7, 2) else "totalspineseg"
    return None


def model_installed(folder: Path) -> bool:
    """SCT's own test (``models.is_valid``): the folder holds nnU-Net ``.pth`` or MONAI ``.ckpt``
    weights, or an ivadomed ``<name>.pt``/``.onnx`` with its ``<name>.json``."""
    if not folder.is_dir():
        return False
    if any(folder.rglob("*.pth")) or any(folder.rglob("*.ckpt")):
        return True
    name = folder.name
    return ((folder / f"{name}.pt").is_file() or (folder / f"{name}.onnx").is_file()) and (
        folder / f"{name}.json").is_file()


def missing_models(install: SctInstall, task: str) -> list[str]:
    """Models of ``task`` that are not installed (empty when all are, or the task is unknown)."""
    folder = install.sct_dir / "data" / "deepseg_models"
    return [name for name in DEEPSEG_MODELS.get(task, ()) if not model_installed(folder / name)]


_MODEL_INSTALLING = re.compile(r"Model (\S+) is (?:not installed|out of date)")
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_MISSING_PROGRAM = re.compile(r"(\S+): (?:not available in this SCT install|command not found)"
                              r"|exit status 127")
_NO_NETWORK = re.compile(r"Download error|NameResolutionError|Max retries exceeded|"
                         r"ConnectionError|Temporary failure in name resolution|"
                         r"Network is unreachable")


def environment_failure(log_text: str) -> str | None:
    """Why an SCT run failed for a reason that is not the data, read from its log; None when
    the log shows no such reason (then the failure is the data's, or unknown, and stays fatal).

    The patterns are SCT 7.3's own messages, seen when its deep-learning models are absent:
    ``Model NAME is not installed. Installing it now...`` then, offline, ``Download error`` with
    ``NameResolutionError``; without PyTorch, ``ModuleNotFoundError: No module named 'torch'``;
    a program SCT calls that is absent exits with status 127 (the shell's "command not found").

    >>> environment_failure("Model m is not installed. Installing it now...\\n"
    ...                     "Exception: ('Download error', [ConnectionError()])")
    "SCT's model m is not installed and could not be downloaded (no network)"
    >>> environment_failure("ModuleNotFoundError: No module named 'torch'")
    "SCT's Python environment lacks the module torch"
    >>> environment_failure("isct_spine_detect: not available in this SCT install (...)")
    'SCT lacks a program it calls (isct_spine_detect)'
    >>> environment_failure("ValueError: the image is empty") is None
    True
    """
    installing = _MODEL_INSTALLING.search(log_text)
    module = _MISSING_MODULE.search(log_text)
    offline = _NO_NETWORK.search(log_text) is not None
    if installing is not None:
        why = ("could not be downloaded (no network)" if offline else
               f"could not be installed (SCT lacks the Python module {module.group(1)})"
               if module is not None else "could not be installed")
        return f"SCT's model {installing.group(1)} is not installed and {why}"
    if module is not None:
        return f"SCT's Python environment lacks the module {module.group(1)}"
    program = _MISSING_PROGRAM.search(log_text)
    if program is not None:
        return f"SCT lacks a program it calls ({program.group(1) or 'exit status 127'})"
    if offline:
        return "SCT needed the network, which is unreachable"
    return None

def disc_method_for(version: SctVersion, method: DiscMethod) -> Literal["spine", "totalspineseg",
                                                                        "label_vertebrae"]:
    """Which tool labels discs: ``spine`` 7.2+, ``totalspineseg`` 7.0-7.1, else label_vertebrae."""
    if method == "label_vertebrae" or (method == "auto" and version < SctVersion(7, 0)):
        return "label_vertebrae"
    if version < SctVersion(7, 0):
        raise EngineUnavailable(sct_unavailable_message(
            f"deep-learning disc labels need SCT 7.0 or newer, SCT {version} is installed"))
    return "spine" if version >= SctVersion(7, 2) else "totalspineseg"

