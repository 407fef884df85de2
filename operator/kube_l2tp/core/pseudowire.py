"""The L2TPTunnel/L2TPSession objects of a pseudowire's in-cluster ends, from its allocation.

Pure: the operator (to come) writes what this returns and owns it; the far end of an external
peer is its profile's rendering of the in-cluster end (core.profiles). Each end sends its own
cookie and expects the other's, its UDP source port is the other's destination port, and its
ids are the other's peer ids: the two ends mirror each other by construction, which
``kube-l2tp validate`` checks when both are in one set.
"""

from __future__ import annotations

from typing import Any

from kube_l2tp.api.model import L2SpecType, Sequencing
from kube_l2tp.core.allocation import Allocation, End, EndValues, Request

API_VERSION = "kubel2tp.io/v1alpha1"
LABEL = "kubel2tp.io/pseudowire"


def owned_objects(
    req: Request,
    alloc: Allocation,
    *,
    l2spec: L2SpecType = "default",
    sequencing: Sequencing = "none",
) -> list[dict[str, Any]]:
    """Tunnel and session manifests for every end of ``req`` that is a node of the cluster."""
    objects: list[dict[str, Any]] = []
    sides = (("a", req.a, alloc.a, req.b, alloc.b), ("b", req.b, alloc.b, req.a, alloc.a))
    for side, end, mine, other_end, other in sides:
        if end.node is None:
            continue
        objects += _end(req, side, end, mine, other_end, other, l2spec, sequencing)
    return objects


def _end(
    req: Request,
    side: str,
    end: End,
    mine: EndValues,
    other_end: End,
    other: EndValues,
    l2spec: L2SpecType,
    sequencing: Sequencing,
) -> list[dict[str, Any]]:
    name = f"{req.name}-{side}"
    tunnel: dict[str, Any] = {
        "nodeName": end.node,
        "tunnelID": mine.tunnel_id,
        "peerTunnelID": other.tunnel_id,
        "local": end.address,
        "remote": other_end.address,
        "encapsulation": req.encapsulation,
    }
    if req.encapsulation == "udp":
        tunnel["udp"] = {"sourcePort": mine.port, "destinationPort": other.port}
    session: dict[str, Any] = {
        "tunnelRef": name,
        "sessionID": mine.session_id,
        "peerSessionID": other.session_id,
        "l2specType": l2spec,
        "sequencing": sequencing,
    }
    if mine.cookie:
        session["cookie"] = mine.cookie
    if other.cookie:
        session["peerCookie"] = other.cookie
    return [
        {
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name, "labels": {LABEL: req.name}},
            "spec": spec,
        }
        for kind, spec in (("L2TPTunnel", tunnel), ("L2TPSession", session))
    ]
