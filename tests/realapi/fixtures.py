"""What the real-API fixtures of tests/conftest.py are made of (see server.py for the server).

The fixtures live in tests/conftest.py so that one control plane serves a whole test session,
whichever directories it spans (a fixture defined in two conftest files would start two).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .server import REPO, RealApiServer

STARTED: list[RealApiServer] = []  # for the summary line


def fetch_kubectl() -> Path:
    fetched = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-k8s-tools.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return Path(fetched.stdout.strip().splitlines()[-1]) / "kubectl"


class Kubectl:
    """kubectl with its own HOME (discovery cache) and a kubeconfig (admin's by default)."""

    def __init__(self, binary: Path, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        home.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def __call__(
        self, *args: str, ok: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args],
            check=False,
            env=self.env,
            cwd=REPO,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done


def serve(workdir: Path, kubectl_bin: Path) -> Iterator[RealApiServer]:
    """etcd + kube-apiserver for the whole session, the CRDs applied server-side, KUBECONFIG
    (admin) set for the test process and its subprocesses."""
    with RealApiServer(workdir) as server:
        STARTED.append(server)
        kubectl = Kubectl(kubectl_bin, server.kubeconfig, server.workdir / "home")
        kubectl("apply", "--server-side", "-f", "crds/")
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("KUBECONFIG", str(server.kubeconfig))
            yield server


def clean(server: RealApiServer) -> Iterator[RealApiServer]:
    """The session's server with no L2TP objects and no stale webhooks, at the start and end."""
    server.start_apiserver()  # in case a test's outage ended in a failure
    server.reset()
    yield server
    server.start_apiserver()
    server.reset()


def summary(terminalreporter: Any) -> None:
    for server in STARTED:
        terminalreporter.write_line(
            f"real API server: kube-apiserver {server.version} + etcd started (fresh data dir"
            f" and PKI) in {server.start_seconds:.1f} s"
        )


@contextlib.contextmanager
def operator_thread(config: Any, timeout: float = 30.0) -> Iterator[None]:
    """The operator (kopf) in a thread with its own event loop, as in its own process.

    Not in the test's loop: the real API server calls the operator's webhooks while a test waits
    for a write (kubectl, a blocking client call); in a shared loop that wait would block the
    webhook server, and the API server would time out on its TLS handshake.
    """
    from kube_l2tp.controller import app

    stop, ready = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(app.operator(config, stop_flag=stop, ready_flag=ready))
        except BaseException as exc:  # reported to the test below
            errors.append(exc)
            ready.set()

    thread = threading.Thread(target=run, name="operator", daemon=True)
    thread.start()
    try:
        assert ready.wait(timeout), "the operator did not get ready"
        assert not errors, f"the operator failed: {errors[0]!r}"
        yield
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the operator did not stop"
