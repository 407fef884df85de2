"""The admission webhook over HTTPS, as the API server calls it: by the Service named in the
webhook configuration kopf wrote, verifying the server with that configuration's caBundle."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from kube_l2tp.controller import app
from realapi.server import RealApiServer

from .conftest import eventually, free_port, tunnel
from .test_admission import review_request

HOST = "kube-l2tp-webhook.kube-l2tp.svc"  # as the chart sets it: a Service's name


@pytest_asyncio.fixture
async def tls_operator(apiserver: RealApiServer, tmp_path: Path) -> AsyncIterator[int]:
    """The operator with its own certificate (the default: no insecure flag, no user files)."""
    stop: asyncio.Event = asyncio.Event()
    ready: asyncio.Event = asyncio.Event()
    port = free_port()
    config = app.OperatorConfig(
        health_port=None, webhook_port=port, webhook_host=HOST, tls_dir=tmp_path
    )
    task = asyncio.create_task(app.operator(config, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield port
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def validating_hooks(api: RealApiServer) -> list[dict[str, Any]]:
    return [
        hook
        for config in api.objects("validatingwebhookconfigurations")
        if config["metadata"]["name"] == app.WEBHOOK_CONFIG
        for hook in config.get("webhooks", [])
    ]


async def call(
    port: int, client_config: dict[str, Any], obj: dict[str, Any], *, hostname: str = HOST
) -> dict[str, Any]:
    """What the API server does with a `service` client config: HTTPS to the Service (here the
    operator's port on loopback), the certificate verified against caBundle for NAME.NS.svc."""
    service = client_config["service"]
    cadata = base64.b64decode(client_config["caBundle"]).decode()
    context = ssl.create_default_context(cadata=cadata)
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    url = f"https://127.0.0.1:{port}{service['path']}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, json=review_request(obj), ssl=context, server_hostname=hostname) as answer,
    ):
        assert answer.status == 200
        response: dict[str, Any] = (await answer.json())["response"]
        return response


@pytest.mark.asyncio
async def test_https_admission_verified_with_the_ca_bundle_kopf_wrote(
    apiserver: RealApiServer, tls_operator: int
) -> None:
    hooks = await eventually(lambda: validating_hooks(apiserver), what="webhook configuration")
    hook = next(h for h in hooks if h["name"].startswith("validate-tunnel"))
    client_config = hook["clientConfig"]
    assert "url" not in client_config  # the API server may not resolve cluster DNS names
    assert client_config["service"]["name"] == "kube-l2tp-webhook"
    assert client_config["service"]["namespace"] == "kube-l2tp"
    assert client_config["service"]["port"] == tls_operator
    assert client_config["service"]["path"].startswith("/validate-tunnel")

    allowed = await call(tls_operator, client_config, tunnel("good"))
    assert allowed["allowed"], allowed
    denied = await call(tls_operator, client_config, tunnel("bad", remote="not-an-ip"))
    assert not denied["allowed"]
    assert "spec.remote" in denied["status"]["message"]

    # the same request to a name the certificate does not carry, or trusting only the system's
    # CAs, fails: the verification above was real
    with pytest.raises(aiohttp.ClientConnectorCertificateError):
        await call(tls_operator, client_config, tunnel("good"), hostname="elsewhere.svc")
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.post(f"https://127.0.0.1:{tls_operator}/", server_hostname=HOST)
