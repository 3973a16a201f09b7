"""Engines: the external tools (SCT, MINC) or our builtin code behind small protocols.

:func:`resolve_participant_engine` and :func:`resolve_template_engine` run once, at configuration
time. They decide which engine a run uses and return an :class:`EngineChoice` (name, version,
why); :func:`participant_engine` turns a participant choice into the engine object the pipeline
calls (:class:`~spinal_bidsapp.engines.base.ParticipantEngine`).

* participant: ``auto`` = SCT when ``sct_deepseg`` is found (in ``$SCT_DIR/bin`` or on the search
  path) and its version is supported, else builtin; ``sct`` = SCT or :class:`EngineUnavailable`.
* template (group): ``auto`` = builtin (MINC only when asked: same quality at many times the
  cost, see :func:`resolve_template_engine`); ``minc`` = MINC when ``minctracc`` and ``nii2mnc``
  are on the search path and the ``ipl`` package (nist_mni_pipelines) is importable, else
  :class:`EngineUnavailable`.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spinal_bidsapp.engines.base import ParticipantEngine, TemplateBuilder
from spinal_bidsapp.engines.builtin.participant import BuiltinParticipantEngine
from spinal_bidsapp.engines.builtin.protocol import PresetName, preset_options
from spinal_bidsapp.engines.builtin.template import BuiltinTemplateBuilder
from spinal_bidsapp.engines.minc import MincTemplateBuilder, minc_options, minctracc_version
from spinal_bidsapp.engines.sct.install import SctInstall, locate_sct, sct_unavailable_message
from spinal_bidsapp.engines.sct.participant import SctParticipantEngine
from spinal_bidsapp.engines.tools import find_tool
from spinal_bidsapp.errors import EngineUnavailable

logger = logging.getLogger(__name__)

ParticipantEngineKind = Literal["auto", "builtin", "sct"]
TemplateEngineKind = Literal["auto", "builtin", "minc"]
EngineName = Literal["builtin", "sct", "minc"]

MINC_PROGRAMS = ("minctracc", "nii2mnc")
MINC_INSTALL_HINT = (
    "use the spinal_bidsapp container image (MINC toolkit and nist_mni_pipelines inside), or "
    "install minc-toolkit-v2 and nist_mni_pipelines (see docs/reference/minc_ipl.md)"
)


@dataclass(frozen=True)
class EngineChoice:
    """Outcome of engine resolution, recorded in the run's provenance."""

    name: EngineName
    version: str | None
    """Tool version (SCT release, minctracc version); None for the builtin engine."""
    reason: str
    """Why this engine: requested, or what auto-detection found."""
    sct: SctInstall | None = None
    """The SCT installation to construct
    :class:`~spinal_bidsapp.engines.sct.commands.SctEngine` with."""


def resolve_participant_engine(kind: ParticipantEngineKind, *, sct_dir: Path | None,
                               search_path: str | None = None) -> EngineChoice:
    """Pick the participant engine (see module docstring).

    Parameters
    ----------
    kind : {'auto', 'builtin', 'sct'}
    sct_dir : Path or None
        ``$SCT_DIR`` as read by the configuration.
    search_path : str, optional
        ``os.pathsep``-separated folders to search instead of ``PATH`` (tests).

    Raises
    ------
    EngineUnavailable
        ``kind='sct'`` and SCT, or one of its programs, is missing or too old.
    """
    if kind == "builtin":
        return EngineChoice(name="builtin", version=None, reason="requested")
    try:
        install = locate_sct(sct_dir=sct_dir, search_path=search_path)
        if install is None:
            where = f"$SCT_DIR/bin ({sct_dir}/bin) or PATH" if sct_dir else "PATH ($SCT_DIR unset)"
            raise EngineUnavailable(sct_unavailable_message(f"sct_deepseg not found on {where}"))
        missing = install.missing_programs()
        if missing:
            raise EngineUnavailable(sct_unavailable_message(
                f"{install.bin_dir} lacks {', '.join(missing)}"))
    except EngineUnavailable as exc:
        if kind == "sct":
            raise
        logger.info("SCT not usable (%s); using the builtin participant engine", exc)
        return EngineChoice(name="builtin", version=None, reason=f"auto: {exc}")
    reason = "requested" if kind == "sct" else f"auto: SCT found in {install.bin_dir}"
    return EngineChoice(name="sct", version=install.version_text, reason=reason, sct=install)


