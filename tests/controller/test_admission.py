"""Admission through kopf's own webhook server, with indexes filled from the real API server.

These tests play the API server's part to see each verdict whole (allowed, message, warnings,
patch): they read the webhook configurations kopf created in the server and POST AdmissionReview
requests over HTTPS to the URLs written there, verifying the operator with the caBundle there.
The API server calling them itself is tests/realapi/test_flow.py.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import ssl
import uuid
from typing import Any

import aiohttp
import pytest

from kube_l2tp.controller import admission
from realapi.server import RealApiServer

from .conftest import Running, eventually, session, tunnel

RESOURCES = {"L2TPTunnel": "l2tptunnels", "L2TPSession": "l2tpsessions"}


Hook = dict[str, Any]  # a webhook's clientConfig: url and caBundle


def webhook_urls(api: RealApiServer, plural: str) -> dict[str, Hook]:
    """webhook name -> client config, from the configurations kopf manages in the cluster."""
    urls = {}
    for kind in (plural,):
        for config in api.objects(kind):
            for hook in config.get("webhooks", []):
                urls[hook["name"]] = hook["clientConfig"]
    return urls


def review_request(obj: dict[str, Any], old: dict[str, Any] | None = None) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it for creating (or updating) obj."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "kubel2tp.io", "version": "v1alpha1", "kind": obj["kind"]},
            "resource": {
                "group": "kubel2tp.io",
                "version": "v1alpha1",
                "resource": RESOURCES[obj["kind"]],
            },
            "operation": "UPDATE" if old else "CREATE",
            "userInfo": {"username": "tester"},
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }


def tls_context(hook: Hook) -> ssl.SSLContext:
    """Trusting only the CA the operator wrote into the configuration, as the API server does."""
    return ssl.create_default_context(cadata=base64.b64decode(hook["caBundle"]).decode())


async def review(
    hook: Hook, obj: dict[str, Any], old: dict[str, Any] | None = None
) -> dict[str, Any]:
    request = review_request(obj, old)
    context = tls_context(hook)
    async with (
        aiohttp.ClientSession() as http,
        http.post(hook["url"], json=request, ssl=context) as answer,
    ):
        assert answer.status == 200
        response: dict[str, Any] = (await answer.json())["response"]
        return response


async def hooks(api: RealApiServer) -> dict[str, Hook]:
    validating = await eventually(
        lambda: webhook_urls(api, "validatingwebhookconfigurations"), what="webhook config"
    )
    mutating = await eventually(
        lambda: webhook_urls(api, "mutatingwebhookconfigurations"), what="webhook config"
    )
    return {**validating, **mutating}


def url_of(urls: dict[str, Hook], handler_id: str) -> Hook:
    return next(url for name, url in urls.items() if name.startswith(handler_id))


@pytest.mark.asyncio
async def test_rejects_invalid_and_duplicates_accepts_other_node(
    apiserver: RealApiServer, operator: Running
) -> None:
    urls = await hooks(apiserver)
    validate = url_of(urls, "validate-tunnel")

    bad = tunnel("bad", remote="not-an-ip")
    answer = await review(validate, bad)
    assert not answer["allowed"]
    assert "spec.remote" in answer["status"]["message"]

    apiserver.create(tunnel("first", node="node-a", tunnel_id=3000))
    await eventually(lambda: apiserver.objects("l2tptunnels"), what="stored")

    async def duplicate_rejected() -> dict[str, Any]:
        return await review(validate, tunnel("dup", node="node-a", tunnel_id=3000))

    answer = {}
    for _ in range(50):  # until kopf's index has seen "first"
        answer = await duplicate_rejected()
        if not answer["allowed"]:
            break
        await asyncio.sleep(0.05)
    assert not answer["allowed"]
    message = answer["status"]["message"]
    assert message.startswith("spec.tunnelID: tunnel id 3000 is already used by L2TPTunnel/first")
    assert answer["status"]["code"] == 422

    other = await review(validate, tunnel("elsewhere", node="node-b", tunnel_id=3000))
    assert other["allowed"], other

    # Updating the stored object itself is not a conflict with itself.
    again = await review(validate, tunnel("first", tunnel_id=3000), old=tunnel("first"))
    assert again["allowed"], again


@pytest.mark.asyncio
async def test_session_conflicts_and_warnings(apiserver: RealApiServer, operator: Running) -> None:
    urls = await hooks(apiserver)
    validate = url_of(urls, "validate-session")
    apiserver.create(tunnel("t", node="node-a"))
    apiserver.create(session("s1", "t", 1000, nodeName="node-a", interfaceName="pw0"))
    answer: dict[str, Any] = {}
    for _ in range(50):
        answer = await review(validate, session("s2", "t", 1000))
        if not answer["allowed"]:
            break
        await asyncio.sleep(0.05)
    assert (
        "spec.sessionID: session id 1000 is already used by L2TPSession/s1"
        in (answer["status"]["message"])
    )
    clash = await review(validate, session("s3", "t", 1003, interfaceName="pw0"))
    assert not clash["allowed"]
    assert clash["status"]["message"].startswith("spec.interfaceName: interface name 'pw0'")
    # A tunnel that does not exist yet: admitted, with a warning; offsets: a warning.
    orphan = await review(validate, session("o", "later", 1000, offset=8))
    assert orphan["allowed"], orphan
    warnings = orphan["warnings"]
    assert any(w.startswith("spec.tunnelRef: no L2TPTunnel named 'later' yet") for w in warnings)
    assert any(w.startswith("spec.offset:") for w in warnings)


@pytest.mark.asyncio
async def test_mutating_webhook_fills_node_name(
    apiserver: RealApiServer, operator: Running
) -> None:
    urls = await hooks(apiserver)
    mutate = url_of(urls, "fill-node-name")
    apiserver.create(tunnel("t", node="node-z"))
    patch: list[dict[str, Any]] = []
    for _ in range(50):
        answer = await review(mutate, session("s", "t"))
        assert answer["allowed"]
        if "patch" in answer:
            patch = json.loads(base64.b64decode(answer["patch"]))
            break
        await asyncio.sleep(0.05)
    assert patch == [{"op": "add", "path": "/spec/nodeName", "value": "node-z"}]
    # No tunnel: nothing to fill, still admitted.
    answer = await review(mutate, session("s", "missing"))
    assert answer["allowed"] and "patch" not in answer


def test_review_directly_keeps_only_the_incoming_objects_problems() -> None:
    stored = [tunnel("a", tunnel_id=1), tunnel("b", tunnel_id=1)]  # already in conflict
    verdict = admission.review(tunnel("c", tunnel_id=2), None, stored, [])
    assert verdict.allowed, verdict
    verdict = admission.review(tunnel("c", tunnel_id=1), None, stored, [])
    assert verdict.errors == [
        "spec.tunnelID: tunnel id 1 is already used by L2TPTunnel/a on node 'node-a':"
        " tunnel ids must be unique per node",
        "spec.udp.sourcePort: 192.0.2.1 port 5001 is already used by L2TPTunnel/a on node"
        " 'node-a': each UDP tunnel needs its own local address and source port",
    ]
    assert verdict.message().count("\n") == 1  # one line per problem
    assert admission.spec_unchanged(tunnel("a"), tunnel("a"))


def _envelope(**request: Any) -> dict[str, Any]:
    base = review_request(tunnel("env"))
    base["request"].update(request)
    return base


HOSTILE_ENVELOPES: list[tuple[str, bytes, str]] = [
    # (case, body, what the answer must be: "400" or a fragment of the denial's message)
    ("null", b"null", "400"),
    ("list", b"[]", "400"),
    ("string", b'"review"', "400"),
    ("invalid-utf8", b'{"request": "\xff"}', "400"),
    ("not-json", b"{", "400"),
    ("deep", b"[" * 100000 + b"]" * 100000, "400"),
    ("no-uid", json.dumps({"apiVersion": "admission.k8s.io/v1", "request": {}}).encode(), "400"),
    (
        "update-null-object",
        json.dumps(_envelope(operation="UPDATE", object=None, oldObject=tunnel("env"))).encode(),
        "request.object must be an object for UPDATE",
    ),
    (
        "update-null-old",
        json.dumps(_envelope(operation="UPDATE", oldObject=None)).encode(),
        "request.oldObject must be an object for UPDATE",
    ),
    (
        "unknown-version",
        json.dumps({**_envelope(), "apiVersion": "admission.k8s.io/v2"}).encode(),
        "not understood: apiVersion 'admission.k8s.io/v2'",
    ),
    (
        "kind-list",
        json.dumps(_envelope(object={"kind": "List", "items": [tunnel("x")]})).encode(),
        "request.object.kind must be L2TPTunnel or L2TPSession",
    ),
    (
        "deep-object",
        json.dumps(
            _envelope(
                object={
                    **tunnel("d"),
                    "spec": functools.reduce(lambda a, _: {"a": a}, range(200), {}),
                }
            )
        ).encode(),
        "nested more than 64 levels",
    ),
    ("no-user", json.dumps(_envelope(userInfo=None)).encode(), "request.userInfo is missing"),
    ("delete", json.dumps(_envelope(operation="DELETE")).encode(), "operation 'DELETE'"),
]


@pytest.mark.asyncio
async def test_envelopes_it_does_not_understand_are_denied(
    apiserver: RealApiServer, operator: Running
) -> None:
    """Never a 500 (which failurePolicy Ignore would admit): 400 where there is no request to
    answer, else a denial saying what was not understood; the webhook keeps serving."""
    urls = await hooks(apiserver)
    for hook in ("validate-tunnel", "fill-node-name"):
        config = url_of(urls, hook)
        url, context = config["url"], tls_context(config)
        async with aiohttp.ClientSession() as http:
            for case, body, expected in HOSTILE_ENVELOPES:
                headers = {"Content-Type": "application/json"}
                async with http.post(url, data=body, headers=headers, ssl=context) as answer:
                    if expected == "400":
                        assert answer.status == 400, (hook, case, answer.status)
                        assert (await answer.json())["message"], case
                        continue
                    assert answer.status == 200, (hook, case, await answer.text())
                    response = (await answer.json())["response"]
                    assert response["allowed"] is False, (hook, case)
                    assert expected in response["status"]["message"], (case, response)
    good = await review(url_of(urls, "validate-tunnel"), tunnel("fine"))
    assert good["allowed"], good
