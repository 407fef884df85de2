"""Diff desired against observed kernel state into an ordered plan of kernel writes.

Rules that make the agent safe on a shared host:
- Only objects in ``Owned`` are ever changed or deleted; a declared id or name that is taken
  by something else becomes a Conflict finding, never a takeover.
- A tunnel that must go is deleted alone: the kernel removes its sessions (and their links,
  and VLANs on those) itself, far faster than deleting them one by one.
- A field the kernel cannot change in place is applied by replacing the object: delete now,
  create in the next round (the kernel finishes a tunnel delete asynchronously).
- Findings and failures are per object; one bad object never blocks the others.
A converged system yields an empty plan: a restart makes zero kernel writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from kube_l2tp.api.model import Bridge
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Desired, DesiredSession, Owned, normalize_tunnel
from kube_l2tp.core.state import (
    Address,
    ObservedLink,
    ObservedSession,
    ObservedTunnel,
    SessionConfig,
    TunnelConfig,
)


class Op(IntEnum):
    """Kernel writes, in the order a plan applies them."""

    DELETE_TUNNEL = 1
    DELETE_SESSION = 2
    DELETE_LINK = 3  # owned bridges and VLANs
    RELEASE_PORT = 4  # a host port the agent enslaved: back to no master
    DEL_ADDRESS = 5
    CREATE_TUNNEL = 6
    CREATE_SESSION = 7
    MODIFY_SESSION = 8
    CREATE_BRIDGE = 9
    CREATE_VLAN = 10
    SET_LINK = 11  # up and MTU first, as the seed does, then bridge ports and addresses
    SET_MASTER = 12
    ADD_ADDRESS = 13


SessionKey = tuple[int, int]
"""(tunnel id, session id); (tunnel id, 0) for a tunnel, as Owned.deleting records them."""


@dataclass(frozen=True, kw_only=True)
class _Write:
    """What every kernel write carries. ``why`` is text for people (logs, status messages):
    nothing reads it back; what a write makes or removes is in its typed fields."""

    op: ClassVar[Op]
    subject: str  # "L2TPTunnel/site-a": whose result a failure belongs to
    why: str
    depends: str = ""  # skip when this subject already failed (a session on its tunnel)

    def target(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.op.name.lower()} {self.target()}: {self.why}"


@dataclass(frozen=True, kw_only=True)
class _OnLink(_Write):
    ifname: str

    def target(self) -> str:
        return self.ifname


@dataclass(frozen=True, kw_only=True)
class DeleteTunnel(_Write):
    """Deletes an owned tunnel; the kernel removes its sessions and their devices with it."""

    op = Op.DELETE_TUNNEL
    tunnel_id: int
    links: tuple[str, ...] = ()  # the session devices that go with it (asynchronously)

    @property
    def key(self) -> SessionKey:
        return (self.tunnel_id, 0)

    def target(self) -> str:
        return f"tunnel {self.tunnel_id}"


@dataclass(frozen=True, kw_only=True)
class DeleteSession(_Write):
    op = Op.DELETE_SESSION
    key: SessionKey
    links: tuple[str, ...] = ()  # its device, when it is the agent's (asynchronously)

    def target(self) -> str:
        return f"tunnel {self.key[0]} session {self.key[1]}"


@dataclass(frozen=True, kw_only=True)
class DeleteLink(_OnLink):
    """Deletes an owned bridge or VLAN."""

    op = Op.DELETE_LINK


@dataclass(frozen=True, kw_only=True)
class ReleasePort(_OnLink):
    """Takes a link out of its bridge: a host port the agent enslaved, or a session device."""

    op = Op.RELEASE_PORT


@dataclass(frozen=True, kw_only=True)
class DelAddress(_OnLink):
    op = Op.DEL_ADDRESS
    address: Address


@dataclass(frozen=True, kw_only=True)
class CreateTunnel(_Write):
    op = Op.CREATE_TUNNEL
    config: TunnelConfig

    @property
    def tunnel_id(self) -> int:
        return self.config.tunnel_id

    def target(self) -> str:
        return f"tunnel {self.tunnel_id}"


@dataclass(frozen=True, kw_only=True)
class _OnSession(_Write):
    config: SessionConfig

    @property
    def key(self) -> SessionKey:
        return (self.config.tunnel_id, self.config.session_id)

    def target(self) -> str:
        return f"tunnel {self.key[0]} session {self.key[1]}"


@dataclass(frozen=True, kw_only=True)
class CreateSession(_OnSession):
    op = Op.CREATE_SESSION


@dataclass(frozen=True, kw_only=True)
class ModifySession(_OnSession):
    """Sets sequencing in place (the only fields L2TP_CMD_SESSION_MODIFY changes)."""

    op = Op.MODIFY_SESSION


@dataclass(frozen=True, kw_only=True)
class CreateBridge(_OnLink):
    op = Op.CREATE_BRIDGE


@dataclass(frozen=True, kw_only=True)
class CreateVlan(_OnLink):
    op = Op.CREATE_VLAN
    parent: str
    vlan_id: int


@dataclass(frozen=True, kw_only=True)
class SetLink(_OnLink):
    op = Op.SET_LINK
    up: bool
    mtu: int | None = None  # None: left as it is
    addr_gen_mode: str | None = None  # set first, before the link goes up
    qdisc: str | None = None  # the root qdisc, also before the link goes up


@dataclass(frozen=True, kw_only=True)
class SetMaster(_OnLink):
    """Puts a link into a bridge. ``host_port``: a host interface the user listed in
    bridge.ports, which the agent then owns as a port (and releases when no longer declared);
    otherwise a link the agent made (a session device, a VLAN)."""

    op = Op.SET_MASTER
    master: str
    host_port: bool = False


@dataclass(frozen=True, kw_only=True)
class AddAddress(_OnLink):
    op = Op.ADD_ADDRESS
    address: Address


Action = (
    DeleteTunnel
    | DeleteSession
    | DeleteLink
    | ReleasePort
    | DelAddress
    | CreateTunnel
    | CreateSession
    | ModifySession
    | CreateBridge
    | CreateVlan
    | SetLink
    | SetMaster
    | AddAddress
)
"""A kernel write of a plan, applied in the order of its ``op``."""


@dataclass(frozen=True)
class Finding:
    """A reason an object cannot be (fully) programmed that no write can fix."""

    subject: str
    reason: Reason  # CONFLICT, HOST_PORT_MISSING, ...
    message: str


@dataclass(frozen=True)
class Observed:
    tunnels: dict[int, ObservedTunnel]
    sessions: dict[tuple[int, int], ObservedSession]
    links: dict[str, ObservedLink]

    @classmethod
    def of(
        cls,
        tunnels: Iterable[ObservedTunnel],
        sessions: Iterable[ObservedSession],
        links: Iterable[ObservedLink],
    ) -> Observed:
        return cls(
            {t.config.tunnel_id: t for t in tunnels},
            {(s.config.tunnel_id, s.config.session_id): s for s in sessions},
            {link.ifname: link for link in links},
        )

    def link_name(self, index: int | None) -> str | None:
        if index is None:
            return None
        return next((n for n, link in self.links.items() if link.index == index), None)


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)  # subjects that need another round
    # subject -> what the kernel changed that the agent deliberately leaves (shown, not failed)
    notes: dict[str, str] = field(default_factory=dict)

    def add(self, action: Action) -> None:
        self.actions.append(action)

    def ordered(self) -> list[Action]:
        return sorted(self.actions, key=lambda a: a.op)  # stable: keeps per-op order


def tunnel_subject(name: str) -> str:
    return f"L2TPTunnel/{name}"


def session_subject(name: str) -> str:
    return f"L2TPSession/{name}"


def session_changes(
    want: SessionConfig, have: SessionConfig, applied_l2spec: str | None = None
) -> list[str]:
    """Fields that force a replacement (SESSION_MODIFY cannot change them). The kernel does not
    report l2spec_type, so it is compared with what the agent last applied."""
    names = ["tunnel_id", "session_id", "peer_session_id", "cookie", "peer_cookie"]
    changed = [n for n in names if getattr(want, n) != getattr(have, n)]
    if applied_l2spec is not None and applied_l2spec != want.l2spec_type:
        changed.append("l2spec_type")
    if want.ifname is not None and want.ifname != have.ifname:
        changed.append("ifname")
    return changed


def tunnel_changes(want: TunnelConfig, have: TunnelConfig) -> list[str]:
    if want == have:  # ``want`` is normalized: equal needs no normalizing (ipaddress is slow)
        return []
    have = normalize_tunnel(have)
    return [f for f in want.__dataclass_fields__ if getattr(want, f) != getattr(have, f)]


def make_plan(desired: Desired, observed: Observed, owned: Owned) -> Plan:
    plan = Plan()
    live_tunnels = _tunnels(plan, desired, observed, owned)
    links = _sessions(plan, desired, observed, owned, live_tunnels)
    _links(plan, desired, observed, owned, links)
    return plan


def _devices_by_tunnel(observed: Observed) -> dict[int, list[str]]:
    by_tunnel: dict[int, list[str]] = {}
    for (tid, _), s in observed.sessions.items():
        if s.config.ifname:
            by_tunnel.setdefault(tid, []).append(s.config.ifname)
    return by_tunnel


def _udp_socket(cfg: TunnelConfig) -> tuple[str, int] | None:
    return (cfg.local, cfg.udp_sport or 0) if cfg.encap == "udp" else None


def _tunnels(plan: Plan, desired: Desired, observed: Observed, owned: Owned) -> set[int]:
    """Tunnel deletes/creates; returns the desired tunnel ids whose sessions can be planned."""
    live: set[int] = set()
    devices = _devices_by_tunnel(observed)
    # Local UDP sockets of owned tunnels on their way out: the kernel releases each in the
    # tunnel's delete work, after the delete returned (l2tp_tunnel_del_work).
    going: set[tuple[str, int] | None] = set()
    for tid in sorted(owned.tunnels - desired.tunnels.keys()):
        have = observed.tunnels.get(tid)
        if have is not None and (tid, 0) not in owned.deleting:
            plan.add(
                DeleteTunnel(
                    subject=f"tunnel {tid}",
                    why="no longer declared",
                    tunnel_id=tid,
                    links=tuple(devices.get(tid, ())),
                )
            )
        if have is not None:
            going.add(_udp_socket(have.config))
    going.discard(None)
    for tid, want in sorted(desired.tunnels.items()):
        subject = tunnel_subject(want.name)
        have = observed.tunnels.get(tid)
        if (tid, 0) in owned.deleting:
            plan.pending.add(subject)  # our delete is still in progress in the kernel
        elif have is None and going and _udp_socket(want.config) in going:
            plan.pending.add(subject)  # its local address and port are still being released
        elif have is None:
            why = "missing (deleted outside the agent)" if tid in owned.tunnels else "declared"
            plan.add(CreateTunnel(subject=subject, why=why, config=want.config))
            live.add(tid)
        elif tid not in owned.tunnels:
            plan.findings.append(
                Finding(
                    subject,
                    Reason.CONFLICT,
                    f"tunnel id {tid} already exists in the kernel and was not created by"
                    " kube-l2tp: delete it (ip l2tp del tunnel tunnel_id"
                    f" {tid}) or choose another tunnelID",
                )
            )
        elif changed := tunnel_changes(want.config, have.config):
            plan.add(
                DeleteTunnel(
                    subject=subject,
                    why=f"replace: {', '.join(changed)} changed",
                    tunnel_id=tid,
                    links=tuple(devices.get(tid, ())),
                )
            )
            plan.pending.add(subject)
        else:
            live.add(tid)
    return live


def _sessions(
    plan: Plan, desired: Desired, observed: Observed, owned: Owned, live: set[int]
) -> dict[tuple[int, int], tuple[str, ObservedLink | None]]:
    """Session deletes/creates/modifies; returns sessions whose link can be planned now."""
    links: dict[tuple[int, int], tuple[str, ObservedLink | None]] = {}
    gone = {a.tunnel_id for a in plan.actions if isinstance(a, DeleteTunnel)}
    gone |= {t for t, s in owned.deleting if s == 0}
    session_links = _session_links(observed)  # device name -> sessions naming it
    for key in sorted(owned.sessions - desired.sessions.keys()):
        if key in observed.sessions and key[0] not in gone and key not in owned.deleting:
            device = observed.sessions[key].config.ifname or ""
            own = _own_device(device, key, observed, owned, session_links)
            plan.add(
                DeleteSession(
                    subject=f"session {key[0]}/{key[1]}",
                    why="no longer declared",
                    key=key,
                    links=(device,) if own else (),
                )
            )
    for key, want in sorted(desired.sessions.items()):
        subject = session_subject(want.name)
        if key[0] not in live:
            plan.pending.add(subject)
            continue
        have = observed.sessions.get(key)
        match plan_session(want.config, have, owned, observed, session_links):
            case Keep(ifname=ifname) | Modify(ifname=ifname) as kept:  # the most common first
                if isinstance(kept, Modify):
                    why = "sequencing changed"
                    plan.add(ModifySession(subject=subject, why=why, config=want.config))
                elif kept.note:
                    plan.notes[subject] = kept.note
                links[key] = (ifname, observed.links.get(ifname))
            case Pending():
                plan.pending.add(subject)
            case Conflict(message=message):
                plan.findings.append(Finding(subject, Reason.CONFLICT, message))
            case Create(why=why):
                depends = tunnel_subject(desired.tunnels[key[0]].name)
                plan.add(
                    CreateSession(subject=subject, why=why, depends=depends, config=want.config)
                )
                if want.config.ifname:
                    links[key] = (want.config.ifname, None)  # a fresh link: planned right away
                else:
                    plan.pending.add(subject)  # the kernel picks the name; plan it next round
            case Replace(changed=changed, links=devices):
                why = f"replace: {', '.join(changed)} changed"
                plan.add(DeleteSession(subject=subject, why=why, key=key, links=devices))
                plan.pending.add(subject)
    return links


@dataclass(frozen=True)
class Create:
    """Create the session (absent from the kernel)."""

    why: str  # for people: "declared", or "missing (deleted outside the agent)"


@dataclass(frozen=True)
class Replace:
    """Delete the session now, create it in a later round: ``changed`` cannot change in place."""

    changed: tuple[str, ...]
    links: tuple[str, ...]  # its device, when it is the agent's (goes with it, asynchronously)


@dataclass(frozen=True)
class Modify:
    """Set sequencing in place (SESSION_MODIFY); the device ``ifname`` is planned as usual."""

    ifname: str


@dataclass(frozen=True)
class Keep:
    """As declared (or as the kernel deliberately left it: ``note`` says so)."""

    ifname: str
    note: str = ""


@dataclass(frozen=True)
class Conflict:
    """Something kube-l2tp did not create holds the session id or the interface name."""

    message: str


@dataclass(frozen=True)
class Pending:
    """Nothing to do this round: wait for the kernel to finish something first."""

    why: str


SessionDecision = Create | Replace | Modify | Keep | Conflict | Pending

SEND_SEQ_OFF_NOTE = (
    "sequencing: the kernel stopped sending sequence numbers because the peer sends"
    " frames without them (LAC mode, RFC 3931 5.4); kube-l2tp leaves it so: configure"
    " the peer to number its frames, or declare sequencing none or recv"
)


def plan_session(
    want: SessionConfig,
    have: ObservedSession | None,
    owned: Owned,
    observed: Observed,
    holders: Mapping[str, Sequence[SessionKey]] | None = None,
) -> SessionDecision:
    """What one declared session needs, on a tunnel that is (or is being made) as declared.

    ``have`` is the kernel's session of the same ids; ``holders`` maps each device name the
    kernel's sessions report to those sessions (computed from ``observed`` when not given: a
    plan passes it once for all sessions).
    """
    key = (want.tunnel_id, want.session_id)
    if holders is None:
        holders = _session_links(observed)
    if key in owned.deleting:
        return Pending("our delete of it is still in progress in the kernel")
    if have is not None and key not in owned.sessions:
        return Conflict(
            f"session {key[1]} already exists in tunnel {key[0]} and was not created by"
            " kube-l2tp: delete it or choose another sessionID"
        )
    if key[0] not in observed.tunnels or have is None:
        return _create(want, key, owned, observed, holders)
    changed = session_changes(want, have.config, owned.l2spec.get(key))
    ifname = have.config.ifname or ""
    own = _own_device(ifname, key, observed, owned, holders)
    if not own:
        # Deleted or renamed outside the agent: the session lives on without its device
        # (l2tp_eth_dev_uninit) and only a new session gets a new one. A link that took
        # the name since (another kind, another index) is someone else's: never touched.
        changed.append("interface deleted or renamed outside the agent")
    if changed:
        return Replace(tuple(changed), (ifname,) if own else ())
    if _kernel_turned_send_seq_off(want, have.config, owned.seq.get(key)):
        return Keep(ifname, SEND_SEQ_OFF_NOTE)
    if _seq_differs(want, have.config, owned.seq.get(key)):
        return Modify(ifname)
    return Keep(ifname)


def _create(
    want: SessionConfig,
    key: SessionKey,
    owned: Owned,
    observed: Observed,
    holders: Mapping[str, Sequence[SessionKey]],
) -> Create | Conflict | Pending:
    name = want.ifname
    others = [k for k in holders.get(name or "", ()) if k != key]
    holder = others[0] if others else None
    if name and name in owned.deleting_links:
        return Pending(f"the device {name} of a session kube-l2tp deleted is still going")
    if holder is not None and all(k in owned.sessions for k in others):
        return Pending(f"another session of kube-l2tp has {name}: it is being replaced")
    if name and name in observed.links:
        whose = (
            f"the device of session {holder[1]} in tunnel {holder[0]}, which"
            if holder is not None
            else "an interface"
        )
        return Conflict(
            f"interface name {name} is taken by {whose} kube-l2tp did not"
            " create: rename or delete it, or choose another interfaceName"
        )
    return Create("missing (deleted outside the agent)" if key in owned.sessions else "declared")


def _session_links(observed: Observed) -> dict[str, list[SessionKey]]:
    """Device name -> the kernel's sessions that report it."""
    out: dict[str, list[SessionKey]] = {}
    for k, s in observed.sessions.items():
        if s.config.ifname:
            out.setdefault(s.config.ifname, []).append(k)
    return out


