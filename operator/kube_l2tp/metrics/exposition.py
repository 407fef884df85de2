"""What /metrics answers: a prometheus_client registry's text, then the kernel's counters.

The HTTP server (agent.serve) sends these bytes; it imports no prometheus_client (an
import-linter contract keeps prometheus_client inside metrics/).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from kube_l2tp.metrics.kernel import KernelMetrics

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "new_registry"]


def new_registry() -> CollectorRegistry:
    return CollectorRegistry()


class Metrics:
    """What /metrics answers: the agent's registry, then the kernel's counters."""

    def __init__(
        self,
        registry: CollectorRegistry,
        kernel: KernelMetrics,
        refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self.registry = registry
        self.kernel = kernel
        self.refresh = refresh  # gauges read at scrape time

    def chunks(self) -> Iterator[bytes]:
        """The response in pieces; the kernel has been read once this returns."""
        self.refresh()
        return itertools.chain([generate_latest(self.registry)], self.kernel.chunks())

    def render(self) -> bytes:
        return b"".join(self.chunks())
