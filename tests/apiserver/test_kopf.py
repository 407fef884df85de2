"""A tiny kopf operator, run in the test's own loop, against the emulator.

What the controller (issue 4) will rely on: create/update/delete handlers, status written
through /status, the finalizer added and released by kopf's JSON patches (which test the
resourceVersion), Events posted, and an API outage survived by kopf's retries and re-watch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import kopf

from .server import ApiServer

GROUP, VERSION, PLURAL = "kubel2tp.io", "v1alpha1", "l2tptunnels"
FINALIZER = "kubel2tp.io/test-operator"
TUNNEL = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "L2TPTunnel",
    "metadata": {"name": "site-a"},
    "spec": {
        "nodeName": "node-a",
        "tunnelID": 3000,
        "peerTunnelID": 4000,
        "local": "192.0.2.1",
        "remote": "192.0.2.2",
        "udp": {"sourcePort": 5000, "destinationPort": 6000},
    },
}
TUNNELS = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def operator(url: str, seen: list[tuple[str, str]]) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.persistence.finalizer = FINALIZER
        prefix = "kubel2tp.io"
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=prefix)
        settings.networking.error_backoffs = [0.1, 0.2, 0.3]  # a short outage, quick retries
        settings.watching.reconnect_backoff = 0.1

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=url, scheme="Bearer", token="emulator")

    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=registry)
    def reconcile(
        name: str, body: kopf.Body, meta: kopf.Meta, patch: kopf.Patch, reason: str, **_: Any
    ) -> None:
        seen.append((str(reason), name))
        patch.status["observedGeneration"] = meta["generation"]
        kopf.info(body, reason="Reconciled", message=f"generation {meta['generation']}")

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    def cleanup(name: str, **_: Any) -> None:
        seen.append(("delete", name))

    return registry


@contextlib.asynccontextmanager
async def running(apiserver: ApiServer, seen: list[tuple[str, str]]) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(
            registry=operator(apiserver.url, seen),
            clusterwide=True,
            standalone=True,
            stop_flag=stop,
        )
    )
    try:
        yield
    finally:
        stop.set()
        # kopf would wait seconds for its streams to close; a test has no need to.
        await asyncio.wait([task], timeout=0.5)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(check):
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def tunnel_of(apiserver: ApiServer) -> dict[str, Any] | None:
    found = apiserver.objects(PLURAL)
    return found[0] if found else None


def posted(apiserver: ApiServer) -> list[dict[str, Any]]:
    return [e for e in apiserver.objects("events") if e["involvedObject"]["name"] == "site-a"]


def test_create_update_delete_status_finalizer_and_events(apiserver: ApiServer) -> None:
    seen: list[tuple[str, str]] = []

    async def scenario() -> None:
        async with running(apiserver, seen):
            await asyncio.to_thread(apiserver.create, TUNNEL)

            def handled(generation: int) -> Callable[[], bool]:
                def check() -> bool:
                    obj = tunnel_of(apiserver)
                    status = (obj or {}).get("status", {})
                    return obj is not None and status.get("observedGeneration") == generation

                return check

            await eventually(handled(1))
            obj = tunnel_of(apiserver)
            assert obj is not None
            assert obj["metadata"]["finalizers"] == [FINALIZER]

            patch = {"spec": {"peerTunnelID": 4001}}
            await asyncio.to_thread(apiserver.submit, "PATCH", f"{TUNNELS}/site-a", patch,
                                    content_type="application/merge-patch+json")  # fmt: skip
            await eventually(handled(2))

            await eventually(lambda: len(posted(apiserver)) == 2)  # posted in the background

            await asyncio.to_thread(apiserver.submit, "DELETE", f"{TUNNELS}/site-a")
            await eventually(lambda: tunnel_of(apiserver) is None)

    asyncio.run(scenario())
    assert seen == [("create", "site-a"), ("update", "site-a"), ("delete", "site-a")]
    events = posted(apiserver)
    assert sorted(e["message"] for e in events) == ["generation 1", "generation 2"]
    assert {e["reason"] for e in events} == {"Reconciled"}
    assert {e["metadata"]["namespace"] for e in events} == {"default"}


def test_operator_survives_an_api_outage(apiserver: ApiServer) -> None:
    seen: list[tuple[str, str]] = []

    async def scenario() -> None:
        async with running(apiserver, seen):
            await asyncio.to_thread(apiserver.create, TUNNEL)
            await eventually(lambda: ("create", "site-a") in seen)
            await asyncio.to_thread(apiserver.stop)
            second = {**TUNNEL, "metadata": {"name": "site-b"}}
            second["spec"] = {**TUNNEL["spec"], "tunnelID": 3001}  # type: ignore[dict-item]
            await asyncio.to_thread(apiserver.submit, "POST", TUNNELS, second)  # while it is down
            await asyncio.sleep(0.5)  # kopf meets refused connections meanwhile
            await asyncio.to_thread(apiserver.start)
            await eventually(lambda: ("create", "site-b") in seen)

    asyncio.run(scenario())
    assert seen.count(("create", "site-a")) == 1  # a re-watch is no reason to handle it again
    reopened = [w for w in apiserver.watches(PLURAL) if w.open or w.sent]
    assert len(reopened) >= 2  # the stream the outage cut, and the one kopf opened after it
