"""The kernel's counters (metrics.kernel) over fake dumps, and the agent's own metrics.

KernelMetrics (the text the agent serves) is held against KernelCollector (prometheus_client's
families): the same samples, lines and escaping.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import astuple, fields, replace
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kube_l2tp import embedded
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.agent.serve import Metrics, build_metrics
from kube_l2tp.agent.standalone import standalone_agent
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import (
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    SessionCounters,
    Stats,
    TunnelConfig,
    TunnelCounters,
)
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.metrics.agent import METRIC_NAMES
from kube_l2tp.metrics.kernel import (
    COUNTERS,
    SLICE,
    CounterDump,
    KernelMetrics,
    Names,
    SessionKey,
    escape,
    metric_names,
)
from support.oracles_metrics import Dump, KernelCollector

Peers = Callable[[], Mapping[SessionKey, Liveness]]

TUNNEL = TunnelConfig(3000, 4000, "udp", "192.0.2.1", "192.0.2.2", 5000, 6000)
SESSION = SessionConfig(3000, 1000, 2000, ifname="l2tpeth0")
FOREIGN_T = TunnelConfig(9, 9, "udp", "192.0.2.1", "192.0.2.9", 9, 9)
FOREIGN_S = SessionConfig(9, 9, 9, ifname="l2tpeth9")

# every counter distinct, so a crossed wire shows
STATS = Stats(*range(101, 101 + len(fields(Stats))))
NAMES = Names({3000: "site-a"}, {(3000, 1000): ("site-a", "site-a-1")})


Render = Callable[..., str]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Samples as Prometheus reads them: values as float64 (the parser keeps integers as int)."""
    got: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in got, f"duplicate sample {key}"
            got[key] = float(s.value)
    return got


