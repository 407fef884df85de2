"""Finalizers of nodes that are gone, and `kube-l2tp cleanup`, against the real API server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kube_l2tp.controller import app
from kube_l2tp.controller.cleanup import cleanup
from kube_l2tp.k8s.finalizers import node_finalizer
from kube_l2tp.k8s.objects import Cluster
from realapi.server import RealApiServer

from .conftest import Running, eventually, node, operator_config, session, tunnel

GV = "/apis/kubel2tp.io/v1alpha1"


def names(api: RealApiServer, plural: str) -> set[str]:
    return {o["metadata"]["name"] for o in api.objects(plural)}


def held(obj: dict[str, Any], *nodes: str) -> dict[str, Any]:
    obj["metadata"]["finalizers"] = [node_finalizer(n) for n in nodes]
    return obj


@pytest.mark.asyncio
async def test_deleting_a_node_releases_its_objects(
    apiserver: RealApiServer, operator: Running
) -> None:
    apiserver.create(node("node-a"))
    apiserver.create(node("node-b"))
    apiserver.create(held(tunnel("ta", node="node-a"), "node-a"))
    apiserver.create(held(session("sa", "ta", nodeName="node-a"), "node-a"))
    apiserver.create(held(tunnel("tb", node="node-b", tunnel_id=3001), "node-b"))
    for path in (f"{GV}/l2tpsessions/sa", f"{GV}/l2tptunnels/ta", f"{GV}/l2tptunnels/tb"):
        assert apiserver.submit("DELETE", path)[0] == 200
    assert names(apiserver, "l2tptunnels") == {"ta", "tb"}  # held by their agents

    assert apiserver.submit("DELETE", "/api/v1/nodes/node-a")[0] == 200
    await eventually(lambda: names(apiserver, "l2tptunnels") == {"tb"}, what="ta released")
    await eventually(lambda: names(apiserver, "l2tpsessions") == set(), what="sa released")
    # node-b still exists: its agent will remove its finalizer itself.
    tb = next(iter(apiserver.objects("l2tptunnels")))
    assert tb["metadata"]["finalizers"] == [node_finalizer("node-b")]


@pytest.mark.asyncio
async def test_at_startup_finalizers_of_missing_nodes_are_removed(
    apiserver: RealApiServer, tmp_path: Path
) -> None:
    """Nodes deleted while the operator was down: nothing to see but the finalizers."""
    apiserver.create(node("alive"))
    apiserver.create(held(tunnel("t", node="alive"), "alive", "gone"))
    assert apiserver.submit("DELETE", f"{GV}/l2tptunnels/t")[0] == 200
    stop, ready = asyncio.Event(), asyncio.Event()
    config = operator_config(tmp_path / "tls")
    task = asyncio.create_task(app.operator(config, stop_flag=stop, ready_flag=ready))
    try:
        await eventually(
            lambda: (
                next(iter(apiserver.objects("l2tptunnels")))["metadata"]["finalizers"]
                == [node_finalizer("alive")]
            ),
            what="only the live node's finalizer",
        )
    finally:
        stop.set()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_cleanup_deletes_everything_and_strips_what_no_agent_removes(
    apiserver: RealApiServer,
) -> None:
    apiserver.create(tunnel("t1"))
    apiserver.create(held(tunnel("t2", tunnel_id=3001), "node-a"))
    apiserver.create(held(session("s1", "t2"), "node-a"))
    out = io.StringIO()
    now = [0.0]
    cluster = Cluster()
    try:
        code = cleanup(
            cluster,
            timeout=3,
            out=out,
            poll=1,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
    finally:
        cluster.close()
    text = out.getvalue()
    assert code == 0, text
    assert "l2tpsessions/s1: deleted" in text and "l2tptunnels/t1: deleted" in text
    assert f"l2tptunnels/t2: removed finalizer(s) {node_finalizer('node-a')}" in text
    assert text.rstrip().endswith("nothing left")
    assert names(apiserver, "l2tptunnels") == names(apiserver, "l2tpsessions") == set()


def test_cleanup_command_on_an_empty_cluster(apiserver: RealApiServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kube_l2tp.cli", "cleanup", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "nothing left" in done.stdout
