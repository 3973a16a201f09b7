"""Boutiques descriptor of the command line, generated from the option table.

``spinal_bidsapp --bids-exec-spec`` prints it; nothing is stored in the repository, so the
descriptor cannot drift from the parser: both are built from ``POSITIONALS`` and ``OPTIONS`` in
:mod:`spinal_bidsapp.config.options`. The layout follows the
BIDS-App template shipped with Boutiques (``boutiques/templates/bids-app.json``): the command line
starts ``mkdir -p [OUTPUT_DIR]; spinal_bidsapp [BIDS_DIR] [OUTPUT_DIR] [ANALYSIS_LEVEL]
[PARTICIPANT_LABEL] [SESSION_LABEL]``, the output folder is offered both as a new name (String)
and as an existing participant-level folder (File), and the folder is the only output, so
``bosh validate --bids`` accepts it. ``custom.BIDSAppSpecVersion`` is 1.0.0: the positional BIDS
Apps 1.0 interface (levels ``participant``/``group``). The draft execution specification's argument
ids (``InputDataset``, ``OutputLocation``, ``AnalysisLevel`` with levels such as ``subject`` and
``dataset``) describe another interface and are not used; its exit codes are (:data:`ERROR_CODES`).

Mapping of the options (always optional; no default values are declared, because Boutiques
would then pass them on every invocation):

=====================================  ==============================================
``options.Option``                     Boutiques input
=====================================  ==============================================
``store_true``/``store_false``         ``Flag``
``count`` (``-v``)                     ``Flag`` (given once)
value ``int`` / ``float``              ``Number`` (``integer`` for int)
value ``path`` / ``existing_file``     ``File``; ``String`` for a ``new_folder``
``choices``                            ``value-choices``
``nargs='+'``                          ``list`` with at least one entry
=====================================  ==============================================
"""

from __future__ import annotations

from typing import Any

from spinal_bidsapp import __version__
from spinal_bidsapp.config import ANALYSIS_LEVELS
from spinal_bidsapp.config.options import DESCRIPTION, OPTIONS, POSITIONALS, Option

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

_SPECIAL_KEYS = {"participant_label": "[PARTICIPANT_LABEL]", "session_label": "[SESSION_LABEL]"}


def container_image(version: str = __version__) -> str:
    """Image reference built from the Dockerfile for ``version`` (``REPOSITORY:VERSION``)."""
    return f"{CONTAINER_REPOSITORY}:{version}"


def descriptor() -> dict[str, Any]:
    """The Boutiques descriptor (schema 0.5) of the command line.

    Returns
    -------
    dict
        JSON-serialisable descriptor; ``bosh validate`` (and ``--bids``) accepts it.
    """
    inputs = [*_positional_inputs(), *(_option_input(option) for option in OPTIONS)]
    special = [_SPECIAL_KEYS[o.dest] for o in OPTIONS if o.dest in _SPECIAL_KEYS]
    others = [entry["value-key"] for entry in inputs
              if entry["value-key"] not in {"[BIDS_DIR]", "[OUTPUT_DIR]", "[ANALYSIS_LEVEL]",
                                            *special}]
    command = " ".join(["mkdir -p [OUTPUT_DIR];", EXECUTABLE, "[BIDS_DIR]", "[OUTPUT_DIR]",
                        "[ANALYSIS_LEVEL]", *special, *others])
    return {
        "name": "spinal_bidsapp",
        "tool-version": __version__,
        "description": DESCRIPTION + f" See {CODE_URL}.",
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


def _positional_inputs() -> list[dict[str, Any]]:
    helps = {positional.dest: positional.help for positional in POSITIONALS}
    if list(helps) != ["bids_dir", "output_dir", "analysis_level"]:
        raise ValueError(f"expected the BIDS-App positionals, got {list(helps)}")
    output_help = helps["output_dir"]
    return [
        {"id": "bids_dir", "name": "BIDS directory", "type": "File",
         "description": helps["bids_dir"], "value-key": "[BIDS_DIR]",
         "optional": False},
        {"id": "output_dir_name", "name": "Output directory name", "type": "String",
         "description": output_help + " (a new folder)", "value-key": "[OUTPUT_DIR]",
         "optional": True},
        {"id": "participant_level_analysis_dir", "name": "Participant-level output directory",
         "type": "File", "description": output_help + " (holding participant-level results)",
         "value-key": "[OUTPUT_DIR]", "optional": True},
        {"id": "analysis_level", "name": "Analysis level", "type": "String",
         "description": helps["analysis_level"], "value-key": "[ANALYSIS_LEVEL]",
         "value-choices": list(ANALYSIS_LEVELS), "optional": False},
    ]


def _option_input(option: Option) -> dict[str, Any]:
    long_flags = [flag for flag in option.flags if flag.startswith("--")]
    flag = (long_flags or list(option.flags))[0]
    # A store_false flag (--no-symmetric) is named after the flag, not the field it clears.
    ident = (flag.lstrip("-").replace("-", "_") if option.kind == "store_false"
             else option.dest)
    entry: dict[str, Any] = {
        "id": ident,
        "name": ident.replace("_", " ").capitalize(),
        "type": _input_type(option),
        "description": option.help,
        "value-key": _SPECIAL_KEYS.get(ident, f"[{ident.upper()}]"),
        "command-line-flag": flag,
        "optional": True,
    }
    if option.value == "int":
        entry["integer"] = True
    if option.choices is not None:
        entry["value-choices"] = list(option.choices)
    if option.nargs == "+":
        entry["list"] = True
        entry["min-list-entries"] = 1
    return entry


def _input_type(option: Option) -> str:
    if option.kind != "value":
        return "Flag"
    if option.value in ("int", "float"):
        return "Number"
    if option.value in ("path", "existing_file"):
        return "File"
    return "String"


__all__ = ["BIDS_APP_SPEC_VERSION", "CONTAINER_REPOSITORY", "ERROR_CODES", "container_image",
           "descriptor"]
