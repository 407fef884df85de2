"""Encrypted tunnels: the key schedule, the XFRM states and policies a tunnel needs, rotation.

Both ends share one secret and nothing else. From it, HKDF-SHA256 derives, per direction of a
tunnel (sender's tunnel id and address -> receiver's), per key id and per algorithm, the ESP key
and the SPI, so the two ends compute the same SAs independently and the two directions never share
a key (nor, therefore, a nonce space). ESP runs in transport mode on exactly the tunnel's flow
(its UDP ports, or IP protocol 115, between local and remote), so nothing else on the node is
encrypted or dropped.

Ownership: every state and policy the agent makes carries a reqid in ``REQID_TAG``'s range (the
reqid is the tunnel's local id in the low 28 bits); the agent lists, repairs and removes only
those, never a foreign state or policy.

Keys live in ``bytes`` fields with ``repr=False``: no log line, status or exception built from
these objects can print one.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kube_l2tp.api.model import Tunnel
from kube_l2tp.api.overhead import DEFAULT_ESP_AEAD, ESP_AEADS, EspAead

AF_INET = 2
AF_INET6 = 10
IPPROTO_UDP = 17
IPPROTO_ESP = 50
IPPROTO_L2TP = 115

REQID_TAG = 0xB0000000
REQID_MASK = 0xF0000000
REPLAY_WINDOW = 32  # packets: the most the kernel keeps without ESN (a u32 bitmap)
# A lower number wins. ip's default is 0 and wins over ours; strongSwan's computed priorities
# (hundreds of thousands) lose to ours: its broader host-to-host policies do not take the flow.
POLICY_PRIORITY = 1000
MIN_SPI = 0x100  # RFC 4303: 1..255 are reserved by IANA
MIN_SECRET_BYTES = 16
MAX_SECRET_BYTES = 1024
MAX_KEY_ID = 0xFFFF
KDF_LABEL = b"kube-l2tp xfrm v1"

Dir = Literal["in", "out"]


class XfrmConfigError(ValueError):
    """Bad encryption input, caught before anything is applied. ``reason`` is a condition reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def aead(name: str) -> EspAead:
    try:
        return ESP_AEADS[name]
    except KeyError:
        allowed = ", ".join(sorted(ESP_AEADS))
        raise XfrmConfigError(
            "UnknownAlgorithm", f"encryption.algorithm {name!r} is not one of: {allowed}"
        ) from None


def check_secret(secret: bytes, alg: EspAead) -> None:
    """A secret shorter than the cipher key would cap the key's strength; refuse it."""
    least = max(MIN_SECRET_BYTES, alg.cipher_key)
    if not least <= len(secret) <= MAX_SECRET_BYTES:
        raise XfrmConfigError(
            "InvalidKey",
            f"the encryption secret has {len(secret)} bytes; {alg.name} needs {least} to"
            f" {MAX_SECRET_BYTES} random bytes (e.g. head -c 32 /dev/urandom)",
        )


@dataclass(frozen=True)
class Flow:
    """One direction of a tunnel's traffic, as the packets carry it."""

    src: str
    dst: str
    src_tunnel_id: int  # the sender's own tunnel id
    dst_tunnel_id: int  # the receiver's
    proto: int  # IPPROTO_UDP or IPPROTO_L2TP
    sport: int = 0
    dport: int = 0

    @property
    def family(self) -> int:
        return AF_INET6 if ":" in self.src else AF_INET

    def context(self) -> bytes:
        """What binds a derived value to this direction: both tunnel ids and both addresses.

        Ports are left out on purpose: a port change (a NAT rule, a re-plan) keeps the keys.
        """
        return (
            struct.pack("!IIB", self.src_tunnel_id, self.dst_tunnel_id, self.family)
            + ipaddress.ip_address(self.src).packed
            + ipaddress.ip_address(self.dst).packed
        )


def flows(tunnel: Tunnel) -> tuple[Flow, Flow]:
    """(outbound, inbound) for this end of ``tunnel``."""
    local = str(ipaddress.ip_address(tunnel.local))
    remote = str(ipaddress.ip_address(tunnel.remote))
    udp = tunnel.encapsulation == "udp" and tunnel.udp is not None
    proto = IPPROTO_UDP if udp else IPPROTO_L2TP
    sport = tunnel.udp.source_port if udp and tunnel.udp else 0
    dport = tunnel.udp.destination_port if udp and tunnel.udp else 0
    out = Flow(local, remote, tunnel.tunnel_id, tunnel.peer_tunnel_id, proto, sport, dport)
    inn = Flow(remote, local, tunnel.peer_tunnel_id, tunnel.tunnel_id, proto, dport, sport)
    return out, inn


def hkdf_sha256(ikm: bytes, info: bytes, length: int, salt: bytes | None = None) -> bytes:
    """RFC 5869 HKDF with SHA-256 (the primitive; cryptography's implementation)."""
    return HKDF(algorithm=SHA256(), length=length, salt=salt, info=info).derive(ikm)


