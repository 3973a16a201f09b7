"""Group outputs: the TemplateFlow-style folder, the SCT-ready folder and per-subject warps.

Layout under OUTPUT_DIR (``tpl-*`` is listed in ``.bidsignore``)::

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
from typing import TYPE_CHECKING

import numpy as np

from spinal_bidsapp import __version__
from spinal_bidsapp.bids.outputs import derivative_path, write_lut, write_sidecar
from spinal_bidsapp.config import RunConfig
from spinal_bidsapp.engines.base import TemplateBuildResult
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import DISC_NAMES, VERTEBRA_NAMES
from spinal_bidsapp.geometry.metrics import mask_dice
from spinal_bidsapp.image import Volume, load_volume, save_volume
from spinal_bidsapp.runtime.files import atomic_path, write_json
from spinal_bidsapp.templates.sct_layout import (
    INFO_LABEL,
    INFO_LABEL_IDS,
    read_info_label,
    write_info_label,
)
from spinal_bidsapp.templatespace import TemplateSpace, disc_label_array, level_label_array

if TYPE_CHECKING:
    from spinal_bidsapp.group import StraightenJob

logger = logging.getLogger(__name__)

RES = "01"
SCT_CONTRAST = {"T2w": "t2", "T1w": "t1", "T2starw": "t2s"}


def _copy(src: Path, dst: Path) -> Path:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
    return dst


def publish_template(config: RunConfig, space: TemplateSpace, result: TemplateBuildResult,
                     jobs: Sequence[StraightenJob],
                     target: RegistrationTarget | None = None, *, nprocs: int = 1) -> Path:
    """Write every group output, registered to ``target`` if given, with the templates of the
    further ``--contrasts`` (``nprocs`` workers); returns the TemplateFlow folder."""
    name = config.group.template_name
    contrast = jobs[0].subject.source.suffix
    out = config.execution.output_dir.resolve()
    tpl = out / f"tpl-{name}"
    for leftover in tpl.rglob(".*.tmp*") if tpl.is_dir() else []:  # an interrupted publish
        leftover.unlink(missing_ok=True)
    prefix = f"tpl-{name}_res-{RES}"
    image = _copy(result.template, tpl / f"{prefix}_{contrast}.nii.gz")
    _copy(result.sd, tpl / f"{prefix}_desc-sd_{contrast}.nii.gz")
    mask = _copy(result.mask, tpl / f"{prefix}_label-SC_mask.nii.gz")
    if result.cord_probability is not None:
        _copy(result.cord_probability, tpl / f"{prefix}_label-SC_probseg.nii.gz")
    cord = load_volume(mask)
    labels = _write_labels(space, cord.data, tpl, prefix)
    for iteration in result.iterations:
        tag = f"iter{iteration.index:02d}"
        _copy(iteration.average, tpl / "iterations" / f"{prefix}_desc-{tag}_{contrast}.nii.gz")
        _copy(iteration.sd, tpl / "iterations" / f"{prefix}_desc-{tag}sd_{contrast}.nii.gz")
    _copy(result.convergence, tpl / "iterations" / "convergence.json")
    registration = None if target is None else register_template(
        config, target, space, tpl=tpl, image=image, mask=mask, contrast=contrast)
    from spinal_bidsapp.group_contrasts import build_contrast_templates, contrasts_record

    extra = build_contrast_templates(config, space, result, jobs, tpl=tpl, prefix=prefix,
                                     nprocs=nprocs)
    description = _description(config, space, contrast, jobs, result.protocol)
    if registration is not None:
        description["RegisteredTo"] = _registration_record(registration, tpl)
    if extra:
        description["Contrasts"] += [c.contrast for c in extra]
        description["ContrastTemplates"] = contrasts_record(extra, tpl, labels.get("label_disc"))
    write_json(tpl / "template_description.json", description)
    _write_sct_folder(tpl / "sct" / "template", name,
                      {SCT_CONTRAST.get(contrast, "t2"): image, "cord": mask, **labels,
                       **{SCT_CONTRAST[c.contrast]: c.image for c in extra}})
    by_label = {w.label: w for w in result.warps}
    template_mask = cord.data > 0
    aligned = []
    for job in jobs:
        warps = by_label.get(job.subject.label.replace("_", "-"))
        image, subject_cord = _subject_outputs(out, name, job, warps)
        aligned.append((job.subject.label, image, mask_dice(subject_cord, template_mask)))
    from spinal_bidsapp.group_report import build_group_report

    page = build_group_report(config, space, result, tpl, aligned, registration=registration,
                              contrasts=extra)
    logger.info("Template %s written to %s (SCT-ready copy: %s; report: %s)", name, tpl,
                tpl / "sct", page)
    return tpl


def _write_labels(space: TemplateSpace, cord: np.ndarray, tpl: Path, prefix: str
                  ) -> dict[str, Path]:
    """Centerline, disc labels (when the space has discs) and vertebral levels (when it has
    measured levels); returns them under their SCT ``info_label.txt`` keys."""
    centerline = save_volume(Volume(_centerline_array(space), space.affine),
                             tpl / f"{prefix}_desc-centerline_mask.nii.gz", dtype=np.uint8)
    files = {"centerline": centerline}
    discs, levels = (tpl / f"{prefix}_desc-{kind}_dseg" for kind in ("discs", "levels"))
    if len(space.disc_values):
        files["label_disc"] = save_volume(Volume(disc_label_array(space), space.affine),
                                          discs.with_suffix(".nii.gz"), dtype=np.uint8)
        write_lut(discs.with_suffix(".tsv"),
                  {int(v): DISC_NAMES[int(v)] for v in space.disc_values})
    if space.levels:
        files["levels"] = save_volume(Volume(level_label_array(space, cord), space.affine),
                                      levels.with_suffix(".nii.gz"), dtype=np.uint8)
        write_lut(levels.with_suffix(".tsv"),
                  {int(v): VERTEBRA_NAMES[int(v)] for v in space.disc_values[:-1]})
    for stale in (discs, levels):  # left by an earlier run with disc alignment
        if stale.with_suffix(".nii.gz") not in files.values():
            stale.with_suffix(".nii.gz").unlink(missing_ok=True)
            stale.with_suffix(".tsv").unlink(missing_ok=True)
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
        "res": {RES: {"zooms": [abs(float(v)) for v in np.diag(space.affine)[:3]],
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


def _registration_record(registration: TargetRegistration, tpl: Path) -> dict:
    errors = registration.disc_errors_mm
    name = registration.target.name
    return {
        "Template": name, "Path": str(registration.target.folder),
        "Method": "spinal_bidsapp builtin: disc-matched straightening + in-plane SyN of the "
                  "cord masks",
        "Files": [p.relative_to(tpl).as_posix() for p in (
            registration.to_target, registration.from_target, registration.image_in_target,
            registration.cord_in_target)],
        "DiscErrorMm": {str(k): {f"to_{name}": round(a, 3), "to_template": round(b, 3)}
                        for k, (a, b) in errors.items()},
        "MaxDiscErrorMm": round(registration.max_disc_error_mm, 3),
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


def _write_sct_folder(folder: Path, name: str, files: dict[str, Path]) -> None:
    """``template/`` folder with ``info_label.txt``, as SCT's ``-t`` option expects (PAM50's
    IDs, so ``sct_register_to_template -t <folder>/.. -c t2 -ldisc`` and ``sct_warp_template
    -t`` find the contrast, cord and discs); ``files`` maps ``INFO_LABEL_IDS`` keys to the
    files to copy."""
    labels = []
    for key, src in sorted(files.items(), key=lambda kv: INFO_LABEL_IDS[kv[0]]):
        target = _copy(src, folder / f"{name}_{key}.nii.gz")
        labels.append((INFO_LABEL_IDS[key], key, target.name))
    write_info_label(folder, labels)


def _subject_outputs(out: Path, name: str, job: StraightenJob,
                     warps: object) -> tuple[Path, np.ndarray]:
    """Total native <-> template warps (straightening then the loop's warp), the image and the
    cord mask in template space; returns the image path and the cord mask array."""
    from spinal_bidsapp.engines.base import SubjectWarps
    from spinal_bidsapp.fieldio import load_field, save_field
    from spinal_bidsapp.geometry.fields import apply_field, compose_fields

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
                           "SpatialReference": f"tpl-{name}"})
    cord = load_volume(job.subject.cord)
    cord_in_template = np.asarray(apply_field(cord.data, cord.affine, to_tpl, order=1)) > 0.5
    cord_path = derivative_path(out, "cord_mask_in_template", source, template=name)
    save_volume(Volume(cord_in_template.astype(np.uint8), to_tpl.affine), cord_path,
                dtype=np.uint8)
    write_sidecar(cord_path, {"Description": f"cord mask resampled in the {name} template space",
                              "SpatialReference": f"tpl-{name}"})
    return target, cord_in_template


@dataclass(frozen=True)
class RegistrationTarget:
    """A straight-cord template in SCT's layout to register the new template to.

    Attributes
    ----------
    name : str
        Its name in file names (``PAM50``, or the prefix of its files).
    folder : Path
        The folder holding its files.
    image : Path or None
        Its image of the cohort's contrast (else another contrast), for the QC figure.
    cord, discs : Path
        Cord mask and single-voxel disc labels (SCT numbering).
    """

    name: str
    folder: Path
    image: Path | None
    cord: Path
    discs: Path


@dataclass(frozen=True)
class TargetRegistration:
    """The new template registered to a target: files written and disc errors (mm)."""

    target: RegistrationTarget
    to_target: Path
    from_target: Path
    image_in_target: Path
    cord_in_target: Path
    target_slab: Volume
    """The target's image on the slab grid of ``image_in_target`` (for the overlay figure)."""
    target_cord_slab: Volume
    disc_errors_mm: dict[int, tuple[float, float]]
    """Per common disc: (template disc mapped to the target vs the target's disc, the reverse)."""

    @property
    def max_disc_error_mm(self) -> float:
        return max((max(e) for e in self.disc_errors_mm.values()), default=float("nan"))


def resolve_registration_target(config: RunConfig, contrast: str) -> RegistrationTarget:
    """``--register-to``: PAM50 found like the participant level's, or a folder in SCT's layout.

    Raises
    ------
    MissingInputError
        PAM50 is not available offline, or the folder lacks a cord mask or disc labels.
    InputDataError
        The folder's ``info_label.txt`` is one SCT cannot parse.
    """
    from spinal_bidsapp.cordref_steps import find_template
    from spinal_bidsapp.errors import MissingInputError
    from spinal_bidsapp.templates.pam50 import read_pam50_folder

    value = config.group.register_to
    key = SCT_CONTRAST.get(contrast, "t2")
    if value is None or value.upper() == "PAM50":
        pam50 = find_template(config)
        if pam50 is None:
            raise MissingInputError(
                "--register-to PAM50: PAM50 not found (no --template-dir, no $SCT_DIR/data/PAM50, "
                "nothing in the cache); pass --template-dir DIR or --register-to DIR")
        images = {"t2": pam50.t2, "t1": pam50.t1, "t2s": pam50.t2s}
        image = images[key] or next((p for p in images.values() if p), None)
        return RegistrationTarget("PAM50", pam50.template_folder, image, pam50.cord,
                                  pam50.label_disc)
    folder = Path(value).absolute()
    if not folder.is_dir():
        raise MissingInputError(f"--register-to {value}: no such folder; give PAM50 or a "
                                "template folder in SCT's layout (template/info_label.txt)")
    if (folder / "template" / "PAM50_cord.nii.gz").is_file() or \
            (folder / "PAM50_cord.nii.gz").is_file():
        pam50 = read_pam50_folder(folder, source="register-to", version="unknown")
        images = {"t2": pam50.t2, "t1": pam50.t1, "t2s": pam50.t2s}
        return RegistrationTarget("PAM50", pam50.template_folder,
                                  images[key] or next((p for p in images.values() if p), None),
                                  pam50.cord, pam50.label_disc)
    return _read_sct_template(folder, key)


def _read_sct_template(folder: Path, key: str) -> RegistrationTarget:
    """Files of an SCT template folder by their ``info_label.txt`` IDs (3 cord, 10 discs)."""
    from spinal_bidsapp.errors import MissingInputError

    files: dict[int, Path] = {}
    for candidate in (folder / "template", folder):
        if (candidate / INFO_LABEL).is_file():
            files = {i: candidate / file
                     for i, file in read_info_label(candidate / INFO_LABEL).items()}
            break
    cord, discs = files.get(INFO_LABEL_IDS["cord"]), files.get(INFO_LABEL_IDS["label_disc"])
    if cord is None or discs is None:
        raise MissingInputError(
            f"--register-to {folder}: no cord mask (ID 3) or disc labels (ID 10) listed in "
            "template/info_label.txt; give PAM50 or a template folder in SCT's layout")
    contrasts = [INFO_LABEL_IDS[c] for c in (key, "t1", "t2", "t2s")]
    image = next((files[i] for i in contrasts if i in files), None)
    name = cord.name.removesuffix(".nii.gz").removesuffix("_cord") or "target"
    return RegistrationTarget(name, cord.parent, image, cord, discs)


def register_template(config: RunConfig, target: RegistrationTarget, space: TemplateSpace, *,
                      tpl: Path, image: Path, mask: Path, contrast: str) -> TargetRegistration:
    """Register the new template to ``target`` (builtin: disc-matched straightening + in-plane
    SyN), write the fields both ways and the template resampled in the target's space."""
    from spinal_bidsapp.engines.builtin.registration import (
        RefinementOptions,
        disc_errors_mm,
        register_to_template,
    )
    from spinal_bidsapp.fieldio import save_field
    from spinal_bidsapp.geometry.discs import discs_from_label_array
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.image import load_mask

    name, other = config.group.template_name, target.name
    template, cord = load_volume(image), load_mask(mask)
    target_cord, target_labels = load_mask(target.cord), load_mask(target.discs)
    discs = space.disc_points_mm()
    target_discs = discs_from_label_array(target_labels.data, target_labels.affine)
    result = register_to_template(
        template, cord, discs, target_cord, target_discs,
        options=RefinementOptions(random_seed=config.seeds.random_seed))
    to_target = save_field(result.anat_to_template,
                           tpl / f"tpl-{name}_from-{name}_to-{other}_mode-image_xfm.nii.gz",
                           reference=(target_cord.shape, target_cord.affine))
    from_target = save_field(result.template_to_anat,
                             tpl / f"tpl-{name}_from-{other}_to-{name}_mode-image_xfm.nii.gz")
    field = result.anat_to_template
    warped = Volume(np.asarray(apply_field(template.data, template.affine, field, order=3),
                               np.float32), field.affine)
    image_in_target = save_volume(warped, tpl / f"tpl-{name}_space-{other}_{contrast}.nii.gz")
    warped_cord = apply_field(cord.data.astype(np.float32), cord.affine, field, order=1) > 0.5
    cord_in_target = save_volume(Volume(warped_cord.astype(np.uint8), field.affine),
                                 tpl / f"tpl-{name}_space-{other}_label-SC_mask.nii.gz",
                                 dtype=np.uint8)
    reference = load_volume(target.image) if target.image else target_cord
    target_slab = Volume(_crop_to(reference, field.affine, field.shape), field.affine)
    cord_slab = Volume(_crop_to(target_cord, field.affine, field.shape), field.affine)
    errors = disc_errors_mm(result, discs, target_discs)
    registration = TargetRegistration(target, to_target, from_target, image_in_target,
                                      cord_in_target, target_slab, cord_slab, errors)
    logger.info("tpl-%s registered to %s: max disc error %.2f mm over discs %s", name, other,
                registration.max_disc_error_mm, sorted(errors))
    return registration


def _crop_to(volume: Volume, affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """The slab of ``volume`` whose grid is ``(shape, affine)`` (a crop along its slice axis)."""
    origin = np.linalg.solve(volume.affine, affine[:, 3])[:3]
    k0 = round(float(origin[2]))
    if not np.allclose(origin[:2], 0.0, atol=1e-3) or k0 < 0 or \
            k0 + shape[2] > volume.shape[2] or volume.shape[:2] != shape[:2]:
        raise InputDataError(f"the registration slab {shape} is not a crop of the target grid "
                             f"{volume.shape}")
    return np.asarray(volume.data[:, :, k0:k0 + shape[2]], np.float32)
