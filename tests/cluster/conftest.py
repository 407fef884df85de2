"""The in-cluster agent against the real kube-apiserver (tests/conftest.py's `api`), with the
in-memory kernel model: no root, no VM (the kernel itself is covered by tests/kernel)."""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
sys.path.insert(0, str(TESTS / "unit"))  # fakekernel

from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402
from fakekernel import FakeKernel  # noqa: E402

from kube_l2tp.agent.cluster import cluster_agent  # noqa: E402
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events  # noqa: E402
from kube_l2tp.agent.statestore import StateStore  # noqa: E402
from realapi.server import RealApiServer  # noqa: E402

__all__ = ["agent", "agent_on", "apiserver"]


@pytest.fixture
def apiserver(api: RealApiServer) -> RealApiServer:
    """The real API server (the name the tests had for the emulator they ran on before)."""
    return api


@contextmanager
def agent_on(node: str, tmp_path: Path, **config: Any) -> Iterator[tuple[Agent, FakeKernel]]:
    """An in-cluster agent of ``node`` on the in-memory kernel, its watches stopped after."""
    kernel = FakeKernel()
    store = StateStore(tmp_path / "state")
    settings = AgentConfig(node, Path(), tmp_path / "state", **config)
    a = cluster_agent(settings, kernel, store, no_events)
    try:
        yield a, kernel
    finally:
        for cache in (a.source.tunnels, a.source.sessions):  # type: ignore[attr-defined]
            cache.stop()
        store.close()


@pytest.fixture
def agent(apiserver: RealApiServer, tmp_path: Path) -> Iterator[tuple[Agent, FakeKernel]]:
    """The agent of node-a (after the server: the agent reads its kubeconfig)."""
    with agent_on("node-a", tmp_path) as running:
        yield running
