"""The operator run in the test's event loop against the emulator (TESTING.md section 3)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from apiserver.fixtures import apiserver, empty_apiserver  # noqa: F401
from apiserver.server import ApiServer
from kube_l2tp.controller import app

GV = "kubel2tp.io/v1alpha1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tunnel(name: str, node: str = "node-a", tunnel_id: int = 3000, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tunnelID": tunnel_id,
            "peerTunnelID": 4000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 5000 + tunnel_id % 1000, "destinationPort": 6000},
            **spec,
        },
    }


def session(name: str, tunnel_ref: str, session_id: int = 1000, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": GV,
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {
            "tunnelRef": tunnel_ref,
            "sessionID": session_id,
            "peerSessionID": session_id + 1000,
            **spec,
        },
    }


def node(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}


async def eventually(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "condition"
) -> Any:
    """Poll until check() returns something truthy (the emulator runs in its own thread)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        await asyncio.sleep(0.05)


class Running:
    """A running operator: its webhook port (plain HTTP) and a way to wait for its indexes."""

    def __init__(self, webhook_port: int) -> None:
        self.webhook_port = webhook_port
        self.url = f"http://127.0.0.1:{webhook_port}"


@pytest_asyncio.fixture
async def operator(apiserver: ApiServer) -> AsyncIterator[Running]:  # noqa: F811
    """kopf in this loop with a stop flag; cancelled soon after stopping (kmock keep-alives)."""
    stop: asyncio.Event = asyncio.Event()
    ready: asyncio.Event = asyncio.Event()
    port = free_port()
    config = app.OperatorConfig(
        health_port=None, webhook_port=port, webhook_host="127.0.0.1", webhook_insecure=True
    )
    task = asyncio.create_task(app.operator(config, stop_flag=stop, ready_flag=ready))
    await asyncio.wait_for(ready.wait(), 10)
    yield Running(port)
    stop.set()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    if not done:
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


Wait = Callable[..., Awaitable[Any]]
