"""The one run configuration: command line, config file and environment all feed ``RunConfig``.

Precedence, lowest to highest: field defaults < ``--config-file`` < ``SPINAL_BIDSAPP_<OPTION>``
environment variables < command-line flags. Files and variables name a setting by its field name
or by its long option name (``template_resolution``, ``SPINAL_BIDSAPP_MIN_CORD_COVERAGE``);
unknown names are errors. The resolved configuration is saved with every run
(``<work>/<run_uuid>/config.json`` and ``<out>/logs/config-<run_uuid>.json``) and can be fed back
with ``--config-file``. This module is the only place that reads ``os.environ``. It also holds
the command line as data (``POSITIONALS``, ``OPTIONS``): the argparse parser, the Boutiques
descriptor and the long option names accepted here are all built from that one table.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import re
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spinal_bidsapp.errors import ConfigError, MissingInputError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Contrast = Literal["T2w", "T1w", "T2starw"]
"""BIDS suffix of an anatomy the package reads (the one definition: engines, levels, options)."""
SCT_CONTRAST: dict[str, str] = {"T2w": "t2", "T1w": "t1", "T2starw": "t2s"}
"""BIDS suffix -> SCT's contrast name: ``-c`` of SCT's tools, the ``info_label.txt`` key of a
template's image, the ``contrast`` of the neuropoly template ``configuration.json``. Here, the
lowest layer that needs it (:func:`map_seed_configuration`); engines and templates import it."""
ParticipantEngine = Literal["auto", "builtin", "sct"]
TemplateEngine = Literal["auto", "builtin", "minc"]
TemplatePreset = Literal["seed", "fast"]
AnalysisLevel = Literal["participant", "group"]
ANALYSIS_LEVELS: tuple[str, ...] = get_args(AnalysisLevel)

ENV_PREFIX = "SPINAL_BIDSAPP_"
DEFAULT_CONTRASTS: tuple[Contrast, ...] = ("T2w", "T1w")
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9]+$")


def _strict() -> ConfigDict:
    return ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _default_nprocs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class ExecutionConfig(BaseModel):
    """Where data lives, what is selected, and how the run uses the machine."""

    model_config = _strict()

    bids_dir: Path
    output_dir: Path
    analysis_level: AnalysisLevel
    work_dir: Path | None = None
    """Intermediate files; default ``<output_dir>/work`` so reruns resume (in .bidsignore)."""
    participant_label: list[str] | None = None
    session_label: list[str] | None = None
    bids_filter: dict[str, dict[str, Any]] | None = None
    """PyBIDS-style filters per contrast, e.g. ``{"T2w": {"acquisition": "sag"}}``."""
    derivatives: dict[str, Path] = Field(default_factory=dict)
    """Extra derivative folders (``-d name=path``); ``labels`` overrides ``derivatives/labels``."""
    nprocs: int = Field(default_factory=_default_nprocs, ge=1)
    omp_nthreads: int | None = Field(default=None, ge=1)
    """Threads per process (ITK, BLAS); default: nprocs divided among parallel subjects."""
    mem_gb: float | None = Field(default=None, gt=0)
    skip_bids_validation: bool = False
    stop_on_first_crash: bool = False
    reports_only: bool = False
    verbose: int = Field(default=0, ge=0)
    run_uuid: str = Field(
        default_factory=lambda: datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S_")
        + uuid.uuid4().hex[:8]
    )

    @field_validator("participant_label", "session_label", mode="before")
    @classmethod
    def _strip_prefix(cls, value: Any, info: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, (str, int)):  # one label, also a number from JSON/TOML/env
            value = str(value).split()
        prefix = "sub-" if info.field_name == "participant_label" else "ses-"
        cleaned = []
        for item in value:
            label = str(item).strip()
            label = label[len(prefix):] if label.startswith(prefix) else label
            if not LABEL_PATTERN.match(label):
                raise ValueError(
                    f"invalid label {item!r}: BIDS labels contain only letters and digits"
                )
            cleaned.append(label)
        return sorted(set(cleaned), key=cleaned.index) or None

    @model_validator(mode="after")
    def _check_paths(self) -> ExecutionConfig:
        bids = self.bids_dir.resolve()
        out = self.output_dir.resolve()
        if out == bids:
            raise ValueError("the output directory must differ from the BIDS directory")
        if bids in out.parents and (bids / "derivatives") not in (out, *out.parents):
            raise ValueError(
                f"the output directory {self.output_dir} is inside the input dataset; "
                f"use a folder outside it or under {self.bids_dir / 'derivatives'}"
            )
        if self.work_dir is not None:
            work = self.work_dir.resolve()
            if work == bids or bids in work.parents:
                raise ValueError(f"the work directory {self.work_dir} is inside the input dataset")
        return self

    @property
    def resolved_work_dir(self) -> Path:
        return (self.work_dir or self.output_dir / "work").resolve()

    @property
    def labels_dir(self) -> Path:
        return self.derivatives.get("labels", self.bids_dir / "derivatives" / "labels")


class ParticipantConfig(BaseModel):
    """Options of the per-subject cord reference."""

    model_config = _strict()

    contrast: list[Contrast] = Field(default_factory=lambda: list(DEFAULT_CONTRASTS), min_length=1)
    """Anatomy that drives the pipeline, in order of preference (first found wins)."""
    data_type: str = "anat"
    first_disc: int | None = Field(default=None, ge=1, le=60)
    last_disc: int | None = Field(default=None, ge=1, le=60)
    min_cord_coverage_mm: float = Field(default=20.0, gt=0)
    engine: ParticipantEngine = "auto"
    template_dir: Path | None = None
    """A PAM50 folder in SCT's layout; else $SCT_DIR/data/PAM50, then the cache, then download."""
    init_disc: str | None = None
    """``LABEL@Z_MM``: a disc the user has identified for the builtin disc labelling (SCT's
    ``-initz``), e.g. ``3@12.5`` = C2/C3 at world (scanner RAS) z = 12.5 mm."""

    @field_validator("init_disc")
    @classmethod
    def _check_init_disc(cls, value: str | None) -> str | None:
        if value is not None:
            parse_init_disc(value)
        return value

    @property
    def init_disc_hint(self) -> tuple[int, float] | None:
        """``init_disc`` as ``(disc value, z mm)``."""
        return parse_init_disc(self.init_disc) if self.init_disc is not None else None

    @model_validator(mode="after")
    def _check_discs(self) -> ParticipantConfig:
        if self.first_disc and self.last_disc and self.first_disc > self.last_disc:
            raise ValueError(
                f"first_disc ({self.first_disc}) must be above (<=) last_disc ({self.last_disc})"
            )
        return self


