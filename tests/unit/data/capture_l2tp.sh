#!/usr/bin/env bash
# Regenerates tests/unit/data/l2tp_captures.json: what `ip l2tp add` sends and what the kernel's
# L2TP dumps and multicast events look like, captured once in the VM so the unit tests can replay
# them without root or L2TP:
#
#   bash scripts/vm.sh tests/unit/data/capture_l2tp.sh \
#     | sed -n '/^BEGIN-L2TP-CAPTURES$/,/^END-L2TP-CAPTURES$/p' | sed '1d;$d' \
#     > tests/unit/data/l2tp_captures.json
#
# Needs strace in the guest (the host's root filesystem): it records ip's netlink requests.
# Addresses are documentation ranges, inside namespaces made here, inside the VM only.
set -euo pipefail
modprobe l2tp_eth
modprobe l2tp_ip
modprobe l2tp_ip6
work=$(mktemp -d)

for ns in a b; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add veth-a netns a type veth peer name veth-b netns b
ip -n a addr add 192.0.2.1/24 dev veth-a
ip -n b addr add 192.0.2.2/24 dev veth-b
ip -n a addr add 2001:db8::1/64 dev veth-a nodad
ip -n b addr add 2001:db8::2/64 dev veth-b nodad
ip -n a link set veth-a up
ip -n b link set veth-b up

# Each command is run under strace in namespace a; its L2TP request is kept under its name.
declare -A commands=(
  [tunnel_udp4]="tunnel tunnel_id 3000 peer_tunnel_id 4000 encap udp local 192.0.2.1 remote 192.0.2.2 udp_sport 5000 udp_dport 6000"
  [tunnel_udp4_csum]="tunnel tunnel_id 3001 peer_tunnel_id 4001 encap udp local 192.0.2.1 remote 192.0.2.2 udp_sport 5001 udp_dport 6001 udp_csum on"
  [tunnel_udp6]="tunnel tunnel_id 3002 peer_tunnel_id 4002 encap udp local 2001:db8::1 remote 2001:db8::2 udp_sport 5002 udp_dport 6002"
  [tunnel_udp6_tx_off]="tunnel tunnel_id 3003 peer_tunnel_id 4003 encap udp local 2001:db8::1 remote 2001:db8::2 udp_sport 5003 udp_dport 6003 udp6_csum_tx off"
  [tunnel_udp6_rx_off]="tunnel tunnel_id 3004 peer_tunnel_id 4004 encap udp local 2001:db8::1 remote 2001:db8::2 udp_sport 5004 udp_dport 6004 udp6_csum_rx off"
  [tunnel_ip4]="tunnel tunnel_id 3005 peer_tunnel_id 4005 encap ip local 192.0.2.1 remote 192.0.2.2"
  [tunnel_ip6]="tunnel tunnel_id 3006 peer_tunnel_id 4006 encap ip local 2001:db8::1 remote 2001:db8::2"
  [session_seed]="session name l2tpeth0 tunnel_id 3000 session_id 1000 peer_session_id 2000 cookie 014d3636deadbeef peer_cookie 01020304"
  [session_none_both]="session tunnel_id 3001 session_id 1001 peer_session_id 2001 l2spec_type none seq both"
  [session_recv]="session tunnel_id 3002 session_id 1002 peer_session_id 2002 seq recv cookie 0a0b0c0d"
  [session_ip6]="session tunnel_id 3006 session_id 1006 peer_session_id 2006 name l2tp-ip6 peer_cookie 1112131415161718"
)
order=(tunnel_udp4 tunnel_udp4_csum tunnel_udp6 tunnel_udp6_tx_off tunnel_udp6_rx_off tunnel_ip4
  tunnel_ip6 session_seed session_none_both session_recv session_ip6)
for name in "${order[@]}"; do
  echo "ip l2tp add ${commands[$name]}" >"$work/$name.cmd"
  # shellcheck disable=SC2086
  ip netns exec a strace -f -e trace=sendmsg -s 4096 -xx -o "$work/$name.trace" \
    ip l2tp add ${commands[$name]}
