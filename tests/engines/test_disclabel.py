"""Builtin disc labelling against PAM50: a PAM50 phantom and real sub-errsm30 (discs 3-5)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spinal_bidsapp.engines.builtin.disclabel import (
    LOW_CONFIDENCE,
    BuiltinDiscLabeler,
    DiscTemplate,
    label_discs,
)
from spinal_bidsapp.errors import InputDataError
from spinal_bidsapp.geometry.discs import discs_from_label_array
from spinal_bidsapp.image import load_mask, load_volume
from spinal_bidsapp.synth import generate_phantom_cohort, load_cohort_truth

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
    assert result.labels.shape == image.shape
    assert set(np.unique(result.labels)) - {0} == set(result.disc_points_mm)


@pytest.fixture(scope="module")
def errsm30(bids_real: Path) -> tuple:
    anat = bids_real / "sub-errsm30" / "anat"
    labels = bids_real / "derivatives" / "labels" / "sub-errsm30" / "anat"
    image = load_volume(anat / "sub-errsm30_T2w.nii.gz")
    cord = load_mask(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz")
    discs = load_mask(labels / "sub-errsm30_T2w_labels-disc.nii.gz")
    return image, cord, discs_from_label_array(discs.data, discs.affine)


def test_errsm30_discs_within_3mm_given_c2c3(template: DiscTemplate, errsm30: tuple) -> None:
    image, cord, truth = errsm30
    hint_z = float(truth[3][2]) + 2.0  # a user's click, 2 mm off
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                         init_disc=(3, hint_z))
    errors = errors_mm(result.disc_points_mm, truth)
    assert max(errors.values()) <= TOLERANCE_MM, errors


def test_errsm30_without_hint_is_flagged_as_ambiguous(template: DiscTemplate,
                                                      errsm30: tuple) -> None:
    """55 mm of cervical spine: a match one level away is almost as good, and the result must
    say so."""
    image, cord, _ = errsm30
    result = label_discs(image.data, image.affine, cord.data, template, contrast="T2w")
    assert result.margin is not None and result.margin < 0.05
    assert result.confidence < LOW_CONFIDENCE


def test_errsm30_without_hint_agrees_with_sct_body_labels(template: DiscTemplate,
                                                          errsm30: tuple,
                                                          data_dir: Path) -> None:
    """SCT's mid-body labels of the same image (C3 and C5) sit one level below the bids-real
    disc labels; the unhinted match agrees with them: body 3 midway between our discs 3 and 4,
    body 5 below our disc 5."""
    image, cord, _ = errsm30
    body = load_mask(data_dir / "sct-reference" / "sub-errsm30_T2w_labels-body.nii.gz")
    bodies = discs_from_label_array(body.data, body.affine)
    found = label_discs(image.data, image.affine, cord.data, template,
                        contrast="T2w").disc_points_mm
    midpoint = 0.5 * (found[3] + found[4])
    assert np.linalg.norm(bodies[3] - midpoint) <= TOLERANCE_MM
    assert bodies[5][2] < found[5][2]


def test_unknown_init_disc_is_an_input_error(template: DiscTemplate, errsm30: tuple) -> None:
    image, cord, _ = errsm30
    with pytest.raises(InputDataError, match="not labelled in the template"):
        label_discs(image.data, image.affine, cord.data, template, contrast="T2w",
                    init_disc=(25, 0.0))


@pytest.mark.parametrize("text", ["C3@12", "3", "3@", "31@0", "3@nan"])
def test_init_disc_option_rejects_malformed_hints(text: str) -> None:
    from spinal_bidsapp.cli import parse_config
    from spinal_bidsapp.errors import ConfigError

    with pytest.raises(ConfigError, match="LABEL@Z_MM"):
        parse_config(["/tmp/bids", "/tmp/out", "participant", "--init-disc", text])


def test_init_disc_option_gives_the_hint() -> None:
    from spinal_bidsapp.cli import parse_config

    config = parse_config(["/tmp/bids", "/tmp/out", "participant", "--init-disc", "3@-12.5"])
    assert config.participant.init_disc_hint == (3, -12.5)
