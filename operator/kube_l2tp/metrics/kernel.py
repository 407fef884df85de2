"""The kernel's L2TP counters as Prometheus counters, read at scrape time.

A custom collector: every scrape makes one tunnel dump and one session dump through a callable
the agent injects (this layer does not talk to the kernel), and exports only the objects the
agent manages, named after their resources. The kernel's counters are monotonic for the life of
a session, so they are exported as counters (``*_total``); a re-created session starts again
from zero, which ``rate()`` handles as a counter reset.

The same collector exports ``kube_l2tp_kernel_l2tp_supported`` (whether the dump worked) and
``kube_l2tp_session_peer_silent`` (the liveness verdict, core.liveness) with the session labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kube_l2tp.core.desired import Desired
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import KernelError, ObservedSession, ObservedTunnel, Outcome, Stats

log = logging.getLogger("kube_l2tp.metrics")

Dump = Callable[[], tuple[list[ObservedTunnel], list[ObservedSession]]]
SessionKey = tuple[int, int]  # (tunnel_id, session_id)

SESSION_LABELS = ("tunnel", "session", "tunnel_id", "session_id", "interface", "node")
TUNNEL_LABELS = ("tunnel", "tunnel_id", "node")

# (Stats field, metric name without the prefix and _total, help). Order is the exposition order.
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("tx_packets", "tx_packets", "Packets sent"),
    ("tx_bytes", "tx_bytes", "Bytes sent"),
    ("tx_errors", "tx_errors", "Packets that could not be sent"),
    ("rx_packets", "rx_packets", "Packets received"),
    ("rx_bytes", "rx_bytes", "Bytes received"),
    ("rx_errors", "rx_errors", "Received packets dropped (e.g. the interface was down)"),
    (
        "rx_seq_discards",
        "rx_seq_discards",
        "Received packets dropped by sequence number checks (recv sequencing)",
    ),
    ("rx_oos_packets", "rx_oos_packets", "Received packets out of sequence"),
    (
        "rx_cookie_discards",
        "rx_cookie_discards",
        "Received packets dropped because their cookie did not match (cookie mismatch)",
    ),
)
TUNNEL_ONLY: tuple[tuple[str, str, str], ...] = (
    ("rx_invalid", "rx_invalid", "Received packets with an invalid header or unknown session"),
)

SUPPORTED = "kube_l2tp_kernel_l2tp_supported"
PEER_SILENT = "kube_l2tp_session_peer_silent"


@dataclass(frozen=True)
class Names:
    """Which kernel objects the agent manages, and their resource names, keyed by kernel ids."""

    tunnels: Mapping[int, str] = field(default_factory=dict)
    sessions: Mapping[SessionKey, tuple[str, str]] = field(default_factory=dict)  # (tunnel, name)

    @classmethod
    def of(cls, desired: Desired | None) -> Names:
        if desired is None:
            return cls()
        return cls(
            {tid: t.name for tid, t in desired.tunnels.items()},
            {key: (s.tunnel, s.name) for key, s in desired.sessions.items()},
        )


def metric_names() -> set[str]:
    """Every sample name this collector can export (for the dashboard and rules checks)."""
    names = {f"l2tp_session_{name}_total" for _, name, _ in COUNTERS}
    names |= {f"l2tp_tunnel_{name}_total" for _, name, _ in COUNTERS + TUNNEL_ONLY}
    return names | {SUPPORTED, PEER_SILENT}


class KernelCollector(Collector):
    """Register once; ``dump`` is called from the scraping thread (give it its own socket)."""

    def __init__(
        self,
        node: str,
        dump: Dump,
        names: Callable[[], Names],
        peers: Callable[[], Mapping[SessionKey, Liveness]] = dict,
    ) -> None:
        self.node = node
        self.dump = dump
        self.names = names
        self.peers = peers

    def describe(self) -> Iterator[Metric]:
        """Declared names, so registering does not scrape (and duplicate names are caught)."""
        tunnels, sessions, silent = self._families()
        yield _supported()
        yield from tunnels.values()
        yield from sessions.values()
        yield silent

    def collect(self) -> Iterator[Metric]:
        names = self.names()
        supported = _supported()
        try:
            tunnels, sessions = self.dump()
        except KernelError as exc:
            # No L2TP: say so. Any other failure: no counters this scrape (a gap, not a zero).
            if exc.outcome is not Outcome.NOT_SUPPORTED:
                log.warning("kernel counters not scraped: %s", exc)
            supported.add_metric([self.node], 0 if exc.outcome is Outcome.NOT_SUPPORTED else 1)
            yield supported
            return
        supported.add_metric([self.node], 1)
        yield supported
        tunnel_families, session_families, silent = self._families()
        node = self.node
        for t in tunnels:
            tid = t.config.tunnel_id
            tname = names.tunnels.get(tid)
            if tname is None:
                continue  # not ours
            _add(tunnel_families, t.stats, [tname, str(tid), node])
        verdicts = self.peers()
        for s in sessions:
            key = (s.config.tunnel_id, s.config.session_id)
            named = names.sessions.get(key)
            if named is None:
                continue
            labels = [named[0], named[1], str(key[0]), str(key[1]), s.config.ifname or "", node]
            _add(session_families, s.stats, labels)
            silent.add_metric(labels, 1 if verdicts.get(key) is Liveness.SILENT else 0)
        yield from tunnel_families.values()
        yield from session_families.values()
        yield silent

    def _families(
        self,
    ) -> tuple[dict[str, CounterMetricFamily], dict[str, CounterMetricFamily], GaugeMetricFamily]:
        tunnels = {
            attr: CounterMetricFamily(
                f"l2tp_tunnel_{name}", f"{doc} (tunnel).", labels=TUNNEL_LABELS
            )
            for attr, name, doc in COUNTERS + TUNNEL_ONLY
        }
        sessions = {
            attr: CounterMetricFamily(
                f"l2tp_session_{name}", f"{doc} (session).", labels=SESSION_LABELS
            )
            for attr, name, doc in COUNTERS
        }
        silent = GaugeMetricFamily(
            PEER_SILENT,
            "1 if the session sent packets and received none over the peer silence window.",
            labels=SESSION_LABELS,
        )
        return tunnels, sessions, silent


def _supported() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        SUPPORTED, "1 if the kernel's L2TP netlink family answered this scrape.", labels=["node"]
    )


def _add(families: Mapping[str, CounterMetricFamily], stats: Stats, labels: list[str]) -> None:
    for attr, family in families.items():
        family.add_metric(labels, getattr(stats, attr))
