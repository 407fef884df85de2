"""Encrypted tunnels: the key schedule, the XFRM states and policies a tunnel needs, rotation.

Both ends share one secret and nothing else. From it, HKDF-SHA256 derives, per direction of a
tunnel (sender's tunnel id and address -> receiver's), per key id and per algorithm, the ESP key;
the same schedule over a public input gives the SPI. The two ends compute the same SAs
independently and the two directions never share a key (nor, therefore, a nonce space). ESP runs
in transport mode on exactly the tunnel's flow (its UDP ports, or IP protocol 115, between local
and remote), so nothing else on the node is encrypted or dropped.

Ownership: every state and policy the agent makes carries a reqid in ``REQID_TAG``'s range (the
reqid is the tunnel's local id in the low 28 bits); the agent lists, repairs and removes only
those, never a foreign state or policy.

Keys live in ``bytes`` fields with ``repr=False``: no log line, status or exception built from
these objects can print one.
"""

from __future__ import annotations

import ipaddress
import shlex
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kube_l2tp.api.model import Tunnel
from kube_l2tp.api.overhead import DEFAULT_ESP_AEAD, ESP_AEADS, EspAead
from kube_l2tp.api.reasons import Reason

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

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def aead(name: str) -> EspAead:
    try:
        return ESP_AEADS[name]
    except KeyError:
        allowed = ", ".join(sorted(ESP_AEADS))
        raise XfrmConfigError(
            Reason.UNKNOWN_ALGORITHM, f"encryption.algorithm {name!r} is not one of: {allowed}"
        ) from None


