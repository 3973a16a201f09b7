"""The one place that names outputs: a table of output kinds and one path function.

Every derivative path under OUTPUT_DIR comes from :func:`derivative_path`; writers, the resume
logic, the group level (reading participant outputs), the reports and ``.bidsignore`` all use the
same table, so a name is defined exactly once. Names follow BIDS Derivatives; kinds the BIDS schema
does not know yet (transforms, morphometrics, centerline tables) are listed in ``.bidsignore``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.dataset import SourceImage
from spinal_bidsapp.runtime.files import write_json, write_text

logger = logging.getLogger(__name__)

BIDS_VERSION = "1.10.0"
LOCK_NAME = ".spinal_bidsapp.lock"
LOCK_TIMEOUT_S = 600
ENTITY_ORDER = ("from", "to", "space", "label", "desc", "mode")
"""Order of the entities this package adds after the source entities (BIDS entity table order)."""


@dataclass(frozen=True)
class OutputKind:
    """One kind of derivative. ``{suffix}`` and ``{template}`` in values are filled per call."""

    entities: tuple[tuple[str, str], ...]
    suffix: str
    extension: str
    datatype: str = "anat"
    in_bids_schema: bool = True
    description: str = ""


OUTPUTS: dict[str, OutputKind] = {
    "anat_preproc": OutputKind((("desc", "preproc"),), "{suffix}", ".nii.gz",
                               description="anatomy reoriented to RAS (the subject reference)"),
    "cord_mask": OutputKind((("label", "SC"),), "mask", ".nii.gz",
                            description="spinal cord mask"),
    "centerline_mask": OutputKind((("desc", "centerline"),), "mask", ".nii.gz",
                                  description="cord centerline voxels"),
    "centerline_table": OutputKind((("desc", "centerline"),), "morphometrics", ".tsv",
                                   in_bids_schema=False,
                                   description="dense centerline: arc length, x, y, z (mm)"),
    "discs": OutputKind((("desc", "discs"),), "dseg", ".nii.gz",
                        description="disc point labels, SCT numbering"),
    "discs_lut": OutputKind((("desc", "discs"),), "dseg", ".tsv",
                            description="look-up table of the disc labels"),
    "levels": OutputKind((("desc", "levels"),), "dseg", ".nii.gz",
                         description="vertebral levels of the cord mask"),
    "levels_lut": OutputKind((("desc", "levels"),), "dseg", ".tsv"),
    "morphometrics": OutputKind((("desc", "cord"),), "morphometrics", ".tsv",
                                in_bids_schema=False,
                                description="cord length, volume, CSA per slice and per level"),
    "morphometrics_json": OutputKind((("desc", "cord"),), "morphometrics", ".json",
                                     in_bids_schema=False),
    "xfm_to_template": OutputKind(
        (("from", "{suffix}"), ("to", "{template}"), ("mode", "image")), "xfm", ".nii.gz",
        in_bids_schema=False, description="ITK displacement field, native -> template"),
    "xfm_from_template": OutputKind(
        (("from", "{template}"), ("to", "{suffix}"), ("mode", "image")), "xfm", ".nii.gz",
        in_bids_schema=False, description="ITK displacement field, template -> native"),
    "anat_in_template": OutputKind((("space", "{template}"), ("desc", "preproc")), "{suffix}",
                                   ".nii.gz", description="anatomy resampled in template space"),
    "cord_mask_in_template": OutputKind((("space", "{template}"), ("label", "SC")), "mask",
                                        ".nii.gz"),
    "template_levels_native": OutputKind((("desc", "{template}levels"),), "dseg", ".nii.gz",
                                         description="template vertebral levels in native space"),
    "template_cord_native": OutputKind((("label", "SC"), ("desc", "{template}")), "mask",
                                       ".nii.gz",
                                       description="template cord mask in native space"),
    "straight_anat": OutputKind((("space", "{template}"), ("desc", "straight")), "{suffix}",
                                ".nii.gz", description="anatomy straightened to template space"),
    "straight_cord_mask": OutputKind((("space", "{template}"), ("label", "SC"),
                                      ("desc", "straight")), "mask", ".nii.gz"),
    "figure": OutputKind((("desc", "{figure}"),), "{suffix}", ".png", datatype="figures",
                         in_bids_schema=False),
    "vertebrae": OutputKind((("desc", "vertebrae"),), "dseg", ".nii.gz",
                            description="vertebral bodies, SCT vertebral levels (TotalSpineSeg)"),
    "vertebrae_lut": OutputKind((("desc", "vertebrae"),), "dseg", ".tsv"),
    "canal_mask": OutputKind((("label", "canal"),), "mask", ".nii.gz",
                             description="spinal canal: cord and CSF (TotalSpineSeg)"),
    "rootlets": OutputKind((("desc", "rootlets"),), "dseg", ".nii.gz",
                           description="dorsal nerve rootlets, value = spinal level"),
    "rootlets_lut": OutputKind((("desc", "rootlets"),), "dseg", ".tsv"),
    "morphometrics_pam50": OutputKind((("space", "{template}"), ("desc", "cord")),
                                      "morphometrics", ".tsv", in_bids_schema=False,
                                      description="CSA per template slice (PAM50 dimensions)"),
    "morphometrics_pam50_json": OutputKind((("space", "{template}"), ("desc", "cord")),
                                           "morphometrics", ".json", in_bids_schema=False),
    **{f"xfm_{way}_template_{path}": OutputKind(
        (*entities, ("desc", path), ("mode", "image")), "xfm", ".nii.gz", in_bids_schema=False,
        description=f"{what} when it is not the primary one")
       for path, what in (("discs", "SCT's disc-based registration"),
                          ("rootlets", "SCT's rootlet-based registration"),
                          ("builtin", "the builtin registration (an --engine auto candidate)"))
       for way, entities in (("to", (("from", "{suffix}"), ("to", "{template}"))),
                             ("from", (("from", "{template}"), ("to", "{suffix}"))))},
}

BIDSIGNORE = (
    # folder patterns carry no trailing slash: bids-validator-deno does not match "work/"
    "work",
    "logs",
    "qc",
    "figures",
    "*.html",
    "*_xfm.*",
    "*_morphometrics.*",
    "tpl-*",
    "template",
)


README = """# spinal_bidsapp derivatives