def registry_with(collector: KernelCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def counters_of(dump: Dump) -> CounterDump:
    """The counters-only dump (what L2tp.dump_counters reads) of an ObservedTunnel/Session dump."""

    def counters() -> tuple[list[TunnelCounters], list[SessionCounters]]:
        tunnels, sessions = dump()
        return (
            [(t.config.tunnel_id, astuple(t.stats)) for t in tunnels],
            [(s.config.tunnel_id, s.config.session_id, s.config.ifname, astuple(s.stats))
             for s in sessions],
        )  # fmt: skip

    return counters


def reference(node: str, dump: Dump, names: Callable[[], Names], peers: Peers = dict) -> str:
    """prometheus_client's rendering: the KernelCollector through generate_latest."""
    return generate_latest(registry_with(KernelCollector(node, dump, names, peers))).decode()


def text(node: str, dump: Dump, names: Callable[[], Names], peers: Peers = dict) -> str:
    """What the agent serves: KernelMetrics on the same objects' counters."""
    return KernelMetrics(node, counters_of(dump), names, peers).render().decode()


@pytest.fixture(params=[reference, text])
def render(request: pytest.FixtureRequest) -> Render:
    """Each behaviour below holds for both renderings."""
    fn: Render = request.param
    return fn


def dump() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
    return (
        [ObservedTunnel(TUNNEL, STATS), ObservedTunnel(FOREIGN_T, STATS)],
        [ObservedSession(SESSION, STATS), ObservedSession(FOREIGN_S, STATS)],
    )


def test_exports_managed_sessions_and_tunnels_as_counters_with_their_labels(
    render: Render,
) -> None:
    got = parse(render("node-a", dump, lambda: NAMES))
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


def test_exposition_types_are_counters_without_created_samples(render: Render) -> None:
    out = render("n", dump, lambda: NAMES)
    assert "# TYPE l2tp_session_rx_cookie_discards_total counter" in out
    assert "# TYPE l2tp_tunnel_rx_invalid_total counter" in out
    assert "# TYPE kube_l2tp_session_peer_silent gauge" in out
    assert "_created" not in out


def test_one_dump_per_scrape_and_none_at_registration() -> None:
    calls = []

    def counting() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        calls.append(1)
        return dump()

    registry = registry_with(KernelCollector("n", counting, lambda: NAMES))
    assert calls == []
    generate_latest(registry)
    assert calls == [1]
    kernel = KernelMetrics("n", counters_of(counting), lambda: NAMES)
    assert calls == [1]
    kernel.render()
    assert calls == [1, 1]


def test_peer_silent_follows_the_verdicts(render: Render) -> None:
    got = parse(render("n", dump, lambda: NAMES, lambda: {(3000, 1000): Liveness.SILENT}))
    silent = {k: v for k, v in got.items() if k[0] == "kube_l2tp_session_peer_silent"}
    assert list(silent.values()) == [1]


def test_kernel_without_l2tp_reports_unsupported_and_no_counters(render: Render) -> None:
    def unsupported() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        raise KernelError("dump tunnels", 2, Outcome.NOT_SUPPORTED)

    got = parse(render("n", unsupported, lambda: NAMES))
    assert got == {("kube_l2tp_kernel_l2tp_supported", frozenset({("node", "n")})): 0}


def test_a_failed_dump_leaves_a_gap_not_zeros(render: Render) -> None:
    def busy() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        raise KernelError("dump sessions", 16, Outcome.BUSY)

    got = parse(render("n", busy, lambda: NAMES))
    assert got == {("kube_l2tp_kernel_l2tp_supported", frozenset({("node", "n")})): 1}


def test_no_desired_state_yet_exports_no_counters(render: Render) -> None:
    got = parse(render("n", dump, lambda: Names.of(None)))
    assert {name for name, _ in got} == {"kube_l2tp_kernel_l2tp_supported"}


# -- the served text against prometheus_client's ---------------------------------------------


def many(n: int) -> tuple[Dump, Names, dict[SessionKey, Liveness]]:
    """n managed tunnel+session pairs with distinct counters (up to 2**64 - 1), a foreign pair
    in the middle, every third peer silent."""
    tunnels, sessions = [], []
    managed_t: dict[int, str] = {}
    managed_s: dict[SessionKey, tuple[str, str]] = {}
    big = [2**64 - 1, 2**53 + 1, 10**7, 123_456_789, 0]
    for i in range(n):
        tid, sid = 100 + i, 5000 + i
        values = [big[(i + k) % len(big)] + k for k in range(len(fields(Stats)))]
        stats = Stats(*[min(v, 2**64 - 1) for v in values])
        tunnels.append(ObservedTunnel(replace(TUNNEL, tunnel_id=tid), stats))
        sessions.append(ObservedSession(SessionConfig(tid, sid, 1, ifname=f"pw{i}"), stats))
        managed_t[tid] = f"t-{i}"
        managed_s[(tid, sid)] = (f"t-{i}", f"s-{i}")
        if i == n // 2:
            tunnels.append(ObservedTunnel(FOREIGN_T, stats))
            sessions.append(ObservedSession(FOREIGN_S, stats))
    peers = dict.fromkeys(list(managed_s)[::3], Liveness.SILENT)
    return (lambda: (tunnels, sessions)), Names(managed_t, managed_s), peers


def values_as(text: str) -> str:
    """The text with every sample value replaced: prometheus_client writes floats (1e+07.0),
    KernelMetrics the kernel's integers."""
    return re.sub(r"^([^#].*) \S+$", r"\1 V", text, flags=re.MULTILINE)


@pytest.mark.parametrize("n", [300, SLICE, 2 * SLICE + 1])
def test_text_equals_prometheus_clients_sample_for_sample(n: int) -> None:
    """Also across the slices the text is written in (the last slice a single object)."""
    dump_n, names, peers = many(n)
    old = reference("node-a", dump_n, lambda: names, lambda: peers)
    new = text("node-a", dump_n, lambda: names, lambda: peers)
    assert parse(new) == parse(old)
    assert len(parse(new)) == 1 + 20 * n
    # the same HELP, TYPE and sample lines in the same order (labels sorted by name)
    assert values_as(new) == values_as(old)
    assert new.endswith("\n")
    # integers, exact: 2**64 - 1 is not a float's 1.8446744073709552e+19
    assert f" {2**64 - 1}\n" in new


@pytest.mark.parametrize(
    ("tunnel", "session", "ifname"),
    [
        ('quote"d', "back\\slash", "new\nline"),
        ('\\"\n', "end\\", "é-utf8"),
        ("plain", "%s{x}", "{}"),
    ],
)
def test_label_values_are_escaped_as_prometheus_client_escapes_them(
    tunnel: str, session: str, ifname: str
) -> None:
    cfg = replace(SESSION, ifname=ifname)
    names = Names({3000: tunnel}, {(3000, 1000): (tunnel, session)})

    def odd() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        return [ObservedTunnel(TUNNEL, STATS)], [ObservedSession(cfg, STATS)]

    new = text("node\\a", odd, lambda: names)
    assert parse(new) == parse(reference("node\\a", odd, lambda: names))
    labels = {dict(k[1]).get("session"): dict(k[1]) for k in parse(new)}
    assert labels[session]["interface"] == ifname
    assert labels[session]["tunnel"] == tunnel
    assert labels[session]["node"] == "node\\a"
    assert values_as(new) == values_as(reference("node\\a", odd, lambda: names))


def test_escape() -> None:
    assert escape("plain-name.1") == "plain-name.1"
    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_an_object_a_dump_repeats_is_exported_once() -> None:
    """A dump interrupted by a change may list an object twice; a sample twice in one scrape
    would make Prometheus reject the whole scrape."""

    def twice() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        tunnels, sessions = dump()
        return tunnels * 2, sessions * 2

    assert parse(text("n", twice, lambda: NAMES)) == parse(text("n", dump, lambda: NAMES))


def test_labels_follow_renames_of_interfaces_and_objects() -> None:
    """The label strings kept between scrapes are those of the current ids, names and interface:
    nothing stale is exported, and what is gone is forgotten."""
    state: dict[str, object] = {"ifname": "l2tpeth0", "names": NAMES, "sessions": True}

    def moving() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        cfg = replace(SESSION, ifname=str(state["ifname"]))
        sessions = [ObservedSession(cfg, STATS)] if state["sessions"] else []
        return [ObservedTunnel(TUNNEL, STATS)], sessions

    def names() -> Names:
        n = state["names"]
        assert isinstance(n, Names)
        return n

    kernel = KernelMetrics("n", counters_of(moving), names)

    def labels() -> set[tuple[str, str, str]]:
        out = parse(kernel.render().decode())
        return {
            (d.get("tunnel", ""), d.get("session", ""), d.get("interface", ""))
            for d in (dict(k[1]) for k in out)
            if "tunnel" in d
        }

    assert labels() == {("site-a", "", ""), ("site-a", "site-a-1", "l2tpeth0")}
    state["ifname"] = "pw-renamed"
    assert labels() == {("site-a", "", ""), ("site-a", "site-a-1", "pw-renamed")}
    state["names"] = Names({3000: "site-b"}, {(3000, 1000): ("site-b", "site-b-1")})
    assert labels() == {("site-b", "", ""), ("site-b", "site-b-1", "pw-renamed")}
    state["sessions"] = False
    assert labels() == {("site-b", "", "")}
    assert kernel._session_labels == {}


def test_counters_follow_the_kernel_between_scrapes() -> None:
    """Nothing of a previous scrape's values is kept: each scrape exports what its dump read."""
    stats = {"now": STATS}

    def rising() -> tuple[list[ObservedTunnel], list[ObservedSession]]:
        return [ObservedTunnel(TUNNEL, stats["now"])], [ObservedSession(SESSION, stats["now"])]

    kernel = KernelMetrics("n", counters_of(rising), lambda: NAMES)
    before = parse(kernel.render().decode())
    stats["now"] = Stats(*[v + 5 for v in astuple(STATS)])
    after = parse(kernel.render().decode())
    moved = {k: after[k] - v for k, v in before.items() if k[0].endswith("_total")}
    assert set(moved.values()) == {5}


def test_values_stay_with_their_labels_when_a_dump_reorders_or_drops_objects() -> None:
    """The per-family templates are made for one list of objects; another order, or one object
    fewer, must not shift values onto their neighbours' labels."""
    dump_n, names, peers = many(6)
    tunnels, sessions = dump_n()
    order = {"now": (tunnels, sessions)}
    kernel = KernelMetrics("n", counters_of(lambda: order["now"]), lambda: names, lambda: peers)
    for now in (
        (tunnels, sessions),
        (tunnels[::-1], sessions[::-1]),
        (tunnels[1:], sessions[:2] + sessions[3:]),
        (tunnels, sessions),
    ):
        order["now"] = now
        expected = parse(reference("n", lambda: order["now"], lambda: names, lambda: peers))
        assert parse(kernel.render().decode()) == expected


def promtool_check_metrics(body: bytes) -> None:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package"
            " (apt-get install --no-install-recommends prometheus)",
            pytrace=False,
        )
    proc = subprocess.run(
        [exe, "check", "metrics"], input=body, capture_output=True, check=False, timeout=60
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr).decode()


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
    return standalone_agent(config, kernel, store, no_events)


