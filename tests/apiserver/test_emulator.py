"""The emulator against the API server's documented behaviour, over real HTTP on loopback.

Each test states one behaviour the controller, the agent or kubectl relies on; if the emulator
drifted from Kubernetes there, tests written against it would pass for the wrong reason.
"""

from __future__ import annotations

import copy
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from .rest import Rest
from .server import ApiServer

REPO = Path(__file__).resolve().parents[2]
GV = "/apis/kubel2tp.io/v1alpha1"
TUNNELS = f"{GV}/l2tptunnels"
SESSIONS = f"{GV}/l2tpsessions"
NODES = "/api/v1/nodes"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


def tunnel(name: str = "site-a", node: str = "node-a", tunnel_id: int = 3000, **spec: Any) -> dict:
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
            "udp": {"sourcePort": 5000, "destinationPort": 6000},
            **spec,
        },
    }


def session(name: str, tunnel_ref: str, node: str | None = None) -> dict:
    spec: dict[str, Any] = {"tunnelRef": tunnel_ref, "sessionID": 1000, "peerSessionID": 2000}
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": spec,
    }


def node(name: str, **spec: Any) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": spec}


@pytest.fixture
def api(apiserver: ApiServer) -> Rest:
    return Rest(apiserver.url)


@pytest.fixture
def site_a(api: Rest) -> dict:
    answer = api.post(TUNNELS, tunnel())
    assert answer.code == 201, answer.body
    return dict(answer.body)


# --- discovery ---


def test_discovery_serves_builtins_and_our_crds(api: Rest) -> None:
    core = {r["name"] for r in api.get("/api/v1").body["resources"]}
    assert {"namespaces", "nodes", "events", "nodes/status"} <= core
    groups = {g["name"] for g in api.get("/apis").body["groups"]}
    assert {"kubel2tp.io", "events.k8s.io", "apiextensions.k8s.io"} <= groups
    ours = {r["name"]: r for r in api.get(GV).body["resources"]}
    assert ours["l2tptunnels"]["kind"] == "L2TPTunnel"
    assert ours["l2tptunnels"]["namespaced"] is False
    assert ours["l2tptunnels"]["categories"] == ["l2tp"]
    assert set(ours["l2tptunnels"]["shortNames"]) == {"l2tpt", "l2tptunnel"}
    assert ours["l2tpsessions/status"]["categories"] == []  # else `get l2tp` lists it too
    assert sorted(ours["l2tpsessions/status"]["verbs"]) == ["get", "patch", "update"]
    assert api.get("/version").body["minor"] == "33"


def test_openapi_v3_describes_crds_for_kubectl(api: Rest) -> None:
    index = api.get("/openapi/v3").body["paths"]
    assert {"api/v1", "apis/kubel2tp.io/v1alpha1"} <= set(index)
    doc = api.get(index["apis/kubel2tp.io/v1alpha1"]["serverRelativeURL"]).body
    schema = doc["components"]["schemas"]["io.kubel2tp.v1alpha1.L2TPTunnel"]
    gvk = {"group": "kubel2tp.io", "version": "v1alpha1", "kind": "L2TPTunnel"}
    assert schema["x-kubernetes-group-version-kind"] == [gvk]
    assert (
        "udp_sport"
        in schema["properties"]["spec"]["properties"]["udp"]["properties"]["sourcePort"][
            "description"
        ]
    )
    patch = doc["paths"]["/apis/kubel2tp.io/v1alpha1/l2tptunnels/{name}"]["patch"]
    assert "fieldValidation" in [p["name"] for p in patch["parameters"]]
    assert api.get("/openapi/v3/apis/nothing/v1").code == 404
    assert api.get("/openapi/v2").code == 404


def test_default_namespaces_exist(api: Rest) -> None:
    answer = api.get("/api/v1/namespaces")
    assert answer.body["kind"] == "NamespaceList"
    names = {n["metadata"]["name"] for n in answer.body["items"]}
    assert {"default", "kube-system"} <= names
    assert api.get("/api/v1/namespaces/default").body["status"]["phase"] == "Active"


