"""Synthetic cohorts with known ground truth (issue #7).

Public API::

    generate_demo_cohort(out_dir, *, n_subjects=6, seed=0, ...) -> CohortResult
    generate_phantom_cohort(out_dir, *, pam50_dir, pam50_small_dir, n_subjects=8, ...)
    load_truth(path) -> SubjectTruth;  load_cohort_truth(out_dir) -> list[SubjectTruth]
    true_subject_to_pam50_mm / true_pam50_to_subject_mm (exact template mapping)
    true_subject_to_straight_mm / true_straight_to_subject_mm (exact curve coordinates)
    true_cord_area_mm2(truth, arc_length_mm) (true cross-section area along the cord)
    draw_straight_cohort(grid, n_subjects, *, seed, anatomy: StraightAnatomy, ...) and
    write_straight_cohort / render_straight_anatomy (straight cords for the template builder)

The geometry here (curve, frames, nearest-point search) is written independently of
:mod:`spinal_bidsapp.geometry` so that it can serve as a check of it.
"""

from spinal_bidsapp.synth.cohort import CohortResult, generate_demo_cohort, generate_phantom_cohort
from spinal_bidsapp.synth.straight import (
    StraightAnatomy,
    draw_straight_cohort,
    render_straight_anatomy,
    write_straight_cohort,
)
from spinal_bidsapp.synth.truth import (
    SubjectTruth,
    load_cohort_truth,
    load_truth,
    true_cord_area_mm2,
    true_pam50_to_subject_mm,
    true_straight_to_subject_mm,
    true_subject_to_pam50_mm,
    true_subject_to_straight_mm,
)

__all__ = [
    "CohortResult",
    "StraightAnatomy",
    "SubjectTruth",
    "draw_straight_cohort",
    "generate_demo_cohort",
    "generate_phantom_cohort",
    "load_cohort_truth",
    "load_truth",
    "render_straight_anatomy",
    "true_cord_area_mm2",
    "true_pam50_to_subject_mm",
    "true_straight_to_subject_mm",
    "true_subject_to_pam50_mm",
    "true_subject_to_straight_mm",
    "write_straight_cohort",
]
