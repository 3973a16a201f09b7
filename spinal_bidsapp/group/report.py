"""Group QC page ``OUTPUT_DIR/tpl-<name>.html`` (``bids.outputs.template_report_path``): the
template, its iterations, its convergence, and every subject resampled in template space next to
it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.outputs import template_id, template_path, template_report_path
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines.base import TemplateBuildResult
from spinal_bidsapp.geometry.template_space import TemplateSpace
from spinal_bidsapp.group.contrasts import ContrastTemplate
from spinal_bidsapp.group.target import TargetRegistration
from spinal_bidsapp.image import Volume, load_mask, load_volume
from spinal_bidsapp.reports import figures
from spinal_bidsapp.reports.html import render_subject_report
from spinal_bidsapp.reports.model import MetricRow, Provenance, ReportSection, SubjectReport

MAX_ITERATION_PANELS = 6


def build_group_report(config: RunConfig, space: TemplateSpace, result: TemplateBuildResult,
                       tpl: Path, subjects: Sequence[tuple[str, Path, float]], *,
                       registration: TargetRegistration | None = None,
                       contrasts: Sequence[ContrastTemplate] = ()) -> Path:
    """Write the group page; ``subjects`` holds (label, image in template space, cord Dice);
    ``registration``, the template registered to PAM50 or another template (``--register-to``);
    ``contrasts``, the templates of the further ``--contrasts``.
    """
    name = config.group.template_name
    out = config.execution.output_dir.resolve()
    figs = tpl / "figures"
    template = load_volume(result.template)
    mask = load_mask(result.mask, allow_empty=True)
    disc_file = template_path(out, "template_discs", name)
    discs = load_mask(disc_file) if len(space.disc_values) else None
    sections = [
        ReportSection("template", "Template", figures.plot_sagittal(
            template, figs / "template_sagittal.png", mask=mask, discs=discs,
            title=template_id(name)),
            caption="Mid-sagittal slice of the final template with its cord mask and discs"
                    + ("." if space.alignment == "discs" else
                       f" (no disc alignment: arc-length proportional over {space.span_mm:.1f} mm "
                       f"between {_span_ends(space)}).")),
        ReportSection("template", "Template cross-sections", figures.plot_axial_montage(
            template, mask, figs / "template_axial.png", title="axial slices"),
            caption="Cross-sections along the template; the cord should be sharp and centred."),
    ]
    chosen = _spread(list(result.iterations), MAX_ITERATION_PANELS)
    sections.append(ReportSection("iterations", "Iterations", figures.plot_sagittal_series(
        [load_volume(it.average) for it in chosen], figs / "iterations.png",
        titles=[f"iteration {it.index}" + (f" ({it.level_mm:g} mm)" if it.level_mm else "")
                for it in chosen], mask=mask, title="average per iteration"),
        caption="The average sharpens as the registrations refine."))
    if registration is not None:
        sections.append(_registration_section(registration, name, figs))
    if contrasts:
        sections.append(_contrasts_section(template, mask, contrasts, name, figs))
    record = json.loads(result.convergence.read_text(encoding="utf-8"))["iterations"]
    sections.append(ReportSection("iterations", "Convergence", figures.plot_convergence(
        [r["iteration"] for r in record], [r["median_sd_in_mask"] for r in record],
        [r.get("rms_change_in_mask", np.nan) for r in record], figs / "convergence.png",
        title="template convergence"),
        caption="Both curves should flatten; a rising SD points to a failing subject."))
    for label, image, dice in subjects:
        sections.append(ReportSection("subjects", f"{label} in template space",
                                      figures.plot_registration(
                                          template, load_volume(image),
                                          figs / f"{label}_in_template.png", fixed_mask=mask,
                                          names=(template_id(name), label)),
                                      caption=f"Cord Dice with the template mask: {dice:.3f}."))
    metrics = [MetricRow("subjects", len(subjects)),
               MetricRow("mean cord Dice with the template mask",
                         float(np.mean([d for _, _, d in subjects]))),
               MetricRow("final median SD in the cord", record[-1]["median_sd_in_mask"]),
               MetricRow("aligned span", space.span_mm, "mm", _span_ends(space))]
    same_discs = "; disc offset 0 mm (same grid)" if len(space.disc_values) else ""
    metrics += [MetricRow(f"cord-mask Dice, {c.contrast} vs driving template", c.dice, "",
                          f"{len(c.subjects)} subjects, {c.manual_masks} manual masks, over "
                          f"the {c.covered_mm:.0f} mm it covers{same_discs}")
                for c in contrasts]
    if registration is not None:
        metrics.append(MetricRow(f"max disc error, {template_id(name)} to "
                                 f"{registration.target.name}",
                                 registration.max_disc_error_mm, "mm",
                                 f"over discs {sorted(registration.disc_errors_mm)}"))
    metrics += [MetricRow(f"level {lv.upper}-{lv.upper + 1} length", lv.mean_mm, "mm",
                          f"SD {lv.sd_mm:.2f} over {lv.n_subjects} subjects")
                for lv in space.levels]
    report = SubjectReport(
        subject="group", session=None, sections=tuple(sections), metrics=tuple(metrics),
        provenance=Provenance(version=__version__, engine=config.group.template_engine,
                              run_uuid=config.execution.run_uuid,
                              generated=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    page = template_report_path(out, name)
    return render_subject_report(report, page, heading=f"Group template {template_id(name)}")


def _span_ends(space: TemplateSpace) -> str:
    if len(space.disc_values):
        return f"discs {int(space.disc_values[0])} and {int(space.disc_values[-1])}"
    return "the cord ends"


def _registration_section(registration: TargetRegistration, name: str,
                          figs: Path) -> ReportSection:
    other = registration.target.name
    errors = registration.disc_errors_mm
    listing = ", ".join(f"{k}: {max(e):.2f}" for k, e in sorted(errors.items()))
    return ReportSection(
        "registration", f"{template_id(name)} in {other} space", figures.plot_registration(
            registration.target_slab, load_volume(registration.image_in_target),
            figs / f"template_in_{other}.png", fixed_mask=registration.target_cord_slab,
            moving_mask=load_mask(registration.cord_in_target, allow_empty=True),
            names=(other, template_id(name))),
        caption=f"The template registered to {other} (disc-matched straightening and in-plane "
                f"refinement). Disc errors (mm), template discs mapped to {other} vs its discs: "
                f"{listing}; maximum {registration.max_disc_error_mm:.2f} mm.")


def _contrasts_section(template: Volume, mask: Volume, contrasts: Sequence[ContrastTemplate],
                       name: str, figs: Path) -> ReportSection:
    listing = "; ".join(f"{c.contrast}: {c.dice:.3f} ({len(c.subjects)} subjects, "
                        f"{c.covered_mm:.0f} mm covered)" for c in contrasts)
    return ReportSection(
        "template", "Contrast templates", figures.plot_sagittal_series(
            [template, *(load_volume(c.image) for c in contrasts)], figs / "contrasts.png",
            titles=[f"{template_id(name)} (driving)", *(c.contrast for c in contrasts)], mask=mask,
            title="contrast templates"),
        caption="Each contrast registered to the driving anatomy per subject and resampled once "
                "through the composed warps, on the same grid (discs identical by "
                f"construction). Cord-mask Dice with the driving template: {listing}.")


def _spread(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    picks = np.unique(np.rint(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in picks]