def test_posted_crd_becomes_discoverable_and_served(empty_apiserver: ApiServer) -> None:
    api = Rest(empty_apiserver.url)
    assert api.get(GV).code == 404
    assert api.get(TUNNELS).code == 404
    crd = yaml.safe_load((REPO / "crds" / "l2tptunnels.yaml").read_text())
    created = api.post(CRDS, crd)
    assert created.code == 201, created.body
    conditions = {c["type"]: c["status"] for c in created.body["status"]["conditions"]}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
    assert {r["name"] for r in api.get(GV).body["resources"]} == {
        "l2tptunnels",
        "l2tptunnels/status",
    }
    assert api.post(TUNNELS, tunnel()).code == 201
    assert api.get(TUNNELS).body["kind"] == "L2TPTunnelList"


def test_deleting_a_crd_removes_its_objects_and_ends_its_watches(
    apiserver: ApiServer, api: Rest, site_a: dict
) -> None:
    with api.watch(TUNNELS) as watch:
        assert watch.next()["type"] == "ADDED"
        assert api.delete(f"{CRDS}/l2tptunnels.kubel2tp.io").code == 200
        assert watch.next()["type"] == "DELETED"
        assert watch.next() is None
    assert api.get(TUNNELS).code == 404
    assert apiserver.objects("l2tptunnels") == []
    assert "l2tpsessions" in {r["name"] for r in api.get(GV).body["resources"]}


# --- metadata, versions, generation ---


def test_create_sets_server_metadata(api: Rest, site_a: dict) -> None:
    meta = site_a["metadata"]
    assert len(meta["uid"]) == 36
    assert meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0
    assert api.get(f"{TUNNELS}/site-a").body == site_a
    assert api.post(TUNNELS, tunnel()).code == 409
    assert api.post(TUNNELS, tunnel()).body["reason"] == "AlreadyExists"


def test_resource_version_is_global_and_bumped_by_every_write(api: Rest, site_a: dict) -> None:
    rv_tunnel = int(site_a["metadata"]["resourceVersion"])
    created = api.post(NODES, node("node-a")).body
    assert int(created["metadata"]["resourceVersion"]) == rv_tunnel + 1
    labelled = api.merge(f"{TUNNELS}/site-a", {"metadata": {"labels": {"a": "b"}}}).body
    assert int(labelled["metadata"]["resourceVersion"]) == rv_tunnel + 2
    listed = api.get(TUNNELS).body
    assert listed["metadata"]["resourceVersion"] == str(rv_tunnel + 2)