def fake_dump(kernel: FakeKernel) -> CounterDump:
    return counters_of(lambda: (kernel.dump_tunnels(), kernel.dump_sessions()))


def scrape(metrics: Metrics) -> Samples:
    return parse(metrics.render().decode())


def test_agent_registry_names_objects_and_counts_drift_repairs(agent: Agent) -> None:
    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    metrics = build_metrics(agent, fake_dump(kernel))
    node = frozenset({("node", "site-a")})
    assert scrape(metrics)[("kube_l2tp_agent_ready", node)] == 0
    first = agent.reconcile_once(Trigger.START)
    assert first.converged and first.writes > 0
    got = scrape(metrics)
    assert got[("kube_l2tp_agent_ready", node)] == 1
    assert got[("kube_l2tp_drift_repairs_total", node)] == 0  # programming is not repair
    assert got[("kube_l2tp_kernel_writes_total", node)] == first.writes
    assert got[("kube_l2tp_reconcile_total", node)] == 1
    assert not [k for k in got if k[0] == "kube_l2tp_api_connected"]  # standalone: absent
    session = [k for k in got if k[0] == "l2tp_session_tx_packets_total"]
    assert [dict(k[1])["session"] for k in session] == ["site-a-1"]
    # someone deletes the tunnel; the kernel event's reconcile repairs it
    kernel.delete_tunnel(3000)
    repair = agent.reconcile_once(Trigger.KERNEL_EVENT)
    assert repair.writes > 0
    got = scrape(metrics)
    assert got[("kube_l2tp_drift_repairs_total", node)] == repair.writes
    # a manifest change's writes are not drift
    kernel.delete_tunnel(3000)
    agent.reconcile_once(Trigger.MANIFESTS_CHANGED)
    assert scrape(metrics)[("kube_l2tp_drift_repairs_total", node)] == repair.writes
    exported = {name for name, _ in scrape(metrics) if not name.endswith("_created")}
    # what the dashboard and rules tests rely on: the declared names are the exported ones
    absent_when_healthy = {"kube_l2tp_api_connected", "kube_l2tp_object_not_ready"}
    assert exported | absent_when_healthy == METRIC_NAMES | metric_names()