def _own_device(
    ifname: str,
    key: tuple[int, int],
    observed: Observed,
    owned: Owned,
    session_links: Mapping[str, Sequence[SessionKey]],
) -> bool:
    """Whether the link named like session ``key``'s device is that device.

    A session keeps its device's name after the device is deleted, so the name alone proves
    nothing: the link must be of a session device's kind (l2tp_eth sets none on 6.1), no other
    session may report the name, and its index must be the one recorded when first seen.
    """
    link = observed.links.get(ifname)
    if link is None or link.kind not in ("", "l2tp"):
        return False
    named = session_links.get(ifname)
    if named is not None and (len(named) != 1 or named[0] != key):
        return False
    known = owned.ifindex.get(ifname)
    return known is None or known == link.index


def _kernel_turned_send_seq_off(
    want: SessionConfig, have: SessionConfig, applied: tuple[bool, bool] | None
) -> bool:
    """A LAC-mode session that receives a frame without sequence numbers stops sending them
    (l2tp_recv_common; only with recv_seq off, else the frame is dropped first). Turning it on
    again at every reconcile would fight a peer that never numbers its frames: the agent
    leaves the kernel's choice and says so (README, "Sequencing")."""
    return (
        want.send_seq
        and not have.send_seq
        and not want.recv_seq
        and have.recv_seq == want.recv_seq
        and applied == (True, False)
    )


