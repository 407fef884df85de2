"""The agent's HTTP server (agent.serve) answered over real sockets on loopback: a burst of
connections, HEAD, query strings, gzip, the process and build series, and /healthz following the
agent's loop (a loop stuck in a kernel call turns it 503, and back to 200 once it moves)."""

from __future__ import annotations

import gzip
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from pathlib import Path

import pytest
from fakekernel import FakeKernel
from prometheus_client.parser import text_string_to_metric_families

from kube_l2tp import buildinfo, embedded
from kube_l2tp.agent.loop import Agent, AgentConfig, no_events
from kube_l2tp.agent.serve import serve_metrics
from kube_l2tp.agent.standalone import standalone_agent
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.state import ObservedTunnel
from kube_l2tp.core.triggers import Trigger


class BlockingKernel(FakeKernel):
    """A kernel whose tunnel dump waits while ``gate`` is clear: a hung netlink call."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def dump_tunnels(self) -> list[ObservedTunnel]:
        self.gate.wait()
        return super().dump_tunnels()


@pytest.fixture
def agent(tmp_path: Path) -> Agent:
    config = AgentConfig("site-a", embedded.DIRECTORY, tmp_path / "state", resync_seconds=0.05)
    return standalone_agent(config, BlockingKernel(), StateStore(tmp_path / "state"), no_events)


@pytest.fixture
def port(agent: Agent) -> Iterator[int]:
    server = serve_metrics(agent, "127.0.0.1:0", lambda: ([], []))
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def get(port: int, path: str, method: str = "GET", **headers: str) -> tuple[int, dict, bytes]:  # type: ignore[type-arg]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        reply = conn.getresponse()
        return reply.status, dict(reply.getheaders()), reply.read()
    finally:
        conn.close()


def test_a_thousand_simultaneous_connections_are_all_answered(agent: Agent, port: int) -> None:
    """All connect at once; the default backlog of 5 dropped a third of them."""
    agent.reconcile_once(Trigger.START)
    n = 1000

    def probe(_: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
            sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            raw = b""
            while chunk := sock.recv(4096):
                raw += chunk
            return raw

    socks = []
    try:  # a thousand connections opened before any is read: the listen queue holds them
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(probe, range(200)))
        assert all(a.startswith(b"HTTP/1.1 200") for a in answers), {a[:60] for a in answers}
        served = 0
        for s in socks:
            s.setblocking(True)
            s.settimeout(20)
            s.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
        for s in socks:
            if s.recv(64).startswith(b"HTTP/1.1 200"):
                served += 1
        assert served == n
    finally:
        for s in socks:
            s.close()


def test_head_and_query_strings(agent: Agent, port: int) -> None:
    agent.reconcile_once(Trigger.START)
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _, body = get(port, path, "HEAD")
        assert (status, body) == (200, b""), path
        assert get(port, path + "?debug=1&x")[0] == 200, path
    assert get(port, "/metrics", "HEAD")[1]["Content-Type"].startswith("text/plain; version=")
    assert get(port, "/nothing?x=1", "HEAD")[0] == 404


def test_gzip_when_asked_and_the_same_page(agent: Agent, port: int) -> None:
    agent.reconcile_once(Trigger.START)
    _, plain_headers, plain = get(port, "/metrics")
    status, headers, packed = get(port, "/metrics", **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert "Content-Encoding" not in plain_headers

    def families(text: bytes) -> dict[str, int]:
        return {
            f.name: len(f.samples)
            for f in text_string_to_metric_families(text.decode())
            if not f.name.startswith("process_")
        }

    assert families(gzip.decompress(packed)) == families(plain)


def test_process_and_build_info_and_no_created_series(agent: Agent, port: int) -> None:
    agent.reconcile_once(Trigger.START)
    page = get(port, "/metrics")[2].decode()
    families = {f.name: f for f in text_string_to_metric_families(page)}
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    (info,) = families["kube_l2tp_build_info"].samples
    assert info.name == "kube_l2tp_build_info" and info.value == 1
    assert info.labels == {
        "version": buildinfo.package_version(),
        "revision": buildinfo.revision(),
    }
    assert not [line for line in page.splitlines() if "_created" in line.split(" ")[0]]


def test_per_session_series_can_be_turned_off(tmp_path: Path) -> None:
    from kube_l2tp.agent.serve import build_metrics

    config = AgentConfig("site-a", embedded.DIRECTORY, tmp_path / "state")
    kernel = FakeKernel()
    a = standalone_agent(config, kernel, StateStore(tmp_path / "state"), no_events)
    a.reconcile_once(Trigger.START)

    def dump() -> tuple[list, list]:  # type: ignore[type-arg]
        tunnels = [(t.config.tunnel_id, astuple(t.stats)) for t in kernel.dump_tunnels()]
        sessions = [
            (s.config.tunnel_id, s.config.session_id, s.config.ifname, astuple(s.stats))
            for s in kernel.dump_sessions()
        ]
        return tunnels, sessions

    def series(per_session: bool) -> set[str]:
        text = build_metrics(a, dump, per_session=per_session).render().decode()
        return {
            s.name
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("l2tp_")
        }

    on, off = series(True), series(False)
    assert {n for n in on if n.startswith("l2tp_session_")}
    assert not {n for n in off if n.startswith("l2tp_session_")}
    assert {n for n in off if n.startswith("l2tp_tunnel_")} == {
        n for n in on if n.startswith("l2tp_tunnel_")
    }


def test_healthz_follows_the_loop_a_stuck_kernel_call_fails_it(
    agent: Agent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The loop runs for real (its resync every 50 ms); a dump that hangs stops its passes."""
    server = serve_metrics(agent, "127.0.0.1:0", lambda: ([], []), stale_after=0.5)
    port = server.server_address[1]
    kernel = agent.kernel
    assert isinstance(kernel, BlockingKernel)
    loop = threading.Thread(target=agent.run, daemon=True)
    loop.start()
    try:
        time.sleep(1.0)  # twice the bound: passes keep it fresh
        assert get(port, "/healthz")[:3:2] == (200, b"ok\n")
        kernel.gate.clear()  # the next reconcile's dump hangs
        deadline = time.monotonic() + 10
        while (answer := get(port, "/healthz"))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer[0] == 503 and b"agent loop stuck" in answer[2]
        assert get(port, "/readyz")[0] == 200  # readiness says nothing about this
        kernel.gate.set()
        deadline = time.monotonic() + 10
        while (answer := get(port, "/healthz"))[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert answer[0] == 200
    finally:
        agent.stop.set()
        kernel.gate.set()
        agent.wake()
        loop.join(10)
        server.shutdown()
        server.server_close()


def test_objects_not_ready_are_one_series_each_with_the_reason_and_go_when_ready() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from kube_l2tp.core.reconcile import ObjectResult, Result
    from kube_l2tp.metrics.agent import AgentMetrics

    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, "site-a")

    def not_ready() -> set[tuple[str, ...]]:
        return {
            (s.labels["kind"], s.labels["name"], s.labels["reason"])
            for f in text_string_to_metric_families(generate_latest(registry).decode())
            for s in f.samples
            if s.name == "kube_l2tp_object_not_ready" and s.value == 1
        }

    def result(*objects: ObjectResult) -> Result:
        return Result(results={o.subject: o for o in objects})

    tunnel = ObjectResult("L2TPTunnel/site-a", True, Reason.PROGRAMMED, "")
    broken = ObjectResult("L2TPSession/site-a-1", False, Reason.CONFLICT, "id taken")
    metrics.observe(result(tunnel, broken), 0.01)
    assert not_ready() == {("L2TPSession", "site-a-1", "Conflict")}
    metrics.observe(
        result(tunnel, ObjectResult("L2TPSession/site-a-1", True, Reason.PROGRAMMED, "")), 0.01
    )
    assert not_ready() == set()
