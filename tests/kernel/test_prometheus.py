"""A real Prometheus scrapes two standalone agents carrying traffic; every dashboard query answers.

site-a and site-b (a veth pair, 192.0.2.1/.2) each run `kube-l2tp agent` with their own manifests:
session 1 mirrors its peer; session 2's cookies do not mirror (site-a's cookie is not what site-b
expects as peerCookie), so one side discards what the other sends on it: cookie discards, and
site-a, which keeps pinging over it, hears nothing back: its peer is silent. Debian's Prometheus
runs in site-a's namespace, scraping both agents across the veth every 2 s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path
from typing import Any

import pytest
from helpers import TwoSites, in_netns

from kube_l2tp.netlink.l2tp import L2tp

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts/kube-l2tp/files/dashboards/kube-l2tp.json"
JOB = "kube-l2tp-agent"
PROMETHEUS = "127.0.0.1:9090"

SITE = """\
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPTunnel
metadata: {{name: {node}}}
spec:
  nodeName: {node}
  tunnelID: {tid}
  peerTunnelID: {peer_tid}
  local: {local}
  remote: {remote}
  udp: {{sourcePort: {sport}, destinationPort: {dport}}}
---
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPSession
metadata: {{name: {node}-1}}
spec:
  tunnelRef: {node}
  sessionID: {sid}
  peerSessionID: {peer_sid}
  interfaceName: pw1
  interface:
    mtu: 1446
    addresses: [{{address: 198.51.100.{me}, peer: 198.51.100.{them}}}]
---
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPSession
metadata: {{name: {node}-2}}
spec:
  tunnelRef: {node}
  sessionID: {sid2}
  peerSessionID: {peer_sid2}
  interfaceName: pw2
  cookie: "{cookie}"
  peerCookie: "{peer_cookie}"
  interface:
    mtu: 1430
    addresses: [{{address: 203.0.113.{me}, peer: 203.0.113.{them}}}]
