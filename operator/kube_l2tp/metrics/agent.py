"""The agent's own metrics (kube_l2tp_*): reconcile health and what it manages."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from kube_l2tp.core.reconcile import Result


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
        self.objects = Gauge(
            "kube_l2tp_managed_objects",
            "Declared objects for this node, by kind and readiness.",
            ["node", "kind", "ready"],
            registry=registry,
        )
        self.node = node

    def observe(self, result: Result, seconds: float) -> None:
        self.reconciles.inc()
        self.duration.observe(seconds)
        self.writes.inc(result.writes)
        if not result.converged:
            self.errors.inc()
        counts: dict[tuple[str, str], int] = {
            (k, r): 0 for k in ("L2TPTunnel", "L2TPSession") for r in ("true", "false")
        }
        for r in result.results.values():
            kind = r.subject.split("/", 1)[0]
            counts[(kind, "true" if r.ready else "false")] += 1
        for (kind, ready), n in counts.items():
            self.objects.labels(self.node, kind, ready).set(n)
