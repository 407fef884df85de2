"""What a reconcile costs the in-cluster agent: an unchanged object is not validated again."""

from __future__ import annotations

import pytest
from fakekernel import FakeKernel
from test_cluster_agent import create_two_pairs, get, ready, synced, wait

from kube_l2tp.agent.loop import Agent
from kube_l2tp.api import validation
from kube_l2tp.api.manifests import Document
from realapi.server import RealApiServer


def test_only_changed_objects_are_validated_again(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, kernel = agent
    checked: list[str] = []
    check = validation.check_document

    def counting(doc: Document) -> validation.Checked:
        checked.append(doc.source)
        return check(doc)

    monkeypatch.setattr(validation, "check_document", counting)
    create_two_pairs(apiserver)
    wait(lambda: synced(a, tunnels=2, sessions=2))
    assert a.reconcile_once().converged
    assert sorted(checked) == [
        "api:L2TPSession/a-s",
        "api:L2TPSession/b-s",
        "api:L2TPTunnel/a-t",
        "api:L2TPTunnel/b-t",
    ]
    # the watch brings back the agent's own writes (finalizers, status): no spec changed
    cache = a.source.tunnels  # type: ignore[attr-defined]
    wait(lambda: all(t.get("status") for t in cache.snapshot()))
    checked.clear()
    assert a.reconcile_once().converged
    assert checked == []

    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/a-t"
    edit = {"spec": {"udp": {"sourcePort": 5001, "destinationPort": 6000}}}
    code, _ = apiserver.submit("PATCH", path, edit, content_type="application/merge-patch+json")
    assert code == 200
    wait(lambda: any(t["spec"]["udp"]["sourcePort"] == 5001 for t in cache.snapshot()))
    assert a.reconcile_once().converged
    assert checked == ["api:L2TPTunnel/a-t"]
    assert kernel.tunnels[3000].udp_sport == 5001

    # an edit into an invalid state is still seen (validated once), and still refused
    checked.clear()
    code, _ = apiserver.submit(
        "PATCH",
        apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPTunnel") + "/b-t",
        {"spec": {"tunnelID": 3000}},  # collides with a-t: only the node can see it
        content_type="application/merge-patch+json",
    )
    assert code == 200
    wait(
        lambda: (
            {t["metadata"]["name"]: t["spec"]["tunnelID"] for t in cache.snapshot()}["b-t"] == 3000
        )
    )
    a.reconcile_once()
    a.reconcile_once()
    assert checked == ["api:L2TPTunnel/b-t"]
    assert ready(get(apiserver, "l2tptunnels", "b-t")) == "False/Conflict"
    assert 3001 in kernel.tunnels  # its last valid version stays programmed
