"""Builtin disc labelling against PAM50: a PAM50 phantom and real sub-errsm30 (discs 4-6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.engines.builtin.disc_peaks import C2C3
from spinal_bidsapp.engines.builtin.disc_strip import DiscTemplate
from spinal_bidsapp.engines.builtin.disclabel import (
    LOW_CONFIDENCE,
    BuiltinDiscLabeler,
    SessionCues,
    find_session_cues,
    label_discs,
)
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.image import load_mask, load_volume
from spinal_bidsapp.synth import generate_demo_cohort, generate_phantom_cohort, load_cohort_truth

TOLERANCE_MM = 3.0


@pytest.fixture(scope="module")
def template(data_dir: Path) -> DiscTemplate:
    small = data_dir / "PAM50_small"
    return BuiltinDiscLabeler.from_files(
        "test", t2=small / "PAM50_small_t2.nii.gz", cord=small / "PAM50_small_cord.nii.gz",
        label_disc=small / "PAM50_small_label_disc.nii.gz").template


def errors_mm(found: dict[int, np.ndarray], truth: dict[int, np.ndarray]) -> dict[int, float]:
    return {v: float(np.linalg.norm(found[v] - p)) if v in found else np.inf
            for v, p in truth.items()}


def test_discs_of_a_pam50_phantom_within_3mm(template: DiscTemplate, data_dir: Path,
                                             tmp_path: Path) -> None:
    generate_phantom_cohort(tmp_path, pam50_dir=data_dir / "PAM50",
                            pam50_small_dir=data_dir / "PAM50_small", n_subjects=1, seed=0)
    truth = load_cohort_truth(tmp_path)[0]
    anat = tmp_path / "bids" / "sub-01" / "anat"
    image = load_volume(anat / "sub-01_T2w.nii.gz")
    cord = load_mask(tmp_path / "bids" / "derivatives" / "labels" / "sub-01" / "anat"
                     / "sub-01_T2w_label-SC_mask.nii.gz")
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w")
    in_view = truth.disc_positions_mm(in_fov_only=True)
    errors = errors_mm(result.disc_points_mm, in_view)
    assert max(errors.values()) <= TOLERANCE_MM, errors
    assert result.confidence >= LOW_CONFIDENCE
    # The phantom's field reaches C1, but the PAM50_small T2 (2 mm slices) has no distinct
    # C2/C3 band 10-16 mm in front of the cord: no anchor, the pattern alone decides.
    assert result.c2c3_anchor_mm is None and result.anchor_agrees is None
    assert result.labels.shape == image.shape
    assert set(np.unique(result.labels)) - {0} == set(result.disc_points_mm)


def test_hinted_discs_follow_the_bands_of_a_spine_unlike_pam50(template: DiscTemplate,
                                                                tmp_path: Path) -> None:
    """An analytic demo subject (uniform discs, no PAM50 texture): the pattern match alone maps
    the template with the wrong scale (its discs 8-28 mm off given disc 3), and the walk from
    the hinted disc, vertebra by vertebra on the disc band, still finds every disc with a band.
    Disc 2 (the C1/C2 joint, no band in PAM50) keeps the template position."""
    generate_demo_cohort(tmp_path, n_subjects=1, seed=0)
    truth = load_cohort_truth(tmp_path)[0].disc_positions_mm(in_fov_only=True)
    image = load_volume(tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    cord = load_mask(tmp_path / "bids" / "derivatives" / "labels" / "sub-01" / "anat"
                     / "sub-01_T2w_label-SC_mask.nii.gz")
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                         init_disc=(3, float(truth[3][2]) + 2.0))
    errors = errors_mm(result.disc_points_mm, {v: p for v, p in truth.items() if v != 2})
    assert max(errors.values()) <= 1.0, errors


@pytest.fixture(scope="module")
def errsm30(bids_real: Path) -> tuple:
    anat = bids_real / "sub-errsm30" / "anat"
    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(anat / "sub-errsm30_T2w.nii.gz")
    cord = load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz")
    discs = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    return image, cord, discs_from_label_array(discs.data, discs.affine)


def test_errsm30_manual_discs_are_c3c4_to_c5c6(errsm30: tuple) -> None:
    """The corrected shared file: values 4, 5, 6, top to bottom."""
    _, _, truth = errsm30
    assert sorted(truth) == [4, 5, 6]
    assert truth[4][2] > truth[5][2] > truth[6][2]


def test_errsm30_without_hint_finds_the_levels(template: DiscTemplate, errsm30: tuple) -> None:
    """Unhinted, the discs land on the manual labels (C3/C4 and C4/C5 within 3 mm), and C2/C3
    is the disc above them, one vertebra (15-22 mm) higher."""
    image, cord, truth = errsm30
    found = label_discs(image.data, image.affine, cord.data, template,
                        contrast="T2w").disc_points_mm
    errors = errors_mm(found, {v: truth[v] for v in (4, 5)})
    assert max(errors.values()) <= TOLERANCE_MM, errors
    assert 15.0 <= found[3][2] - found[4][2] <= 22.0


def test_errsm30_hint_sets_the_level(template: DiscTemplate, errsm30: tuple) -> None:
    """A hint 2 mm off a disc is followed, whichever level it names: C3/C4 (4) reproduces the
    manual labels; C2/C3 (3) at the same height puts disc 3 on that disc, against the image
    (a hint overrules the pattern match)."""
    image, cord, truth = errsm30
    hint_z = float(truth[4][2]) + 2.0  # a user's click, 2 mm off
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                         init_disc=(4, hint_z))
    in_both = {v: p for v, p in truth.items() if v in result.disc_points_mm}
    errors = errors_mm(result.disc_points_mm, in_both)
    assert len(in_both) >= 2 and max(errors.values()) <= TOLERANCE_MM, errors
    wrong = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                        init_disc=(3, hint_z))
    assert np.linalg.norm(wrong.disc_points_mm[3] - truth[4]) <= TOLERANCE_MM
    assert 15.0 <= wrong.disc_points_mm[3][2] - wrong.disc_points_mm[4][2] <= 22.0


def test_errsm30_without_hint_is_flagged_as_ambiguous(template: DiscTemplate,
                                                      errsm30: tuple) -> None:
    """55 mm of cervical spine: a match one level away is almost as good, and the result must
    say so."""
    image, cord, _ = errsm30
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w")
    assert result.margin is not None and result.margin < 0.05
    assert result.confidence < LOW_CONFIDENCE
    # ... and state the other reading on one of its discs, one level away
    alt = result.alternative
    assert alt is not None and alt.value in result.disc_points_mm
    assert np.array_equal(alt.point_mm, result.disc_points_mm[alt.value])
    assert abs(alt.alternative_value - alt.value) == 1
    assert result.ncc - alt.ncc == pytest.approx(result.margin)
    hinted = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                         init_disc=(alt.value, float(alt.point_mm[2])))
    assert hinted.alternative is None and hinted.confidence >= LOW_CONFIDENCE


def test_errsm30_without_hint_agrees_with_sct_body_labels(template: DiscTemplate,
                                                          errsm30: tuple,
                                                          data_dir: Path) -> None:
    """SCT's mid-body labels of the same image (C3 and C5): body 3 midway between our discs 3
    and 4, body 5 below our disc 5."""
    image, cord, _ = errsm30
    body = load_mask(data_dir / "sct-reference" / "sub-errsm30_T2w_labels-body.nii.gz")
    bodies = discs_from_label_array(body.data, body.affine)
    found = label_discs(image.data, image.affine, cord.data, template,
                        contrast="T2w").disc_points_mm
    midpoint = 0.5 * (found[3] + found[4])
    assert np.linalg.norm(bodies[3] - midpoint) <= TOLERANCE_MM
    assert bodies[5][2] < found[5][2]


@pytest.fixture(scope="module")
def errsm30_t1w(bids_real: Path, errsm30: tuple) -> tuple:
    """The T1w of the same session, with the manual T2w disc positions (scanner coordinates) as
    reference."""
    anat = bids_real / "sub-errsm30" / "anat"
    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(anat / "sub-errsm30_T1w.nii.gz")
    cord = load_mask(labels / "sub-errsm30_T1w_label-SC_mask.nii.gz")
    return image, cord, errsm30[2]


def test_errsm30_t1w_discs_within_3mm_given_one_disc(template: DiscTemplate,
                                                     errsm30_t1w: tuple) -> None:
    image, cord, truth = errsm30_t1w
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T1w",
                         init_disc=(4, float(truth[4][2]) + 2.0))
    errors = errors_mm(result.disc_points_mm, truth)
    assert max(errors.values()) <= TOLERANCE_MM, errors


def test_errsm30_t1w_without_hint_the_c2_anchor_sets_the_levels(template: DiscTemplate,
                                                                 errsm30_t1w: tuple) -> None:
    """The T1w shows 20 mm of bone without a disc above its top disc (C2 body and dens): the
    anchor names that disc C2/C3, and discs 4-6 land within 3 mm of the manual labels.
    The T2 pattern alone puts the strip in the thoracic template, so anchor and pattern disagree
    and the result stays flagged."""
    image, cord, truth = errsm30_t1w
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T1w")
    assert result.c2c3_anchor_mm is not None
    assert 15.0 <= result.c2c3_anchor_mm[2] - truth[4][2] <= 22.0  # one vertebra above C3/C4
    assert np.linalg.norm(result.disc_points_mm[C2C3] - result.c2c3_anchor_mm) <= 1.0
    errors = errors_mm(result.disc_points_mm, truth)
    assert max(errors.values()) <= TOLERANCE_MM, errors
    assert result.anchor_agrees is False
    assert result.confidence < LOW_CONFIDENCE
    # the other reading is the pattern's own, in the thoracic template
    assert result.alternative is not None and result.alternative.alternative_value >= 9


def test_errsm30_t2w_takes_the_c2_anchor_of_the_session_t1w(template: DiscTemplate,
                                                             errsm30: tuple,
                                                             errsm30_t1w: tuple) -> None:
    """The T2w shows no C2, the T1w of the same session does: its anchor (scanner coordinates)
    agrees with the T2w pattern match, so the unhinted labels are no longer flagged. The T2w
    cuts the bands of C2/C3 (top) and C5/C6 (bottom; on the manual mask it was not placed at
    all); the T1w shows both, and they are placed on its bands: C2/C3 within 1 mm of where the
    template put it, C5/C6 within 3 mm of the manual label. C3/C4 and C4/C5 keep their
    own bands. Cues outside this cord's height are ignored."""
    image, cord, truth = errsm30
    t1_image, t1_cord, _ = errsm30_t1w
    cues = find_session_cues(t1_image.data, t1_image.affine, t1_cord.data, contrast="T1w")
    assert cues is not None and cues.c2c3_mm is not None
    alone = label_discs(image.data, image.affine, cord.data, template, contrast="T2w")
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                         session=cues)
    assert result.anchor_from_session and result.anchor_agrees is True
    assert result.confidence >= LOW_CONFIDENCE > alone.confidence
    assert abs(result.c2c3_anchor_mm[2] - cues.c2c3_mm[2]) <= 1.0
    assert result.discs_from_session == (3, 6) and 6 not in alone.disc_points_mm
    for value in result.discs_from_session:
        assert np.abs(cues.disc_peaks_mm[:, 2] - result.disc_points_mm[value][2]).min() <= 1.0
    assert np.linalg.norm(result.disc_points_mm[3] - alone.disc_points_mm[3]) <= 1.0
    for value in (4, 5):
        assert np.array_equal(result.disc_points_mm[value], alone.disc_points_mm[value])
    errors = errors_mm(result.disc_points_mm, truth)
    assert max(errors.values()) <= TOLERANCE_MM, errors
    shift = np.array([0.0, 0.0, 40.0])
    far = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                      session=SessionCues(c2c3_mm=cues.c2c3_mm + shift,
                                          disc_peaks_mm=cues.disc_peaks_mm + shift))
    assert far.c2c3_anchor_mm is None and not far.anchor_from_session
    assert far.discs_from_session == () and far.confidence == alone.confidence
    # the T2w itself lends no anchor (its field ends at C2/C3), only disc peaks
    own = find_session_cues(image.data, image.affine, cord.data, contrast="T2w")
    assert own is not None and own.c2c3_mm is None and len(own.disc_peaks_mm) >= 2


