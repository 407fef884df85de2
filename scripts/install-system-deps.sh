#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need: QEMU (software emulation), Debian's
# kernel (it has L2TP; the host kernel may not), iproute2 and ping for the guest, and prometheus
# (promtool for the rules' tests; the server for the scrape test in the guest), and the reference
# CNI plugins (containernetworking-plugins: bridge and host-local, in /usr/lib/cni). Then Debian 13's
# kernel for the kernel suite's second kernel (scripts/kernels.sh: a pinned package file fetched
# with a private apt configuration and cached under ~/.cache/kube-l2tp/kernels; never installed).
# Idempotent and quiet when everything is already present.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
ls /boot/vmlinuz-*-amd64 >/dev/null 2>&1 || need+=(linux-image-amd64)
command -v ip >/dev/null || need+=(iproute2)
command -v ping >/dev/null || need+=(iputils-ping)
command -v modprobe >/dev/null || need+=(kmod)
command -v busybox >/dev/null || need+=(busybox-static)
command -v promtool >/dev/null || need+=(prometheus)  # promtool for the alert rules' tests
# the reference CNI plugins (bridge, host-local) for the pods-on-the-wire kernel test
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
if ((${#need[@]})); then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
bash "$(dirname "${BASH_SOURCE[0]}")/kernels.sh" fetch
