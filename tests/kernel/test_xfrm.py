"""The XFRM netlink codec against the real kernel, and ESP on a real pseudowire (inside the VM).

Every SA and policy is made twice: with the codec in one namespace and with ``ip xfrm`` (the
reference) in another. The kernel's dumps of the two must be equal byte for byte (but for the
times and the kernel-assigned policy index), ``ip xfrm show`` must print the same text for both,
and the codec must decode what ``ip`` made into exactly the desired config.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from helpers import NetnsFactory, TwoSites, in_netns, ip, ip_batch, ip_json, run

from kube_l2tp.api import overhead
from kube_l2tp.api.model import Tunnel, Udp
from kube_l2tp.core import xfrm
from kube_l2tp.core.render import mirror_tunnel
from kube_l2tp.netlink import xfrm as nl

SECRET = bytes(range(32))
ENC = xfrm.KeyMaterial(SECRET, 1)

UDP4 = Tunnel("t", "n", 3000, 4000, "192.0.2.1", "192.0.2.2", "udp", Udp(5000, 6000))
IP4 = Tunnel("t", "n", 3000, 4000, "192.0.2.1", "192.0.2.2", "ip")
UDP6 = Tunnel("t", "n", 3000, 4000, "2001:db8::1", "2001:db8::2", "udp", Udp(5000, 6000))
IP6 = Tunnel("t", "n", 3000, 4000, "2001:db8::1", "2001:db8::2", "ip")
TUNNELS = {"udp4": UDP4, "ip4": IP4, "udp6": UDP6, "ip6": IP6}


@contextmanager
def xfrm_in(ns: str) -> Iterator[nl.Xfrm]:
    with in_netns(ns):
        sock = nl.Xfrm()
    with sock:
        yield sock


def program(ns: str, d: xfrm.TunnelXfrm) -> None:
    with xfrm_in(ns) as x:
        for s in d.states:
            x.add_sa(s.config)
        for p in d.policies:
            x.add_policy(p.config)


def program_with_ip(ns: str, d: xfrm.TunnelXfrm) -> None:
    ip_batch(
        ns,
        [" ".join(xfrm.ip_state_args(s.config, "0x" + s.config.key.hex())) for s in d.states]
        + [" ".join(xfrm.ip_policy_args(p.config)) for p in d.policies],
    )


def _payloads(chunks: list[bytes], mtype: int) -> list[bytes]:
    return [p for t, p in nl.iter_messages(chunks) if t == mtype]


def comparable_sas(ns: str) -> list[bytes]:
    """Each SA as dumped, curlft (add and use times) zeroed, in a stable order."""
    with xfrm_in(ns) as x:
        raw = _payloads(x.dump_raw(nl.XFRM_MSG_GETSA), nl.XFRM_MSG_NEWSA)
    return sorted(p[:160] + bytes(32) + p[192:] for p in raw)


def comparable_policies(ns: str) -> list[bytes]:
    """Each policy as dumped, curlft and the kernel-assigned index zeroed."""
    with xfrm_in(ns) as x:
        raw = _payloads(x.dump_raw(nl.XFRM_MSG_GETPOLICY), nl.XFRM_MSG_NEWPOLICY)
    return sorted(p[:120] + bytes(32) + p[152:156] + bytes(4) + p[160:] for p in raw)


@pytest.mark.parametrize("kind", sorted(TUNNELS))
def test_codec_and_ip_xfrm_make_the_same_kernel_objects(netns: NetnsFactory, kind: str) -> None:
    d = xfrm.desired(TUNNELS[kind], ENC)
    ours, theirs = netns("xfrm-codec"), netns("xfrm-ip")
    program(ours, d)
    program_with_ip(theirs, d)
    assert len(comparable_sas(ours)) == 2 and len(comparable_policies(ours)) == 2
    assert comparable_sas(ours) == comparable_sas(theirs)
    assert comparable_policies(ours) == comparable_policies(theirs)
    for what in ("state", "policy"):
        shown = ip(ours, "xfrm", what, "show")
        assert shown and shown == ip(theirs, "xfrm", what, "show")
    # and what ip made decodes to exactly the desired objects
    with xfrm_in(theirs) as x:
        sas = {s.observed.config for s in x.dump_sas() if s.observed}
        pols = {p.config for p in x.dump_policies() if p.config}
    assert sas == {s.config for s in d.states}
    assert pols == {p.config for p in d.policies}


# --- ESP on the wire -----------------------------------------------------------------------------

ETH_P_ALL = 0x0003


class Capture:
    """Every frame on one interface of one namespace while the block runs (AF_PACKET)."""

    def __init__(self, ns: str, ifname: str) -> None:
        with in_netns(ns):
            self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((ifname, 0))
        self.sock.settimeout(0.2)
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.frames.append(self.sock.recv(65535))
            except TimeoutError:
                continue

    def __enter__(self) -> Capture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def l4(self) -> list[tuple[int, int, bool]]:
        """(IP protocol, UDP destination port or 0, is a fragment) per IPv4/IPv6 frame."""
        out = []
        for f in self.frames:
            ethertype = struct.unpack_from(">H", f, 12)[0]
            if ethertype == 0x0800:
                ihl = (f[14] & 0xF) * 4
                frag = struct.unpack_from(">H", f, 20)[0] & 0x3FFF != 0
                proto = f[23]
                port = struct.unpack_from(">H", f, 14 + ihl + 2)[0] if proto == 17 else 0
                out.append((proto, port, frag))
            elif ethertype == 0x86DD:
                proto = f[20]
                port = struct.unpack_from(">H", f, 54 + 2)[0] if proto == 17 else 0
                out.append((proto, port, proto == 44))
        return out


def l2tp_by_hand(sites: TwoSites, t: Tunnel, mtu: int) -> None:
    """The pseudowire itself, with ip l2tp (the reference), and addresses on it."""
    ends = ((sites.a, t, "198.51.100.1", "198.51.100.2"),
            (sites.b, mirror_tunnel(t), "198.51.100.2", "198.51.100.1"))  # fmt: skip
    for ns, tun, inner, peer in ends:
        cmd = (f"l2tp add tunnel tunnel_id {tun.tunnel_id} peer_tunnel_id {tun.peer_tunnel_id}"
               f" encap {tun.encapsulation} local {tun.local} remote {tun.remote}")  # fmt: skip
        if tun.udp:
            cmd += f" udp_sport {tun.udp.source_port} udp_dport {tun.udp.destination_port}"
        sid, peer_sid = (1000, 2000) if ns == sites.a else (2000, 1000)
        ip_batch(
            ns,
            [
                cmd,
                f"l2tp add session name l2tpeth0 tunnel_id {tun.tunnel_id} session_id {sid}"
                f" peer_session_id {peer_sid}",
                f"link set l2tpeth0 up mtu {mtu}",
                f"addr add {inner} peer {peer} dev l2tpeth0",
            ],
        )


def ping(ns: str, size: int, count: int = 3) -> bool:
    cmd = ["ping", "-c", str(count), "-W", "2", "-i", "0.2", "-M", "do", "-s", str(size)]
    out = run([*cmd, "198.51.100.2"], netns=ns, check=False)
    return f"{count} received" in out


@pytest.mark.parametrize("kind", sorted(TUNNELS))
def test_esp_on_the_wire(two_sites: TwoSites, kind: str) -> None:
    """Pings pass across the encrypted wire; the underlay carries ESP and no clear L2TP; a frame
    of the computed encrypted MTU goes out unfragmented."""
    t = TUNNELS[kind]
    if t.ipv6:
        t = Tunnel(t.name, t.node, t.tunnel_id, t.peer_tunnel_id, two_sites.a6, two_sites.b6,
                   t.encapsulation, t.udp)  # fmt: skip
    far = mirror_tunnel(t)
    alg = overhead.ESP_AEADS[ENC.algorithm]
    mtu = overhead.session_mtu(ipv6=t.ipv6, udp=t.encapsulation == "udp", cookie_len=0,
                               l2spec_default=True, esp=alg)  # fmt: skip
    program(two_sites.a, xfrm.desired(t, ENC))
    program(two_sites.b, xfrm.desired(far, ENC))
    l2tp_by_hand(two_sites, t, mtu)
    ping(two_sites.a, 56, count=1)  # neighbour discovery out of the way
    with Capture(two_sites.a, two_sites.ifname) as cap:
        assert ping(two_sites.a, 56)
        assert ping(two_sites.a, mtu - 28)  # a full-size inner IPv4 packet, DF
    seen = cap.l4()
    esp = [s for s in seen if s[0] == 50]
    clear = [s for s in seen if s[0] == 115 or (s[0] == 17 and s[1] in (5000, 6000))]
    assert len(esp) >= 12 and clear == [], seen
    assert not any(frag for _p, _port, frag in seen), "the encrypted MTU let a frame fragment"
    with xfrm_in(two_sites.a) as x:
        counters = {s.observed.config.dst: s.observed.counters for s in x.dump_sas() if s.observed}
    local = t.local
    assert counters[t.remote].packets >= 6 and counters[local].packets >= 6
    assert counters[local].integrity_failed == 0


def test_wrong_key_drops_and_counts(two_sites: TwoSites) -> None:
    """One end with another secret: no ping passes, and the receiver counts integrity failures
    on the SA (the SPI does not depend on the secret, so the packets still meet it)."""
    program(two_sites.a, xfrm.desired(UDP4, ENC))
    program(two_sites.b, xfrm.desired(mirror_tunnel(UDP4), xfrm.KeyMaterial(bytes(32), 1)))
    l2tp_by_hand(two_sites, UDP4, 1400)
    assert not ping(two_sites.a, 56, count=3)
    with xfrm_in(two_sites.b) as x:
        after = next(s for s in x.dump_sas() if s.observed and s.dst == "192.0.2.2")
    assert after.observed is not None and after.observed.counters.integrity_failed >= 3


@pytest.mark.parametrize("kind", sorted(TUNNELS))
def test_kernel_session_mtu_counts_esp_when_policies_come_first(
    two_sites: TwoSites, kind: str
) -> None:
    """With the policies in place before the tunnel (the agent's order), the kernel's own MTU for
    the session interface already leaves room for ESP: the same figure as overhead.session_mtu."""
    t = TUNNELS[kind]
    if t.ipv6:
        t = Tunnel(t.name, t.node, t.tunnel_id, t.peer_tunnel_id, two_sites.a6, two_sites.b6,
                   t.encapsulation, t.udp)  # fmt: skip
    program(two_sites.a, xfrm.desired(t, ENC))
    cmd = (f"l2tp add tunnel tunnel_id 3000 peer_tunnel_id 4000 encap {t.encapsulation}"
           f" local {t.local} remote {t.remote}")  # fmt: skip
    if t.udp:
        cmd += " udp_sport 5000 udp_dport 6000"
    ip_batch(
        two_sites.a,
        [cmd, "l2tp add session name pw0 tunnel_id 3000 session_id 1 peer_session_id 2"],
    )
    (link,) = ip_json(two_sites.a, "link", "show", "dev", "pw0")
    alg = overhead.ESP_AEADS[ENC.algorithm]
    expected = overhead.session_mtu(ipv6=t.ipv6, udp=t.udp is not None, cookie_len=0,
                                    l2spec_default=True, esp=alg)  # fmt: skip
    assert link["mtu"] == expected
