"""Profile: where the builtin template loop's CPU time goes on the ``template_engines`` cohort.

Not a test: run by hand (figures in ``docs/benchmarks.md``, #21)::

    .venv/bin/python benchmarks/template_profile.py

1. The loop of ``benchmarks/template_engines.py`` (6 subjects of 48 x 48 x 64 voxels at 0.5 mm,
   seed 0, symmetric, protocol 2 mm x 2 then 1 mm x 2, seed preset settings) in this process
   with ``nprocs=1``, under ``cProfile`` timed with CPU time (``time.process_time``): every
   registration, resampling and file write is then a function call of this process, so the
   table splits the whole cost (a worker pool only moves the same calls into other processes).
2. One registration of subject 0 to the final template at each protocol level, timed alone (CPU,
   best of 3): ours (antsRegistration, as the loop runs it), ours without the cord term, and
   greedy (``picsl-greedy``, the ``template_engines`` schedule and NCC 2x2x2) when installed.
3. What ITK spends writing one displacement field of this grid gzip-compressed, as
   antsRegistration does for its forward and inverse warps (``.nii.gz`` is hard-coded there).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

for _name in ("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_name] = "1"

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.template import make_cohort  # noqa: E402
from benchmarks.template_engines import PROTOCOL, greedy_schedule  # noqa: E402

# (label, function name as cProfile shows it) of the parts reported, cumulative CPU time
PARTS = (
    ("whole build", "build_template"),
    ("antsRegistration (ants.registration)", "registration"),
    ("registration unit minus antsRegistration: read its warp, compose with the warm start, "
     "write ours (_register)", "_register"),
    ("per-registration ledger: hashes, lock, JSON (run_step minus _register)", "run_step"),
    ("resampling: compose + cubic image + linear mask (resample_item)", "resample_item"),
    ("final inverse warps (invert_item)", "invert_item"),
    ("all field inversions (invert_field)", "invert_field"),
    ("averaging and iteration products (_write_average)", "_write_average"),
    ("mean fields (_mean_field)", "_mean_field"),
    ("SHA-256 of files (sha256_file)", "sha256_file"),
    ("gzip compression (zlib compress)", "<method 'compress' of 'zlib.Compress' objects>"),
    ("gzip decompression (zlib decompress)",
     "<method 'decompress' of 'zlib.Decompress' objects>"),
)


def _cumulative(stats: pstats.Stats, name: str) -> float:
    found = [v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
             if k[2] == name and (name != "registration" or "ants" in k[0])]
    return max(found, default=0.0)


def profile_loop(work: Path) -> Path:
    """Run the loop under cProfile (CPU time); print the parts; return the work dir."""
    import ants  # noqa: F401  (import outside the profile, as in template_engines)

    from spinal_bidsapp.engines.builtin import build_template
    from spinal_bidsapp.engines.builtin.protocol import Stage, preset_options

    subjects = make_cohort(work / "inputs", 6, seed=0)
    options = preset_options("seed", symmetric=True,
                             protocol=tuple(Stage(level, n) for level, n in PROTOCOL))
    shutil.rmtree(work / "loop", ignore_errors=True)
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    build_template(subjects, work_dir=work / "loop", options=options, nprocs=1)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = _cumulative(stats, "build_template")
    minus = {"_register": _cumulative(stats, "registration"),
             "run_step": _cumulative(stats, "_register")}
    print("| part | CPU s | share |\n|---|---|---|")
    for label, name in PARTS:
        seconds = _cumulative(stats, name)
        seconds -= minus.get(name, 0.0)
        print(f"| {label} | {seconds:.2f} | {100 * seconds / total:.1f} % |")
    return work / "loop"


def _best_cpu(call: Callable[[], object], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.process_time()
        call()
        times.append(time.process_time() - started)
    return min(times)


def time_registrations(loop: Path, scratch: Path) -> None:
    """One registration per protocol level: ours, ours without the cord term, greedy."""
    import ants

    from spinal_bidsapp.engines.builtin.protocol import (
        Stage,
        level_pyramid,
        preset_options,
        registration_argv,
    )

    options = preset_options("seed", symmetric=True,
                             protocol=tuple(Stage(level, n) for level, n in PROTOCOL))
    last = sorted(loop.glob("iter-*"))[-1]
    fixed, prob = last / "avg.nii.gz", last / "prob.nii.gz"
    inputs = loop / "inputs"
    moving, mask = inputs / "sub-00_image.nii.gz", inputs / "sub-00_cordmask.nii.gz"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        from picsl_greedy import Greedy3D
    except ImportError:
        Greedy3D = None
    print("| one registration, CPU s | ours | ours without cord term | greedy NCC |\n"
          "|---|---|---|---|")
    for level, _ in PROTOCOL:
        pyramid = level_pyramid(level, voxel_mm=0.5, shape=(48, 48, 64), options=options)

        def ours(cords: tuple[Path, Path] | None, pyramid=pyramid) -> float:
            argv = registration_argv(fixed=fixed, moving=moving, out_prefix=scratch / "reg_",
                                     pyramid=pyramid, options=options, initial_warp=None,
                                     cords=cords)
            return _best_cpu(lambda: ants.registration(fixed=argv, moving=None))

        greedy = "not installed"
        if Greedy3D is not None:
            command = (f"-d 3 -threads 1 -i {fixed} {moving} -n {greedy_schedule(level)} "
                       f"-m NCC 2x2x2 -o {scratch / 'greedy_warp.nii.gz'}")
            greedy = f"{_best_cpu(partial(Greedy3D().execute, command)):.3f}"
        print(f"| {level:g} mm level | {ours((prob, mask)):.3f} | {ours(None):.3f} | {greedy} |")
    field = ants.image_read(str(sorted((last / "warps").glob("*.nii"))[0]))
    for suffix in (".nii.gz", ".nii"):
        seconds = _best_cpu(partial(ants.image_write, field, str(scratch / f"field{suffix}")), 5)
        print(f"ITK write of one displacement field as {suffix}: {seconds:.3f} s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "work" / "bench-template-profile")
    args = parser.parse_args()
    loop = profile_loop(args.work)
    time_registrations(loop, args.work / "scratch")


if __name__ == "__main__":
    main()