"""


def manifests(directory: Path, node: str, **values: object) -> Path:
    directory.mkdir(parents=True)
    (directory / f"{node}.yaml").write_text(SITE.format(node=node, **values))
    return directory


@pytest.fixture
def agents(two_sites: TwoSites, tmp_path: Path) -> Iterator[TwoSites]:
    a = manifests(
        tmp_path / "a", "site-a", tid=3000, peer_tid=4000, local="192.0.2.1",
        remote="192.0.2.2", sport=5000, dport=6000, sid=1000, peer_sid=2000, sid2=1001,
        peer_sid2=2001, me=1, them=2, cookie="0011223344556677", peer_cookie="8899aabbccddeeff",
    )  # fmt: skip
    b = manifests(
        tmp_path / "b", "site-b", tid=4000, peer_tid=3000, local="192.0.2.2",
        remote="192.0.2.1", sport=6000, dport=5000, sid=2000, peer_sid=1000, sid2=2001,
        peer_sid2=1001, me=2, them=1, cookie="8899aabbccddeeff",
        peer_cookie="0000000000000bad",  # not site-a's cookie: every frame of site-a dropped
    )  # fmt: skip
    procs = []
    for ns, node, directory in ((two_sites.a, "site-a", a), (two_sites.b, "site-b", b)):
        argv = [
            *("ip", "netns", "exec", ns, "kube-l2tp", "agent", "--node", node),
            *("--manifests", str(directory), "--state-dir", str(tmp_path / f"state-{node}")),
            *("--peer-silence-window", "10"),
        ]
        with (tmp_path / f"{node}.log").open("w") as log:  # the child keeps its own copy
            procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    try:
        yield two_sites
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        for node in ("site-a", "site-b"):
            text = (tmp_path / f"{node}.log").read_text()
            print(f"--- {node} agent log\n{text[:3000]}\n...\n{text[-1500:]}")


@pytest.fixture
def prometheus(agents: TwoSites, tmp_path: Path) -> Iterator[TwoSites]:
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "2s", "scrape_timeout": "2s",
                           "evaluation_interval": "2s"},
                "scrape_configs": [
                    {
                        "job_name": JOB,
                        "static_configs": [
                            {"targets": [f"{agents.a4}:9717", f"{agents.b4}:9717"]}
                        ],
                    }
                ],
            }
        )
    )  # fmt: skip
    with (tmp_path / "prometheus.log").open("w") as log:
        proc = subprocess.Popen(
            [
                *("ip", "netns", "exec", agents.a, "prometheus"),
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address={PROMETHEUS}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield agents
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        if sys.exc_info()[0] is not None:
            print((tmp_path / "prometheus.log").read_text()[-3000:])


def query(ns: str, expr: str) -> list[dict[str, Any]]:
    url = f"http://{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with in_netns(ns), urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def eventually(what: str, condition: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except OSError as exc:  # Prometheus not listening yet
            last = exc
        else:
            if last:
                return last
        time.sleep(1)
    raise AssertionError(f"{what}: not within {timeout}s (last: {last!r})")


def value(series: list[dict[str, Any]]) -> dict[str, float]:
    return {
        ",".join(f"{k}={v}" for k, v in sorted(s["metric"].items()) if k != "__name__"): float(
            s["value"][1]
        )
        for s in series
    }


def dashboard_queries() -> list[tuple[str, str]]:
    board = json.loads(DASHBOARD.read_text())
    out = [(p["title"], t["expr"]) for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            metric = var["query"]["query"].removeprefix("label_values(").rsplit(",", 1)[0]
            out.append((f"variable {var['name']}", metric))
    return out


def concrete(expr: str) -> str:
    """A dashboard query with its template variables filled in as 'All' selects them."""
    for var, text in (("$__rate_interval", "20s"), ("$node", ".*"), ("$tunnel", ".*"),
                      ("$session", ".*"), ("$job", JOB), ("$limit", "10")):  # fmt: skip
        expr = expr.replace(var, text)
    return expr


def test_prometheus_scrapes_agents_and_every_dashboard_query_answers(
    prometheus: TwoSites,
) -> None:
    sites = prometheus
    ns = sites.a
    eventually(
        "both agents ready and scraped",
        lambda: len(query(ns, f'kube_l2tp_agent_ready{{job="{JOB}"}} == 1')) == 2,
        180,
    )
    eventually(
        "every session programmed",
        lambda: len(query(ns, "l2tp_session_tx_packets_total")) == 4,
        60,
    )
    # traffic: a working wire, and the wire whose cookies do not match (site-a never hears back)
    ping = [
        subprocess.Popen(
            ["ip", "netns", "exec", ns, "ping", "-q", "-i", "0.2", "-c", "150", "-s", "1000", dst],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for dst in ("198.51.100.2", "203.0.113.2")
    ]
    try:
        eventually(
            "cookie discards on the mismatched pair",
            lambda: query(ns, "l2tp_session_rx_cookie_discards_total > 0"),
            60,
        )
        silent = eventually(
            "site-a-2's peer reported silent",
            lambda: query(ns, 'kube_l2tp_session_peer_silent{session="site-a-2"} == 1'),
            90,
        )
        eventually(  # rates need a few scrapes of moving counters
            "throughput on site-a-1",
            lambda: query(ns, 'rate(l2tp_session_rx_bytes_total{session="site-a-1"}[20s]) > 0'),
            30,
        )
        answers: dict[str, dict[str, float]] = {}
        empty = []
        for title, expr in dashboard_queries():
            result = query(ns, concrete(expr))
            answers[f"{title}: {expr}"] = value(result)
            # absent by design here: the API watch (standalone) and objects not Ready (all are)
            absent = ("kube_l2tp_api_connected", "kube_l2tp_object_not_ready")
            if not result and not any(name in expr for name in absent):
                empty.append(f"{title}: {concrete(expr)}")
        numbers = {
            "cookie discards": value(query(ns, "l2tp_session_rx_cookie_discards_total > 0")),
            "peer silent": value(silent),
            "peer verdicts": value(query(ns, "kube_l2tp_session_peer_silent")),
            "rx bytes/s": value(query(ns, "rate(l2tp_session_rx_bytes_total[20s])")),
            "scrape seconds": value(query(ns, f'scrape_duration_seconds{{job="{JOB}"}}')),
            "samples per scrape": value(query(ns, f'scrape_samples_scraped{{job="{JOB}"}}')),
        }
        print(json.dumps(numbers, indent=1))
        print(json.dumps(answers, indent=1))
        assert not empty, f"dashboard queries without data: {empty}"
        discards = value(query(ns, "l2tp_session_rx_cookie_discards_total > 0"))
        assert discards and all(k.split("session=")[1].startswith(("site-a-2", "site-b-2"))
                                for k in discards), discards  # fmt: skip
        assert not query(ns, 'kube_l2tp_session_peer_silent{session=~"site-.-1"} == 1')
        for site in (sites.a, sites.b):
            counters_read_what_the_full_dumps_read(site)
    finally:
        for p in ping:
            p.kill()
            p.wait()


Table = dict[object, tuple[int, ...]]


def counters_read_what_the_full_dumps_read(ns: str) -> None:
    """The scrape's counters-only dump (L2tp.dump_counters) on the real kernel, with traffic:
    the same objects, names and counters as the full dumps around it (counters only rise)."""

    def full(l2tp: L2tp) -> tuple[Table, Table]:
        return (
            {t.config.tunnel_id: astuple(t.stats) for t in l2tp.dump_tunnels()},
            {(s.config.tunnel_id, s.config.session_id, s.config.ifname): astuple(s.stats)
             for s in l2tp.dump_sessions()},
        )  # fmt: skip

    with in_netns(ns), L2tp() as l2tp:
        before = full(l2tp)
        tunnels, sessions = l2tp.dump_counters()
        after = full(l2tp)
    fast: tuple[Table, Table] = (dict(tunnels), {(t, s, i): c for t, s, i, c in sessions})
    for got, low, high in zip(fast, before, after, strict=True):
        assert set(got) == set(low) == set(high), ns
        for key, counters in got.items():
            assert all(
                a <= b <= c for a, b, c in zip(low[key], counters, high[key], strict=True)
            ), (key, low[key], counters, high[key])
    assert any(any(c) for c in fast[1].values()), f"no traffic counted in {ns}"
