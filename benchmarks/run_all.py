"""Every benchmark at its default size, one after the other (``make benchmark``).

Each script writes its JSON under ``benchmarks/results/`` and, where it has ``--write-docs``, its
section of ``docs/benchmarks.md``. On the 2-core development machine the whole set takes about
15-20 minutes; ``--full`` passes the larger sizes (8 phantoms for the participant benchmark).
SCT's straightening runs beside ours only when ``--sct-src`` points at an SCT checkout (see the
Straightening section of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--sct-src", type=Path, default=None)
    parser.add_argument("--sct-deps", type=Path, default=None)
    args = parser.parse_args(argv)
    straighten = ["benchmarks/straighten.py", "--write-docs"]
    if args.sct_src is not None:
        straighten += ["--sct-src", str(args.sct_src)]
        if args.sct_deps is not None:
            straighten += ["--sct-deps", str(args.sct_deps)]
    runs = [
        straighten,
        ["benchmarks/template.py"],
        ["benchmarks/segmentation.py"],
        ["benchmarks/participant.py", "--write-docs"] + (["--full"] if args.full else []),
        ["benchmarks/group.py", "--n-subjects", "8", "--write-docs"],
        ["benchmarks/warps.py", "--write-docs"],
    ]
    failed = []
    for command in runs:
        start = time.perf_counter()
        print(f"== {' '.join(command)}", flush=True)
        code = subprocess.run([sys.executable, *command], cwd=REPO, check=False).returncode
        print(f"== exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(command[0])
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
