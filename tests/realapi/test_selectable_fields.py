"""A server that cannot select L2TP objects by spec.nodeName (a CRD without selectableFields, as an
older CRD or a server older than 1.31 leaves it): the agent says so, naming what it needs, and
does not take it for an unreachable API."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from kubernetes import client, config

from kube_l2tp.k8s.watch import NodeCache

from .fixtures import Kubectl
from .server import RealApiServer

CRD = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/l2tptunnels.kubel2tp.io"
SELECT = {"fieldSelector": "spec.nodeName=node-a"}


def selectable(api: RealApiServer) -> int:
    code, _ = api.submit("GET", "/apis/kubel2tp.io/v1alpha1/l2tptunnels", params=SELECT)
    return code


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.fixture
def without_selectable_fields(api: RealApiServer, kubectl: Kubectl) -> Iterator[None]:
    crd = api.get(CRD)
    for version in crd["spec"]["versions"]:
        version.pop("selectableFields", None)
    code, answer = api.submit("PUT", CRD, crd)
    assert code == 200, answer
    wait_for(lambda: selectable(api) == 400)
    try:
        yield
    finally:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "crds/l2tptunnels.yaml")
        wait_for(lambda: selectable(api) == 200)


def test_the_agent_names_what_it_needs(
    api: RealApiServer, without_selectable_fields: None, caplog: pytest.LogCaptureFixture
) -> None:
    config.load_kube_config(config_file=str(api.kubeconfig))
    cache = NodeCache(client.CustomObjectsApi(), "l2tptunnels", "node-a", lambda *_: None)
    with caplog.at_level(logging.WARNING, logger="kube_l2tp.k8s"):
        cache.start()
        try:
            wait_for(lambda: cache.problem)
        finally:
            cache.stop()
    assert "cannot select l2tptunnels by spec.nodeName" in cache.problem
    assert "selectableFields" in cache.problem and "Kubernetes 1.31 or later" in cache.problem
    assert f"Kubernetes {api.version}" in cache.problem  # the server it is talking to
    assert "field label not supported" in cache.problem  # the server's own words
    assert cache.connected and not cache.synced.is_set()
    messages = [r.getMessage() for r in caplog.records]
    assert cache.problem in messages
    assert not any("unreachable" in m for m in messages), messages
