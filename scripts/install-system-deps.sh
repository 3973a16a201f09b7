#!/usr/bin/env bash
# Debian packages used by the tests and the demo, installed only where missing (root or sudo):
#   - MINC conversion tools (nii2mnc/mnc2nii) and a headless Chromium to check report pages;
#   - for the distributed-execution tests (`pytest -m cluster`): SLURM (slurmctld, slurmd,
#     sbatch & co.), munge (SLURM's authentication) and an SSH server (scoop starts the workers
#     of a non-local host over SSH). Those tests start their own one-node cluster and sshd in a
#     temporary folder; nothing is started here: the packages' own services are kept from
#     starting during the install (policy-rc.d).
# Without root/sudo or apt-get it prints why and exits 0 (the tests that need a package then skip,
# saying so; under CI they fail).
set -euo pipefail

need=()
for tool in nii2mnc:minc-tools chromium:chromium slurmctld:slurmctld slurmd:slurmd \
            sbatch:slurm-client munged:munge sshd:openssh-server ssh:openssh-client; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${tool%%:*}" ] \
    || need+=("${tool##*:}")
done
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

# Keep the packages' init scripts from starting system daemons (munged, sshd on port 22).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  trap '$SUDO rm -f "$policy"' EXIT
fi
echo "install-system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
