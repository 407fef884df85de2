"""What every kube-l2tp process exports besides its own metrics: process_* and build info.

prometheus_client's ``*_created`` series (a sample per counter and histogram carrying its start
time) are turned off for the whole process: they double the series of the kernel's counters'
neighbours and nothing here reads them.
"""

from __future__ import annotations

import prometheus_client
from prometheus_client import CollectorRegistry, Info, ProcessCollector

from kube_l2tp import buildinfo

prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]

METRIC_NAMES = frozenset(
    {
        "kube_l2tp_build_info",
        "process_cpu_seconds_total",
        "process_max_fds",
        "process_open_fds",
        "process_resident_memory_bytes",
        "process_start_time_seconds",
        "process_virtual_memory_bytes",
    }
)


def standard_collectors(registry: CollectorRegistry) -> None:
    """process_* (CPU, memory, file descriptors, start time) and kube_l2tp_build_info."""
    ProcessCollector(registry=registry)
    Info(
        "kube_l2tp_build", "The running kube-l2tp's version and source commit.", registry=registry
    ).info({"version": buildinfo.package_version(), "revision": buildinfo.revision()})
