"""Fixtures shared by the geometry tests."""

from __future__ import annotations

import pytest
from geometry_phantoms import TubePhantom, make_tube_phantom


@pytest.fixture(scope="module")
def sinusoid() -> TubePhantom:
    return make_tube_phantom("sinusoid", voxel_mm=(1.0, 1.0, 1.0), seed=1)
