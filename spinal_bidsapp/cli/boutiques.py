"""Boutiques descriptor of the command line, generated from the argparse parser.

``spinal_bidsapp --bids-exec-spec`` prints it; nothing is stored in the repository, so the
descriptor cannot drift from :func:`spinal_bidsapp.cli.parser.build_parser`. The layout follows the
BIDS-App template shipped with Boutiques (``boutiques/templates/bids-app.json``): the command line
starts ``mkdir -p [OUTPUT_DIR]; spinal_bidsapp [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL]
[PARTICIPANT_LABEL] [SESSION_LABEL]``, the output folder is offered both as a new name (String)
and as an existing participant-level folder (File), and the folder is the only output, so
``bosh validate --bids`` accepts it. ``custom.BIDSAppSpecVersion`` is 1.0.0: the positional BIDS
Apps 1.0 interface (levels ``participant``/``group``). The draft execution specification's argument
ids (``InputDataset``, ``OutputLocation``, ``AnalysisLevel`` with levels such as ``subject`` and
``dataset``) describe another interface and are not used; its exit codes are (:data:`ERROR_CODES`).

Mapping of argparse actions (options are always optional; no default values are declared, because
Boutiques would then pass them on every invocation):

==============================  =====================================================
argparse                        Boutiques input
==============================  =====================================================
``store_true``/``store_false``  ``Flag``
``count`` (``-v``)              ``Flag`` (given once)
``type=int`` / ``float``        ``Number`` (``integer`` for int)
``type=Path`` (or a validator)  ``File``; ``String`` for folders the app creates
``choices``                     ``value-choices``
``nargs='+'``                   ``list`` with at least one entry
==============================  =====================================================
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from spinal_bidsapp import __version__

SCHEMA_VERSION = "0.5"
BIDS_APP_SPEC_VERSION = "1.0.0"
"""BIDS Apps execution specification the command line follows (``custom.BIDSAppSpecVersion``)."""
CODE_URL = "https://github.com/spinal-bidsapp/spinal_bidsapp"
CONTAINER_REPOSITORY = "ghcr.io/spinal-bidsapp/spinal_bidsapp"
"""Where the Dockerfile's image is published; the tag is the package version."""
EXECUTABLE = "spinal_bidsapp"

ERROR_CODES: dict[int, str] = {
    1: "unexpected error, or some subjects failed in a multi-subject run",
    16: "the input dataset failed BIDS validation",
    17: "unknown analysis level",
    18: "the participant/session selection matched nothing",
    64: "usage error (bad option, engine not installed, bad configuration)",
    65: "unusable input data (corrupt or 4-D image, empty mask, discs out of order)",
    66: "required input missing (no cord mask, cord shorter than --min-cord-coverage)",
    73: "output folder cannot be created or written",
    74: "a write failed",
    75: "temporary failure (a lock held by another job); retry",
}
"""Exit codes, as in the table of ``docs/usage.md`` (0 is success)."""

_SKIPPED_DESTS = frozenset({"help", "version", "bids_exec_spec"})
"""Actions that print something and exit instead of configuring a run."""
_CREATED_FOLDERS = frozenset({"work_dir"})
"""Path options naming a folder the app creates: a String, not an existing File."""
_SPECIAL_KEYS = {"participant_label": "[PARTICIPANT_LABEL]", "session_label": "[SESSION_LABEL]"}


def container_image(version: str = __version__) -> str:
    """Image reference built from the Dockerfile for ``version`` (``REPOSITORY:VERSION``)."""
    return f"{CONTAINER_REPOSITORY}:{version}"


