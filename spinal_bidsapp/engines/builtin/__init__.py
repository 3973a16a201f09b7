"""Builtin engines: our own implementations, no external tools beyond antspyx.

Template building (issue #5): :func:`build_template` / :class:`BuiltinTemplateBuilder`, an
ipl-shaped unbiased loop on antspyx SyN, configured by :class:`TemplateOptions` (presets
``seed`` and ``fast`` from :func:`preset_options`).
"""

from spinal_bidsapp.engines.builtin.jobs import TemplateBuildError
from spinal_bidsapp.engines.builtin.protocol import (
    FAST_PROTOCOL,
    SEED_PROTOCOL,
    Stage,
    TemplateOptions,
    preset_options,
)
from spinal_bidsapp.engines.builtin.template import BuiltinTemplateBuilder, build_template

__all__ = [
    "FAST_PROTOCOL",
    "SEED_PROTOCOL",
    "BuiltinTemplateBuilder",
    "Stage",
    "TemplateBuildError",
    "TemplateOptions",
    "build_template",
    "preset_options",
]
