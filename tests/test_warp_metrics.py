"""Metrics read from warps treat "no mapping" as no mapping, never as a distance (#18): a disc
where the warp holds float32-max (ANTs) or +-100000 (SCT) gets a JSON ``null``, a log warning
and "no mapping" in the report, never 5.89e+38 mm."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.engines.builtin.registration import TemplateRegistration
from spinal_bidsapp.engines.registration import score_registration
from spinal_bidsapp.engines.sct.participant import choose_registration
from spinal_bidsapp.image import Volume, load_field
from spinal_bidsapp.participant.report import _registration_rows


def _warp_file(path: Path, sentinel: float) -> Path:
    """An identity warp on a 10x10x20 grid, ``sentinel`` (no mapping) on slices 14 and above."""
    data = np.zeros((10, 10, 20, 1, 3), np.float32)
    data[:, :, 14:] = sentinel
    img = nib.Nifti1Image(data, np.eye(4))
    img.header.set_intent("vector", (), name="")
    nib.save(img, str(path))
    return path


@pytest.mark.parametrize("sentinel", [float(np.finfo(np.float32).max), -100000.0])
def test_a_disc_without_mapping_is_null_not_a_distance(
        tmp_path: Path, sentinel: float, caplog: pytest.LogCaptureFixture) -> None:
    cord = np.zeros((10, 10, 20), np.uint8)
    cord[4:6, 4:6, :] = 1
    cord_vol = Volume(cord, np.eye(4))
    field = load_field(_warp_file(tmp_path / "warp.nii.gz", sentinel))
    registration = TemplateRegistration(anat_to_template=field, template_to_anat=field,
                                        slab_shape=field.shape, slab_affine=field.affine)
    points = {3: np.array([5.0, 5.0, 17.0]), 4: np.array([5.0, 5.0, 5.0])}
    with caplog.at_level(logging.INFO):
        scores = score_registration(cord_vol, cord_vol, registration, subject_points=points,
                                    template_points=points)
    assert scores.disc_error_mm == {"3": {"to_template": None, "to_anat": None},
                                       "4": {"to_template": 0.0, "to_anat": 0.0}}
    json.dumps(scores.to_json(), allow_nan=False)  # valid JSON: no NaN, no 5.89e+38
    assert "no mapping at disc(s) [3]" in caplog.text
    assert "max disc error 0.00 mm" in caplog.text
    record = {**scores.to_json(), "labels": "discs", "selection": "disc-based",
              "paths": {"discs": scores.to_json(), "rootlets": scores.to_json()}}
    rows = {row.name: row for row in _registration_rows(record)}
    worst = rows["max disc error after registration"]
    assert worst.value == 0.0 and worst.note == "no mapping at disc(s) 3"
    assert "no mapping at disc(s) 3" in rows["rootlets-based registration: cord Dice in PAM50 "
                                             "space"].note
    assert choose_registration(scores, scores, rootlet_levels=3)[0] == "rootlets"
