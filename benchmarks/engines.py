"""Engines side by side on the same inputs: the SCT engine against the builtin one.

Usage::

    SPINAL_BIDSAPP_REAL_TOOLS=.cache/real-tools .venv/bin/python benchmarks/engines.py \\
        [--data ../shared/data] [--template-dir DIR] [--work DIR] [--write-docs]

SCT section (this file): ``spinal_bidsapp participant --engine builtin`` and ``--engine sct``
on sub-errsm30 T2w (manual cord mask and discs, so both engines register the very same labels),
in one run, each in its own process, with the real SCT 7.3 of
``$SPINAL_BIDSAPP_REAL_TOOLS/sct.env`` (``make real-tools``; without its deep-learning models,
which no step needs with manual labels).
Template: ``PAM50_small`` in SCT's layout (``$SPINAL_BIDSAPP_REAL_TOOLS/PAM50_small``), so that
``sct_register_to_template`` takes minutes, not tens of minutes.

Scores, from the files each run wrote (the same scorer for both, ``benchmarks.participant``):

* registration: cord Dice in native space (PAM50 cord carried onto the subject vs the manual
  mask) and in template space (subject cord vs PAM50 cord on the slices the subject covers),
  disc landing both ways (subject discs into PAM50 vs PAM50's; PAM50 discs back vs the
  subject's). A disc whose point falls where a warp has no value (ANTs writes float32-max
  there) is reported as "no value", not as a distance;
* CSA per vertebral level: ours (``desc-cord_morphometrics.json``) against the real
  ``sct_process_segmentation -perlevel 1 -vert 1:30 -discfile`` on the same mask and discs;
  and CSA in PAM50 dimensions, the builtin interpolation vs SCT's ``-normalize-PAM50 1`` (what
  each engine's ``csa_pam50`` step wrote);
* wall time and peak RSS (process and children) of each participant run.

MINC section: ``benchmarks/engines_minc.py`` (the group template engines); kept separate so each
half runs on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.participant import run_worker, score_registration  # noqa: E402
from benchmarks.real_tools import tool_env  # noqa: E402
from spinal_bidsapp.engines.registration import mm_or_no_mapping  # noqa: E402
from spinal_bidsapp.geometry.discs import discs_from_label_array  # noqa: E402
from spinal_bidsapp.image import load_mask  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SUBJECT = "errsm30"


def real_tools_env() -> dict[str, str]:
    """This process's environment plus ``$SPINAL_BIDSAPP_REAL_TOOLS/sct.env``."""
    root = Path(os.environ.get("SPINAL_BIDSAPP_REAL_TOOLS", REPO / ".cache" / "real-tools"))
    env_file = root / "sct.env"
    if not env_file.is_file():
        raise SystemExit(f"{env_file} not found: run `make real-tools` or set "
                         "SPINAL_BIDSAPP_REAL_TOOLS")
    return tool_env(env_file)


def subject_copy(data: Path, root: Path) -> Path:
    """sub-errsm30 alone (with its labels) as a BIDS tree of links."""
    src, bids = data / "bids-real", root / "bids"
    shutil.rmtree(bids, ignore_errors=True)
    for rel in ("dataset_description.json", "README", f"sub-{SUBJECT}",
                f"derivatives/labels/sub-{SUBJECT}",
                "derivatives/labels/dataset_description.json"):
        target = bids / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (src / rel).is_dir():
            shutil.copytree(src / rel, target, copy_function=os.symlink)
        else:
            target.symlink_to(src / rel)
    (bids / "participants.tsv").write_text(f"participant_id\nsub-{SUBJECT}\n")
    return bids


def _clean(errors: dict) -> dict:
    return {str(v): {k: mm_or_no_mapping(e) for k, e in d.items()}
            for v, d in errors.items()}


def sct_csa_per_level(env: dict[str, str], cord: Path, discs: Path, work: Path) -> dict:
    """Real ``sct_process_segmentation -perlevel`` on our cord mask and disc labels."""
    from spinal_bidsapp.engines.sct.outputs import read_morphometrics_csv

    csv = work / "sct_perlevel.csv"
    subprocess.run(["sct_process_segmentation", "-i", str(cord), "-discfile", str(discs), "-o",
                    str(csv), "-vert", "1:30", "-perlevel", "1"], env=env, cwd=work, check=True,
                   capture_output=True, timeout=1800)
    return {":".join(map(str, row.vertebral_levels)): round(row.area_mm2, 2)
            for row in read_morphometrics_csv(csv) if row.area_mm2 is not None}


