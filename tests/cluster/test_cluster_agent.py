"""The agent in cluster mode: server-side node filtering, finalizers, status, Events, outages."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from fakekernel import FakeKernel

from kube_l2tp import embedded
from kube_l2tp.agent.cluster import ClusterSource, cluster_agent
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.agent.serve import build_metrics
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.k8s.finalizers import node_finalizer
from realapi.server import RealApiServer

SEED = list(yaml.safe_load_all((embedded.DIRECTORY / "site-a.yaml").read_text()))


def objects_for(node: str, tunnel_id: int, prefix: str) -> list[dict[str, Any]]:
    tunnel, session = copy.deepcopy(SEED)
    tunnel["metadata"]["name"] = f"{prefix}-t"
    tunnel["spec"].update(nodeName=node, tunnelID=tunnel_id)
    session["metadata"]["name"] = f"{prefix}-s"
    session["spec"].update(tunnelRef=f"{prefix}-t", nodeName=node)
    return [tunnel, session]


def synced(a: Agent, tunnels: int = 1, sessions: int = 1) -> bool:
    """Both watch caches have caught up (they are separate watches, in no set order)."""
    src: Any = a.source
    return bool(
        src.ready()
        and len(src.tunnels.snapshot()) == tunnels
        and len(src.sessions.snapshot()) == sessions
    )


def programmed(apiserver: RealApiServer, a: Agent, objects: list[dict[str, Any]]) -> None:
    """Create the objects, wait until the agent's caches have them, and converge once."""
    for obj in objects:
        apiserver.create(obj)
    wait(lambda: synced(a))
    assert a.reconcile_once().converged


def wait(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def get(apiserver: RealApiServer, plural: str, name: str) -> dict[str, Any] | None:
    return next((o for o in apiserver.objects(plural) if o["metadata"]["name"] == name), None)


def ready(obj: dict[str, Any] | None) -> str:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c["status"] + "/" + c["reason"] for c in conds if c["type"] == "Ready"), "")


def create_two_pairs(apiserver: RealApiServer) -> None:
    """Pairs a (tunnel 3000) and b (tunnel 3001) on node-a, apart in ports and interfaces."""
    b_objects = objects_for("node-a", 3001, "b")
    b_objects[0]["spec"]["udp"] = {"sourcePort": 5100, "destinationPort": 6100}
    b_objects[1]["spec"]["interfaceName"] = "l2tpeth1"
    for obj in objects_for("node-a", 3000, "a") + b_objects:
        apiserver.create(obj)


