"""prometheus_client's rendering of the kernel's samples: the reference the unit tests and the
scrape benchmark hold metrics.kernel.KernelMetrics (the text the agent writes itself) against."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import KernelError, ObservedSession, ObservedTunnel, Outcome, Stats
from kube_l2tp.metrics.kernel import (
    COUNTERS,
    PEER_SILENT,
    PEER_SILENT_HELP,
    SESSION_LABELS,
    SUPPORTED,
    SUPPORTED_HELP,
    TUNNEL_LABELS,
    TUNNEL_ONLY,
    Names,
    SessionKey,
)

log = logging.getLogger("kube_l2tp.metrics")

Dump = Callable[[], tuple[list[ObservedTunnel], list[ObservedSession]]]


class KernelCollector(Collector):
    """prometheus_client's rendering of the kernel's samples, for any registry. Register once;
    ``dump`` is called from the scraping thread (give it its own socket)."""

    def __init__(
        self,
        node: str,
        dump: Dump,
        names: Callable[[], Names],
        peers: Callable[[], Mapping[SessionKey, Liveness]] = dict,
        *,
        per_session: bool = True,
    ) -> None:
        self.node = node
        self.per_session = per_session  # off: no per-session series (tunnels' stay)
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
        silent = GaugeMetricFamily(PEER_SILENT, PEER_SILENT_HELP, labels=SESSION_LABELS)
        return tunnels, sessions, silent


def _supported() -> GaugeMetricFamily:
    return GaugeMetricFamily(SUPPORTED, SUPPORTED_HELP, labels=["node"])


def _add(families: Mapping[str, CounterMetricFamily], stats: Stats, labels: list[str]) -> None:
    for attr, family in families.items():
        family.add_metric(labels, getattr(stats, attr))