def parse_init_disc(text: str) -> tuple[int, float]:
    """``'LABEL@Z_MM'`` -> ``(disc value 1-30, z mm)``.

    >>> parse_init_disc("3@-12.5")
    (3, -12.5)
    """
    label, sep, z_mm = text.partition("@")
    try:
        value, z = int(label), float(z_mm)
    except ValueError:
        value, z = 0, float("nan")
    if not sep or not 1 <= value <= 30 or not math.isfinite(z):
        raise ValueError("init_disc must be LABEL@Z_MM with a disc value 1-30 (SCT numbering) "
                         "and a height in mm, e.g. 3@12.5")
    return value, z


class GroupConfig(BaseModel):
    """Options of the population template."""

    model_config = _strict()

    template_engine: TemplateEngine = "auto"
    template_name: str = Field(default="SpinalCord", pattern=r"^[A-Za-z0-9]+$")
    template_resolution_mm: float = Field(default=0.5, gt=0, le=4)
    template_xy_size_mm: float = Field(default=20.0, gt=2, le=100)
    """Half-width of the template's field of view around the cord (SCT's -xy-size is 35)."""
    template_margin_mm: float = Field(default=10.0, ge=0, le=100)
    """Template extent beyond the top and bottom discs."""
    template_preset: TemplatePreset = "seed"
    """Template-loop protocol: seed = 8/4/2/1 mm x 4 iterations; fast = demo/tests."""
    template_symmetric: bool = True
    no_disc_alignment: bool = False
    """Template space from the mean cord length only (arc-length proportional between the first
    and last disc common to all subjects, or between the cord ends when there are no discs)."""
    register_to: str | None = None
    """``PAM50`` (found like the participant level's) or a folder in SCT's template layout: the
    finished template is registered to it (needs disc alignment)."""
    contrasts: list[Contrast] | None = Field(default=None, min_length=1)
    """Contrasts of the template, the first the driving one (the participant outputs'); the
    others are registered to it per subject and averaged on the same grid. None: driving only."""

    @model_validator(mode="after")
    def _check_register_to(self) -> GroupConfig:
        if self.register_to is not None and self.no_disc_alignment:
            raise ValueError("register_to needs the template's disc labels: it cannot be used "
                             "with no_disc_alignment (drop one of --register-to and "
                             "--no-disc-alignment)")
        return self

    @model_validator(mode="after")
    def _check_contrasts(self) -> GroupConfig:
        if self.contrasts is not None and len(set(self.contrasts)) != len(self.contrasts):
            raise ValueError(f"contrasts {self.contrasts} lists a contrast twice")
        return self


