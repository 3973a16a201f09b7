"""The ``report`` step of the cord reference: figures, the subject page and its QC record."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.labels import manual_label_path
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines.base import RegistrationPaths, SpinePaths, SpineRecord
from spinal_bidsapp.engines.registration import RegistrationScores
from spinal_bidsapp.engines.sct.outputs import spinal_levels_from_rootlets
from spinal_bidsapp.geometry.discs import DISC_NAMES, discs_from_label_array, spinal_level_name
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
from spinal_bidsapp.image import Volume, load_mask, load_volume
from spinal_bidsapp.participant.records import EngineStep, Quality
from spinal_bidsapp.participant.steps import disc_review_advice, read_slice_table
from spinal_bidsapp.participant.units import ParticipantUnit
from spinal_bidsapp.reports import figures, label_figures
from spinal_bidsapp.reports.model import MetricRow, Provenance, ReportSection, SubjectReport
from spinal_bidsapp.reports.qc import publish_subject_report
from spinal_bidsapp.templates.pam50 import find_template


@dataclass(frozen=True)
class ReportInputs:
    """The files the subject page is drawn from (``None``: that step did not run)."""

    anat: Path
    cord: Path
    discs: Path | None
    morph_json: Path
    registration: RegistrationPaths | None
    spine: SpinePaths | None
    rootlets: Path | None
    csa_pam50: Path | None
    """CSA in PAM50 dimensions (JSON), when computed."""
    notes: tuple[str, ...] = ()
    """What was not done and why, when that is expected."""
    engine_steps: tuple[EngineStep, ...] = ()
    """Which engine ran each engine step, and why not the run's engine where it could not
    (empty when every step can only run on the run's engine: nothing to say)."""
    lacking: tuple[tuple[str, str], ...] = ()
    """What the run's engine never provides, and the advice (its ``lacking``)."""

    def files(self) -> list[Path]:
        files = [self.anat, self.cord, self.morph_json]
        files += [p for p in (self.discs, self.rootlets, self.csa_pam50) if p is not None]
        if self.spine is not None:
            files += [self.spine.vertebrae, self.spine.canal, self.spine.check]
        if self.registration is not None:
            files += [self.registration.anat_in_template, self.registration.template_cord,
                      self.registration.metrics]
        return files


def build_report(unit: ParticipantUnit, config: RunConfig, inputs: ReportInputs, *, page: Path,
                 figure: Callable[[str], Path], warnings: tuple[str, ...]) -> None:

    src = unit.source
    anat_vol, cord_vol = load_volume(inputs.anat), load_mask(inputs.cord)
    disc_vol = load_mask(inputs.discs) if inputs.discs is not None else None
    origin = _mask_origin(Quality.read(inputs.cord))
    sections = [
        ReportSection("seg", "Cord segmentation", figures.plot_sagittal(
            anat_vol, figure("cordseg"), mask=cord_vol, title=f"{src.stem}: cord mask"),
            caption=f"Mid-cord sagittal slice with the cord mask outline ({origin}). The "
                    "outline should follow the cord edge from top to bottom.", source=src.path),
        ReportSection("seg", "Cord cross-sections", figures.plot_axial_montage(
            anat_vol, cord_vol, figure("cordaxial"), title="axial slices along the cord"),
            caption="Axial slices spread along the cord; the outline should hug the cord and "
                    "leave the CSF out.", source=src.path),
    ]
    if inputs.discs is not None and disc_vol is not None:
        sections.append(ReportSection("discs", "Disc labels", figures.plot_sagittal(
            anat_vol, figure("discs"), mask=cord_vol, discs=disc_vol,
            title="intervertebral discs (SCT numbering)"),
            caption="Each label should sit at the level of its disc (value N = disc above "
                    "vertebra N). " + _disc_origin(unit, config, inputs.discs),
            source=src.path))
    morph = json.loads(inputs.morph_json.read_text(encoding="utf-8"))
    metrics = _metric_rows(morph)
    if inputs.spine is not None:
        section, rows = _spine_section(anat_vol, cord_vol, disc_vol, inputs.spine,
                                       figure("spine"), source=src.path)
        sections.append(section)
        metrics += rows
    if inputs.rootlets is not None:
        section, rows = _rootlet_section(anat_vol, cord_vol, inputs.rootlets,
                                         figure("rootlets"), source=src.path)
        sections.append(section)
        metrics += rows
    sections.append(_csa_section(inputs.morph_json, disc_vol, figure("csa")))
    if inputs.registration is not None:
        sections += _registration_sections(config, inputs.registration, figure)
        metrics += _registration_rows(json.loads(inputs.registration.metrics.read_text(
            encoding="utf-8")))
    if inputs.csa_pam50 is not None:
        metrics += _pam50_csa_rows(json.loads(inputs.csa_pam50.read_text(encoding="utf-8")))
    metrics += _engine_rows(inputs)
    metrics += _unavailable_rows(inputs)
    report = SubjectReport(
        subject=src.subject, session=src.session, sections=tuple(sections),
        provenance=Provenance(version=__version__, engine=config.participant.engine,
                              run_uuid=config.execution.run_uuid,
                              generated=datetime.now(timezone.utc).isoformat(timespec="seconds")),
        metrics=tuple(metrics), warnings=warnings, title_extra=src.suffix)
    publish_subject_report(report, out_dir=config.execution.output_dir.resolve(), page=page)


def _spine_section(anat: Volume, cord: Volume, discs: Volume | None, spine: SpinePaths,
                   out: Path, *, source: Path) -> tuple[ReportSection, list[MetricRow]]:

    check = SpineRecord.read(spine.check)
    problems = [str(p) for p in check.problems]
    image = label_figures.plot_spine_labels(
        anat, out, vertebrae=load_mask(spine.vertebrae, allow_empty=True), discs=discs,
        cord=cord, canal=load_mask(spine.canal, allow_empty=True), flagged=problems)
    found = check.vertebrae
    rows = [MetricRow("vertebrae found (SCT spine task)",
                      f"{found[0]}-{found[-1]}" if found else "none", "",
                      f"{len(found)} vertebrae, {len(check.discs)} discs"),
            MetricRow("vertebra/disc consistency", "flagged" if problems else "consistent", "",
                      "; ".join(problems))]
    return ReportSection(
        "spine", "Vertebrae, discs and canal", image,
        caption="Vertebral bodies coloured by level, discs, cord and canal outlines (SCT "
                f"{check.method}). Each level should appear once, in order, with its disc "
                "above it; a banner lists what the consistency check flagged.",
        source=source), rows


def _rootlet_section(anat: Volume, cord: Volume, rootlets: Path, out: Path, *,
                     source: Path) -> tuple[ReportSection, list[MetricRow]]:

    vol = load_mask(rootlets)
    levels = spinal_levels_from_rootlets(vol.data, vol.affine)
    image = label_figures.plot_rootlets(anat, vol, out, cord=cord)
    rows = [MetricRow(f"rootlets {spinal_level_name(e.level)}",
                      round(e.superior_mm - e.inferior_mm, 1), "mm",
                      f"rostro-caudal extent, z {e.inferior_mm:.1f} to {e.superior_mm:.1f} mm")
            for e in levels]
    return ReportSection(
        "rootlets", "Dorsal nerve rootlets", image,
        caption="Rootlets coloured by spinal level; levels should follow each other from top "
                "to bottom without gaps or overlaps.", source=source), rows


def _registration_rows(reg: dict) -> list[MetricRow]:
    rows = [MetricRow("cord Dice in PAM50 space", reg["cord_dice_in_template"])]
    if "cord_dice_native" in reg:  # absent from metrics written before it was added
        rows.append(MetricRow("cord Dice, PAM50 cord in native space", reg["cord_dice_native"]))
    measured = [v for e in reg["disc_error_mm"].values() for v in e.values() if v is not None]
    rows.append(MetricRow("max disc error after registration", max(measured, default=np.nan),
                          "mm", _no_mapping_note(reg["disc_error_mm"])))
    if "selection" in reg:
        rows.append(MetricRow("primary registration", reg.get("primary", reg["labels"]), "",
                              reg["selection"]))
        if "sct_selection" in reg:
            rows.append(MetricRow("SCT's registration", reg["sct_selection"].split(":")[0], "",
                                  reg["sct_selection"]))
        for labels, scored in reg["paths"].items():
            scores = RegistrationScores.from_json(scored)
            name = _OTHER_ENGINE_PATHS.get(labels) or (
                f"SCT {labels}-based registration" if "sct_selection" in reg
                else f"{labels}-based registration")
            errors = [e["to_template"] for e in scores.disc_error_mm.values()
                      if e["to_template"] is not None]
            note = _no_mapping_note(scores.disc_error_mm)
            rows.append(MetricRow(
                f"{name}: cord Dice in PAM50 space",
                scores.cord_dice_in_template, "",
                f"native {scores.cord_dice_native:.3f}; max disc error "
                f"{max(errors, default=np.nan):.2f} mm" + (f"; {note}" if note else "")))
    return rows


_OTHER_ENGINE_PATHS = {"builtin": "builtin registration"}
"""Registration paths of another engine than SCT in the metrics (``--engine auto``)."""


def _no_mapping_note(disc_errors: dict[str, dict[str, float | None]]) -> str:
    """Which discs the warp does not map (``null`` errors), for the report."""
    unmapped = [disc for disc, e in disc_errors.items() if None in e.values()]
    return f"no mapping at disc(s) {', '.join(unmapped)}" if unmapped else ""


def _pam50_csa_rows(summary: dict) -> list[MetricRow]:
    normative = {e["level"]: e for e in (summary["normative"] or {}).get("levels", [])}
    rows = []
    for level in summary["levels"]:
        note = "partial level; " if level["partial"] else ""
        norm = normative.get(level["level"])
        if norm is not None:
            z = f", z {norm['z_score']:+.2f}" if norm["z_score"] is not None else ""
            note += (f"{norm['percent_of_normative']:.0f} % of {norm['n_subjects']} healthy "
                     f"controls ({norm['normative_mean_mm2']:.1f} mm²){z}")
        else:
            note += summary.get("normative_note", "no normative value at this level")
        rows.append(MetricRow(f"CSA {level['name']}, PAM50 dimensions", level["csa_mean_mm2"],
                              "mm²", note))
    return rows


def _engine_rows(inputs: ReportInputs) -> list[MetricRow]:
    """Which engine ran each engine step (the record's label: ``SCT``, ``builtin (SCT
    fallback)``, ``skipped``...) and what it ran, or why the run's engine could not."""
    return [MetricRow(f"engine: {e.step}", e.label, "",
                      e.method if e.fallback_reason is None else e.fallback_reason)
            for e in inputs.engine_steps]


def _unavailable_rows(inputs: ReportInputs) -> list[MetricRow]:
    """Say what was not done, and what this engine does not provide, rather than leave it out
    silently."""
    rows = [MetricRow(note.split(":", 1)[0], "not done", "", note.split(":", 1)[1].strip())
            for note in inputs.notes]
    return rows + [MetricRow(what, "not available", "", why) for what, why in inputs.lacking]


def _disc_origin(unit: ParticipantUnit, config: RunConfig, discs: Path) -> str:
    """Where the disc labels come from; for builtin labels their confidence, and when it is
    low, what to check and how to correct them."""
    quality = Quality.read(discs)
    if not quality.has_confidence:
        return "Manual labels." if quality.manual else (
            f"{quality.method} automatic labelling, review the levels.")
    text = f"Builtin automatic labelling, confidence {quality.confidence}"
    anchor = quality.c2c3_anchor
    if isinstance(anchor, dict):
        verdict = "agrees with" if anchor["AgreesWithPattern"] else "overrules"
        text += (f"; C2/C3 at z {anchor['WorldZmm']} mm from the C2 vertebra seen on "
                 f"{anchor['Source']} {verdict} the template match")
    borrowed = quality.discs_from_session
    if isinstance(borrowed, dict):
        names = ", ".join(DISC_NAMES[int(v)] for v in borrowed["Discs"])
        text += (f"; {names} cut by this field of view, placed on the disc band seen on "
                 f"{borrowed['Source']}")
    if not quality.low_confidence:
        return text + "."
    return text + " (low): " + disc_review_advice(
        quality, subject=unit.source.subject,
        labels_path=manual_label_path(config.execution.labels_dir, unit.source, "discs")) + "."


def _mask_origin(quality: Quality) -> str:
    """Where the cord mask came from, for the figure caption (SCT's method by name; ours, which
    reports a confidence, as builtin)."""
    if quality.manual:
        return "manual"
    if not quality.has_confidence:
        return f"{quality.method} automatic segmentation, review it"
    return "builtin automatic segmentation, review it"


def _metric_rows(morph: dict) -> list[MetricRow]:
    rows = [MetricRow("cord length (centerline)", morph["cord_length_mm"], "mm"),
            MetricRow("cord volume", morph["cord_volume_mm3"], "mm³"),
            MetricRow("mean CSA (angle-corrected)", morph["csa_mean_mm2"], "mm²",
                      f"SD {morph['csa_sd_mm2']:.2f} over {morph['n_slices']} slices")]
    for level in morph["levels"]:
        rows.append(MetricRow(f"CSA {level['name']}", level["csa_mean_mm2"], "mm²",
                              f"SD {level['csa_sd_mm2']:.2f}, range "
                              f"{level['csa_min_mm2']:.1f}-{level['csa_max_mm2']:.1f}, "
                              f"{level['n_slices']} slices"))
    return rows


def _csa_section(morph_json: Path, disc_vol: Volume | None, out: Path) -> ReportSection:

    table = read_slice_table(morph_json.with_name(morph_json.name.replace(".json", ".tsv")))
    discs = []
    if disc_vol is not None:
        discs = [(v, float(p[2])) for v, p in
                 discs_from_label_array(disc_vol.data, disc_vol.affine).items()]
    return ReportSection("metrics", "Cross-sectional area", figures.plot_csa(
        table.z_mm, table.csa_mm2, out, discs=discs, title="CSA along the cord"),
        caption="Angle-corrected cross-sectional area per slice; sudden jumps point to "
                "segmentation errors.")


def _registration_sections(config: RunConfig, reg: RegistrationPaths,
                           figure: Callable[[str], Path]) -> list[ReportSection]:

    template = find_template(config)
    moving = load_volume(reg.anat_in_template)
    moving_mask = load_mask(reg.cord_in_template, allow_empty=True)
    identity = DisplacementField(np.zeros((*moving.shape, 3), np.float32), moving.affine)
    assert template is not None
    source = load_volume(template.t2) if template.t2 else load_mask(template.cord)
    fixed = Volume(apply_field(source.data, source.affine, identity, order=1), moving.affine)
    tpl_cord = load_mask(template.cord)
    fixed_mask = Volume((apply_field(tpl_cord.data.astype(np.float32), tpl_cord.affine,
                                     identity, order=1) > 0.5).astype(np.uint8), moving.affine)
    overlay = figures.plot_registration(
        fixed, moving, figure("pam50reg"), fixed_mask=fixed_mask, moving_mask=moving_mask,
        names=("PAM50", "subject"), title="subject in PAM50 space")
    frame_tpl, frame_sub = figures.plot_flicker_frames(
        fixed, moving, figure("pam50flickertpl"), figure("pam50flickersub"),
        fixed_mask=fixed_mask, moving_mask=moving_mask, names=("PAM50", "subject"))
    return [
        ReportSection("reg", "Registration to PAM50", overlay,
                      caption="PAM50 (red outline) and the subject resampled in PAM50 space "
                              "(cyan); the two outlines should coincide."),
        ReportSection("reg", "Registration to PAM50 (flicker)", frame_tpl,
                      caption="Hover to switch between PAM50 and the registered subject.",
                      hover_figure=frame_sub),
    ]
