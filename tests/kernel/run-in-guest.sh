#!/usr/bin/env bash
# Runs inside the VM that scripts/vm.sh boots: loads the modules the kernel suite needs, then runs
# the whole suite as ONE pytest process (Python with pyroute2 takes seconds to start under
# emulation). Exits with pytest's code.
#
# Select tests with arguments or the environment (vm.sh passes PYTEST_ARGS and ARGS through):
#   bash scripts/vm.sh tests/kernel/run-in-guest.sh -k smoke
#   PYTEST_ARGS="-k 'links and not vlan'" make kernel       make kernel ARGS=-k\ smoke
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

echo "run-in-guest: kernel $(uname -r), $(nproc) vCPUs, python $(command -v python)"
modules=(l2tp_eth l2tp_ip l2tp_ip6 bridge 8021q veth)
missing=()
t0=$EPOCHREALTIME
# One modprobe for all (each process start is slow under emulation); one by one only to name
# the culprits when that fails.
if ! modprobe -a "${modules[@]}"; then
  for module in "${modules[@]}"; do
    modprobe "$module" || missing+=("$module")
  done
fi
if ((${#missing[@]})); then
  echo "run-in-guest: ERROR: modprobe failed for: ${missing[*]} (the suite will fail)" >&2
else
  awk -v t0="$t0" -v t1="$EPOCHREALTIME" -v m="${modules[*]}" \
    'BEGIN { printf "run-in-guest: loaded %s in %.1fs\n", m, t1 - t0 }'
fi

# Shell-style words, so quoted -k expressions survive: PYTEST_ARGS="-k 'a and b'".
eval "extra=(${PYTEST_ARGS:-} ${ARGS:-})"
# No hypothesis plugin: no kernel test uses it, and it fails the session when its database
# directory is unusable (the repository is read-only in the guest).
python -m pytest -p no:cacheprovider -p no:hypothesispytest -o testpaths=tests/kernel "${extra[@]}" "$@"
rc=$?
if ((rc == 0 && ${#missing[@]})); then
  echo "run-in-guest: ERROR: tests passed but modules failed to load: ${missing[*]}" >&2
  rc=1
fi
exit "$rc"
