"""The Grafana dashboard and the alerting rules query only metrics the agent exports.

Metric names are parsed out of every PromQL expression (dashboard targets and template variable
queries, alert expressions) and compared with the names the collectors declare. The dashboard
JSON in the chart must also be exactly what scripts/gen-dashboard.py writes.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from kube_l2tp.metrics.agent import METRIC_NAMES
from kube_l2tp.metrics.kernel import metric_names
from kube_l2tp.metrics.operator import METRIC_NAMES as OPERATOR_METRIC_NAMES

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts/kube-l2tp/files/dashboards/kube-l2tp.json"
RULES = ROOT / "charts/kube-l2tp/files/prometheus-rules.yaml"
# `up` is Prometheus' own per-target series; the operator's are scraped too
EXPORTED = set(METRIC_NAMES) | metric_names() | OPERATOR_METRIC_NAMES | {"up"}

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
KEYWORDS |= {"group_left", "group_right", "inf", "nan"}


def metric_names_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana label_values() query)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings (label values, regexes)
    e = re.sub(r"\{[^}]*\}", "", e)  # label matchers
    e = re.sub(r"\[[^\]]*\]", "", e)  # ranges
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\w+", "", e)  # Grafana variables outside strings
    e = re.sub(r"label_values\(([^,()]*),[^)]*\)", r"\1", e)  # label_values(metric, label)
    e = re.sub(r"\b[a-zA-Z_]\w*\s*\(", "(", e)  # function names
    names = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", e))
    return {n for n in names if n.lower() not in KEYWORDS}


def dashboard_queries() -> list[str]:
    board: dict[str, Any] = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def rule_queries() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_parser_finds_metric_names() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (node, le)"
        ' (rate(kube_l2tp_reconcile_duration_seconds_bucket{node=~"$node"}[$__rate_interval])))'
        ' and on (node) up{job="x"} > 1e3'
    )
    assert metric_names_in(expr) == {"kube_l2tp_reconcile_duration_seconds_bucket", "up"}
    assert metric_names_in('label_values(l2tp_tunnel_rx_packets_total{a="b"}, tunnel)') == {
        "l2tp_tunnel_rx_packets_total"
    }
    assert metric_names_in('absent(up{job="kube-l2tp-agent"})') == {"up"}


@pytest.mark.parametrize("source", ["dashboard", "rules"])
def test_queries_use_only_exported_metrics(source: str) -> None:
    exprs = dashboard_queries() if source == "dashboard" else rule_queries()
    assert exprs
    for expr in exprs:
        names = metric_names_in(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= EXPORTED, f"{expr!r} uses {sorted(names - EXPORTED)}"


def test_dashboard_covers_the_kernel_counters_and_liveness() -> None:
    used = set().union(*(metric_names_in(e) for e in dashboard_queries()))
    for name in (
        "l2tp_session_rx_bytes_total",
        "l2tp_tunnel_rx_bytes_total",
        "l2tp_session_rx_cookie_discards_total",
        "l2tp_session_rx_seq_discards_total",
        "l2tp_tunnel_rx_invalid_total",
        "kube_l2tp_session_peer_silent",
        "kube_l2tp_reconcile_errors_total",
        "kube_l2tp_drift_repairs_total",
    ):
        assert name in used, name
    board = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"node", "tunnel", "session"} <= variables
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_dashboard", ROOT / "scripts/gen-dashboard.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_json_is_what_the_generator_writes() -> None:
    assert DASHBOARD.read_text() == _generator().render(), "run scripts/gen-dashboard.py"


def test_per_session_panels_are_bounded_and_silent_peers_are_listed() -> None:
    """A query whose series keep the session label (no aggregation over it) draws at most $limit
    lines (topk), unless it is the table of sessions whose peer is silent now (instant, == 1)."""
    board = json.loads(DASHBOARD.read_text())
    (limit,) = [v for v in board["templating"]["list"] if v["name"] == "limit"]
    assert limit["current"]["value"] == "10"
    per_session = [
        (p, t)
        for p in board["panels"]
        for t in p.get("targets", [])
        if re.search(r"\bl2tp_session_|kube_l2tp_session_", t["expr"])
        and not re.match(r"\s*(8 \* )?(sum|count|max|min|avg)\b", t["expr"])
    ]
    assert per_session
    tables = []
    for p, t in per_session:
        if p["type"] == "table":
            tables.append((p, t))
        else:
            assert t["expr"].startswith("topk($limit, "), t["expr"]
    ((_, query),) = tables
    assert query["instant"] and query["format"] == "table"
    assert query["expr"].startswith("kube_l2tp_session_peer_silent{") and query["expr"].endswith(
        "== 1"
    )


def test_a_table_lists_the_objects_not_ready_now() -> None:
    board = json.loads(DASHBOARD.read_text())
    tables = [
        t
        for p in board["panels"]
        if p["type"] == "table"
        for t in p["targets"]
        if t["expr"].startswith("kube_l2tp_object_not_ready{")
    ]
    ((query),) = tables
    assert query["instant"] and query["format"] == "table" and query["expr"].endswith("== 1")
