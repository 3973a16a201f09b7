"""Group --contrasts T2w T1w on the PAM50 phantom cohort (#10): real PAM50 T2 intensities and a
T1w-like contrast rendered on the same grids, bent and stretched per subject; participant level
with the cohort's manual labels, then a fast 1 mm template of both contrasts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from spinal_bidsapp.cli.main import main
from spinal_bidsapp.synth import generate_phantom_cohort

pytestmark = pytest.mark.slow

PREFIX = "tpl-SpinalCord_res-01"


@pytest.fixture(scope="module")
def phantom_group(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUTPUT_DIR of a 3-subject phantom cohort after participant and group --contrasts T2w T1w.
    """
    pam50, small = data_dir / "PAM50", data_dir / "PAM50_small"
    if not (pam50 / "PAM50_cord.nii.gz").is_file() or not (small / "PAM50_small_t2.nii.gz"
                                                             ).is_file():
        pytest.skip(f"PAM50 and PAM50_small not found under {data_dir}")
    root = tmp_path_factory.mktemp("phantom_contrasts")
    generate_phantom_cohort(root, pam50_dir=pam50, pam50_small_dir=small, n_subjects=3, seed=1,
                            t1w=True, voxel_mm_range=(0.8, 1.0))
    bids, out = root / "bids", root / "out"
    code = main([str(bids), str(out), "participant", "--contrast", "T2w",
                 "--skip-bids-validation", "--nprocs", "2"])
    assert code == 0, _log_tail(out, "participant")
    code = main([str(bids), str(out), "group", "--contrasts", "T2w", "T1w",
                 "--template-resolution", "1", "--template-xy-size", "12",
                 "--template-preset", "fast", "--skip-bids-validation", "--nprocs", "2",
                 "-w", str(root / "work")])
    assert code == 0, _log_tail(out, "group")
    return out


def _log_tail(out: Path, level: str) -> str:
    """End of the newest log of ``level`` (why a run failed)."""
    logs = sorted((out / "logs").glob(f"{level}_*.log"), key=lambda p: p.stat().st_mtime_ns)
    return logs[-1].read_text()[-3000:] if logs else "no log"


def _load(path: Path) -> nib.Nifti1Image:
    image = nib.load(str(path))
    assert isinstance(image, nib.Nifti1Image)
    return image


def test_t1w_and_t2w_templates_share_grid_discs_and_cord(phantom_group: Path) -> None:
    """The issue's measures, and the group page that reports them (one test: one run)."""
    tpl = phantom_group / "tpl-SpinalCord"
    t2, t1, discs = (_load(tpl / f"{PREFIX}_{name}.nii.gz")
                     for name in ("T2w", "T1w", "desc-discs_dseg"))
    # disc positions identical by construction: one grid, one disc label file for both
    for image in (t1, discs):
        assert image.shape == t2.shape and np.allclose(image.affine, t2.affine)
    disc_values = set(np.unique(np.asarray(discs.dataobj))) - {0}
    assert len(disc_values) >= 5
    description = json.loads((tpl / "template_description.json").read_text())
    record = description["ContrastTemplates"]["T1w"]
    assert record["Subjects"] == ["sub-01", "sub-02", "sub-03"]
    assert record["DiscOffsetMm"] == 0.0
    # the cord-mask Dice, recomputed from the files over the slices the T1w covers
    a = np.asarray(_load(tpl / f"{PREFIX}_label-SC_mask.nii.gz").dataobj) > 0
    b = np.asarray(_load(tpl / f"{PREFIX}_label-SC_desc-T1w_mask.nii.gz").dataobj) > 0
    slices = np.zeros(a.shape[2], bool)
    for first, last in record["DiceSlices"]:
        slices[first:last + 1] = True
    assert slices[a.any(axis=(0, 1))].all()  # same grids as T2w: every cord slice covered
    a, b = a[:, :, slices], b[:, :, slices]
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice >= 0.95
    assert record["CordMaskDice"] == pytest.approx(dice, abs=1e-3)
    # a T1w-like template: its cord is brighter than its CSF, unlike the T2w template
    t1_data, t2_data = np.asarray(t1.dataobj), np.asarray(t2.dataobj)
    cord = np.asarray(_load(tpl / f"{PREFIX}_label-SC_mask.nii.gz").dataobj) > 0
    ring = _ring(cord)
    assert np.median(t1_data[cord]) > np.median(t1_data[ring])
    assert np.median(t2_data[cord]) < np.median(t2_data[ring])
    # the group page reports the comparison
    page = (phantom_group / "tpl-SpinalCord.html").read_text()
    assert "Contrast templates" in page
    assert "cord-mask Dice, T1w vs driving template" in page
    # the page prints the unrounded Dice to 3 decimals, the record keeps 4: compare as numbers
    shown = re.search(r"T1w: (\d\.\d{3}) \(", page)
    assert shown is not None and abs(float(shown.group(1)) - record["CordMaskDice"]) <= 6e-4
    assert "disc offset 0 mm" in page
    assert (tpl / "figures" / "contrasts.png").is_file()
    info = (tpl / "sct" / "template" / "info_label.txt").read_text()
    assert "0, t1, SpinalCord_t1.nii.gz" in info


def _ring(cord: np.ndarray) -> np.ndarray:
    """Voxels 2-3 mm (1 mm grid) around the cord, in plane: mostly CSF."""
    from scipy import ndimage

    structure = np.zeros((3, 3, 3), bool)
    structure[:, :, 1] = True
    outer = ndimage.binary_dilation(cord, structure, iterations=3)
    inner = ndimage.binary_dilation(cord, structure, iterations=1)
    return outer & ~inner

