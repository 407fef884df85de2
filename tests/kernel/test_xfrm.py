"""The XFRM netlink codec against the real kernel, and ESP on a real pseudowire (inside the VM).

Every SA and policy is made twice: with the codec in one namespace and with ``ip xfrm`` (the
reference) in another. The kernel's dumps of the two must be equal byte for byte (but for the
times and the kernel-assigned policy index), ``ip xfrm show`` must print the same text for both,
and the codec must decode what ``ip`` made into exactly the desired config.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import NetnsFactory, TwoSites, in_netns, ip, ip_batch, ip_json, run

from kube_l2tp.agent.encryption import XfrmStep
from kube_l2tp.agent.standalone import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api import manifests, overhead, validation
from kube_l2tp.api.model import Resources, Tunnel, Udp
from kube_l2tp.core import xfrm
from kube_l2tp.core.reconcile import Result
from kube_l2tp.core.render import mirror_tunnel, render
from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.netlink import xfrm as nl
from kube_l2tp.netlink.kernel import Kernel

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


def test_delete_touches_only_what_it_names_and_errors_map(netns: NetnsFactory) -> None:
    ns = netns("xfrm-del")
    d = xfrm.desired(UDP4, ENC)
    program(ns, d)
    # someone else's SA and policy between the same hosts, all traffic: must survive
    ip_batch(
        ns,
        [
            "xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x1000 reqid 7 mode transport"
            " aead rfc4106(gcm(aes)) 0x" + "11" * 20 + " 128",
            "xfrm policy add src 192.0.2.1/32 dst 192.0.2.2/32 dir out priority 5000"
            " tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 7 mode transport",
        ],
    )
    with xfrm_in(ns) as x:
        with pytest.raises(KernelError) as e:
            x.add_sa(d.states[0].config)
        assert e.value.outcome is Outcome.EXISTS and "spi" in str(e.value)
        assert d.states[0].config.key.hex() not in str(e.value)
        with pytest.raises(KernelError) as e:
            x.add_policy(d.policies[0].config)
        assert e.value.outcome is Outcome.EXISTS
        owned = [s for s in x.dump_sas() if xfrm.owned(s.reqid)]
        assert len(owned) == 2 and len(x.dump_sas()) == 3
        for s in owned:
            x.delete_sa(s.family, s.dst, s.spi)
        for p in x.dump_policies():
            if xfrm.owned(p.reqid) and p.config:
                x.delete_policy(p.config.direction, p.config.selector)
        with pytest.raises(KernelError) as e:
            x.delete_sa(xfrm.AF_INET, "192.0.2.9", 0x4242)
        assert e.value.outcome is Outcome.NOT_FOUND
        left_sas = x.dump_sas()
        left_pols = x.dump_policies()
    assert [(s.spi, s.reqid) for s in left_sas] == [(0x1000, 7)]
    assert [(p.reqid, p.priority) for p in left_pols] == [(7, 5000)]
    # a policy is updated in place (UPDPOLICY), whether it exists or not
    with xfrm_in(ns) as x:
        x.add_policy(d.policies[0].config, replace=True)
        x.add_policy(d.policies[0].config, replace=True)
        assert [p.config for p in x.dump_policies() if xfrm.owned(p.reqid)] == [
            d.policies[0].config
        ]


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


# --- the agent, with the far end configured by hand from render --peer -------------------------

MANIFEST = """\
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPTunnel
metadata: {{name: site-a}}
spec:
  nodeName: site-a
  tunnelID: 3000
  peerTunnelID: 4000
  local: 192.0.2.1
  remote: 192.0.2.2
  udp: {{sourcePort: 5000, destinationPort: 6000}}
  encryption: {{keyFile: {key}, keyID: 1}}
---
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPSession
metadata: {{name: site-a-1}}
spec:
  tunnelRef: site-a
  sessionID: 1000
  peerSessionID: 2000
  interfaceName: pw0
  interface:
    addresses: [{{address: 198.51.100.1, peer: 198.51.100.2}}]
