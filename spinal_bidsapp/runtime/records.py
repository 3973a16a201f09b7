"""Typed records with one JSON round-trip (:class:`Record`).

A record is a frozen dataclass whose fields are written in their declared order under their
JSON key (``metadata={"key": ...}`` when it differs from the field name); a field declared with
``metadata={"omit": VALUE}`` is left out while it equals ``VALUE`` (:data:`OPTIONAL`: None), so
a record writes exactly the JSON the same data written as a dict gives.
:meth:`Record.to_json` and :meth:`Record.from_json` are the only conversions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")
OPTIONAL: dict[str, Any] = {"omit": None}
"""Field metadata: left out of the JSON while None."""


@dataclass(frozen=True)
class Record:
    """Base of the records: the JSON round-trip."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if "omit" in f.metadata and value == f.metadata["omit"]:
                continue
            out[f.metadata.get("key", f.name)] = value
        return out

    @classmethod
    def from_json(cls: type[R], data: dict[str, Any]) -> R:
        return cls(**{f.name: data[f.metadata.get("key", f.name)] for f in fields(cls)
                      if f.metadata.get("key", f.name) in data})
