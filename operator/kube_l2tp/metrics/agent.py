"""The agent's own metrics (kube_l2tp_*): reconcile health and what it manages.

The kernel's counters, L2TP support and peer liveness are read at scrape time by
metrics.kernel.KernelMetrics; this module holds what the agent's loop records.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kube_l2tp.core.reconcile import Result
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.metrics import process

METRIC_NAMES = (
    frozenset(
        {
            "kube_l2tp_reconcile_total",
            "kube_l2tp_reconcile_errors_total",
            "kube_l2tp_reconcile_duration_seconds_bucket",
            "kube_l2tp_reconcile_duration_seconds_sum",
            "kube_l2tp_reconcile_duration_seconds_count",
            "kube_l2tp_kernel_writes_total",
            "kube_l2tp_drift_repairs_total",
            "kube_l2tp_managed_objects",
            "kube_l2tp_agent_ready",
            "kube_l2tp_api_connected",
            "kube_l2tp_object_not_ready",
        }
    )
    | process.METRIC_NAMES
)


class AgentMetrics:
    def __init__(self, registry: CollectorRegistry, node: str) -> None:
        self.reconciles = Counter(
            "kube_l2tp_reconcile", "Reconciles run.", ["node"], registry=registry
        ).labels(node)
        self.errors = Counter(
            "kube_l2tp_reconcile_errors",
            "Reconciles that left at least one object not ready.",
            ["node"],
            registry=registry,
        ).labels(node)
        self.duration = Histogram(
            "kube_l2tp_reconcile_duration_seconds",
            "Time to observe, plan and apply.",
            ["node"],
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ).labels(node)
        self.writes = Counter(
            "kube_l2tp_kernel_writes", "Kernel write requests made.", ["node"], registry=registry
        ).labels(node)
        self.drift_repairs = Counter(
            "kube_l2tp_drift_repairs",
            "Kernel writes made by reconciles triggered by a kernel event or the periodic resync"
            " (not by a change of the declared state): repairs of drift and tampering.",
            ["node"],
            registry=registry,
        ).labels(node)
        self.ready = Gauge(
            "kube_l2tp_agent_ready",
            "1 once the agent has completed its first reconcile (what /readyz says).",
            ["node"],
            registry=registry,
        ).labels(node)
        self.api_connected = Gauge(
            "kube_l2tp_api_connected",
            "1 while the agent's watch on the Kubernetes API is connected"
            " (absent in the standalone agent, which has no API).",
            ["node"],
            registry=registry,
        )
        self.objects = Gauge(
            "kube_l2tp_managed_objects",
            "Declared objects for this node, by kind and readiness.",
            ["node", "kind", "ready"],
            registry=registry,
        )
        # One series per object that is not Ready now, with its reason: as many series as
        # failing objects (none on a healthy node), for "what is broken right now" tables.
        self.not_ready = Gauge(
            "kube_l2tp_object_not_ready",
            "1 for each declared object that is not Ready after the last reconcile, with why.",
            ["node", "kind", "name", "reason"],
            registry=registry,
        )
        self.node = node

    def set_api_connected(self, connected: bool) -> None:
        """For the Kubernetes layer; never called standalone, so the series stays absent."""
        self.api_connected.labels(self.node).set(1 if connected else 0)

    def observe(self, result: Result, seconds: float, trigger: Trigger = Trigger.START) -> None:
        """One reconcile; ``trigger`` is why the agent ran it (Trigger.repairs_drift)."""
        self.reconciles.inc()
        self.ready.set(1)
        if trigger.repairs_drift:
            self.drift_repairs.inc(result.writes)
        self.duration.observe(seconds)
        self.writes.inc(result.writes)
        if not result.converged:
            self.errors.inc()
        counts: dict[tuple[str, str], int] = {
            (k, r): 0 for k in ("L2TPTunnel", "L2TPSession") for r in ("true", "false")
        }
        self.not_ready.clear()
        for r in result.results.values():
            kind, _, name = r.subject.partition("/")
            counts[(kind, "true" if r.ready else "false")] += 1
            if not r.ready:
                self.not_ready.labels(self.node, kind, name, r.reason).set(1)
        for (kind, ready), n in counts.items():
            self.objects.labels(self.node, kind, ready).set(n)
