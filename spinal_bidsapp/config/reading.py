"""Merge the command line, a config file and ``SPINAL_BIDSAPP_*`` variables into one ``RunConfig``.

Precedence, lowest to highest: field defaults < ``--config-file`` < environment variables <
command-line flags. Unknown names are errors that suggest the closest known one.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from spinal_bidsapp.config import (
    ENV_PREFIX,
    FIELD_SECTION,
    SECTIONS,
    RunConfig,
    map_seed_configuration,
)
from spinal_bidsapp.config.options import OTHER_VARIABLES, option_aliases
from spinal_bidsapp.errors import ConfigError, MissingInputError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

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

