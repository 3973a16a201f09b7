"""Group level: population template from the participant outputs (see issue #5)."""

from __future__ import annotations

import logging

from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import UsageError

logger = logging.getLogger(__name__)


def run_group_level(config: RunConfig, *, engines: dict[str, str]) -> int:
    raise UsageError("the group level is not available in this version yet")
