"""The PeerActive condition: a session's peer liveness in its status, beside Ready."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakekernel import FakeKernel
from test_cluster_agent import get, objects_for, programmed, synced, wait

from conftest import agent_on
from kube_l2tp.agent.cluster import ClusterSource, cluster_agent
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.core.state import Stats
from kube_l2tp.k8s import conditions
from realapi.fixtures import Kubectl
from realapi.server import RealApiServer

WINDOW = 10.0
KEY = (3000, 1000)  # the seed session's (tunnel id, session id)


@pytest.fixture
def agent(apiserver: RealApiServer, tmp_path: Path) -> Iterator[tuple[Agent, FakeKernel]]:
    with agent_on("node-a", tmp_path, peer_silence_window=WINDOW) as running:
        yield running


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """conditions.now() answers distinct times, so a transition's time can be told apart."""
    ticks = (f"2030-01-01T00:{m:02d}:00Z" for m in itertools.count())
    seen: list[str] = []

    def now() -> str:
        seen.append(next(ticks))
        return seen[-1]

    monkeypatch.setattr(conditions, "now", now)
    return seen


def cond(apiserver: RealApiServer, type_: str) -> dict[str, Any]:
    obj = get(apiserver, "l2tpsessions", "a-s")
    found = conditions.find(((obj or {}).get("status") or {}).get("conditions"), type_)
    assert found is not None, obj
    return dict(found)


def writes(a: Agent) -> int:
    source = a.source
    assert isinstance(source, ClusterSource)
    return source.writer.writes


def test_silent_then_active_again(
    apiserver: RealApiServer,
    agent: tuple[Agent, FakeKernel],
    clock: list[str],
    monkeypatch: pytest.MonkeyPatch,
    kubectl_bin: Path,
    tmp_path: Path,
) -> None:
    a, kernel = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    peer = cond(apiserver, "PeerActive")
    assert (peer["status"], peer["reason"]) == ("Unknown", "AwaitingTraffic")
    generation = get(apiserver, "l2tpsessions", "a-s")["metadata"]["generation"]  # type: ignore[index]
    assert peer["observedGeneration"] == generation

    # we send, nothing comes back, for a whole window: PeerSilent; Ready stays True
    base = time.monotonic()
    for t in range(0, 15, 5):
        kernel.stats[KEY] = Stats(tx_packets=100 + 10 * t)
        a.sample_liveness(now=base + t)
    silent = cond(apiserver, "PeerActive")
    assert (silent["status"], silent["reason"]) == ("False", "PeerSilent")
    assert "received none" in silent["message"]
    assert silent["lastTransitionTime"] > peer["lastTransitionTime"]
    ready = cond(apiserver, "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Programmed")
    table = Kubectl(kubectl_bin, apiserver.kubeconfig, tmp_path)("get", "l2tps").stdout.splitlines()
    at = table[0].index("READY")  # columns are aligned; "PEER ID" holds a space
    assert table[1][at:].split()[:2] == ["True", "PeerSilent"], table
    assert table[0][at:].split()[:2] == ["READY", "PEER"], table

    # no storm: more silent samples write nothing
    before = writes(a)
    for t in (15, 20):
        kernel.stats[KEY] = Stats(tx_packets=100 + 10 * t)
        a.sample_liveness(now=base + t)
    assert writes(a) == before
    assert cond(apiserver, "PeerActive") == silent

    # a packet arrives: PeerActive at once, with a new transition time
    cache = a.source.sessions  # type: ignore[attr-defined]
    events, stale = cache.events_received, cache.snapshot()
    kernel.stats[KEY] = Stats(tx_packets=400, rx_packets=1)
    a.sample_liveness(now=base + 25)
    active = cond(apiserver, "PeerActive")
    assert (active["status"], active["reason"]) == ("True", "PeerActive")
    assert active["lastTransitionTime"] > silent["lastTransitionTime"]
    assert writes(a) == before + 1
    # neither a resync before the watch brings the agent's own write back, nor one after, writes
    with monkeypatch.context() as m:
        m.setattr(cache, "snapshot", lambda: stale)  # the watch event is still on its way
        a.reconcile_once("periodic resync")
    wait(lambda: cache.events_received > events)
    a.reconcile_once("manifests changed")
    assert writes(a) == before + 1
    assert cond(apiserver, "Ready")["lastTransitionTime"] == ready["lastTransitionTime"]


def test_the_first_sample_rewrites_no_status(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    """Status written before a session's first liveness sample is not written again after it
    (at 1000 sessions streaming in, that was 800-900 writes of a changed message alone)."""
    a, _ = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    before = writes(a), cond(apiserver, "PeerActive")
    a.sample_liveness(now=time.monotonic())
    assert a.peer_verdicts()  # the session has a verdict now: Unknown, no evidence yet
    a.reconcile_once("periodic resync")
    assert (writes(a), cond(apiserver, "PeerActive")) == before


def test_a_restarted_agent_keeps_the_known_verdict_until_it_has_evidence(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel], tmp_path: Path
) -> None:
    a, kernel = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    base = time.monotonic()
    kernel.stats[KEY] = Stats(tx_packets=10, rx_packets=10)
    a.sample_liveness(now=base)
    kernel.stats[KEY] = Stats(tx_packets=20, rx_packets=20)
    a.sample_liveness(now=base + 5)
    active = cond(apiserver, "PeerActive")
    assert active["status"] == "True"
    for cache in (a.source.tunnels, a.source.sessions):  # type: ignore[attr-defined]
        cache.stop()

    # a new agent process (a DaemonSet rollout): its liveness history starts empty
    config = AgentConfig("node-a", Path(), tmp_path / "state", peer_silence_window=WINDOW)
    b = cluster_agent(config, kernel, a.store, no_events)
    try:
        wait(lambda: synced(b))
        kernel.writes.clear()
        assert b.reconcile_once().converged and kernel.writes == []
        b.sample_liveness(now=base + 100)
        assert cond(apiserver, "PeerActive") == active  # not flipped to Unknown and back
        # the peer then goes silent for a window: that evidence does replace it
        for t in (105, 110, 115):
            kernel.stats[KEY] = Stats(tx_packets=20 + t, rx_packets=20)
            b.sample_liveness(now=base + t)
        assert cond(apiserver, "PeerActive")["reason"] == "PeerSilent"
    finally:
        for cache in (b.source.tunnels, b.source.sessions):  # type: ignore[attr-defined]
            cache.stop()


def test_a_session_not_in_the_kernel_has_no_peer_verdict(
    apiserver: RealApiServer, agent: tuple[Agent, FakeKernel]
) -> None:
    a, kernel = agent
    programmed(apiserver, a, objects_for("node-a", 3000, "a"))
    base = time.monotonic()
    kernel.stats[KEY] = Stats(tx_packets=10, rx_packets=10)
    a.sample_liveness(now=base)
    kernel.stats[KEY] = Stats(tx_packets=20, rx_packets=20)
    a.sample_liveness(now=base + 5)
    assert cond(apiserver, "PeerActive")["status"] == "True"
    kernel.host_addresses.clear()  # the tunnel's local address is gone: it cannot be re-created
    kernel.delete_tunnel(3000)
    a.reconcile_once("kernel event")
    peer = cond(apiserver, "PeerActive")
    assert (peer["status"], peer["reason"]) == ("Unknown", "NotProgrammed")
    assert cond(apiserver, "Ready")["status"] == "False"
