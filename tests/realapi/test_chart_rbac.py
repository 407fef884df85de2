"""The chart on the real API server: every values scenario accepted; its RBAC and its node
isolation policy enforced for real, with TokenRequest tokens of the chart's own ServiceAccounts.

Every request below carries a token the API server issued (TokenRequest), as a kubelet would
project it into the agent's Pod: never an admin identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .chart import AGENT_SA, NAMESPACE, OPERATOR_SA, SCENARIOS, install, pod_on
from .fixtures import Kubectl
from .server import RealApiServer

GV = "/apis/kubel2tp.io/v1alpha1"
MERGE = "application/merge-patch+json"
VALUES = sorted(SCENARIOS.glob("*.yaml"))


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


@pytest.mark.parametrize("values", [None, *VALUES], ids=["default", *(p.stem for p in VALUES)])
def test_every_values_scenario_is_accepted(
    api: RealApiServer, kubectl: Kubectl, values: Path | None
) -> None:
    """helm template | kubectl apply --server-side: every object accepted (install counts them),
    each scenario a release of its own in a namespace of its own."""
    name = "default" if values is None else values.stem.removesuffix("-values")
    docs = install(api, kubectl, release=f"scn-{name}", ns=f"scenario-{name}", values=values)
    kinds = {d["kind"] for d in docs}
    assert {"DaemonSet", "Deployment", "ClusterRole", "ValidatingAdmissionPolicy"} <= kinds
    for doc in docs:  # each stored as rendered (namespaced ones in the release's namespace)
        ns = doc["metadata"].get("namespace")
        path = api.path_for(doc["apiVersion"], doc["kind"], ns) + f"/{doc['metadata']['name']}"
        code, stored = api.submit("GET", path)
        assert code == 200, (doc["kind"], doc["metadata"]["name"], stored)


@pytest.fixture
def tokens(api: RealApiServer, kubectl: Kubectl) -> dict[str, str]:
    """The chart installed as the README does; tokens of its ServiceAccounts: the agent's bound
    to Pods on node-a and node-b, the agent's bound to nothing, the operator's."""
    install(api, kubectl)
    pod_a = pod_on(api, "agent-node-a", "node-a", AGENT_SA)
    pod_b = pod_on(api, "agent-node-b", "node-b", AGENT_SA)
    return {
        "node-a": api.token(NAMESPACE, AGENT_SA, pod=pod_a),
        "node-b": api.token(NAMESPACE, AGENT_SA, pod=pod_b),
        "unbound": api.token(NAMESPACE, AGENT_SA),
        "operator": api.token(NAMESPACE, OPERATOR_SA),
    }


def who(api: RealApiServer, token: str) -> dict[str, Any]:
    code, review = api.submit(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        token=token,
    )
    assert code == 201, review
    user: dict[str, Any] = review["status"]["userInfo"]
    return user


def test_the_node_claim_is_in_a_pod_bound_token(api: RealApiServer, tokens: dict[str, str]) -> None:
    user = who(api, tokens["node-a"])
    assert user["username"] == f"system:serviceaccount:{NAMESPACE}:{AGENT_SA}"
    assert user["extra"]["authentication.kubernetes.io/node-name"] == ["node-a"]
    assert "authentication.kubernetes.io/node-name" not in who(api, tokens["unbound"]).get(
        "extra", {}
    )


def test_the_agents_token_cannot_do_what_it_does_not_need(
    api: RealApiServer, tokens: dict[str, str]
) -> None:
    api.create(tunnel("rbac-a", "node-a", 3000))
    token = tokens["node-a"]
    forbidden = [
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets", None),
        ("GET", "/api/v1/secrets", None),
        ("POST", f"{GV}/l2tptunnels", tunnel("rbac-new", "node-a", 3001)),
        ("DELETE", f"{GV}/l2tptunnels/rbac-a", None),
        ("DELETE", f"{GV}/l2tptunnels", None),  # deletecollection
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/pods", None),
        ("GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps", None),
        ("GET", "/api/v1/nodes", None),
        ("GET", "/apis/apps/v1/daemonsets", None),
        ("POST", "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations", {}),
        ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", None),
    ]
    for method, path, body in forbidden:
        code, answer = api.submit(method, path, body, token=token)
        assert code == 403, (method, path, code, answer)
        assert "forbidden" in str(answer.get("reason", "")).lower(), answer
    # and what it needs, it can: read its node's objects, selected server-side
    code, listed = api.submit(
        "GET", f"{GV}/l2tptunnels", params={"fieldSelector": "spec.nodeName=node-a"}, token=token
    )
    assert code == 200 and [o["metadata"]["name"] for o in listed["items"]] == ["rbac-a"]


def test_an_agent_changes_only_its_own_nodes_objects(
    api: RealApiServer, tokens: dict[str, str]
) -> None:
    """The chart's ValidatingAdmissionPolicy: node-a's token is refused on node-b's objects
    (status, finalizers, spec), allowed on its own; a token bound to no Pod changes nothing."""
    api.create(tunnel("iso-a", "node-a", 3000))
    api.create(tunnel("iso-b", "node-b", 3001))
    status = {"status": {"observedGeneration": 1}}
    finalizer = {"metadata": {"finalizers": ["l2tp.kubel2tp.io/node-a"]}}

    def patch(name: str, body: dict[str, Any], token: str, sub: str = "") -> tuple[int, Any]:
        path = f"{GV}/l2tptunnels/{name}{sub}"
        return api.submit("PATCH", path, body, content_type=MERGE, token=token)

    for body, sub in ((status, "/status"), (finalizer, ""), ({"spec": {"peerTunnelID": 7}}, "")):
        code, answer = patch("iso-b", body, tokens["node-a"], sub)
        assert code == 403, (sub, answer.get("message"))
        message = answer["message"]
        assert "ValidatingAdmissionPolicy" in message and "node-isolation" in message
        assert "the agent of node node-a may change only its own node's objects" in message
        assert "belongs to node node-b" in message
        code, answer = patch("iso-b", body, tokens["unbound"], sub)
        assert code == 403 and "names no node" in answer["message"], answer
    code, answer = patch("iso-a", status, tokens["node-a"], "/status")
    assert code == 200, answer
    code, answer = patch("iso-a", finalizer, tokens["node-a"])
    assert code == 200, answer
    code, answer = patch(
        "iso-b", {"metadata": {"finalizers": ["l2tp.kubel2tp.io/node-b"]}}, tokens["node-b"]
    )
    assert code == 200, answer
    # moving an object to its own node is refused too (and nodeName is immutable anyway)
    code, answer = patch("iso-b", {"spec": {"nodeName": "node-a"}}, tokens["node-a"])
    assert code in (403, 422), answer
    assert api.get(f"{GV}/l2tptunnels/iso-b")["spec"]["nodeName"] == "node-b"
