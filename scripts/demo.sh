#!/usr/bin/env bash
# make demo: the seed's site-A/site-B pseudowire, built by two standalone agents from the embedded
# default manifests (operator/kube_l2tp/embedded), in two network namespaces joined by a veth
# "underlay". Pings cross the pseudowire; then status, counters and metrics are shown.
#
# If this host's kernel has no L2TP, the demo runs itself inside a VM booting Debian's kernel.
# Addresses are documentation ranges only: underlay 192.0.2.0/24, overlay 198.51.100.0/24.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export PATH="$root/.venv/bin:$PATH"

host_has_l2tp() {
  [[ $(id -u) == 0 ]] || return 1
  modprobe -q l2tp_eth 2>/dev/null || true
  ip l2tp show tunnel >/dev/null 2>&1
}

if [[ ${1:-} != --here ]]; then
  if host_has_l2tp; then
    exec bash "$0" --here
  fi
  echo "demo: this host's kernel ($(uname -r)) has no L2TP, so the demo runs inside a VM"
  echo "demo: (Debian's kernel under QEMU software emulation; allow a minute or two)"
  exec bash scripts/vm.sh scripts/demo.sh --here
fi

[[ $(id -u) == 0 ]] || { echo "demo: needs root (network namespaces, L2TP)" >&2; exit 1; }
for m in l2tp_eth l2tp_ip l2tp_ip6; do modprobe "$m"; done

A=kl2tp-demo-a
B=kl2tp-demo-b
work=$(mktemp -d /tmp/kube-l2tp-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*"; }

step "underlay: namespaces $A (192.0.2.1) and $B (192.0.2.2) joined by a veth pair"
ip netns add "$A"
ip netns add "$B"
ip link add demo-a netns "$A" type veth peer name demo-b netns "$B"
ip -n "$A" addr add 192.0.2.1/24 dev demo-a
ip -n "$B" addr add 192.0.2.2/24 dev demo-b
for ns in "$A" "$B"; do
  ip -n "$ns" link set lo up
done
ip -n "$A" link set demo-a up
ip -n "$B" link set demo-b up

step "what the agents will do (kube-l2tp render --node site-a / site-b)"
kube-l2tp render -f operator/kube_l2tp/embedded --node site-a
kube-l2tp render -f operator/kube_l2tp/embedded --node site-b

step "starting one standalone agent per site (--manifests embedded)"
ip netns exec "$A" kube-l2tp agent --node site-a --manifests embedded \
  --state-dir "$work/state-a" --metrics-bind-address 127.0.0.1:9717 >"$work/agent-a.log" 2>&1 &
pids+=($!)
ip netns exec "$B" kube-l2tp agent --node site-b --manifests embedded \
  --state-dir "$work/state-b" --metrics-bind-address 127.0.0.1:9717 >"$work/agent-b.log" 2>&1 &
pids+=($!)

ready() {  # $1 netns, $2 overlay address: l2tpeth0 is administratively up and addressed
  ip -n "$1" -o link show dev l2tpeth0 2>/dev/null | grep -q '<[^>]*,UP[,>]' &&
    ip -n "$1" -o addr show dev l2tpeth0 2>/dev/null | grep -q "inet $2 "
}
for _ in $(seq 1 120); do
  if ready "$A" 198.51.100.1 && ready "$B" 198.51.100.2; then break; fi
  sleep 0.5
done
if ! { ready "$A" 198.51.100.1 && ready "$B" 198.51.100.2; }; then
  echo "demo: the agents did not converge in 60 s; their logs:" >&2
  cat "$work"/agent-*.log >&2
  exit 1
fi
ip -n "$A" -br addr show dev l2tpeth0
ip -n "$B" -br addr show dev l2tpeth0

step "ping across the pseudowire: site-A 198.51.100.1 -> site-B 198.51.100.2"
ip netns exec "$A" ping -c 3 -W 2 198.51.100.2

step "ip l2tp show (what the kernel has, as iproute2 prints it)"
ip -n "$A" l2tp show tunnel
ip -n "$A" l2tp show session

step "kube-l2tp status on site-A (counters that ip l2tp does not print)"
ip netns exec "$A" kube-l2tp status --state-dir "$work/state-a" \
  --manifests embedded --node site-a

step "some of site-A's metrics (/metrics on 127.0.0.1:9717): kernel counters and agent health"
ip netns exec "$A" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9717 &&
  printf "GET /metrics HTTP/1.0\r\n\r\n" >&3 && cat <&3' | grep -E '^(kube_l2tp_reconcile_total|kube_l2tp_managed_objects.*ready="true"|l2tp_session_(rx|tx)_packets_total)' || true

step "stopping the agents (SIGTERM): the pseudowire stays up"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
wait "${pids[@]}" 2>/dev/null || true
pids=()
ip netns exec "$A" ping -c 1 -W 2 198.51.100.2 >/dev/null && echo "still passing traffic after the agents stopped"

echo
echo "demo: OK (the namespaces are removed on exit, and their tunnels with them)"
