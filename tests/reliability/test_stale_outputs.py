"""The group level never uses a subject whose latest participant run failed, or whose inputs
changed since its outputs were made (issue 22, item 1). About 30 s: one 3-subject participant
run, one failing rerun, one group run that stops at the subject count."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.synth import generate_demo_cohort

GROUP_ARGS = ["--template-resolution", "1.5", "--template-xy-size", "12", "--template-preset",
              "fast", "--skip-bids-validation", "--nprocs", "1"]


def _app(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "spinal_bidsapp", *map(str, args)],
                          capture_output=True, text=True, check=False, timeout=600)


@pytest.fixture
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    generate_demo_cohort(tmp_path, n_subjects=3, seed=5, straight_reference=False)
    bids, out = tmp_path / "bids", tmp_path / "out"
    done = _app(bids, out, "participant", "--skip-bids-validation", "--nprocs", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    return bids, out


def test_failed_and_changed_subjects_are_skipped_by_the_group(cohort: tuple[Path, Path]
                                                              ) -> None:
    bids, out = cohort
    labels = bids / "derivatives" / "labels"
    discs = labels / "sub-01" / "anat" / "sub-01_T2w_labels-disc.nii.gz"
    img = nib.load(str(discs))
    data = np.asarray(img.dataobj)
    values = sorted(int(v) for v in np.unique(data) if v)
    swapped = data.copy()  # the two highest discs trade places: not in anatomical order
    swapped[data == values[0]], swapped[data == values[1]] = values[1], values[0]
    nib.save(nib.Nifti1Image(swapped, img.affine, img.header), str(discs))
    failed = _app(bids, out, "participant", "--skip-bids-validation", "--participant-label",
                  "01")
    assert failed.returncode == 65, failed.stderr[-2000:]

    # sub-01's old and partial outputs no longer look like results; the QC index says it failed
    assert not list((out / "sub-01").rglob("sub-01_*.nii.gz"))
    assert not (out / "sub-01.html").exists()
    record = json.loads((out / "qc" / "records" / "sub-01.json").read_text())
    assert "not in anatomical order" in record["failure"]
    index = (out / "qc" / "index.html").read_text()
    assert "not in anatomical order" in index

    # sub-02's image changed after its participant run, and its outputs were not remade
    image = bids / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    raw = nib.load(str(image))
    nib.save(nib.Nifti1Image(np.asarray(raw.dataobj) * 1.01, raw.affine, raw.header), str(image))

    group = _app(bids, out, "group", *GROUP_ARGS)
    assert group.returncode == 65, group.stderr[-2000:]
    assert "1 usable subjects, 2 skipped (sub-01, sub-02)" in group.stderr
    assert "sub-01: skipped, its latest participant run failed (exit 65" in group.stderr
    assert "sub-02: skipped, input sub-02_T2w.nii.gz changed since" in group.stderr
