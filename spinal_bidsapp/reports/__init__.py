"""Quality-control reports: figures, per-subject HTML pages and the dataset QC index.

Typical use by the participant level (paths come from :mod:`spinal_bidsapp.bids.outputs`)::

    from spinal_bidsapp.reports import ReportSection, SubjectReport, figures
    from spinal_bidsapp.reports import publish_subject_report

    figures.plot_sagittal(image, fig_seg, mask=cord, crop_box=box, title="Cord mask")
    report = SubjectReport(subject="01", session=None, provenance=provenance,
                           sections=(ReportSection("seg", "Cord segmentation", fig_seg,
                                                   caption="...", source=t2w_path),))
    publish_subject_report(report, out_dir=out, page=out / "sub-01.html")

Importing this package loads neither matplotlib nor jinja2.
"""

from spinal_bidsapp.reports.model import (
    MetricRow,
    Provenance,
    QcRecord,
    QcStep,
    ReportSection,
    SubjectReport,
    subject_key,
)
from spinal_bidsapp.reports.qc import (
    QC_FAIL_KEYS,
    build_qc_fail_yaml,
    publish_subject_report,
    qc_record,
    read_qc_records,
    rebuild_qc_index,
    write_qc_record,
)

__all__ = [
    "QC_FAIL_KEYS",
    "MetricRow",
    "Provenance",
    "QcRecord",
    "QcStep",
    "ReportSection",
    "SubjectReport",
    "build_qc_fail_yaml",
    "publish_subject_report",
    "qc_record",
    "read_qc_records",
    "rebuild_qc_index",
    "subject_key",
    "write_qc_record",
]
