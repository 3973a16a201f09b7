"""Generate, or reuse, a synthetic cohort with a fixed seed for the benchmark scripts.

Usage from another benchmark::

    from benchmarks.cohort import ensure_cohort
    cohort = ensure_cohort(Path("benchmarks/results/cohorts/demo"), kind="demo")
    for truth in cohort.truths: ...

or from the shell: ``python -m benchmarks.cohort demo benchmarks/results/cohorts/demo``.
A folder is reused when its ``truth/cohort.json`` records the same kind, seed, subject count and
options, so benchmark scripts can call :func:`ensure_cohort` freely.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from spinal_bidsapp.synth import (
    SubjectTruth,
    generate_demo_cohort,
    generate_phantom_cohort,
    load_cohort_truth,
)

BENCHMARK_SEED = 0
DEFAULT_SUBJECTS = {"demo": 6, "phantom": 8}
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Cohort:
    """A generated cohort: its BIDS folder, the subject truths, and whether it was (re)built."""

    out_dir: Path
    bids_dir: Path
    truths: tuple[SubjectTruth, ...]
    generated: bool
    seconds: float


def ensure_cohort(out_dir: Path, *, kind: Literal["demo", "phantom"] = "demo",
                  n_subjects: int | None = None, seed: int = BENCHMARK_SEED, t1w: bool = False,
                  data_dir: Path | None = None, truth_warp: bool = False) -> Cohort:
    """Return the cohort in ``out_dir``, generating it first unless an identical one is there.

    ``data_dir`` holds ``PAM50/`` and ``PAM50_small/`` (phantoms only); default: the shared data
    (``SPINAL_BIDSAPP_TEST_DATA``, else ``../shared/data`` next to the repository).
    """
    out_dir = Path(out_dir).absolute()
    n = DEFAULT_SUBJECTS[kind] if n_subjects is None else n_subjects
    options: dict[str, object] = {"t1w": t1w}
    if kind == "phantom":
        options["truth_warp"] = truth_warp
    if _matches(out_dir, kind=kind, n_subjects=n, seed=seed, options=options):
        return Cohort(out_dir=out_dir, bids_dir=out_dir / "bids",
                      truths=tuple(load_cohort_truth(out_dir)), generated=False, seconds=0.0)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    start = time.perf_counter()
    if kind == "demo":
        generate_demo_cohort(out_dir, n_subjects=n, seed=seed, t1w=t1w)
    else:
        data_dir = default_data_dir() if data_dir is None else data_dir
        generate_phantom_cohort(out_dir, pam50_dir=data_dir / "PAM50",
                                pam50_small_dir=data_dir / "PAM50_small", n_subjects=n,
                                seed=seed, t1w=t1w, truth_warp=truth_warp)
    return Cohort(out_dir=out_dir, bids_dir=out_dir / "bids",
                  truths=tuple(load_cohort_truth(out_dir)), generated=True,
                  seconds=time.perf_counter() - start)


def default_data_dir() -> Path:
    from spinal_bidsapp.config import data_dir_from_environment

    return data_dir_from_environment(REPO.parent / "shared" / "data")


def _matches(out_dir: Path, *, kind: str, n_subjects: int, seed: int,
             options: dict[str, object]) -> bool:
    index_path = out_dir / "truth" / "cohort.json"
    if not index_path.is_file():
        return False
    index = json.loads(index_path.read_text(encoding="utf-8"))
    recorded = {key: index["options"].get(key) for key in options}
    return (index.get("cohort") == kind and index.get("seed") == seed
            and len(index.get("subjects", [])) == n_subjects and recorded == options
            and all((out_dir / rel).is_file() for rel in index.get("truth_files", [])))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cohort",
                                     description="generate or reuse a benchmark cohort")
    parser.add_argument("kind", choices=sorted(DEFAULT_SUBJECTS))
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-subjects", type=int, default=None)
    parser.add_argument("--seed", type=int, default=BENCHMARK_SEED)
    parser.add_argument("--t1w", action="store_true")
    parser.add_argument("--truth-warp", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder with PAM50/ and PAM50_small/ (phantoms)")
    args = parser.parse_args(argv)
    cohort = ensure_cohort(args.out_dir, kind=args.kind, n_subjects=args.n_subjects,
                           seed=args.seed, t1w=args.t1w, data_dir=args.data_dir,
                           truth_warp=args.truth_warp)
    state = f"generated in {cohort.seconds:.1f} s" if cohort.generated else "reused"
    print(f"{args.kind} cohort, {len(cohort.truths)} subjects, {state}: {cohort.bids_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