def test_agent_samples_liveness_and_reports_verdicts(agent: Agent) -> None:
    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    metrics = build_metrics(agent, fake_dump(kernel))
    seen: list[dict[str, object]] = []
    agent.on_liveness.append(lambda v: seen.append(dict(v)))
    agent.reconcile_once(Trigger.START)
    key = (3000, 1000)
    agent.sample_liveness()  # reuses the reconcile's dump (made at the monotonic time)
    base = time.monotonic()
    for t in (5, 10):
        kernel.stats[key] = Stats(tx_packets=10 * t)
        agent.sample_liveness(now=base + t)
    verdicts = agent.peer_verdicts()
    assert verdicts["L2TPSession/site-a-1"].state is Liveness.SILENT
    assert seen and seen[-1]["L2TPSession/site-a-1"] == verdicts["L2TPSession/site-a-1"]
    silent = [v for k, v in scrape(metrics).items() if k[0] == "kube_l2tp_session_peer_silent"]
    assert silent == [1]
    kernel.stats[key] = Stats(tx_packets=200, rx_packets=1)
    agent.sample_liveness(now=base + 15)
    assert agent.peer_verdicts()["L2TPSession/site-a-1"].state is Liveness.ACTIVE
    silent = [v for k, v in scrape(metrics).items() if k[0] == "kube_l2tp_session_peer_silent"]
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


def test_served_body_passes_promtool_and_names_each_family_once(agent: Agent) -> None:
    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    metrics = build_metrics(agent, fake_dump(kernel))
    agent.reconcile_once(Trigger.START)
    kernel.stats[(3000, 1000)] = Stats(tx_packets=2**63, rx_cookie_discards=7)
    body = metrics.render()
    promtool_check_metrics(body)
    families = [f.name for f in text_string_to_metric_families(body.decode())]
    assert len(families) == len(set(families))
    got = scrape(metrics)
    session = [dict(k[1]) for k in got if k[0] == "l2tp_session_tx_packets_total"]
    assert [(s["session"], s["node"]) for s in session] == [("site-a-1", "site-a")]
    assert got[("l2tp_session_tx_packets_total", frozenset(session[0].items()))] == 2**63


def test_served_over_http_streamed_to_11_and_whole_to_10(agent: Agent) -> None:
    """Prometheus speaks HTTP/1.1 and gets the text chunked; an HTTP/1.0 client (curl --http1.0)
    gets it whole with a Content-Length. Both read the same page."""
    import http.client
    import socket

    from kube_l2tp.agent.serve import serve_metrics

    kernel = agent.kernel
    assert isinstance(kernel, CountingKernel)
    agent.reconcile_once(Trigger.START)
    server = serve_metrics(agent, "127.0.0.1:0", fake_dump(kernel))
    try:
        port = server.server_address[1]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        reply = conn.getresponse()
        assert reply.status == 200
        assert reply.getheader("Transfer-Encoding") == "chunked"
        streamed = reply.read()
        conn.request("GET", "/healthz")  # the same connection, kept alive
        assert conn.getresponse().read() == b"ok\n"
        conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        head, _, whole = raw.partition(b"\r\n\r\n")
        assert f"Content-Length: {len(whole)}".encode() in head
    finally:
        server.shutdown()
        server.server_close()
    promtool_check_metrics(streamed)

    def own(text: bytes) -> Samples:  # process_* (memory, CPU) move between two scrapes
        return {k: v for k, v in parse(text.decode()).items() if not k[0].startswith("process_")}

    assert own(streamed) == own(whole)
    sessions = [k for k in parse(whole.decode()) if k[0] == "l2tp_session_tx_packets_total"]
    assert len(sessions) == 1