def participant_engine(choice: EngineChoice, *, kind: ParticipantEngineKind,
                       sct_dir: Path | None, threads: int) -> ParticipantEngine:
    """The engine object of a participant choice.

    SCT comes with the builtin engine as its per-step fallback, and under ``--engine auto`` as
    the registration candidate that competes with SCT's (so ``auto`` is never worse than the
    builtin engine); ``--engine sct`` keeps SCT's registration. ``sct_dir``: ``$SCT_DIR`` (the
    builtin engine still finds SCT's normative database there).
    """
    builtin = BuiltinParticipantEngine(sct_dir=sct_dir)
    if choice.sct is None:
        return builtin
    return SctParticipantEngine(choice.sct, threads=threads, fallback=builtin,
                                candidate=builtin if kind == "auto" else None)


def resolve_template_engine(kind: TemplateEngineKind, *, search_path: str | None = None
                            ) -> EngineChoice:
    """Pick the group template engine (see module docstring).

    ``auto`` is the builtin engine even where MINC is installed: on the benchmark
    (``benchmarks/engines_minc.py``, docs/benchmarks.md) the MINC engine gave a template of the
    same quality at many times the wall time (hours for ``make demo``), so it runs only when
    asked for; the reason says what was found (the group level logs it).

    Raises
    ------
    EngineUnavailable
        ``kind='minc'`` and a MINC program or the ``ipl`` package is missing.
    """
    if kind == "builtin":
        return EngineChoice(name="builtin", version=None, reason="requested")
    missing = [name for name in MINC_PROGRAMS if find_tool(name, search_path=search_path) is None]
    if importlib.util.find_spec("ipl") is None:
        missing.append("the Python package ipl (nist_mni_pipelines)")
    message = f"the MINC template engine needs {', '.join(missing)}; {MINC_INSTALL_HINT}"
    if kind == "auto":
        found = f"MINC not usable ({message})" if missing else "MINC is installed"
        reason = (f"auto: builtin; {found}, but the MINC engine runs only with "
                  "--template-engine minc: same template quality at many times the wall time "
                  "(docs/benchmarks.md)")
        return EngineChoice(name="builtin", version=None, reason=reason)
    if missing:
        raise EngineUnavailable(message + ", or choose --template-engine builtin")
    return EngineChoice(name="minc", version=minctracc_version(search_path=search_path),
                        reason="requested")


TEMPLATE_ENGINES_WITHOUT_WARPS = frozenset({"minc"})
"""Template engines that hand back no per-subject warps (``TemplateBuildResult.warps`` empty):
the MINC engine (ipl) keeps its transforms in MINC form."""


def template_builder(choice: EngineChoice, *, preset: PresetName, symmetric: bool, seed: int,
                     threads_per_worker: int) -> tuple[TemplateBuilder, str]:
    """The template builder of a group choice, and its name for ``GeneratedBy``."""
    if choice.name == "minc":
        return (MincTemplateBuilder(minc_options(preset, symmetric=symmetric)),
                "MINC nist_mni_pipelines")
    options = preset_options(preset, symmetric=symmetric, seed=seed,
                             threads_per_worker=threads_per_worker)
    return BuiltinTemplateBuilder(options), "spinal_bidsapp template loop"


__all__ = [
    "TEMPLATE_ENGINES_WITHOUT_WARPS",
    "EngineChoice",
    "EngineName",
    "ParticipantEngineKind",
    "TemplateEngineKind",
    "minctracc_version",
    "participant_engine",
    "resolve_participant_engine",
    "resolve_template_engine",
    "template_builder",
]