done

# The peer of the seed's pseudowire, so that counters move.
ip netns exec b ip l2tp add tunnel tunnel_id 4000 peer_tunnel_id 3000 encap udp \
  local 192.0.2.2 remote 192.0.2.1 udp_sport 6000 udp_dport 5000
ip netns exec b ip l2tp add session name l2tpeth0 tunnel_id 4000 session_id 2000 \
  peer_session_id 1000 cookie 01020304 peer_cookie 014d3636deadbeef
ip -n a addr add 198.51.100.1 peer 198.51.100.2 dev l2tpeth0
ip -n b addr add 198.51.100.2 peer 198.51.100.1 dev l2tpeth0
ip -n a link set l2tpeth0 up
ip -n b link set l2tpeth0 up
ip netns exec a ping -c 3 -i 0.3 -W 2 198.51.100.2 >/dev/null

ip netns exec a ip l2tp show tunnel >"$work/show_tunnel.txt"
ip netns exec a ip l2tp show session >"$work/show_session.txt"

ip netns exec a python - "$work" <<'PY'
import json, re, subprocess, sys, time
from pathlib import Path

from kube_l2tp.netlink.l2tp import L2tp, L2tpEvents
from kube_l2tp.netlink.l2tp.attrs import L2tpCmd

work = Path(sys.argv[1])
requests = {}
for trace in sorted(work.glob("*.trace")):
    # the genl request is the sendmsg to the l2tp family that asks for an ack
    for line in trace.read_text().splitlines():
        if "nlmsg_type=l2tp" in line and "NLM_F_ACK" in line:
            payload = re.search(r'}, "((?:\\x[0-9a-f]{2})+)"', line).group(1)
            requests[trace.stem] = {
                "command": (work / f"{trace.stem}.cmd").read_text().strip(),
                "payload": payload.replace("\\x", ""),
            }

with L2tp() as l2tp, L2tpEvents() as events:
    tunnels = l2tp.dump_raw(L2tpCmd.L2TP_CMD_TUNNEL_GET)
    sessions = l2tp.dump_raw(L2tpCmd.L2TP_CMD_SESSION_GET)
    add = "ip l2tp add tunnel tunnel_id 3900 peer_tunnel_id 4900 encap udp local 192.0.2.1"
    for cmd in (
        add + " remote 192.0.2.2 udp_sport 5900 udp_dport 6900",
        "ip l2tp add session tunnel_id 3900 session_id 1900 peer_session_id 2900",
        "ip l2tp del session tunnel_id 3900 session_id 1900",
        "ip l2tp del tunnel tunnel_id 3900",
    ):
        subprocess.run(cmd.split(), check=True)
    time.sleep(0.5)
    event_chunks = []
    while True:
        try:
            event_chunks.append(events._sock.recv(65536).hex())
        except BlockingIOError:
            break

stats = {
    name: int(Path(f"/sys/class/net/l2tpeth0/statistics/{name}").read_text())
    for name in ("rx_packets", "tx_packets", "rx_bytes", "tx_bytes")
}
doc = {
    "about": "captured by tests/unit/data/capture_l2tp.sh in the VM; bytes as hex",
    "kernel": subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip(),
    "iproute2": subprocess.run(["ip", "-V"], capture_output=True, text=True).stdout.strip(),
    "requests": requests,
    "tunnel_dump": [c.hex() for c in tunnels],
    "session_dump": [c.hex() for c in sessions],
    "events": event_chunks,
    "ip_show_tunnel": (work / "show_tunnel.txt").read_text(),
    "ip_show_session": (work / "show_session.txt").read_text(),
    "l2tpeth0_statistics": stats,
}
print("BEGIN-L2TP-CAPTURES")
print(json.dumps(doc, indent=1))
print("END-L2TP-CAPTURES")
PY
