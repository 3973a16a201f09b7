"""Group ``--register-to``: the target template (PAM50, or a folder in SCT's layout) and the
registration of the new template to it (builtin: disc-matched straightening + in-plane SyN of the
cord masks), written next to the template as fields both ways and resampled images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spinal_bidsapp.bids.outputs import template_id, template_path
from spinal_bidsapp.config import SCT_CONTRAST, RunConfig
from spinal_bidsapp.engines.builtin.registration import (
    RefinementOptions,
    disc_errors_mm,
    register_to_template,
)
from spinal_bidsapp.errors import InputDataError, MissingInputError
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.geometry.fields import apply_field
from spinal_bidsapp.geometry.template_space import TemplateSpace
from spinal_bidsapp.image import Volume, load_mask, load_volume, save_field, save_volume
from spinal_bidsapp.templates.pam50 import find_template, read_pam50_folder
from spinal_bidsapp.templates.sct_layout import (
    INFO_LABEL,
    INFO_LABEL_IDS,
    read_info_label,
)

logger = logging.getLogger(__name__)


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
                      image: Path, mask: Path, contrast: str) -> TargetRegistration:
    """Register the new template to ``target`` (builtin: disc-matched straightening + in-plane
    SyN), write the fields both ways and the template resampled in the target's space."""
    name, other = config.group.template_name, target.name
    out = config.execution.output_dir.resolve()
    template, cord = load_volume(image), load_mask(mask)
    target_cord, target_labels = load_mask(target.cord), load_mask(target.discs)
    discs = space.disc_points_mm()
    target_discs = discs_from_label_array(target_labels.data, target_labels.affine)
    result = register_to_template(
        template, cord, discs, target_cord, target_discs,
        options=RefinementOptions(random_seed=config.seeds.random_seed))
    to_target = save_field(result.anat_to_template,
                           template_path(out, "xfm_to_target", name, target=other),
                           reference=(target_cord.shape, target_cord.affine))
    from_target = save_field(result.template_to_anat,
                             template_path(out, "xfm_from_target", name, target=other))
    field = result.anat_to_template
    warped = Volume(np.asarray(apply_field(template.data, template.affine, field, order=3),
                               np.float32), field.affine)
    image_in_target = save_volume(warped, template_path(out, "template_in_target", name,
                                                        target=other, contrast=contrast))
    warped_cord = apply_field(cord.data.astype(np.float32), cord.affine, field, order=1) > 0.5
    cord_in_target = save_volume(Volume(warped_cord.astype(np.uint8), field.affine),
                                 template_path(out, "template_mask_in_target", name,
                                               target=other),
                                 dtype=np.uint8)
    reference = load_volume(target.image) if target.image else target_cord
    target_slab = Volume(_crop_to(reference, field.affine, field.shape), field.affine)
    cord_slab = Volume(_crop_to(target_cord, field.affine, field.shape), field.affine)
    errors = disc_errors_mm(result, discs, target_discs)
    registration = TargetRegistration(target, to_target, from_target, image_in_target,
                                      cord_in_target, target_slab, cord_slab, errors)
    logger.info("%s registered to %s: max disc error %.2f mm over discs %s", template_id(name),
                other,
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


def registration_record(registration: TargetRegistration, tpl: Path) -> dict:
    """``RegisteredTo`` of ``template_description.json``: method, files (relative to ``tpl``)
    and disc errors both ways."""
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
