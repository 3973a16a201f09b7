#!/usr/bin/env bash
# Install the real external tools the `sct` and `minc` engines call, for the integration tier of
# `make test`, from the offline kits in ../shared/tools (Debian + PyPI only, no GitHub):
#   - SCT 7.3 without its deep-learning models (its own Python 3.10 environment), plus two PAM50
#     folders SCT accepts, built from the shared data: $SCT_DIR/data/PAM50 (0.5 mm) and
#     CACHE/PAM50_small (1x1x2 mm, fast);
#   - the seed's MINC template engine (minctracc & co., nist_mni_pipelines), with minc2-simple,
#     scoop and ipl installed into PYTHON, the environment that runs spinal_bidsapp.
#
#   usage: install-real-tools.sh CACHE_DIR PYTHON
#
# Each tool is installed once per CACHE_DIR and reused (a stamp records the kit's checksum);
# writes CACHE_DIR/sct.env and CACHE_DIR/minc.env, the environment lines the tests load. Where
# the kits are absent (SPINAL_BIDSAPP_SHARED_TOOLS, default ../shared/tools), prints why and
# exits 0: the tests that need the tools are then skipped with that reason.
set -euo pipefail
cache=$(mkdir -p "${1:?usage: install-real-tools.sh CACHE_DIR PYTHON}" && cd "$1" && pwd)
python=${2:?usage: install-real-tools.sh CACHE_DIR PYTHON}
repo=$(cd "$(dirname "$0")/.." && pwd)
kits=${SPINAL_BIDSAPP_SHARED_TOOLS:-$repo/../shared/tools}
data=${SPINAL_BIDSAPP_TEST_DATA:-$repo/../shared/data}

if [ ! -d "$kits/sct" ] || [ ! -d "$kits/minc" ]; then
  echo "install-real-tools: no tool kits at $kits; the sct/minc integration tests will be skipped" >&2
  rm -f "$cache/sct.env" "$cache/minc.env"
  exit 0
fi

stamp_of() {  # checksum of a kit folder: a changed kit is installed again
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16)
}

# --- SCT ---------------------------------------------------------------------------------------
sct_stamp=$(stamp_of "$kits/sct")
if [ "$(cat "$cache/sct.stamp" 2>/dev/null)" != "$sct_stamp" ] || [ ! -s "$cache/sct.env" ]; then
  echo "install-real-tools: installing SCT 7.3 into $cache/sct (about 2 minutes; log: $cache/sct-install.log)" >&2
  rm -f "$cache/sct.env" "$cache/sct.stamp"
  if ! bash "$kits/sct/install.sh" "$cache/sct" >"$cache/sct-install.log" 2>&1; then
    echo "install-real-tools: SCT install failed; last lines of $cache/sct-install.log:" >&2
    tail -n 15 "$cache/sct-install.log" >&2
    exit 1
  fi
  sct_py=$cache/sct/venv/bin/python
  "$sct_py" "$kits/sct/make_pam50.py" "$data" "$cache/sct/sct/data/PAM50"
  "$sct_py" "$kits/sct/make_pam50.py" "$data" "$cache/PAM50_small" --small
  grep '^export ' "$cache/sct-install.log" | tail -n 1 >"$cache/sct.env"
  echo "$sct_stamp" >"$cache/sct.stamp"
fi

# --- MINC --------------------------------------------------------------------------------------
# ipl, scoop and minc2-simple go into PYTHON, so a new environment (a fresh venv) needs the kit's
# Python step again: the stamp holds the kit's checksum and that interpreter's path.
minc_stamp="$(stamp_of "$kits/minc") $("$python" -c 'import sys; print(sys.prefix)')"
if [ "$(cat "$cache/minc.stamp" 2>/dev/null)" != "$minc_stamp" ] || [ ! -s "$cache/minc.env" ] \
   || ! "$python" -c 'import ipl.model.generate_nonlinear, scoop, minc2_simple' 2>/dev/null; then
  echo "install-real-tools: building the MINC engine into $cache/minc (about 3 minutes; log: $cache/minc-install.log)" >&2
  rm -f "$cache/minc.env" "$cache/minc.stamp"
  if ! bash "$kits/minc/install.sh" "$cache/minc" "$python" >"$cache/minc-install.log" 2>&1; then
    echo "install-real-tools: MINC build failed; last lines of $cache/minc-install.log:" >&2
    tail -n 15 "$cache/minc-install.log" >&2
    exit 1
  fi
  grep '^export ' "$cache/minc-install.log" | tail -n 1 >"$cache/minc.env"
  echo "$minc_stamp" >"$cache/minc.stamp"
fi
echo "install-real-tools: SCT and MINC ready in $cache" >&2
