"""What a QC report says, as plain data: the participant level fills these, ``html`` renders them.

:class:`SubjectReport` and its parts are dataclasses built in memory. :class:`QcRecord` is the
JSON summary of one report that the dataset QC index is rebuilt from; it is read back from disk,
so it is a pydantic model (validated at that boundary).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

_BIDS_LABEL = re.compile(r"[A-Za-z0-9]+")
_STEP_ID = re.compile(r"[a-z0-9][a-z0-9_-]*")


def subject_key(subject: str, session: str | None) -> str:
    """``sub-<label>[_ses-<label>]`` from labels given with or without their prefix.

    >>> subject_key("01", None), subject_key("sub-01", "ses-pre")
    ('sub-01', 'sub-01_ses-pre')
    """
    sub = subject.removeprefix("sub-")
    ses = session.removeprefix("ses-") if session else ""
    for label in (sub, ses) if session else (sub,):
        if not _BIDS_LABEL.fullmatch(label):
            raise ValueError(f"{label!r} is not a BIDS label (letters and digits only)")
    return f"sub-{sub}" + (f"_ses-{ses}" if ses else "")


@dataclass(frozen=True)
class ReportSection:
    """One step's figure in the subject report.

    Attributes
    ----------
    step
        Short step id, the unit a reviewer passes or fails (``"seg"``, ``"discs"``,
        ``"centerline"``, ``"reg"``, ``"metrics"`` ...). Several sections may share a step.
    title
        Section heading.
    figure
        Absolute path of the PNG; must lie under the output directory.
    caption
        What the reviewer should look for.
    hover_figure
        Optional second, pixel-aligned PNG shown while the pointer is over ``figure`` (and in
        the "flicker" animation): e.g. template frame over subject frame.
    source
        The input image this step worked on (its BIDS file name goes into ``qc_fail.yml``).
    """

    step: str
    title: str
    figure: Path
    caption: str = ""
    hover_figure: Path | None = None
    source: Path | None = None

    def __post_init__(self) -> None:
        if not _STEP_ID.fullmatch(self.step):
            raise ValueError(f"step id {self.step!r} must be lowercase letters, digits, - or _")


@dataclass(frozen=True)
class MetricRow:
    """One row of the metrics table (``value`` printed with 4 significant digits if a float)."""

    name: str
    value: float | int | str
    unit: str = ""
    note: str = ""


@dataclass(frozen=True)
class Provenance:
    """Footer of the report: who produced it and when (ISO 8601 ``generated``)."""

    version: str
    engine: str
    engine_version: str = ""
    run_uuid: str = ""
    generated: str = ""


@dataclass(frozen=True)
class SubjectReport:
    """Everything on one subject (and session) page."""

    subject: str
    session: str | None
    sections: tuple[ReportSection, ...]
    provenance: Provenance
    metrics: tuple[MetricRow, ...] = ()
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    title_extra: str = ""
    """Appended to the page title, e.g. the contrast (``"T2w"``)."""

    @property
    def key(self) -> str:
        return subject_key(self.subject, self.session)


class QcStep(BaseModel):
    """One reviewable step of a subject in the QC index; paths relative to the output dir."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: str
    title: str
    figures: tuple[str, ...]
    anchor: str
    source: str | None = None


class QcRecord(BaseModel):
    """JSON summary of one subject report (``<out>/qc/records/<key>.json``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    subject: str
    session: str | None
    report: str
    """Subject page, relative to the output dir (POSIX)."""
    steps: tuple[QcStep, ...]
    warnings: int
    errors: int
    version: str
    engine: str
    generated: str = ""
    failure: str | None = None
    """The error of the unit's latest participant run when it failed (no figures then)."""
