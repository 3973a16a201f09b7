"""The "no slower at equal quality" reading of benchmarks/template_engines.py (#21)."""

from __future__ import annotations

from benchmarks.template_engines import QUALITY, Variant, at_least_as_good, equal_quality


def _row(method: str, cpu: float, **figures: float) -> dict:
    base = {"correlation_with_truth": 0.998, "rms_error_vs_truth": 12.0,
            "mean_dice_subjects_vs_template_mask": 0.97, "dice_template_mask_vs_true_cord": 0.99,
            "max_landmark_spread_mm": 0.2, "dense_spread_in_cord_mm": 0.15}
    return {"method": method, "build_cpu_s": cpu, "wall_s": cpu / 2, **base, **figures}


def test_at_least_as_good_needs_every_figure() -> None:
    other = _row("greedy", 8.0)
    assert at_least_as_good(_row("builtin", 9.0), other)
    for key, sign in QUALITY:  # one figure worse, in its own direction: not as good
        worse = _row("builtin", 9.0, **{key: other[key] - sign * 1e-3})
        assert not at_least_as_good(worse, other)
        assert at_least_as_good(worse, other, {key: 2e-3})


def test_equal_quality_picks_our_cheapest_configuration_that_matches() -> None:
    rows = {"greedy": _row("greedy", 8.0),
            "ours, long": _row("builtin_symmetric", 17.0, rms_error_vs_truth=9.0),
            "ours, short": _row("builtin_symmetric", 6.0, rms_error_vs_truth=10.0),
            "ours, cheapest but worse": _row("builtin_symmetric", 3.0,
                                             mean_dice_subjects_vs_template_mask=0.96)}
    (line,) = equal_quality(rows)
    assert "ours, short" in line and "CPU 6.0 s against 8.0 s = 0.75x, no slower" in line
    assert "wall 3.0 s against 4.0 s = 0.75x, no slower" in line
    rows["ours, short"]["build_cpu_s"] = 10.0
    assert "CPU 10.0 s against 8.0 s = 1.25x, SLOWER" in equal_quality(rows)[0]
    rows["greedy"]["warp_export_s"] = 2.0  # the warps another method needs count in its wall time
    assert "wall 3.0 s against 6.0 s = 0.50x, no slower" in equal_quality(rows)[0]


def test_equal_quality_says_when_nothing_of_ours_matches() -> None:
    rows = {"greedy": _row("greedy", 8.0, mean_dice_subjects_vs_template_mask=0.98),
            "ours": _row("builtin_symmetric", 17.0)}
    assert "no configuration of ours" in equal_quality(rows)[0]


def test_variant_names_say_what_differs_from_the_default() -> None:
    assert Variant.parse("greedy").name == "greedy loop (picsl-greedy)"
    assert Variant.parse("builtin:2x1+1x1:syn_step=0.2").name == \
        "builtin [2 mm x 1, 1 mm x 1, syn_step 0.2]"
    assert Variant.parse('builtin_symmetric:2x1:metric="CC"').name.endswith("metric CC]")