class SeedsConfig(BaseModel):
    model_config = _strict()

    random_seed: int = 0


class RunConfig(BaseModel):
    """Everything a run needs; frozen so that no step can change it behind another's back."""

    model_config = _strict()

    execution: ExecutionConfig
    participant: ParticipantConfig = Field(default_factory=ParticipantConfig)
    group: GroupConfig = Field(default_factory=GroupConfig)
    seeds: SeedsConfig = Field(default_factory=SeedsConfig)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)


SECTIONS: dict[str, type[BaseModel]] = {
    "execution": ExecutionConfig,
    "participant": ParticipantConfig,
    "group": GroupConfig,
    "seeds": SeedsConfig,
}
FIELD_SECTION: dict[str, str] = {
    name: section for section, model in SECTIONS.items() for name in model.model_fields
}

SEED_CONTRASTS = {sct: bids for bids, sct in SCT_CONTRAST.items()}
"""``contrast`` values of the neuropoly template ``configuration.json`` (SCT contrast names)."""


def map_seed_configuration(data: Mapping[str, Any]) -> dict[str, Any]:
    """Translate the neuropoly template ``configuration.json`` keys onto our field names.

    >>> map_seed_configuration({"path_data": "/d", "include_list": "sub-01 sub-02",
    ...                         "suffix_image": "_T2w", "last_disc": 8})
    ... # doctest: +NORMALIZE_WHITESPACE
    {'bids_dir': '/d', 'participant_label': ['sub-01', 'sub-02'], 'contrast': ['T2w'],
     'last_disc': 8}
    """
    mapped: dict[str, Any] = {}
    for key, value in data.items():
        if key == "path_data":
            mapped["bids_dir"] = value
        elif key == "include_list":
            mapped["participant_label"] = value.split() if isinstance(value, str) else value
        elif key == "suffix_image":
            mapped["contrast"] = [str(value).lstrip("_")]
        elif key == "contrast" and isinstance(value, str):
            # the seed's SCT contrast name (t1/t2/t2s), or one BIDS suffix
            if "suffix_image" not in data:
                mapped["contrast"] = [SEED_CONTRASTS.get(value.lower(), value)]
        else:
            mapped[key] = value
    return mapped


DESCRIPTION = ("Spinal cord MRI BIDS App: per-subject cord reference (participant) and unbiased "
               "population templates (group).")
"""What the program does: ``--help`` and the Boutiques descriptor."""

OptionKind = Literal["value", "store_true", "store_false", "count"]
ValueKind = Literal["text", "int", "float", "path", "new_folder", "existing_file", "name_path"]


@dataclass(frozen=True)
class Option:
    """One command-line argument, as data: ``cli.parser`` builds argparse from it,
    ``cli.boutiques`` the descriptor, and config files and ``SPINAL_BIDSAPP_<OPTION>`` accept
    its long names (:func:`option_aliases`).

    ``value`` says what a value is: ``path`` (an existing file or folder), ``new_folder`` (one
    the app creates), ``existing_file`` (checked when parsed), ``name_path`` (``NAME=PATH``).
    ``setting`` is False for options that are not ``RunConfig`` fields.
    """

    flags: tuple[str, ...]
    dest: str
    help: str
    group: str = ""
    kind: OptionKind = "value"
    value: ValueKind = "text"
    nargs: Literal["+"] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    setting: bool = True


POSITIONALS = (
    Option((), "bids_dir", "root of the input BIDS dataset", value="path"),
    Option((), "output_dir", "where derivatives are written", value="path"),
    Option((), "analysis_level", "participant: per-subject processing; group: template building",
           metavar="{participant,group}"),
)
"""The BIDS-App positionals, in order."""

