"""Analytic demo subjects: determinism and self-consistency of the ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.image import vox_to_mm
from spinal_bidsapp.synth.cohort import demo_truth, subject_rngs
from spinal_bidsapp.synth.demo import (
    TISSUES,
    RenderedSubject,
    draw_demo_subject,
    render_demo_subject,
    render_straight_reference,
)


def _subject(seed: int, index: int = 0, *, t1w: bool = False):
    geometry_rng, noise_rng = subject_rngs(seed, index)
    spec = draw_demo_subject(geometry_rng)
    return spec, render_demo_subject(spec, rng=noise_rng, t1w=t1w)


@pytest.fixture(scope="module")
def subjects() -> list:
    return [_subject(0, i) for i in range(3)]


def _arrays(rendered: RenderedSubject) -> list[np.ndarray]:
    return [rendered.t2w, rendered.t2w_noisefree, rendered.cord_mask, rendered.disc_labels,
            rendered.dseg]


def test_same_seed_gives_identical_subjects(subjects: list) -> None:
    spec, rendered = _subject(0, 1)
    for a, b in zip(_arrays(rendered), _arrays(subjects[1][1]), strict=True):
        np.testing.assert_array_equal(a, b)
    truth_a = demo_truth(spec, subject="02", seed=0, files={}).to_dict()
    truth_b = demo_truth(subjects[1][0], subject="02", seed=0, files={}).to_dict()
    assert truth_a == truth_b


def test_other_seed_gives_other_subjects(subjects: list) -> None:
    spec, rendered = _subject(1, 1)
    truth_a = demo_truth(spec, subject="02", seed=1, files={}).to_dict()
    truth_b = demo_truth(subjects[1][0], subject="02", seed=0, files={}).to_dict()
    assert truth_a["curve"] != truth_b["curve"]
    assert truth_a["discs"] != truth_b["discs"]
    assert rendered.t2w.shape != subjects[1][1].t2w.shape or not np.array_equal(
        rendered.t2w, subjects[1][1].t2w)


def test_subjects_differ_in_size_orientation_and_grid(subjects: list) -> None:
    specs = [s for s, _ in subjects] + [_subject(0, i)[0] for i in range(3, 6)]
    assert len({s.grid.shape for s in specs}) == len(specs)
    assert len({s.anatomy.cord_semi_axes_mm for s in specs}) == len(specs)
    assert len({s.grid.to_dict()["axcodes"] for s in specs}) >= 2
    for spec in specs:
        assert spec.grid.voxel_mm.min() >= 0.8 and spec.grid.voxel_mm.max() <= 1.0
        assert np.prod(spec.grid.shape) < 600_000  # small enough for the demo pipeline


def test_disc_labels_are_inside_the_fov_on_the_cord_and_in_order(subjects: list) -> None:
    for spec, rendered in subjects:
        truth = demo_truth(spec, subject="01", seed=0, files={})
        labels = np.argwhere(rendered.disc_labels > 0)
        values = rendered.disc_labels[tuple(labels.T)]
        assert sorted(values.tolist()) == list(range(2, 9))
        # each label voxel is in the cord mask and within a voxel of the true disc centre
        assert np.all(rendered.cord_mask[tuple(labels.T)] == 1)
        true_mm = np.array([truth.disc_positions_mm()[int(v)] for v in values])
        label_mm = vox_to_mm(spec.grid.affine, labels)
        distance = np.linalg.norm(label_mm - true_mm, axis=1)
        assert distance.max() <= 0.5 * np.linalg.norm(spec.grid.voxel_mm) + 1e-9
        # going down the discs, the arc length along the cord decreases strictly
        order = np.argsort(values)
        arc = spec.curve.world_to_curve(label_mm[order])[:, 2]
        assert np.all(np.diff(arc) < -10.0)
        assert [d.disc for d in truth.discs if d.voxel is not None] == list(range(2, 9))


def test_cord_mask_volume_matches_the_analytic_volume(subjects: list) -> None:
    for spec, rendered in subjects:
        arcs = spec.anatomy.disc_arc_mm
        voxels = np.argwhere(rendered.cord_mask > 0)
        s = spec.curve.world_to_curve(vox_to_mm(spec.grid.affine, voxels))[:, 2]
        between = (s >= arcs[8]) & (s <= arcs[2])
        volume = between.sum() * np.prod(spec.grid.voxel_mm)
        expected = spec.anatomy.cord_volume_mm3(arcs[8], arcs[2])
        assert volume == pytest.approx(expected, rel=0.02)


def test_cord_cross_sections_have_the_true_area(subjects: list) -> None:
    spec, _ = subjects[0]
    t2, dseg, affine = render_straight_reference(spec, voxel_mm=0.25)
    cord = dseg == TISSUES["cord"]
    s = affine[2, 3] + affine[2, 2] * np.arange(dseg.shape[2])
    area = cord.sum(axis=(0, 1)) * affine[0, 0] * affine[1, 1]
    inside = (s > spec.anatomy.disc_arc_mm[8]) & (s < spec.anatomy.disc_arc_mm[2])
    np.testing.assert_allclose(area[inside], spec.anatomy.cord_area_mm2(s[inside]), rtol=0.03)
    assert t2[cord].mean() < t2[dseg == TISSUES["csf"]].mean()


def test_t2w_and_t1w_contrasts_are_inverted_between_cord_and_csf() -> None:
    _, rendered = _subject(2, 0, t1w=True)
    assert rendered.t1w is not None
    cord = rendered.dseg == TISSUES["cord"]
    csf = rendered.dseg == TISSUES["csf"]
    assert rendered.t2w[csf].mean() > 1.5 * rendered.t2w[cord].mean()
    assert rendered.t1w[cord].mean() > 1.5 * rendered.t1w[csf].mean()
    noise = rendered.t2w.astype(float) - 1000 * rendered.t2w_noisefree
    assert noise.std() > 5.0  # bias field and Rician noise are applied
