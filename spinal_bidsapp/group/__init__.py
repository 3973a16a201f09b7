"""Group level: a new unbiased spinal cord template from the participant outputs.

Every stage is called from :func:`run_group_level`, in this order:

1. ``subjects``: collect each subject's participant outputs (anatomy, cord mask, discs; with
   ``--no-disc-alignment`` the discs are optional); subjects without them, or whose latest
   participant run failed or did not finish, or whose inputs or outputs changed since
   (``bids.status``), are skipped with a warning naming the reason, and fewer than two usable
   subjects is an error. ``--contrasts`` and ``--register-to`` are checked here, before any work.
2. ``space``: mean arc length of every vertebral level, a straight line with the discs at those
   distances, a grid around it (``geometry.template_space``); without disc alignment, a line as
   long as the mean span between the first and last common disc, or between the cord ends.
3. ``straighten``: every subject straightened onto it with disc matching (or in proportion to
   arc length over that span), cord intensity normalised (parallel, one resumable step per
   subject).
4. ``build``: the template loop (builtin antspyx engine, or MINC/nist_mni_pipelines), resumable
   per iteration.
5. ``publish``: the TemplateFlow-style folder (template, SD, cord mask, labels, iterations).
6. ``target``: with ``--register-to``, the template registered to PAM50 or another template.
7. ``contrasts``: with ``--contrasts``, templates of further contrasts on the same grid.
8. ``publish``: ``template_description.json``, the SCT-ready folder, per-subject warps.
9. ``report``: the group QC page.
"""

from __future__ import annotations

import logging

from spinal_bidsapp.bids.outputs import sct_template_folder
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.errors import UsageError
from spinal_bidsapp.group.build import build_template
from spinal_bidsapp.group.contrasts import (
    build_contrast_templates,
    check_contrast_engine,
    check_contrasts,
)
from spinal_bidsapp.group.publish import (
    publish_subjects,
    publish_template,
    write_description,
    write_sct_folder,
)
from spinal_bidsapp.group.report import build_group_report
from spinal_bidsapp.group.space import build_space, write_space_record
from spinal_bidsapp.group.straighten import straighten_subjects
from spinal_bidsapp.group.subjects import collect_subjects
from spinal_bidsapp.group.target import register_template, resolve_registration_target
from spinal_bidsapp.runtime.parallel import plan_workers

logger = logging.getLogger(__name__)

GROUP_GB_PER_WORKER = 1.0
"""Memory budget of one straightening or template registration worker at 0.5 mm."""


def run_group_level(config: RunConfig, *, engines: dict[str, str]) -> int:
    """Build the template and every group output; exit 0 on success, 1 when some subjects
    could not be straightened (other failures raise). ``engines`` receives the template
    engine's name and version."""
    ex, group = config.execution, config.group
    if ex.reports_only:
        raise UsageError(
            "--reports-only applies to the participant level; rerun the group level instead: "
            "its finished stages are reused and the group page is redrawn")
    if group.contrasts is not None:
        check_contrast_engine(group.contrasts, group.template_engine)
    subjects = collect_subjects(config)
    if group.contrasts is not None:
        check_contrasts(group.contrasts, subjects)
    target = None
    if group.register_to is not None:
        target = resolve_registration_target(config, subjects[0].source.suffix)
        logger.info("The template will be registered to %s (%s)", target.name, target.folder)

    space = build_space(config, subjects)
    work = ex.resolved_work_dir / "group"
    write_space_record(work / "template_space.json", space)
    workers = plan_workers(ex.nprocs, len(subjects), mem_gb=ex.mem_gb,
                           gb_per_worker=GROUP_GB_PER_WORKER)
    jobs, failed = straighten_subjects(config, subjects, space, work, nprocs=workers)
    result = build_template(config, jobs, work_dir=work / "template", nprocs=workers,
                            engines=engines)

    published = publish_template(config, space, result, jobs)
    registration = None if target is None else register_template(
        config, target, space, image=published.image, mask=published.mask,
        contrast=published.contrast)
    extra = build_contrast_templates(config, space, result, jobs, nprocs=workers)
    write_description(config, space, result, jobs, published, registration=registration,
                      contrasts=extra)
    write_sct_folder(published, extra)
    aligned = publish_subjects(config, published, result, jobs)
    page = build_group_report(config, space, result, published.folder, aligned,
                              registration=registration, contrasts=extra)
    logger.info("Template %s written to %s (SCT-ready copy: %s; report: %s)", published.name,
                published.folder, sct_template_folder(published.root, published.name), page)
    return 1 if failed else 0