Outputs of [spinal_bidsapp](https://github.com/spinal-bidsapp/spinal_bidsapp): per-subject spinal
cord reference (participant level) and population templates (group level). See
`dataset_description.json` for the versions that produced them, `logs/` for the configuration of
every run, and `sub-<label>.html` for the quality-control report of each subject.
"""


def derivative_path(root: Path, kind: str, source: SourceImage, *, template: str | None = None,
                    figure: str | None = None) -> Path:
    """Absolute path of output ``kind`` derived from ``source``.

    >>> src = SourceImage(Path("/raw/sub-01/anat/sub-01_T2w.nii.gz"), "01", None, "T2w", "anat")
    >>> derivative_path(Path("/out"), "xfm_to_template", src, template="PAM50").name
    'sub-01_from-T2w_to-PAM50_mode-image_xfm.nii.gz'
    """
    spec = OUTPUTS[kind]
    fill = {"suffix": source.suffix, "template": template or "", "figure": figure or ""}
    added = dict((key, value.format(**fill)) for key, value in spec.entities)
    if any(not value for value in added.values()):
        raise ValueError(f"output kind {kind!r} needs template= / figure=")
    parts = [source.entity_prefix]
    parts += [f"{key}-{added[key]}" for key in ENTITY_ORDER if key in added]
    name = "_".join(parts) + f"_{spec.suffix.format(**fill)}{spec.extension}"
    return root / source.subject_dir / spec.datatype / name


def sidecar_path(path: Path) -> Path:
    """``x.nii.gz`` -> ``x.json``."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".tsv", ".png"):
        if name.endswith(ext):
            return path.with_name(name[: -len(ext)] + ".json")
    return path.with_suffix(".json")


def raw_uri(bids_dir: Path, path: Path) -> str:
    """BIDS URI of a raw file (``bids:raw:sub-01/anat/sub-01_T2w.nii.gz``)."""
    # absolute, not resolved: DataLad/git-annex datasets are symlinks into .git/annex
    absolute, root = Path(os.path.abspath(path)), Path(os.path.abspath(bids_dir))
    if root not in absolute.parents:
        return absolute.as_uri()
    return f"bids:raw:{absolute.relative_to(root).as_posix()}"


def write_sidecar(image: Path, fields: dict[str, Any]) -> Path:
    """JSON sidecar of a derivative (``Sources``, ``Description``, and required keys)."""
    target = sidecar_path(image)
    write_json(target, fields)
    return target


def subject_report_path(root: Path, source: SourceImage) -> Path:
    session = f"_ses-{source.session}" if source.session else ""
    return root / f"sub-{source.subject}{session}.html"


def write_lut(path: Path, labels: dict[int, str]) -> None:
    """BIDS ``_dseg.tsv`` look-up table (index, name)."""
    rows = ["index\tname"] + [f"{index}\t{name}" for index, name in sorted(labels.items())]
    write_text(path, "\n".join(rows) + "\n")


def dataset_lock(root: Path) -> FileLock:
    """Lock guarding dataset-level files against concurrent participant jobs (SLURM arrays)."""
    root.mkdir(parents=True, exist_ok=True)
    return FileLock(str(root / LOCK_NAME), timeout=LOCK_TIMEOUT_S)


def _source_dataset_entry(bids_dir: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"URL": bids_dir.resolve().as_uri()}
    description = bids_dir / "dataset_description.json"
    try:
        raw = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return entry
    if raw.get("DatasetDOI"):
        entry["DOI"] = raw["DatasetDOI"]
    if raw.get("Version"):
        entry["Version"] = raw["Version"]
    return entry


def write_dataset_files(root: Path, *, bids_dir: Path, engines: dict[str, str],
                        container: dict[str, str] | None = None) -> None:
    """(Re)write ``dataset_description.json`` and ``.bidsignore`` under the dataset lock."""
    generated_by: list[dict[str, Any]] = [{
        "Name": "spinal_bidsapp",
        "Version": __version__,
        "Description": "Spinal cord reference and templates (BIDS App)",
        "CodeURL": "https://github.com/spinal-bidsapp/spinal_bidsapp",
    }]
    if container:
        generated_by[0]["Container"] = container
    generated_by += [{"Name": name, "Version": version}
                     for name, version in sorted(engines.items())]
    description = {
        "Name": "spinal_bidsapp derivatives",
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": generated_by,
        "DatasetLinks": {"raw": bids_dir.resolve().as_uri()},
        "SourceDatasets": [_source_dataset_entry(bids_dir)],
    }
    with dataset_lock(root):
        target = root / "dataset_description.json"
        if target.is_file():
            try:
                previous = json.loads(target.read_text(encoding="utf-8"))
                old = previous.get("GeneratedBy", [{}])[0].get("Version")
            except (OSError, json.JSONDecodeError, IndexError, AttributeError):
                old = None
            if old and old != __version__:
                logger.warning("%s holds outputs of spinal_bidsapp %s; this is %s: mixing "
                               "versions in one output folder is not recommended", root, old,
                               __version__)
        write_json(target, description)
        write_text(root / ".bidsignore", "\n".join(BIDSIGNORE) + "\n")
        if not (root / "README.md").is_file():
            write_text(root / "README.md", README)
