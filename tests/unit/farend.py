"""Build validated resources for the far-end profile tests from a few keyword arguments."""

from __future__ import annotations

from typing import Any

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.core.profiles import Refused, Rendered, render_far_end

API = "kubel2tp.io/v1alpha1"


def tunnel(name: str = "t1", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "nodeName": "node-a",
        "tunnelID": 3000,
        "peerTunnelID": 4000,
        "local": "192.0.2.1",
        "remote": "192.0.2.2",
        "encapsulation": "udp",
        "udp": {"sourcePort": 5000, "destinationPort": 6000},
    }
    base.update(spec)
    if base["encapsulation"] == "ip":
        base.pop("udp", None)
    return {"apiVersion": API, "kind": "L2TPTunnel", "metadata": {"name": name}, "spec": base}


def session(name: str = "s1", tunnel_ref: str = "t1", **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"tunnelRef": tunnel_ref, "sessionID": 1000, "peerSessionID": 2000}
    base.update(spec)
    return {"apiVersion": API, "kind": "L2TPSession", "metadata": {"name": name}, "spec": base}


def resources(*objects: dict[str, Any]) -> Resources:
    docs = [manifests.Document(f"test#{i}", o) for i, o in enumerate(objects)]
    report = validation.check_documents(docs)
    assert not report.errors, [p.render() for p in report.errors]
    return report.resources


def rendered(profile: str, *objects: dict[str, Any], **options: str) -> Rendered:
    result = render_far_end(resources(*objects), profile, options=options)
    assert isinstance(result, Rendered), result
    return result


def refused(profile: str, *objects: dict[str, Any], **options: str) -> set[tuple[str, str]]:
    """(object, field) of every refusal; each reason must name the profile's target."""
    result = render_far_end(resources(*objects), profile, options=options)
    assert isinstance(result, Refused), result
    return {(f"{r.kind}/{r.name}", r.field) for r in result.refusals}


def text(result: Rendered) -> str:
    return "".join(o.text for o in result.outputs)