_SEL, _PROC, _RUN = "data selection", "processing", "execution"
OPTIONS = (
    Option(("--participant-label", "--participant_label"), "participant_label",
           "subjects to process (01 or sub-01)", _SEL, nargs="+", metavar="LABEL"),
    Option(("--session-label", "--session_label", "--session-id"), "session_label",
           "sessions to process (1 or ses-1)", _SEL, nargs="+", metavar="LABEL"),
    Option(("--bids-filter-file",), "bids_filter_file",
           'JSON of PyBIDS filters per contrast, e.g. {"T2w": {"acquisition": "sag"}}', _SEL,
           value="existing_file", metavar="FILE"),
    Option(("--contrast", "--suffix"), "contrast",
           "anatomy driving the pipeline, in order of preference (default: T2w T1w)", _SEL,
           nargs="+", choices=get_args(Contrast)),
    Option(("--data-type",), "data_type", "BIDS datatype folder (default: anat)", _SEL),
    Option(("--first-disc",), "first_disc",
           "top disc to use (SCT numbering: 2 = C1/C2, 3 = C2/C3, ...)", _SEL, value="int"),
    Option(("--last-disc",), "last_disc", "bottom disc to use", _SEL, value="int"),
    Option(("--init-disc",), "init_disc",
           "a disc you have identified, for the builtin disc labelling (like SCT's -initz): "
           "disc value @ world z in mm, e.g. 3@12.5 = C2/C3", _SEL, metavar="LABEL@Z_MM"),
    Option(("-d", "--derivatives"), "derivatives",
           "extra derivative folders; 'labels=PATH' replaces derivatives/labels", _SEL,
           value="name_path", nargs="+", metavar="NAME=PATH"),
    Option(("--engine",), "engine",
           "participant engine (default auto: SCT when installed, else builtin)", _PROC,
           choices=get_args(ParticipantEngine)),
    Option(("--template-engine",), "template_engine",
           "group template engine (default auto: builtin; minc only when asked, see "
           "docs/engines.md)", _PROC, choices=get_args(TemplateEngine)),
    Option(("--template-dir",), "template_dir",
           "PAM50 folder in SCT layout (default: $SCT_DIR/data/PAM50, cache)", _PROC,
           value="path"),
    Option(("--min-cord-coverage",), "min_cord_coverage_mm",
           "minimum cord length in the image (default: 20 mm)", _PROC, value="float",
           metavar="MM"),
    Option(("--template-name",), "template_name",
           "name of the group template (default: SpinalCord)", _PROC),
    Option(("--template-resolution",), "template_resolution_mm",
           "template voxel size (default: 0.5 mm)", _PROC, value="float", metavar="MM"),
    Option(("--template-xy-size",), "template_xy_size_mm",
           "template half-width around the cord (default: 20 mm)", _PROC, value="float",
           metavar="MM"),
    Option(("--template-preset",), "template_preset",
           "template iterations: seed = 8/4/2/1 mm x 4 (default), fast = demo", _PROC,
           choices=get_args(TemplatePreset)),
    Option(("--no-symmetric",), "template_symmetric",
           "do not build a left-right symmetric template", _PROC, kind="store_false"),
    Option(("--no-disc-alignment",), "no_disc_alignment",
           "group template from the mean cord length only (no disc matching); subjects need "
           "only a cord mask", _PROC, kind="store_true"),
    Option(("--register-to",), "register_to",
           "register the new template to PAM50 (found like --template-dir) or to a template "
           "folder in SCT's layout", _PROC, metavar="PAM50|DIR"),
    Option(("--contrasts",), "contrasts",
           "group: template contrasts, the first the participant outputs' (driving) one, e.g. "
           "T2w T1w T2starw (default: the driving one only)", _PROC, nargs="+",
           choices=get_args(Contrast), metavar="CONTRAST"),
    Option(("--config-file",), "config_file",
           "JSON or TOML settings (also the seed pipeline's configuration.json)", _RUN,
           value="path", metavar="FILE", setting=False),
    Option(("-w", "--work-dir"), "work_dir",
           "intermediate files, reused to resume (default: OUTPUT_DIR/work)", _RUN,
           value="new_folder"),
    Option(("--nprocs", "--n-cpus", "--n_cpus", "--nthreads"), "nprocs",
           "processes to use (default: all available cores)", _RUN, value="int"),
    Option(("--omp-nthreads",), "omp_nthreads", "threads per process (ITK, BLAS)", _RUN,
           value="int"),
    Option(("--mem-gb", "--mem_gb"), "mem_gb", "memory budget in GB", _RUN, value="float"),
    Option(("--random-seed",), "random_seed", "seed (default 0)", _RUN, value="int"),
    Option(("--skip-bids-validation", "--skip_bids_validation", "--skip_bids_validator"),
           "skip_bids_validation", "do not run the BIDS validator on the input", _RUN,
           kind="store_true"),
    Option(("--stop-on-first-crash",), "stop_on_first_crash",
           "abort at the first failing subject instead of finishing the others", _RUN,
           kind="store_true"),
    Option(("--reports-only",), "reports_only", "only rebuild reports from existing outputs",
           _RUN, kind="store_true"),
    Option(("--notrack",), "notrack",
           "accepted for NiPreps compatibility; spinal_bidsapp sends nothing", _RUN,
           kind="store_true", setting=False),
    Option(("-v", "--verbose"), "verbose", "more log output; -v also shows tracebacks", _RUN,
           kind="count", setting=False),
)
"""Every option, in ``--help`` order (each group's options together)."""


