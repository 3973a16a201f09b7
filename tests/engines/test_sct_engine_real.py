"""The SCT engine end to end on real data, with its deep-learning models (container CI).

Marked ``sct``; SCT comes from ``real_tool_env("sct")``. Each test needs ``sct_deepseg`` models
and is skipped, with the engine's own reason, where they are not installed (``make real-tools``
installs SCT without them; ``tests/test_participant_sct_real.py`` covers that case). Uses
sub-errsm30 T2w from the shared real data set and the PAM50 that the SCT installation ships.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.engines import resolve_participant_engine
from spinal_bidsapp.engines.sct.commands import SctEngine
from spinal_bidsapp.engines.sct.install import Capability
from spinal_bidsapp.image import load_mask, load_volume, vox_to_mm
from spinal_bidsapp.templates.pam50 import resolve_pam50
from tests.conftest import real_tool_env

pytestmark = pytest.mark.sct


@pytest.fixture(scope="module")
def engine() -> Iterator[SctEngine]:
    env = real_tool_env("sct")
    choice = resolve_participant_engine("sct", sct_dir=Path(env["SCT_DIR"]),
                                        search_path=env["PATH"])
    assert choice.sct is not None
    saved = dict(os.environ)
    os.environ.update(env)  # run_tool passes this process's environment to SCT
    try:
        yield SctEngine(choice.sct, threads=2, timeout_s=3600)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _needs_models(engine: SctEngine, *capabilities: Capability) -> None:
    reasons = [r for r in map(engine.unavailable, capabilities) if r is not None]
    if reasons:
        pytest.skip("; ".join(reasons) + " (the container CI has the models)")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_sct_engine_on_errsm30_t2w(engine: SctEngine, bids_real: Path, tmp_path: Path) -> None:
    _needs_models(engine, "segment_cord", "label_discs")
    image = bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz"
    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"

    seg = engine.segment_cord(image, contrast="T2w", out_dir=tmp_path / "seg")
    manual = load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz")
    assert _dice(load_mask(seg.cord_mask).data, manual.data) > 0.8

    discs = engine.label_discs(image, seg.cord_mask, contrast="T2w", out_dir=tmp_path / "discs")
    found = load_mask(discs.discs)
    truth = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    for disc in (4, 5, 6):
        ours = vox_to_mm(found.affine, np.argwhere(found.data == disc)).mean(axis=0)
        ref = vox_to_mm(truth.affine, np.argwhere(truth.data == disc)).mean(axis=0)
        assert abs(ours[2] - ref[2]) < 6.0, f"disc {disc} is {ours[2] - ref[2]:.1f} mm off"

    pam50 = resolve_pam50(template_dir=None, sct_dir=engine.install.bin_dir.parent,
                          cache_dir=tmp_path / "cache", allow_download=False, progress=False)
    reg = engine.register_to_template(image, seg.cord_mask, discs.discs,
                                      template_dir=pam50.sct_dir, contrast="T2w",
                                      out_dir=tmp_path / "reg")
    warp = load_volume(reg.template_to_anat)
    assert warp.shape == load_volume(image).shape

    csa = engine.measure_cord(seg.cord_mask, discs.discs, out_dir=tmp_path / "csa", per="level")
    areas = {row.vertebral_levels: row.area_mm2 for row in csa.rows}
    assert areas and all(a is not None and 40 < a < 110 for a in areas.values())


def test_sct_spine_rootlets_and_both_registrations_on_errsm30_t2w(
        engine: SctEngine, bids_real: Path, tmp_path: Path) -> None:
    from spinal_bidsapp.engines.sct.outputs import (
        check_spine_levels,
        read_rootlet_levels,
        spine_labels_from_totalspineseg,
    )
    from spinal_bidsapp.geometry.discs import discs_from_label_array

    _needs_models(engine, "segment_cord", "spine", "rootlets")
    image = bids_real / "sub-errsm30" / "anat" / "sub-errsm30_T2w.nii.gz"
    seg = engine.segment_cord(image, contrast="T2w", out_dir=tmp_path / "seg")
    spine = engine.segment_spine(image, out_dir=tmp_path / "spine")
    labels, points = load_mask(spine.labels, allow_empty=True), load_mask(spine.discs)
    converted = spine_labels_from_totalspineseg(labels.data)
    assert converted.canal.sum() > (load_mask(seg.cord_mask).data > 0).sum()
    check = check_spine_levels(converted.vertebrae,
                               discs_from_label_array(points.data, points.affine), labels.affine)
    assert check.consistent, check.problems
    assert {3, 4} <= set(check.vertebrae)  # C3 and C4 are fully in this C2-C5 field of view

    rootlets = engine.segment_rootlets(image, contrast="T2w", out_dir=tmp_path / "rootlets")
    levels = read_rootlet_levels(rootlets.rootlets)
    assert len(levels) >= 2 and [e.level for e in levels] == sorted(e.level for e in levels)

    pam50 = resolve_pam50(template_dir=None, sct_dir=engine.install.bin_dir.parent,
                          cache_dir=tmp_path / "cache", allow_download=False, progress=False)
    by_rootlets = engine.register_to_template_with_rootlets(
        image, seg.cord_mask, rootlets.rootlets, template_dir=pam50.sct_dir, contrast="T2w",
        out_dir=tmp_path / "reg_rootlets")
    assert load_volume(by_rootlets.template_to_anat).shape == load_volume(image).shape

    csa = engine.measure_cord(seg.cord_mask, spine.discs, out_dir=tmp_path / "csa",
                              per="slice", normalize_pam50=True)
    areas = [row.area_mm2 for row in csa.rows if row.area_mm2 is not None]
    assert areas and all(30 < a < 130 for a in areas)