def _seq_differs(
    want: SessionConfig, have: SessionConfig, applied: tuple[bool, bool] | None
) -> bool:
    """The kernel turns send_seq on by itself when the peer sends sequence numbers
    (l2tp_recv_common, LAC mode): when send_seq is on although the agent last set it off,
    that is the kernel's doing, not drift, and is not undone."""
    if want.recv_seq != have.recv_seq or (want.send_seq and not have.send_seq):
        return True
    kernel_turned_on = not want.send_seq and have.send_seq and applied == (False, want.recv_seq)
    return have.send_seq != want.send_seq and not kernel_turned_on


def _links(
    plan: Plan,
    desired: Desired,
    observed: Observed,
    owned: Owned,
    links: dict[tuple[int, int], tuple[str, ObservedLink | None]],
) -> None:
    wanted_bridges: dict[str, tuple[str, Bridge]] = {}  # name -> (first subject, bridge)
    wanted_ports: dict[str, str] = {}  # host port -> bridge
    wanted_vlans: set[str] = set()
    wanted_addresses: dict[str, set[Address]] = {}
    for key, (ifname, have) in sorted(links.items()):
        want = desired.sessions[key]
        subject = session_subject(want.name)
        _session_link(plan, want, subject, ifname, have, observed, owned)
        wanted_addresses[ifname] = set(want.addresses)
        attach = [(ifname, want.bridge)] if want.bridge else []
        for vlan in want.vlans:
            vname = vlan.ifname(ifname)
            wanted_vlans.add(vname)
            _vlan(plan, subject, vname, ifname, vlan.vlan_id, observed, owned)
            if vlan.bridge:
                attach.append((vname, vlan.bridge))
        for port, bridge in attach:
            wanted_bridges.setdefault(bridge.name, (subject, bridge))
            _bridge(plan, subject, bridge, observed, owned)
            _enslave(plan, subject, port, bridge.name, observed)
            for host_port in bridge.ports:
                wanted_ports[host_port] = bridge.name
                _host_port(plan, subject, host_port, bridge.name, observed, owned)
    # Sessions not planned this round (pending, or blocked by a conflict) keep what they own.
    for key, want in desired.sessions.items():
        if key in links:
            continue
        have_session = observed.sessions.get(key)
        known = have_session.config.ifname if have_session else want.config.ifname
        if known:
            wanted_addresses[known] = set(want.addresses)
        for vlan in want.vlans:
            if vlan.name or known:
                wanted_vlans.add(vlan.ifname(known or ""))
        for maybe in [want.bridge, *(v.bridge for v in want.vlans)]:
            if maybe:
                wanted_bridges.setdefault(maybe.name, (session_subject(want.name), maybe))
                wanted_ports.update(dict.fromkeys(maybe.ports, maybe.name))
    for port, bridge_name in sorted(owned.ports.items()):
        if wanted_ports.get(port) != bridge_name:
            have_port = observed.links.get(port)
            master = observed.link_name(have_port.master_index) if have_port else None
            if master == bridge_name:
                plan.add(ReleasePort(subject=f"port {port}", why="no longer declared", ifname=port))
    for name in sorted(owned.vlans - wanted_vlans):
        if name in observed.links:
            plan.add(DeleteLink(subject=f"vlan {name}", why="no longer declared", ifname=name))
    for name in sorted(owned.bridges - wanted_bridges.keys()):
        if name in observed.links:
            plan.add(DeleteLink(subject=f"bridge {name}", why="no longer declared", ifname=name))
    for ifname, addrs in sorted(owned.addresses.items()):
        have = observed.links.get(ifname)
        if have is None:
            continue
        for addr in sorted(addrs - wanted_addresses.get(ifname, set()), key=str):
            if addr in have.addresses:
                plan.add(
                    DelAddress(
                        subject=f"address {addr.address}",
                        why="no longer declared",
                        ifname=ifname,
                        address=addr,
                    )
                )