def option_aliases() -> dict[str, tuple[str, bool]]:
    """Long option name in snake_case -> (destination field, inverted flag), for config files
    and ``SPINAL_BIDSAPP_<OPTION>`` variables (e.g. ``min_cord_coverage`` ->
    ``min_cord_coverage_mm``, ``no_symmetric`` -> ``template_symmetric`` inverted)."""
    return {flag[2:].replace("-", "_"): (option.dest, option.kind == "store_false")
            for option in OPTIONS if option.setting
            for flag in option.flags if flag.startswith("--")}


OTHER_VARIABLES = frozenset({"CACHE", "TEST_DATA", "CONTAINER_TYPE", "CONTAINER_TAG", "VERSION",
                             "IMAGE", "SHARED_TOOLS", "REAL_TOOLS"})
"""``SPINAL_BIDSAPP_*`` variables that are not options (cache, containers, tests)."""

LIST_FIELDS = frozenset({"participant_label", "session_label", "contrast", "contrasts"})


def _resolve_key(key: str, value: Any, aliases: Mapping[str, tuple[str, bool]]
                 ) -> tuple[str, Any] | None:
    """``(field, value)`` for a field name or a long option name (``template_resolution``,
    ``no_symmetric``, ``bids_filter_file``...); None when it is neither."""
    if key in FIELD_SECTION:
        dest, inverted = key, False
    elif key in aliases:
        dest, inverted = aliases[key]
    else:
        return None
    if inverted:
        value = not _truthy(value)
    if dest == "bids_filter_file":
        return "bids_filter", read_filter_file(Path(str(value)), origin=key)
    if dest == "derivatives":
        return "derivatives", _derivative_values(value)
    return dest, value


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in {"1", "true", "yes", "on"}


def _derivative_values(value: Any) -> Any:
    """``-d`` values from a file or the environment: a mapping, or ``NAME=PATH`` words."""
    if isinstance(value, str):
        value = value.split()
    if isinstance(value, list):
        return dict(derivative_pair(str(item)) for item in value)
    return value


def derivative_pair(value: str) -> tuple[str, Path]:
    """``NAME=PATH`` -> (name, path); a bare path is named by its folder."""
    name, sep, path = value.partition("=")
    if not sep:
        return Path(value).name, Path(value)
    return name, Path(path)


def _unknown(keys: list[str], known: list[str], *, prefix: str = "") -> str:
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
    return ", ".join(hints)


def read_filter_file(path: Path, *, origin: str = "--bids-filter-file") -> dict[str, Any]:
    """The PyBIDS filters of ``--bids-filter-file`` (JSON: contrast -> filters)."""
    if not path.is_file():
        raise MissingInputError(f"{origin}: file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{origin} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ConfigError(
            f"{origin} {path} must map contrasts to filters, e.g. "
            '{"T2w": {"acquisition": "sag"}}'
        )
    return data


