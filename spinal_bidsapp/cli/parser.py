"""The ``spinal_bidsapp`` argument parser and argv -> ``RunConfig``.

Positionals and options follow the BIDS Apps specification and are defined as data in
:mod:`spinal_bidsapp.config.options` (``POSITIONALS``, ``OPTIONS``), which the Boutiques
descriptor and config files read too; bad usage raises ``UsageError`` (exit 64), an unknown
analysis level ``UnknownAnalysisLevel`` (exit 17).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from spinal_bidsapp import __version__
from spinal_bidsapp.cli.boutiques import descriptor
from spinal_bidsapp.config import ANALYSIS_LEVELS
from spinal_bidsapp.config.options import DESCRIPTION, OPTIONS, POSITIONALS, Option
from spinal_bidsapp.config.reading import build_config, derivative_pair, read_filter_file
from spinal_bidsapp.errors import (
    UnknownAnalysisLevel,
    UsageError,
)


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (exit 64) instead of exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


_VALUE_TYPES: dict[str, Any] = {"text": None, "int": int, "float": float, "path": Path,
                                "new_folder": Path, "existing_file": _existing_file,
                                "name_path": derivative_pair}
"""``Option.value`` -> the argparse ``type``."""


class _PrintBoutiquesDescriptor(argparse.Action):
    """``--bids-exec-spec``: print the Boutiques descriptor (JSON) and exit 0, like --version."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(json.dumps(descriptor(), indent=2))
        parser.exit()


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, option: Option) -> None:
    if option.kind != "value":
        parser.add_argument(*option.flags, dest=option.dest, action=option.kind,
                            help=option.help)
        return
    kwargs: dict[str, Any] = {"help": option.help}
    if option.flags:
        kwargs["dest"] = option.dest
    if _VALUE_TYPES[option.value] is not None:
        kwargs["type"] = _VALUE_TYPES[option.value]
    for name in ("nargs", "metavar"):
        if getattr(option, name) is not None:
            kwargs[name] = getattr(option, name)
    if option.choices is not None:
        kwargs["choices"] = list(option.choices)
    parser.add_argument(*(option.flags or (option.dest,)), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spinal_bidsapp", description=DESCRIPTION,
                     argument_default=argparse.SUPPRESS)
    for positional in POSITIONALS:
        _add(parser, positional)
    parser.add_argument("--version", action="version", version=f"spinal_bidsapp {__version__}")
    parser.add_argument("--bids-exec-spec", action=_PrintBoutiquesDescriptor, nargs=0,
                        help="print the Boutiques descriptor of this command line and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS:
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        _add(groups[option.group], option)
    return parser


def parse_config(argv: Sequence[str]) -> Any:
    """argv -> ``RunConfig`` (raises ``UsageError``/``ConfigError`` on bad input)."""
    args = vars(build_parser().parse_args(list(argv)))
    level = args.get("analysis_level")
    if level not in ANALYSIS_LEVELS:
        raise UnknownAnalysisLevel(
            f"unknown analysis level {level!r}: choose 'participant' or 'group'"
        )
    args.pop("notrack", None)
    config_file = args.pop("config_file", None)
    filter_file = args.pop("bids_filter_file", None)
    if filter_file is not None:
        args["bids_filter"] = read_filter_file(filter_file)
    if "derivatives" in args:
        args["derivatives"] = dict(args["derivatives"])
    return build_config(args, config_file=config_file)
