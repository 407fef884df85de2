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
from typing import Any

from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Desired, Owned
from kube_l2tp.core.plan import (
    Action,
    AddAddress,
    CreateBridge,
    CreateSession,
    CreateTunnel,
    CreateVlan,
    DelAddress,
    DeleteLink,
    DeleteSession,
    DeleteTunnel,
    Finding,
    ModifySession,
    Observed,
    Plan,
    ReleasePort,
    SetLink,
    SetMaster,
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
    reason: Reason
    message: str
    interface: str = ""
    ifindex: int = 0
    mtu: int = 0
    ignored: tuple[str, ...] = ()
    addr_gen_mode: str | None = None  # as the kernel reports them (status)
    qdisc: str | None = None


@dataclass(frozen=True)
class Failure:
    """Why an object failed for good this reconcile: the reason from the error's type, the
    message for people (never parsed)."""

    reason: Reason
    message: str


def kernel_reason(outcome: Outcome) -> Reason:
    """The condition reason of a failed kernel call."""
    return Reason.KERNEL_UNSUPPORTED if outcome is Outcome.NOT_SUPPORTED else Reason.KERNEL_ERROR


@dataclass
class Result:
    writes: int = 0
    rounds: int = 0
    results: dict[str, ObjectResult] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)  # subject -> last error
    # Why no object was judged (the kernel's state could not be read completely, e.g. link
    # dumps interrupted again and again while a large tunnel's interfaces go): keep the last
    # verdicts and try again soon. Empty when ``results`` is the verdict.
    incomplete: str = ""

    @property
    def converged(self) -> bool:
        return not self.incomplete and all(r.ready for r in self.results.values())


def observe(kernel: KernelPort, owned: Owned | None = None, *, links: bool = True) -> Observed:
    """One dump of each table (links only when asked, see needs_links); then each owned tunnel
    or session the dumps left out is asked for by id before it is taken as gone.

    Kernels 6.1 to 6.11 resume a multi-part L2TP dump by position (l2tp_tunnel_get_nth): a dump
    made while tunnels are being deleted skips live ones. Taking a skipped tunnel as gone made
    the agent re-create it (EEXIST) and disown it; forgetting one no longer declared leaked it.
    """
    tunnels = kernel.dump_tunnels()
    sessions = kernel.dump_sessions()
    if owned is not None:
        seen = {t.config.tunnel_id for t in tunnels}
        for tid in sorted(owned.tunnels - seen):
            found = kernel.get_tunnel(tid)
            if found is not None:
                tunnels.append(found)
                seen.add(tid)
        have = {(s.config.tunnel_id, s.config.session_id) for s in sessions}
        for key in sorted(owned.sessions - have):
            if key[0] in seen:
                got = kernel.get_session(*key)
                if got is not None:
                    sessions.append(got)
    return Observed.of(tunnels, sessions, kernel.dump_links() if links else ())


OBSERVE_ATTEMPTS = 5


def observe_patiently(
    kernel: KernelPort,
    owned: Owned,
    links: bool,
    sleep: Callable[[float], None],
) -> Observed:
    """observe(), retried with a growing pause while the kernel says "try again" (BUSY: a link
    dump interrupted by interfaces coming and going, a full socket buffer); any other error,
    or BUSY after OBSERVE_ATTEMPTS, is raised."""
    for attempt in range(1, OBSERVE_ATTEMPTS + 1):
        try:
            return observe(kernel, owned, links=links)
        except KernelError as exc:
            if exc.outcome is not Outcome.BUSY or attempt == OBSERVE_ATTEMPTS:
                raise
            sleep(0.1 * 2 ** (attempt - 1))
    raise AssertionError("unreachable")


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
    if observed.links:  # not dumped this round: nothing known
        owned.deleting_links = {n for n in owned.deleting_links if n in observed.links}
    return _track_ifindex(owned, observed) or _sizes(owned) != before


def _track_ifindex(owned: Owned, observed: Observed) -> bool:
    """Record the index of each owned link when first seen; drop ownership of a name whose link
    now has another index (deleted and made again by someone else). Returns whether changed."""
    names = owned.bridges | owned.vlans | owned.ports.keys()
    names |= {
        s.config.ifname or ""
        for key, s in observed.sessions.items()
        if key in owned.sessions and key not in owned.deleting
    }
    dumped = bool(observed.links)  # else nothing is known of links this round
    stale = [n for n in owned.ifindex if n not in names or (dumped and n not in observed.links)]
    for name in stale:
        del owned.ifindex[name]
    changed = bool(stale)
    for name in names:
        link = observed.links.get(name)
        if link is None:
            continue
        known = owned.ifindex.get(name)
        if known is None:
            owned.ifindex[name] = link.index
            changed = True
        elif known != link.index:
            changed |= owned.addresses.pop(name, None) is not None
            if name not in owned.bridges | owned.vlans | owned.ports.keys():
                continue  # a session's device under another index: the plan replaces it
            owned.bridges.discard(name)
            owned.vlans.discard(name)
            owned.ports.pop(name, None)
            del owned.ifindex[name]
            changed = True
    return changed