def bench_sct(data: Path, work: Path, template_dir: Path) -> dict:
    env = real_tools_env()
    bids = subject_copy(data, work)
    labels = bids / "derivatives" / "labels" / f"sub-{SUBJECT}" / "anat"
    disc_img = load_mask(labels / f"sub-{SUBJECT}_T2w_labels-disc.nii.gz")
    subject_discs = discs_from_label_array(disc_img.data, disc_img.affine)
    tpl_discs = load_mask(template_dir / "template" / "PAM50_label_disc.nii.gz")
    template_points = discs_from_label_array(tpl_discs.data, tpl_discs.affine)
    saved = dict(os.environ)
    os.environ.update(env)  # run_worker's child inherits it: SCT on PATH for --engine sct
    rows: dict[str, dict] = {}
    try:
        for engine in ("builtin", "sct"):
            out = work / f"out-{engine}"
            shutil.rmtree(out, ignore_errors=True)
            run = run_worker([str(bids), str(out), "participant", "--engine", engine,
                              "--template-dir", str(template_dir), "--nprocs", "1",
                              "--omp-nthreads", "1", "--skip-bids-validation", "-w",
                              str(work / f"work-{engine}")])
            scores = score_registration(out, SUBJECT, template_dir, subject_discs,
                                        template_points,
                                        labels / f"sub-{SUBJECT}_T2w_label-SC_mask.nii.gz")
            anat = out / f"sub-{SUBJECT}" / "anat"
            morph = json.loads((anat / f"sub-{SUBJECT}_desc-cord_morphometrics.json")
                               .read_text())
            pam50 = json.loads((anat / f"sub-{SUBJECT}_space-PAM50_desc-cord_morphometrics"
                                ".json").read_text())
            metrics = json.loads((work / f"work-{engine}" / f"sub-{SUBJECT}" / "register"
                                  / "registration_metrics.json").read_text())
            rows[engine] = {
                "wall_s": round(run["wall_s"], 1), "peak_rss_mb": round(run["peak_rss_mb"]),
                "registration_method": metrics.get("method", "builtin"),
                "cord_dice_native": round(scores["cord_dice_native"], 3),
                "cord_dice_template": round(scores["cord_dice_template"], 3),
                "disc_errors_mm": _clean(scores["disc_errors"]),
                "csa_per_level_mm2": {str(e["level"]): round(e["csa_mean_mm2"], 2)
                                      for e in morph["levels"]},
                "csa_pam50_method": pam50["method"],
                "csa_pam50_per_level_mm2": {str(e["level"]): round(e["csa_mean_mm2"], 2)
                                            for e in pam50["levels"]},
            }
        anat = work / "out-builtin" / f"sub-{SUBJECT}" / "anat"
        sct_csa = sct_csa_per_level(env, anat / f"sub-{SUBJECT}_label-SC_mask.nii.gz",
                                    anat / f"sub-{SUBJECT}_desc-discs_dseg.nii.gz", work)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {"subject": f"sub-{SUBJECT}", "template": str(template_dir), "engines": rows,
            "sct_process_segmentation_perlevel_mm2": sct_csa}


def _disc_cell(errors: dict, disc: str, way: str) -> str:
    value = errors.get(disc, {}).get(way)
    return "no value" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    rows = result["engines"]
    discs = sorted({d for r in rows.values() for d in r["disc_errors_mm"]}, key=int)
    lines = ["| | builtin | SCT 7.3 |", "|---|---|---|"]
    lines.append("| registration | " + " | ".join(r["registration_method"]
                                                  for r in rows.values()) + " |")
    for key, name in (("cord_dice_native", "cord Dice, native space"),
                      ("cord_dice_template", "cord Dice, PAM50 space")):
        lines.append(f"| {name} | " + " | ".join(f"{r[key]:.3f}" for r in rows.values()) + " |")
    for disc in discs:
        for way, name in (("to_template_mm", "into PAM50"), ("to_anat_mm", "back to native")):
            lines.append(f"| disc {disc} landing {name} (mm) | " + " | ".join(
                _disc_cell(r["disc_errors_mm"], disc, way) for r in rows.values()) + " |")
    lines.append("| wall time (s) | " + " | ".join(f"{r['wall_s']:.0f}" for r in rows.values())
                 + " |")
    lines.append("| peak RSS (MB) | " + " | ".join(f"{r['peak_rss_mb']}" for r in rows.values())
                 + " |")
    lines += ["", "| level | CSA, ours (mm²) | real `sct_process_segmentation -perlevel` (mm²) | "
              "PAM50 dimensions, builtin (mm²) | PAM50 dimensions, SCT `-normalize-PAM50` (mm²) |",
              "|---|---|---|---|---|"]
    ours = rows["builtin"]["csa_per_level_mm2"]
    ref = result["sct_process_segmentation_perlevel_mm2"]
    pam_b, pam_s = (rows["builtin"]["csa_pam50_per_level_mm2"],
                    rows["sct"]["csa_pam50_per_level_mm2"])
    for level in sorted({*ours, *ref, *pam_b, *pam_s}, key=lambda v: int(v.split(":")[0])):
        cells = [ours.get(level), ref.get(level), pam_b.get(level), pam_s.get(level)]
        lines.append(f"| {level} | " + " | ".join("-" if c is None else f"{c:.2f}"
                                                  for c in cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--template-dir", type=Path, default=None,
                        help="PAM50 in SCT's layout (default: $SPINAL_BIDSAPP_REAL_TOOLS/"
                             "PAM50_small)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--markdown-only", action="store_true",
                        help="print the tables of the last results JSON, run nothing")
    args = parser.parse_args()
    if args.markdown_only:
        print(markdown(json.loads((RESULTS / "engines_sct.json").read_text())))
        return
    real_tools = Path(os.environ.get("SPINAL_BIDSAPP_REAL_TOOLS", REPO / ".cache" / "real-tools"))
    template_dir = args.template_dir or real_tools / "PAM50_small"
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    result = bench_sct(args.data.resolve(), work.resolve(), template_dir.resolve())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "engines_sct.json").write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