"""


def by_hand_from_render(ns: str, res: Resources, secret: bytes) -> None:
    """What a person does on the far end: render --peer, each $KEY_<SPI> replaced by the key the
    README's derivation gives (here: the core's, on the far end's own flows)."""
    far = mirror_tunnel(res.tunnels[0])
    keys = xfrm.KeyMaterial(secret, 1)
    lines = render(res, peer=True).splitlines()
    for s in xfrm.desired(far, keys).states:
        lines = [
            ln.replace(xfrm.key_placeholder(s.config.spi), "0x" + s.config.key.hex())
            for ln in lines
        ]
    commands = [ln.removeprefix("ip ") for ln in lines if ln.startswith("ip ")]
    assert not any("$KEY" in c for c in commands)
    ip_batch(ns, commands)


def settled(agent: Agent, timeout: float = 20.0) -> Result:
    """Reconcile until converged: a tunnel deleted a moment ago may still be going (EEXIST)."""
    deadline = time.monotonic() + timeout
    while True:
        result = agent.reconcile_once("test")
        if result.converged or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def ours(ns: str) -> tuple[list[nl.RawSa], list[nl.RawPolicy]]:
    with xfrm_in(ns) as x:
        return (
            [s for s in x.dump_sas() if xfrm.owned(s.reqid)],
            [p for p in x.dump_policies() if xfrm.owned(p.reqid)],
        )


def test_agent_encrypts_and_interoperates_with_ip_xfrm_by_hand(
    two_sites: TwoSites, tmp_path: Path
) -> None:
    key = tmp_path / "site-a.key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    (mdir / "a.yaml").write_text(MANIFEST.format(key=key))
    res = validation.check_documents(manifests.load([mdir])).resources
    with in_netns(two_sites.a), Kernel() as kernel:
        store = StateStore(tmp_path / "state")
        agent = Agent(AgentConfig("site-a", mdir, tmp_path / "state", 30.0), kernel, store,
                      xfrm=XfrmStep(nl.Xfrm))  # fmt: skip
        try:
            assert settled(agent).converged
            by_hand_from_render(two_sites.b, res, SECRET)
            ping(two_sites.a, 56, count=1)
            with Capture(two_sites.a, two_sites.ifname) as cap:
                assert ping(two_sites.a, 56)
            seen = cap.l4()
            assert [s for s in seen if s[0] == 50] and not [s for s in seen if s[0] == 17], seen
            # a foreign SA survives everything; a policy deleted by hand comes back
            ip(two_sites.a, "xfrm", "state", "add", "src", "192.0.2.1", "dst", "192.0.2.9",
               "proto", "esp", "spi", "0x1000", "reqid", "7", "mode", "transport", "aead",
               "rfc4106(gcm(aes))", "0x" + "11" * 20, "128")  # fmt: skip
            sas, pols = ours(two_sites.a)
            assert len(sas) == 2 and len(pols) == 2
            gone = pols[0].config
            assert gone is not None
            with xfrm_in(two_sites.a) as x:
                x.delete_policy(gone.direction, gone.selector)
            assert settled(agent).converged
            assert {p.config for p in ours(two_sites.a)[1]} == {p.config for p in pols}
            assert ping(two_sites.a, 56)
            # a key file others may read: the tunnel is taken down, not left in clear
            key.chmod(0o644)
            result = agent.reconcile_once("test")
            assert result.results["L2TPTunnel/site-a"].reason == "InvalidKey"
            assert ours(two_sites.a) == ([], [])
            deadline = time.monotonic() + 10
            while ip(two_sites.a, "l2tp", "show", "tunnel").strip():  # deleted asynchronously
                assert time.monotonic() < deadline, "the withheld tunnel was not removed"
                time.sleep(0.1)
            key.chmod(0o600)
            assert settled(agent).converged
            assert ping(two_sites.a, 56)
            # removal leaves nothing of the agent's
            (mdir / "a.yaml").unlink()
            agent.reconcile_once("test")
            assert ours(two_sites.a) == ([], [])
            with xfrm_in(two_sites.a) as x:
                assert [s.spi for s in x.dump_sas()] == [0x1000]
        finally:
            store.close()


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


