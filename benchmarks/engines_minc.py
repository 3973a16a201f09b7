"""Benchmark: the MINC template engine (the seed's ipl/minctracc loop) vs the builtin loop.

Not a test: run by hand with the real MINC tools on ``PATH`` (``make real-tools``); results go
to ``benchmarks/results/engines-minc-<UTC time>.json`` (git-ignored) and a Markdown table on
stdout for ``docs/benchmarks.md``::

    (. .cache/real-tools/minc.env && .venv/bin/python benchmarks/engines_minc.py \\
        --subjects 4 --nprocs 2 --preset fast)

Inputs: the straightened phantom cohort of ``benchmarks/template.py`` (48 x 48 x 64 voxels of
0.5 mm, known true anatomy), written once; both engines build a template of the same files with
the same ``--template-preset`` and symmetry, through the classes the group level uses
(:class:`~spinal_bidsapp.engines.builtin.template.BuiltinTemplateBuilder` with
``preset_options``, :class:`~spinal_bidsapp.engines.minc.MincTemplateBuilder` with
``minc_options``), each in a fresh process with ``nprocs`` workers of one thread. Scores are
those of ``benchmarks/template.py``: correlation with the truth in the cord/CSF region,
sharpness relative to the truth, mean Dice of the subjects' warped cord masks with the template
cord mask, Dice of that mask with the true cord; plus the build wall time.

The subjects' cord masks go through each engine's own final transforms (builtin: its warps;
MINC: ipl's last ``_corr`` transforms, what the MINC engine publishes as its cord mask).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.template import (  # noqa: E402
    AFFINE,
    _load,
    evaluate,
    make_cohort,
    write_record,
)


def run_engine(engine: str, subjects: list[Any], work: Path, preset: Any, symmetric: bool,
               nprocs: int) -> dict:
    """Build one template; returns wall time, template and the warped cord masks (arrays)."""
    shutil.rmtree(work, ignore_errors=True)
    if engine == "minc":
        from spinal_bidsapp.engines.minc import MincTemplateBuilder, minc_options

        builder: Any = MincTemplateBuilder(minc_options(preset, symmetric=symmetric))
    else:
        import ants  # noqa: F401  (import time excluded)

        from spinal_bidsapp.engines.builtin.protocol import preset_options
        from spinal_bidsapp.engines.builtin.template import BuiltinTemplateBuilder

        builder = BuiltinTemplateBuilder(preset_options(preset, symmetric=symmetric))
    started, cpu_before = time.monotonic(), _cpu_s()
    result = builder.build_template(subjects, work_dir=work, nprocs=nprocs)
    wall, cpu = time.monotonic() - started, _cpu_s() - cpu_before
    if engine == "minc":
        masks = [_load(work / "cord" / f"{s.label}_warped.nii.gz") for s in subjects]
    else:
        from spinal_bidsapp.geometry.fields import apply_field
        from spinal_bidsapp.image import load_field

        masks = [apply_field(_load(s.cord_mask), AFFINE, load_field(w.subject_to_template),
                             order=1) for s, w in zip(subjects, result.warps, strict=True)]
    return {"wall_s": wall, "cpu_s": cpu, "template": _load(result.template), "masks": masks,
            "version": builder.info.version, "protocol": dict(result.protocol)}


def _cpu_s() -> float:
    """User + system CPU seconds of this process and its finished children (the worker pool,
    scoop and the MINC programs): a cost figure that a loaded machine does not inflate."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                          resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _child(*args: Any) -> dict:
    os.environ.update({"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "OMP_NUM_THREADS": "1",
                       "OPENBLAS_NUM_THREADS": "1"})
    return run_engine(*args)


def in_fresh_process(*args: Any) -> dict:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_child, *args).result()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--nprocs", type=int, default=2)
    parser.add_argument("--preset", choices=["fast", "seed"], default="fast")
    parser.add_argument("--no-symmetric", dest="symmetric", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-engines-minc")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    if shutil.which("minctracc") is None:
        parser.error("minctracc is not on PATH: run `make real-tools` and source "
                     ".cache/real-tools/minc.env")
    subjects = make_cohort(args.work / "inputs", args.subjects, seed=args.seed)
    runs = {engine: in_fresh_process(engine, subjects, args.work / engine, args.preset,
                                     args.symmetric, args.nprocs)
            for engine in ("builtin", "minc")}
    rows = {}
    for engine, run in runs.items():
        rows[engine] = {"wall_s": run["wall_s"], "cpu_s": run["cpu_s"], "version": run["version"],
                        **evaluate(run["template"], run["masks"])}
    a, b = runs["builtin"]["template"], runs["minc"]["template"]
    agreement = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    write_record(args, "engines-minc", {
        "protocols": {e: r["protocol"] for e, r in runs.items()}, "results": rows,
        "template_correlation_minc_vs_builtin": agreement})
    print("| engine | build wall s | build CPU s | corr. with truth | sharpness / truth | "
          "mean Dice subj. vs tpl mask | Dice tpl mask vs true cord |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
              f"{r['correlation_with_truth']:.4f} | "
              f"{r['sharpness_relative_to_truth']:.3f} | "
              f"{r['mean_dice_subjects_vs_template_mask']:.3f} | "
              f"{r['dice_template_mask_vs_true_cord']:.3f} |")
    print(f"\ncorrelation of the two templates (whole grid): {agreement:.4f}; MINC / builtin: "
          f"wall time {rows['minc']['wall_s'] / rows['builtin']['wall_s']:.1f}x, CPU time "
          f"{rows['minc']['cpu_s'] / rows['builtin']['cpu_s']:.1f}x")


if __name__ == "__main__":
    main()
