"""Synthetic phantom for the report tests: a slightly curved cylinder cord in a box.

The phantom is built on an anisotropic RAS grid, then stored on disk in another orientation
(``P I L``) so every figure has to reorient and honour the voxel sizes to look right.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinal_bidsapp.image import Volume

ZOOMS_MM = (0.8, 0.6, 2.0)
SHAPE = (40, 50, 45)
STORAGE = ("P", "I", "L")
CORD_RADIUS_MM = 3.5
CSF_RADIUS_MM = 6.0
DISCS = {2: 80.0, 3: 65.0, 4: 50.0, 5: 35.0, 6: 20.0}
"""SCT disc value -> S position, mm (world)."""


@dataclass(frozen=True)
class Phantom:
    image: Volume
    mask: Volume
    discs: Volume
    template: Volume
    template_mask: Volume
    paths: dict[str, Path]


def cord_centre_mm(s_mm: np.ndarray, *, shift_a_mm: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Cord centre (R, A), mm, at height ``s_mm``: fixed in R, drifting anteriorly with S."""
    return np.full_like(s_mm, 16.0), 14.0 + 3.0 * s_mm / 90.0 + shift_a_mm


def phantom_volumes(*, shift_a_mm: float = 0.0, seed: int = 0) -> tuple[Volume, Volume, Volume]:
    """(image, cord mask, disc labels) on the RAS grid."""
    rng = np.random.default_rng(seed)
    affine = np.diag([*ZOOMS_MM, 1.0])
    r, a, s = (np.arange(n) * z for n, z in zip(SHAPE, ZOOMS_MM, strict=True))
    rr, aa, ss = np.meshgrid(r, a, s, indexing="ij")
    cr, ca = cord_centre_mm(ss, shift_a_mm=shift_a_mm)
    dist = np.hypot(rr - cr, aa - ca)
    image = np.full(SHAPE, 0.25, np.float32)
    image[dist < CSF_RADIUS_MM] = 1.0
    image[dist < CORD_RADIUS_MM] = 0.5
    image += rng.normal(0, 0.03, SHAPE).astype(np.float32)
    mask = (dist < CORD_RADIUS_MM).astype(np.uint8)
    discs = np.zeros(SHAPE, np.int32)
    for value, s_mm in DISCS.items():
        k = round(s_mm / ZOOMS_MM[2])
        centre_r, centre_a = cord_centre_mm(np.array(s_mm), shift_a_mm=shift_a_mm)
        i = round(float(centre_r) / ZOOMS_MM[0])
        j = round((float(centre_a) + 8.0) / ZOOMS_MM[1])
        discs[i, j, k] = value
    return Volume(image, affine), Volume(mask, affine), Volume(discs, affine)


def publish_phantom_reports(phantom_image: Volume, phantom_mask: Volume, phantom_discs: Volume,
                            out: Path, keys: tuple[tuple[str, str | None], ...]) -> list[Path]:
    """Draw figures and publish a report per (subject, session) under ``out``; returns pages."""
    from spinal_bidsapp.reports import (
        MetricRow,
        Provenance,
        ReportSection,
        SubjectReport,
        figures,
        publish_subject_report,
        subject_key,
    )

    pages = []
    for subject, session in keys:
        key = subject_key(subject, session)
        fig_dir = out / f"sub-{subject}" / "figures"
        seg = figures.plot_sagittal(phantom_image, fig_dir / f"{key}_desc-seg_T2w.png",
                                    mask=phantom_mask)
        discs = figures.plot_sagittal(phantom_image, fig_dir / f"{key}_desc-discs_T2w.png",
                                      discs=phantom_discs)
        source = Path(f"/bids/sub-{subject}/anat/{key}_T2w.nii.gz")
        report = SubjectReport(
            subject=subject, session=session,
            provenance=Provenance(version="9.9.9", engine="builtin", engine_version="1.0",
                                  run_uuid="run-123", generated="2026-01-01T00:00:00+00:00"),
            sections=(
                ReportSection("seg", "Cord segmentation", seg, "Red: cord mask.", source=source),
                ReportSection("discs", "Disc labels", discs, "Disc names.", source=source),
                ReportSection("reg", "Registration", seg, "Flicker.", hover_figure=discs,
                              source=source),
            ),
            metrics=(MetricRow("mean CSA", 76.54321, "mm²"), MetricRow("levels", "C2-C5")),
            warnings=("disc C1/C2 not found",),
            errors=("registration: <failed> & retried",) if subject == "02" else (),
            title_extra="T2w",
        )
        page = out / f"{key}.html"
        pages.append(publish_subject_report(report, out_dir=out, page=page))
    return pages