def _session_link(
    plan: Plan,
    want: DesiredSession,
    subject: str,
    ifname: str,
    have: ObservedLink | None,
    observed: Observed,
    owned: Owned,
) -> None:
    up = have.up if have else False
    mtu_ok = want.mtu is None or (have is not None and have.mtu == want.mtu)
    # No IPv6 on the link (addr_gen_mode None in the dump): nothing to set, nothing to make.
    mode_ok = want.addr_gen_mode is None or (
        have is not None and have.addr_gen_mode in (None, want.addr_gen_mode)
    )
    # A link that is down reports "noop" until it is up, whatever its qdisc will be.
    qdisc_ok = want.qdisc is None or (have is not None and have.qdisc in ("noop", want.qdisc))
    if up != want.up or not mtu_ok or not mode_ok or not qdisc_ok:
        plan.add(
            SetLink(
                subject=subject,
                why="interface state",
                ifname=ifname,
                up=want.up,
                mtu=None if mtu_ok else want.mtu,
                addr_gen_mode=None if mode_ok else want.addr_gen_mode,
                qdisc=want.qdisc if not qdisc_ok or (want.up and not up) else None,
            )
        )
    present = set(have.addresses) if have else set()
    for addr in want.addresses:
        if addr not in present:
            plan.add(AddAddress(subject=subject, why="declared", ifname=ifname, address=addr))
    if have is not None and not want.bridge and have.master_index is not None:
        plan.add(ReleasePort(subject=subject, why="no bridge declared", ifname=ifname))