def test_errsm30_t2w_shows_no_c2_so_no_anchor(template: DiscTemplate, errsm30: tuple) -> None:
    """The T2w ends 1 mm above C2/C3: no anchor, the pattern match (and its flag) unchanged."""
    image, cord, _ = errsm30
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w")
    assert result.c2c3_anchor_mm is None and result.anchor_agrees is None


def test_no_c2_anchor_on_a_lumbar_image(template: DiscTemplate, bids_real: Path) -> None:
    """sub-lumbar01 (T2w, lumbar): tall lumbar bodies must not pass for C2."""
    from spinal_bidsapp.engines.builtin.segment import segment_cord

    path = bids_real / "sub-lumbar01" / "anat" / "sub-lumbar01_T2w.nii.gz"
    if not path.is_file():
        pytest.skip("sub-lumbar01 not in the shared data")
    image = load_volume(path)
    cord = segment_cord(image.data, image.affine, contrast="T2w").mask
    result = label_discs(image.data, image.affine, cord, template, contrast="T2w")
    assert result.c2c3_anchor_mm is None


def test_unknown_init_disc_is_an_input_error(template: DiscTemplate, errsm30: tuple) -> None:
    image, cord, _ = errsm30
    with pytest.raises(InputDataError, match="not labelled in the template"):
        label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                    init_disc=(25, 0.0))


@pytest.mark.parametrize("text", ["C3@12", "3", "3@", "31@0", "3@nan"])
def test_init_disc_option_rejects_malformed_hints(text: str) -> None:
    from spinal_bidsapp.cli.parser import parse_config
    from spinal_bidsapp.errors import ConfigError

    with pytest.raises(ConfigError, match="LABEL@Z_MM"):
        parse_config(["/tmp/bids", "/tmp/out", "participant", "--init-disc", text])


def test_init_disc_option_gives_the_hint() -> None:
    from spinal_bidsapp.cli.parser import parse_config

    config = parse_config(["/tmp/bids", "/tmp/out", "participant", "--init-disc", "3@-12.5"])
    assert config.participant.init_disc_hint == (3, -12.5)