def kdf_info(purpose: bytes, flow: Flow, key_id: int, alg: EspAead) -> bytes:
    """HKDF's info: label, purpose (b"spi" or b"key"), algorithm, key id (u16), the flow's context.

    Written out so a far end that is not this agent can reimplement the schedule.
    """
    head = b"\0".join((KDF_LABEL, purpose, alg.name.encode()))
    return head + struct.pack("!H", key_id) + flow.context()


def _hkdf(secret: bytes, purpose: bytes, flow: Flow, key_id: int, alg: EspAead, n: int) -> bytes:
    return hkdf_sha256(secret, kdf_info(purpose, flow, key_id, alg), n)


@dataclass(frozen=True)
class SaKey:
    """What one direction's SA needs from the key schedule."""

    spi: int
    key: bytes = field(repr=False)  # cipher key + salt, as XFRMA_ALG_AEAD takes it


def derive(secret: bytes, flow: Flow, key_id: int, alg: EspAead) -> SaKey:
    """The SPI and ESP key of ``flow`` for ``key_id``: the same at both ends."""
    check_secret(secret, alg)
    if not 0 <= key_id <= MAX_KEY_ID:
        raise XfrmConfigError("InvalidKey", f"encryption.keyID {key_id} is not in 0..{MAX_KEY_ID}")
    raw = int.from_bytes(_hkdf(secret, b"spi", flow, key_id, alg, 4), "big")
    spi = MIN_SPI + raw % (0x1_0000_0000 - MIN_SPI)
    return SaKey(spi, _hkdf(secret, b"key", flow, key_id, alg, alg.kernel_key))


def reqid(tunnel_id: int) -> int:
    return REQID_TAG | (tunnel_id & ~REQID_MASK & 0xFFFFFFFF)


def owned(reqid_value: int) -> bool:
    """Whether a state or policy with this reqid is the agent's."""
    return reqid_value & REQID_MASK == REQID_TAG


@dataclass(frozen=True)
class Selector:
    """struct xfrm_selector for one host-to-host flow (full prefix lengths)."""

    family: int
    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0

    @classmethod
    def of(cls, flow: Flow) -> Selector:
        return cls(flow.family, flow.src, flow.dst, flow.proto, flow.sport, flow.dport)

    @property
    def prefixlen(self) -> int:
        return 128 if self.family == AF_INET6 else 32


@dataclass(frozen=True)
class SaConfig:
    """One transport-mode ESP SA as the kernel holds it. Identity: (family, dst, spi), proto ESP."""

    family: int
    src: str
    dst: str
    spi: int
    reqid: int
    selector: Selector
    aead_name: str  # the kernel's algorithm name
    key: bytes = field(repr=False)  # cipher key + salt
    icv_bits: int = 128
    replay_window: int = REPLAY_WINDOW

    @property
    def ident(self) -> tuple[int, str, int]:
        return (self.family, self.dst, self.spi)


@dataclass(frozen=True)
class XfrmState:
    """A desired SA: which tunnel, direction and key id it serves, and its kernel form."""

    tunnel: str  # the L2TPTunnel's name (status and metrics; the kernel never sees it)
    direction: Dir
    key_id: int
    config: SaConfig


@dataclass(frozen=True)
class PolicyConfig:
    """A policy requiring ESP (transport, one reqid) on a flow. Identity: (direction, selector)."""

    direction: Dir
    selector: Selector
    reqid: int
    tmpl_src: str
    tmpl_dst: str
    priority: int = POLICY_PRIORITY

    @property
    def ident(self) -> tuple[Dir, Selector]:
        return (self.direction, self.selector)


@dataclass(frozen=True)
class XfrmPolicy:
    tunnel: str
    config: PolicyConfig


@dataclass(frozen=True)
class SaCounters:
    """What the kernel counts per SA (lifetime current, and struct xfrm_stats)."""

    bytes: int = 0
    packets: int = 0
    replay_window: int = 0  # packets outside the replay window
    replay: int = 0  # replayed packets
    integrity_failed: int = 0  # ICV check failures: a wrong key at one end, or tampering


@dataclass(frozen=True)
class ObservedSa:
    config: SaConfig
    add_time: int = 0  # epoch seconds (curlft.add_time)
    counters: SaCounters = SaCounters()


@dataclass(frozen=True)
class Encryption:
    """A tunnel's encryption settings once its secret is read (the API's spec.encryption)."""

    secret: bytes = field(repr=False)
    key_id: int = 0
    algorithm: str = DEFAULT_ESP_AEAD


def sa(tunnel: Tunnel, enc: Encryption, direction: Dir, key_id: int) -> XfrmState:
    """The SA of one direction of ``tunnel`` under ``key_id``."""
    alg = aead(enc.algorithm)
    out, inn = flows(tunnel)
    flow = out if direction == "out" else inn
    k = derive(enc.secret, flow, key_id, alg)
    config = SaConfig(
        family=flow.family,
        src=flow.src,
        dst=flow.dst,
        spi=k.spi,
        reqid=reqid(tunnel.tunnel_id),
        selector=Selector.of(flow),
        aead_name=alg.kernel_name,
        key=k.key,
        icv_bits=alg.icv * 8,
    )
    return XfrmState(tunnel.name, direction, key_id, config)


