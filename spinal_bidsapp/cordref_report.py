"""The ``report`` step of the cord reference: figures, the subject page and its QC record."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from spinal_bidsapp import __version__
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.cordref_steps import RegistrationPaths, find_template, read_quality
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.geometry.fields import DisplacementField, apply_field
from spinal_bidsapp.image import Volume, load_mask, load_volume
from spinal_bidsapp.participant import ParticipantUnit
from spinal_bidsapp.reports.model import MetricRow, Provenance, ReportSection, SubjectReport


def build_report(unit: ParticipantUnit, config: RunConfig, *, page: Path, anat: Path, cord: Path,
                 discs: Path | None, morph_json: Path, registration: RegistrationPaths | None,
                 figure: Callable[[str], Path], warnings: tuple[str, ...]) -> None:
    from spinal_bidsapp.reports import figures
    from spinal_bidsapp.reports.qc import publish_subject_report

    src = unit.source
    anat_vol, cord_vol = load_volume(anat), load_mask(cord)
    disc_vol = load_mask(discs) if discs is not None else None
    origin = _mask_origin(read_quality(cord))
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
    if disc_vol is not None:
        sections.append(ReportSection("discs", "Disc labels", figures.plot_sagittal(
            anat_vol, figure("discs"), mask=cord_vol, discs=disc_vol,
            title="intervertebral discs (SCT numbering)"),
            caption="Each label should sit at the level of its disc (value N = disc above "
                    "vertebra N).", source=src.path))
    morph = json.loads(morph_json.read_text(encoding="utf-8"))
    sections.append(_csa_section(morph_json, disc_vol, figure("csa")))
    metrics = _metric_rows(morph)
    if registration is not None:
        sections += _registration_sections(config, registration, figure)
        reg = json.loads(registration.metrics.read_text(encoding="utf-8"))
        metrics.append(MetricRow("cord Dice in PAM50 space", reg["cord_dice_in_template"]))
        if "cord_dice_native" in reg:  # absent from metrics written before it was added
            metrics.append(MetricRow("cord Dice, PAM50 cord in native space",
                                     reg["cord_dice_native"]))
        worst = max((max(e.values()) for e in reg["disc_error_mm"].values()), default=np.nan)
        metrics.append(MetricRow("max disc error after registration", worst, "mm"))
    report = SubjectReport(
        subject=src.subject, session=src.session, sections=tuple(sections),
        provenance=Provenance(version=__version__, engine=config.participant.engine,
                              run_uuid=config.execution.run_uuid,
                              generated=datetime.now(timezone.utc).isoformat(timespec="seconds")),
        metrics=tuple(metrics), warnings=warnings, title_extra=src.suffix)
    publish_subject_report(report, out_dir=config.execution.output_dir.resolve(), page=page)


def _mask_origin(quality: dict[str, object]) -> str:
    """Where the cord mask came from, for the figure caption."""
    if quality["source"] == "manual":
        return "manual"
    if quality["source"] == "sct":
        return f"{quality['method']} automatic segmentation, review it"
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
    from spinal_bidsapp.reports import figures

    table = morph_json.with_name(morph_json.name.replace(".json", ".tsv"))
    rows = [line.split("\t") for line in table.read_text(encoding="utf-8").splitlines()[1:]]
    z = np.array([float(r[4]) for r in rows])
    csa = np.array([float(r[7]) for r in rows])
    discs = []
    if disc_vol is not None:
        discs = [(v, float(p[2])) for v, p in
                 discs_from_label_array(disc_vol.data, disc_vol.affine).items()]
    return ReportSection("metrics", "Cross-sectional area", figures.plot_csa(
        z, csa, out, discs=discs, title="CSA along the cord"),
        caption="Angle-corrected cross-sectional area per slice; sudden jumps point to "
                "segmentation errors.")


def _registration_sections(config: RunConfig, reg: RegistrationPaths,
                           figure: Callable[[str], Path]) -> list[ReportSection]:
    from spinal_bidsapp.reports import figures

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
