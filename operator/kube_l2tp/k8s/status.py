"""What an agent's status pass writes, built purely from one view of the objects and one
reconcile's result: each live object's status, and the deleted objects whose kernel is clean
(their finalizer may go). No I/O and no clock: agent.cluster writes what this returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any

from kube_l2tp.api.crd import SESSION_KIND, TUNNEL_KIND
from kube_l2tp.api.model import Resources
from kube_l2tp.api.problems import Problem
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Owned
from kube_l2tp.core.liveness import Liveness, PeerVerdict
from kube_l2tp.core.reconcile import ObjectResult, Result
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.view import ApiObject, ClusterView


@dataclass(frozen=True)
class Selection:
    """What validation made of the view's live objects (agent.cluster's admit phase)."""

    resources: Resources  # what the live objects declare (their last valid versions)
    invalid: Mapping[str, Problem] = field(default_factory=dict)  # subject -> first error
    stale: Set[str] = frozenset()  # invalid now, running on their last valid version


@dataclass(frozen=True)
class Peer:
    """A session's peer liveness, as the PeerActive condition needs it."""

    verdict: PeerVerdict | None
    since: tuple[Liveness, str] | None  # a state and when it began (wall clock), if known
    current: Mapping[str, Any] | None  # the PeerActive condition the server has now


@dataclass(frozen=True)
class ObjectStatus:
    obj: ApiObject
    result: ObjectResult  # what the status says (reason and message for Events too)
    status: dict[str, Any]


@dataclass(frozen=True)
class Release:
    """A deleted object with nothing of its own left in the kernel: its finalizer may go."""

    obj: ApiObject


# In the view's order: a status for each live object, a Release for each deleted one whose
# kernel objects are gone (a deleted one still in the kernel gets nothing: the next pass).
StatusPass = tuple[ObjectStatus | Release, ...]


def build(
    view: ClusterView,
    selection: Selection,
    result: Result,
    owned: Owned,
    node: str,
    peers: Mapping[str, Peer],
    now: str,
) -> StatusPass:
    """The status pass for ``view`` after ``result``; ``owned``: what the kernel has of ours."""
    deleting = view.deleting()
    declared = _declared(selection.resources) if deleting else (set(), set())
    out: list[ObjectStatus | Release] = []
    for subject, obj in view.objects.items():
        if subject in deleting:
            if kernel_clean(obj, view, owned, declared):
                out.append(Release(obj))
            continue
        r = object_result(obj, view, selection, result)
        out.append(ObjectStatus(obj, r, status(obj, r, node, peers.get(subject), now)))
    return tuple(out)


def object_result(
    obj: ApiObject, view: ClusterView, selection: Selection, result: Result
) -> ObjectResult:
    """What the object's Ready condition says: invalid, the reconcile's verdict, or waiting."""
    subject = obj.subject
    if subject in selection.invalid:
        p = selection.invalid[subject]
        where = f"{p.path}: " if p.path else ""
        kept = "; the last valid version stays programmed" if subject in selection.stale else ""
        return ObjectResult(subject, False, p.reason, where + p.message + kept)
    found = result.results.get(subject)
    if found is not None:
        return found
    if obj.kind == SESSION_KIND and view.tunnel_of(obj) is None:
        return ObjectResult(
            subject,
            False,
            Reason.TUNNEL_NOT_FOUND,
            f"no L2TPTunnel {obj.tunnel_ref!r} on this node",
        )
    return ObjectResult(subject, False, Reason.PROGRESSING, "waiting to be programmed")


def status(
    obj: ApiObject, r: ObjectResult, node: str, peer: Peer | None, now: str
) -> dict[str, Any]:
    """The object's .status: observedGeneration, Ready (and PeerActive and what was programmed,
    for a session)."""
    ready = conditions.condition(
        conditions.READY,
        "True" if r.ready else "False",
        r.reason,
        r.message,
        observed_generation=obj.generation,
        last_transition_time=now,
    )
    out: dict[str, Any] = {"observedGeneration": obj.generation, "conditions": [ready]}
    if obj.kind != SESSION_KIND:
        return out
    verdict, since = (peer.verdict, peer.since) if peer else (None, None)
    out["conditions"].append(
        conditions.peer_active(
            verdict,
            programmed=bool(r.interface),
            current=peer.current if peer else None,
            observed_generation=obj.generation,
            last_transition_time=since[1]
            if since and verdict and since[0] is verdict.state
            else None,
            now=now,
        )
    )
    out["nodeName"] = node
    if r.interface:
        out.update(interfaceName=r.interface, interfaceIndex=r.ifindex, mtu=r.mtu)
        if r.addr_gen_mode:
            out["ipv6AddrGenMode"] = r.addr_gen_mode
        if r.qdisc:
            out["qdisc"] = r.qdisc
    if r.ignored:
        out["ignored"] = list(r.ignored)
    return out


SessionIds = tuple[int | None, int | None]  # (tunnel id, session id)


def kernel_clean(
    obj: ApiObject,
    view: ClusterView,
    owned: Owned,
    declared: tuple[set[int | None], set[SessionIds]],
) -> bool:
    """Whether nothing this (deleted) object declared is left in this node's kernel.

    A kernel object that a live object also declares (``declared``: the live objects' tunnel
    ids and session keys) is that object's, not this one's: a refused duplicate (Conflict)
    must be deletable while the original keeps its tunnel.
    """
    tunnel_ids, session_keys = declared
    if obj.kind == TUNNEL_KIND:
        return obj.tunnel_id not in owned.tunnels or obj.tunnel_id in tunnel_ids
    tunnel = view.tunnel_of(obj)
    key = (tunnel.tunnel_id if tunnel else None, obj.session_id)
    return key not in owned.sessions or key in session_keys


def _declared(live: Resources) -> tuple[set[int | None], set[SessionIds]]:
    """The tunnel ids and session keys the live objects declare (once per status pass, not per
    object being deleted: a mass delete would make that quadratic)."""
    ids: dict[str, int | None] = {t.name: t.tunnel_id for t in live.tunnels}
    return set(ids.values()), {(ids.get(s.tunnel_ref), s.session_id) for s in live.sessions}
