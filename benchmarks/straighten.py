"""Straightening benchmark: accuracy, disc landing, wall time and peak memory (not a test).

Usage::

    .venv/bin/python benchmarks/straighten.py [--sct-src /tmp/sct-src --sct-deps /tmp/sct-deps]
        [--data ../shared/data] [--repeats 3] [--write-docs]

Every case runs in a fresh worker process per method (so peak RSS is per method and per case):
one untimed warm-up run, then ``--repeats`` timed runs (median reported). Accuracy is scored
afterwards, identically for both methods, from the fields each method wrote: straightness with
:func:`measure_straightness` on ``warp_curve2straight``, disc errors with
:func:`measure_disc_errors` (along our own centerlines, used as a common ruler).

SCT (optional) is imported from a source checkout given by ``--sct-src`` (never vendored), with
its ANTs warp-application call replaced at run time by a scipy ``map_coordinates`` applier.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "geometry"))  # the tube phantom generator

from spinal_bidsapp.geometry.centerline import centerline_from_mask  # noqa: E402
from spinal_bidsapp.geometry.discs import discs_from_label_array, identity_arc_map  # noqa: E402
from spinal_bidsapp.geometry.fields import apply_field  # noqa: E402
from spinal_bidsapp.geometry.metrics import (  # noqa: E402
    measure_disc_errors,
    measure_straightness,
)
from spinal_bidsapp.geometry.straighten import (  # noqa: E402
    Straightening,
    straighten_to_centerline,
    straighten_to_line,
)
from spinal_bidsapp.image import (  # noqa: E402
    Volume,
    load_field,
    load_mask,
    load_volume,
    save_field,
    save_volume,
)

PHANTOMS = [("cervical", 0.5, 0), ("cervical", 1.0, 1), ("sinusoid", 1.0, 2)]
REFERENCE_SCT = {"errsm30 rms/max mm": "0.22 / 0.37", "errsm30 time s": 1.9,
                 "curved phantom time s": 13.0, "disc 3 error mm": 14.0}


def _prepare_cases(data: Path, work: Path) -> list[dict]:
    from geometry_phantoms import make_tube_phantom

    cases = []
    labels = data / "bids-real/derivatives/labels/sub-errsm30/anat"
    if labels.is_dir():
        base = {"image": str(data / "bids-real/sub-errsm30/anat/sub-errsm30_T2w.nii.gz"),
                "seg": str(labels / "sub-errsm30_T2w_label-SC_mask.nii.gz")}
        base["metric_mask"] = base["seg"]
        cases.append({"name": "sub-errsm30 T2w (60x55x52, 1 mm, PSR)", **base})
        cases.append({"name": "sub-errsm30 T2w -> PAM50_small, discs 4-6", **base,
                      "dest": str(data / "PAM50_small/PAM50_small_cord.nii.gz"),
                      "discs_in": str(labels / "sub-errsm30_T2w_labels-disc.nii.gz"),
                      "discs_dest": str(data / "PAM50_small/PAM50_small_label_disc.nii.gz")})
    for kind, voxel, seed in PHANTOMS:
        ph = make_tube_phantom(kind, voxel_mm=(voxel, voxel, voxel), seed=seed,
                               axcodes=("P", "S", "R"))
        stem = work / f"{kind}_{voxel}"
        save_volume(ph.image, Path(f"{stem}_T2w.nii.gz"))
        save_volume(ph.mask, Path(f"{stem}_seg.nii.gz"))
        save_volume(ph.soft_mask, Path(f"{stem}_softseg.nii.gz"))
        shape = "x".join(str(n) for n in ph.mask.shape)
        cases.append({"name": f"{kind} phantom ({shape}, {voxel} mm, seed {seed})",
                      "image": f"{stem}_T2w.nii.gz", "seg": f"{stem}_seg.nii.gz",
                      "metric_mask": f"{stem}_softseg.nii.gz",
                      "binary_mask": f"{stem}_seg.nii.gz"})
    return cases


def _run_ours(case: dict, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    image = load_volume(Path(case["image"]))
    seg = load_volume(Path(case["seg"]))
    cl = centerline_from_mask(seg.data, seg.affine)
    t1 = time.perf_counter()
    if "dest" in case:
        dest = load_volume(Path(case["dest"]))
        dcl = centerline_from_mask(dest.data, dest.affine)
        d_in, d_dest = load_mask(Path(case["discs_in"])), load_mask(Path(case["discs_dest"]))
        res = straighten_to_centerline(
            cl, dcl, image.shape, image.affine, dest.shape, dest.affine,
            input_discs=discs_from_label_array(d_in.data, d_in.affine),
            dest_discs=discs_from_label_array(d_dest.data, d_dest.affine))
    else:
        res = straighten_to_line(cl, image.shape, image.affine)
    t2 = time.perf_counter()
    straight = apply_field(image.data, image.affine, res.curve_to_straight, order=3)
    save_volume(Volume(straight, res.curve_to_straight.affine), out / "image_straight.nii.gz")
    save_field(res.curve_to_straight, out / "warp_curve2straight.nii.gz")
    save_field(res.straight_to_curve, out / "warp_straight2curve.nii.gz")
    t3 = time.perf_counter()
    n_vox = int(np.prod(res.curve_to_straight.shape) + np.prod(image.shape))
    return {"total_s": t3 - t0, "centerline_s": t1 - t0, "fields_s": t2 - t1,
            "apply_write_s": t3 - t2, "field_voxels": n_vox,
            "us_per_voxel_per_field": (t2 - t1) / n_vox * 1e6}


def _worker(method: str, case: dict, repeats: int, sct_src: str | None,
            sct_deps: str | None) -> dict:
    out_root = Path(tempfile.mkdtemp(prefix=f"bench-{method}-"))
    if method == "sct":
        from _sct_baseline import binary_copy, import_sct, run_sct_straightening

        mod = import_sct(Path(sct_src or ""), Path(sct_deps) if sct_deps else None)
        seg = binary_copy(Path(case["seg"]), out_root / "seg_bin.nii.gz")

        def run(out: Path) -> dict[str, float]:
            t0 = time.perf_counter()
            run_sct_straightening(mod, Path(case["image"]), seg, out,
                                  dest=Path(case["dest"]) if "dest" in case else None,
                                  discs_in=Path(case["discs_in"]) if "dest" in case else None,
                                  discs_dest=Path(case["discs_dest"]) if "dest" in case else None)
            return {"total_s": time.perf_counter() - t0}
    else:
        def run(out: Path) -> dict[str, float]:
            return _run_ours(case, out)
    out = out_root / "out"
    out.mkdir()
    run(out)  # warm-up, untimed
    load_before = os.getloadavg()[0]
    runs = [run(out) for _ in range(repeats)]
    summary: dict = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    summary["total_s_all_runs"] = [r["total_s"] for r in runs]
    summary["load_avg_1min"] = [load_before, os.getloadavg()[0]]
    summary["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()  # one more, untimed run: peak of Python/numpy allocations
    run(out)
    summary["traced_peak_mb"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    summary["out_dir"] = str(out)
    return summary


def _score(case: dict, out_dir: Path) -> dict:
    c2s = load_field(out_dir / "warp_curve2straight.nii.gz")
    s2c = load_field(out_dir / "warp_straight2curve.nii.gz")
    mask = load_volume(Path(case["metric_mask"]))
    metric = measure_straightness(mask.data, mask.affine, c2s)
    scores: dict = {"rms_mm": metric.rms_mm, "max_mm": metric.max_mm, "slices": metric.n_slices}
    if "binary_mask" in case:
        binary = load_volume(Path(case["binary_mask"]))
        bmetric = measure_straightness(binary.data, binary.affine, c2s)
        scores.update(binary_rms_mm=bmetric.rms_mm, binary_max_mm=bmetric.max_mm)
    if "dest" in case:
        seg, dest = load_volume(Path(case["seg"])), load_volume(Path(case["dest"]))
        d_in, d_dest = load_mask(Path(case["discs_in"])), load_mask(Path(case["discs_dest"]))
        ruler = Straightening(curve_to_straight=c2s, straight_to_curve=s2c,
                              curved=centerline_from_mask(seg.data, seg.affine),
                              straight=centerline_from_mask(dest.data, dest.affine),
                              arc_map=identity_arc_map())
        err = measure_disc_errors(ruler, discs_from_label_array(d_in.data, d_in.affine),
                                  discs_from_label_array(d_dest.data, d_dest.affine))
        scores["disc_errors_mm"] = {
            int(v): {"input_to_dest": float(f), "dest_to_input": float(b)}
            for v, f, b in zip(err.values, err.forward_mm, err.backward_mm, strict=True)}
        scores["disc_max_abs_mm"] = float(max(np.abs(err.forward_mm).max(),
                                              np.abs(err.backward_mm).max()))
    return scores


def _spawn(method: str, case: dict, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
           "--case", json.dumps(case), "--repeats", str(args.repeats)]
    if args.sct_src:
        cmd += ["--sct-src", str(args.sct_src)]
    if args.sct_deps:
        cmd += ["--sct-deps", str(args.sct_deps)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        return {"error": " | ".join(tail) or f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(value: object, digits: int = 2) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return "-" if value is None else str(value)


def _table(results: list[dict]) -> str:
    rows = ["| case | method | straightness RMS / max (mm) | binary-mask RMS / max (mm) | "
            "disc error max abs (mm) | wall time median (best) (s) | fields (us/voxel/field) | "
            "peak traced / RSS (MB) |",
            "|---|---|---|---|---|---|---|---|"]
    for res in results:
        for method in ("ours", "sct"):
            r = res.get(method)
            if r is None:
                continue
            if "error" in r:
                rows.append(f"| {res['case']} | {method} | not run: {r['error'][:120]} "
                            "| | | | | |")
                continue
            binary = (f"{_fmt(r.get('binary_rms_mm'), 3)} / {_fmt(r.get('binary_max_mm'), 3)}"
                      if "binary_rms_mm" in r else "-")
            rows.append(
                f"| {res['case']} | {method} | {_fmt(r['rms_mm'], 3)} / {_fmt(r['max_mm'], 3)} "
                f"| {binary} | {_fmt(r.get('disc_max_abs_mm'), 3)} | {_fmt(r['total_s'])} "
                f"({_fmt(min(r['total_s_all_runs']))}) "
                f"| {_fmt(r.get('us_per_voxel_per_field'), 3)} "
                f"| {_fmt(r['traced_peak_mb'], 0)} / {_fmt(r['peak_rss_mb'], 0)} |")
    return "\n".join(rows)


def _write_docs(text: str) -> None:
    path = REPO / "docs" / "benchmarks.md"
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    start = current.find("## Straightening")
    if start < 0:
        new = current.rstrip("\n") + "\n\n" + text
    else:
        nxt = current.find("\n## ", start + 3)
        rest = "\n" + current[nxt + 1:] if nxt >= 0 else ""
        new = current[:start] + text.rstrip("\n") + "\n" + rest
    path.write_text(new.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get(
        "SPINAL_BIDSAPP_TEST_DATA", str(REPO.parent / "shared" / "data"))))
    parser.add_argument("--sct-src", type=Path, default=None)
    parser.add_argument("--sct-deps", type=Path, default=None,
                        help="folder with SCT's small pure-Python deps (pip install --target)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/straighten.json")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(args.worker, json.loads(args.case), args.repeats,
                         str(args.sct_src) if args.sct_src else None,
                         str(args.sct_deps) if args.sct_deps else None)
        print(json.dumps(result))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-straighten-"))
    cases = _prepare_cases(args.data, work)
    results = []
    for case in cases:
        entry: dict = {"case": case["name"]}
        methods = ["ours"] + (["sct"] if args.sct_src else [])
        for method in methods:
            run = _spawn(method, case, args)
            if "error" not in run:
                run.update(_score(case, Path(run["out_dir"])))
            entry[method] = run
        results.append(entry)
        print(json.dumps(entry), flush=True)
    sct_status = ("not requested (no --sct-src)" if not args.sct_src else
                  "ok" if all("error" not in r.get("sct", {}) for r in results) else
                  "failed on some cases (see table)")
    report = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "repeats": args.repeats, "sct": sct_status,
              "reference_figures_from_issue_not_remeasured": REFERENCE_SCT,
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    table = _table(results)
    print(table)
    if args.write_docs:
        _write_docs(_docs_section(report, table, argv))
    return 0


_NOTES = """\
How to read the table:

