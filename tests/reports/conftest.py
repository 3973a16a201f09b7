"""Fixtures of the report tests (the phantom itself lives in ``report_phantom``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_phantom import STORAGE, Phantom, phantom_volumes, publish_phantom_reports

from spinal_bidsapp.image import load_mask, load_volume, reorient, save_volume


@pytest.fixture(scope="session")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Phantom:
    """Phantom written as NIfTI in a non-RAS orientation and loaded back like real inputs."""
    root = tmp_path_factory.mktemp("phantom")
    image, mask, discs = phantom_volumes()
    template, template_mask, _ = phantom_volumes(shift_a_mm=1.5, seed=1)
    volumes = {"image": image, "mask": mask, "discs": discs, "template": template,
               "template_mask": template_mask}
    paths = {name: save_volume(reorient(vol, STORAGE), root / f"{name}.nii.gz")
             for name, vol in volumes.items()}
    return Phantom(
        image=load_volume(paths["image"]),
        mask=load_mask(paths["mask"]),
        discs=load_mask(paths["discs"]),
        template=load_volume(paths["template"]),
        template_mask=load_mask(paths["template_mask"]),
        paths=paths,
    )


PUBLISHED_KEYS = (("01", None), ("02", "pre"))


@pytest.fixture(scope="session")
def published(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Output dir with two published phantom reports (sub-01, sub-02_ses-pre); do not modify."""
    out = tmp_path_factory.mktemp("out")
    publish_phantom_reports(phantom.image, phantom.mask, phantom.discs, out, PUBLISHED_KEYS)
    return out
