"""Benchmark harness: scoring helpers against the synthetic truth, and cohort reuse."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.cohort import ensure_cohort
from benchmarks.scoring import (
    dice,
    disc_position_errors,
    disc_spread_mm,
    label_points_mm,
    mapping_error_mm,
    masked_correlation,
)
from spinal_bidsapp.synth.cohort import demo_truth, subject_rngs
from spinal_bidsapp.synth.demo import draw_demo_subject, render_demo_subject
from spinal_bidsapp.synth.truth import SubjectTruth, true_subject_to_pam50_mm


@pytest.fixture(scope="module")
def subject() -> tuple[SubjectTruth, object]:
    geometry_rng, noise_rng = subject_rngs(7, 0)
    spec = draw_demo_subject(geometry_rng)
    return (demo_truth(spec, subject="01", seed=7, files={}),
            render_demo_subject(spec, rng=noise_rng))


def test_dice_and_correlation_reference_values() -> None:
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0 and dice(a, ~a) == 0.0
    assert dice(np.zeros(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="shape"):
        dice(a, b[:2])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 10))
    mask = rng.random((10, 10)) > 0.3
    y = 3 * x + rng.normal(scale=0.5, size=x.shape)
    expected = np.corrcoef(x[mask], y[mask])[0, 1]
    assert masked_correlation(x, y, mask) == pytest.approx(expected, abs=1e-12)
    assert masked_correlation(x, -x, mask) == pytest.approx(-1.0)


def test_disc_errors_are_zero_for_the_true_labels(subject) -> None:
    truth, rendered = subject
    predicted = label_points_mm(rendered.disc_labels, truth.grid.affine)
    errors = disc_position_errors(truth, predicted)
    assert sorted(errors.euclidean_mm) == list(range(2, 9))
    assert max(errors.euclidean_mm.values()) <= 0.5 * np.linalg.norm(truth.grid.voxel_mm)
    assert errors.missing == () and errors.extra == ()


def test_disc_errors_measure_a_shift_along_the_cord(subject) -> None:
    truth, _ = subject
    true_mm = truth.disc_positions_mm()
    arcs = {d.disc: d.arc_length_mm for d in truth.discs}
    shifted = {d: truth.curve.curve_to_world(np.array([[0.0, 0.0, arcs[d] + 3.0]]))[0]
               for d in (3, 4, 5)}
    shifted[1] = np.zeros(3)
    errors = disc_position_errors(truth, shifted)
    assert errors.along_cord_mm == pytest.approx({3: 3.0, 4: 3.0, 5: 3.0}, abs=1e-6)
    assert all(2.9 < e <= 3.0 + 1e-9 for e in errors.euclidean_mm.values())
    assert errors.missing == (2, 6, 7, 8) and errors.extra == (1,)
    assert errors.mean_euclidean_mm == pytest.approx(np.mean(list(errors.euclidean_mm.values())))
    assert set(true_mm) == set(range(2, 9))


def test_disc_spread_is_zero_in_the_true_template_space(subject) -> None:
    truth, _ = subject
    other = demo_truth(draw_demo_subject(subject_rngs(8, 0)[0]), subject="02", seed=8, files={})
    in_subject = [t.disc_positions_mm() for t in (truth, other)]
    assert min(disc_spread_mm(in_subject).values()) > 0.5
    in_template = [dict(zip(p, true_subject_to_pam50_mm(t, np.array(list(p.values()))),
                            strict=True)) for t, p in zip((truth, other), in_subject, strict=True)]
    assert max(disc_spread_mm(in_template).values()) < 1e-6


def test_mapping_error_of_the_true_mapping_is_zero(subject) -> None:
    truth, _ = subject
    points = truth.curve.curve_to_world(np.array([[1.0, 2.0, 0.0], [-3.0, 1.0, 20.0]]))
    exact = true_subject_to_pam50_mm(truth, points, space="PAM50_small")
    np.testing.assert_allclose(mapping_error_mm(truth, points, exact, space="PAM50_small"), 0.0,
                               atol=1e-9)
    np.testing.assert_allclose(mapping_error_mm(truth, points, exact + np.array([0.0, 0.0, 2.0]),
                                                space="PAM50_small"), 2.0)


def test_ensure_cohort_reuses_an_identical_cohort(tmp_path) -> None:
    first = ensure_cohort(tmp_path / "demo", kind="demo", n_subjects=1, seed=2)
    again = ensure_cohort(tmp_path / "demo", kind="demo", n_subjects=1, seed=2)
    assert first.generated and not again.generated
    assert [t.to_dict() for t in again.truths] == [t.to_dict() for t in first.truths]
    other = ensure_cohort(tmp_path / "demo", kind="demo", n_subjects=1, seed=3)
    assert other.generated and other.truths[0].seed == 3
