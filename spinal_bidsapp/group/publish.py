"""Group stage 7: the TemplateFlow-style folder, its description, the SCT-ready folder and the
per-subject warps (the ``--register-to`` and ``--contrasts`` files are written by
``group.target`` and ``group.contrasts`` into the same folder).

Layout under OUTPUT_DIR (``tpl-*`` is listed in ``.bidsignore``; every name comes from
``bids.outputs.template_path``, ``sct_template_file`` and ``derivative_path``)::

    tpl-<name>/template_description.json
    tpl-<name>/tpl-<name>_res-01_<contrast>.nii.gz            the template
    tpl-<name>/tpl-<name>_res-01_desc-sd_<contrast>.nii.gz    SD across subjects
    tpl-<name>/tpl-<name>_res-01_label-SC_probseg.nii.gz      cord probability
    tpl-<name>/tpl-<name>_res-01_label-SC_mask.nii.gz
    tpl-<name>/tpl-<name>_res-01_desc-{discs,levels}_dseg.nii.gz (+ .tsv)
    tpl-<name>/tpl-<name>_res-01_desc-centerline_mask.nii.gz
    tpl-<name>/iterations/tpl-<name>_res-01_desc-iterNN[sd]_<contrast>.nii.gz, convergence.json
    tpl-<name>/tpl-<name>_res-01_{,desc-sd_}<extra contrast>.nii.gz   with --contrasts
    tpl-<name>/tpl-<name>_res-01_label-SC_desc-<extra contrast>_{mask,probseg}.nii.gz
    tpl-<name>/sct/template/<name>_{t2,t1,t2s,cord,label_disc,centerline,levels}.nii.gz,
        info_label.txt
        (use it as ``sct_register_to_template -t OUTPUT_DIR/tpl-<name>/sct``)
    sub-XX/anat/sub-XX_from-<contrast>_to-<name>_mode-image_xfm.nii.gz (and the inverse)
    sub-XX/anat/sub-XX_space-<name>_desc-preproc_<contrast>.nii.gz
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.outputs import (
    TEMPLATE_RES,
    derivative_path,
    sct_template_file,
    template_folder,
    template_id,
    template_path,
    write_lut,
    write_sidecar,
)
from spinal_bidsapp.config import SCT_CONTRAST, RunConfig
from spinal_bidsapp.engines.base import SubjectWarps, TemplateBuildResult
from spinal_bidsapp.geometry.discs import DISC_NAMES, VERTEBRA_NAMES
from spinal_bidsapp.geometry.fields import apply_field, compose_fields
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.geometry.template_space import (
    TemplateSpace,
    disc_label_array,
    level_label_array,
)
from spinal_bidsapp.group.contrasts import ContrastTemplate, contrasts_record
from spinal_bidsapp.group.straighten import StraightenJob
from spinal_bidsapp.group.target import TargetRegistration, registration_record
from spinal_bidsapp.image import Volume, load_field, load_volume, save_field, save_volume
from spinal_bidsapp.runtime.files import atomic_path, write_json
from spinal_bidsapp.templates.sct_layout import INFO_LABEL_IDS, write_info_label

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedTemplate:
    """The template files every later group stage reads or lists.

    Attributes
    ----------
    name : str
        ``--template-name``.
    root : Path
        OUTPUT_DIR (resolved), where ``bids.outputs`` places the template's files.
    folder : Path
        ``OUTPUT_DIR/tpl-<name>``.
    contrast : str
        The driving contrast (BIDS suffix).
    image, mask : Path
        The template and its cord mask.
    labels : dict
        Centerline, disc labels and levels under their ``INFO_LABEL_IDS`` keys.
    """

    name: str
    root: Path
    folder: Path
    contrast: str
    image: Path
    mask: Path
    labels: dict[str, Path]


def _copy(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def publish_template(config: RunConfig, space: TemplateSpace, result: TemplateBuildResult,
                     jobs: Sequence[StraightenJob]) -> PublishedTemplate:
    """Copy the template loop's results into ``tpl-<name>`` under TemplateFlow names and write
    its centerline, disc and level labels."""
    name = config.group.template_name
    contrast = jobs[0].subject.source.suffix
    out = config.execution.output_dir.resolve()
    tpl = template_folder(out, name)
    for leftover in tpl.rglob(".*.tmp*") if tpl.is_dir() else []:  # an interrupted publish
        leftover.unlink(missing_ok=True)
    image = _copy(result.template, template_path(out, "template", name, contrast=contrast))
    _copy(result.sd, template_path(out, "template_sd", name, contrast=contrast))
    mask = _copy(result.mask, template_path(out, "template_mask", name))
    if result.cord_probability is not None:
        _copy(result.cord_probability, template_path(out, "template_probseg", name))
    labels = _write_labels(space, load_volume(mask).data, out, name)
    for iteration in result.iterations:
        _copy(iteration.average, template_path(out, "template_iteration", name,
                                               contrast=contrast, iteration=iteration.index))
        _copy(iteration.sd, template_path(out, "template_iteration_sd", name, contrast=contrast,
                                          iteration=iteration.index))
    _copy(result.convergence, tpl / "iterations" / "convergence.json")
    return PublishedTemplate(name, out, tpl, contrast, image, mask, labels)


def write_description(config: RunConfig, space: TemplateSpace, result: TemplateBuildResult,
                      jobs: Sequence[StraightenJob], published: PublishedTemplate, *,
                      registration: TargetRegistration | None,
                      contrasts: Sequence[ContrastTemplate]) -> Path:
    """``tpl-<name>/template_description.json`` (TemplateFlow), with the ``--register-to`` and
    ``--contrasts`` records when those ran."""
    tpl = published.folder
    description = _description(config, space, published.contrast, jobs, result.protocol)
    if registration is not None:
        description["RegisteredTo"] = registration_record(registration, tpl)
    if contrasts:
        description["Contrasts"] += [c.contrast for c in contrasts]
        description["ContrastTemplates"] = contrasts_record(contrasts, tpl,
                                                            published.labels.get("label_disc"))
    path = tpl / "template_description.json"
    write_json(path, description)
    return path


def write_sct_folder(published: PublishedTemplate, contrasts: Sequence[ContrastTemplate]
                     ) -> Path:
    """``tpl-<name>/sct/template/`` with ``info_label.txt``, as SCT's ``-t`` option expects
    (PAM50's IDs, so ``sct_register_to_template -t <folder>/.. -c t2 -ldisc`` and
    ``sct_warp_template -t`` find the contrast, cord and discs)."""
    files = {SCT_CONTRAST.get(published.contrast, "t2"): published.image,
             "cord": published.mask, **published.labels,
             **{SCT_CONTRAST[c.contrast]: c.image for c in contrasts}}
    labels = []
    for key, src in sorted(files.items(), key=lambda kv: INFO_LABEL_IDS[kv[0]]):
        target = _copy(src, sct_template_file(published.root, published.name, key))
        labels.append((INFO_LABEL_IDS[key], key, target.name))
    folder = sct_template_file(published.root, published.name, "t2").parent  # its folder
    write_info_label(folder, labels)
    return folder


def publish_subjects(config: RunConfig, published: PublishedTemplate,
                     result: TemplateBuildResult, jobs: Sequence[StraightenJob]
                     ) -> list[tuple[str, Path, float]]:
    """Every subject's warps to and from the template, its anatomy and cord mask resampled in
    template space; returns (label, image in template space, cord Dice with the template)."""
    out = config.execution.output_dir.resolve()
    by_label = {w.label: w for w in result.warps}
    template_mask = load_volume(published.mask).data > 0
    aligned = []
    for job in jobs:
        warps = by_label.get(job.subject.label.replace("_", "-"))
        image, subject_cord = _subject_outputs(out, published.name, job, warps)
        aligned.append((job.subject.label, image, mask_dice(subject_cord, template_mask)))
    return aligned


def _write_labels(space: TemplateSpace, cord: np.ndarray, out: Path, name: str
                  ) -> dict[str, Path]:
    """Centerline, disc labels (when the space has discs) and vertebral levels (when it has
    measured levels); returns them under their SCT ``info_label.txt`` keys."""
    centerline = save_volume(Volume(_centerline_array(space), space.affine),
                             template_path(out, "template_centerline", name), dtype=np.uint8)
    files = {"centerline": centerline}
    discs, levels = (template_path(out, f"template_{kind}", name) for kind in ("discs", "levels"))
    discs_lut, levels_lut = (template_path(out, f"template_{kind}_lut", name)
                             for kind in ("discs", "levels"))
    if len(space.disc_values):
        files["label_disc"] = save_volume(Volume(disc_label_array(space), space.affine),
                                          discs, dtype=np.uint8)
        write_lut(discs_lut, {int(v): DISC_NAMES[int(v)] for v in space.disc_values})
    if space.levels:
        files["levels"] = save_volume(Volume(level_label_array(space, cord), space.affine),
                                      levels, dtype=np.uint8)
        write_lut(levels_lut, {int(v): VERTEBRA_NAMES[int(v)] for v in space.disc_values[:-1]})
    for stale, lut in ((discs, discs_lut), (levels, levels_lut)):  # from a disc-aligned run
        if stale not in files.values():
            stale.unlink(missing_ok=True)
            lut.unlink(missing_ok=True)
    return files


def _centerline_array(space: TemplateSpace) -> np.ndarray:
    out = np.zeros(space.shape, np.uint8)
    out[space.shape[0] // 2, space.shape[1] // 2, :] = 1
    return out


def _description(config: RunConfig, space: TemplateSpace, contrast: str,
                 jobs: Sequence[StraightenJob], protocol: Mapping[str, object]) -> dict:
    return {
        "Name": f"{config.group.template_name}: spinal cord template",
        "Identifier": config.group.template_name,
        "Authors": ["spinal_bidsapp"],
        "License": "same as the source dataset",
        "TemplateFlowVersion": "1.0.0",
        "GeneratedBy": [{"Name": "spinal_bidsapp", "Version": __version__}],
        "Contrasts": [contrast],
        "Subjects": [job.subject.label for job in jobs],
        "res": {TEMPLATE_RES: {"zooms": [abs(float(v)) for v in np.diag(space.affine)[:3]],
                      "shape": list(space.shape), "origin": space.affine[:3, 3].tolist()}},
        "Discs": {str(int(v)): {"name": DISC_NAMES[int(v)], "z_mm": round(float(z), 3)}
                  for v, z in zip(space.disc_values, space.disc_z_mm, strict=True)},
        "LevelLengths": [{"upper_disc": lv.upper, "mean_mm": round(lv.mean_mm, 3),
                          "sd_mm": round(lv.sd_mm, 3), "n_subjects": lv.n_subjects}
                         for lv in space.levels],
        "Alignment": _alignment_record(space),
        "Protocol": {"requested_engine": config.group.template_engine,
                     "preset": config.group.template_preset,
                     "symmetric": config.group.template_symmetric, **protocol},
    }


def _alignment_record(space: TemplateSpace) -> dict:
    notes = {
        "discs": "every disc common to a subject and the template matched; levels stretched "
                 "linearly in arc length",
        "end_discs": f"--no-disc-alignment: arc-length proportional between discs "
                     f"{space.disc_values.tolist()} (common to all subjects); the template's "
                     "disc labels are those two discs only, and it has no vertebral levels",
        "cord_ends": "--no-disc-alignment: arc-length proportional between the cord ends; the "
                     "template has no disc labels and no vertebral levels",
    }
    return {"Mode": space.alignment, "SpanMm": round(space.span_mm, 3),
            "Description": notes[space.alignment]}


def _subject_outputs(out: Path, name: str, job: StraightenJob,
                     warps: object) -> tuple[Path, np.ndarray]:
    """Total native <-> template warps (straightening then the loop's warp), the image and the
    cord mask in template space; returns the image path and the cord mask array."""
    source = job.subject.source
    to_tpl = load_field(job.to_template)
    from_tpl = load_field(job.from_template)
    if isinstance(warps, SubjectWarps):
        to_tpl = compose_fields(load_field(warps.subject_to_template), to_tpl)
        from_tpl = compose_fields(from_tpl, load_field(warps.template_to_subject))
    forward = derivative_path(out, "xfm_to_template", source, template=name)
    save_field(to_tpl, forward)
    save_field(from_tpl, derivative_path(out, "xfm_from_template", source, template=name))
    anat = load_volume(job.subject.anat)
    warped = Volume(np.asarray(apply_field(anat.data, anat.affine, to_tpl, order=3), np.float32),
                    to_tpl.affine)
    target = derivative_path(out, "anat_in_template", source, template=name)
    save_volume(warped, target)
    write_sidecar(target, {"SkullStripped": False,
                           "Description": f"anatomy resampled in the {name} template space",
                           "SpatialReference": template_id(name)})
    cord = load_volume(job.subject.cord)
    cord_in_template = np.asarray(apply_field(cord.data, cord.affine, to_tpl, order=1)) > 0.5
    cord_path = derivative_path(out, "cord_mask_in_template", source, template=name)
    save_volume(Volume(cord_in_template.astype(np.uint8), to_tpl.affine), cord_path,
                dtype=np.uint8)
    write_sidecar(cord_path, {"Description": f"cord mask resampled in the {name} template space",
                              "SpatialReference": template_id(name)})
    return target, cord_in_template
