#!/usr/bin/env bash
# Runs inside the VM (scripts/vm.sh): the bridged sessions' kernel cost alone (tests/bench/linkcost.py).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
for m in l2tp_eth l2tp_ip l2tp_ip6; do modprobe "$m"; done
exec python tests/bench/linkcost.py "$@"
