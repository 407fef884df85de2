"""An in-memory model of the kernel behaviour the reconciler depends on (net/l2tp + rtnetlink).

Modelled on what the kernel really does (as the kernel suite finds): duplicate tunnel id -> EEXIST,
clashing local ip:port -> EADDRINUSE, local address not on the host -> EADDRNOTAVAIL, unknown
tunnel -> ENODEV, session interfaces named l2tpethN (lowest free N) with the computed MTU,
a tunnel delete cascading to its sessions, their links and VLANs on them. The kernel suite checks
the real kernel against the same expectations.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field, replace

from kube_l2tp.api import overhead
from kube_l2tp.core.state import (
    Address,
    KernelError,
    ObservedLink,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    Stats,
    TunnelConfig,
)


def fail(op: str, code: int, outcome: Outcome) -> KernelError:
    return KernelError(op, code, outcome)


@dataclass
class Link:
    name: str
    index: int
    kind: str
    up: bool = False
    mtu: int = 1500
    master: str | None = None
    addresses: set[Address] = field(default_factory=set)
    vlan_id: int | None = None
    parent: str | None = None
    addr_gen_mode: str = "eui64"  # the kernel's default (net.ipv6.conf.default.addr_gen_mode)
    qdisc: str | None = None  # None: the kernel's default, attached at up


@dataclass
class FakeKernel:
    host_addresses: set[str] = field(default_factory=lambda: {"192.0.2.1", "2001:db8::1"})
    tunnels: dict[int, TunnelConfig] = field(default_factory=dict)
    sessions: dict[tuple[int, int], SessionConfig] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)
    next_index: int = 10
    # the LAC behaviour: a peer sending sequence numbers turns send_seq on
    peer_sends_seq: bool = False
    # asynchronous teardown: a deleted tunnel stays visible (and its id taken) for this many
    # more tunnel dumps, as l2tp_tunnel_delete's work item runs later
    linger_dumps: int = 0
    lingering: dict[int, list[object]] = field(default_factory=dict)  # id -> [config, dumps left]
    # session counters, as a test moves them: (tunnel id, session id) -> what the dump reports
    stats: dict[tuple[int, int], Stats] = field(default_factory=dict)
    # 6.1's dumps resume by position: tunnel id -> how many more tunnel dumps (and session
    # dumps) leave it and its sessions out although it lives; a GET by id still finds it
    dump_skips: dict[int, int] = field(default_factory=dict)
    # a LAC-mode session whose peer sends frames without sequence numbers: the kernel turns
    # send_seq off (l2tp_recv_common) whenever recv_seq is off
    peer_unnumbered: bool = False
    # 6.12: a deleted session's device is unregistered later: name -> link dumps it survives
    lingering_links: dict[str, int] = field(default_factory=dict)
    session_linger_dumps: int = 0
    # dump_links raises BUSY (an interrupted dump) this many more times
    interrupted_link_dumps: int = 0
    gets: list[str] = field(default_factory=list)
    # each session's device by index: a link that took a stale name since is not the device
    devices: dict[tuple[int, int], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("lo", "eth0", "eth1"):
            self._add_link(name, "")

    def _add_link(self, name: str, kind: str, **kw: object) -> Link:
        self.next_index += 1
        link = Link(name, self.next_index, kind, **kw)  # type: ignore[arg-type]
        self.links[name] = link
        return link

    # --- dumps
    def _skipped(self, tunnel_id: int) -> bool:
        return self.dump_skips.get(tunnel_id, 0) > 0

    def dump_tunnels(self) -> list[ObservedTunnel]:
        out = [ObservedTunnel(c) for c in self.tunnels.values() if not self._skipped(c.tunnel_id)]
        for tid, entry in list(self.lingering.items()):
            out.append(ObservedTunnel(entry[0]))  # type: ignore[arg-type]
            entry[1] = int(entry[1]) - 1  # type: ignore[call-overload]
            if entry[1] <= 0:
                del self.lingering[tid]
        return out

    def _seen(self, key: tuple[int, int]) -> ObservedSession:
        cfg = self.sessions[key]
        # the kernel's dump has no L2SPEC_TYPE (l2tp_nl_session_send): the decoder's default
        seen = replace(cfg, l2spec_type="default")
        seen = replace(seen, send_seq=True) if self.peer_sends_seq else seen
        if self.peer_unnumbered and not cfg.recv_seq and cfg.send_seq:
            self.sessions[key] = replace(cfg, send_seq=False)
            seen = replace(seen, send_seq=False)
        return ObservedSession(seen, self.stats.get(key, Stats()))

    def dump_sessions(self) -> list[ObservedSession]:
        out = [self._seen(key) for key in list(self.sessions) if not self._skipped(key[0])]
        for tid in list(self.dump_skips):
            self.dump_skips[tid] -= 1
            if self.dump_skips[tid] <= 0:
                del self.dump_skips[tid]
        return out

    def get_tunnel(self, tunnel_id: int) -> ObservedTunnel | None:
        self.gets.append(f"get_tunnel {tunnel_id}")
        cfg = self.tunnels.get(tunnel_id)
        if cfg is None and tunnel_id in self.lingering:
            cfg = self.lingering[tunnel_id][0]  # type: ignore[assignment]
        return ObservedTunnel(cfg) if cfg is not None else None

    def get_session(self, tunnel_id: int, session_id: int) -> ObservedSession | None:
        self.gets.append(f"get_session {tunnel_id}/{session_id}")
        key = (tunnel_id, session_id)
        return self._seen(key) if key in self.sessions else None

    def dump_links(self) -> list[ObservedLink]:
        if self.interrupted_link_dumps > 0:
            self.interrupted_link_dumps -= 1
            raise fail("dump links", errno.EINTR, Outcome.BUSY)
        for name in list(self.lingering_links):
            self.lingering_links[name] -= 1
            if self.lingering_links[name] < 0:
                del self.lingering_links[name]
                self.links.pop(name, None)
        return [
            ObservedLink(
                ifname=link.name,
                index=link.index,
                kind=link.kind,
                up=link.up,
                mtu=link.mtu,
                master_index=self.links[link.master].index if link.master else None,
                addresses=tuple(sorted(link.addresses, key=str)),
                vlan_id=link.vlan_id,
                parent_index=self.links[link.parent].index if link.parent else None,
                addr_gen_mode=link.addr_gen_mode,
                qdisc=link.qdisc or ("fq_codel" if link.up else "noop"),
            )
            for link in self.links.values()
        ]

    # --- L2TP
    def create_tunnel(self, cfg: TunnelConfig) -> None:
        self.writes.append(f"create_tunnel {cfg.tunnel_id}")
        if cfg.tunnel_id in self.tunnels or cfg.tunnel_id in self.lingering:
            raise fail("create tunnel", errno.EEXIST, Outcome.EXISTS)
        if cfg.local not in self.host_addresses:
            raise fail("create tunnel", errno.EADDRNOTAVAIL, Outcome.ADDRESS_NOT_AVAILABLE)
        # a lingering tunnel still holds its socket: released in l2tp_tunnel_del_work
        others = [*self.tunnels.values(), *(e[0] for e in self.lingering.values())]
        for other in others:
            assert isinstance(other, TunnelConfig)
            same = (other.local, other.udp_sport, other.encap) == (cfg.local, cfg.udp_sport, "udp")
            if cfg.encap == "udp" and same:
                raise fail("create tunnel", errno.EADDRINUSE, Outcome.ADDRESS_IN_USE)
        self.tunnels[cfg.tunnel_id] = cfg

    def delete_tunnel(self, tunnel_id: int) -> None:
        self.writes.append(f"delete_tunnel {tunnel_id}")
        if tunnel_id not in self.tunnels:
            raise fail("delete tunnel", errno.ENODEV, Outcome.NOT_FOUND)
        cfg = self.tunnels.pop(tunnel_id)
        if self.linger_dumps:
            self.lingering[tunnel_id] = [cfg, self.linger_dumps]
        for key in [k for k in self.sessions if k[0] == tunnel_id]:
            self._drop_session(key)

    def _drop_session(self, key: tuple[int, int]) -> None:
        cfg = self.sessions.pop(key)
        device = self.links.get(cfg.ifname or "")
        if device is None or device.index != self.devices.pop(key, None):
            return  # its device is already gone (l2tp_eth_dev_uninit): nothing else goes
        if self.session_linger_dumps:
            self.lingering_links[cfg.ifname or ""] = self.session_linger_dumps
            return
        self._drop_link(cfg.ifname or "")

    def _drop_link(self, name: str) -> None:
        # a session whose device goes keeps its (now stale) IFNAME: l2tp_eth_dev_uninit
        self.links.pop(name, None)
        for vlan in [v for v in self.links.values() if v.parent == name]:
            self.links.pop(vlan.name)
        for link in self.links.values():
            if link.master == name:
                link.master = None

    def create_session(self, cfg: SessionConfig) -> None:
        self.writes.append(f"create_session {cfg.tunnel_id}/{cfg.session_id}")
        tunnel = self.tunnels.get(cfg.tunnel_id)
        if tunnel is None:
            raise fail("create session", errno.ENODEV, Outcome.NOT_FOUND)
        if (cfg.tunnel_id, cfg.session_id) in self.sessions:
            raise fail("create session", errno.EEXIST, Outcome.EXISTS)
        name = cfg.ifname
        if name is None:
            n = 0
            while f"l2tpeth{n}" in self.links:
                n += 1
            name = f"l2tpeth{n}"
        elif name in self.links:
            raise fail("create session", errno.EEXIST, Outcome.EXISTS)
        mtu = overhead.session_mtu(
            ipv6=":" in tunnel.local,
            udp=tunnel.encap == "udp",
            cookie_len=len(cfg.cookie),
            l2spec_default=cfg.l2spec_type == "default",
        )
        device = self._add_link(name, "l2tp", mtu=mtu)
        self.devices[(cfg.tunnel_id, cfg.session_id)] = device.index
        self.sessions[(cfg.tunnel_id, cfg.session_id)] = replace(cfg, ifname=name)

    def delete_session(self, tunnel_id: int, session_id: int) -> None:
        self.writes.append(f"delete_session {tunnel_id}/{session_id}")
        if (tunnel_id, session_id) not in self.sessions:
            raise fail("delete session", errno.ENOENT, Outcome.NOT_FOUND)
        self._drop_session((tunnel_id, session_id))

    def modify_session(
        self, tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
    ) -> None:
        self.writes.append(f"modify_session {tunnel_id}/{session_id}")
        key = (tunnel_id, session_id)
        self.sessions[key] = replace(self.sessions[key], send_seq=send_seq, recv_seq=recv_seq)

    # --- links
    def _link(self, name: str, op: str) -> Link:
        link = self.links.get(name)
        if link is None:
            raise fail(f"{op} {name}", errno.ENODEV, Outcome.NOT_FOUND)
        return link

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        self.writes.append(f"set_link {ifname} up={up} mtu={mtu}")
        link = self._link(ifname, "set link")
        if up is not None:
            link.up = up
        if mtu is not None:
            link.mtu = mtu

    def set_addr_gen_mode(self, ifname: str, mode: str) -> None:
        self.writes.append(f"set_addr_gen_mode {ifname} {mode}")
        self._link(ifname, "set addrgenmode").addr_gen_mode = mode

    def set_qdisc(self, ifname: str, kind: str) -> None:
        self.writes.append(f"set_qdisc {ifname} {kind}")
        self._link(ifname, "set qdisc").qdisc = kind

    def set_master(self, ifname: str, master: str | None) -> None:
        self.writes.append(f"set_master {ifname} {master}")
        link = self._link(ifname, "set master")
        if master is not None:
            self._link(master, "set master")
        link.master = master

    def add_address(self, ifname: str, addr: Address) -> None:
        self.writes.append(f"add_address {ifname} {addr.address}")
        link = self._link(ifname, "add address")
        if addr in link.addresses:
            raise fail("add address", errno.EEXIST, Outcome.EXISTS)
        link.addresses.add(addr)

    def del_address(self, ifname: str, addr: Address) -> None:
        self.writes.append(f"del_address {ifname} {addr.address}")
        self._link(ifname, "del address").addresses.discard(addr)

    def create_bridge(self, name: str) -> None:
        self.writes.append(f"create_bridge {name}")
        if name in self.links:
            raise fail("create bridge", errno.EEXIST, Outcome.EXISTS)
        self._add_link(name, "bridge")

    def create_vlan(self, name: str, parent: str, vlan_id: int) -> None:
        self.writes.append(f"create_vlan {name}")
        self._link(parent, "create vlan")
        if name in self.links:
            raise fail("create vlan", errno.EEXIST, Outcome.EXISTS)
        self._add_link(name, "vlan", vlan_id=vlan_id, parent=parent)

    def delete_link(self, name: str) -> None:
        self.writes.append(f"delete_link {name}")
        self._link(name, "delete link")
        self._drop_link(name)
