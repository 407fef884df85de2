"""Agent.run in cluster mode: an API change starts a reconcile at once, not at a poll."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekernel import FakeKernel
from test_cluster_agent import get, objects_for, ready, synced, wait

from kube_l2tp.agent import loop
from kube_l2tp.agent.cluster import cluster_agent
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.triggers import Trigger
from realapi.server import RealApiServer

SLOW = 600.0  # a poll and a resync that never come within a test


@pytest.fixture
def preexisting() -> list[dict[str, Any]]:
    """Objects created before the agent starts (a test parametrizes it)."""
    return []


@pytest.fixture
def running(
    apiserver: RealApiServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    preexisting: list[dict[str, Any]],
) -> Iterator[tuple[Agent, FakeKernel, list[Trigger]]]:
    """An agent whose loop runs in a thread, polling its source only every SLOW seconds, and
    why each of its reconciles ran."""
    monkeypatch.setattr(loop, "POLL_SECONDS", SLOW)
    for obj in preexisting:
        apiserver.create(obj)
    kernel = FakeKernel()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("node-a", Path(), tmp_path / "state", resync_seconds=SLOW)
    a = cluster_agent(config, kernel, store, no_events)
    kinds = [o["kind"] for o in preexisting]
    wait(lambda: synced(a, kinds.count("L2TPTunnel"), kinds.count("L2TPSession")))
    passes: list[Trigger] = []
    a.on_result.append(lambda *_: passes.append(a.trigger))
    thread = threading.Thread(target=a.run, name="agent", daemon=True)
    thread.start()
    wait(lambda: passes)  # the first reconcile is done
    yield a, kernel, passes
    a.stop.set()
    a.wake()  # the loop checks stop when its wait ends
    thread.join(10)
    assert not thread.is_alive()
    for cache in (a.source.tunnels, a.source.sessions):  # type: ignore[attr-defined]
        cache.stop()
    store.close()


def test_objects_created_are_programmed_without_waiting_for_a_poll(
    apiserver: RealApiServer, running: tuple[Agent, FakeKernel, list[Trigger]]
) -> None:
    a, kernel, _ = running
    started = time.monotonic()
    for obj in objects_for("node-a", 3000, "a"):
        apiserver.create(obj)
    wait(lambda: ready(get(apiserver, "l2tpsessions", "a-s")) == "True/Programmed")
    assert 3000 in kernel.tunnels
    assert a.trigger is Trigger.API_EVENT
    assert time.monotonic() - started < SLOW / 10  # woken by the watch, not by a poll or resync


@pytest.mark.parametrize("preexisting", [objects_for("node-a", 3000, "a")])
def test_its_own_writes_coming_back_start_no_reconcile(
    apiserver: RealApiServer, running: tuple[Agent, FakeKernel, list[Trigger]]
) -> None:
    a, _, passes = running
    assert passes == [Trigger.START]
    wait(lambda: ready(get(apiserver, "l2tpsessions", "a-s")) == "True/Programmed")
    caches = (a.source.tunnels, a.source.sessions)  # type: ignore[attr-defined]
    wait(lambda: all(o.get("status") for c in caches for o in c.snapshot()))  # echoes are in
    time.sleep(4 * loop.DEBOUNCE_SECONDS)  # and judged, had they woken the loop
    assert passes == [Trigger.START]  # none for the watch bringing back 2 finalizers and 2 statuses

    # someone else's write does start one, and the status it wiped is written again
    path = apiserver.path_for("kubel2tp.io/v1alpha1", "L2TPSession") + "/a-s/status"
    code, wiped = apiserver.submit(
        "PATCH", path, {"status": None}, content_type="application/merge-patch+json"
    )
    assert code == 200 and not wiped.get("status")
    wait(lambda: ready(get(apiserver, "l2tpsessions", "a-s")) == "True/Programmed")
    assert passes == [Trigger.START, Trigger.API_EVENT]
