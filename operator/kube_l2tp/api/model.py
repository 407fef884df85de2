"""The resource model: typed, immutable views of validated L2TPTunnel and L2TPSession objects.

Objects are built only from documents that passed the CRD's schema and rules (with defaults
applied), so the constructors here trust types and bounds and do no checking of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from kube_l2tp.api import overhead

Encap = Literal["udp", "ip"]
L2SpecType = Literal["default", "none"]
Sequencing = Literal["none", "send", "recv", "both"]
AddrGenMode = Literal["eui64", "none", "random"]
Qdisc = Literal["noqueue", "pfifo_fast", "fq_codel"]


@dataclass(frozen=True)
class Udp:
    source_port: int
    destination_port: int
    checksum: bool = False
    ipv6_checksum_tx: bool = True
    ipv6_checksum_rx: bool = True


@dataclass(frozen=True)
class Encryption:
    """spec.encryption: where the shared secret is and how it is used (never the secret)."""

    algorithm: str = overhead.DEFAULT_ESP_AEAD
    key_id: int = 0
    secret_namespace: str | None = None  # secretRef, in a cluster
    secret_name: str | None = None
    key_file: str | None = None  # standalone

    @property
    def aead(self) -> overhead.EspAead:
        return overhead.ESP_AEADS[self.algorithm]

    @classmethod
    def from_spec(cls, raw: dict[str, Any] | None) -> Encryption | None:
        if not raw:
            return None
        ref = raw.get("secretRef") or {}
        return cls(
            algorithm=raw.get("algorithm", overhead.DEFAULT_ESP_AEAD),
            key_id=raw.get("keyID", 0),
            secret_namespace=ref.get("namespace"),
            secret_name=ref.get("name"),
            key_file=raw.get("keyFile"),
        )


@dataclass(frozen=True)
class Tunnel:
    name: str
    node: str
    tunnel_id: int
    peer_tunnel_id: int
    local: str
    remote: str
    encapsulation: Encap = "udp"
    udp: Udp | None = None
    source: str = ""
    generation: int = 0
    encryption: Encryption | None = None

    @property
    def ipv6(self) -> bool:
        return ":" in self.local

    @classmethod
    def from_object(cls, obj: dict[str, Any], source: str = "") -> Tunnel:
        spec = obj["spec"]
        udp = spec.get("udp")
        return cls(
            name=obj["metadata"]["name"],
            node=spec["nodeName"],
            tunnel_id=spec["tunnelID"],
            peer_tunnel_id=spec["peerTunnelID"],
            local=spec["local"],
            remote=spec["remote"],
            encapsulation=spec.get("encapsulation", "udp"),
            udp=Udp(
                source_port=udp["sourcePort"],
                destination_port=udp["destinationPort"],
                checksum=udp.get("checksum", False),
                ipv6_checksum_tx=udp.get("ipv6ChecksumTx", True),
                ipv6_checksum_rx=udp.get("ipv6ChecksumRx", True),
            )
            if udp
            else None,
            source=source,
            generation=obj["metadata"].get("generation", 0),
            encryption=Encryption.from_spec(spec.get("encryption")),
        )


@dataclass(frozen=True)
class AddressSpec:
    address: str  # as written: "198.51.100.1" or "198.51.100.1/32"
    peer: str | None = None

    @staticmethod
    def with_prefix(addr: str) -> str:
        """ip's rule: an address without a prefix length is a host address."""
        if "/" in addr:
            return addr
        return addr + ("/128" if ":" in addr else "/32")


IpamType = Literal["none", "static", "host-local", "whereabouts"]


@dataclass(frozen=True)
class IpRange:
    subnet: str  # as written: "203.0.113.0/24"
    range_start: str | None = None
    range_end: str | None = None


@dataclass(frozen=True)
class PodNetwork:
    """A bridge offered to pods: the NetworkAttachmentDefinition's place and its IPAM."""

    namespace: str
    name: str
    ipam: IpamType = "none"
    ranges: tuple[IpRange, ...] = ()
    hairpin_mode: bool = False


@dataclass(frozen=True)
class Bridge:
    name: str
    ports: tuple[str, ...] = ()
    pod_network: PodNetwork | None = None


@dataclass(frozen=True)
class Vlan:
    id: int
    name: str | None = None
    bridge: Bridge | None = None

    def ifname(self, parent: str) -> str:
        return self.name or f"{parent}.{self.id}"


@dataclass(frozen=True)
class Interface:
    up: bool = True
    mtu: int | None = None
    addresses: tuple[AddressSpec, ...] = ()
    bridge: Bridge | None = None
    vlans: tuple[Vlan, ...] = ()
    ipv6_addr_gen_mode: AddrGenMode | None = None  # None: none on a bridge port, else the kernel's
    qdisc: Qdisc | None = None  # None: the kernel's

    @property
    def addr_gen_mode(self) -> AddrGenMode | None:
        """The mode to set: a bridge port needs no IPv6 link-local address (networkd's default for
        bridge ports); a routed interface keeps the kernel's, as ip leaves it (None)."""
        if self.ipv6_addr_gen_mode is not None:
            return self.ipv6_addr_gen_mode
        return "none" if self.bridge is not None else None


