"""The operator's /metrics (metrics.operator, controller.app): webhook reviews counted by verdict
and timed around kopf's own review function, kopf handler failures counted from kopf's log
records, served over HTTP with the process and build series."""

from __future__ import annotations

import asyncio
import logging
import socket
import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kube_l2tp.controller.app import _measured, serve_metrics
from kube_l2tp.metrics.operator import METRIC_NAMES, OperatorMetrics


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def test_reviews_are_counted_by_verdict_and_timed() -> None:
    metrics = OperatorMetrics()

    async def kopf_fn(request: Any, **_: Any) -> Any:
        if request == "boom":
            raise RuntimeError("handler crashed")
        return {"response": {"allowed": request == "good"}}

    fn = _measured(kopf_fn, metrics)

    async def reviews() -> None:
        await fn("good", webhook="validate")
        await fn("good", webhook="validate")
        await fn("bad", webhook="validate")
        with pytest.raises(RuntimeError):
            await fn("boom", webhook="validate")

    asyncio.run(reviews())
    got = samples(generate_latest(metrics.registry).decode())
    name = "kube_l2tp_operator_webhook_requests_total"
    by = {"webhook": "validate"}
    assert got[(name, frozenset({**by, "verdict": "allowed"}.items()))] == 2
    assert got[(name, frozenset({**by, "verdict": "denied"}.items()))] == 1
    assert got[(name, frozenset({**by, "verdict": "error"}.items()))] == 1
    count = "kube_l2tp_operator_webhook_duration_seconds_count"
    assert got[(count, frozenset(by.items()))] == 4


def test_handler_failures_are_counted_from_kopfs_records() -> None:
    metrics = OperatorMetrics()
    logger = logging.getLogger("kopf.objects.test")
    handler = metrics.log_handler()
    logger.addHandler(handler)
    try:
        logger.error("Handler 'tunnel_status' failed with an exception. Will retry.")
        logger.error("Handler 'tunnel_status' failed permanently: no")
        logger.warning("Handler 'other' failed with a temporary error")  # below ERROR
        logger.error("Something else went wrong")
    finally:
        logger.removeHandler(handler)
    got = samples(generate_latest(metrics.registry).decode())
    errors = {k: v for k, v in got.items() if k[0] == "kube_l2tp_operator_handler_errors_total"}
    assert errors == {
        ("kube_l2tp_operator_handler_errors_total", frozenset({("handler", "tunnel_status")})): 2
    }


def test_served_over_http_with_process_and_build_series() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = serve_metrics(port, addr="127.0.0.1")
    metrics.observe("validate", "allowed", 0.01)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "kube_l2tp_build_info" in names
    assert "process_resident_memory_bytes" in names
    assert {n for n in names if n.startswith("kube_l2tp_operator_")} <= METRIC_NAMES
    assert "kube_l2tp_operator_webhook_requests_total" in names
    assert not [n for n in names if n.endswith("_created")]
