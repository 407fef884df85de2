"""One reconcile: observe, plan, apply, repeated until nothing is left to do.

Level-based: every call starts from a fresh dump, so a missed event, a restart or a tampering
human all end the same way. Ownership is recorded *before* a create and withdrawn if it fails,
so a crash between the kernel write and the save can never turn the agent's own object into a
"foreign" one it refuses to touch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kube_l2tp.core.desired import Desired, Owned
from kube_l2tp.core.plan import (
    Action,
    Finding,
    Observed,
    Op,
    Plan,
    make_plan,
    session_subject,
    tunnel_subject,
)
from kube_l2tp.core.ports import KernelPort
from kube_l2tp.core.state import KernelError, Outcome

MAX_ROUNDS = 6


@dataclass(frozen=True)
class ObjectResult:
    subject: str  # "L2TPSession/site-a-1"
    ready: bool
    reason: str  # Programmed, Progressing, Conflict, KernelError, KernelUnsupported, ...
    message: str
    interface: str = ""
    ifindex: int = 0
    mtu: int = 0
    ignored: tuple[str, ...] = ()


@dataclass
class Result:
    writes: int = 0
    rounds: int = 0
    results: dict[str, ObjectResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # subject -> last error

    @property
    def converged(self) -> bool:
        return all(r.ready for r in self.results.values())


def observe(kernel: KernelPort, *, links: bool = True) -> Observed:
    """One dump of each table; links only when asked (see needs_links)."""
    return Observed.of(
        kernel.dump_tunnels(), kernel.dump_sessions(), kernel.dump_links() if links else ()
    )


def needs_links(desired: Desired, owned: Owned) -> bool:
    """Whether a plan will read links: for declared sessions, or links the agent owns.

    Removing only tunnels and sessions needs none, and it matters: a link dump waits for the
    RTNL lock, which the kernel takes for every interface of a deleted tunnel it tears down.
    """
    return bool(desired.sessions or owned.bridges or owned.vlans or owned.ports or owned.addresses)


def _sizes(owned: Owned) -> tuple[int, ...]:
    """The sizes of the persisted records: forget_gone only removes, so equal sizes mean no
    change (cheaper than comparing to_json() texts, which cost seconds at 1000 sessions)."""
    return (
        len(owned.tunnels),
        len(owned.sessions),
        len(owned.bridges),
        len(owned.vlans),
        len(owned.ports),
        len(owned.addresses),
        sum(len(addrs) for addrs in owned.addresses.values()),
        len(owned.seq),
        len(owned.l2spec),
    )


def forget_gone(owned: Owned, desired: Desired, observed: Observed) -> bool:
    """Drop records of owned objects that no longer exist and are not wanted; returns whether
    a persisted record was dropped (``deleting`` is not persisted)."""
    before = _sizes(owned)
    # A deleted tunnel is gone once neither it nor a session of it is reported: a tunnel dump
    # taken while the kernel tears tunnels down can skip one (L2TP dumps resume by position).
    reported = set(observed.tunnels) | {t for t, _ in observed.sessions}
    owned.deleting = {
        k for k in owned.deleting if (k[0] in reported if k[1] == 0 else k in observed.sessions)
    }
    owned.tunnels = {
        t
        for t in owned.tunnels
        if (t in observed.tunnels or t in desired.tunnels)
        and not ((t, 0) in owned.deleting and t not in observed.tunnels)
    }
    owned.sessions = {k for k in owned.sessions if k in observed.sessions or k in desired.sessions}
    owned.seq = {k: v for k, v in owned.seq.items() if k in owned.sessions}
    owned.l2spec = {k: v for k, v in owned.l2spec.items() if k in owned.sessions}
    owned.bridges = {b for b in owned.bridges if b in observed.links}
    owned.vlans = {v for v in owned.vlans if v in observed.links}
    owned.ports = {
        p: b
        for p, b in owned.ports.items()
        if p in observed.links and observed.link_name(observed.links[p].master_index) == b
    }
    owned.addresses = {
        name: addrs for name, addrs in owned.addresses.items() if name in observed.links and addrs
    }
    return _sizes(owned) != before


def _record(owned: Owned, action: Action, *, undo: bool = False) -> None:
    """Mark (or, with undo, unmark) what a create/attach makes ours."""
    op = action.op
    if op is Op.CREATE_TUNNEL:
        (owned.tunnels.discard if undo else owned.tunnels.add)(action.tunnel_id)
    elif op is Op.CREATE_SESSION:
        key = (action.tunnel_id, action.session_id)
        (owned.sessions.discard if undo else owned.sessions.add)(key)
        _record_seq(owned, action, undo=undo)
    elif op is Op.MODIFY_SESSION:
        _record_seq(owned, action, undo=undo)
    elif op is Op.CREATE_BRIDGE:
        (owned.bridges.discard if undo else owned.bridges.add)(action.ifname)
    elif op is Op.CREATE_VLAN:
        (owned.vlans.discard if undo else owned.vlans.add)(action.ifname)
    elif op is Op.SET_MASTER and action.why.startswith("host port"):
        if undo:
            owned.ports.pop(action.ifname, None)
        else:
            owned.ports[action.ifname] = action.master or ""
    elif op is Op.ADD_ADDRESS and action.address is not None:
        addrs = owned.addresses.setdefault(action.ifname, set())
        (addrs.discard if undo else addrs.add)(action.address)


def _record_seq(owned: Owned, action: Action, *, undo: bool) -> None:
    key = (action.tunnel_id, action.session_id)
    if undo:
        owned.seq.pop(key, None)
        if action.op is Op.CREATE_SESSION:
            owned.l2spec.pop(key, None)
    elif action.session is not None:
        owned.seq[key] = (action.session.send_seq, action.session.recv_seq)
        if action.op is Op.CREATE_SESSION:
            owned.l2spec[key] = action.session.l2spec_type


def _forget(owned: Owned, action: Action) -> None:
    """After a successful delete/release. A deleted tunnel or session stays owned, marked as
    going away, until the kernel stops reporting it (forget_gone): only then is its id free."""
    if action.op is Op.DELETE_TUNNEL:  # its sessions' seq/l2spec records: _forget_sessions_of
        owned.deleting.add((action.tunnel_id, 0))
    elif action.op is Op.DELETE_SESSION:
        owned.deleting.add((action.tunnel_id, action.session_id))
        owned.seq.pop((action.tunnel_id, action.session_id), None)
        owned.l2spec.pop((action.tunnel_id, action.session_id), None)
    elif action.op is Op.DELETE_LINK:
        owned.bridges.discard(action.ifname)
        owned.vlans.discard(action.ifname)
        owned.addresses.pop(action.ifname, None)
    elif action.op is Op.RELEASE_PORT:
        owned.ports.pop(action.ifname, None)
    elif action.op is Op.DEL_ADDRESS and action.address is not None:
        owned.addresses.get(action.ifname, set()).discard(action.address)


def _forget_sessions_of(owned: Owned, tunnels: set[int]) -> None:
    """Drop what was applied to the sessions of deleted tunnels: once for all of a round's
    deletes (per delete, it made removing N tunnels O(N^2))."""
    if tunnels:
        owned.seq = {k: v for k, v in owned.seq.items() if k[0] not in tunnels}
        owned.l2spec = {k: v for k, v in owned.l2spec.items() if k[0] not in tunnels}


def _execute(kernel: KernelPort, a: Action) -> None:
    match a.op:
        case Op.DELETE_TUNNEL:
            kernel.delete_tunnel(a.tunnel_id)
        case Op.DELETE_SESSION:
            kernel.delete_session(a.tunnel_id, a.session_id)
        case Op.DELETE_LINK:
            kernel.delete_link(a.ifname)
        case Op.RELEASE_PORT:
            kernel.set_master(a.ifname, None)
        case Op.DEL_ADDRESS:
            assert a.address is not None
            kernel.del_address(a.ifname, a.address)
        case Op.CREATE_TUNNEL:
            assert a.tunnel is not None
            kernel.create_tunnel(a.tunnel)
        case Op.CREATE_SESSION:
            assert a.session is not None
            kernel.create_session(a.session)
        case Op.MODIFY_SESSION:
            assert a.session is not None
            kernel.modify_session(
                a.tunnel_id,
                a.session_id,
                send_seq=a.session.send_seq,
                recv_seq=a.session.recv_seq,
            )
        case Op.CREATE_BRIDGE:
            kernel.create_bridge(a.ifname)
        case Op.CREATE_VLAN:
            kernel.create_vlan(a.ifname, a.parent, a.vlan_id)
        case Op.SET_MASTER:
            kernel.set_master(a.ifname, a.master)
        case Op.ADD_ADDRESS:
            assert a.address is not None
            kernel.add_address(a.ifname, a.address)
        case Op.SET_LINK:
            kernel.set_link(a.ifname, up=a.up, mtu=a.mtu)


_CREATES = {Op.CREATE_TUNNEL, Op.CREATE_SESSION, Op.CREATE_BRIDGE, Op.CREATE_VLAN}
# writes to, or under, an object the round's dump showed
_BUILDS_ON = {
    Op.CREATE_SESSION,
    Op.MODIFY_SESSION,
    Op.CREATE_VLAN,
    Op.SET_LINK,
    Op.SET_MASTER,
    Op.ADD_ADDRESS,
}


def apply(
    kernel: KernelPort,
    plan: Plan,
    owned: Owned,
    save: Callable[[Owned], None],
    failures: dict[str, str],
    deleted: set[tuple[int, int]],
) -> tuple[int, set[str]]:
    """Apply a plan; returns (writes, subjects to retry next round)."""
    actions = plan.ordered()
    for action in actions:
        if action.op in _CREATES or action.op in (Op.SET_MASTER, Op.ADD_ADDRESS, Op.MODIFY_SESSION):
            _record(owned, action)
    save(owned)
    failed: set[str] = set()
    retry: set[str] = set()
    tunnels_deleted: set[int] = set()
    writes = 0
    for action in actions:
        blocked = action.depends and (action.depends in failed or action.depends in failures)
        if action.subject in failed or blocked:
            _record(owned, action, undo=True)
            continue
        try:
            _execute(kernel, action)
            writes += 1
            _forget(owned, action)
            if action.op in (Op.DELETE_TUNNEL, Op.DELETE_SESSION):
                deleted.add((action.tunnel_id, action.session_id))
            if action.op is Op.DELETE_TUNNEL:
                tunnels_deleted.add(action.tunnel_id)
        except KernelError as exc:
            writes += 1
            _record(owned, action, undo=True)
            failed.add(action.subject)
            # The kernel deletes tunnels (and, since 6.12, sessions) asynchronously: re-creating
            # one the agent just deleted can meet EEXIST for a moment.
            just_deleted = (action.tunnel_id, 0) in deleted or (
                action.tunnel_id,
                action.session_id,
            ) in deleted
            # What a write builds on (a session's tunnel, a link) can vanish between the round's
            # dump and the write: deleted outside the agent and still being torn down when
            # dumped. The next round's dump shows what is left, and plans from it.
            vanished = exc.outcome is Outcome.NOT_FOUND and action.op in _BUILDS_ON
            transient = (
                exc.outcome is Outcome.BUSY
                or vanished
                or (
                    exc.outcome is Outcome.EXISTS
                    and action.op in (Op.CREATE_TUNNEL, Op.CREATE_SESSION)
                    and just_deleted
                )
            )
            if transient:
                retry.add(action.subject)
            else:
                failures[action.subject] = f"{action.describe()}: {exc}"
    _forget_sessions_of(owned, tunnels_deleted)
    save(owned)
    return writes, retry


def reconcile(
    kernel: KernelPort,
    desired: Desired,
    owned: Owned,
    save: Callable[[Owned], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """Converge the kernel to ``desired``; touches only what ``owned`` records (and updates it)."""
    result = Result()
    deleted: set[tuple[int, int]] = set()
    plan = Plan()
    try:
        observed = observe(kernel, links=needs_links(desired, owned))
    except KernelError as exc:  # no L2TP in this kernel, no permission: every object says so
        return unreachable(desired, exc)
    for attempt in range(1, MAX_ROUNDS + 1):
        if forget_gone(owned, desired, observed):
            save(owned)
        plan = make_plan(desired, observed, owned)
        actions = [a for a in plan.actions if a.subject not in result.failures]
        waiting = bool(plan.pending and owned.deleting)  # the kernel is still deleting
        if not actions and not waiting:
            break
        plan.actions = actions
        retry: set[str] = set()
        if actions:
            result.rounds += 1
            writes, retry = apply(kernel, plan, owned, save, result.failures, deleted)
            result.writes += writes
        if retry or waiting:
            sleep(0.05 * attempt)  # let the kernel finish deleting a replaced object
        try:
            observed = observe(kernel, links=needs_links(desired, owned))
        except KernelError as exc:
            return unreachable(desired, exc, result.writes)
    else:  # out of rounds: judge the objects by the state the last round left
        forget_gone(owned, desired, observed)
        plan = make_plan(desired, observed, owned)
    result.results = _results(desired, observed, plan, result.failures)
    return result


def unreachable(desired: Desired, exc: KernelError, writes: int = 0) -> Result:
    """Every object fails with the same reason when the kernel cannot even be read."""
    reason = "KernelUnsupported" if exc.outcome is Outcome.NOT_SUPPORTED else "KernelError"
    subjects = [tunnel_subject(t.name) for t in desired.tunnels.values()]
    subjects += [session_subject(s.name) for s in desired.sessions.values()]
    result = Result(writes=writes)
    result.results = {s: ObjectResult(s, False, reason, str(exc)) for s in subjects}
    return result


def _results(
    desired: Desired, observed: Observed, plan: Plan, failures: dict[str, str]
) -> dict[str, ObjectResult]:
    findings: dict[str, Finding] = {}
    for f in plan.findings:
        findings.setdefault(f.subject, f)
    busy = {a.subject for a in plan.actions} | plan.pending
    out: dict[str, ObjectResult] = {}

    def verdict(subject: str, exists: bool) -> tuple[bool, str, str]:
        if subject in failures:
            failure = failures[subject]
            reason = "KernelUnsupported" if "KernelUnsupported" in failure else "KernelError"
            return False, reason, failure
        if subject in findings:
            return False, findings[subject].reason, findings[subject].message
        if subject in busy or not exists:
            return False, "Progressing", "not converged yet"
        return True, "Programmed", "programmed in the kernel"

    failed_tunnels = set()
    for tid, t in desired.tunnels.items():
        subject = tunnel_subject(t.name)
        ready, reason, message = verdict(subject, tid in observed.tunnels)
        if not ready:
            failed_tunnels.add(t.name)
        out[subject] = ObjectResult(subject, ready, reason, message)
    for key, s in desired.sessions.items():
        subject = session_subject(s.name)
        have = observed.sessions.get(key)
        ready, reason, message = verdict(subject, have is not None)
        if not ready and s.tunnel in failed_tunnels and subject not in failures:
            tunnel_result = out[tunnel_subject(s.tunnel)]
            reason, message = "TunnelNotReady", f"tunnel {s.tunnel}: {tunnel_result.message}"
        ifname = have.config.ifname or "" if have else ""
        link = observed.links.get(ifname)
        out[subject] = ObjectResult(
            subject,
            ready,
            reason,
            message,
            interface=ifname,
            ifindex=link.index if link else 0,
            mtu=link.mtu if link else 0,
            ignored=s.ignored,
        )
    return out
