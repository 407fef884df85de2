"""The whole flow on the real API server, every component with its own ServiceAccount's token:
the operator (kopf, in this event loop) serving its admission webhooks over HTTPS, which the API
server calls with the CA the operator wrote into the configuration; agents of node-a and node-b
(each on its own in-memory kernel) with tokens bound to Pods on their nodes; a user applying
manifests with kubectl.

The webhooks' failurePolicy is Ignore (controller/handlers.py): while the operator is down,
writes are judged by the API server alone (schema and CEL rules), cross-object conflicts are
refused by the agents instead (first come, first served), and a session's spec.nodeName is filled
in by the operator once it is back. The last test shows each of those.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_l2tp.agent.cluster import cluster_agent
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.controller import app
from kube_l2tp.k8s.finalizers import node_finalizer

from .chart import AGENT_SA, NAMESPACE, OPERATOR_SA, install, pod_on
from .fixtures import Kubectl, operator_thread
from .server import RealApiServer, free_port

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))  # fakekernel
from fakekernel import FakeKernel

GV = "/apis/kubel2tp.io/v1alpha1"


def tunnel(name: str, node: str | None = "node-a", tunnel_id: int = 3000) -> dict[str, Any]:
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


def session(name: str, tunnel_ref: str, session_id: int = 1000) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {"tunnelRef": tunnel_ref, "sessionID": session_id, "peerSessionID": 2000},
    }


def get(api: RealApiServer, plural: str, name: str) -> dict[str, Any] | None:
    code, body = api.submit("GET", f"{GV}/{plural}/{name}")
    return body if code == 200 else None


def ready(obj: dict[str, Any] | None) -> str:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c["status"] + "/" + c["reason"] for c in conds if c["type"] == "Ready"), "")


def eventually(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        time.sleep(0.1)


def apply(kubectl: Kubectl, *objects: dict[str, Any], ok: bool = True) -> Any:
    return kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects), ok=ok)


@pytest.fixture
def identities(api: RealApiServer, kubectl: Kubectl, tmp_path: Path) -> dict[str, Path]:
    """Kubeconfigs with the chart's ServiceAccounts' tokens (the agent's bound to its Pod)."""
    install(api, kubectl)
    pod = pod_on(api, "agent-node-a", "node-a", AGENT_SA)
    pod_b = pod_on(api, "agent-node-b", "node-b", AGENT_SA)
    return {
        "agent": api.write_kubeconfig(
            tmp_path / "agent.kubeconfig", token=api.token(NAMESPACE, AGENT_SA, pod=pod)
        ),
        "agent-b": api.write_kubeconfig(
            tmp_path / "agent-b.kubeconfig", token=api.token(NAMESPACE, AGENT_SA, pod=pod_b)
        ),
        "operator": api.write_kubeconfig(
            tmp_path / "operator.kubeconfig", token=api.token(NAMESPACE, OPERATOR_SA)
        ),
    }


@contextlib.contextmanager
def running_agent(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, node: str = "node-a"
) -> Iterator[tuple[Agent, FakeKernel]]:
    """A node's agent, its loop in a thread, its clients made from the agent's token."""
    kernel = FakeKernel()
    state = tmp_path / f"state-{node}"
    store = StateStore(state)
    with monkeypatch.context() as env:
        env.setenv("KUBECONFIG", str(kubeconfig))  # read when its clients are made
        agent = cluster_agent(AgentConfig(node, Path(), state), kernel, store, no_events)
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    try:
        yield agent, kernel
    finally:
        agent.stop.set()
        agent.wake()
        thread.join(10)
        for cache in (agent.source.tunnels, agent.source.sessions):  # type: ignore[attr-defined]
            cache.stop()
        store.close()


@contextlib.contextmanager
def running_operator(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """The operator with the operator's token, webhooks on https://127.0.0.1:PORT with its own CA
    (URL mode: the API server here cannot reach a Service, no kube-proxy, no cluster DNS)."""
    (tmp_path / "tls").mkdir(exist_ok=True)
    config = app.OperatorConfig(
        health_port=None,
        webhook_port=free_port(),
        webhook_host="127.0.0.1",
        tls_dir=tmp_path / "tls",
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))  # kopf logs in (and again on a 401) with it
    with operator_thread(config):
        yield


def webhooks_ready(api: RealApiServer) -> bool:
    """kopf has written both configurations, with its CA bundle and HTTPS URLs."""
    hooks = [
        h
        for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        for c in api.objects(plural)
        if c["metadata"]["name"] == app.WEBHOOK_CONFIG
        for h in c.get("webhooks", [])
    ]
    return len(hooks) == 3 and all(
        h["clientConfig"].get("caBundle") and h["clientConfig"]["url"].startswith("https://")
        for h in hooks
    )


def test_the_whole_flow_with_the_charts_identities(
    api: RealApiServer,
    kubectl: Kubectl,
    identities: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with (
        running_agent(identities["agent"], tmp_path, monkeypatch) as (agent, kernel),
        running_agent(identities["agent-b"], tmp_path, monkeypatch, "node-b") as (_, kernel_b),
        running_operator(identities["operator"], tmp_path, monkeypatch),
    ):
        eventually(lambda: webhooks_ready(api), what="webhook configurations")
        # the mutating webhook, called by the API server over HTTPS: nodeName at once
        apply(kubectl, tunnel("flow-t"))
        apply(kubectl, session("flow-s", "flow-t"))
        stored = get(api, "l2tpsessions", "flow-s")
        assert stored is not None and stored["spec"]["nodeName"] == "node-a"
        # the agent (its own token) programs and reports; the operator aggregates
        eventually(
            lambda: ready(get(api, "l2tpsessions", "flow-s")) == "True/Programmed",
            what="session Ready",
        )
        assert 3000 in kernel.tunnels
        # node-b's agent, with its own Pod's token, programs node-b's tunnel and nothing else
        apply(kubectl, tunnel("flow-b", node="node-b", tunnel_id=3001))
        eventually(
            lambda: ready(get(api, "l2tptunnels", "flow-b")) == "True/Programmed",
            what="node-b's tunnel Ready",
        )
        assert set(kernel_b.tunnels) == {3001} and set(kernel.tunnels) == {3000}
        t = eventually(
            lambda: (
                (t := get(api, "l2tptunnels", "flow-t"))
                and (t.get("status") or {}).get("sessions") == "1/1"
                and t
            ),
            what="Sessions 1/1",
        )
        assert ready(t) == "True/Programmed"
        assert node_finalizer("node-a") in t["metadata"]["finalizers"]
        # a cross-object conflict, refused by the validating webhook through kubectl
        refused = apply(kubectl, tunnel("flow-dup", tunnel_id=3000), ok=False)
        assert refused.returncode != 0
        assert "denied the request" in refused.stderr
        assert (
            "spec.tunnelID: tunnel id 3000 is already used by L2TPTunnel/flow-t" in refused.stderr
        ), refused.stderr
        assert get(api, "l2tptunnels", "flow-dup") is None
        # delete: the agent takes it out of the kernel, then its finalizer goes
        kubectl("delete", "l2tpsession", "flow-s", "--wait=false")
        kubectl("delete", "l2tptunnel", "flow-t", "flow-b", "--wait=false")
        eventually(
            lambda: (
                get(api, "l2tptunnels", "flow-t") is None
                and get(api, "l2tptunnels", "flow-b") is None
                and get(api, "l2tpsessions", "flow-s") is None
            ),
            what="objects gone",
        )
        assert kernel.tunnels == {} and kernel_b.tunnels == {}
        assert agent.source.ready()  # type: ignore[attr-defined]


def test_while_the_operator_is_down_writes_pass_and_it_catches_up(
    api: RealApiServer,
    kubectl: Kubectl,
    identities: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """failurePolicy Ignore, shown: the operator gone, its webhook configuration still in place
    and pointing at a closed port, as a crashed operator (killed, out of memory) leaves it. (One
    that stops cleanly takes its webhooks out of the configuration first: kopf does that.)"""
    with running_operator(identities["operator"], tmp_path, monkeypatch):
        eventually(lambda: webhooks_ready(api), what="webhook configurations")
        apply(kubectl, tunnel("down-t"))
        left = {
            plural: next(
                c for c in api.objects(plural) if c["metadata"]["name"] == app.WEBHOOK_CONFIG
            )
            for plural in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        }
    for plural, config in left.items():  # as it was while the operator ran
        base = api.PLURALS[plural]
        api.submit("DELETE", f"{base}/{app.WEBHOOK_CONFIG}")
        config["metadata"] = {"name": app.WEBHOOK_CONFIG}
        code, answer = api.submit("POST", base, config)
        assert code == 201, answer
    assert webhooks_ready(api)  # configured, nobody listening
    # the schema and CEL rules are the API server's own: still refused
    bad = tunnel("down-bad")
    bad["spec"]["remote"] = "not-an-ip"
    refused = apply(kubectl, bad, ok=False)
    assert refused.returncode != 0 and "spec.remote" in refused.stderr, refused.stderr
    # a cross-object conflict passes (the agent's first-come rule is what refuses it now)
    apply(kubectl, tunnel("down-dup", tunnel_id=3000))
    # a session passes without its nodeName
    apply(kubectl, session("down-s", "down-t"))
    stored = get(api, "l2tpsessions", "down-s")
    assert stored is not None and "nodeName" not in stored["spec"]
    # back up: the operator fills it in
    with running_operator(identities["operator"], tmp_path, monkeypatch):
        eventually(
            lambda: (
                ((get(api, "l2tpsessions", "down-s") or {}).get("spec") or {}).get("nodeName")
                == "node-a"
            ),
            what="nodeName filled in after the outage",
        )
