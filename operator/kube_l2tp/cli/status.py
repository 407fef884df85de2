"""`kube-l2tp status`'s text and JSON: the kernel's L2TP objects with their counters, and who
owns them (the command reads them in cli/__init__.py).

`ip l2tp show` parses the kernel's counters but never prints them (iproute2 6.1 prints none even
with -s); this shows them per tunnel and per session, from one dump of each.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from kube_l2tp.api.model import Resources
from kube_l2tp.core.desired import Owned
from kube_l2tp.core.plan import Observed
from kube_l2tp.core.state import Stats

COUNTERS = [
    ("TX_PKTS", "tx_packets"),
    ("TX_BYTES", "tx_bytes"),
    ("TX_ERRS", "tx_errors"),
    ("RX_PKTS", "rx_packets"),
    ("RX_BYTES", "rx_bytes"),
    ("RX_ERRS", "rx_errors"),
    ("SEQ_DISC", "rx_seq_discards"),
    ("OOS", "rx_oos_packets"),
    ("COOKIE_DISC", "rx_cookie_discards"),
    ("INVALID", "rx_invalid"),
]


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip()
        for row in [header, *rows]
    )


def _counts(stats: Stats) -> list[str]:
    return [str(getattr(stats, field)) for _, field in COUNTERS]


def status(
    observed: Observed,
    owned: Owned | None,
    resources: Resources | None,
    *,
    show_all: bool = False,
    as_json: bool = False,
) -> str:
    tunnel_names = {t.tunnel_id: t.name for t in resources.tunnels} if resources else {}
    session_names: dict[tuple[int, int], str] = {}
    if resources:
        for declared in resources.sessions:
            tunnel = resources.tunnel(declared.tunnel_ref)
            if tunnel:
                session_names[(tunnel.tunnel_id, declared.session_id)] = declared.name

    def owner(managed: bool) -> str:
        return "kube-l2tp" if managed else ("unknown" if owned is None else "other")

    tunnels = []
    for tid, t in sorted(observed.tunnels.items()):
        managed = owned is not None and tid in owned.tunnels
        if managed or show_all or owned is None:
            tunnels.append((tid, t, managed))
    sessions = []
    for key, s in sorted(observed.sessions.items()):
        managed = owned is not None and key in owned.sessions
        if managed or show_all or owned is None:
            sessions.append((key, s, managed))
    if as_json:
        data: dict[str, Any] = {
            "tunnels": [
                {"name": tunnel_names.get(tid, ""), "owner": owner(m), **asdict(t)}
                for tid, t, m in tunnels
            ],
            "sessions": [
                {
                    "name": session_names.get(key, ""),
                    "owner": owner(m),
                    "link": asdict(observed.links[s.config.ifname])
                    if s.config.ifname in observed.links
                    else None,
                    **asdict(s),
                }
                for key, s, m in sessions
            ],
        }
        return json.dumps(data, indent=1, default=lambda b: b.hex())
    t_rows = []
    for tid, t, m in tunnels:
        c = t.config
        ports = f"{c.udp_sport}>{c.udp_dport}" if c.encap == "udp" else "-"
        t_rows.append(
            [
                tunnel_names.get(tid, "-"),
                str(tid),
                str(c.peer_tunnel_id),
                c.encap,
                c.local,
                c.remote,
                ports,
                owner(m),
                *_counts(t.stats),
            ]
        )
    s_rows = []
    for (tid, sid), sess, m in sessions:
        sc = sess.config
        link = observed.links.get(sc.ifname or "")
        state = ("up" if link.up else "down") if link else "-"
        s_rows.append(
            [
                session_names.get((tid, sid), "-"),
                str(tid),
                str(sid),
                str(sc.peer_session_id),
                sc.ifname or "-",
                str(link.mtu) if link else "-",
                state,
                owner(m),
                *_counts(sess.stats),
            ]
        )
    header_t = ["TUNNEL", "ID", "PEER", "ENCAP", "LOCAL", "REMOTE", "PORTS", "OWNER"]
    header_s = ["SESSION", "TUNNEL_ID", "ID", "PEER", "IFACE", "MTU", "LINK", "OWNER"]
    counters = [name for name, _ in COUNTERS]
    parts = [
        _table(header_t + counters, t_rows) if t_rows else "no tunnels",
        _table(header_s + counters, s_rows) if s_rows else "no sessions",
    ]
    return "\n\n".join(parts) + "\n"
