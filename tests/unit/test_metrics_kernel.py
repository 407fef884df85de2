"""The kernel counters collector (metrics.kernel) over fake dumps, and the agent's own metrics."""

from __future__ import annotations

import time
from dataclasses import fields, replace
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kube_l2tp import embedded
from kube_l2tp.agent.serve import build_registry
from kube_l2tp.agent.standalone import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import (
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    Stats,
    TunnelConfig,
)
from kube_l2tp.metrics.agent import METRIC_NAMES
from kube_l2tp.metrics.kernel import COUNTERS, KernelCollector, Names, metric_names

TUNNEL = TunnelConfig(3000, 4000, "udp", "192.0.2.1", "192.0.2.2", 5000, 6000)
SESSION = SessionConfig(3000, 1000, 2000, ifname="l2tpeth0")
FOREIGN_T = TunnelConfig(9, 9, "udp", "192.0.2.1", "192.0.2.9", 9, 9)
FOREIGN_S = SessionConfig(9, 9, 9, ifname="l2tpeth9")

# every counter distinct, so a crossed wire shows
STATS = Stats(*range(101, 101 + len(fields(Stats))))
NAMES = Names({3000: "site-a"}, {(3000, 1000): ("site-a", "site-a-1")})


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def registry_with(collector: KernelCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def dump() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
    return (
        [ObservedTunnel(TUNNEL, STATS), ObservedTunnel(FOREIGN_T, STATS)],
        [ObservedSession(SESSION, STATS), ObservedSession(FOREIGN_S, STATS)],
    )


def test_exports_managed_sessions_and_tunnels_as_counters_with_their_labels() -> None:
    got = samples(registry_with(KernelCollector("node-a", dump, lambda: NAMES)))
    session = frozenset(
        {
            "tunnel": "site-a",
            "session": "site-a-1",
            "tunnel_id": "3000",
            "session_id": "1000",
            "interface": "l2tpeth0",
            "node": "node-a",
        }.items()
    )
    tunnel = frozenset({"tunnel": "site-a", "tunnel_id": "3000", "node": "node-a"}.items())
    for attr, name, _ in COUNTERS:
        assert got[(f"l2tp_session_{name}_total", session)] == getattr(STATS, attr)
        assert got[(f"l2tp_tunnel_{name}_total", tunnel)] == getattr(STATS, attr)
    assert got[("l2tp_tunnel_rx_invalid_total", tunnel)] == STATS.rx_invalid
    assert got[("l2tp_session_rx_cookie_discards_total", session)] == STATS.rx_cookie_discards
    assert got[("l2tp_session_rx_seq_discards_total", session)] == STATS.rx_seq_discards
    assert got[("kube_l2tp_kernel_l2tp_supported", frozenset({("node", "node-a")}))] == 1
    assert got[("kube_l2tp_session_peer_silent", session)] == 0
    # nothing of the foreign objects, and nothing but the declared names
    assert not [k for k in got if ("tunnel_id", "9") in k[1]]
    assert {name for name, _ in got} == metric_names()


def test_exposition_types_are_counters_without_created_samples() -> None:
    registry = registry_with(KernelCollector("n", dump, lambda: NAMES))
    text = generate_latest(registry).decode()
    assert "# TYPE l2tp_session_rx_cookie_discards_total counter" in text
    assert "# TYPE l2tp_tunnel_rx_invalid_total counter" in text
    assert "_created" not in text


def test_one_dump_per_scrape_and_none_at_registration() -> None:
    calls = []

    def counting() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        calls.append(1)
        return dump()

    registry = registry_with(KernelCollector("n", counting, lambda: NAMES))
    assert calls == []
    generate_latest(registry)
    assert calls == [1]


def test_peer_silent_follows_the_verdicts() -> None:
    collector = KernelCollector("n", dump, lambda: NAMES, lambda: {(3000, 1000): Liveness.SILENT})
    got = samples(registry_with(collector))
    silent = {k: v for k, v in got.items() if k[0] == "kube_l2tp_session_peer_silent"}
    assert list(silent.values()) == [1]


def test_kernel_without_l2tp_reports_unsupported_and_no_counters() -> None:
    def unsupported() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        raise KernelError("dump tunnels", 2, Outcome.NOT_SUPPORTED)

    got = samples(registry_with(KernelCollector("n", unsupported, lambda: NAMES)))
    assert got == {("kube_l2tp_kernel_l2tp_supported", frozenset({("node", "n")})): 0}


def test_a_failed_dump_leaves_a_gap_not_zeros() -> None:
    def busy() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        raise KernelError("dump sessions", 16, Outcome.BUSY)

    got = samples(registry_with(KernelCollector("n", busy, lambda: NAMES)))
    assert got == {("kube_l2tp_kernel_l2tp_supported", frozenset({("node", "n")})): 1}


def test_no_desired_state_yet_exports_no_counters() -> None:
    got = samples(registry_with(KernelCollector("n", dump, lambda: Names.of(None))))
    assert {name for name, _ in got} == {"kube_l2tp_kernel_l2tp_supported"}


# -- wired into the agent --------------------------------------------------------------------


class CountingKernel(FakeKernel):
    """The fake kernel with counters that the test moves."""

    stats: dict[tuple[int, int], Stats]

    def __post_init__(self) -> None:
        super().__post_init__()
        self.stats = {}

    def dump_sessions(self) -> list[ObservedSession]:
        return [
            replace(s, stats=self.stats.get((s.config.tunnel_id, s.config.session_id), Stats()))
            for s in super().dump_sessions()
        ]


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    kernel = CountingKernel()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("site-a", embedded.DIRECTORY, tmp_path / "state", peer_silence_window=10)
    return Agent(config, kernel, store)  # type: ignore[arg-type]


def fake_dump(kernel: FakeKernel) -> object:
    return lambda: (kernel.dump_tunnels(), kernel.dump_sessions())


def test_agent_registry_names_objects_and_counts_drift_repairs(agent: Agent) -> None:
    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    registry = build_registry(agent, fake_dump(kernel))  # type: ignore[arg-type]
    node = frozenset({("node", "site-a")})
    assert samples(registry)[("kube_l2tp_agent_ready", node)] == 0
    first = agent.reconcile_once("start")
    assert first.converged and first.writes > 0
    got = samples(registry)
    assert got[("kube_l2tp_agent_ready", node)] == 1
    assert got[("kube_l2tp_drift_repairs_total", node)] == 0  # programming is not repair
    assert got[("kube_l2tp_kernel_writes_total", node)] == first.writes
    assert got[("kube_l2tp_reconcile_total", node)] == 1
    assert not [k for k in got if k[0] == "kube_l2tp_api_connected"]  # standalone: absent
    session = [k for k in got if k[0] == "l2tp_session_tx_packets_total"]
    assert [dict(k[1])["session"] for k in session] == ["site-a-1"]
    # someone deletes the tunnel; the kernel event's reconcile repairs it
    kernel.delete_tunnel(3000)
    repair = agent.reconcile_once("kernel event")
    assert repair.writes > 0
    got = samples(registry)
    assert got[("kube_l2tp_drift_repairs_total", node)] == repair.writes
    # a manifest change's writes are not drift
    kernel.delete_tunnel(3000)
    agent.reconcile_once("manifests changed")
    assert samples(registry)[("kube_l2tp_drift_repairs_total", node)] == repair.writes
    exported = {name for name, _ in samples(registry) if not name.endswith("_created")}
    # what the dashboard and rules tests rely on: the declared names are the exported ones
    assert exported | {"kube_l2tp_api_connected"} == METRIC_NAMES | metric_names()


def test_agent_samples_liveness_and_reports_verdicts(agent: Agent) -> None:
    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    registry = build_registry(agent, fake_dump(kernel))  # type: ignore[arg-type]
    seen: list[dict[str, object]] = []
    agent.on_liveness.append(lambda v: seen.append(dict(v)))
    agent.reconcile_once("start")
    key = (3000, 1000)
    agent.sample_liveness()  # reuses the reconcile's dump (made at the monotonic time)
    base = time.monotonic()
    for t in (5, 10):
        kernel.stats[key] = Stats(tx_packets=10 * t)
        agent.sample_liveness(now=base + t)
    verdicts = agent.peer_verdicts()
    assert verdicts["L2TPSession/site-a-1"].state is Liveness.SILENT
    assert seen and seen[-1]["L2TPSession/site-a-1"] == verdicts["L2TPSession/site-a-1"]
    silent = [v for k, v in samples(registry).items() if k[0] == "kube_l2tp_session_peer_silent"]
    assert silent == [1]
    kernel.stats[key] = Stats(tx_packets=200, rx_packets=1)
    agent.sample_liveness(now=base + 15)
    assert agent.peer_verdicts()["L2TPSession/site-a-1"].state is Liveness.ACTIVE
    silent = [v for k, v in samples(registry).items() if k[0] == "kube_l2tp_session_peer_silent"]
    assert silent == [0]


def test_api_connected_setter() -> None:
    from kube_l2tp.metrics.agent import AgentMetrics

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, "n")
    assert registry.get_sample_value("kube_l2tp_api_connected", {"node": "n"}) is None
    metrics.set_api_connected(True)
    assert registry.get_sample_value("kube_l2tp_api_connected", {"node": "n"}) == 1
    metrics.set_api_connected(False)
    assert registry.get_sample_value("kube_l2tp_api_connected", {"node": "n"}) == 0