def _record(owned: Owned, action: Action) -> Callable[[], None] | None:
    """Mark what a create or attach makes ours; returns what puts the record back as it was
    (None: the action makes nothing ours).

    Undoing restores, never removes, what was owned before: a create of an owned object that
    fails (EEXIST: a dump that skipped it) must not disown it.
    """
    match action:
        case CreateTunnel(tunnel_id=tid):
            had = tid in owned.tunnels
            owned.tunnels.add(tid)

            def undo() -> None:
                if not had:
                    owned.tunnels.discard(tid)

        case CreateSession(key=key, config=cfg):
            had, seq, l2spec = key in owned.sessions, owned.seq.get(key), owned.l2spec.get(key)
            owned.sessions.add(key)
            owned.ifindex.pop(cfg.ifname or "", None)  # recorded when first seen
            owned.l2spec[key] = cfg.l2spec_type
            owned.seq[key] = (cfg.send_seq, cfg.recv_seq)

            def undo() -> None:
                if not had:
                    owned.sessions.discard(key)
                _put(owned.seq, key, seq)
                _put(owned.l2spec, key, l2spec)

        case ModifySession(key=key, config=cfg):
            seq = owned.seq.get(key)
            owned.seq[key] = (cfg.send_seq, cfg.recv_seq)

            def undo() -> None:
                _put(owned.seq, key, seq)

        case CreateBridge(ifname=name) | CreateVlan(ifname=name):
            record = owned.bridges if isinstance(action, CreateBridge) else owned.vlans
            had, index = name in record, owned.ifindex.get(name)
            record.add(name)
            owned.ifindex.pop(name, None)  # a new link: its index is recorded when seen

            def undo() -> None:
                if not had:
                    record.discard(name)
                _put(owned.ifindex, name, index)

        case SetMaster(ifname=name, master=master, host_port=True):
            port = owned.ports.get(name)
            owned.ports[name] = master

            def undo() -> None:
                _put(owned.ports, name, port)

        case AddAddress(ifname=name, address=address):
            had = address in owned.addresses.get(name, ())
            owned.addresses.setdefault(name, set()).add(address)

            def undo() -> None:
                if not had:
                    owned.addresses.get(name, set()).discard(address)

        case _:
            return None
    return undo


def _put(record: dict[Any, Any], key: object, value: object) -> None:
    if value is None:
        record.pop(key, None)
    else:
        record[key] = value


def _forget(owned: Owned, action: Action) -> None:
    """After a successful delete/release. A deleted tunnel or session stays owned, marked as
    going away, until the kernel stops reporting it (forget_gone): only then is its id free."""
    match action:
        case DeleteTunnel():  # its sessions' seq/l2spec records: _forget_sessions_of
            owned.deleting_links.update(action.links)
            owned.deleting.add(action.key)
        case DeleteSession(key=key):
            owned.deleting_links.update(action.links)
            owned.deleting.add(key)
            owned.seq.pop(key, None)
            owned.l2spec.pop(key, None)
        case DeleteLink(ifname=name):
            owned.bridges.discard(name)
            owned.vlans.discard(name)
            owned.addresses.pop(name, None)
        case ReleasePort(ifname=name):
            owned.ports.pop(name, None)
        case DelAddress(ifname=name, address=address):
            owned.addresses.get(name, set()).discard(address)


def _forget_sessions_of(owned: Owned, tunnels: set[int]) -> None:
    """Drop what was applied to the sessions of deleted tunnels: once for all of a round's
    deletes (per delete, it made removing N tunnels O(N^2))."""
    if tunnels:
        owned.seq = {k: v for k, v in owned.seq.items() if k[0] not in tunnels}
        owned.l2spec = {k: v for k, v in owned.l2spec.items() if k[0] not in tunnels}


