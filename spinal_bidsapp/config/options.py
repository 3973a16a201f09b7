"""The command line as data: every positional and option once, with its help, group and kind.

``cli.parser`` builds argparse from this table, ``cli.boutiques`` the Boutiques descriptor, and
:mod:`spinal_bidsapp.config.reading` the long option names that config files and
``SPINAL_BIDSAPP_<OPTION>`` variables accept, so the three cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from spinal_bidsapp.config import Contrast, ParticipantEngine, TemplateEngine, TemplatePreset

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