def _vlan(
    plan: Plan,
    subject: str,
    name: str,
    parent: str,
    vlan_id: int,
    observed: Observed,
    owned: Owned,
) -> None:
    have = observed.links.get(name)
    if have is None:
        plan.add(
            CreateVlan(subject=subject, why="declared", ifname=name, parent=parent, vlan_id=vlan_id)
        )
        plan.add(SetLink(subject=subject, why="VLAN up", ifname=name, up=True))
        return
    if name not in owned.vlans:
        plan.findings.append(
            Finding(
                subject,
                Reason.CONFLICT,
                f"interface {name} exists and was not created by kube-l2tp: delete it, or set"
                " interface.vlans[].name to another name",
            )
        )
        return
    parent_link = observed.links.get(parent)
    if have.vlan_id != vlan_id or (parent_link and have.parent_index != parent_link.index):
        plan.add(DeleteLink(subject=subject, why="replace: VLAN id or parent changed", ifname=name))
        plan.pending.add(subject)
    elif not have.up:
        plan.add(SetLink(subject=subject, why="VLAN up", ifname=name, up=True))


def _bridge(plan: Plan, subject: str, bridge: Bridge, observed: Observed, owned: Owned) -> None:
    if any(isinstance(a, CreateBridge) and a.ifname == bridge.name for a in plan.actions):
        return
    have = observed.links.get(bridge.name)
    if have is None:
        plan.add(CreateBridge(subject=subject, why="declared", ifname=bridge.name))
        plan.add(SetLink(subject=subject, why="bridge up", ifname=bridge.name, up=True))
    elif have.kind != "bridge":
        plan.findings.append(
            Finding(
                subject,
                Reason.CONFLICT,
                f"{bridge.name} exists and is not a bridge ({have.kind or 'no kind'}): choose"
                " another bridge name",
            )
        )
    elif bridge.name in owned.bridges and not have.up:
        plan.add(SetLink(subject=subject, why="bridge up", ifname=bridge.name, up=True))


