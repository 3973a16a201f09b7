"""``spinal_bidsapp-synth``: write synthetic cohorts with known ground truth.

Examples::

    spinal_bidsapp-synth demo OUT_DIR --n-subjects 6 --seed 0
    spinal_bidsapp-synth phantom OUT_DIR --n-subjects 8 --seed 0 --pam50 DIR --pam50-small DIR
    spinal_bidsapp-synth phantom OUT_DIR --n-subjects 16 --fov-discs 1 21   # whole cord

Exit codes follow the package table: 0 ok, 64 usage error, 66 PAM50 files missing,
73/74 output not writable, 1 anything else.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from spinal_bidsapp import __version__
from spinal_bidsapp.config import data_dir_from_environment
from spinal_bidsapp.errors import SpinalBidsAppError, UsageError
from spinal_bidsapp.synth.cohort import generate_demo_cohort, generate_phantom_cohort

logger = logging.getLogger("spinal_bidsapp")


class _Parser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` (exit 64) instead of exiting with status 2."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spinal_bidsapp-synth", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="cohort", required=True, parser_class=_Parser)
    demo = sub.add_parser("demo", help="analytic cohort, no external data")
    phantom = sub.add_parser("phantom", help="bent and stretched PAM50 anatomy")
    for cmd, n_default in ((demo, 6), (phantom, 8)):
        cmd.add_argument("out_dir", type=Path, help="receives bids/ and truth/")
        cmd.add_argument("--n-subjects", type=_positive_int, default=n_default)
        cmd.add_argument("--seed", type=int, default=0)
        cmd.add_argument("--t1w", action="store_true",
                         help="also write a T1w-like image on the same grid")
        cmd.add_argument("-v", "--verbose", action="count", default=0)
    demo.add_argument("--t2starw", action="store_true",
                      help="also write a T2*w-like axial stack (0.5x0.5x5 mm) with its cord mask")
    demo.add_argument("--no-straight-reference", dest="straight_reference",
                      action="store_false",
                      help="skip the unbent noise-free reference images in truth/")
    phantom.add_argument("--pam50", type=Path, default=None,
                         help="folder with PAM50_cord/_csf/_spine/_gm/_wm (0.5 mm); default "
                              "<data>/PAM50 with <data> from SPINAL_BIDSAPP_TEST_DATA")
    phantom.add_argument("--pam50-small", type=Path, default=None,
                         help="folder with PAM50_small_t2 (1x1x2 mm); default <data>/PAM50_small")
    phantom.add_argument("--truth-warp", action="store_true",
                         help="also write the true subject->PAM50 ITK displacement field")
    phantom.add_argument("--fov-discs", type=int, nargs=2, default=(2, 8),
                         metavar=("TOP", "BOTTOM"),
                         help="discs (SCT numbers, 1..21) bounding every field of view; "
                              "default 2 8 (C1/C2 to C7/T1); 1 21 is the whole PAM50 cord, "
                              "C1 to L1/L2, with the conus tip (label 60)")
    return parser


def _default_data_dir() -> Path:
    return data_dir_from_environment(Path(__file__).resolve().parents[3] / "shared" / "data")


def run(args: argparse.Namespace) -> Path:
    """Generate the cohort described by parsed ``args``; returns ``OUT_DIR``."""
    if args.cohort == "demo":
        result = generate_demo_cohort(args.out_dir, n_subjects=args.n_subjects, seed=args.seed,
                                      t1w=args.t1w, straight_reference=args.straight_reference,
                                      t2starw=args.t2starw)
    else:
        top, bottom = args.fov_discs
        if not 1 <= top < bottom <= 21:
            raise UsageError(f"--fov-discs {top} {bottom}: give TOP < BOTTOM within 1..21 "
                             "(SCT disc numbers, e.g. 1 21 for the whole cord)")
        pam50 = args.pam50 if args.pam50 is not None else _default_data_dir() / "PAM50"
        pam50_small = (args.pam50_small if args.pam50_small is not None
                       else _default_data_dir() / "PAM50_small")
        result = generate_phantom_cohort(args.out_dir, pam50_dir=pam50,
                                         pam50_small_dir=pam50_small,
                                         n_subjects=args.n_subjects, seed=args.seed,
                                         t1w=args.t1w, truth_warp=args.truth_warp,
                                         fov_discs=(top, bottom))
    logger.info("%s cohort of %d subjects written to %s in %.1f s", args.cohort,
                len(result.subjects), result.out_dir, result.seconds)
    return result.out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(levelname)s %(name)s: %(message)s")
        out_dir = run(args)
    except SpinalBidsAppError as exc:
        print(f"spinal_bidsapp-synth: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
