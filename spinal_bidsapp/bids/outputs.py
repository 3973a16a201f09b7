"""The one place that names outputs: a table of output kinds and one path function.

Every derivative path under OUTPUT_DIR comes from :func:`derivative_path` (per subject) or
:func:`template_path` (a group template's TemplateFlow-style ``tpl-<name>`` folder); writers, the
resume logic, the group level (reading participant outputs), the reports and ``.bidsignore`` all
use the same tables, so a name is defined exactly once. Names follow BIDS Derivatives; kinds the
BIDS schema does not know yet (transforms, morphometrics, centerline tables) are listed
in ``.bidsignore``.
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


TEMPLATE_RES = "01"
"""The resolution label of a group template's files (one grid: ``--template-resolution``)."""

TEMPLATE_ENTITY_ORDER = ("res", "from", "to", "space", "label", "desc", "mode")
"""TemplateFlow entity order of a template's file names (after ``tpl-<name>``)."""

_RES = ("res", TEMPLATE_RES)

TEMPLATE_OUTPUTS: dict[str, OutputKind] = {
    "template": OutputKind((_RES,), "{contrast}", ".nii.gz", datatype="",
                           description="the template (mean of the straightened subjects)"),
    "template_sd": OutputKind((_RES, ("desc", "sd")), "{contrast}", ".nii.gz", datatype="",
                              description="SD across subjects"),
    "template_mask": OutputKind((_RES, ("label", "SC")), "mask", ".nii.gz", datatype=""),
    "template_probseg": OutputKind((_RES, ("label", "SC")), "probseg", ".nii.gz", datatype="",
                                   description="cord probability"),
    "template_centerline": OutputKind((_RES, ("desc", "centerline")), "mask", ".nii.gz",
                                      datatype=""),
    "template_discs": OutputKind((_RES, ("desc", "discs")), "dseg", ".nii.gz", datatype=""),
    "template_discs_lut": OutputKind((_RES, ("desc", "discs")), "dseg", ".tsv", datatype=""),
    "template_levels": OutputKind((_RES, ("desc", "levels")), "dseg", ".nii.gz", datatype=""),
    "template_levels_lut": OutputKind((_RES, ("desc", "levels")), "dseg", ".tsv", datatype=""),
    "template_iteration": OutputKind((_RES, ("desc", "iter{iteration}")), "{contrast}",
                                     ".nii.gz", datatype="iterations"),
    "template_iteration_sd": OutputKind((_RES, ("desc", "iter{iteration}sd")), "{contrast}",
                                        ".nii.gz", datatype="iterations"),
    "contrast_mask": OutputKind((_RES, ("label", "SC"), ("desc", "{contrast}")), "mask",
                                ".nii.gz", datatype="",
                                description="cord mask of a --contrasts template"),
    "contrast_probseg": OutputKind((_RES, ("label", "SC"), ("desc", "{contrast}")), "probseg",
                                   ".nii.gz", datatype=""),
    "xfm_to_target": OutputKind((("from", "{name}"), ("to", "{target}"), ("mode", "image")),
                                "xfm", ".nii.gz", datatype="",
                                description="--register-to: template -> target field"),
    "xfm_from_target": OutputKind((("from", "{target}"), ("to", "{name}"), ("mode", "image")),
                                  "xfm", ".nii.gz", datatype=""),
    "template_in_target": OutputKind((("space", "{target}"),), "{contrast}", ".nii.gz",
                                     datatype="", description="the template in the target"),
    "template_mask_in_target": OutputKind((("space", "{target}"), ("label", "SC")), "mask",
                                          ".nii.gz", datatype=""),
}
"""A group template's files, named as TemplateFlow does; ``datatype`` is the subfolder of
``tpl-<name>`` (empty: the folder itself). ``{contrast}``, ``{iteration}``, ``{name}`` and
``{target}`` are filled per call."""


def template_id(name: str) -> str:
    """TemplateFlow identifier of template ``name``: its folder, its page and its files' start.

    >>> template_id("SpinalCord")
    'tpl-SpinalCord'
    """
    return f"tpl-{name}"


def template_folder(root: Path, name: str) -> Path:
    """``OUTPUT_DIR/tpl-<name>``, the folder of every file of template ``name``."""
    return root / template_id(name)


def template_report_path(root: Path, name: str) -> Path:
    """``OUTPUT_DIR/tpl-<name>.html``, the group QC page."""
    return root / f"{template_id(name)}.html"


def template_path(root: Path, kind: str, name: str, *, contrast: str | None = None,
                  target: str | None = None, iteration: int | None = None) -> Path:
    """Absolute path of template file ``kind`` of template ``name`` under OUTPUT_DIR ``root``.

    >>> template_path(Path("/out"), "template_sd", "SC", contrast="T2w").as_posix()
    '/out/tpl-SC/tpl-SC_res-01_desc-sd_T2w.nii.gz'
    >>> template_path(Path("/out"), "template_iteration", "SC", contrast="T2w",
    ...               iteration=3).as_posix()
    '/out/tpl-SC/iterations/tpl-SC_res-01_desc-iter03_T2w.nii.gz'
    >>> template_path(Path("/out"), "xfm_to_target", "SC", target="PAM50").name
    'tpl-SC_from-SC_to-PAM50_mode-image_xfm.nii.gz'
    """
    spec = TEMPLATE_OUTPUTS[kind]
    fill = {"contrast": contrast or "", "target": target or "", "name": name,
            "iteration": "" if iteration is None else f"{iteration:02d}"}
    added = dict((key, value.format(**fill)) for key, value in spec.entities)
    suffix = spec.suffix.format(**fill)
    if not suffix or any(not value for value in added.values()):
        raise ValueError(f"template file kind {kind!r} needs contrast= / target= / iteration=")
    parts = [template_id(name)]
    parts += [f"{key}-{added[key]}" for key in TEMPLATE_ENTITY_ORDER if key in added]
    folder = template_folder(root, name)
    return (folder / spec.datatype if spec.datatype else folder) / (
        "_".join(parts) + f"_{suffix}{spec.extension}")


def sct_template_folder(root: Path, name: str) -> Path:
    """``tpl-<name>/sct``: template ``name`` in SCT's layout (``sct_register_to_template -t``)."""
    return template_folder(root, name) / "sct"


def sct_template_file(root: Path, name: str, key: str) -> Path:
    """``tpl-<name>/sct/template/<name>_<key>.nii.gz``, ``key`` an ``info_label.txt`` name.

    >>> sct_template_file(Path("/out"), "SC", "t2").as_posix()
    '/out/tpl-SC/sct/template/SC_t2.nii.gz'
    """
    return sct_template_folder(root, name) / "template" / f"{name}_{key}.nii.gz"


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
