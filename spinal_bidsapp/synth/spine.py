"""Spine constants shared by the generators: PAM50 disc geometry (SCT disc numbering).

Disc values follow SCT numbering (``docs/reference/sct.md`` section 1.4): disc ``n`` lies between
vertebra ``n - 1`` and vertebra ``n``; 1 is the top of C1, 2 is C1/C2, 8 is C7/T1.
"""

from __future__ import annotations

import numpy as np

PAM50_AFFINE = np.array([[-0.5, 0.0, 0.0, 35.0],
                         [0.0, 0.5, 0.0, -81.22],
                         [0.0, 0.0, 0.5, -561.84],
                         [0.0, 0.0, 0.0, 1.0]])
"""Voxel-to-world affine of the 0.5 mm PAM50 volumes (141 x 141 x 991, LAS)."""

PAM50_CORD_XY_MM = (0.0, -46.22)
"""World (x, y) of the straight PAM50 centre line (voxel x = 70, y = 70), 0.5 mm frame."""

PAM50_DISC_Z_VOX: dict[int, int] = {
    1: 985, 2: 939, 3: 908, 4: 871, 5: 834, 6: 801, 7: 770, 8: 736, 9: 693, 10: 647, 11: 601,
    12: 552, 13: 501, 14: 450, 15: 397, 16: 343, 17: 290, 18: 232, 19: 169, 20: 106, 21: 39,
}
"""Voxel z of the PAM50 ``label_disc`` points 1 (top of C1) to 21 (L1/L2) (measured; they sit
at x = y = 70). The file also holds 60, the conus medullaris tip, one slice above disc 21; it is
not a vertebral landmark and is read from the file where needed."""

PAM50_DISC_Z_MM: dict[int, float] = {
    disc: float(PAM50_AFFINE[2, 3] + PAM50_AFFINE[2, 2] * k)
    for disc, k in PAM50_DISC_Z_VOX.items()
}
"""World z (mm) of the PAM50 discs in the 0.5 mm frame."""

PAM50_SMALL_OFFSET_MM = np.array([0.0, 46.22, 287.84])
"""``PAM50_small world = PAM50 world + offset`` (mm); checked against both disc label files."""


def reference_level_lengths_mm(discs: range) -> np.ndarray:
    """PAM50 distances (mm) between consecutive discs of ``discs`` (length ``len(discs) - 1``).

    >>> reference_level_lengths_mm(range(2, 5)).tolist()
    [15.5, 18.5]
    """
    z = np.array([PAM50_DISC_Z_MM[d] for d in discs])
    return -np.diff(z)
