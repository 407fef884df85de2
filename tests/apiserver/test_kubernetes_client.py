"""The official `kubernetes` client against the emulator, through the kubeconfig it writes.

The operator's k8s layer may be written on this client: create, list by field selector, patch,
status, optimistic concurrency, finalizers, watches, Events and Nodes must behave as in a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client.exceptions import ApiException

from .server import ApiServer

GROUP, VERSION = "kubel2tp.io", "v1alpha1"


@pytest.fixture
def client(apiserver: ApiServer) -> Iterator[kubernetes.client.ApiClient]:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(apiserver.kubeconfig), client_configuration=config
    )
    with kubernetes.client.ApiClient(config) as api_client:
        yield api_client


@pytest.fixture
def custom(client: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(client)


def tunnel(name: str, node: str, tunnel_id: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tunnelID": tunnel_id,
            "peerTunnelID": 4000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 5000 + tunnel_id, "destinationPort": 6000},
        },
    }


def test_crud_status_and_conflicts(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", tunnel("t1", "node-a", 1)
    )
    assert created["metadata"]["generation"] == 1
    got = custom.get_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    assert got == created

    patched = custom.patch_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", "t1", {"spec": {"peerTunnelID": 4001}}
    )
    assert patched["metadata"]["generation"] == 2

    status = {"status": {"observedGeneration": 2}}
    with_status = custom.patch_cluster_custom_object_status(
        GROUP, VERSION, "l2tptunnels", "t1", status
    )
    assert with_status["status"] == {"observedGeneration": 2}
    assert with_status["metadata"]["generation"] == 2

    stale = dict(created)
    with pytest.raises(ApiException) as conflict:
        custom.replace_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1", stale)
    assert conflict.value.status == 409

    fresh = custom.get_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    fresh["spec"]["peerTunnelID"] = 4002
    replaced = custom.replace_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1", fresh)
    assert replaced["status"] == {"observedGeneration": 2}  # the main endpoint kept it

    custom.delete_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    with pytest.raises(ApiException) as gone:
        custom.get_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    assert gone.value.status == 404


def test_validation_errors_carry_causes(custom: kubernetes.client.CustomObjectsApi) -> None:
    with pytest.raises(ApiException) as invalid:
        custom.create_cluster_custom_object(
            GROUP, VERSION, "l2tptunnels", tunnel("t1", "node-a", 0)
        )
    assert invalid.value.status == 422
    body = json.loads(invalid.value.body)
    assert body["reason"] == "Invalid"
    assert [c["field"] for c in body["details"]["causes"]] == ["spec.tunnelID"]


def test_finalizers_through_json_patch(custom: kubernetes.client.CustomObjectsApi) -> None:
    created = custom.create_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", tunnel("t1", "node-a", 1)
    )
    rv = created["metadata"]["resourceVersion"]
    add = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["kubel2tp.io/cleanup"]},
    ]
    custom.patch_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", "t1", add, _content_type="application/json-patch+json"
    )
    custom.delete_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    pending = custom.get_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    assert pending["metadata"]["deletionTimestamp"]
    remove = [{"op": "remove", "path": "/metadata/finalizers"}]
    custom.patch_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", "t1", remove, _content_type="application/json-patch+json"
    )
    with pytest.raises(ApiException) as gone:
        custom.get_cluster_custom_object(GROUP, VERSION, "l2tptunnels", "t1")
    assert gone.value.status == 404


def test_list_and_watch_by_node(
    apiserver: ApiServer, custom: kubernetes.client.CustomObjectsApi
) -> None:
    for index, node in enumerate(["node-a", "node-b", "node-a"]):
        custom.create_cluster_custom_object(
            GROUP, VERSION, "l2tptunnels", tunnel(f"t{index}", node, index + 1)
        )
    listed = custom.list_cluster_custom_object(
        GROUP, VERSION, "l2tptunnels", field_selector="spec.nodeName=node-a"
    )
    assert listed["kind"] == "L2TPTunnelList"
    assert [t["metadata"]["name"] for t in listed["items"]] == ["t0", "t2"]

    custom.create_cluster_custom_object(GROUP, VERSION, "l2tptunnels", tunnel("t3", "node-b", 9))
    custom.create_cluster_custom_object(GROUP, VERSION, "l2tptunnels", tunnel("t4", "node-a", 8))
    watch = kubernetes.watch.Watch()
    seen = []
    for event in watch.stream(
        custom.list_cluster_custom_object,
        GROUP,
        VERSION,
        "l2tptunnels",
        field_selector="spec.nodeName=node-a",
        resource_version=listed["metadata"]["resourceVersion"],
        timeout_seconds=5,
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        watch.stop()
    assert seen == [("ADDED", "t4")]
    (record,) = apiserver.watches("l2tptunnels")
    assert record.sent == (("ADDED", "t4"),)


def test_nodes_and_events(client: kubernetes.client.ApiClient) -> None:
    core = kubernetes.client.CoreV1Api(client)
    core.create_node({"metadata": {"name": "node-a", "labels": {"role": "edge"}}})
    nodes = core.list_node(label_selector="role=edge")
    assert [n.metadata.name for n in nodes.items] == ["node-a"]
    core.delete_node("node-a")
    assert core.list_node().items == []

    event = kubernetes.client.CoreV1Event(
        metadata=kubernetes.client.V1ObjectMeta(generate_name="site-a."),
        involved_object=kubernetes.client.V1ObjectReference(kind="L2TPTunnel", name="site-a"),
        reason="Programmed",
        message="tunnel 3000 is up",
        type="Normal",
    )
    made = core.create_namespaced_event("default", event)
    assert made.metadata.name.startswith("site-a.")
    found = core.list_namespaced_event(
        "default", field_selector="involvedObject.name=site-a,reason=Programmed"
    )
    assert [e.message for e in found.items] == ["tunnel 3000 is up"]

    events = kubernetes.client.EventsV1Api(client)
    modern = kubernetes.client.EventsV1Event(
        metadata=kubernetes.client.V1ObjectMeta(name="e1"),
        event_time="2024-01-01T00:00:00.000000Z",
        regarding=kubernetes.client.V1ObjectReference(kind="L2TPTunnel", name="site-a"),
        reason="Programmed",
        note="ok",
        type="Normal",
        action="Reconcile",
        reporting_controller="kubel2tp.io/agent",
        reporting_instance="agent-node-a",
    )
    events.create_namespaced_event("default", modern)
    assert [e.note for e in events.list_namespaced_event("default").items] == ["ok"]
    events.delete_namespaced_event("e1", "default")
    assert events.list_namespaced_event("default").items == []
