#!/usr/bin/env bash
# Runs inside the VM (scripts/vm.sh): the benchmarks, all in this one guest, so every ratio
# compares runs on the same kernel and the same emulated CPUs. Prints BENCHMARKS.md's body
# between markers; `make bench` writes it to the file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
for m in l2tp_eth l2tp_ip l2tp_ip6; do modprobe "$m"; done
exec python tests/bench/bench.py "$@"
