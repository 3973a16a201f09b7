"""Run SCT's ``SpinalCordStraightener`` from a source checkout, for side-by-side benchmarks.

SCT is not a dependency: the checkout path is given at run time (``--sct-src``), it is imported
into a worker process only, and its ANTs-based ``sct_apply_transfo`` call is replaced at run
time by a scipy ``map_coordinates`` applier (our :func:`apply_field`), so no ANTs binary is
needed. Nothing of SCT is copied into this repository.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from spinal_bidsapp.geometry.fields import apply_field
from spinal_bidsapp.image import Volume, load_field, load_volume, save_volume

_ORDER = {"nn": 0, "linear": 1, "spline": 3}


def _apply_transfo_main(argv: list[str]) -> None:
    """Stand-in for ``sct_apply_transfo.main``: -i IN -d REF -w WARP -o OUT -x INTERP."""
    opts = dict(zip(argv[::2], argv[1::2], strict=False))
    moving = load_volume(Path(opts["-i"]))
    field = load_field(Path(opts["-w"]))
    out = apply_field(moving.data, moving.affine, field, order=_ORDER[opts.get("-x", "spline")])
    save_volume(Volume(out, field.affine), Path(opts["-o"]))


def import_sct(sct_src: Path, deps: Path | None) -> object:
    """Import ``spinalcordtoolbox.straightening`` from a checkout and patch the warp applier."""
    for path in (deps, sct_src):
        if path is not None and str(path) not in sys.path:
            sys.path.insert(0 if path == sct_src else len(sys.path), str(path))
    from spinalcordtoolbox import straightening  # type: ignore[import-not-found]

    straightening.sct_apply_transfo.main = _apply_transfo_main
    logging.getLogger("spinalcordtoolbox").setLevel(logging.WARNING)
    return straightening


def run_sct_straightening(straightening: object, image: Path, seg: Path, out_dir: Path, *,
                          dest: Path | None = None, discs_in: Path | None = None,
                          discs_dest: Path | None = None) -> dict[str, float]:
    """``sct_straighten_spinalcord`` CLI defaults: nurbs centerline, smooth 10, xy_size 35."""
    from spinalcordtoolbox.centerline.core import ParamCenterline  # type: ignore[import-not-found]

    out_dir.mkdir(parents=True, exist_ok=True)
    sc = straightening.SpinalCordStraightener(  # type: ignore[attr-defined]
        str(image), str(seg), param_centerline=ParamCenterline(algo_fitting="nurbs", smooth=10))
    sc.xy_size = 35
    sc.path_output = str(out_dir)
    sc.verbose = 0
    if dest is not None:
        sc.use_straight_reference = True
        sc.centerline_reference_filename = str(dest)
        if discs_in is not None and discs_dest is not None:
            sc.discs_input_filename = str(discs_in)
            sc.discs_ref_filename = str(discs_dest)
    sc.straighten()
    return {"sct_internal_rms_mm": float(sc.mse_straightening),
            "sct_internal_max_mm": float(sc.max_distance_straightening)}


def binary_copy(mask: Path, out: Path) -> Path:
    """SCT reads any non-zero voxel as cord: give it the 0.5-thresholded mask."""
    img = nib.load(str(mask))
    data = (np.asanyarray(img.dataobj) > 0.5).astype(np.uint8)
    return save_volume(Volume(data, img.affine), out)