def test_programs_only_its_node_and_writes_status(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    a, kernel = agent
    for obj in objects_for("node-a", 3000, "a") + objects_for("node-b", 3001, "b"):
        apiserver.create(obj)
    wait(lambda: synced(a))
    result = a.reconcile_once()
    assert result.converged, result.results
    assert set(kernel.tunnels) == {3000}  # node-b's tunnel never reached this agent
    session = get(apiserver, "l2tpsessions", "a-s")
    assert ready(session) == "True/Programmed"
    assert session is not None
    assert session["status"]["interfaceName"] == "l2tpeth0"
    assert session["status"]["mtu"] == 1488 and session["status"]["nodeName"] == "node-a"
    assert session["status"]["observedGeneration"] == session["metadata"]["generation"]
    assert node_finalizer("node-a") in session["metadata"]["finalizers"]
    assert ready(get(apiserver, "l2tptunnels", "b-t")) == ""  # another agent's business
    # the caches keep whatever their watches are sent: nothing of node-b's arrived (the count
    # of events over node-b's churn is tests/realapi/test_views.py's)
    caches = (a.source.tunnels, a.source.sessions)  # type: ignore[attr-defined]
    assert {o["metadata"]["name"] for c in caches for o in c.snapshot()} == {"a-t", "a-s"}
    # a converged node writes nothing more to the API
    source = a.source
    assert isinstance(source, ClusterSource)
    writes = source.writer.writes
    a.reconcile_once()
    assert source.writer.writes == writes


def test_delete_cleans_the_kernel_before_the_finalizer_goes(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    a, kernel = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/a-t"
    code, _ = apiserver.submit("DELETE", path)
    assert code == 200
    tunnel = get(apiserver, "l2tptunnels", "a-t")
    assert tunnel is not None and tunnel["metadata"].get("deletionTimestamp")  # held
    source = a.source
    assert isinstance(source, ClusterSource)
    # the watch has brought the deletion
    wait(lambda: any(o["metadata"].get("deletionTimestamp") for o in source.tunnels.snapshot()))
    a.reconcile_once()
    assert 3000 not in kernel.tunnels  # the kernel first
    a.reconcile_once()
    wait(lambda: get(apiserver, "l2tptunnels", "a-t") is None)  # then the object


def test_api_outage_keeps_the_data_plane_and_converges_after(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    a, kernel = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    kernel.writes.clear()
    metrics = build_metrics(a, lambda: ([], []))
    connected = re.compile(rb'^kube_l2tp_api_connected\{node="node-a"\} (\S+)$', re.MULTILINE)

    def api_connected() -> float:
        found = connected.search(metrics.render())
        assert found, "kube_l2tp_api_connected missing"
        return float(found[1])

    assert api_connected() == 1
    with apiserver.outage():
        wait(lambda: not a.source.tunnels.connected, 15)  # type: ignore[attr-defined]
        assert api_connected() == 0
        during = a.reconcile_once()
        assert during.converged and kernel.writes == []  # nothing torn down
    # a change made while the agent was cut off converges once its watch resumes
    tunnel = get(apiserver, "l2tptunnels", "a-t")
    assert tunnel is not None
    spec = {"spec": {"udp": {"sourcePort": 5001, "destinationPort": 6000}}}
    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/a-t"
    code, _ = apiserver.submit("PATCH", path, spec, content_type="application/merge-patch+json")
    assert code == 200
    wait(
        lambda: any(
            t["spec"]["udp"]["sourcePort"] == 5001
            for t in a.source.tunnels.snapshot()  # type: ignore[attr-defined]
        ),
        30,
    )
    assert a.reconcile_once().converged
    assert kernel.tunnels[3000].udp_sport == 5001
    assert api_connected() == 1


def test_restart_before_the_api_answers_prunes_nothing(
    apiserver: RealApiServer, tmp_path: Path
) -> None:
    kernel = FakeKernel()
    for obj in objects_for("node-a", 3000, "a"):
        apiserver.create(obj)
    store = StateStore(tmp_path / "state")
    config = AgentConfig("node-a", Path(), tmp_path / "state")
    first = cluster_agent(config, kernel, store, no_events)
    wait(lambda: synced(first))
    assert first.reconcile_once().converged
    for cache in (first.source.tunnels, first.source.sessions):  # type: ignore[attr-defined]
        cache.stop()
    store.close()
    kernel.writes.clear()
    with apiserver.outage():
        store = StateStore(tmp_path / "state")
        second = cluster_agent(config, kernel, store, no_events)
        second.reconcile_once()  # no list yet: must not read "no objects" as "delete all"
        assert kernel.writes == [] and 3000 in kernel.tunnels
    wait(second.source.ready, 30)
    assert second.reconcile_once().converged and kernel.writes == []
    for cache in (second.source.tunnels, second.source.sessions):  # type: ignore[attr-defined]
        cache.stop()
    store.close()


def test_a_newcomer_that_collides_is_refused_not_the_running_object(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    """Two users, one tunnel id: the object already running keeps it, whatever the names."""
    a, kernel = agent
    for obj in objects_for("node-a", 3000, "z"):  # sorts after the newcomer's name
        apiserver.create(obj)
    wait(lambda: synced(a))
    assert a.reconcile_once().converged
    newcomer = objects_for("node-a", 3000, "a")[0]  # same tunnel id, same node
    newcomer["spec"]["udp"] = {"sourcePort": 5100, "destinationPort": 6100}
    apiserver.create(newcomer)
    wait(lambda: synced(a, tunnels=2))
    kernel.writes.clear()
    a.reconcile_once()
    assert kernel.writes == []  # z-t untouched
    assert ready(get(apiserver, "l2tptunnels", "z-t")) == "True/Programmed"
    refused = get(apiserver, "l2tptunnels", "a-t")
    assert ready(refused) == "False/Conflict"
    assert refused is not None
    message = refused["status"]["conditions"][0]["message"]
    assert "spec.tunnelID" in message and "L2TPTunnel/z-t" in message
    # the refused duplicate deletes (its finalizer goes), and the original keeps its tunnel
    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/a-t"
    assert apiserver.submit("DELETE", path)[0] == 200
    cache = a.source.tunnels  # type: ignore[attr-defined]
    wait(lambda: any(o["metadata"].get("deletionTimestamp") for o in cache.snapshot()))
    a.reconcile_once()
    wait(lambda: get(apiserver, "l2tptunnels", "a-t") is None)
    assert kernel.writes == [] and 3000 in kernel.tunnels
    assert ready(get(apiserver, "l2tptunnels", "z-t")) == "True/Programmed"


def test_an_invalid_edit_keeps_the_last_valid_version_running(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    """No webhook in the way (or a conflict that only the node sees): nothing is torn down."""
    a, kernel = agent
    create_two_pairs(apiserver)
    wait(lambda: synced(a, tunnels=2, sessions=2))
    assert a.reconcile_once().converged
    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/b-t"
    edit = {"spec": {"tunnelID": 3000}}  # now collides with a-t
    code, _ = apiserver.submit("PATCH", path, edit, content_type="application/merge-patch+json")
    assert code == 200
    cache = a.source.tunnels  # type: ignore[attr-defined]
    wait(
        lambda: (
            {t["metadata"]["name"]: t["spec"]["tunnelID"] for t in cache.snapshot()}["b-t"] == 3000
        )
    )
    kernel.writes.clear()
    a.reconcile_once()
    assert kernel.writes == [] and {3000, 3001} <= set(kernel.tunnels)
    b = get(apiserver, "l2tptunnels", "b-t")
    assert ready(b) == "False/Conflict"
    assert b is not None and "last valid version stays programmed" in str(b["status"])
