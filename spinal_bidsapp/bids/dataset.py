"""Raw-data discovery with pybids: index once, then select subjects, sessions and the anatomy.

The anatomy rule when several images match (documented in docs/usage.md): prefer the first
contrast of ``--contrast`` that exists; among its runs prefer one that already has manual labels
in ``derivatives/labels`` (somebody checked it), then the highest run number (the repeat after a
failed acquisition), then the lexicographically last name. The choice is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bids import BIDSLayout, BIDSLayoutIndexer

from spinal_bidsapp.errors import MissingInputError, NoDataSelectedError

logger = logging.getLogger(__name__)

ENTITY_ORDER = ("subject", "session", "task", "acquisition", "ceagent", "reconstruction",
                "direction", "run", "echo", "part", "chunk")
"""pybids entity names in BIDS filename order (the subset that can precede an anat suffix)."""
ENTITY_KEYS = {"subject": "sub", "session": "ses", "task": "task", "acquisition": "acq",
               "ceagent": "ce", "reconstruction": "rec", "direction": "dir", "run": "run",
               "echo": "echo", "part": "part", "chunk": "chunk"}


@dataclass(frozen=True)
class SourceImage:
    """A raw anatomical image and the BIDS entities derivatives inherit from it."""

    path: Path
    subject: str
    session: str | None
    suffix: str
    datatype: str
    entities: tuple[tuple[str, str], ...] = ()
    """Other entities in filename order as (key, value), e.g. (("acq", "sag"), ("run", "2"))."""

    @property
    def stem(self) -> str:
        """Filename without extension, e.g. ``sub-01_ses-1_acq-sag_T2w``."""
        return f"{self.entity_prefix}_{self.suffix}"

    @property
    def entity_prefix(self) -> str:
        """``sub-01[_ses-1][_acq-sag]...``: what every derivative of this image starts with."""
        parts = [f"sub-{self.subject}"]
        if self.session:
            parts.append(f"ses-{self.session}")
        parts += [f"{k}-{v}" for k, v in self.entities]
        return "_".join(parts)

    @property
    def subject_dir(self) -> Path:
        """Relative output folder ``sub-XX[/ses-YY]``."""
        return Path(f"sub-{self.subject}") / (f"ses-{self.session}" if self.session else "")


@dataclass(frozen=True)
class Dataset:
    """An indexed raw BIDS dataset (the pybids layout is built once per run)."""

    root: Path
    layout: Any = field(repr=False)

    @property
    def subjects(self) -> list[str]:
        return sorted(self.layout.get_subjects())

    def sessions(self, subject: str) -> list[str | None]:
        found = sorted(self.layout.get_sessions(subject=subject))
        return list(found) or [None]


def index_dataset(bids_dir: Path, *, database_dir: Path | None = None) -> Dataset:
    """Index ``bids_dir`` with pybids (derivatives are not indexed here; see ``bids.labels``)."""
    if not bids_dir.is_dir():
        raise MissingInputError(
            f"BIDS directory not found: {bids_dir}; give the path to a BIDS dataset"
        )
    if not (bids_dir / "dataset_description.json").is_file():
        raise MissingInputError(
            f"{bids_dir} is not a BIDS dataset (no dataset_description.json); "
            "give the dataset root"
        )

    indexer = BIDSLayoutIndexer(validate=False, ignore=["derivatives", "sourcedata", "code",
                                                        "work", ".git", ".datalad"])
    kwargs: dict[str, Any] = {"indexer": indexer, "derivatives": False}
    if database_dir is not None:
        database_dir.mkdir(parents=True, exist_ok=True)
        kwargs.update(database_path=str(database_dir), reset_database=True)
    layout = BIDSLayout(str(bids_dir), **kwargs)
    logger.info("Indexed %s: %d subjects", bids_dir, len(layout.get_subjects()))
    return Dataset(root=bids_dir, layout=layout)


def select_subjects(dataset: Dataset, labels: Sequence[str] | None) -> list[str]:
    """Subjects to process; unknown labels are an error listing them."""
    available = dataset.subjects
    if not available:
        raise NoDataSelectedError(f"no subjects (sub-*) found in {dataset.root}")
    if not labels:
        return available
    missing = [label for label in labels if label not in available]
    if missing:
        raise NoDataSelectedError(
            "participant label(s) not found in "
            f"{dataset.root}: {', '.join('sub-' + m for m in missing)} "
            f"(available: {', '.join('sub-' + s for s in available[:10])}"
            f"{', ...' if len(available) > 10 else ''})"
        )
    return [s for s in available if s in labels]


def select_sessions(dataset: Dataset, subject: str,
                    labels: Sequence[str] | None) -> list[str | None]:
    sessions = dataset.sessions(subject)
    if not labels:
        return sessions
    return [s for s in sessions if s in labels]


def _source_from_bidsfile(bids_file: Any, datatype: str) -> SourceImage:
    ents = bids_file.get_entities()
    extra = tuple(
        (ENTITY_KEYS[name], str(ents[name]))
        for name in ENTITY_ORDER[2:] if name in ents
    )
    return SourceImage(path=Path(bids_file.path), subject=str(ents["subject"]),
                       session=str(ents["session"]) if "session" in ents else None,
                       suffix=str(ents["suffix"]), datatype=datatype, entities=extra)


def find_anatomy(dataset: Dataset, subject: str, session: str | None, *,
                 contrasts: Sequence[str], datatype: str,
                 bids_filter: dict[str, dict[str, Any]] | None = None) -> list[SourceImage]:
    """All candidate images of the first contrast (in preference order) that exists."""
    for contrast in contrasts:
        query: dict[str, Any] = {"subject": subject, "suffix": contrast, "datatype": datatype,
                                 "extension": [".nii", ".nii.gz"], "return_type": "object"}
        if session is not None:
            query["session"] = session
        query.update((bids_filter or {}).get(contrast, {}))
        found = [_source_from_bidsfile(f, datatype) for f in dataset.layout.get(**query)]
        if found:
            return sorted(found, key=lambda s: s.path.name)
    return []


def choose_anatomy(candidates: Iterable[SourceImage], *, labelled: set[Path]) -> SourceImage:
    """Apply the documented rule (labelled first, then highest run, then last name)."""
    ranked = sorted(
        candidates,
        key=lambda s: (s.path in labelled, int(dict(s.entities).get("run", "0") or 0),
                       s.path.name),
    )
    if not ranked:
        raise NoDataSelectedError("no anatomical image to choose from")
    chosen = ranked[-1]
    if len(ranked) > 1:
        logger.info("sub-%s: %d candidate images, chose %s (rule: manually labelled > highest "
                    "run > last name)", chosen.subject, len(ranked), chosen.path.name)
    return chosen
