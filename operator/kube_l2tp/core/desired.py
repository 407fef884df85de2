"""Desired kernel state for one node, derived from its resources; and what the agent owns.

Everything here is normalized (canonical address text, prefix lengths, checksum flags that do
not apply to the family set to their defaults) so that desired and observed compare with ``==``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from kube_l2tp.api.model import AddressSpec, Bridge, Resources, Session, Tunnel
from kube_l2tp.core.state import Address, SessionConfig, TunnelConfig


def canonical_ip(text: str) -> str:
    return str(ipaddress.ip_address(text))


def canonical_address(a: Address) -> Address:
    """Addresses with prefix lengths, as the kernel reports them.

    With a peer the kernel keeps one prefix length, and ``ip addr add A/24 peer P`` sends the
    peer's (iproute2 ipaddr_modify: ifa_prefixlen = peer.bitlen; a peer without one is a host):
    both ends get it here, so the address compares equal to what a dump reports.
    """
    if not a.peer:
        return Address(str(ipaddress.ip_interface(AddressSpec.with_prefix(a.address))), None)
    peer = ipaddress.ip_interface(AddressSpec.with_prefix(a.peer))
    local = ipaddress.ip_interface(a.address.split("/", 1)[0])
    prefix = peer.network.prefixlen
    return Address(f"{local.ip}/{prefix}", f"{peer.ip}/{prefix}")


def normalize_tunnel(cfg: TunnelConfig) -> TunnelConfig:
    """Drop what the kernel ignores for this family/encap, so equal configs compare equal."""
    ipv6 = ":" in cfg.local
    udp = cfg.encap == "udp"
    return TunnelConfig(
        tunnel_id=cfg.tunnel_id,
        peer_tunnel_id=cfg.peer_tunnel_id,
        encap=cfg.encap,
        local=canonical_ip(cfg.local),
        remote=canonical_ip(cfg.remote),
        udp_sport=cfg.udp_sport if udp else None,
        udp_dport=cfg.udp_dport if udp else None,
        udp_csum=cfg.udp_csum if udp and not ipv6 else False,
        udp6_csum_tx=cfg.udp6_csum_tx if udp and ipv6 else True,
        udp6_csum_rx=cfg.udp6_csum_rx if udp and ipv6 else True,
    )


@dataclass(frozen=True)
class DesiredVlan:
    vlan_id: int
    name: str | None  # None: <session interface>.<id>, known once the session exists
    bridge: Bridge | None

    def ifname(self, parent: str) -> str:
        return self.name or f"{parent}.{self.vlan_id}"


@dataclass(frozen=True)
class DesiredSession:
    name: str  # the L2TPSession's name
    tunnel: str  # the L2TPTunnel's name
    config: SessionConfig
    up: bool
    mtu: int | None
    addresses: tuple[Address, ...]
    bridge: Bridge | None
    vlans: tuple[DesiredVlan, ...]
    ignored: tuple[str, ...] = ()
    addr_gen_mode: str | None = None  # IPv6 link-local: "eui64", "none", ...; None: the kernel's
    qdisc: str | None = None  # root qdisc kind; None: the kernel's

    @property
    def key(self) -> tuple[int, int]:
        return (self.config.tunnel_id, self.config.session_id)


@dataclass(frozen=True)
class DesiredTunnel:
    name: str
    config: TunnelConfig


@dataclass(frozen=True)
class Desired:
    tunnels: dict[int, DesiredTunnel]
    sessions: dict[tuple[int, int], DesiredSession]


def tunnel_config(t: Tunnel) -> TunnelConfig:
    udp = t.udp
    return normalize_tunnel(
        TunnelConfig(
            tunnel_id=t.tunnel_id,
            peer_tunnel_id=t.peer_tunnel_id,
            encap=t.encapsulation,
            local=t.local,
            remote=t.remote,
            udp_sport=udp.source_port if udp else None,
            udp_dport=udp.destination_port if udp else None,
            udp_csum=udp.checksum if udp else False,
            udp6_csum_tx=udp.ipv6_checksum_tx if udp else True,
            udp6_csum_rx=udp.ipv6_checksum_rx if udp else True,
        )
    )


def session_config(s: Session, tunnel: Tunnel) -> SessionConfig:
    return SessionConfig(
        tunnel_id=tunnel.tunnel_id,
        session_id=s.session_id,
        peer_session_id=s.peer_session_id,
        cookie=s.cookie_bytes,
        peer_cookie=s.peer_cookie_bytes,
        l2spec_type=s.l2spec_type,
        send_seq=s.send_seq,
        recv_seq=s.recv_seq,
        ifname=s.interface_name,
    )


def desired_state(resources: Resources, node: str) -> Desired:
    """The kernel objects ``node`` should have. ``resources`` must be validated."""
    mine = resources.for_node(node)
    tunnels = {t.tunnel_id: DesiredTunnel(t.name, tunnel_config(t)) for t in mine.tunnels}
    by_name = {t.name: t for t in mine.tunnels}
    sessions: dict[tuple[int, int], DesiredSession] = {}
    for s in mine.sessions:
        tunnel = by_name[s.tunnel_ref]
        ignored = tuple(
            f"spec.{field_}: {value} is ignored by the kernel"
            for field_, value in (("offset", s.offset), ("peerOffset", s.peer_offset))
            if value
        )
        d = DesiredSession(
            name=s.name,
            tunnel=tunnel.name,
            config=session_config(s, tunnel),
            up=s.interface.up,
            mtu=s.interface.mtu,
            addresses=tuple(
                canonical_address(Address(a.address, a.peer)) for a in s.interface.addresses
            ),
            bridge=s.interface.bridge,
            vlans=tuple(DesiredVlan(v.id, v.name, v.bridge) for v in s.interface.vlans),
            ignored=ignored,
            addr_gen_mode=s.interface.addr_gen_mode,
            qdisc=s.interface.qdisc,
        )
        sessions[d.key] = d
    return Desired(tunnels, sessions)


@dataclass
class Owned:
    """What the agent created, so it never touches anything else (persisted in --state-dir).

    Ports are host interfaces the agent enslaved to a bridge because a session asked for it;
    releasing them is the only change the agent ever makes to an interface it did not create.
    """

    tunnels: set[int] = field(default_factory=set)
    sessions: set[tuple[int, int]] = field(default_factory=set)
    bridges: set[str] = field(default_factory=set)
    vlans: set[str] = field(default_factory=set)
    ports: dict[str, str] = field(default_factory=dict)  # host port -> bridge
    addresses: dict[str, set[Address]] = field(default_factory=dict)  # ifname -> added
    seq: dict[tuple[int, int], tuple[bool, bool]] = field(default_factory=dict)  # last set
    # The kernel never reports a session's l2spec type (l2tp_nl_session_send): remember it.
    l2spec: dict[tuple[int, int], str] = field(default_factory=dict)
    # Deleted by the agent but still reported: the kernel tears tunnels (and, since 6.12,
    # sessions) down asynchronously. (tunnel, 0) for a tunnel. Not persisted: after a restart an
    # object still being torn down is simply deleted again.
    deleting: set[tuple[int, int]] = field(default_factory=set)
    # Interface names of the sessions the agent deleted, until their devices are gone: since
    # 6.12 a session's device is unregistered after the delete returns. Not persisted.
    deleting_links: set[str] = field(default_factory=set)
    # The interface index each owned link (bridge, VLAN, host port, session device) had when
    # first seen: a link of the same name with another index was made by someone else.
    ifindex: dict[str, int] = field(default_factory=dict)
    # This boot (/proc/sys/kernel/random/boot_id) and network namespace (its inode): the
    # kernel's objects do not outlive either, so a record made in another is not ours.
    boot_id: str = ""
    netns: int = 0

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": 1,
                "boot_id": self.boot_id,
                "netns": self.netns,
                "ifindex": dict(sorted(self.ifindex.items())),
                "tunnels": sorted(self.tunnels),
                "sessions": sorted([t, s] for t, s in self.sessions),
                "bridges": sorted(self.bridges),
                "vlans": sorted(self.vlans),
                "ports": dict(sorted(self.ports.items())),
                "addresses": {
                    name: sorted([a.address, a.peer] for a in addrs)
                    for name, addrs in sorted(self.addresses.items())
                    if addrs
                },
                "seq": sorted([t, s, send, recv] for (t, s), (send, recv) in self.seq.items()),
                "l2spec": sorted([t, s, kind] for (t, s), kind in self.l2spec.items()),
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> Owned:
        raw: dict[str, Any] = json.loads(text)
        if raw.get("version") != 1:
            raise ValueError(f"unknown state version {raw.get('version')!r}")
        return cls(
            tunnels=set(raw["tunnels"]),
            sessions={(t, s) for t, s in raw["sessions"]},
            bridges=set(raw["bridges"]),
            vlans=set(raw["vlans"]),
            ports=dict(raw["ports"]),
            addresses={
                name: {Address(a, p) for a, p in addrs} for name, addrs in raw["addresses"].items()
            },
            seq={(t, s): (send, recv) for t, s, send, recv in raw.get("seq", [])},
            l2spec={(t, s): kind for t, s, kind in raw.get("l2spec", [])},
            ifindex={str(k): int(v) for k, v in raw.get("ifindex", {}).items()},
            boot_id=str(raw.get("boot_id", "")),
            netns=int(raw.get("netns", 0)),
        )

    def kernel_records_of(self, boot_id: str, netns: int) -> Owned:
        """This record if it was made in this boot and namespace; else an empty one for them.

        Ownership lives in the kernel's objects' lifetime: after a reboot (the record is on a
        hostPath) or in a re-created namespace, objects under the same ids or names were made
        by someone else (boot scripts, a human) and must not be taken as the agent's.
        """
        if (self.boot_id, self.netns) == (boot_id, netns):
            return self
        return Owned(boot_id=boot_id, netns=netns)
