"""The operator run in the test's event loop against the real kube-apiserver (tests/conftest.py),
its admission webhooks served over HTTPS with its own CA on https://127.0.0.1:PORT (the API server
calls them there; nothing here can reach a Service)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from kube_l2tp.controller import app
from realapi.server import RealApiServer

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
    """Poll until check() returns something truthy (the server answers in other threads)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        await asyncio.sleep(0.05)


@pytest.fixture
def apiserver(api: RealApiServer) -> RealApiServer:
    """The real API server (the name the tests had for the emulator they ran on before)."""
    return api


class Running:
    """A running operator: its webhook port (HTTPS, its own CA)."""

    def __init__(self, webhook_port: int) -> None:
        self.webhook_port = webhook_port
        self.url = f"https://127.0.0.1:{webhook_port}"


def operator_config(tls_dir: Path, port: int | None = None) -> app.OperatorConfig:
    """HTTPS on 127.0.0.1 with a certificate the operator makes (the real server wants HTTPS)."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    return app.OperatorConfig(
        health_port=None,
        webhook_port=port or free_port(),
        webhook_host="127.0.0.1",
        tls_dir=tls_dir,
    )


@pytest_asyncio.fixture
async def operator(apiserver: RealApiServer, tmp_path: Path) -> AsyncIterator[Running]:
    """kopf in this loop with a stop flag; cancelled soon after stopping."""
    stop: asyncio.Event = asyncio.Event()
    ready: asyncio.Event = asyncio.Event()
    port = free_port()
    config = operator_config(tmp_path / "tls", port)
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
