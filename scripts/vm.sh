#!/usr/bin/env bash
# Boots Debian's kernel once under virtme-ng and runs one script of this repository inside it,
# exiting with that script's exit code.
#
#   bash scripts/vm.sh SCRIPT [ARGS...]      e.g. bash scripts/vm.sh tests/kernel/run-in-guest.sh
#
# Why a VM: the host kernel has no L2TP; Debian's kernel has it as modules.
# Why --disable-kvm: KVM guests hang at boot on these machines, so QEMU emulates (TCG). Measured
# overhead per boot (start to shutdown): ~22 s on an idle 2-core host (12 s of it from kernel start
# to the script), 40-100 s while other VMs share the cores. Run everything in a single boot.
# The guest sees the host's root filesystem read-only (writable overlays on /tmp, /etc, /var, ...),
# so the repository and its .venv are used unchanged; the guest starts in the repository root.
#
# Environment:
#   VM_TIMEOUT   seconds before the VM is killed (default 3600)
#   VM_MEMORY    guest memory (default 2G)       VM_CPUS   guest vCPUs (default 2)
#   VM_VERBOSE   1: show the guest kernel's console (boot messages) on stderr
#   KERNEL       6.1 (Debian 12's) or 6.12 (Debian 13's, fetched and cached by scripts/kernels.sh)
#   VM_KERNEL    a kernel image instead (modules must exist); default: the newest /boot/vmlinuz-*-amd64
#   PYTEST_ARGS, ARGS, CI   passed into the guest's environment unchanged
#
# Exit codes: the script's own, or 125 when the VM could not be started, did not boot, or died
# before the script finished. It never skips: no kernel, no QEMU or no boot is a failure.
set -euo pipefail

readonly HARNESS_FAILURE=125
die() {
  echo "vm.sh: ERROR: $*" >&2
  exit "$HARNESS_FAILURE"
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

(($# >= 1)) || die "usage: scripts/vm.sh SCRIPT [ARGS...] (a script path inside $root)"
script=$1
shift
[[ -f $script ]] || die "no such script: $script (paths are relative to $root)"
[[ $(realpath "$script") == "$root"/* ]] || die "$script is outside the repository"

if [[ -n ${KERNEL:-} && -z ${VM_KERNEL:-} ]]; then
  VM_KERNEL=$(bash scripts/kernels.sh path "$KERNEL") || die "kernel $KERNEL is not available (above)"
fi
kernel=${VM_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -1 || true)}
[[ -n $kernel ]] || die "no kernel /boot/vmlinuz-*-amd64 (install linux-image-amd64: make deps)"
[[ -r $kernel ]] || die "kernel $kernel does not exist or is not readable"
kver=${kernel##*/vmlinuz-}
[[ -d /lib/modules/$kver ]] || die "no modules for $kver in /lib/modules (the guest loads L2TP from there)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (make deps)"
[[ -x $root/.venv/bin/vng ]] || die "$root/.venv/bin/vng not found (make venv)"
# vng runs virtme-run from PATH.
export PATH="$root/.venv/bin:$PATH"

# A directory shared read-write with the guest: the guest records that it booted and how the
# script ended, so a VM that never booted or died half-way cannot pass for a green run.
shared=$(mktemp -d /tmp/kube-l2tp-vm.XXXXXX)
trap 'rm -rf "$shared"' EXIT

guest_path="$root/.venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
guest_env=(
  "PATH=$guest_path"
  "VIRTUAL_ENV=$root/.venv"
  "HOME=/tmp"
  "LANG=C.UTF-8"
  "PYTHONDONTWRITEBYTECODE=1"
  "PYTHONUNBUFFERED=1"
  "KUBE_L2TP_IN_VM=1"
  "CI=${CI:-}"
  "PYTEST_ARGS=${PYTEST_ARGS:-}"
  "ARGS=${ARGS:-}"
)
script_argv=("$script" "$@")
{
  echo "shared=${shared@Q}"
  declare -p guest_env script_argv
  cat <<'GUEST'
read -r started _ </proc/uptime
echo "$(uname -r) $started" >"$shared/booted"
echo "vm.sh: guest kernel $(uname -r), ${started}s from kernel start to script start" >&2
env -i "${guest_env[@]}" bash "${script_argv[@]}" </dev/null
rc=$?
read -r ended _ </proc/uptime
echo "$rc $started $ended" >"$shared/done"
exit "$rc"
GUEST
} >"$shared/guest.sh"

# --force-9p: vng would first try virtiofsd for / and for $shared, fail here ("fuse: invalid
# argument") and fall back to 9p after ~3 s each.
vng_args=(
  --run "$kernel" --disable-kvm --cpus "${VM_CPUS:-2}" --memory "${VM_MEMORY:-2G}" --user root
  --force-9p --rwdir "$shared" --cwd "$root" --exec "bash $shared/guest.sh"
)
if [[ ${VM_VERBOSE:-0} == 1 ]]; then vng_args+=(--verbose); fi

echo "vm.sh: booting $kernel (TCG, ${VM_CPUS:-2} vCPUs, ${VM_MEMORY:-2G}): $script $*" >&2
t0=$EPOCHREALTIME
set +e
# QEMU reopens /proc/self/fd/1 and /proc/self/fd/2 for the guest's output: when those are regular
# files (a CI log opened without O_APPEND) it would write from offset 0 over earlier output, so
# hand it a pipe. stdin is /dev/null: no tty is needed or used.
timeout --kill-after=30 "${VM_TIMEOUT:-3600}" vng "${vng_args[@]}" </dev/null 2>&1 | cat
vng_rc=${PIPESTATUS[0]}
set -e
t1=$EPOCHREALTIME

if [[ ! -s $shared/booted ]]; then
  ((vng_rc == 124)) && die "the VM timed out after ${VM_TIMEOUT:-3600}s before the guest ran anything"
  die "the VM did not boot or could not run the script (vng exit $vng_rc); rerun with VM_VERBOSE=1"
fi
if [[ ! -s $shared/done ]]; then
  ((vng_rc == 124)) && die "timed out after ${VM_TIMEOUT:-3600}s while running $script"
  die "the guest died before $script finished (vng exit $vng_rc: kernel panic, OOM?); try VM_VERBOSE=1"
fi
read -r rc started ended <"$shared/done"
awk -v t0="$t0" -v t1="$t1" -v s="$started" -v e="$ended" -v rc="$rc" 'BEGIN {
  total = t1 - t0; run = e - s
  printf "vm.sh: exit %d; wall %.1fs = script %.1fs + VM overhead %.1fs (boot to script start %.1fs)\n",
    rc, total, run, total - run, s > "/dev/stderr"
}'
if ((vng_rc != rc)); then
  echo "vm.sh: note: vng exited $vng_rc but the script exited $rc; using the script's code" >&2
fi
exit "$rc"
