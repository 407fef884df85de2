"""/metrics, /healthz and /readyz for the agent.

Liveness depends only on the agent's own loop (never on the API server: losing the API must not
restart a data-plane agent); readiness needs a first reconcile to have completed.

/metrics serves the agent's own metrics (metrics.agent, prometheus_client's registry) followed by
the kernel's counters of the objects it manages (metrics.kernel.KernelMetrics, text written
directly: the bulk of the response), read at scrape time through a socket of the scraping
threads' own: one tunnel dump and one session dump per scrape, counters only.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from kube_l2tp.agent.loop import Agent
from kube_l2tp.core.desired import Desired
from kube_l2tp.core.lastgood import Snapshot
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.reconcile import Result
from kube_l2tp.core.state import SessionCounters, TunnelCounters
from kube_l2tp.metrics.agent import AgentMetrics
from kube_l2tp.metrics.exposition import CONTENT_TYPE_LATEST, Metrics, new_registry
from kube_l2tp.metrics.kernel import CounterDump, KernelMetrics, Names, SessionKey
from kube_l2tp.metrics.process import standard_collectors
from kube_l2tp.netlink.l2tp import L2tp

# /healthz fails when the loop has not completed a pass for this long. A pass is at most a
# reconcile plus POLL_SECONDS; the slowest measured (4000 new pairs under emulation) is ~60 s.
HEALTH_STALE_SECONDS = 300.0


class KernelScraper:
    """Dumps for the scraping threads, on a socket the agent's loop never uses.

    Netlink sockets are not shared between threads here; the HTTP server's threads take turns on
    this one. The standalone agent process lives in one network namespace, so the socket (opened
    on first use, reopened after a failure) sees the same kernel objects as the agent.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._l2tp: L2tp | None = None

    def __call__(self) -> tuple[list[TunnelCounters], list[SessionCounters]]:
        with self._lock:
            if self._l2tp is None:
                self._l2tp = L2tp()  # KernelError(NOT_SUPPORTED) without L2TP
            try:
                return self._l2tp.dump_counters()
            except BaseException:
                self._l2tp.close()
                self._l2tp = None
                raise

    def close(self) -> None:
        with self._lock:
            if self._l2tp is not None:
                self._l2tp.close()
                self._l2tp = None


def build_metrics(
    agent: Agent, dump: CounterDump | None = None, *, per_session: bool = True
) -> Metrics:
    """The agent's /metrics: its own metrics, fed by on_result, and the kernel's counters
    (without the per-session series when ``per_session`` is off: very large nodes)."""
    registry = new_registry()
    metrics = AgentMetrics(registry, agent.config.node)
    standard_collectors(registry)

    def on_result(_snapshot: Snapshot, result: Result, seconds: float) -> None:
        metrics.observe(result, seconds, agent.trigger)

    def peers() -> dict[SessionKey, Liveness]:
        return {k: v.state for k, v in agent.liveness.verdicts().items()}

    # The agent replaces its Desired on every reconcile and never changes one: one Names each.
    last: tuple[Desired | None, Names] = (None, Names())

    def names() -> Names:
        nonlocal last
        desired = agent.desired
        if last[0] is not desired:
            last = (desired, Names.of(desired))
        return last[1]

    agent.on_result.append(on_result)
    kernel = KernelMetrics(
        agent.config.node,
        dump if dump is not None else KernelScraper(),
        names,
        peers,
        per_session=per_session,
    )

    def refresh() -> None:
        connected = agent.source.api_connected()
        if connected is not None:  # standalone: no API, no series
            metrics.set_api_connected(connected)

    return Metrics(registry, kernel, refresh)


class _Server(ThreadingHTTPServer):
    """A listen backlog for a burst of scrapes and probes (the default of 5 dropped a third of a
    thousand simultaneous connections and made 200 wait for SYN retries, 30 s)."""

    request_queue_size = 1024  # the kernel caps it at net.core.somaxconn
    daemon_threads = True


def serve_metrics(
    agent: Agent,
    address: str,
    dump: CounterDump | None = None,
    *,
    stale_after: float = HEALTH_STALE_SECONDS,
    per_session: bool = True,
) -> ThreadingHTTPServer:
    """Serve /metrics, /healthz and /readyz on ``address`` from a thread of their own.

    /healthz fails once the agent's loop has not completed a pass for ``stale_after`` seconds (a
    hung kernel call, a parse that never ends): the kubelet then restarts the agent. It reads
    only the loop's heartbeat, never the API server.
    """
    host, _, port = address.rpartition(":")
    metrics = build_metrics(agent, dump, per_session=per_session)
    state = {"ready": False}

    def on_result(_snapshot: Snapshot, _result: Result, _seconds: float) -> None:
        state["ready"] = True

    agent.on_result.append(on_result)

    def health() -> tuple[int, bytes]:
        age = time.monotonic() - agent.heartbeat
        if age > stale_after:
            return (
                503,
                f"agent loop stuck: no pass for {age:.0f}s (bound {stale_after:.0f}s)\n".encode(),
            )
        return 200, b"ok\n"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked /metrics; every other reply has a Content-Length
        timeout = 120  # an idle kept-alive connection gives its thread back

        def do_GET(self) -> None:
            self._route(head=False)

        def do_HEAD(self) -> None:
            self._route(head=True)

        def _route(self, head: bool) -> None:
            path = urlsplit(self.path).path  # a query string (?x=1) names the same page
            if path == "/metrics":
                if head:  # what a GET would answer, without reading the kernel
                    self._reply(200, b"", CONTENT_TYPE_LATEST, head=True)
                else:
                    self._metrics()
            elif path == "/healthz":
                self._reply(*health(), head=head)
            elif path == "/readyz":
                ok = bool(state["ready"])
                body = b"ok\n" if ok else b"not reconciled yet\n"
                self._reply(200 if ok else 503, body, head=head)
            else:
                self._reply(404, b"not found\n", head=head)

        def _reply(
            self, code: int, body: bytes, ctype: str = "text/plain", head: bool = False
        ) -> None:
            try:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                if not head:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the scraper gave up (timeout): nothing to tell it

        def _gzip(self) -> bool:
            accept = self.headers.get("Accept-Encoding", "")
            return any(
                part.split(";")[0].strip().lower() == "gzip" and not part.endswith("q=0")
                for part in accept.split(",")
            )

        def _metrics(self) -> None:
            """Streamed in chunks to an HTTP/1.1 client (Prometheus is one): 4000 sessions are 8 MB
            of text, which the agent would otherwise hold whole, once more than its target of 80 MB
            resident allows. A failure half way ends the connection without the last chunk, so the
            scrape fails rather than reading as a short, valid page. Compressed (gzip, a stream
            over the chunks) when the client asks, as Prometheus does: about 10x fewer bytes."""
            pieces: Iterator[bytes] = metrics.chunks()
            gzip = self._gzip()
            if gzip:
                pieces = _gzipped(pieces)
            if self.request_version != "HTTP/1.1":
                body = b"".join(pieces)
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                    if gzip:
                        self.send_header("Content-Encoding", "gzip")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                if gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for piece in pieces:
                    if piece:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _Server((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _gzipped(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """One gzip stream over the pieces, flushed per piece so memory stays one piece's worth."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    for piece in pieces:
        yield z.compress(piece) + z.flush(zlib.Z_SYNC_FLUSH)
    yield z.flush()