def _execute(kernel: KernelPort, a: Action) -> None:
    match a:
        case DeleteTunnel():
            kernel.delete_tunnel(a.tunnel_id)
        case DeleteSession(key=(tid, sid)):
            kernel.delete_session(tid, sid)
        case DeleteLink():
            kernel.delete_link(a.ifname)
        case ReleasePort():
            kernel.set_master(a.ifname, None)
        case DelAddress():
            kernel.del_address(a.ifname, a.address)
        case CreateTunnel():
            kernel.create_tunnel(a.config)
        case CreateSession():
            kernel.create_session(a.config)
        case ModifySession(key=(tid, sid), config=cfg):
            kernel.modify_session(tid, sid, send_seq=cfg.send_seq, recv_seq=cfg.recv_seq)
        case CreateBridge():
            kernel.create_bridge(a.ifname)
        case CreateVlan():
            kernel.create_vlan(a.ifname, a.parent, a.vlan_id)
        case SetMaster():
            kernel.set_master(a.ifname, a.master)
        case AddAddress():
            kernel.add_address(a.ifname, a.address)
        case SetLink():
            # Before up: the kernel makes the link-local address and default qdisc at up.
            if a.qdisc is not None:
                kernel.set_qdisc(a.ifname, a.qdisc)
            if a.addr_gen_mode is not None:
                kernel.set_addr_gen_mode(a.ifname, a.addr_gen_mode)
            kernel.set_link(a.ifname, up=a.up, mtu=a.mtu)


_CREATES = (CreateTunnel, CreateSession, CreateBridge, CreateVlan)
# writes to, or under, an object the round's dump showed
_BUILDS_ON = (CreateSession, ModifySession, CreateVlan, SetLink, SetMaster, AddAddress)


def apply(
    kernel: KernelPort,
    plan: Plan,
    owned: Owned,
    save: Callable[[Owned], None],
    failures: dict[str, Failure],
    deleted: set[tuple[int, int]],
) -> tuple[int, dict[str, str]]:
    """Apply a plan; returns (writes, subjects to retry next round -> why).

    Whatever one action raises fails that action's object only: a KernelError with its
    outcome, anything else (a bug, an input the kernel codec refuses) as an internal error.
    """
    actions = plan.ordered()
    undo: dict[int, Callable[[], None]] = {}
    for i, action in enumerate(actions):
        if (restore := _record(owned, action)) is not None:
            undo[i] = restore
    save(owned)
    failed: set[str] = set()
    retry: dict[str, str] = {}
    tunnels_deleted: set[int] = set()
    writes = 0
    for i, action in enumerate(actions):
        blocked = action.depends and (action.depends in failed or action.depends in failures)
        if action.subject in failed or blocked:
            undo.get(i, _nothing)()
            continue
        try:
            _execute(kernel, action)
            writes += 1
            _forget(owned, action)
            if isinstance(action, DeleteTunnel | DeleteSession):
                deleted.add(action.key)
            if isinstance(action, DeleteTunnel):
                tunnels_deleted.add(action.tunnel_id)
        except KernelError as exc:
            writes += 1
            undo.get(i, _nothing)()
            failed.add(action.subject)
            if _transient(action, exc, owned, deleted, _was_owned(action, owned)):
                retry[action.subject] = f"{action.describe()}: {exc}"
            else:
                failures[action.subject] = Failure(
                    kernel_reason(exc.outcome), f"{action.describe()}: {exc}"
                )
        except Exception as exc:
            undo.get(i, _nothing)()
            failed.add(action.subject)
            failures[action.subject] = Failure(
                Reason.KERNEL_ERROR,
                f"{action.describe()}: internal error ({type(exc).__name__}: {exc}); the other"
                " objects are not affected: report this as a bug of kube-l2tp",
            )
    _forget_sessions_of(owned, tunnels_deleted)
    save(owned)
    return writes, retry


def _nothing() -> None:
    pass


def _was_owned(action: Action, owned: Owned) -> bool:
    """After its undo: whether the object a create failed on is (still) recorded as ours."""
    match action:
        case CreateTunnel(tunnel_id=tid):
            return tid in owned.tunnels
        case CreateSession(key=key):
            return key in owned.sessions
        case CreateBridge(ifname=name) | CreateVlan(ifname=name):
            return name in owned.bridges or name in owned.vlans
    return False


def _transient(
    action: Action,
    exc: KernelError,
    owned: Owned,
    deleted: set[tuple[int, int]],
    owned_before: bool,
) -> bool:
    """Whether a failed write is retried next round instead of failing its object."""
    if exc.outcome is Outcome.BUSY:
        return True
    # What a write builds on (a session's tunnel, a link) can vanish between the round's dump
    # and the write: deleted outside the agent and still being torn down when dumped. The next
    # round's dump shows what is left, and plans from it.
    if exc.outcome is Outcome.NOT_FOUND and isinstance(action, _BUILDS_ON):
        return True
    if not isinstance(action, _CREATES):
        return False
    tunnel_deleting = any(s == 0 for _, s in deleted) or any(s == 0 for _, s in owned.deleting)
    if exc.outcome is Outcome.EXISTS:
        # An owned object a dump did not show: look again (the next observe asks by id). And
        # the kernel deletes tunnels (and, since 6.12, sessions and their devices)
        # asynchronously: re-creating what the agent just deleted can meet EEXIST for a moment.
        just_deleted, name = False, None
        if isinstance(action, CreateTunnel):
            just_deleted = (action.tunnel_id, 0) in deleted
        elif isinstance(action, CreateSession):
            just_deleted = (action.key[0], 0) in deleted or action.key in deleted
            name = action.config.ifname
        return owned_before or just_deleted or (name is not None and name in owned.deleting_links)
    # A deleted UDP tunnel's socket is released by the kernel's delete work, after the delete
    # returned: a new tunnel id on the same local address and port meets EADDRINUSE until then.
    return (
        exc.outcome is Outcome.ADDRESS_IN_USE
        and isinstance(action, CreateTunnel)
        and tunnel_deleting
    )


