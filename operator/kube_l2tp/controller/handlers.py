"""The kopf handlers of the operator, in a registry of their own (nothing global).

Indexes keep the cluster's L2TP objects and nodes in memory, so admission and status need no
API calls; writes go through kopf's patch for the object at hand, and through k8s.objects (in a
worker thread) for another object. Every handler is level-based: it computes what should be from
the indexes and writes only differences, so a repeated or missed event does no harm.
The operator needs no finalizer of its own and adds none (see app.settings).

With several replicas, every one keeps its indexes and answers admission reviews, but only the
holder of the Lease writes (`leading`); a new holder first repairs what was missed (resync).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from kube_l2tp.api import crd
from kube_l2tp.api.reasons import Reason
from kube_l2tp.controller import admission, status
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.finalizers import is_node_finalizer, node_finalizer, stale
from kube_l2tp.k8s.objects import Cluster

registry = kopf.OperatorRegistry()

TUNNELS = crd.GROUP, crd.VERSION, "l2tptunnels"
SESSIONS = crd.GROUP, crd.VERSION, "l2tpsessions"
NODES = "", "v1", "nodes"


def _first(store: Iterable[Any] | None) -> Any:
    return next(iter(store), None) if store is not None else None


def _plain(body: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": {"name": body.get("metadata", {}).get("name")},
        "spec": copy.deepcopy(dict(body.get("spec") or {})),
        "status": copy.deepcopy(dict(body.get("status") or {})),
    }


def leading(memo: Any) -> bool:
    """Whether this replica writes: it holds the Lease (app.leader_election), or runs alone."""
    leader = getattr(memo, "leader", None)
    return leader is None or bool(leader.held)


def _values(index: Mapping[Any, Iterable[Any]]) -> list[Any]:
    return [value for store in index.values() for value in store]


# --- indexes ---


@kopf.index(*TUNNELS, registry=registry)
def tunnels(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Tunnels by name, as plain dicts: for admission and for the current status."""
    return {name: _plain(body)}


@kopf.index(*SESSIONS, registry=registry)
def sessions(name: str, body: kopf.Body, **_: Any) -> dict[str, dict[str, Any]]:
    """Sessions by name, as plain dicts: for admission."""
    return {name: _plain(body)}


@kopf.index(*SESSIONS, registry=registry)
def sessions_by_tunnel(
    name: str, spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, **_: Any
) -> dict[str, tuple[str, bool]]:
    """tunnelRef -> (session, Ready); sessions being deleted are no longer declared."""
    if meta.get("deletionTimestamp"):
        return {}
    return {str(spec.get("tunnelRef")): (name, conditions.is_true(status))}


@kopf.index(*TUNNELS, registry=registry)
def tunnel_finalizers(name: str, meta: kopf.Meta, **_: Any) -> dict[str, str]:
    return {f: name for f in meta.get("finalizers") or () if is_node_finalizer(f)}


@kopf.index(*SESSIONS, registry=registry)
def session_finalizers(name: str, meta: kopf.Meta, **_: Any) -> dict[str, str]:
    return {f: name for f in meta.get("finalizers") or () if is_node_finalizer(f)}


@kopf.index(*NODES, registry=registry)
def nodes(name: str, **_: Any) -> dict[str, bool]:
    return {name: True}