def _enslave(plan: Plan, subject: str, port: str, bridge: str, observed: Observed) -> None:
    have = observed.links.get(port)
    if have is not None and observed.link_name(have.master_index) == bridge:
        return
    plan.add(SetMaster(subject=subject, why=f"attach to {bridge}", ifname=port, master=bridge))


def _host_port(
    plan: Plan, subject: str, port: str, bridge: str, observed: Observed, owned: Owned
) -> None:
    have = observed.links.get(port)
    if have is None:
        plan.findings.append(
            Finding(
                subject,
                Reason.HOST_PORT_MISSING,
                f"host interface {port} (a port of bridge {bridge}) does not exist: create it,"
                " or remove it from bridge.ports",
            )
        )
        return
    master = observed.link_name(have.master_index)
    if master == bridge:
        return
    if master is not None and owned.ports.get(port) != master:
        plan.findings.append(
            Finding(
                subject,
                Reason.CONFLICT,
                f"host interface {port} is already a port of {master}, which kube-l2tp did not"
                f" put it in: release it (ip link set {port} nomaster) to attach it to {bridge}",
            )
        )
        return
    plan.add(
        SetMaster(
            subject=subject,
            why=f"host port into {bridge}",
            ifname=port,
            master=bridge,
            host_port=True,
        )
    )
