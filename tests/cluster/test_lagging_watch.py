"""A reconcile that runs before the watch has brought back the agent's own writes."""

from __future__ import annotations

from typing import Any

import pytest
from fakekernel import FakeKernel
from test_cluster_agent import objects_for, synced, wait

from kube_l2tp.agent.cluster import ClusterSource
from kube_l2tp.agent.loop import Agent
from kube_l2tp.core.triggers import Trigger
from realapi.server import RealApiServer


def test_neither_the_data_plane_nor_the_status_moves(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, kernel = agent
    for obj in objects_for("node-a", 3000, "a"):
        apiserver.create(obj)
    wait(lambda: synced(a))
    caches: Any = (a.source.tunnels, a.source.sessions)  # type: ignore[attr-defined]
    before = [c.snapshot() for c in caches]  # without the finalizers and status to come
    assert a.reconcile_once().converged
    source = a.source
    assert isinstance(source, ClusterSource)
    writes = source.writer.writes
    assert writes == 4  # two finalizers, two statuses
    kernel.writes.clear()
    with monkeypatch.context() as m:
        for cache, copy in zip(caches, before, strict=True):
            m.setattr(cache, "snapshot", lambda copy=copy: copy)  # the watch is late
        assert a.reconcile_once(Trigger.PERIODIC_RESYNC).converged
    # the finalizers count as added (no 409 that would drop the objects from what is desired,
    # and so delete them from the kernel) and the status counts as written
    assert kernel.writes == []
    assert source.writer.writes == writes
