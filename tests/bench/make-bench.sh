#!/usr/bin/env bash
# `make bench` on one kernel: boots it once (scripts/vm.sh), runs tests/bench/run-in-guest.sh ARGS
# in that guest, and replaces that kernel's section of BENCHMARKS.md (tests/bench/report.py) with
# the guest's report and what only the host knows: the host, its load before and after (the
# machine is shared: other VMs and builds slow a TCG guest), the whole run's time, the code.
#
#   bash tests/bench/make-bench.sh KERNEL [ARGS...]      (KERNEL: 6.1 or 6.12)
set -euo pipefail
kernel=$1
shift
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=$(mktemp /tmp/kube-l2tp-bench.XXXXXX)
trap 'rm -f "$out"' EXIT
load() { cut -d' ' -f1-3 /proc/loadavg; }
code="commit $(git rev-parse --short HEAD)"
git status --porcelain -- operator tests/bench | grep -q . && code+=" (with uncommitted changes)"
start=$(date +%s)
others_start=$(pgrep -c qemu-system || true)
load_start=$(load)
KERNEL=$kernel VM_MEMORY=${VM_MEMORY:-4G} VM_TIMEOUT=${VM_TIMEOUT:-10800} \
  bash scripts/vm.sh tests/bench/run-in-guest.sh "$@" | tee "$out"
minutes=$(awk -v s="$(($(date +%s) - start))" 'BEGIN { printf "%.1f", s / 60 }')
.venv/bin/python tests/bench/report.py "$kernel" "$out" \
  "- host: $(uname -srm), $(nproc) CPUs, $(awk '/MemTotal/{printf "%d GiB", $2/1048576}' /proc/meminfo); shared with other engineers' builds and tests" \
  "- host load (1/5/15 min): $load_start at the start, $(load) at the end; other VMs: $others_start at the start, $(pgrep -c qemu-system || true) at the end" \
  "- whole run (VM boot included): $minutes min; code: $code"