def policies(tunnel: Tunnel) -> tuple[XfrmPolicy, XfrmPolicy]:
    """(out, in): ESP required on exactly this tunnel's flow, both ways."""
    out, inn = flows(tunnel)
    rid = reqid(tunnel.tunnel_id)
    return (
        XfrmPolicy(tunnel.name, PolicyConfig("out", Selector.of(out), rid, out.src, out.dst)),
        XfrmPolicy(tunnel.name, PolicyConfig("in", Selector.of(inn), rid, inn.src, inn.dst)),
    )


# Rotation: which key ids have SAs, as a pure function of the target key id, what is installed
# (with the time each inbound SA was added, which the kernel keeps: curlft.add_time) and the clock.
# A new key id installs its inbound SA first; the outbound SA switches one window later (the far
# end has had that window to install its inbound SA); the old inbound SAs go one more window later
# (the far end has had that long to switch its outbound). Both ends may start a rotation at any
# moment within one window of each other without losing a packet.
DEFAULT_ROTATION_WINDOW = 60.0  # seconds


@dataclass(frozen=True)
class Installed:
    """The agent's SAs of one tunnel found in the kernel: key id -> add time (epoch seconds)."""

    inbound: Mapping[int, float] = field(default_factory=dict)
    outbound: Mapping[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class KeySet:
    """The key ids whose SAs a tunnel should have now, and when to look again."""

    inbound: frozenset[int]
    outbound: int
    next_step_at: float | None = None  # None: steady, nothing will change with time alone


def rotation(target: int, installed: Installed, now: float, window: float) -> KeySet:
    """The key ids to have installed now (the plan adds and removes SAs to match)."""
    old_in = frozenset(installed.inbound) - {target}
    old_out = sorted(
        (k for k in installed.outbound if k != target), key=lambda k: installed.outbound[k]
    )
    if target not in installed.inbound:
        if not old_out:  # a new tunnel, or one whose old SAs are gone: nothing to keep working
            return KeySet(frozenset({target}), target)
        return KeySet(old_in | {target}, old_out[-1], now + window)
    since = installed.inbound[target]
    if now < since + window and old_out and target not in installed.outbound:
        return KeySet(old_in | {target}, old_out[-1], since + window)
    if old_in and now < since + 2 * window:
        return KeySet(old_in | {target}, target, since + 2 * window)
    return KeySet(frozenset({target}), target)


@dataclass(frozen=True)
class TunnelXfrm:
    """What a tunnel needs now.

    ``states`` are complete (the plan creates and repairs them); ``kept`` are the older key ids'
    SAs, (direction, key id), that the plan leaves as they are while present and never recreates:
    their key may come from a secret that has since been replaced, so the agent cannot rebuild them.
    """

    states: tuple[XfrmState, ...]
    policies: tuple[XfrmPolicy, ...]
    kept: frozenset[tuple[Dir, int]] = frozenset()
    next_step_at: float | None = None


def desired(
    tunnel: Tunnel,
    enc: Encryption,
    installed: Installed | None = None,
    now: float = 0.0,
    window: float = DEFAULT_ROTATION_WINDOW,
) -> TunnelXfrm:
    """The states and policies ``tunnel`` needs now, given what the kernel holds of its SAs."""
    keys = rotation(enc.key_id, installed or Installed(), now, window)
    states = [sa(tunnel, enc, "in", enc.key_id)]
    kept: set[tuple[Dir, int]] = {("in", k) for k in keys.inbound - {enc.key_id}}
    if keys.outbound == enc.key_id:
        states.append(sa(tunnel, enc, "out", enc.key_id))
    else:
        kept.add(("out", keys.outbound))
    return TunnelXfrm(tuple(states), policies(tunnel), frozenset(kept), keys.next_step_at)


def spi_clashes(states: Iterable[XfrmState]) -> list[tuple[XfrmState, XfrmState]]:
    """Pairs of desired SAs the kernel could not tell apart (same family, destination and SPI).

    Derived SPIs collide with probability ~n^2/2^33; the plan refuses the second of a pair with a
    clear condition instead of replacing the first.
    """
    seen: dict[tuple[int, str, int], XfrmState] = {}
    clashes = []
    for s in states:
        first = seen.setdefault(s.config.ident, s)
        if first is not s and first != s:
            clashes.append((first, s))
    return clashes


def reqid_clashes(tunnels: Iterable[Tunnel]) -> list[tuple[Tunnel, Tunnel]]:
    """Tunnels of one node whose reqids would coincide (tunnel ids equal in their low 28 bits)."""
    seen: dict[int, Tunnel] = {}
    clashes = []
    for t in tunnels:
        first = seen.setdefault(reqid(t.tunnel_id), t)
        if first is not t:
            clashes.append((first, t))
    return clashes
