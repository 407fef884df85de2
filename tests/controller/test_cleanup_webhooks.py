"""`kube-l2tp cleanup` also deletes the webhook configurations kopf made (real API server)."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from kube_l2tp.controller.app import WEBHOOK_CONFIG
from kube_l2tp.controller.cleanup import cleanup
from kube_l2tp.k8s.objects import WEBHOOK_CONFIGURATIONS, Cluster
from realapi.server import RealApiServer

from .conftest import Running, eventually, tunnel


def configurations(api: RealApiServer) -> dict[str, list[str]]:
    return {
        plural: [o["metadata"]["name"] for o in api.objects(plural)]
        for plural in WEBHOOK_CONFIGURATIONS
    }


def run_cleanup(cluster: Any) -> tuple[int, str]:
    out = io.StringIO()
    code = cleanup(cluster, timeout=0, out=out, settle=0, sleep=lambda _: None)
    return code, out.getvalue()


@pytest.mark.asyncio
async def test_cleanup_deletes_the_operators_webhook_configurations(
    apiserver: RealApiServer, operator: Running
) -> None:
    expected = {plural: [WEBHOOK_CONFIG] for plural in WEBHOOK_CONFIGURATIONS}
    await eventually(lambda: configurations(apiserver) == expected, what="kopf's configurations")
    # someone else's webhook configuration: not ours to delete
    other = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "someone-else", "labels": {"kube-l2tp-test": "true"}},
        "webhooks": [],
    }
    apiserver.create(other)
    apiserver.create(tunnel("t1"))
    cluster = Cluster()
    try:
        code, text = await asyncio.to_thread(run_cleanup, cluster)
        assert code == 0, text
        for plural in WEBHOOK_CONFIGURATIONS:
            assert f"{plural}/{WEBHOOK_CONFIG}: deleted" in text
        assert text.rstrip().endswith("nothing left")
        assert configurations(apiserver) == {
            "validatingwebhookconfigurations": ["someone-else"],
            "mutatingwebhookconfigurations": [],
        }
        assert apiserver.objects("l2tptunnels") == []
        # again (a retried hook): nothing to delete is not a failure
        code, text = await asyncio.to_thread(run_cleanup, cluster)
        assert code == 0 and "deleted" not in text, text
    finally:
        cluster.close()


class Forbidden:
    """A cluster whose RBAC does not let the hook delete webhook configurations."""

    def objects(self, plural: str) -> list[dict[str, Any]]:
        return []

    def delete_webhook_configuration(self, plural: str, name: str) -> bool:
        raise ApiException(status=403, reason="Forbidden")


def test_a_configuration_that_cannot_be_deleted_fails_the_hook_and_says_how_to_fix() -> None:
    code, text = run_cleanup(Forbidden())
    assert code == 1
    assert (
        f"validatingwebhookconfigurations/{WEBHOOK_CONFIG}: not deleted (403 Forbidden);"
        f" delete it with: kubectl delete validatingwebhookconfiguration {WEBHOOK_CONFIG}"
    ) in text
