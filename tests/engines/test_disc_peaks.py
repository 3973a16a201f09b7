"""The disc band on synthetic bands: a disc's band extremum, the band's polarity and the C2/C3
anchor rule (the pure part of the builtin disc labelling; the labelling itself on phantoms and
real images is tested in test_disclabel.py)."""

from __future__ import annotations

import numpy as np
import pytest

from spinal_bidsapp.engines.builtin.disc_peaks import (
    anchor_polarity,
    band_polarity,
    c2c3_anchor,
    peak_near,
)


def test_disc_band_peak_is_the_band_centre_and_none_at_the_strip_end() -> None:
    """A 4 mm bright band between dark endplates: the refinement finds its centre from a guess
    3 mm off, follows the polarity, and gives up when the band is cut by the end of the strip."""
    arc = np.arange(0.0, 60.0, 1.0)
    band = np.where(np.abs(arc - 30.3) <= 2.0, 1.0, 0.0) - np.where(
        np.abs(np.abs(arc - 30.3) - 3.0) <= 0.5, 1.0, 0.0)
    peak = peak_near(band, arc, 27.0, 1.0)
    assert peak is not None and abs(peak - 30.3) <= 1.0
    assert peak_near(-band, arc, 27.0, -1.0) == peak
    assert peak_near(band, arc, 1.0, 1.0) is None
    assert band_polarity(band, arc, [30.0], contrast="T1w") == 1.0
    assert band_polarity(-band, arc, [30.0], contrast="T1w") == -1.0
    assert band_polarity(-band, arc, [30.0], contrast="T2w") == 1.0


def synthetic_band(discs_mm: list[float], end_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """A disc band: 5 mm bright discs (Gaussian, sigma 1.5 mm) on dark bone, 1 mm arc steps."""
    arc = np.arange(0.0, end_mm + 0.5, 1.0)
    band = sum(np.exp(-0.5 * ((arc - d) / 1.5) ** 2) for d in discs_mm) * 2.0 - 0.5
    return np.asarray(band, float), arc


@pytest.mark.parametrize(("discs", "end", "expected"), [
    ([10.0, 28.0, 46.0], 71.0, 46.0),  # 25 mm of bone without disc above 18 mm vertebrae: C2
    ([10.0, 28.0, 46.0], 58.0, None),  # the field ends 12 mm above the top disc
    ([10.0, 28.0, 46.0, 64.0], 71.0, None),  # a regular vertebra above: top disc 7 mm from end
    ([10.0, 28.0, 46.0, 66.5], 67.0, None),  # 21 mm up, the field ends inside the next disc
    ([2.0, 18.0, 34.0, 50.0], 68.0, None),  # 18 mm above the top disc: under 20 mm
    ([5.0, 35.0, 65.0], 95.0, None),  # lumbar spacing (30 mm) under 30 mm of bone: no context
    ([10.0, 20.5, 46.0], 71.0, None),  # one spacing too short (10.5 mm): not two vertebrae
])
def test_c2c3_anchor_rule_on_synthetic_bands(discs: list[float], end: float,
                                             expected: float | None) -> None:
    band, arc = synthetic_band(discs, end)
    found = c2c3_anchor(band, arc, 1.0)
    if expected is None:
        assert found is None
    else:
        assert found is not None and abs(found - expected) <= 0.5
    # polarity: the same band inverted (dark discs, spin-echo T1w) gives the same answer
    assert c2c3_anchor(-band, arc, -1.0) == found


def test_anchor_needs_the_run_to_exceed_the_vertebra_below() -> None:
    """20 mm of bone above a disc whose vertebra below is 20 mm tall is not C2."""
    band, arc = synthetic_band([2.0, 22.0, 42.0], 62.0)
    assert c2c3_anchor(band, arc, 1.0) is None
    band, arc = synthetic_band([2.0, 22.0, 42.0], 64.0)
    assert c2c3_anchor(band, arc, 1.0) is not None


def test_anchor_polarity_from_skewness() -> None:
    band, _ = synthetic_band([10.0, 28.0, 46.0], 71.0)
    assert anchor_polarity(band, contrast="T1w") == 1.0
    assert anchor_polarity(-band, contrast="T1w") == -1.0
    assert anchor_polarity(-band, contrast="T2w") == 1.0
    assert anchor_polarity(np.sin(np.arange(60.0)), contrast="T1w") == 0.0
