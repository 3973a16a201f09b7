"""True subject <-> straight <-> PAM50 mappings stored with every synthetic subject."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.synth.cohort import demo_truth, subject_rngs
from spinal_bidsapp.synth.demo import draw_demo_subject
from spinal_bidsapp.synth.spine import PAM50_DISC_Z_MM, PAM50_SMALL_OFFSET_MM
from spinal_bidsapp.synth.truth import (
    SubjectTruth,
    TemplateMapping,
    true_cord_area_mm2,
    true_pam50_to_subject_mm,
    true_straight_to_subject_mm,
    true_subject_to_pam50_mm,
    true_subject_to_straight_mm,
)


@pytest.fixture(scope="module")
def truth() -> SubjectTruth:
    spec = draw_demo_subject(subject_rngs(3, 0)[0])
    return demo_truth(spec, subject="01", seed=3, files={})


def test_discs_map_onto_the_pam50_discs(truth: SubjectTruth) -> None:
    discs = truth.disc_positions_mm(in_fov_only=False)
    mapped = true_subject_to_pam50_mm(truth, np.array(list(discs.values())))
    for disc, point in zip(discs, mapped, strict=True):
        np.testing.assert_allclose(point, [0.0, -46.22, PAM50_DISC_Z_MM[disc]], atol=1e-6)
    small = true_subject_to_pam50_mm(truth, np.array(list(discs.values())), space="PAM50_small")
    np.testing.assert_allclose(small - mapped, np.broadcast_to(PAM50_SMALL_OFFSET_MM, small.shape))


@pytest.mark.parametrize("space", ["PAM50", "PAM50_small"])
def test_subject_to_pam50_round_trip(truth: SubjectTruth, space: str) -> None:
    rng = np.random.default_rng(0)
    uvs = np.column_stack([rng.uniform(-15, 15, 500), rng.uniform(-15, 25, 500),
                           rng.uniform(-70, 70, 500)])
    points = true_straight_to_subject_mm(truth, uvs)
    np.testing.assert_allclose(true_subject_to_straight_mm(truth, points), uvs, atol=1e-6)
    template = true_subject_to_pam50_mm(truth, points, space=space)  # type: ignore[arg-type]
    back = true_pam50_to_subject_mm(truth, template, space=space)  # type: ignore[arg-type]
    np.testing.assert_allclose(back, points, atol=1e-6)


def test_mapping_preserves_distances_within_a_cross_section(truth: SubjectTruth) -> None:
    s = truth.discs[4].arc_length_mm
    uvs = np.array([[0.0, 0.0, s], [5.0, 0.0, s], [0.0, -4.0, s]])
    template = true_subject_to_pam50_mm(truth, true_straight_to_subject_mm(truth, uvs))
    np.testing.assert_allclose(np.linalg.norm(template[1:] - template[0], axis=1), [5.0, 4.0],
                               atol=1e-6)
    np.testing.assert_allclose(template[:, 2], template[0, 2], atol=1e-9)


def test_level_stretch_and_extrapolation() -> None:
    mapping = TemplateMapping(discs=(2, 3, 4), disc_arc_mm=(10.0, -20.0, -40.0),
                              disc_template_z_mm=(-92.34, -107.84, -126.34),
                              cross_scale=(1.1, 0.9))
    assert mapping.level_stretch() == pytest.approx({"2-3": 30 / 15.5, "3-4": 20 / 18.5})
    uvs = np.array([[1.1, 0.9, 40.0], [0.0, 0.0, -60.0]])
    template = mapping.straight_to_template(uvs)
    np.testing.assert_allclose(template[0], [1.0, -45.22, -92.34 + 30 * 15.5 / 30])
    np.testing.assert_allclose(template[1, 2], -126.34 - 20 * 18.5 / 20)
    np.testing.assert_allclose(mapping.template_to_straight(template), uvs, atol=1e-12)
    with pytest.raises(ValueError, match="top to bottom"):
        TemplateMapping(discs=(3, 2), disc_arc_mm=(-20.0, 10.0),
                        disc_template_z_mm=(-107.84, -92.34))


def test_cord_area_profile_agrees_with_discs_and_volume(truth: SubjectTruth) -> None:
    for disc in truth.discs[1:8]:
        assert true_cord_area_mm2(truth, np.array(disc.arc_length_mm)) == pytest.approx(
            truth.cord_csa_mm2[disc.disc], rel=1e-3)
    s2, s8 = truth.discs[1].arc_length_mm, truth.discs[7].arc_length_mm
    s = np.linspace(s8, s2, 2001)
    assert np.trapezoid(true_cord_area_mm2(truth, s), s) == pytest.approx(
        truth.cord_volume_mm3["2-8"], rel=1e-3)
    assert np.isnan(true_cord_area_mm2(truth, np.array([s2 + 200.0]))).all()


def test_truth_json_round_trip(truth: SubjectTruth) -> None:
    again = SubjectTruth.from_dict(truth.to_dict())
    assert again.to_dict() == truth.to_dict()
    points = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, -20.0]])
    np.testing.assert_array_equal(true_subject_to_pam50_mm(again, points),
                                  true_subject_to_pam50_mm(truth, points))
    with pytest.raises(ValueError, match="not a synthetic truth"):
        SubjectTruth.from_dict({**truth.to_dict(), "schema": "other"})
