"""Agent.run in cluster mode: an API change starts a reconcile at once, not at a poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from test_cluster_agent import get, objects_for, ready, wait

from apiserver.server import ApiServer
from kube_l2tp.agent import standalone
from kube_l2tp.agent.cluster import cluster_agent
from kube_l2tp.agent.standalone import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore

SLOW = 600.0  # a poll and a resync that never come within a test


@pytest.fixture
def running(
    apiserver: ApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Agent, FakeKernel]]:
    """An agent whose loop runs in a thread, polling its source only every SLOW seconds."""
    monkeypatch.setattr(standalone, "POLL_SECONDS", SLOW)
    kernel = FakeKernel()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("node-a", Path(), tmp_path / "state", resync_seconds=SLOW)
    a = cluster_agent(config, kernel, store)  # type: ignore[arg-type]
    wait(a.source.ready)
    thread = threading.Thread(target=a.run, name="agent", daemon=True)
    thread.start()
    wait(lambda: a.last is not None)  # the first reconcile (of nothing) is done
    yield a, kernel
    a.stop.set()
    a.wake()  # the loop checks stop when its wait ends
    thread.join(10)
    assert not thread.is_alive()
    for cache in (a.source.tunnels, a.source.sessions):  # type: ignore[attr-defined]
        cache.stop()
    store.close()


def test_objects_created_are_programmed_without_waiting_for_a_poll(
    apiserver: ApiServer, running: tuple[Agent, FakeKernel]
) -> None:
    a, kernel = running
    started = time.monotonic()
    for obj in objects_for("node-a", 3000, "a"):
        apiserver.create(obj)
    wait(lambda: ready(get(apiserver, "l2tpsessions", "a-s")) == "True/Programmed")
    assert 3000 in kernel.tunnels
    assert a.trigger == "manifests changed"
    assert time.monotonic() - started < SLOW / 10  # woken by the watch, not by a poll or resync
