"""Group stage 4: the template loop, by the engine ``--template-engine`` picks (builtin antspyx
loop, or MINC/nist_mni_pipelines), resumable per iteration."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines import resolve_template_engine
from spinal_bidsapp.engines import template_builder as builder_of
from spinal_bidsapp.engines.base import TemplateBuilder, TemplateBuildResult, TemplateSubject
from spinal_bidsapp.group.straighten import StraightenJob

logger = logging.getLogger(__name__)


def build_template(config: RunConfig, jobs: Sequence[StraightenJob], *, work_dir: Path,
                   nprocs: int, engines: dict[str, str]) -> TemplateBuildResult:
    """Run the template loop on the straightened subjects; records the engine's name and
    version in ``engines`` (for the dataset description)."""
    builder, engine_name, engine_version = template_builder(config)
    engines[engine_name] = engine_version
    return builder.build_template(
        [TemplateSubject(label=job.subject.label.replace("_", "-"), image=job.image,
                         cord_mask=job.cord) for job in jobs],
        work_dir=work_dir, nprocs=nprocs)


def template_builder(config: RunConfig) -> tuple[TemplateBuilder, str, str]:
    """The template engine chosen by --template-engine, with its provenance name and version."""
    group = config.group
    kind = group.template_engine
    if kind == "auto" and len(group.contrasts or ()) > 1:
        kind = "builtin"  # the MINC engine returns no per-subject warps (check_contrast_engine)
        logger.info("--contrasts %s: builtin template engine (the extra contrasts are resampled "
                    "through its per-subject warps)", " ".join(group.contrasts or ()))
    choice = resolve_template_engine(kind)
    logger.info("Template engine: %s (%s)", choice.name, choice.reason)
    builder, name = builder_of(choice, preset=group.template_preset,
                               symmetric=group.template_symmetric, seed=config.seeds.random_seed,
                               threads_per_worker=max(1, (config.execution.omp_nthreads or 1)))
    return builder, name, builder.info.version