FAR_MANIFEST = """\
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPTunnel
metadata: {{name: site-b}}
spec:
  nodeName: site-b
  tunnelID: 4000
  peerTunnelID: 3000
  local: 192.0.2.2
  remote: 192.0.2.1
  udp: {{sourcePort: 6000, destinationPort: 5000}}
  encryption: {{keyFile: {key}, keyID: 1}}
---
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPSession
metadata: {{name: site-b-1}}
spec:
  tunnelRef: site-b
  sessionID: 2000
  peerSessionID: 1000
  interfaceName: pw0
  interface:
    addresses: [{{address: 198.51.100.2, peer: 198.51.100.1}}]
"""


def test_rotation_under_traffic_loses_nothing(two_sites: TwoSites, tmp_path: Path) -> None:
    """Two agents, 20 pings a second; each end changes keyID at its own moment (1 s apart, in a
    3 s window): not one ping lost, and both ends end on the new key alone."""
    window = 3.0
    ends = []
    for ns, node, text in (
        (two_sites.a, "site-a", MANIFEST),
        (two_sites.b, "site-b", FAR_MANIFEST),
    ):
        d = tmp_path / node
        d.mkdir()
        key = d / "key"
        key.write_bytes(SECRET)
        key.chmod(0o600)
        (d / "m").mkdir()
        (d / "m" / "t.yaml").write_text(text.format(key=key))
        with in_netns(ns):
            kernel = Kernel()
        store = StateStore(d / "state")
        agent = Agent(AgentConfig(node, d / "m", d / "state", 30.0), kernel, store,
                      xfrm=XfrmStep(nl.Xfrm, window=window))  # fmt: skip
        ends.append((ns, agent, d / "m" / "t.yaml", kernel, store))

    def round_all() -> bool:
        ok = True
        for ns, agent, _path, _k, _s in ends:
            with in_netns(ns):
                ok = agent.reconcile_once("test").converged and ok
        return ok

    def rotate(path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(path.read_text().replace("keyID: 1", "keyID: 2"))
        tmp.rename(path)

    try:
        deadline = time.monotonic() + 20
        while not round_all():
            assert time.monotonic() < deadline, "the two agents did not converge"
            time.sleep(0.2)
        ping(two_sites.a, 56, count=1)
        cmd = ["ip", "netns", "exec", two_sites.a, "ping", "-c", "200", "-i", "0.05", "-W", "1",
               "198.51.100.2"]  # fmt: skip
        traffic = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        start = time.monotonic()
        rotated: set[int] = set()
        while traffic.poll() is None:
            elapsed = time.monotonic() - start
            for i, at in ((0, 1.0), (1, 2.0)):
                if elapsed >= at and i not in rotated:
                    rotate(ends[i][2])
                    rotated.add(i)
            round_all()
            time.sleep(0.1)
        out = traffic.communicate()[0]
        assert " 0% packet loss" in out and "200 received" in out, out
        assert rotated == {0, 1}
        time.sleep(2 * window)
        round_all()
        for ns, _agent, _path, _k, _s in ends:
            sas, _pols = ours(ns)
            assert len(sas) == 2, [hex(s.spi) for s in sas]
        far = [s.spi for s in xfrm.desired(TUNNELS["udp4"], xfrm.KeyMaterial(SECRET, 2)).states]
        assert sorted(s.spi for s in ours(two_sites.a)[0]) == sorted(far)
    finally:
        for _ns, _agent, _path, kernel, store in ends:
            store.close()
            kernel.close()
