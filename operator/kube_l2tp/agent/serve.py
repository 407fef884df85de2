"""/metrics, /healthz and /readyz for the agent.

Liveness depends only on the agent's own loop (never on the API server: losing the API must not
restart a data-plane agent); readiness needs a first reconcile to have completed.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kube_l2tp.agent.source import Snapshot
from kube_l2tp.agent.standalone import Agent
from kube_l2tp.core.reconcile import Result
from kube_l2tp.metrics.agent import AgentMetrics

DEFAULT_PORT = 9717


def serve_metrics(agent: Agent, address: str) -> ThreadingHTTPServer:
    host, _, port = address.rpartition(":")
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, agent.config.node)
    state = {"ready": False}

    def on_result(_snapshot: Snapshot, result: Result, seconds: float) -> None:
        metrics.observe(result, seconds)
        state["ready"] = True

    agent.on_result.append(on_result)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                self._reply(200, b"ok\n")
            elif self.path == "/readyz":
                ok = bool(state["ready"])
                self._reply(200 if ok else 503, b"ok\n" if ok else b"not reconciled yet\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
