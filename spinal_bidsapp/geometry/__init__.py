"""Embedded spinal cord geometry: centerlines, disc matching, straightening fields (issue #3).

Pure functions on arrays and affines (world RAS+ mm); file I/O lives in
:mod:`spinal_bidsapp.image`.

Public API::

    centerline_from_mask(mask, affine, *, smooth_mm, step_mm) -> Centerline
    centerline_from_points(points_mm, *, smooth_mm, step_mm) -> Centerline
    locate_points(centerline, points_mm) -> (arc_mm, right_mm, anterior_mm)
    discs_from_label_array(labels, affine) -> {value: (3,) mm}
    project_discs(discs, centerline) -> DiscPositions
    compute_vertebral_distribution(centerline, disc_positions) -> VertebralDistribution
    arc_map_from_discs(source_positions, dest_positions) -> ArcMap
    straighten_to_line(centerline, curved_shape, curved_affine, *, xy_size_mm) -> Straightening
    straighten_to_centerline(centerline, dest, curved_shape, curved_affine, dest_shape,
                             dest_affine, *, input_discs, dest_discs) -> Straightening
    apply_field(data, affine, field, *, order) / apply_field_to_point_labels(...)
    compose_fields(first, second) / invert_field(field, shape, affine)
    measure_straightness(mask, affine, curve_to_straight) -> Straightness
    measure_disc_errors(straightening, input_discs, dest_discs) -> DiscErrors
"""

from spinal_bidsapp.geometry.centerline import (
    Centerline,
    centerline_from_mask,
    centerline_from_points,
)
from spinal_bidsapp.geometry.coordinates import cord_coordinates, cord_to_world, locate_points
from spinal_bidsapp.geometry.discs import (
    DISC_NAMES,
    ArcMap,
    DiscPositions,
    VertebralDistribution,
    arc_map_from_discs,
    compute_vertebral_distribution,
    discs_from_label_array,
    project_discs,
)
from spinal_bidsapp.geometry.fields import (
    DisplacementField,
    apply_field,
    apply_field_to_point_labels,
    compose_fields,
    invert_field,
    invert_points,
    transform_points,
)
from spinal_bidsapp.geometry.metrics import (
    DiscErrors,
    Straightness,
    measure_disc_errors,
    measure_straightness,
)
from spinal_bidsapp.geometry.straighten import (
    Straightening,
    straighten_to_centerline,
    straighten_to_line,
)

__all__ = [
    "DISC_NAMES",
    "ArcMap",
    "Centerline",
    "DiscErrors",
    "DiscPositions",
    "DisplacementField",
    "Straightening",
    "Straightness",
    "VertebralDistribution",
    "apply_field",
    "apply_field_to_point_labels",
    "arc_map_from_discs",
    "centerline_from_mask",
    "centerline_from_points",
    "compose_fields",
    "compute_vertebral_distribution",
    "cord_coordinates",
    "cord_to_world",
    "discs_from_label_array",
    "invert_field",
    "invert_points",
    "locate_points",
    "measure_disc_errors",
    "measure_straightness",
    "project_discs",
    "straighten_to_centerline",
    "straighten_to_line",
    "transform_points",
]
