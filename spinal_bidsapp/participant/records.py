"""Typed records the participant steps hand each other, with one JSON round-trip.

The round-trip is :class:`~spinal_bidsapp.runtime.records.Record`'s; each record writes the JSON
the steps wrote as dicts before (the on-disk files and ledger parameters are unchanged). The
``spine`` step's check is an engine output: :class:`~spinal_bidsapp.engines.base.SpineRecord`.

>>> q = Quality(source="builtin", method="m", confidence=0.5, threshold=0.6,
...             low_confidence=True)
>>> q.to_json()
{'source': 'builtin', 'method': 'm', 'confidence': 0.5, 'threshold': 0.6, 'low_confidence': True}
>>> Quality.from_json(q.to_json()) == q
True
>>> Quality.from_json({"source": "manual"}).to_json()
{'source': 'manual'}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from spinal_bidsapp.bids.outputs import sidecar_path
from spinal_bidsapp.runtime.records import OPTIONAL, Record


@dataclass(frozen=True)
class EngineStep(Record):
    """Which engine ran one engine step of a unit (for the log, the sidecars and the report)."""

    step: str
    ran: str
    """The engine that ran it (its ``info.name``: ``sct``, ``builtin``) or ``skipped``."""
    method: str
    """What ran (``'SCT 7.3 sct_deepseg spinalcord'``, ``'builtin'``) or ``'skipped'``."""
    fallback_reason: str | None = None
    """Why not the run's engine, when it could not run this step here."""
    label: str = field(default="", compare=False, metadata={"omit": ""})
    """How the report names what ran (``SCT``, ``builtin (SCT fallback)``, ``skipped``); not
    part of the ledger parameters."""

    def ledger_params(self) -> list[object]:
        """The step's entry in the ``report`` step's ledger parameters."""
        return [self.step, self.ran, self.method, self.fallback_reason]


@dataclass(frozen=True)
class Quality(Record):
    """Where an automatic output came from and how sure its method was (from its sidecar);
    ``source`` ``manual`` for a manual label, ``sct`` for SCT's, ``builtin`` for ours."""

    source: str
    method: str | None = field(default=None, metadata=OPTIONAL)
    confidence: float | None = field(default=None, metadata=OPTIONAL)
    threshold: float | None = field(default=None, metadata=OPTIONAL)
    low_confidence: bool | None = field(default=None, metadata=OPTIONAL)
    alternative_reading: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    """Builtin discs: the next best reading of the most doubtful disc."""
    c2c3_anchor: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)
    discs_from_session: dict[str, Any] | None = field(default=None, metadata=OPTIONAL)

    FROM_SIDECAR: ClassVar[tuple[tuple[str, str], ...]] = (
        ("AlternativeReading", "alternative_reading"), ("C2C3Anchor", "c2c3_anchor"),
        ("DiscsFromSession", "discs_from_session"))

    @property
    def manual(self) -> bool:
        return self.source == "manual"

    @property
    def has_confidence(self) -> bool:
        """Our own methods report a confidence; SCT's and manual labels do not."""
        return self.confidence is not None

    @classmethod
    def read(cls, path: Path) -> Quality:
        """From the sidecar of ``path``: SCT's method, our method and confidence, or manual."""
        sidecar = sidecar_path(path)
        found = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else {}
        if str(found.get("Method", "")).startswith("SCT "):
            return cls(source="sct", method=found["Method"])
        if "Confidence" not in found:
            return cls(source="manual")
        extra = {key: found[name] for name, key in cls.FROM_SIDECAR if found.get(name)}
        return cls(source="builtin", method=found.get("Method"),
                   confidence=found["Confidence"], threshold=found.get("ConfidenceThreshold"),
                   low_confidence=bool(found.get("LowConfidence")), **extra)
