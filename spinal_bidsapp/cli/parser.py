"""The ``spinal_bidsapp`` argument parser and argv -> ``RunConfig``.

Positionals and options follow the BIDS Apps specification; bad usage raises ``UsageError``
(exit 64), an unknown analysis level ``UnknownAnalysisLevel`` (exit 17). ``option_aliases`` maps
long option names to ``RunConfig`` fields for config files and ``SPINAL_BIDSAPP_<OPTION>``.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, get_args

from spinal_bidsapp import __version__
from spinal_bidsapp.config import Contrast
from spinal_bidsapp.errors import (
    UnknownAnalysisLevel,
    UsageError,
)

ANALYSIS_LEVELS = ("participant", "group")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (exit 64) instead of exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {value}")
    return path


def _derivative_pair(value: str) -> tuple[str, Path]:
    from spinal_bidsapp.config import derivative_pair

    return derivative_pair(value)


class _PrintBoutiquesDescriptor(argparse.Action):
    """``--bids-exec-spec``: print the Boutiques descriptor (JSON) and exit 0, like --version."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        import json

        from spinal_bidsapp.cli.boutiques import descriptor

        print(json.dumps(descriptor(), indent=2))
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="spinal_bidsapp",
        description="Spinal cord MRI BIDS App: per-subject cord reference (participant) and "
        "unbiased population templates (group).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("bids_dir", type=Path, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where derivatives are written")
    parser.add_argument("analysis_level", metavar="{participant,group}",
                        help="participant: per-subject processing; group: template building")
    parser.add_argument("--version", action="version", version=f"spinal_bidsapp {__version__}")
    parser.add_argument("--bids-exec-spec", action=_PrintBoutiquesDescriptor, nargs=0,
                        help="print the Boutiques descriptor of this command line and exit")

    sel = parser.add_argument_group("data selection")
    sel.add_argument("--participant-label", "--participant_label", dest="participant_label",
                     nargs="+", metavar="LABEL", help="subjects to process (01 or sub-01)")
    sel.add_argument("--session-label", "--session_label", "--session-id", dest="session_label",
                     nargs="+", metavar="LABEL", help="sessions to process (1 or ses-1)")
    sel.add_argument("--bids-filter-file", dest="bids_filter_file", type=_existing_file,
                     metavar="FILE",
                     help='JSON of PyBIDS filters per contrast, e.g. {"T2w": {"acquisition": '
                          '"sag"}}')
    sel.add_argument("--contrast", "--suffix", dest="contrast", nargs="+",
                     choices=list(get_args(Contrast)),
                     help="anatomy driving the pipeline, in order of preference "
                          "(default: T2w T1w)")
    sel.add_argument("--data-type", dest="data_type", help="BIDS datatype folder (default: anat)")
    sel.add_argument("--first-disc", dest="first_disc", type=int,
                     help="top disc to use (SCT numbering: 2 = C1/C2, 3 = C2/C3, ...)")
    sel.add_argument("--last-disc", dest="last_disc", type=int, help="bottom disc to use")
    sel.add_argument("--init-disc", dest="init_disc", metavar="LABEL@Z_MM",
                     help="a disc you have identified, for the builtin disc labelling (like "
                          "SCT's -initz): disc value @ world z in mm, e.g. 3@12.5 = C2/C3")
    sel.add_argument("-d", "--derivatives", dest="derivatives", nargs="+",
                     type=_derivative_pair, metavar="NAME=PATH",
                     help="extra derivative folders; 'labels=PATH' replaces derivatives/labels")

    proc = parser.add_argument_group("processing")
    proc.add_argument("--engine", dest="engine", choices=["auto", "builtin", "sct"],
                      help="participant engine (default auto: SCT when installed, else builtin)")
    proc.add_argument("--template-engine", dest="template_engine",
                      choices=["auto", "builtin", "minc"],
                      help="group template engine (default auto: builtin; minc only when "
                           "asked, see docs/engines.md)")
    proc.add_argument("--template-dir", dest="template_dir", type=Path,
                      help="PAM50 folder in SCT layout (default: $SCT_DIR/data/PAM50, cache)")
    proc.add_argument("--min-cord-coverage", dest="min_cord_coverage_mm", type=float,
                      metavar="MM", help="minimum cord length in the image (default: 20 mm)")
    proc.add_argument("--template-name", dest="template_name",
                      help="name of the group template (default: SpinalCord)")
    proc.add_argument("--template-resolution", dest="template_resolution_mm", type=float,
                      metavar="MM", help="template voxel size (default: 0.5 mm)")
    proc.add_argument("--template-xy-size", dest="template_xy_size_mm", type=float,
                      metavar="MM", help="template half-width around the cord (default: 20 mm)")
    proc.add_argument("--template-preset", dest="template_preset", choices=["seed", "fast"],
                      help="template iterations: seed = 8/4/2/1 mm x 4 (default), fast = demo")
    proc.add_argument("--no-symmetric", dest="template_symmetric", action="store_false",
                      help="do not build a left-right symmetric template")
    proc.add_argument("--no-disc-alignment", dest="no_disc_alignment", action="store_true",
                      help="group template from the mean cord length only (no disc matching); "
                           "subjects need only a cord mask")
    proc.add_argument("--register-to", dest="register_to", metavar="PAM50|DIR",
                      help="register the new template to PAM50 (found like --template-dir) or "
                           "to a template folder in SCT's layout")
    proc.add_argument("--contrasts", dest="contrasts", nargs="+",
                      choices=list(get_args(Contrast)), metavar="CONTRAST",
                      help="group: template contrasts, the first the participant outputs' "
                           "(driving) one, e.g. T2w T1w T2starw (default: the driving one only)")

    run = parser.add_argument_group("execution")
    run.add_argument("--config-file", dest="config_file", type=Path, metavar="FILE",
                     help="JSON or TOML settings (also the seed pipeline's configuration.json)")
    run.add_argument("-w", "--work-dir", dest="work_dir", type=Path,
                     help="intermediate files, reused to resume (default: OUTPUT_DIR/work)")
    run.add_argument("--nprocs", "--n-cpus", "--n_cpus", "--nthreads", dest="nprocs", type=int,
                     help="processes to use (default: all available cores)")
    run.add_argument("--omp-nthreads", dest="omp_nthreads", type=int,
                     help="threads per process (ITK, BLAS)")
    run.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", type=float,
                     help="memory budget in GB")
    run.add_argument("--random-seed", dest="random_seed", type=int, help="seed (default 0)")
    run.add_argument("--skip-bids-validation", "--skip_bids_validation", "--skip_bids_validator",
                     dest="skip_bids_validation", action="store_true",
                     help="do not run the BIDS validator on the input")
    run.add_argument("--stop-on-first-crash", dest="stop_on_first_crash", action="store_true",
                     help="abort at the first failing subject instead of finishing the others")
    run.add_argument("--reports-only", dest="reports_only", action="store_true",
                     help="only rebuild reports from existing outputs")
    run.add_argument("--notrack", dest="notrack", action="store_true",
                     help="accepted for NiPreps compatibility; spinal_bidsapp sends nothing")
    run.add_argument("-v", "--verbose", dest="verbose", action="count",
                     help="more log output; -v also shows tracebacks")
    return parser


