"""What the real server serves from the CRDs: printer columns, explain, and the spec.nodeName field
selector the agents' watches depend on (selectableFields)."""

from __future__ import annotations

import threading
import time
from typing import Any

import yaml
from kubernetes import client, config, watch

from kube_l2tp.api import crd
from kube_l2tp.k8s.conditions import condition
from kube_l2tp.k8s.watch import NodeCache

from .fixtures import Kubectl
from .server import REPO, RealApiServer

GV = "/apis/kubel2tp.io/v1alpha1"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def tunnel(name: str, node: str, tunnel_id: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tunnelID": tunnel_id,
            "peerTunnelID": 4000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 5000 + tunnel_id % 1000, "destinationPort": 6000},
        },
    }


def session(name: str, tunnel_ref: str, node: str, session_id: int = 1000) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {
            "tunnelRef": tunnel_ref,
            "nodeName": node,
            "sessionID": session_id,
            "peerSessionID": session_id + 1000,
        },
    }


def table(api: RealApiServer, plural: str) -> dict[str, Any]:
    answer = api.http.get(f"{api.url}{GV}/{plural}", headers={"Accept": TABLE}, timeout=30)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def columns_of(plural: str) -> list[str]:
    crd_doc = yaml.safe_load((REPO / "crds" / f"{plural}.yaml").read_text())
    return [c["name"] for c in crd_doc["spec"]["versions"][0]["additionalPrinterColumns"]]


def test_printer_columns_are_served(api: RealApiServer, kubectl: Kubectl) -> None:
    api.create(tunnel("cols-t", "node-a", 3000))
    api.create(session("cols-s", "cols-t", "node-a"))
    ready = condition("Ready", "True", "Programmed", "programmed")
    peer = condition("PeerActive", "True", "PeerActive", "packets arrive")
    code, body = api.submit(
        "PATCH",
        f"{GV}/l2tpsessions/cols-s/status",
        {"status": {"conditions": [ready, peer], "interfaceName": "l2tpeth0", "mtu": 1446}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, body
    sessions = table(api, "l2tpsessions")
    assert [c["name"] for c in sessions["columnDefinitions"]] == [
        "Name",
        *columns_of("l2tpsessions"),
    ]
    (row,) = sessions["rows"]
    cells = dict(zip([c["name"] for c in sessions["columnDefinitions"]], row["cells"], strict=True))
    assert cells["Tunnel"] == "cols-t" and cells["Node"] == "node-a"
    assert (cells["ID"], cells["Peer ID"], cells["Interface"], cells["MTU"]) == (
        1000,
        2000,
        "l2tpeth0",
        1446,
    )
    assert (cells["Ready"], cells["Peer"], cells["Reason"]) == ("True", "PeerActive", "Programmed")
    tunnels = table(api, "l2tptunnels")
    assert [c["name"] for c in tunnels["columnDefinitions"]] == ["Name", *columns_of("l2tptunnels")]
    # the category and short names: `kubectl get l2tp` lists both kinds with their columns
    out = kubectl("get", "l2tp", "-o", "wide").stdout.splitlines()
    headers = sorted(line.split() for line in out if line.startswith("NAME"))
    expected = sorted(
        ["NAME", *" ".join(columns_of(plural)).upper().split()]
        for plural in ("l2tpsessions", "l2tptunnels")
    )
    assert headers == expected, out
    row = next(line.split() for line in out if "l2tpsession.kubel2tp.io/cols-s" in line)
    assert row[:5] == ["l2tpsession.kubel2tp.io/cols-s", "cols-t", "node-a", "1000", "2000"]
    assert kubectl("get", "l2tps", "cols-s", "-o", "name").stdout.strip() == (
        "l2tpsession.kubel2tp.io/cols-s"
    )


def test_explain_shows_the_crd_descriptions(kubectl: Kubectl, api: RealApiServer) -> None:
    schema = crd.all_crds()
    tunnel_crd = next(c for c in schema.values() if c["spec"]["names"]["kind"] == "L2TPTunnel")
    spec = tunnel_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    out = kubectl("explain", "l2tptunnel.spec").stdout
    for field in ("tunnelID", "peerTunnelID", "local", "remote", "udp", "nodeName"):
        assert f"{field}\t" in out or f"{field} " in out, (field, out)
        first_words = " ".join(spec["properties"][field]["description"].split()[:5])
        assert first_words in " ".join(out.split()), (field, first_words)
    udp = kubectl("explain", "l2tptunnel.spec.udp.sourcePort").stdout
    assert "FIELD: sourcePort <integer>" in udp, udp


def test_field_selector_sends_a_node_only_its_own_objects(
    api: RealApiServer, kubectl: Kubectl
) -> None:
    """The agent's watch (k8s.watch.NodeCache) receives no event about another node's objects,
    counted while node-b's objects are created, changed and deleted; an unfiltered watch of the
    same stretch sees them (the count would notice a leak)."""
    api.create(tunnel("fs-a1", "node-a", 3000))
    api.create(tunnel("fs-b1", "node-b", 3001))
    config.load_kube_config(config_file=str(api.kubeconfig))
    custom = client.CustomObjectsApi()
    seen: list[tuple[str, str]] = []
    cache = NodeCache(
        custom,
        "l2tptunnels",
        "node-a",
        lambda kind, obj: seen.append((kind, obj["metadata"]["name"] if obj else "")),
    )
    cache.start()
    try:
        deadline = time.monotonic() + 15
        while not cache.synced.is_set():
            assert time.monotonic() < deadline, "no first list"
            time.sleep(0.05)
        assert [o["metadata"]["name"] for o in cache.snapshot()] == ["fs-a1"]
        start = api.get(f"{GV}/l2tptunnels")["metadata"]["resourceVersion"]
        unfiltered: list[str] = []

        def everything() -> None:
            stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                custom.list_cluster_custom_object,
                "kubel2tp.io",
                "v1alpha1",
                "l2tptunnels",
                resource_version=start,
                timeout_seconds=10,
            )
            for event in stream:
                name = event["object"]["metadata"]["name"]
                unfiltered.append(name)
                if name == "fs-a-marker":
                    return

        other = threading.Thread(target=everything, daemon=True)
        other.start()
        for i in range(5):  # node-b's churn: create, change, delete
            api.create(tunnel(f"fs-b{i + 2}", "node-b", 3002 + i))
        api.submit(
            "PATCH",
            f"{GV}/l2tptunnels/fs-b1",
            {"spec": {"peerTunnelID": 4001}},
            content_type="application/merge-patch+json",
        )
        api.submit("DELETE", f"{GV}/l2tptunnels/fs-b2")
        api.create(tunnel("fs-a-marker", "node-a", 3100))  # after all of node-b's, in order
        deadline = time.monotonic() + 15
        while not any(n == "fs-a-marker" for _, n in seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)
        other.join(15)
        events = [n for k, n in seen if k != "LIST"]
        assert events == ["fs-a-marker"], seen  # nothing of node-b's reached node-a's watch
        assert cache.events_received == 1
        assert sum(n.startswith("fs-b") for n in unfiltered) == 7, unfiltered
    finally:
        cache.stop()
    listed = kubectl("get", "l2tpt", "--field-selector", "spec.nodeName=node-b", "-o", "name")
    assert sorted(listed.stdout.split()) == [
        f"l2tptunnel.kubel2tp.io/fs-b{i}" for i in (1, 3, 4, 5, 6)
    ]
