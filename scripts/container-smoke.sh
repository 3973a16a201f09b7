#!/usr/bin/env bash
# Container smoke test: build the Docker image, then run the demo end to end inside it, the way
# users run it: a non-root UID, the input mounted read-only, a read-only root filesystem, and no
# network (the SCT models and PAM50 must already be in the image).
#
#   scripts/container-smoke.sh            # needs Docker; used by .github/workflows/container.yml
#
# Environment: IMAGE (tag to build, default spinal_bidsapp:smoke), SKIP_BUILD=1 to reuse IMAGE,
# N_SUBJECTS (default 4), NPROCS (default 2), KEEP=1 to keep the work folder, PARTICIPANT_ARGS /
# GROUP_ARGS (extra options, e.g. "--engine builtin"; default: none, so the engines are chosen as
# users get them, SCT and MINC).
# The development machines have no Docker engine: this script runs only in the container CI.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE="${IMAGE:-spinal_bidsapp:smoke}"
N_SUBJECTS="${N_SUBJECTS:-4}"
NPROCS="${NPROCS:-2}"

if [ "${SKIP_BUILD:-0}" != "1" ]; then
    docker build \
        --build-arg VCS_REF="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
        --build-arg BUILD_DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
        --tag "$IMAGE" .
fi

work="$(mktemp -d)"
if [ "${KEEP:-0}" != "1" ]; then
    # Outputs belong to this UID (the containers run as it), so the cleanup needs no root.
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/demo" "$work/out"

run() {
    docker run --rm --network none --read-only \
        --tmpfs /tmp:exec --tmpfs /home/spinal \
        --user "$(id -u):$(id -g)" "$@"
}

echo "== demo dataset ($N_SUBJECTS subjects)"
run -v "$work/demo:/demo" --entrypoint spinal_bidsapp-synth "$IMAGE" \
    demo /demo --n-subjects "$N_SUBJECTS" --seed 0

echo "== participant level"
run -v "$work/demo/bids:/data:ro" -v "$work/out:/out" "$IMAGE" \
    /data /out participant --nprocs "$NPROCS" ${PARTICIPANT_ARGS:-}

echo "== group level"
run -v "$work/demo/bids:/data:ro" -v "$work/out:/out" "$IMAGE" \
    /data /out group --nprocs "$NPROCS" --template-resolution 1 --template-preset fast \
    --skip-bids-validation ${GROUP_ARGS:-}

echo "== checks"
python3 - "$work/out" "$N_SUBJECTS" <<'PY'
import json
import sys
from pathlib import Path

out, n_subjects = Path(sys.argv[1]), int(sys.argv[2])
description = json.loads((out / "dataset_description.json").read_text())
app = description["GeneratedBy"][0]
assert app["Name"] == "spinal_bidsapp", app
assert app.get("Container", {}).get("Type") == "docker", f"no container provenance: {app}"
subjects = sorted(p.name for p in out.glob("sub-*") if p.is_dir())
assert len(subjects) == n_subjects, f"{len(subjects)} subject folders for {n_subjects} subjects"
masks = [out / s / "anat" / f"{s}_label-SC_mask.nii.gz" for s in subjects]
missing = [str(m) for m in masks if not m.is_file()]
assert not missing, f"cord masks missing: {missing}"
templates = sorted(out.glob("tpl-*/tpl-*_T2w.nii.gz"))
assert templates, "no group template written"
engines = [entry["Name"] for entry in description["GeneratedBy"][1:]]
print(f"ok: {len(masks)} subjects, template {templates[0].name}, engines {engines}, "
      f"container {app['Container']}")
PY