# --- credentials ---


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account, else KUBECONFIG as it is now (not when kubernetes loaded)."""
    info: kopf.ConnectionInfo | None = kopf.login_with_service_account(
        **kwargs
    ) or kopf.login_with_kubeconfig(**kwargs)
    return info


# --- admission ---


def _review(
    body: kopf.Body, old: kopf.Body | None, index_t: kopf.Index[str, Any], index_s: Any
) -> admission.Verdict:
    return admission.review(
        copy.deepcopy(dict(body)),
        copy.deepcopy(dict(old)) if old is not None else None,
        _values(index_t),
        _values(index_s),
    )


def _admit(
    body: kopf.Body,
    old: kopf.Body | None,
    warnings: list[str],
    tunnels: kopf.Index[str, Any],
    sessions: kopf.Index[str, Any],
    logger: kopf.Logger,
) -> None:
    if admission.spec_unchanged(body, old):
        return
    verdict = _review(body, old, tunnels, sessions)
    warnings.extend(verdict.warnings)
    if not verdict.allowed:
        name = body.get("metadata", {}).get("name")
        logger.info(f"rejected {body.get('kind')}/{name}: {'; '.join(verdict.errors)}")
        raise kopf.AdmissionError(verdict.message(), code=422)


# failurePolicy Ignore: with the operator down, agents must still be able to remove finalizers.
_WEBHOOK: dict[str, Any] = {
    "operations": ["CREATE", "UPDATE"],
    "ignore_failures": True,
    "registry": registry,
}


@kopf.on.validate(*TUNNELS, id="validate-tunnel", **_WEBHOOK)
def validate_tunnel(
    body: kopf.Body, warnings: list[str], logger: kopf.Logger, **kwargs: Any
) -> None:
    """The validate rules, plus conflicts with the tunnels and sessions in the cluster."""
    _admit(body, kwargs["old"], warnings, kwargs["tunnels"], kwargs["sessions"], logger)


@kopf.on.validate(*SESSIONS, id="validate-session", **_WEBHOOK)
def validate_session(
    body: kopf.Body, warnings: list[str], logger: kopf.Logger, **kwargs: Any
) -> None:
    """The validate rules, plus conflicts with the tunnels and sessions in the cluster."""
    _admit(body, kwargs["old"], warnings, kwargs["tunnels"], kwargs["sessions"], logger)


@kopf.on.mutate(*SESSIONS, id="fill-node-name", **_WEBHOOK)
def fill_node_name(spec: kopf.Spec, patch: kopf.Patch, **kwargs: Any) -> None:
    """spec.nodeName from the tunnel, so agents can select their sessions server-side."""
    tunnels: kopf.Index[str, Any] = kwargs["tunnels"]
    ref = str(spec.get("tunnelRef", ""))
    node = admission.session_node(spec, {ref: _first(tunnels.get(ref))} if ref in tunnels else {})
    if node:
        patch.spec["nodeName"] = node


# --- status and nodeName, level-based ---


def _summary(ref: str, index: kopf.Index[str, tuple[str, bool]]) -> dict[str, Any]:
    return status.summary(ready for _, ready in index.get(ref, ()))


@kopf.on.event(*TUNNELS, registry=registry)
async def tunnel_event(
    name: str,
    type: str,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Keep this tunnel's session summary current; drop finalizers of nodes that are gone.

    Also fill spec.nodeName of sessions that arrived before their tunnel: nothing else would
    bring those sessions back to the operator, and without a nodeName no agent receives them.
    """
    if type == "DELETED" or not leading(memo):
        return
    wanted = _summary(name, kwargs["sessions_by_tunnel"])
    if status.differs(kwargs["status"], wanted):
        patch.status.update(wanted)
    node = (kwargs.get("spec") or {}).get("nodeName")
    if node and not meta.get("deletionTimestamp"):
        for session in _values(kwargs["sessions"]):
            spec = session["spec"]
            if spec.get("tunnelRef") == name and not spec.get("nodeName"):
                sname = session["metadata"]["name"]
                logger.info(f"L2TPSession {sname}: spec.nodeName set to {node} from its tunnel")
                await asyncio.to_thread(
                    memo.cluster.patch_spec, SESSIONS[2], sname, {"nodeName": node}
                )
    await _drop_stale(memo.cluster, TUNNELS[2], name, meta, kwargs["nodes"], logger)


@kopf.on.event(*SESSIONS, registry=registry)
async def session_event(
    name: str,
    type: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Refresh the tunnel's summary; fill nodeName where the webhook could not (no tunnel yet)."""
    if not leading(memo):
        return
    tunnels: kopf.Index[str, Any] = kwargs["tunnels"]
    ref = str(spec.get("tunnelRef", ""))
    tunnel = _first(tunnels.get(ref)) if ref in tunnels else None
    if type != "DELETED" and not meta.get("deletionTimestamp"):
        node = admission.session_node(spec, {ref: tunnel} if tunnel else {})
        if node:
            patch.spec["nodeName"] = node
    if tunnel is not None:
        wanted = _summary(ref, kwargs["sessions_by_tunnel"])
        if status.differs(tunnel.get("status"), wanted):
            await asyncio.to_thread(memo.cluster.patch_status, TUNNELS[2], ref, wanted)
    if type != "DELETED":
        await _drop_stale(memo.cluster, SESSIONS[2], name, meta, kwargs["nodes"], logger)


# --- nodes that are gone ---


@kopf.on.event(*NODES, registry=registry)
async def node_event(name: str, type: str, memo: Any, **kwargs: Any) -> None:
    """A deleted node's agent will never remove its finalizers: remove them for it."""
    if type != "DELETED" or not leading(memo):
        return
    finalizer = node_finalizer(name)
    for plural, index in (
        (SESSIONS[2], kwargs["session_finalizers"]),
        (TUNNELS[2], kwargs["tunnel_finalizers"]),
    ):
        for obj_name in list(index.get(finalizer, ())):
            await _remove(memo.cluster, plural, obj_name, [finalizer], f"node {name} was deleted")


async def _drop_stale(
    cluster: Cluster,
    plural: str,
    name: str,
    meta: kopf.Meta,
    nodes: kopf.Index[str, bool],
    logger: kopf.Logger,
) -> None:
    """Finalizers of nodes that no longer exist (missed while the operator was down)."""
    suspects = stale(meta.get("finalizers") or (), nodes.keys())
    if not suspects:
        return
    # The index may lag a node that just joined: ask the API before removing anything.
    gone = stale(suspects, await asyncio.to_thread(cluster.nodes))
    if gone:
        logger.info(f"finalizers of nodes that no longer exist: {', '.join(gone)}")
        await _remove(cluster, plural, name, gone, "its node no longer exists")


async def _remove(
    cluster: Cluster, plural: str, name: str, finalizers: list[str], why: str
) -> None:
    removed, obj = await asyncio.to_thread(cluster.remove_finalizers, plural, name, finalizers)
    if removed and obj is not None:
        kopf.warn(
            kopf.Body(cast("kopf.RawBody", obj)),
            reason=Reason.NODE_GONE,
            message=f"removed finalizer(s) {', '.join(removed)}: {why}",
        )