- **Straightness**: `measure_straightness` applied to each method's own
  `warp_curve2straight` (cord mask resampled with linear interpolation, threshold 0.5, centroid of
  every straight slice, 2 slices dropped at each end, distance to the best-fit 3-D line). For the
  phantoms the mask is the partial-volume (soft) mask; the *binary-mask* column scores the same
  fields with the binary voxel-centre mask, whose quantisation alone gives about 0.22-0.24 mm
  RMS at 1 mm even with the exact analytic centerline (so that column measures the mask, not the
  straightening). Targets: sub-errsm30 <= 0.22 / 0.37 mm; curved phantoms <= 0.15 / 0.45 mm.
- **Disc error**: along-cord landing error of the manual discs 4, 5, 6 (C3/C4 to C5/C6) in both
  directions (input -> template through `warp_straight2curve`, template -> input through
  `warp_curve2straight`), largest absolute value. SCT's error is disc 4 mapped into the template
  (input -> template direction): the subject's top disc is 4 and PAM50_small's is 2, and SCT's
  look-up lands the subject's disc 4 16 mm rostral of the template's disc 4, near its disc 3
  (18 mm above). (The issue's 14 mm was the same effect on disc 3, when the shared file still
  held the values 3-5, one level too high; see the disc-labelling section.)
