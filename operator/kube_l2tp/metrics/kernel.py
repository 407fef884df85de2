"""The kernel's L2TP counters as Prometheus counters, read at scrape time.

Every scrape makes one tunnel dump and one session dump through a callable the agent injects
(this layer does not talk to the kernel), and exports only the objects the agent manages, named
after their resources. The kernel's counters are monotonic for the life of a session, so they are
exported as counters (``*_total``); a re-created session starts again from zero, which ``rate()``
handles as a counter reset.

The same scrape exports ``kube_l2tp_kernel_l2tp_supported`` (whether the dump worked) and
``kube_l2tp_session_peer_silent`` (the liveness verdict, core.liveness) with the session labels.

Two renderings of the same samples: :class:`KernelMetrics`, what the agent serves, writes the
exposition text itself (a thousand sessions are 20,000 samples; prometheus_client's families
spend ~10 us on each, which is 2.6 s a scrape under TCG), and :class:`KernelCollector`, the
prometheus_client collector it is tested against, for any registry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kube_l2tp.core.desired import Desired
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import (
    STATS_FIELDS,
    Counters,
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionCounters,
    Stats,
    TunnelCounters,
)

log = logging.getLogger("kube_l2tp.metrics")

Dump = Callable[[], tuple[list[ObservedTunnel], list[ObservedSession]]]
CounterDump = Callable[[], tuple[list[TunnelCounters], list[SessionCounters]]]
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
    """Every sample name this module can export (for the dashboard and rules checks)."""
    names = {f"l2tp_session_{name}_total" for _, name, _ in COUNTERS}
    names |= {f"l2tp_tunnel_{name}_total" for _, name, _ in COUNTERS + TUNNEL_ONLY}
    return names | {SUPPORTED, PEER_SILENT}


class KernelCollector(Collector):
    """prometheus_client's rendering of the kernel's samples: the reference KernelMetrics is
    tested against, for any registry. Register once; ``dump`` is called from the scraping
    thread (give it its own socket)."""

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


# --- the exposition text, written directly ---------------------------------------------------


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _header(name: str, doc: str, kind: str) -> str:
    """HELP and TYPE lines as prometheus_client writes them (HELP escapes \\ and newline)."""
    doc = doc.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


# (HELP+TYPE, sample name, index in a Counters tuple), in KernelCollector's order
_TUNNEL_FAMILIES: Final = tuple(
    (
        _header(f"l2tp_tunnel_{name}_total", f"{doc} (tunnel).", "counter"),
        f"l2tp_tunnel_{name}_total",
        STATS_FIELDS.index(attr),
    )
    for attr, name, doc in COUNTERS + TUNNEL_ONLY
)
_SESSION_FAMILIES: Final = tuple(
    (
        _header(f"l2tp_session_{name}_total", f"{doc} (session).", "counter"),
        f"l2tp_session_{name}_total",
        STATS_FIELDS.index(attr),
    )
    for attr, name, doc in COUNTERS
)
_SUPPORTED_HEADER: Final = _header(
    SUPPORTED, "1 if the kernel's L2TP netlink family answered this scrape.", "gauge"
)
_SILENT_HEADER: Final = _header(
    PEER_SILENT,
    "1 if the session sent packets and received none over the peer silence window.",
    "gauge",
)


class KernelMetrics:
    """The same samples as KernelCollector, as exposition text, one dump per :meth:`render`.

    Per managed object the label set is written once (labels sorted by name, as prometheus_client
    sorts them) and kept while the object keeps its ids, names and interface. From the list of
    label sets each family gets a bytes template with one ``%d`` per object, kept while the list
    stays the same (a scrape finds the same objects in the same order as the last), so a scrape
    formats each family in one ``template % values``: no string per sample, and little memory to
    allocate and touch (what costs under TCG). Values are the kernel's integers, exactly. An
    object that a dump repeats (it changed under an interrupted dump) is exported once: twice
    would make Prometheus reject the whole scrape. Thread-safe: each render works on its own
    data and replaces the caches whole.
    """

    def __init__(
        self,
        node: str,
        dump: CounterDump,
        names: Callable[[], Names],
        peers: Callable[[], Mapping[SessionKey, Liveness]] = dict,
    ) -> None:
        self.node = node
        self.dump = dump
        self.names = names
        self.peers = peers
        self._node = f'node="{escape(node)}"'
        self._tunnel_labels: dict[int, tuple[str, str]] = {}
        self._session_labels: dict[SessionKey, tuple[tuple[str, str], str | None, str]] = {}
        self._tunnel_block = _Block([], _TUNNEL_FAMILIES)
        self._session_block = _Block([], _SESSION_FAMILIES + _SILENT_FAMILY)

    def render(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> list[bytes]:
        """The text in pieces (a family each), to be joined or written as they are."""
        names = self.names()
        node = self._node
        try:
            tunnels, sessions = self.dump()
        except KernelError as exc:
            if exc.outcome is not Outcome.NOT_SUPPORTED:
                log.warning("kernel counters not scraped: %s", exc)
            up = 0 if exc.outcome is Outcome.NOT_SUPPORTED else 1
            return [f"{_SUPPORTED_HEADER}{SUPPORTED}{{{node}}} {up}\n".encode()]
        out = [f"{_SUPPORTED_HEADER}{SUPPORTED}{{{node}}} 1\n".encode()]

        known_tunnels, fresh_tunnels = self._tunnel_labels, {}
        labels: list[str] = []
        rows: list[Counters] = []
        for tid, counters in tunnels:
            tname = names.tunnels.get(tid)
            if tname is None or tid in fresh_tunnels:
                continue  # not ours, or repeated
            cached = known_tunnels.get(tid)
            if cached is None or cached[0] != tname:
                cached = (tname, _percent(f'{{{node},tunnel="{escape(tname)}",tunnel_id="{tid}"}}'))
            fresh_tunnels[tid] = cached
            labels.append(cached[1])
            rows.append(counters)
        self._tunnel_labels = fresh_tunnels
        block = self._tunnel_block = self._tunnel_block.over(labels)
        out += block.format(list(zip(*rows, strict=True)) if rows else [()] * len(STATS_FIELDS))

        known, fresh = self._session_labels, {}
        labels, rows, keys = [], [], []
        for tid, sid, ifname, counters in sessions:
            key = (tid, sid)
            named = names.sessions.get(key)
            if named is None or key in fresh:
                continue
            cached_s = known.get(key)
            if cached_s is None or cached_s[0] != named or cached_s[1] != ifname:
                text = (
                    f'{{interface="{escape(ifname or "")}",{node},session="{escape(named[1])}",'
                    f'session_id="{sid}",tunnel="{escape(named[0])}",tunnel_id="{tid}"}}'
                )
                cached_s = (named, ifname, _percent(text))
            fresh[key] = cached_s
            labels.append(cached_s[2])
            rows.append(counters)
            keys.append(key)
        self._session_labels = fresh
        verdicts = self.peers()
        silent = Liveness.SILENT
        columns: list[tuple[int, ...]] = (
            list(zip(*rows, strict=True)) if rows else [()] * len(STATS_FIELDS)
        )
        columns.append(tuple([1 if verdicts.get(key) is silent else 0 for key in keys]))
        block = self._session_block = self._session_block.over(labels)
        out += block.format(columns)
        return out


def _percent(text: str) -> str:
    """``text`` as literal text of a %-template."""
    return text.replace("%", "%%")


# the peer verdict gauge takes its values from the column after the counters
_SILENT_FAMILY: Final = ((_SILENT_HEADER, PEER_SILENT, len(STATS_FIELDS)),)


class _Block:
    """The families of one kind of object (tunnels, sessions) as %-templates for one list of
    label sets: a family's text is ``template % column``, its values in the labels' order."""

    def __init__(self, labels: list[str], families: tuple[tuple[str, str, int], ...]) -> None:
        self.labels = labels
        self.families = families
        # name + label_0 + " %d\n" + name + label_1 + " %d\n" ...: one join per family
        self.templates = [
            (
                _percent(header) + (name + f" %d\n{name}".join(labels) + " %d\n" if labels else "")
            ).encode()
            for header, name, _ in families
        ]
        self.columns = [index for _, _, index in families]

    def over(self, labels: list[str]) -> _Block:
        """This block if it was made for ``labels`` (the same objects in the same order), else a
        new one."""
        return self if labels == self.labels else _Block(labels, self.families)

    def format(self, columns: list[tuple[int, ...]]) -> list[bytes]:
        return [
            template % columns[index]
            for template, index in zip(self.templates, self.columns, strict=True)
        ]
