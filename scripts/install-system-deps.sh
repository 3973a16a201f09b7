#!/usr/bin/env bash
# Debian packages used by the tests and the demo: MINC conversion tools (nii2mnc/mnc2nii) and a
# headless Chromium to check report pages. Installs only what is missing; needs root or sudo.
set -euo pipefail

need=()
command -v nii2mnc >/dev/null 2>&1 || need+=(minc-tools)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install-system-deps: cannot install ${need[*]} (not root, no sudo); tests that need them will be skipped" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: no apt-get; install ${need[*]} with your package manager" >&2
  exit 0
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