def reconcile(
    kernel: KernelPort,
    desired: Desired,
    owned: Owned,
    save: Callable[[Owned], None] = lambda _: None,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """Converge the kernel to ``desired``; touches only what ``owned`` records (and updates it).

    A kernel that cannot be read fails every object (no L2TP, no permission); one whose dumps
    keep being interrupted (BUSY) leaves the result ``incomplete``, judging no object.
    """
    result = Result()
    deleted: set[tuple[int, int]] = set()
    retrying: dict[str, str] = {}
    plan = Plan()
    try:
        observed = observe_patiently(kernel, owned, needs_links(desired, owned), sleep)
    except KernelError as exc:  # no L2TP in this kernel, no permission: every object says so
        return unreachable(desired, exc)
    for attempt in range(1, MAX_ROUNDS + 1):
        if forget_gone(owned, desired, observed):
            save(owned)
        plan = make_plan(desired, observed, owned)
        actions = [a for a in plan.actions if a.subject not in result.failures]
        waiting = bool(plan.pending and (owned.deleting or owned.deleting_links))
        if not actions and not waiting:
            break
        plan.actions = actions
        retry: dict[str, str] = {}
        if actions:
            result.rounds += 1
            writes, retry = apply(kernel, plan, owned, save, result.failures, deleted)
            result.writes += writes
            retrying.update(retry)
        if retry or waiting:
            sleep(0.05 * attempt)  # let the kernel finish deleting a replaced object
        try:
            observed = observe_patiently(kernel, owned, needs_links(desired, owned), sleep)
        except KernelError as exc:
            return unreachable(desired, exc, result.writes)
    else:  # out of rounds: judge the objects by the state the last round left
        forget_gone(owned, desired, observed)
        plan = make_plan(desired, observed, owned)
    result.results = _results(desired, observed, plan, result.failures, retrying)
    return result


def unreachable(desired: Desired, exc: KernelError, writes: int = 0) -> Result:
    """Every object fails with the same reason when the kernel cannot even be read; a kernel
    that only said "try again" (BUSY) judges no object: the result is incomplete."""
    if exc.outcome is Outcome.BUSY:
        return Result(writes=writes, incomplete=f"{exc}")
    reason = kernel_reason(exc.outcome)
    subjects = [tunnel_subject(t.name) for t in desired.tunnels.values()]
    subjects += [session_subject(s.name) for s in desired.sessions.values()]
    result = Result(writes=writes)
    result.results = {s: ObjectResult(s, False, reason, str(exc)) for s in subjects}
    return result


def _results(
    desired: Desired,
    observed: Observed,
    plan: Plan,
    failures: dict[str, Failure],
    retrying: dict[str, str] | None = None,
) -> dict[str, ObjectResult]:
    findings: dict[str, Finding] = {}
    for f in plan.findings:
        findings.setdefault(f.subject, f)
    busy = {a.subject for a in plan.actions} | plan.pending
    out: dict[str, ObjectResult] = {}

    def verdict(subject: str, exists: bool) -> tuple[bool, Reason, str]:
        if subject in failures:
            failure = failures[subject]
            return False, failure.reason, failure.message
        if subject in findings:
            return False, findings[subject].reason, findings[subject].message
        if subject in busy or not exists:
            last = (retrying or {}).get(subject)
            return (
                False,
                Reason.PROGRESSING,
                f"not converged yet (retrying: {last})" if last else ("not converged yet"),
            )
        return True, Reason.PROGRAMMED, "programmed in the kernel"

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
            reason, message = Reason.TUNNEL_NOT_READY, f"tunnel {s.tunnel}: {tunnel_result.message}"
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
            ignored=s.ignored + ((plan.notes[subject],) if subject in plan.notes else ()),
            addr_gen_mode=link.addr_gen_mode if link else None,
            qdisc=link.qdisc if link else None,
        )
    return out