def descriptor(parser: argparse.ArgumentParser | None = None) -> dict[str, Any]:
    """The Boutiques descriptor (schema 0.5) of ``parser``, default the application's own.

    Returns
    -------
    dict
        JSON-serialisable descriptor; ``bosh validate`` (and ``--bids``) accepts it.
    """
    if parser is None:
        from spinal_bidsapp.cli.parser import build_parser

        parser = build_parser()
    options = [action for action in parser._actions
               if action.option_strings and action.dest not in _SKIPPED_DESTS]
    inputs = [*_positional_inputs(parser), *(_option_input(action) for action in options)]
    special = [_SPECIAL_KEYS[a.dest] for a in options if a.dest in _SPECIAL_KEYS]
    others = [entry["value-key"] for entry in inputs
              if entry["value-key"] not in {"[BIDS_DIR]", "[OUTPUT_DIR]", "[ANALYSIS_LEVEL]",
                                            *special}]
    command = " ".join(["mkdir -p [OUTPUT_DIR];", EXECUTABLE, "[BIDS_DIR]", "[OUTPUT_DIR]",
                        "[ANALYSIS_LEVEL]", *special, *others])
    return {
        "name": "spinal_bidsapp",
        "tool-version": __version__,
        "description": (parser.description or "") + f" See {CODE_URL}.",
        "author": "spinal_bidsapp developers",
        "url": CODE_URL,
        "command-line": command,
        "schema-version": SCHEMA_VERSION,
        "container-image": {"type": "docker", "image": container_image()},
        "inputs": inputs,
        "groups": [{
            "id": "output_directory",
            "name": "Output directory",
            "description": "A new folder name for a participant-level run, or the folder "
                           "holding participant-level results for a group-level run.",
            "members": ["output_dir_name", "participant_level_analysis_dir"],
            "mutually-exclusive": True,
            "one-is-required": True,
        }],
        "output-files": [{
            "id": "output_dir",
            "name": "Output directory",
            "description": "BIDS derivatives dataset written by the app.",
            "path-template": "[OUTPUT_DIR]",
            "optional": False,
        }],
        "error-codes": [{"code": code, "description": text}
                        for code, text in sorted(ERROR_CODES.items())],
        "suggested-resources": {"cpu-cores": 4, "ram": 16, "walltime-estimate": 7200},
        "tags": {"domain": ["neuroinformatics", "mri", "spinal cord"], "bids-app": True},
        "custom": {"BIDSAppSpecVersion": BIDS_APP_SPEC_VERSION},
    }


def _positional_inputs(parser: argparse.ArgumentParser) -> list[dict[str, Any]]:
    dests = [action.dest for action in parser._actions if not action.option_strings]
    if dests != ["bids_dir", "output_dir", "analysis_level"]:
        raise ValueError(f"expected the BIDS-App positionals, got {dests}")
    from spinal_bidsapp.cli.parser import ANALYSIS_LEVELS

    output_help = _help_of(parser, "output_dir")
    return [
        {"id": "bids_dir", "name": "BIDS directory", "type": "File",
         "description": _help_of(parser, "bids_dir"), "value-key": "[BIDS_DIR]",
         "optional": False},
        {"id": "output_dir_name", "name": "Output directory name", "type": "String",
         "description": output_help + " (a new folder)", "value-key": "[OUTPUT_DIR]",
         "optional": True},
        {"id": "participant_level_analysis_dir", "name": "Participant-level output directory",
         "type": "File", "description": output_help + " (holding participant-level results)",
         "value-key": "[OUTPUT_DIR]", "optional": True},
        {"id": "analysis_level", "name": "Analysis level", "type": "String",
         "description": _help_of(parser, "analysis_level"), "value-key": "[ANALYSIS_LEVEL]",
         "value-choices": list(ANALYSIS_LEVELS), "optional": False},
    ]


def _help_of(parser: argparse.ArgumentParser, dest: str) -> str:
    action = next(a for a in parser._actions if a.dest == dest)
    return action.help or dest.replace("_", " ")


def _option_input(action: argparse.Action) -> dict[str, Any]:
    long_flags = [flag for flag in action.option_strings if flag.startswith("--")]
    flag = (long_flags or action.option_strings)[0]
    # A store_false flag (--no-symmetric) is named after the flag, not the field it clears.
    ident = (flag.lstrip("-").replace("-", "_") if isinstance(action, argparse._StoreFalseAction)
             else action.dest)
    entry: dict[str, Any] = {
        "id": ident,
        "name": ident.replace("_", " ").capitalize(),
        "type": _input_type(action),
        "description": action.help or ident.replace("_", " "),
        "value-key": _SPECIAL_KEYS.get(ident, f"[{ident.upper()}]"),
        "command-line-flag": flag,
        "optional": True,
    }
    if action.type is int:
        entry["integer"] = True
    if action.choices is not None:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*"):
        entry["list"] = True
        if action.nargs == "+":
            entry["min-list-entries"] = 1
    return entry


def _input_type(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction
                  | argparse._CountAction):
        return "Flag"
    if action.type in (int, float):
        return "Number"
    if action.dest in _CREATED_FOLDERS:
        return "String"
    if action.type is Path or _returns_path(action):
        return "File"
    return "String"


def _returns_path(action: argparse.Action) -> bool:
    """A validator such as ``cli._existing_file`` whose return annotation is ``Path``."""
    annotations = getattr(action.type, "__annotations__", {})
    return annotations.get("return") in (Path, "Path")


__all__ = ["BIDS_APP_SPEC_VERSION", "CONTAINER_REPOSITORY", "ERROR_CODES", "container_image",
           "descriptor"]
