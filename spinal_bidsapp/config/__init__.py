"""The one run configuration: command line, config file and environment all feed ``RunConfig``.

Precedence, lowest to highest: field defaults < ``--config-file`` < ``SPINAL_BIDSAPP_<OPTION>``
environment variables < command-line flags. Files and variables name a setting by its field name
or by its long option name (``template_resolution``, ``SPINAL_BIDSAPP_MIN_CORD_COVERAGE``);
unknown names are errors. The resolved configuration is saved with every run
(``<work>/<run_uuid>/config.json`` and ``<out>/logs/config-<run_uuid>.json``) and can be fed back
with ``--config-file``. This package is the only place that reads ``os.environ``.

The package holds the settings (this module: ``RunConfig`` and its sections, the types every layer
shares, the process environment), the command line as data (:mod:`.options`: the argparse parser,
the Boutiques descriptor and the long option names accepted in files and variables are all built
from that one table) and the readers that merge the sources into one ``RunConfig``
(:mod:`.reading`).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

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
