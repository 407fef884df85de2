"""Kernel-level objects as plain frozen data: what the plan wants and what netlink reports.

These are the contract between the pure layers (desired state, diff, plan) and the netlink layer,
which builds and parses messages from them. Field names follow the kernel's L2TP_ATTR_* names,
so code can be read against include/uapi/linux/l2tp.h.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

Encap = Literal["udp", "ip"]
L2SpecType = Literal["none", "default"]


@dataclass(frozen=True)
class TunnelConfig:
    """An unmanaged L2TPv3 tunnel as L2TP_CMD_TUNNEL_CREATE takes it (every field is immutable)."""

    tunnel_id: int
    peer_tunnel_id: int
    encap: Encap
    local: str
    remote: str
    udp_sport: int | None = None
    udp_dport: int | None = None
    udp_csum: bool = False  # IPv4 only: L2TP_ATTR_UDP_CSUM
    udp6_csum_tx: bool = True  # IPv6 only: off is L2TP_ATTR_UDP_ZERO_CSUM6_TX
    udp6_csum_rx: bool = True  # IPv6 only: off is L2TP_ATTR_UDP_ZERO_CSUM6_RX

    @property
    def ipv6(self) -> bool:
        return ":" in self.local


@dataclass(frozen=True)
class SessionConfig:
    """An L2TPv3 Ethernet session as L2TP_CMD_SESSION_CREATE takes it.

    Only send_seq/recv_seq can change in place (L2TP_CMD_SESSION_MODIFY); everything else needs
    the session to be replaced. ``ifname`` None lets the kernel pick l2tpethN.
    """

    tunnel_id: int
    session_id: int
    peer_session_id: int
    cookie: bytes = b""
    peer_cookie: bytes = b""
    l2spec_type: L2SpecType = "default"
    send_seq: bool = False
    recv_seq: bool = False
    ifname: str | None = None


@dataclass(frozen=True)
class Stats:
    """The kernel's L2TP_ATTR_STATS counters (attributes 10 and 11 since 5.10/5.12)."""

    tx_packets: int = 0
    tx_bytes: int = 0
    tx_errors: int = 0
    rx_packets: int = 0
    rx_bytes: int = 0
    rx_errors: int = 0
    rx_seq_discards: int = 0
    rx_oos_packets: int = 0
    rx_cookie_discards: int = 0
    rx_invalid: int = 0


STATS_FIELDS: tuple[str, ...] = tuple(Stats.__dataclass_fields__)
"""Stats' field names in order: the order of the counters in a Counters tuple."""

Counters = tuple[int, ...]
"""One object's Stats as a plain tuple in STATS_FIELDS order (a scrape reads one per object)."""
TunnelCounters = tuple[int, Counters]
"""(tunnel_id, counters): what a scrape needs of a tunnel."""
SessionCounters = tuple[int, int, str | None, Counters]
"""(tunnel_id, session_id, interface name, counters): what a scrape needs of a session."""


@dataclass(frozen=True)
class ObservedTunnel:
    config: TunnelConfig
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class ObservedSession:
    config: SessionConfig  # ifname is the actual interface name
    stats: Stats = field(default_factory=Stats)


@dataclass(frozen=True)
class Address:
    """An interface address; ``peer`` makes it point-to-point (ip addr add A peer P)."""

    address: str  # "198.51.100.1/32" (always with a prefix length)
    peer: str | None = None  # "198.51.100.2/32"


@dataclass(frozen=True)
class ObservedLink:
    ifname: str
    index: int
    kind: str  # "l2tp", "bridge", "vlan", "veth", "" ...
    up: bool
    mtu: int
    master_index: int | None = None
    addresses: tuple[Address, ...] = ()
    vlan_id: int | None = None
    parent_index: int | None = None  # IFLA_LINK for VLANs
    addr_gen_mode: str | None = None  # IFLA_INET6_ADDR_GEN_MODE by name; None: no IPv6 on it
    qdisc: str | None = None  # IFLA_QDISC: the root qdisc's kind ("noop" while down, unset)


class Outcome(Enum):
    """What a failed kernel call means for the user; mapped from errno by the netlink layer."""

    EXISTS = "Exists"  # EEXIST: the id or name is taken
    ADDRESS_IN_USE = "AddressInUse"  # EADDRINUSE: local ip:port already bound
    ADDRESS_NOT_AVAILABLE = "AddressNotAvailable"  # EADDRNOTAVAIL: local not on this host
    NETWORK_UNREACHABLE = "NetworkUnreachable"  # ENETUNREACH: no route to remote
    NOT_FOUND = "NotFound"  # ENODEV/ENOENT: tunnel/session/link gone
    NOT_SUPPORTED = "KernelUnsupported"  # no l2tp genl family / module missing
    PERMISSION = "PermissionDenied"  # EPERM/EACCES: no CAP_NET_ADMIN
    INVALID = "InvalidArgument"  # EINVAL/ERANGE
    BUSY = "Busy"  # EBUSY/EAGAIN: try again
    OTHER = "KernelError"


class KernelError(Exception):
    """A kernel call failed; ``outcome`` says what that means, ``errno`` what the kernel said."""

    def __init__(self, operation: str, errno: int, outcome: Outcome, detail: str = "") -> None:
        self.operation = operation
        self.errno = errno
        self.outcome = outcome
        self.detail = detail
        super().__init__(
            f"{operation}: {outcome.value} (errno {errno}){': ' + detail if detail else ''}"
        )