def test_generation_follows_spec_only(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    assert api.merge(path, {"metadata": {"labels": {"x": "y"}}}).body["metadata"]["generation"] == 1
    status = {"status": {"observedGeneration": 1}}
    assert api.merge(f"{path}/status", status).body["metadata"]["generation"] == 1
    changed = api.merge(path, {"spec": {"peerTunnelID": 4001}}).body
    assert changed["metadata"]["generation"] == 2


def test_a_write_that_changes_nothing_changes_no_version(api: Rest, site_a: dict) -> None:
    with api.watch(TUNNELS, resourceVersion=site_a["metadata"]["resourceVersion"]) as watch:
        same = api.merge(f"{TUNNELS}/site-a", {"spec": {"tunnelID": 3000}}).body
        assert same["metadata"]["resourceVersion"] == site_a["metadata"]["resourceVersion"]
        assert watch.quiet()


# --- update semantics ---


def test_put_replaces_and_checks_the_resource_version(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    api.merge(path, {"metadata": {"labels": {"keep": "no"}}})
    fresh = api.get(path).body
    replaced = copy.deepcopy(fresh)
    del replaced["metadata"]["labels"]
    replaced["spec"]["peerTunnelID"] = 4001
    answer = api.put(path, replaced)
    assert answer.code == 200
    assert "labels" not in answer.body["metadata"]  # replaced, not merged
    stale = api.put(path, fresh)
    assert stale.code == 409
    assert stale.body["reason"] == "Conflict"
    del fresh["metadata"]["resourceVersion"]
    unconditional = api.put(path, fresh)
    assert unconditional.code == 422  # custom resources need a resourceVersion on update
    assert unconditional.causes[0]["field"] == "metadata.resourceVersion"


def test_merge_patch_with_a_stale_resource_version_conflicts(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    api.merge(path, {"metadata": {"labels": {"a": "1"}}})
    stale = {"metadata": {"resourceVersion": site_a["metadata"]["resourceVersion"]}}
    assert api.merge(path, stale).code == 409


def test_json_patch_applies_and_a_failed_test_is_422(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    rv = site_a["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["kubel2tp.io/cleanup"]},
    ]
    added = api.json_patch(path, ops)
    assert added.code == 200
    assert added.body["metadata"]["finalizers"] == ["kubel2tp.io/cleanup"]
    again = api.json_patch(path, ops)  # rv moved on: the test op fails
    assert again.code == 422
    assert api.json_patch(path, [{"op": "bogus"}]).code == 400


def test_strategic_merge_patch_is_refused_for_custom_resources(api: Rest, site_a: dict) -> None:
    answer = api.request(
        "PATCH",
        f"{TUNNELS}/site-a",
        {"metadata": {"labels": {"a": "b"}}},
        content_type="application/strategic-merge-patch+json",
    )
    assert answer.code == 415


def test_put_name_must_match_the_url(api: Rest, site_a: dict) -> None:
    body = copy.deepcopy(site_a)
    body["metadata"]["name"] = "other"
    assert api.put(f"{TUNNELS}/site-a", body).code == 400


def test_missing_objects_are_404_with_the_kubernetes_message(api: Rest) -> None:
    answer = api.get(f"{TUNNELS}/nope")
    assert answer.code == 404
    assert answer.body["reason"] == "NotFound"
    assert answer.body["message"] == 'l2tptunnels.kubel2tp.io "nope" not found'
    assert api.merge(f"{TUNNELS}/nope", {}).code == 404
    assert api.delete(f"{TUNNELS}/nope").code == 404
    assert api.get("/apis/kubel2tp.io/v1alpha1/nothings").code == 404


# --- the status subresource ---


def test_main_endpoint_ignores_status(api: Rest) -> None:
    body = tunnel()
    body["status"] = {"observedGeneration": 7}
    created = api.post(TUNNELS, body).body
    assert "status" not in created
    path = f"{TUNNELS}/site-a"
    api.merge(f"{path}/status", {"status": {"observedGeneration": 1}})
    merged = api.merge(path, {"status": {"observedGeneration": 9}, "metadata": {"labels": {}}})
    assert merged.body["status"] == {"observedGeneration": 1}
    current = api.get(path).body
    current["status"] = {"observedGeneration": 5}
    assert api.put(path, current).body["status"] == {"observedGeneration": 1}


def test_status_endpoint_changes_status_only(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a/status"
    patched = api.merge(
        path,
        {
            "spec": {"tunnelID": 1},
            "metadata": {"labels": {"x": "y"}},
            "status": {"observedGeneration": 1},
        },
    ).body
    assert patched["spec"]["tunnelID"] == 3000
    assert "labels" not in patched["metadata"]
    assert patched["status"] == {"observedGeneration": 1}
    whole = api.get(path).body
    assert whole["status"] == {"observedGeneration": 1}
    whole["status"] = {"observedGeneration": 2}
    whole["spec"]["tunnelID"] = 2
    replaced = api.put(path, whole).body
    assert replaced["status"] == {"observedGeneration": 2}
    assert replaced["spec"]["tunnelID"] == 3000
    ops = [{"op": "replace", "path": "/status/observedGeneration", "value": 3}]
    assert api.json_patch(path, ops).body["status"] == {"observedGeneration": 3}


def test_status_is_validated_too(api: Rest, site_a: dict) -> None:
    answer = api.merge(f"{TUNNELS}/site-a/status", {"status": {"observedGeneration": -1}})
    assert answer.code == 422
    assert answer.causes[0]["field"] == "status.observedGeneration"


# --- validation, pruning, defaulting ---


def test_invalid_object_is_a_422_status_naming_the_field(api: Rest) -> None:
    answer = api.post(TUNNELS, tunnel(tunnel_id=0))
    assert answer.code == 422
    body = answer.body
    assert (body["kind"], body["status"], body["reason"]) == ("Status", "Failure", "Invalid")
    assert body["details"]["name"] == "site-a"
    assert body["details"]["kind"] == "L2TPTunnel"
    assert [c["field"] for c in answer.causes] == ["spec.tunnelID"]
    assert answer.causes[0]["message"].startswith("Invalid value: 0: ")
    assert body["message"].startswith('L2TPTunnel.kubel2tp.io "site-a" is invalid: spec.tunnelID')
    assert api.get(f"{TUNNELS}/site-a").code == 404


def test_cel_rules_run(api: Rest) -> None:
    ip_over_udp = tunnel(encapsulation="ip")  # udp settings are forbidden with ip
    answer = api.post(TUNNELS, ip_over_udp)
    assert answer.code == 422
    assert any(c["field"].startswith("spec") for c in answer.causes)


def test_transition_rules_see_the_old_object(api: Rest, site_a: dict) -> None:
    answer = api.merge(f"{TUNNELS}/site-a", {"spec": {"nodeName": "node-b"}})
    assert answer.code == 422
    assert [c["field"] for c in answer.causes] == ["spec.nodeName"]
    assert api.get(f"{TUNNELS}/site-a").body["spec"]["nodeName"] == "node-a"


def test_defaults_are_stored(api: Rest, site_a: dict) -> None:
    assert site_a["spec"]["encapsulation"] == "udp"
    assert site_a["spec"]["udp"]["checksum"] is False


def test_unknown_fields_are_pruned_with_a_warning_or_refused_when_strict(api: Rest) -> None:
    body = tunnel()
    body["spec"]["bogus"] = 1
    strict = api.request("POST", f"{TUNNELS}?fieldValidation=Strict", body)
    assert strict.code == 400
    assert 'unknown field "spec.bogus"' in strict.body["message"]
    warned = api.post(TUNNELS, body)
    assert warned.code == 201
    assert "bogus" not in warned.body["spec"]
    assert 'unknown field \\"spec.bogus\\"' in warned.headers["Warning"] or (
        'unknown field "spec.bogus"' in warned.headers["Warning"]
    )
    assert "Warning" not in api.get(f"{TUNNELS}/site-a").headers  # no leak to later answers


def test_dry_run_validates_without_storing(api: Rest) -> None:
    ok = api.request("POST", f"{TUNNELS}?dryRun=All", tunnel())
    assert ok.code == 201
    assert ok.body["spec"]["encapsulation"] == "udp"
    assert api.get(f"{TUNNELS}/site-a").code == 404
    bad = api.request("POST", f"{TUNNELS}?dryRun=All", tunnel(tunnel_id=0))
    assert bad.code == 422


def test_names_are_required_and_checked(api: Rest) -> None:
    nameless = tunnel()
    del nameless["metadata"]["name"]
    assert api.post(TUNNELS, nameless).causes[0]["field"] == "metadata.name"
    assert api.post(TUNNELS, tunnel(name="Not_A_Name")).code == 422


def test_kind_must_match_the_resource(api: Rest) -> None:
    body = tunnel()
    body["kind"] = "L2TPSession"
    assert api.post(TUNNELS, body).code == 400


# --- finalizers and deletion ---


def test_deletion_waits_for_finalizers(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    api.merge(path, {"metadata": {"finalizers": ["kubel2tp.io/cleanup"]}})
    with api.watch(TUNNELS, fieldSelector="metadata.name=site-a") as watch:
        assert watch.next()["type"] == "ADDED"
        deleting = api.delete(path)
        assert deleting.code == 200
        assert deleting.body["metadata"]["deletionTimestamp"]
        assert watch.next()["type"] == "MODIFIED"
        assert api.get(path).body["metadata"]["deletionTimestamp"]
        more = {"metadata": {"finalizers": ["kubel2tp.io/cleanup", "other/x"]}}
        assert api.merge(path, more).code == 422  # no new finalizers while deleting
        released = api.merge(path, {"metadata": {"finalizers": None}})
        assert released.code == 200
        gone = watch.next()
        assert gone["type"] == "DELETED"
        assert (
            gone["object"]["metadata"]["resourceVersion"]
            == (released.body["metadata"]["resourceVersion"])
        )
    assert api.get(path).code == 404
    assert api.post(TUNNELS, tunnel()).code == 201  # the name is free again


def test_delete_preconditions_and_dry_run(api: Rest, site_a: dict) -> None:
    path = f"{TUNNELS}/site-a"
    assert api.delete(path, {"preconditions": {"uid": "wrong"}}).code == 409
    assert api.request("DELETE", f"{path}?dryRun=All").code == 200
    assert api.get(path).code == 200
    assert api.delete(path, {"preconditions": {"uid": site_a["metadata"]["uid"]}}).code == 200
    assert api.get(path).code == 404


def test_delete_collection_by_label(api: Rest) -> None:
    for name, team in (("a", "x"), ("b", "x"), ("c", "y")):
        body = tunnel(name=name, tunnel_id=ord(name))
        body["metadata"]["labels"] = {"team": team}
        api.post(TUNNELS, body)
    assert api.request("DELETE", f"{TUNNELS}?labelSelector=team%3Dx").code == 200
    assert [t["metadata"]["name"] for t in api.get(TUNNELS).body["items"]] == ["c"]


# --- lists, selectors, tables ---


def test_field_selectors_on_selectable_fields(api: Rest) -> None:
    api.post(TUNNELS, tunnel("t-a", "node-a", 1))
    api.post(TUNNELS, tunnel("t-b", "node-b", 2))
    api.post(SESSIONS, session("s-a", "t-a", "node-a"))
    api.post(SESSIONS, session("s-b", "t-b", "node-b"))

    def names(path: str) -> list[str]:
        answer = api.get(path)
        assert answer.code == 200, answer.body
        return [o["metadata"]["name"] for o in answer.body["items"]]

    assert names(f"{TUNNELS}?fieldSelector=spec.nodeName%3Dnode-a") == ["t-a"]
    assert names(f"{TUNNELS}?fieldSelector=spec.nodeName!%3Dnode-a") == ["t-b"]
    assert names(f"{SESSIONS}?fieldSelector=spec.nodeName%3Dnode-b") == ["s-b"]
    assert names(f"{SESSIONS}?fieldSelector=spec.tunnelRef%3Dt-a") == ["s-a"]
    assert names(f"{TUNNELS}?fieldSelector=metadata.name%3Dt-b") == ["t-b"]
    unsupported = api.get(f"{TUNNELS}?fieldSelector=spec.tunnelID%3D1")
    assert unsupported.code == 400
    assert "field label not supported" in unsupported.body["message"]


def test_label_selectors(api: Rest) -> None:
    for name, labels in (("a", {"env": "prod", "tier": "1"}), ("b", {"env": "dev"}), ("c", {})):
        body = tunnel(name=name, tunnel_id=ord(name))
        body["metadata"]["labels"] = labels
        api.post(TUNNELS, body)

    def names(selector: str) -> list[str]:
        answer = api.get(f"{TUNNELS}?labelSelector={selector}")
        assert answer.code == 200, answer.body
        return [o["metadata"]["name"] for o in answer.body["items"]]

    assert names("env%3Dprod") == ["a"]
    assert names("env!%3Dprod") == ["b", "c"]
    assert names("env%20in%20(prod,dev)") == ["a", "b"]
    assert names("env%20notin%20(prod)") == ["b", "c"]
    assert names("tier") == ["a"]
    assert names("!tier") == ["b", "c"]
    assert names("env%3Dprod,tier%3D1") == ["a"]
    assert api.get(f"{TUNNELS}?labelSelector=%3D%3D%3D").code == 400


def test_table_for_kubectl_uses_the_printer_columns(api: Rest, site_a: dict) -> None:
    condition = {
        "type": "Ready",
        "status": "True",
        "reason": "Programmed",
        "message": "ok",
        "lastTransitionTime": "2024-01-01T00:00:00Z",
    }
    api.merge(f"{TUNNELS}/site-a/status", {"status": {"conditions": [condition]}})
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    table = api.get(TUNNELS, headers={"Accept": accept}).body
    assert table["kind"] == "Table"
    columns = [c["name"] for c in table["columnDefinitions"]]
    assert columns[:4] == ["Name", "Node", "ID", "Peer ID"]
    row = dict(zip(columns, table["rows"][0]["cells"], strict=True))
    assert row["Name"] == "site-a"
    assert row["Node"] == "node-a"
    assert row["Ready"] == "True"
    assert row["Age"].endswith("s")


# --- watches ---


def test_watch_without_version_starts_with_the_current_objects(api: Rest, site_a: dict) -> None:
    with api.watch(TUNNELS) as watch:
        first = watch.next()
        assert first == {"type": "ADDED", "object": site_a}
        api.post(TUNNELS, tunnel("site-b", tunnel_id=2))
        assert watch.next()["object"]["metadata"]["name"] == "site-b"
        api.merge(f"{TUNNELS}/site-a/status", {"status": {"observedGeneration": 1}})
        assert watch.next()["type"] == "MODIFIED"
        api.delete(f"{TUNNELS}/site-b")
        assert [watch.next()["type"]] == ["DELETED"]


def test_watch_from_a_version_sends_only_later_events(api: Rest, site_a: dict) -> None:
    listed = api.get(TUNNELS).body
    rv = listed["metadata"]["resourceVersion"]
    api.post(TUNNELS, tunnel("site-b", tunnel_id=2))  # written before the watch starts
    api.post(NODES, node("node-a"))  # another resource: not replayed here
    with api.watch(TUNNELS, resourceVersion=rv) as watch:
        event = watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "site-b")
        assert watch.quiet()  # no re-ADDED site-a


def test_watch_from_a_version_the_log_no_longer_holds_is_410(tmp_path: Path) -> None:
    with ApiServer(history_limit=3) as server:
        api = Rest(server.url)
        for index in range(5):
            api.post(NODES, node(f"n{index}"))
        with api.watch(NODES, resourceVersion="1") as watch:
            error = watch.next()
            assert error["type"] == "ERROR"
            assert error["object"]["code"] == 410
            assert watch.next() is None


def test_no_write_is_lost_between_list_and_watch(api: Rest) -> None:
    """The informer pattern: list, then watch from the list's version; every write in between
    and after arrives exactly once, in order of resourceVersion."""
    api.post(NODES, node("before"))
    rv = api.get(NODES).body["metadata"]["resourceVersion"]
    for index in range(20):
        api.post(NODES, node(f"n{index}"))
    with api.watch(NODES, resourceVersion=rv) as watch:
        for index in range(20, 40):
            api.post(NODES, node(f"n{index}"))
        events = watch.take(40)
    assert [e["object"]["metadata"]["name"] for e in events] == [f"n{i}" for i in range(40)]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions)


def test_watch_field_selector_sends_deleted_when_an_object_leaves_it(api: Rest) -> None:
    api.post(NODES, node("n1", unschedulable=False))
    selector = "spec.unschedulable=true"
    with api.watch(NODES, fieldSelector=selector) as cordoned, api.watch(NODES) as everything:
        assert everything.next()["type"] == "ADDED"
        api.merge(f"{NODES}/n1", {"spec": {"unschedulable": True}})
        assert cordoned.next()["type"] == "ADDED"  # entered the selection
        assert everything.next()["type"] == "MODIFIED"
        api.merge(f"{NODES}/n1", {"spec": {"unschedulable": False}})
        left = cordoned.next()
        assert left["type"] == "DELETED"  # left it: to this watch, the object is gone
        assert left["object"]["spec"]["unschedulable"] is True  # its last state in the selection
        assert everything.next()["type"] == "MODIFIED"
        api.merge(f"{NODES}/n1", {"metadata": {"labels": {"a": "b"}}})
        assert cordoned.quiet()


def test_watch_label_selector_transitions(api: Rest, site_a: dict) -> None:
    with api.watch(TUNNELS, labelSelector="owner=me") as watch:
        api.merge(f"{TUNNELS}/site-a", {"metadata": {"labels": {"owner": "me"}}})
        assert watch.next()["type"] == "ADDED"
        api.merge(f"{TUNNELS}/site-a", {"metadata": {"labels": {"owner": "you"}}})
        assert watch.next()["type"] == "DELETED"


def test_a_node_agents_watch_receives_only_its_nodes_objects(
    apiserver: ApiServer, api: Rest
) -> None:
    """What the per-node agent relies on, and how a test measures it: events per watch."""
    with api.watch(TUNNELS, fieldSelector="spec.nodeName=node-a") as watch_a:
        for index, node_name in enumerate(["node-a", "node-b", "node-b", "node-a"]):
            api.post(TUNNELS, tunnel(f"t{index}", node_name, index + 1))
        assert [e["object"]["metadata"]["name"] for e in watch_a.take(2)] == ["t0", "t3"]
        assert watch_a.quiet()
    (record,) = [w for w in apiserver.watches("l2tptunnels") if w.field_selector]
    assert record.field_selector == "spec.nodeName=node-a"
    assert record.sent == (("ADDED", "t0"), ("ADDED", "t3"))
    assert record.names == {"t0", "t3"}


def test_watch_of_one_object_by_name(api: Rest, site_a: dict) -> None:
    api.post(TUNNELS, tunnel("site-b", tunnel_id=2))
    with api.watch(f"{TUNNELS}/site-b") as watch:
        assert watch.next()["object"]["metadata"]["name"] == "site-b"
        api.merge(f"{TUNNELS}/site-a", {"metadata": {"labels": {"a": "b"}}})
        assert watch.quiet()


def test_watch_timeout_and_bookmarks(tmp_path: Path) -> None:
    with ApiServer(bookmark_interval=0.1) as server:
        api = Rest(server.url)
        started = time.monotonic()
        with api.watch(NODES, timeoutSeconds="1", allowWatchBookmarks="true") as watch:
            bookmark = watch.next()
            assert bookmark["type"] == "BOOKMARK"
            assert bookmark["object"]["metadata"]["resourceVersion"]
            while (event := watch.next()) is not None:
                assert event["type"] == "BOOKMARK"
        assert 0.9 < time.monotonic() - started < 3


def test_watch_list_sends_initial_events_then_a_marker(api: Rest, site_a: dict) -> None:
    params = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
    with api.watch(TUNNELS, allowWatchBookmarks="true", **params) as watch:
        added, marker = watch.take(2)
        assert added["type"] == "ADDED"
        assert marker["type"] == "BOOKMARK"
        assert marker["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# --- events, nodes, namespaces ---


def test_core_and_events_k8s_io_events(api: Rest) -> None:
    core = {
        "metadata": {"generateName": "site-a."},
        "involvedObject": {"kind": "L2TPTunnel", "name": "site-a"},
        "reason": "Programmed",
        "message": "ok",
        "type": "Normal",
    }
    created = api.post("/api/v1/namespaces/default/events", core)
    assert created.code == 201
    name = created.body["metadata"]["name"]
    assert name.startswith("site-a.") and len(name) == len("site-a.") + 5
    assert created.body["metadata"]["namespace"] == "default"
    selector = "involvedObject.name%3Dsite-a"
    listed = api.get(f"/api/v1/namespaces/default/events?fieldSelector={selector}").body
    assert [e["metadata"]["name"] for e in listed["items"]] == [name]
    assert api.get("/api/v1/events").body["kind"] == "EventList"  # all namespaces
    assert api.delete(f"/api/v1/namespaces/default/events/{name}").code == 200

    modern = {
        "metadata": {"name": "e1"},
        "regarding": {"kind": "L2TPTunnel", "name": "site-a"},
        "reason": "Programmed",
        "note": "ok",
        "type": "Normal",
        "action": "Reconcile",
        "reportingController": "kubel2tp.io/agent",
        "reportingInstance": "agent-node-a",
        "eventTime": "2024-01-01T00:00:00.000000Z",
    }
    path = "/apis/events.k8s.io/v1/namespaces/default/events"
    assert api.post(path, modern).code == 201
    assert api.get(f"{path}?fieldSelector=regarding.name%3Dsite-a").body["items"][0]["note"] == "ok"
    assert api.delete(f"{path}/e1").code == 200


def test_namespaced_objects_need_their_namespace(api: Rest) -> None:
    answer = api.post("/api/v1/namespaces/nowhere/events", {"metadata": {"name": "x"}})
    assert answer.code == 404
    assert answer.body["message"] == 'namespaces "nowhere" not found'
    assert api.post(f"/api/v1/namespaces/default{NODES[7:]}", node("x")).code == 404


def test_node_deletion_is_observed_by_a_watch(api: Rest) -> None:
    assert api.post(NODES, node("node-a")).code == 201
    with api.watch(NODES) as watch:
        assert watch.next()["type"] == "ADDED"
        assert api.delete(f"{NODES}/node-a").code == 200
        event = watch.next()
        assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "node-a")


def test_node_status_subresource(api: Rest) -> None:
    body = node("node-a")
    body["status"] = {"addresses": [{"type": "InternalIP", "address": "192.0.2.1"}]}
    created = api.post(NODES, body).body
    assert created["status"]["addresses"][0]["address"] == "192.0.2.1"  # nodes keep it on create
    assert "generation" not in created["metadata"]
    patched = api.merge(f"{NODES}/node-a/status", {"status": {"phase": "Running"}}).body
    assert patched["status"]["phase"] == "Running"


# --- outages and faults ---


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_outage_closes_watches_refuses_connections_and_keeps_state(
    apiserver: ApiServer, api: Rest, site_a: dict
) -> None:
    port = apiserver.port
    with api.watch(TUNNELS) as watch:
        assert watch.next()["type"] == "ADDED"
        apiserver.stop()
        assert watch.next() is None  # the stream ends
    assert _refused(port)
    apiserver.submit("POST", TUNNELS, tunnel("site-b", tunnel_id=2))  # written during the outage
    apiserver.start()
    assert apiserver.port == port
    rv = site_a["metadata"]["resourceVersion"]
    with api.watch(TUNNELS, resourceVersion=rv) as watch:
        assert watch.next()["object"]["metadata"]["name"] == "site-b"  # resumed, nothing lost
    with apiserver.outage():
        assert _refused(port)
    assert api.get(f"{TUNNELS}/site-a").code == 200
    assert [w.open for w in apiserver.watches()] == [False, False]


def test_kmock_reactions_still_take_precedence(apiserver: ApiServer, api: Rest) -> None:
    """Fault injection the kmock way: a reaction answers instead of the emulator."""

    def inject() -> None:
        apiserver.emulator["get", NODES] << 503

    apiserver.call(inject)
    assert api.get(NODES).code == 503
    assert api.get(TUNNELS).code == 200
    assert api.post(NODES, node("n1")).code == 201  # a write is not intercepted