def read_config_file(path: Path, *, aliases: Mapping[str, tuple[str, bool]] | None = None
                     ) -> dict[str, Any]:
    """Load a JSON or TOML config file into flat ``{field: value}`` (sections are flattened);
    keys are field names or long option names in snake_case."""
    if not path.is_file():
        raise MissingInputError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    if suffix in {".yaml", ".yml"}:
        raise ConfigError(f"{path}: YAML is not supported; write the settings as JSON (.json) "
                          "or TOML (.toml)")
    text = path.read_text(encoding="utf-8")
    kind = "TOML" if suffix == ".toml" else "JSON"
    try:
        raw = tomllib.loads(text) if kind == "TOML" else json.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} is not valid {kind}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON/TOML object of settings")
    flat: dict[str, Any] = {}
    for key, value in raw.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    flat = map_seed_configuration(flat)
    aliases = option_aliases() if aliases is None else aliases
    resolved: dict[str, Any] = {}
    unknown = []
    for key, value in flat.items():
        found = _resolve_key(key, value, aliases)
        if found is None:
            unknown.append(key)
        else:
            resolved[found[0]] = found[1]
    if unknown:
        names = [f"'{k}'" for k in sorted(unknown)]
        known = [f"'{k}'" for k in [*FIELD_SECTION, *aliases]]
        raise ConfigError(f"{path}: unknown setting(s) {_unknown(names, known)}")
    return resolved


def read_environment(environ: Mapping[str, str], *,
                     aliases: Mapping[str, tuple[str, bool]] | None = None,
                     origins: dict[str, str] | None = None) -> dict[str, Any]:
    """``SPINAL_BIDSAPP_<OPTION>`` variables, by field name or long option name; lists are space
    separated, JSON is accepted. An unknown ``SPINAL_BIDSAPP_*`` variable is an error.
    ``origins``, when given, receives field -> variable name."""
    aliases = option_aliases() if aliases is None else aliases
    values: dict[str, Any] = {}
    unknown = []
    for variable in sorted(environ):
        if not variable.startswith(ENV_PREFIX):
            continue
        key = variable[len(ENV_PREFIX):].lower()
        if key.upper() in OTHER_VARIABLES:
            continue
        raw = environ[variable]
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        name = aliases.get(key, (key, False))[0]
        if isinstance(value, str) and name in LIST_FIELDS:
            value = value.split()
        found = _resolve_key(key, value, aliases)
        if found is None:
            unknown.append(key.upper())
        else:
            values[found[0]] = found[1]
            if origins is not None:
                origins[found[0]] = variable
    if unknown:
        known = sorted({k.upper() for k in [*FIELD_SECTION, *aliases]} | OTHER_VARIABLES)
        raise UsageError(f"unknown environment variable(s) "
                         f"{_unknown(unknown, known, prefix=ENV_PREFIX)}: unset them, or spell "
                         f"the option like its long name (e.g. {ENV_PREFIX}MIN_CORD_COVERAGE)")
    return values


def _format_validation_error(exc: ValidationError, origins: Mapping[str, str]) -> str:
    """One line naming each bad setting, where it came from (command line, config file,
    environment variable), and the value given."""
    parts = []
    for err in exc.errors():
        fields = [str(p) for p in err["loc"] if p not in SECTIONS]
        loc = ".".join(fields)
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) or value is None else f" (got {value!r})"
        origin = origins.get(fields[0], "") if fields else ""
        source = f" [from {origin}]" if origin else ""
        parts.append(f"{loc}{source}: {msg}{shown}" if loc else msg)
    return "invalid configuration: " + "; ".join(parts)


