#!/usr/bin/env python3
"""Generate charts/kube-l2tp/files/dashboards/kube-l2tp.json (the Grafana dashboard).

The dashboard is written as plain data here, so panels stay regular (same datasource, same
selectors, same units) and review happens on this file; tests/unit/test_dashboard.py fails when
the JSON in the chart drifts from what this script writes, and checks every query against the
metric names the agent exports. Usage: scripts/gen-dashboard.py [--check]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "charts/kube-l2tp/files/dashboards/kube-l2tp.json"

DS = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'node=~"$node"'
TUNNEL = f'{NODE},tunnel=~"$tunnel"'
SESSION = f'{TUNNEL},session=~"$session"'
RATE = "$__rate_interval"
# Per-session panels show the busiest $limit series (a dashboard variable): thousands of sessions
# on a node would otherwise be thousands of lines and a browser that stops answering.
LIMIT = "$limit"


def top(expr: str) -> str:
    return f"topk({LIMIT}, {expr})"


def target(expr: str, legend: str, ref: str, *, table: bool = False) -> dict[str, Any]:
    if table:  # the value now, one row per series
        return {"datasource": DS, "expr": expr, "refId": ref, "instant": True, "format": "table"}
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def panel(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    kind: str = "timeseries",
    w: int = 12,
    h: int = 8,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    p: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            target(e, legend, chr(ord("A") + i), table=kind == "table")
            for i, (e, legend) in enumerate(targets)
        ],
        "gridPos": {"w": w, "h": h},
    }
    if kind == "timeseries":
        p["fieldConfig"]["defaults"]["custom"] = {"fillOpacity": 10, "showPoints": "never"}
        p["options"] = {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["max"]}}
    if extra:
        p.update(extra)
    return p


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": [], "gridPos": {"w": 24}}


def rate(metric: str, selector: str) -> str:
    return f"rate({metric}{{{selector}}}[{RATE}])"


def panels() -> list[dict[str, Any]]:
    bits = "bps"
    return [
        row("Throughput"),
        panel(
            "Throughput per node",
            "Bytes carried by every managed session of the node, in bits per second.",
            [
                (f"8 * sum by (node) ({rate('l2tp_session_rx_bytes_total', NODE)})", "{{node}} rx"),
                (f"8 * sum by (node) ({rate('l2tp_session_tx_bytes_total', NODE)})", "{{node}} tx"),
            ],
            unit=bits,
        ),
        panel(
            "Throughput per tunnel",
            "The tunnel's counters (all its sessions), in bits per second.",
            [
                (
                    f"8 * sum by (node, tunnel) ({rate('l2tp_tunnel_rx_bytes_total', TUNNEL)})",
                    "{{node}}/{{tunnel}} rx",
                ),
                (
                    f"8 * sum by (node, tunnel) ({rate('l2tp_tunnel_tx_bytes_total', TUNNEL)})",
                    "{{node}}/{{tunnel}} tx",
                ),
            ],
            unit=bits,
        ),
        panel(
            "Throughput per session",
            "Each pseudowire (session) in bits per second; the interface is in the legend.",
            [
                (
                    top(f"8 * {rate('l2tp_session_rx_bytes_total', SESSION)}"),
                    "{{session}} ({{interface}}) rx",
                ),
                (
                    top(f"8 * {rate('l2tp_session_tx_bytes_total', SESSION)}"),
                    "{{session}} ({{interface}}) tx",
                ),
            ],
            unit=bits,
        ),
        panel(
            "Packets per session",
            "Packets per second each way.",
            [
                (top(rate("l2tp_session_rx_packets_total", SESSION)), "{{session}} rx"),
                (top(rate("l2tp_session_tx_packets_total", SESSION)), "{{session}} tx"),
            ],
            unit="pps",
        ),
        row("Errors and discards"),
        panel(
            "Cookie and sequence discards per session",
            "Received packets the kernel dropped: a cookie that does not match (the two ends'"
            " cookie/peerCookie differ) or a failed sequence check (recv sequencing while the"
            " peer sends none, or loss). Anything above zero means frames are lost.",
            [
                (top(rate("l2tp_session_rx_cookie_discards_total", SESSION)), "{{session}} cookie"),
                (top(rate("l2tp_session_rx_seq_discards_total", SESSION)), "{{session}} seq"),
                (
                    top(rate("l2tp_session_rx_oos_packets_total", SESSION)),
                    "{{session}} out of seq",
                ),
            ],
            unit="pps",
        ),
        panel(
            "Errors per session",
            "Packets that could not be sent, or were received and dropped (e.g. interface down).",
            [
                (top(rate("l2tp_session_rx_errors_total", SESSION)), "{{session}} rx"),
                (top(rate("l2tp_session_tx_errors_total", SESSION)), "{{session}} tx"),
            ],
            unit="pps",
        ),
        panel(
            "Tunnel errors and invalid packets",
            "Per tunnel: packets with an invalid header or for an unknown session (rx invalid),"
            " and discards of all its sessions.",
            [
                (rate("l2tp_tunnel_rx_invalid_total", TUNNEL), "{{tunnel}} invalid"),
                (rate("l2tp_tunnel_rx_errors_total", TUNNEL), "{{tunnel}} rx errors"),
                (rate("l2tp_tunnel_tx_errors_total", TUNNEL), "{{tunnel}} tx errors"),
                (rate("l2tp_tunnel_rx_cookie_discards_total", TUNNEL), "{{tunnel}} cookie"),
                (rate("l2tp_tunnel_rx_seq_discards_total", TUNNEL), "{{tunnel}} seq"),
            ],
            unit="pps",
            w=24,
        ),
        row("Peer liveness"),
        panel(
            "Sessions with a silent peer",
            "Sessions that sent packets and received none over the agent's"
            " --peer-silence-window (static L2TPv3 has no hello: this is the only sign).",
            [(f"sum(kube_l2tp_session_peer_silent{{{SESSION}}})", "silent")],
            kind="stat",
            w=6,
            extra={
                "options": {"colorMode": "background", "graphMode": "none"},
                "fieldConfig": {
                    "defaults": {
                        "unit": "short",
                        "thresholds": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "green", "value": None},
                                {"color": "red", "value": 1},
                            ],
                        },
                    },
                    "overrides": [],
                },
            },
        ),
        panel(
            "Sessions whose peer is silent now",
            "One row per session whose peer is silent at the dashboard's end time (empty when"
            " every peer answers): its node, tunnel, ids and interface.",
            [(f"kube_l2tp_session_peer_silent{{{SESSION}}} == 1", "")],
            kind="table",
            w=18,
            extra={
                "options": {"showHeader": True},
                "transformations": [
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "Value": True, "__name__": True},
                            "indexByName": {},
                            "renameByName": {},
                        },
                    }
                ],
            },
        ),
        panel(
            "Objects not Ready now",
            "One row per tunnel or session that is not Ready after its agent's last reconcile,"
            " with the reason (Conflict, KernelError, InvalidSpec, ...): the object's status"
            " conditions say more (`kubectl get l2tp`).",
            [(f"kube_l2tp_object_not_ready{{{NODE}}} == 1", "")],
            kind="table",
            w=24,
            extra={
                "options": {"showHeader": True},
                "transformations": [
                    {
                        "id": "organize",
                        "options": {
                            "excludeByName": {"Time": True, "Value": True, "__name__": True},
                            "indexByName": {},
                            "renameByName": {},
                        },
                    }
                ],
            },
        ),
        row("Agent"),
        panel(
            "Agents up, ready, L2TP supported, API connected",
            "Scrape health (up), first reconcile done (ready), the kernel's L2TP family answering"
            " (supported) and, in a cluster, the API watch (the standalone agent has none).",
            [
                ('up{job=~"$job"}', "{{instance}} up"),
                (f"kube_l2tp_agent_ready{{{NODE}}}", "{{node}} ready"),
                (f"kube_l2tp_kernel_l2tp_supported{{{NODE}}}", "{{node}} L2TP supported"),
                (f"kube_l2tp_api_connected{{{NODE}}}", "{{node}} API connected"),
            ],
        ),
        panel(
            "Objects by readiness",
            "Declared tunnels and sessions of each node, ready or not.",
            [
                (
                    f"sum by (node, kind, ready) (kube_l2tp_managed_objects{{{NODE}}})",
                    "{{node}} {{kind}} ready={{ready}}",
                )
            ],
        ),
        panel(
            "Reconciles and failures",
            "Reconciles per second, and those that left an object not ready.",
            [
                (f"sum by (node) ({rate('kube_l2tp_reconcile_total', NODE)})", "{{node}} all"),
                (
                    f"sum by (node) ({rate('kube_l2tp_reconcile_errors_total', NODE)})",
                    "{{node}} failing",
                ),
            ],
            unit="ops",
        ),
        panel(
            "Reconcile duration",
            "Time to dump, plan and apply (p50 and p99).",
            [
                (
                    "histogram_quantile(0.5, sum by (node, le)"
                    f" ({rate('kube_l2tp_reconcile_duration_seconds_bucket', NODE)}))",
                    "{{node}} p50",
                ),
                (
                    "histogram_quantile(0.99, sum by (node, le)"
                    f" ({rate('kube_l2tp_reconcile_duration_seconds_bucket', NODE)}))",
                    "{{node}} p99",
                ),
            ],
            unit="s",
        ),
        panel(
            "Kernel writes and drift repairs",
            "All kernel writes, and those made by reconciles triggered by a kernel event or the"
            " periodic resync: repairs of drift or tampering. Steady repairs mean something keeps"
            " changing the agent's objects.",
            [
                (f"sum by (node) ({rate('kube_l2tp_kernel_writes_total', NODE)})", "{{node}} all"),
                (
                    f"sum by (node) ({rate('kube_l2tp_drift_repairs_total', NODE)})",
                    "{{node}} drift repairs",
                ),
            ],
            unit="wps",
            w=24,
        ),
    ]


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    x = y = row_h = 0
    for i, p in enumerate(items, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"].get("h", 1)
        if p["type"] == "row" or x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"h": h, "w": w, "x": x, "y": y}
        x, row_h = x + w, max(row_h, h)
        if p["type"] == "row":
            x, y, row_h = 0, y + 1, 0
    return items


def variable(name: str, label: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
    }


def dashboard() -> dict[str, Any]:
    return {
        "title": "kube-l2tp",
        "uid": "kube-l2tp",
        "description": "Static L2TPv3 pseudowires: kernel counters per node, tunnel and session;"
        " peer liveness; the agents' reconcile health. Generated by scripts/gen-dashboard.py.",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "tags": ["kube-l2tp", "l2tp"],
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                {
                    "name": "job",
                    "label": "Agent job",
                    "type": "custom",
                    "query": "kube-l2tp-agent",
                    "current": {"text": "kube-l2tp-agent", "value": "kube-l2tp-agent"},
                },
                {
                    "name": "limit",
                    "label": "Sessions per panel",
                    "type": "custom",
                    "query": "10,25,100",
                    "current": {"text": "10", "value": "10"},
                    "options": [
                        {"text": v, "value": v, "selected": v == "10"} for v in ("10", "25", "100")
                    ],
                },
                variable("node", "Node", "label_values(kube_l2tp_agent_ready, node)"),
                variable(
                    "tunnel",
                    "Tunnel",
                    'label_values(l2tp_tunnel_rx_packets_total{node=~"$node"}, tunnel)',
                ),
                variable(
                    "session",
                    "Session",
                    'label_values(l2tp_session_rx_packets_total{node=~"$node",tunnel=~"$tunnel"},'
                    " session)",
                ),
            ]
        },
        "annotations": {"list": []},
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run scripts/gen-dashboard.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
