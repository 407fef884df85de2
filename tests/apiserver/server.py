"""Run the emulator on 127.0.0.1 in a thread of its own: startable, stoppable, restartable.

A thread of its own, because the clients under test are of every kind: kubectl is a subprocess,
the official `kubernetes` client blocks, kopf runs in the test's event loop. None of them may
share (or block) the server's loop. Stopping closes every watch and the listening socket while
the state stays, so a test can stage an API outage and watch clients retry and resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp.web
import yaml

from .emulator import CRDS, Emulator

T = TypeVar("T")
CRD_PATH = f"/apis/{CRDS.group}/{CRDS.version}/{CRDS.plural}"


@functools.lru_cache(maxsize=32)
def _documents(path: Path, mtime_ns: int) -> list[Any]:
    """A manifest file's documents, parsed once per process (PyYAML is most of a start-up)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return [doc for doc in yaml.load_all(path.read_text(), Loader=loader) if doc]


@dataclass(frozen=True)
class WatchRecord:
    """A snapshot of one watch: what it asked for and every event it was sent."""

    id: int
    resource: str  # plural, e.g. "l2tptunnels"
    namespace: str | None
    label_selector: str
    field_selector: str
    sent: tuple[tuple[str, str], ...]  # (event type, object name), bookmarks excluded
    open: bool

    @property
    def names(self) -> set[str]:
        return {name for _, name in self.sent}


class ApiServerError(RuntimeError):
    """A request made by the test harness itself was refused."""


class ApiServer:
    """The emulator served over HTTP on loopback; also a context manager."""

    def __init__(
        self,
        *,
        crds: Iterable[Path] = (),
        kubeconfig: Path | None = None,
        bookmark_interval: float = 30.0,
        history_limit: int = 100_000,
        host: str = "127.0.0.1",
    ) -> None:
        self._crds = list(crds)
        self.host = host  # "0.0.0.0" for clients in other network namespaces (the VM's e2e)
        self._options: dict[str, Any] = {
            "bookmark_interval": bookmark_interval,
            "history_limit": history_limit,
        }
        self.kubeconfig = kubeconfig
        self.port = 0  # chosen by the kernel on the first start, kept across restarts
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="apiserver")
        self._emulator: Emulator | None = None
        self._runner: aiohttp.web.ServerRunner | None = None

    # --- lifecycle ---

    def __enter__(self) -> ApiServer:
        self._thread.start()
        try:
            self.run(self._setup())
            self.start()
        except BaseException:
            self.close()
            raise
        if self.kubeconfig is not None:
            self.write_kubeconfig(self.kubeconfig)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _setup(self) -> None:
        self._emulator = Emulator(**self._options)
        await self._emulator.__aenter__()
        for path in self._crds:
            for doc in _documents(path, path.stat().st_mtime_ns):
                answer = self._emulator.submit("POST", CRD_PATH, copy.deepcopy(doc))
                self._check(answer, f"preload {path}")

    @property
    def emulator(self) -> Emulator:
        """The emulator itself: touch it only through call() (it lives in the server's loop)."""
        assert self._emulator is not None, "not entered"
        return self._emulator

    @property
    def url(self) -> str:
        return f"http://{'127.0.0.1' if self.host == '0.0.0.0' else self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    def start(self) -> None:
        """Listen (again) on the same port; the objects and the change log are as they were."""
        self.run(self._start())

    def stop(self) -> None:
        """An API outage: close every watch and connection; new connections are refused."""
        self.run(self._stop())

    @contextlib.contextmanager
    def outage(self) -> Iterator[None]:
        self.stop()
        try:
            yield
        finally:
            self.start()

    async def _start(self) -> None:
        if self._runner is not None:
            return
        server = aiohttp.web.Server(self.emulator, handler_cancellation=True)
        runner = aiohttp.web.ServerRunner(server, shutdown_timeout=1.0)
        await runner.setup()
        site = aiohttp.web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def _stop(self) -> None:
        if self._runner is None:
            return
        self.emulator.close_watches()
        runner, self._runner = self._runner, None
        server = runner.server
        await runner.cleanup()
        # A connection accepted just before the listening socket closed reaches aiohttp after its
        # shutdown: give it a moment to arrive, then drop it (else it leaks, unclosed).
        await asyncio.sleep(0.05)
        for handler in server.connections if isinstance(server, aiohttp.web.Server) else ():
            handler.force_close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            if self._emulator is not None:
                self.run(self._stop())
                self.run(self._emulator.__aexit__(None, None, None))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    # --- crossing into the server's thread ---

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine in the server's loop and wait for it (not from that loop itself)."""
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call a function in the server's loop, where the emulator's state may be touched."""

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    # --- conveniences for tests ---

    def submit(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One request through the API logic (no HTTP): status code and body."""
        return self.call(
            lambda: self.emulator.submit(
                method, path, body, params=params, content_type=content_type
            )
        )

    def create(self, body: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create an object (validated like any other) and return it as stored."""
        api_version, kind = body["apiVersion"], body["kind"]
        path = self.path_for(api_version, kind, namespace)
        result: dict[str, Any] = self._check(self.submit("POST", path, dict(body)), "create")
        return result

    def path_for(self, api_version: str, kind: str, namespace: str | None = None) -> str:
        """The collection URL of a kind, found through discovery as a client would."""
        prefix = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
        resources = self.emulator.resources
        for res, info in self.call(lambda: [(r, resources[r]) for r in resources]):
            version = f"{res.group}/{res.version}" if res.group else res.version
            if version == api_version and info.kind == kind:
                scope = f"/namespaces/{namespace}" if namespace and info.namespaced else ""
                return f"{prefix}{scope}/{res.plural}"
        raise ApiServerError(f"no resource of kind {kind} in {api_version}")

    def objects(self, plural: str) -> list[dict[str, Any]]:
        """The current objects of a resource (any group/version with this plural)."""

        def collect() -> list[dict[str, Any]]:
            return [
                obj.last.raw
                for (res, _, _), obj in self.emulator.objects.items()
                if res.plural == plural and not obj.deleted
            ]

        return self.call(collect)

    def watches(self, plural: str | None = None) -> list[WatchRecord]:
        """Every watch served so far (of one resource, if given), with what each was sent."""

        def collect() -> list[WatchRecord]:
            return [
                WatchRecord(
                    w.id,
                    w.resource,
                    w.namespace,
                    w.label_selector,
                    w.field_selector,
                    tuple(w.sent),
                    w.open,
                )
                for w in self.emulator.watches
                if plural is None or w.resource == plural
            ]

        return self.call(collect)

    def errors(self) -> list[Exception]:
        """Exceptions the emulator itself raised while serving (each became a 500)."""
        return self.call(lambda: list(self.emulator.errors))

    def write_kubeconfig(self, path: Path, server: str | None = None) -> Path:
        """A kubeconfig for this server; `server` is the URL when clients reach it another way."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": server or self.url}}],
            "users": [{"name": "tester", "user": {"token": "emulator"}}],
            "contexts": [
                {"name": "emulator", "context": {"cluster": "emulator", "user": "tester"}}
            ],
            "current-context": "emulator",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    @staticmethod
    def _check(answer: tuple[int, Any], what: str) -> Any:
        code, body = answer
        if code >= 300:
            raise ApiServerError(f"{what}: {code} {body.get('message') if body else ''}")
        return body
