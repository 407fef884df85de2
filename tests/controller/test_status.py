"""Tunnel status aggregation and nodeName filling, with kopf running against the real API server."""

from __future__ import annotations

from typing import Any

import pytest

from kube_l2tp.k8s.conditions import condition
from realapi.server import RealApiServer

from .conftest import Running, eventually, session, tunnel

SESSIONS = "/apis/kubel2tp.io/v1alpha1/l2tpsessions"
MERGE = "application/merge-patch+json"


def get(api: RealApiServer, plural: str, name: str) -> dict[str, Any]:
    return next(o for o in api.objects(plural) if o["metadata"]["name"] == name)


def set_ready(api: RealApiServer, name: str, ready: bool) -> None:
    cond = condition("Ready", "True" if ready else "False", "Programmed" if ready else "Pending")
    code, body = api.submit(
        "PATCH",
        f"{SESSIONS}/{name}/status",
        {"status": {"conditions": [cond]}},
        content_type=MERGE,
    )
    assert code == 200, body


@pytest.mark.asyncio
async def test_tunnel_status_follows_sessions_ready(
    apiserver: RealApiServer, operator: Running
) -> None:
    apiserver.create(tunnel("t1"))
    await eventually(
        lambda: get(apiserver, "l2tptunnels", "t1").get("status", {}).get("sessions") == "0/0",
        what="0/0",
    )
    apiserver.create(session("s1", "t1", 1001))
    apiserver.create(session("s2", "t1", 1002))
    set_ready(apiserver, "s1", True)
    status = await eventually(
        lambda: (
            (st := get(apiserver, "l2tptunnels", "t1").get("status", {})).get("sessions") == "1/2"
            and st
        ),
        what="1/2",
    )
    assert status["sessionsReady"] == 1 and status["sessionsTotal"] == 2
    set_ready(apiserver, "s2", True)
    await eventually(
        lambda: get(apiserver, "l2tptunnels", "t1")["status"]["sessions"] == "2/2", what="2/2"
    )
    set_ready(apiserver, "s1", False)
    await eventually(
        lambda: get(apiserver, "l2tptunnels", "t1")["status"]["sessions"] == "1/2", what="1/2"
    )
    code, _ = apiserver.submit("DELETE", f"{SESSIONS}/s1")
    assert code == 200
    await eventually(
        lambda: get(apiserver, "l2tptunnels", "t1")["status"]["sessions"] == "1/1", what="1/1"
    )


@pytest.mark.asyncio
async def test_session_gets_node_name_once_its_tunnel_exists(
    apiserver: RealApiServer, operator: Running
) -> None:
    apiserver.create(session("early", "t2"))
    assert "nodeName" not in get(apiserver, "l2tpsessions", "early")["spec"]
    apiserver.create(tunnel("t2", node="node-b"))
    apiserver.create(session("late", "t2", 1001))
    for name in ("early", "late"):
        await eventually(
            lambda n=name: get(apiserver, "l2tpsessions", n)["spec"].get("nodeName") == "node-b",
            what=f"{name}.spec.nodeName",
        )


@pytest.mark.asyncio
async def test_operator_adds_no_finalizer_and_no_annotations(
    apiserver: RealApiServer, operator: Running
) -> None:
    apiserver.create(tunnel("t3"))
    apiserver.create(session("s3", "t3"))
    await eventually(
        lambda: get(apiserver, "l2tpsessions", "s3")["spec"].get("nodeName"), what="nodeName"
    )
    for plural, name in (("l2tptunnels", "t3"), ("l2tpsessions", "s3")):
        meta = get(apiserver, plural, name)["metadata"]
        assert not meta.get("finalizers"), meta
        assert not any("kopf" in k or "operator" in k for k in meta.get("annotations", {}))