def build_config(cli_values: Mapping[str, Any], *, config_file: Path | None = None,
                 environ: Mapping[str, str] | None = None) -> RunConfig:
    """Merge defaults, config file, environment and command line into one ``RunConfig``."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if config_file is not None:
        from_file = read_config_file(config_file)
        merged.update(from_file)
        origins.update(dict.fromkeys(from_file, f"config file {config_file}"))
    merged.update(read_environment(os.environ if environ is None else environ,
                                   origins=origins))
    cli = {k: v for k, v in cli_values.items() if v is not None}
    merged.update(cli)
    origins.update(dict.fromkeys(cli, "command line"))
    sections: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for key, value in merged.items():
        if key not in FIELD_SECTION:
            raise UsageError(f"unknown setting {key!r}")
        sections[FIELD_SECTION[key]][key] = value
    for required in ("bids_dir", "output_dir", "analysis_level"):
        if required not in sections["execution"]:
            raise UsageError(f"missing {required.replace('_', ' ')} (positional argument)")
    _check_derivatives(merged.get("derivatives") or {}, origins.get("derivatives", ""))
    try:
        return RunConfig(**sections)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origins)) from exc


DERIVATIVE_NAMES = {"labels": "manual labels (cord mask, discs, centerline)"}
"""The derivative folders ``-d`` can name, and what is read from them."""


def _check_derivatives(derivatives: Mapping[str, Any], origin: str) -> None:
    where = f" ({origin})" if origin and origin != "command line" else ""
    for name, path in derivatives.items():
        if name not in DERIVATIVE_NAMES:
            known = ", ".join(f"{k}=PATH: {v}" for k, v in DERIVATIVE_NAMES.items())
            raise UsageError(f"-d/--derivatives{where}: unknown derivative name {name!r} "
                             f"({name}={path}); this app reads only {known}")
        if not Path(path).is_dir():
            raise MissingInputError(f"-d/--derivatives{where}: {name} folder not found: {path}")


THREAD_VARIABLES = (
    "OMP_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS", "NUMEXPR_MAX_THREADS", "VECLIB_MAXIMUM_THREADS",
)
"""Variables that size the thread pools of OpenMP, ITK/ANTs, OpenBLAS, MKL, numexpr, Accelerate."""


def thread_environment(threads: int) -> dict[str, str]:
    """Environment variables that cap native thread pools (ITK, OpenMP, BLAS) at ``threads``."""
    return dict.fromkeys(THREAD_VARIABLES, str(max(1, int(threads))))


def apply_thread_limits(threads: int) -> None:
    """Cap thread pools of this process and its children (call before heavy imports)."""
    os.environ.update(thread_environment(threads))


@contextlib.contextmanager
def scratch_environment(work_dir: Path, run_dir: Path) -> Iterator[Path]:
    """Keep every write of this run (and of its workers and tools) under the work folder:
    matplotlib's config and font cache (``MPLCONFIGDIR``, else ``~/.config``/``~/.cache``) in
    ``<work>/.cache/matplotlib`` (kept, so the font list is built once), temporary files
    (``TMPDIR``, e.g. the builtin SyN's ``spinal_bidsapp_syn_*``) in ``<run>/tmp``, removed at
    the end. Yields the temporary folder; the variables are restored afterwards."""
    mpl = work_dir / ".cache" / "matplotlib"
    tmp = run_dir / "tmp"
    for folder in (mpl, tmp):
        folder.mkdir(parents=True, exist_ok=True)
    names = ("MPLCONFIGDIR", "TMPDIR", "TEMP", "TMP")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update({"MPLCONFIGDIR": str(mpl), **dict.fromkeys(names[1:], str(tmp))})
    tempfile.tempdir = None  # tempfile caches its folder: look again
    try:
        yield tmp
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tempfile.tempdir = None
        shutil.rmtree(tmp, ignore_errors=True)


def data_dir_from_environment(default: Path) -> Path:
    """Shared test/benchmark data root (``SPINAL_BIDSAPP_TEST_DATA``)."""
    return Path(os.environ.get("SPINAL_BIDSAPP_TEST_DATA", str(default)))


def user_cache_dir() -> Path:
    """Template cache: ``$SPINAL_BIDSAPP_CACHE`` or ``$XDG_CACHE_HOME/spinal_bidsapp``."""
    if "SPINAL_BIDSAPP_CACHE" in os.environ:
        return Path(os.environ["SPINAL_BIDSAPP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "spinal_bidsapp"


def sct_dir_from_environment() -> Path | None:
    value = os.environ.get("SCT_DIR")
    return Path(value) if value else None


def container_from_environment() -> dict[str, str] | None:
    """Container provenance set by our images (``SPINAL_BIDSAPP_CONTAINER_TYPE``/``_TAG``)."""
    kind = os.environ.get("SPINAL_BIDSAPP_CONTAINER_TYPE")
    tag = os.environ.get("SPINAL_BIDSAPP_CONTAINER_TAG")
    if not kind:
        return None
    return {"Type": kind, "Tag": tag or "unknown"}