def parse_config(argv: Sequence[str]) -> Any:
    """argv -> ``RunConfig`` (raises ``UsageError``/``ConfigError`` on bad input)."""
    from spinal_bidsapp.config import build_config

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
        args["bids_filter"] = _read_filter_file(filter_file)
    if "derivatives" in args:
        args["derivatives"] = dict(args["derivatives"])
    return build_config(args, config_file=config_file)


def _read_filter_file(path: Path) -> dict[str, Any]:
    from spinal_bidsapp.config import read_filter_file

    return read_filter_file(path)


NOT_SETTINGS = frozenset({"help", "version", "bids_exec_spec", "config_file", "verbose",
                          "notrack"})


def option_aliases() -> dict[str, tuple[str, bool]]:
    """Long option name in snake_case -> (destination field, inverted flag), for config files
    and ``SPINAL_BIDSAPP_<OPTION>`` variables (e.g. ``min_cord_coverage`` ->
    ``min_cord_coverage_mm``, ``no_symmetric`` -> ``template_symmetric`` inverted)."""
    aliases: dict[str, tuple[str, bool]] = {}
    for action in build_parser()._actions:
        if action.dest in NOT_SETTINGS:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                inverted = isinstance(action, argparse._StoreFalseAction)
                aliases[option[2:].replace("-", "_")] = (action.dest, inverted)
    return aliases
