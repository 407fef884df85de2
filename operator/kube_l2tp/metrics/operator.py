"""The operator's own metrics (kube_l2tp_operator_*): its admission webhooks and kopf's handlers.

Webhook requests are counted by verdict and timed around kopf's own processing of each review
(controller.app wraps the function kopf gives its webhook server); handler errors are counted from
the records kopf logs when a handler fails (it has no hook of its own for that).
"""

from __future__ import annotations

import logging
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from kube_l2tp.metrics.process import standard_collectors

METRIC_NAMES = frozenset(
    {
        "kube_l2tp_operator_webhook_requests_total",
        "kube_l2tp_operator_webhook_duration_seconds_bucket",
        "kube_l2tp_operator_webhook_duration_seconds_sum",
        "kube_l2tp_operator_webhook_duration_seconds_count",
        "kube_l2tp_operator_handler_errors_total",
        "kube_l2tp_operator_leader",
    }
)
_HANDLER = re.compile(r"^Handler '([^']+)' failed")


class OperatorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        standard_collectors(self.registry)
        self.requests = Counter(
            "kube_l2tp_operator_webhook_requests",
            "Admission reviews answered, by webhook and verdict (allowed, denied, error).",
            ["webhook", "verdict"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "kube_l2tp_operator_webhook_duration_seconds",
            "Time from a review's arrival to its answer.",
            ["webhook"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.handler_errors = Counter(
            "kube_l2tp_operator_handler_errors",
            "Failures of the operator's kopf handlers (status, cleanup), by handler.",
            ["handler"],
            registry=self.registry,
        )

        self.leader = Gauge(
            "kube_l2tp_operator_leader",
            "1 while this replica holds the Lease and writes (status, finalizers, Events); every"
            " replica answers admission reviews.",
            registry=self.registry,
        )

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        """Serve this registry on ``port`` (prometheus_client's own thread)."""
        start_http_server(port, addr=addr, registry=self.registry)

    def observe(self, webhook: str, verdict: str, seconds: float) -> None:
        self.requests.labels(webhook, verdict).inc()
        self.duration.labels(webhook).observe(seconds)

    def log_handler(self) -> logging.Handler:
        """A logging handler counting kopf's "Handler 'x' failed ..." records."""
        metrics = self

        class _Counting(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if record.levelno < logging.ERROR:
                    return
                match = _HANDLER.match(record.getMessage())
                if match:
                    metrics.handler_errors.labels(match.group(1)).inc()

        return _Counting(logging.ERROR)