- **Wall time**: image in -> both fields, straightened image (cubic B-spline) and files out.
  SCT's `SpinalCordStraightener.straighten()` (CLI defaults: nurbs centerline, smooth 10,
  xy-size 35) ran from source with its ANTs `sct_apply_transfo` call replaced at run time by the
  same scipy `map_coordinates` applier we use, so warp application and gzip writing cost the
  same for both; the difference is the field computation and SCT's per-slice overheads.
  The machine is shared with other jobs: the 1-minute load averages are in the JSON.
- **Reference figures from the issue, not re-measured**: SCT 0.22 / 0.37 mm on sub-errsm30,
  1.9 s on sub-errsm30, 13 s on "the curved phantom", 14 mm disc-3 error. The SCT rows above are
  our own re-measurement on this machine.

SCT setup used (outside the repository, nothing of it is committed): the SCT 7.3 source tree of
the real-tools install (`scripts/install-real-tools.sh`, here `/work/tools-cache/sct/sct`),
imported into our venv; its three small pure-Python deps missing there installed with
`.venv/bin/python -m pip install --no-deps --target /tmp/i17/sct-deps transforms3d portalocker
wquantiles`. (Before the sub-errsm30 disc correction the table was measured with SCT source
3b3c5b22, 7.4.dev0, on a less loaded machine.)
"""


def _docs_section(report: dict, table: str, argv: list[str] | None) -> str:
    cmd = " ".join(["benchmarks/straighten.py", *(argv if argv is not None else sys.argv[1:])])
    machine = report["machine"]
    return "\n".join([
        "## Straightening", "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Python {machine['python']}, "
        f"{machine['platform']}. Median of {report['repeats']} timed runs after one warm-up, "
        "each method and case in its own worker process. Peak traced = largest Python/numpy "
        "allocation total (tracemalloc, one extra run); peak RSS includes the interpreter and "
        "imports. SCT status: " + report["sct"] + ".", "",
        table, "",
        _NOTES,
        "Reproduce: `.venv/bin/python " + cmd + "` (JSON in `benchmarks/results/straighten.json`)",
        ""])


if __name__ == "__main__":
    sys.exit(main())