def check_secret(secret: bytes, alg: EspAead) -> None:
    """A secret shorter than the cipher key would cap the key's strength; refuse it."""
    least = max(MIN_SECRET_BYTES, alg.cipher_key)
    if not least <= len(secret) <= MAX_SECRET_BYTES:
        raise XfrmConfigError(
            Reason.INVALID_KEY,
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
    """The SPI and ESP key of ``flow`` for ``key_id``: the same at both ends.

    The key comes from the secret; the SPI from the same schedule over a public input (the label)
    instead: an SPI is sent in clear in every packet anyway, and an end with the wrong secret then
    still finds the SA and counts integrity failures on it (a diagnosable "wrong key") instead of
    dropping packets for an unknown SPI, which the kernel counts only per namespace.
    """
    check_secret(secret, alg)
    return SaKey(
        derive_spi(flow, key_id, alg), _hkdf(secret, b"key", flow, key_id, alg, alg.kernel_key)
    )


def derive_spi(flow: Flow, key_id: int, alg: EspAead) -> int:
    """The SPI of ``flow`` for ``key_id``: from public inputs only (see :func:`derive`)."""
    if not 0 <= key_id <= MAX_KEY_ID:
        raise XfrmConfigError(
            Reason.INVALID_KEY, f"encryption.keyID {key_id} is not in 0..{MAX_KEY_ID}"
        )
    raw = int.from_bytes(_hkdf(KDF_LABEL, b"spi", flow, key_id, alg, 4), "big")
    return MIN_SPI + raw % (0x1_0000_0000 - MIN_SPI)


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
class KeyMaterial:
    """A tunnel's spec.encryption once its secret is read: what the key schedule needs."""

    secret: bytes = field(repr=False)
    key_id: int = 0
    algorithm: str = DEFAULT_ESP_AEAD


def sa(tunnel: Tunnel, enc: KeyMaterial, direction: Dir, key_id: int) -> XfrmState:
    """The SA of one direction of ``tunnel`` under ``key_id``."""
    alg = aead(enc.algorithm)
    flow = flows(tunnel)[0 if direction == "out" else 1]
    k = derive(enc.secret, flow, key_id, alg)
    return XfrmState(tunnel.name, direction, key_id, _sa_config(tunnel, flow, alg, k))


def _sa_config(tunnel: Tunnel, flow: Flow, alg: EspAead, k: SaKey) -> SaConfig:
    return SaConfig(
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

    ``states`` are complete (the plan creates and repairs them); ``kept`` are the idents
    (family, dst, spi) of older keys' SAs that the plan leaves as they are while present and
    never recreates: their key may come from a secret since replaced, which the agent cannot
    rebuild.
    """

    states: tuple[XfrmState, ...]
    policies: tuple[XfrmPolicy, ...]
    kept: frozenset[tuple[int, str, int]] = frozenset()
    next_step_at: float | None = None


def installed(tunnel: Tunnel, enc: KeyMaterial, observed: Iterable[ObservedSa]) -> Installed:
    """What the kernel holds of ``tunnel``'s SAs, labelled for :func:`rotation`.

    The target key id's SAs are recognised by their SPIs (public: derivable without the secret);
    any other SA of the tunnel's flow is an older key's, labelled ``-spi`` (its key id is not
    needed: it is only kept or removed).
    """
    out, inn = flows(tunnel)
    alg = aead(enc.algorithm)
    rid = reqid(tunnel.tunnel_id)
    observed = tuple(observed)
    found: dict[Dir, dict[int, float]] = {"in": {}, "out": {}}
    pairs: tuple[tuple[Flow, Dir], ...] = ((inn, "in"), (out, "out"))
    for flow, direction in pairs:
        target_spi = derive_spi(flow, enc.key_id, alg)
        sel = Selector.of(flow)
        for o in observed:
            c = o.config
            if c.reqid == rid and c.selector == sel and (c.src, c.dst) == (flow.src, flow.dst):
                label = enc.key_id if c.spi == target_spi else -c.spi
                # The kernel keeps whole seconds: count from the end of that second, so that a
                # step is never taken early (late by up to a second is harmless).
                found[direction][label] = float(o.add_time) + 1.0
    return Installed(found["in"], found["out"])


def desired(
    tunnel: Tunnel,
    enc: KeyMaterial,
    observed: Iterable[ObservedSa] = (),
    now: float = 0.0,
    window: float = DEFAULT_ROTATION_WINDOW,
) -> TunnelXfrm:
    """The states and policies ``tunnel`` needs now, given the agent's SAs in the kernel."""
    keys = rotation(enc.key_id, installed(tunnel, enc, observed), now, window)
    out, inn = flows(tunnel)
    states = [sa(tunnel, enc, "in", enc.key_id)]
    kept = {(inn.family, inn.dst, -k) for k in keys.inbound if k != enc.key_id}
    if keys.outbound == enc.key_id:
        states.append(sa(tunnel, enc, "out", enc.key_id))
    else:
        kept.add((out.family, out.dst, -keys.outbound))
    return TunnelXfrm(tuple(states), policies(tunnel), frozenset(kept), keys.next_step_at)


@dataclass(frozen=True)
class XfrmPlan:
    """Writes that make the kernel's XFRM objects of the agent's range match the desired ones.

    Apply ``add_sas`` and ``put_policies`` (UPDPOLICY: create or replace) before the L2TP
    tunnels are programmed, so no L2TP packet leaves in clear; ``delete_policies`` then
    ``delete_sas`` after the L2TP reconcile, so a removed tunnel never sends unprotected.
    An SA whose content differs (a key changed by hand) is deleted and added again: the
    kernel cannot change a key in place.
    """

    add_sas: tuple[SaConfig, ...] = ()
    put_policies: tuple[PolicyConfig, ...] = ()
    delete_policies: tuple[PolicyConfig, ...] = ()
    delete_sas: tuple[SaConfig, ...] = ()
    repair_sas: tuple[SaConfig, ...] = ()  # delete, then add (in add_sas too)
    # Wanted objects whose place (SA: family, dst, spi; policy: direction, selector) someone
    # else's object holds: never overwritten; the tunnel is reported and left unprogrammed.
    conflicts: tuple[SaConfig | PolicyConfig, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.add_sas or self.put_policies or self.delete_policies or self.delete_sas)


def plan(
    wanted: Iterable[TunnelXfrm],
    observed_sas: Iterable[ObservedSa],
    observed_policies: Iterable[PolicyConfig],
    foreign: Iterable[tuple[int, str, int] | tuple[Dir, Selector]] = (),
) -> XfrmPlan:
    """Compare desired with observed; only objects with the agent's reqids are changed.

    ``foreign``: the idents of every SA and policy not the agent's (any reqid outside its range),
    so that a wanted object in a place someone else holds is a conflict, not an overwrite.
    """
    want_sas: dict[tuple[int, str, int], SaConfig] = {}
    want_pols: dict[tuple[Dir, Selector], PolicyConfig] = {}
    keep: set[tuple[int, str, int]] = set()
    for t in wanted:
        want_sas.update((s.config.ident, s.config) for s in t.states)
        want_pols.update((p.config.ident, p.config) for p in t.policies)
        keep |= t.kept
    have_sas = {o.config.ident: o.config for o in observed_sas if owned(o.config.reqid)}
    have_pols = {p.ident: p for p in observed_policies if owned(p.reqid)}
    repair = tuple(c for i, c in have_sas.items() if i in want_sas and want_sas[i] != c)
    add = tuple(c for i, c in want_sas.items() if have_sas.get(i) != c)
    delete = tuple(c for i, c in have_sas.items() if i not in want_sas and i not in keep)
    put = tuple(c for i, c in want_pols.items() if have_pols.get(i) != c)
    drop = tuple(c for i, c in have_pols.items() if i not in want_pols)
    taken = set(foreign)
    conflicts: tuple[SaConfig | PolicyConfig, ...] = (
        *(c for c in add if c.ident in taken),
        *(c for c in put if c.ident in taken),
    )
    add = tuple(c for c in add if c.ident not in taken)
    put = tuple(c for c in put if c.ident not in taken)
    return XfrmPlan(add, put, drop, delete, repair, conflicts)


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


# `ip xfrm` arguments for the same objects: what `render --peer` prints for a far end that is not
# this agent (with a placeholder instead of the key), and the reference the kernel tests hold the
# netlink codec against.
def _ip_selector(sel: Selector) -> list[str]:
    args = ["src", f"{sel.src}/{sel.prefixlen}", "dst", f"{sel.dst}/{sel.prefixlen}"]
    args += ["proto", "udp" if sel.proto == IPPROTO_UDP else str(sel.proto)]
    if sel.sport or sel.dport:
        args += ["sport", str(sel.sport), "dport", str(sel.dport)]
    return args


def ip_state_args(sa: SaConfig, key: str) -> list[str]:
    """``ip xfrm state add`` arguments; ``key`` is the key's text (0x... or a placeholder)."""
    return [
        "xfrm", "state", "add", "src", sa.src, "dst", sa.dst, "proto", "esp",
        "spi", f"{sa.spi:#010x}", "reqid", f"{sa.reqid:#010x}", "mode", "transport",
        "replay-window", str(sa.replay_window), "aead", sa.aead_name, key, str(sa.icv_bits),
        "sel", *_ip_selector(sa.selector),
    ]  # fmt: skip


def ip_policy_args(pol: PolicyConfig) -> list[str]:
    """``ip xfrm policy add`` arguments."""
    return [
        "xfrm", "policy", "add", *_ip_selector(pol.selector), "dir", pol.direction,
        "priority", str(pol.priority), "tmpl", "src", pol.tmpl_src, "dst", pol.tmpl_dst,
        "proto", "esp", "reqid", f"{pol.reqid:#010x}", "mode", "transport",
    ]  # fmt: skip


def key_placeholder(spi: int) -> str:
    return f"$KEY_{spi:08X}"


def ip_commands(tunnel: Tunnel, algorithm: str, key_id: int) -> list[str]:
    """This end's `ip xfrm` commands (inbound SA, outbound SA, policies), keys as placeholders.

    No secret is needed: SPIs come from public inputs; each key is ``$KEY_<SPI>``.
    """
    alg = aead(algorithm)
    out, inn = flows(tunnel)
    lines = []
    for flow in (inn, out):
        k = SaKey(derive_spi(flow, key_id, alg), b"")
        args = ip_state_args(_sa_config(tunnel, flow, alg, k), key_placeholder(k.spi))
        lines.append(_shell(args))
    lines += [_shell(ip_policy_args(p.config)) for p in policies(tunnel)]
    return lines


def _shell(args: list[str]) -> str:
    return "ip " + " ".join(a if a.startswith("$KEY_") else shlex.quote(a) for a in args)
