"""The kernel's L2TP counters as Prometheus counters, read at scrape time.

Every scrape makes one tunnel dump and one session dump through a callable the agent injects
(this layer does not talk to the kernel), and exports only the objects the agent manages, named
after their resources. The kernel's counters are monotonic for the life of a session, so they are
exported as counters (``*_total``); a re-created session starts again from zero, which ``rate()``
handles as a counter reset.

The same scrape exports ``kube_l2tp_kernel_l2tp_supported`` (whether the dump worked) and
``kube_l2tp_session_peer_silent`` (the liveness verdict, core.liveness) with the session labels.

:class:`KernelMetrics` writes the exposition text itself: a thousand sessions are 20,000 samples,
too many for prometheus_client's families at every scrape (BENCHMARKS.md). The tests hold it
against a prometheus_client collector of the same samples (tests/support/oracles_metrics.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from kube_l2tp.core.desired import Desired
from kube_l2tp.core.liveness import Liveness
from kube_l2tp.core.state import (
    STATS_FIELDS,
    Counters,
    KernelError,
    Outcome,
    SessionCounters,
    TunnelCounters,
)

log = logging.getLogger("kube_l2tp.metrics")

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
SUPPORTED_HELP = "1 if the kernel's L2TP netlink family answered this scrape."
PEER_SILENT = "kube_l2tp_session_peer_silent"
PEER_SILENT_HELP = "1 if the session sent packets and received none over the peer silence window."


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


# (HELP+TYPE, sample name, index in a Counters tuple), in exposition order
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
_SUPPORTED_HEADER: Final = _header(SUPPORTED, SUPPORTED_HELP, "gauge")
_SILENT_HEADER: Final = _header(PEER_SILENT, PEER_SILENT_HELP, "gauge")


class KernelMetrics:
    """The kernel's samples as exposition text, one dump per :meth:`chunks`.

    Per managed object the label set is written once (labels sorted by name, as prometheus_client
    sorts them), as bytes, and kept while the object keeps its ids, names and interface. A scrape
    formats a family a slice of objects at a time: ``template % values``, the template joined from
    the slice's label sets, so there is no string per sample and nothing the size of the response
    is kept or built whole (4000 sessions are 8 MB of text; the agent's memory target is 80 MB).
    Values are the kernel's integers, exactly. An object that a dump repeats (it changed under an
    interrupted dump) is exported once: twice would make Prometheus reject the whole scrape.
    Thread-safe: each scrape works on its own data and replaces the label caches whole.
    """

    def __init__(
        self,
        node: str,
        dump: CounterDump,
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
        self._node = f'node="{escape(node)}"'
        self._tunnel_labels: dict[int, tuple[str, bytes]] = {}
        self._session_labels: dict[SessionKey, tuple[tuple[str, str], str | None, bytes]] = {}

    def render(self) -> bytes:
        return b"".join(self.chunks())

    def chunks(self) -> Iterator[bytes]:
        """The text in pieces of at most ~SLICE samples, to be written as they come.

        The kernel is read now, before the first piece: what could fail has failed before a
        response starts; formatting the pieces cannot.
        """
        names = self.names()
        node = self._node
        try:
            tunnels, sessions = self.dump()
        except KernelError as exc:
            if exc.outcome is not Outcome.NOT_SUPPORTED:
                log.warning("kernel counters not scraped: %s", exc)
            up = 0 if exc.outcome is Outcome.NOT_SUPPORTED else 1
            return iter([f"{_SUPPORTED_HEADER}{SUPPORTED}{{{node}}} {up}\n".encode()])
        supported = f"{_SUPPORTED_HEADER}{SUPPORTED}{{{node}}} 1\n".encode()

        known_tunnels, fresh_tunnels = self._tunnel_labels, {}
        tunnel_labels: list[bytes] = []
        rows: list[Counters] = []
        for tid, counters in tunnels:
            tname = names.tunnels.get(tid)
            if tname is None or tid in fresh_tunnels:
                continue  # not ours, or repeated
            cached = known_tunnels.get(tid)
            if cached is None or cached[0] != tname:
                text = f'{{{node},tunnel="{escape(tname)}",tunnel_id="{tid}"}}'
                cached = (tname, _percent(text).encode())
            fresh_tunnels[tid] = cached
            tunnel_labels.append(cached[1])
            rows.append(counters)
        self._tunnel_labels = fresh_tunnels
        tunnel_columns = _columns(rows)

        known, fresh = self._session_labels, {}
        session_labels: list[bytes] = []
        rows, keys = [], []
        for tid, sid, ifname, counters in sessions if self.per_session else ():
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
                cached_s = (named, ifname, _percent(text).encode())
            fresh[key] = cached_s
            session_labels.append(cached_s[2])
            rows.append(counters)
            keys.append(key)
        self._session_labels = fresh
        verdicts = self.peers()
        silent = Liveness.SILENT
        session_columns = _columns(rows)
        session_columns.append(tuple([1 if verdicts.get(key) is silent else 0 for key in keys]))
        return _emit(
            supported,
            (tunnel_labels, _TUNNEL_FAMILIES, tunnel_columns),
            (session_labels, _SESSION_FAMILIES + _SILENT_FAMILY, session_columns),
        )


SLICE: Final = 512  # objects per piece: ~100 KiB of session text, allocated and freed at once


def _percent(text: str) -> str:
    """``text`` as literal text of a %-template."""
    return text.replace("%", "%%")


def _columns(rows: list[Counters]) -> list[tuple[int, ...]]:
    """Counters by field: column i holds every object's STATS_FIELDS[i]."""
    return list(zip(*rows, strict=True)) if rows else [()] * len(STATS_FIELDS)


# the peer verdict gauge takes its values from the column after the counters
_SILENT_FAMILY: Final = ((_SILENT_HEADER, PEER_SILENT, len(STATS_FIELDS)),)


def _emit(
    first: bytes,
    *blocks: tuple[list[bytes], tuple[tuple[str, str, int], ...], list[tuple[int, ...]]],
) -> Iterator[bytes]:
    """Each family's header, then its samples a slice at a time: ``name`` + labels + `` %d``
    per object, joined into one template and formatted with the slice of its column."""
    yield first
    for labels, families, columns in blocks:
        for header, name, index in families:
            yield header.encode()
            column = columns[index]
            sample = name.encode()
            glue = b" %d\n" + sample
            for start in range(0, len(labels), SLICE):
                end = start + SLICE
                yield (sample + glue.join(labels[start:end]) + b" %d\n") % column[start:end]
