"""``spinal_bidsapp-straighten``: straighten a spinal cord image, as ``sct_straighten_spinalcord``.

Examples::

    spinal_bidsapp-straighten -i t2.nii.gz -s t2_seg.nii.gz -o straight/
    spinal_bidsapp-straighten -i t2.nii.gz -s t2_seg.nii.gz --dest PAM50_small_cord.nii.gz \\
        --ldisc-input t2_discs.nii.gz --ldisc-dest PAM50_small_label_disc.nii.gz -o out/

Writes ``<image>_straight.nii.gz``, ``straight_ref.nii.gz`` (same image, SCT's name for the
straight reference space), ``warp_curve2straight.nii.gz`` and ``warp_straight2curve.nii.gz``
(ITK/ANTs displacement fields, usable by SCT, ANTs and SimpleITK), and prints the straightening
residual. Exit codes: 0 ok, 64 usage error, 65 unusable input, 66 missing input, 73/74 output
not writable.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from spinal_bidsapp import __version__
from spinal_bidsapp.errors import SpinalBidsAppError, UsageError

logger = logging.getLogger("spinal_bidsapp")

_INTERPOLATION = {"nn": 0, "linear": 1, "spline": 3}


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (exit 64) instead of exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_float(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spinal_bidsapp-straighten", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-i", dest="image", type=Path, required=True, help="image to straighten")
    parser.add_argument("-s", dest="cord", type=Path, required=True,
                        help="cord segmentation or centerline image (voxels > 0.5)")
    parser.add_argument("--dest", type=Path, default=None,
                        help="destination cord segmentation/centerline (e.g. a template's cord); "
                             "its grid is the straight grid")
    parser.add_argument("--ldisc-input", type=Path, default=None,
                        help="disc labels of the input (SCT numbering: 3 = C2/C3 ...)")
    parser.add_argument("--ldisc-dest", type=Path, default=None,
                        help="disc labels of the destination")
    parser.add_argument("--xy-size", type=_positive_float, default=35.0,
                        help="half-width (mm) of the straight field of view (default 35)")
    parser.add_argument("--smooth", type=float, default=None,
                        help="centerline smoothing: cut-off wavelength in mm (default 12)")
    parser.add_argument("-x", dest="interpolation", choices=sorted(_INTERPOLATION),
                        default="spline", help="interpolation of the output image")
    parser.add_argument("-o", dest="out_dir", type=Path, required=True, help="output folder")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def _check_combination(args: argparse.Namespace) -> None:
    if (args.ldisc_input is None) != (args.ldisc_dest is None):
        raise UsageError("--ldisc-input and --ldisc-dest must be given together")
    if args.ldisc_input is not None and args.dest is None:
        raise UsageError("disc matching (--ldisc-input/--ldisc-dest) needs --dest")


def run(args: argparse.Namespace) -> list[str]:
    """Straighten as described by parsed ``args``; returns the report lines to print."""
    # Deferred so that --help and --version stay fast (these pull in scipy and nibabel: about
    # 1.5-2.9 s of imports measured under load, against 0.04-0.45 s for the parser alone).
    from spinal_bidsapp.geometry import centerline as cl_mod
    from spinal_bidsapp.geometry.discs import discs_from_label_array
    from spinal_bidsapp.geometry.fields import apply_field
    from spinal_bidsapp.geometry.metrics import measure_disc_errors, measure_straightness
    from spinal_bidsapp.geometry.straighten import straighten_to_centerline, straighten_to_line
    from spinal_bidsapp.image import (
        Volume,
        load_mask,
        load_volume,
        nifti_stem,
        save_field,
        save_volume,
    )

    _check_combination(args)
    start = time.perf_counter()
    smooth = cl_mod.DEFAULT_SMOOTH_MM if args.smooth is None else args.smooth
    image = load_volume(args.image)
    cord = load_volume(args.cord)
    centerline = cl_mod.centerline_from_mask(cord.data, cord.affine, smooth_mm=smooth)
    input_discs = dest_discs = None
    if args.dest is None:
        result = straighten_to_line(centerline, image.shape, image.affine,
                                    xy_size_mm=args.xy_size)
    else:
        dest = load_volume(args.dest)
        dest_cl = cl_mod.centerline_from_mask(dest.data, dest.affine, smooth_mm=smooth)
        if args.ldisc_input is not None:
            lab_in, lab_dest = load_mask(args.ldisc_input), load_mask(args.ldisc_dest)
            input_discs = discs_from_label_array(lab_in.data, lab_in.affine)
            dest_discs = discs_from_label_array(lab_dest.data, lab_dest.affine)
        result = straighten_to_centerline(centerline, dest_cl, image.shape, image.affine,
                                          dest.shape, dest.affine, input_discs=input_discs,
                                          dest_discs=dest_discs)
    c2s = result.curve_to_straight
    straight = apply_field(image.data, image.affine, c2s,
                           order=_INTERPOLATION[args.interpolation])
    out_dir = args.out_dir
    straight_vol = Volume(data=straight, affine=c2s.affine)
    save_volume(straight_vol, out_dir / f"{nifti_stem(args.image)}_straight.nii.gz")
    save_volume(straight_vol, out_dir / "straight_ref.nii.gz")
    save_field(c2s, out_dir / "warp_curve2straight.nii.gz")
    save_field(result.straight_to_curve, out_dir / "warp_straight2curve.nii.gz")
    metric = measure_straightness(cord.data, cord.affine, c2s)
    lines = [f"straightening residual: RMS {metric.rms_mm:.3f} mm, max {metric.max_mm:.3f} mm "
             f"({metric.n_slices} slices, cord length {centerline.length_mm:.1f} mm)"]
    if input_discs is not None and dest_discs is not None:
        err = measure_disc_errors(result, input_discs, dest_discs)
        for value, fwd, bwd in zip(err.values, err.forward_mm, err.backward_mm, strict=True):
            lines.append(f"disc {int(value)}: {fwd:+.3f} mm (input->dest), "
                         f"{bwd:+.3f} mm (dest->input)")
    logger.info("straightened %s in %.2f s", args.image, time.perf_counter() - start)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.WARNING
                            if args.verbose == 0 else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        lines = run(args)
    except SpinalBidsAppError as exc:
        print(f"spinal_bidsapp-straighten: error: {exc}", file=sys.stderr)
        return exc.exit_code
    for line in lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