def _bridge(raw: dict[str, Any] | None) -> Bridge | None:
    if not raw:
        return None
    pods = raw.get("podNetwork")
    ipam = (pods or {}).get("ipam") or {}
    return Bridge(
        name=raw["name"],
        ports=tuple(raw.get("ports", ())),
        pod_network=PodNetwork(
            namespace=pods["namespace"],
            name=pods["name"],
            ipam=ipam.get("type", "none"),
            ranges=tuple(
                IpRange(r["subnet"], r.get("rangeStart"), r.get("rangeEnd"))
                for r in ipam.get("ranges", ())
            ),
            hairpin_mode=pods.get("hairpinMode", False),
        )
        if pods
        else None,
    )


@dataclass(frozen=True)
class Session:
    name: str
    tunnel_ref: str
    session_id: int
    peer_session_id: int
    node: str | None = None
    interface_name: str | None = None
    cookie: str | None = None  # hex, as written
    peer_cookie: str | None = None
    l2spec_type: L2SpecType = "default"
    sequencing: Sequencing = "none"
    offset: int = 0
    peer_offset: int = 0
    interface: Interface = Interface()
    source: str = ""
    generation: int = 0

    @property
    def send_seq(self) -> bool:
        return self.sequencing in ("send", "both")

    @property
    def recv_seq(self) -> bool:
        return self.sequencing in ("recv", "both")

    @property
    def cookie_bytes(self) -> bytes:
        return bytes.fromhex(self.cookie) if self.cookie else b""

    @property
    def peer_cookie_bytes(self) -> bytes:
        return bytes.fromhex(self.peer_cookie) if self.peer_cookie else b""

    def kernel_mtu(self, tunnel: Tunnel, underlay_mtu: int = overhead.DEFAULT_UNDERLAY_MTU) -> int:
        """The MTU the kernel computes for this session's interface."""
        return self._mtu(tunnel, underlay_mtu, None)

    def encrypted_mtu(
        self, tunnel: Tunnel, underlay_mtu: int = overhead.DEFAULT_UNDERLAY_MTU
    ) -> int | None:
        """The largest MTU whose frames still fit the underlay once ESP is added (None: clear)."""
        if tunnel.encryption is None:
            return None
        return self._mtu(tunnel, underlay_mtu, tunnel.encryption.aead)

    def _mtu(self, tunnel: Tunnel, underlay_mtu: int, esp: overhead.EspAead | None) -> int:
        return overhead.session_mtu(
            ipv6=tunnel.ipv6,
            udp=tunnel.encapsulation == "udp",
            cookie_len=len(self.cookie_bytes),
            l2spec_default=self.l2spec_type == "default",
            underlay_mtu=underlay_mtu,
            esp=esp,
        )

    @classmethod
    def from_object(cls, obj: dict[str, Any], source: str = "") -> Session:
        spec = obj["spec"]
        iface = spec.get("interface") or {}
        return cls(
            name=obj["metadata"]["name"],
            tunnel_ref=spec["tunnelRef"],
            session_id=spec["sessionID"],
            peer_session_id=spec["peerSessionID"],
            node=spec.get("nodeName"),
            interface_name=spec.get("interfaceName"),
            cookie=spec.get("cookie"),
            peer_cookie=spec.get("peerCookie"),
            l2spec_type=spec.get("l2specType", "default"),
            sequencing=spec.get("sequencing", "none"),
            offset=spec.get("offset", 0),
            peer_offset=spec.get("peerOffset", 0),
            interface=Interface(
                up=iface.get("up", True),
                mtu=iface.get("mtu"),
                addresses=tuple(
                    AddressSpec(a["address"], a.get("peer")) for a in iface.get("addresses", ())
                ),
                bridge=_bridge(iface.get("bridge")),
                vlans=tuple(
                    Vlan(v["id"], v.get("name"), _bridge(v.get("bridge")))
                    for v in iface.get("vlans", ())
                ),
                ipv6_addr_gen_mode=iface.get("ipv6AddrGenMode"),
                qdisc=iface.get("qdisc"),
            ),
            source=source,
            generation=obj["metadata"].get("generation", 0),
        )


@dataclass(frozen=True)
class Resources:
    """A consistent set of tunnels and sessions (from a directory, or from the API)."""

    tunnels: tuple[Tunnel, ...] = ()
    sessions: tuple[Session, ...] = ()

    def tunnel(self, name: str) -> Tunnel | None:
        return self._tunnels_by_name.get(name)

    @cached_property
    def _tunnels_by_name(self) -> dict[str, Tunnel]:
        """Built on first lookup: validation looks up every session's tunnel (O(N) each before)."""
        by_name: dict[str, Tunnel] = {}
        for t in self.tunnels:
            by_name.setdefault(t.name, t)  # the first of duplicates, as the search found it
        return by_name

    def for_node(self, node: str) -> Resources:
        """The objects a node's agent programs: its tunnels and their sessions."""
        tunnels = tuple(t for t in self.tunnels if t.node == node)
        names = {t.name for t in tunnels}
        return Resources(tunnels, tuple(s for s in self.sessions if s.tunnel_ref in names))
