"""A minimal HTTP client for the emulator's own tests: exact requests in, exact answers out.

The official clients hide status codes, headers and the raw watch stream; these tests assert
exactly those, so they speak HTTP themselves (stdlib only).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Answer:
    code: int
    body: Any
    headers: dict[str, str]

    @property
    def causes(self) -> list[dict[str, str]]:
        return list((self.body.get("details") or {}).get("causes", []))


class Rest:
    def __init__(self, url: str) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Answer:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, data, {"Content-Type": content_type, **(headers or {})})
            response = conn.getresponse()
            raw = response.read()
            return Answer(response.status, json.loads(raw) if raw else None, dict(response.headers))
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Answer:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Answer:
        return self.request("PUT", path, body, **kw)

    def merge(self, path: str, body: Any) -> Answer:
        return self.request("PATCH", path, body, content_type="application/merge-patch+json")

    def json_patch(self, path: str, ops: list[dict[str, Any]]) -> Answer:
        return self.request("PATCH", path, ops, content_type="application/json-patch+json")

    def delete(self, path: str, body: Any = None) -> Answer:
        return self.request("DELETE", path, body)

    def watch(self, path: str, **params: str) -> WatchStream:
        query = urllib.parse.urlencode({"watch": "true", **params})
        return WatchStream(self.host, self.port, f"{path}?{query}")


class WatchStream:
    """An open watch, read by a thread of its own so that waiting for an event can time out
    without corrupting the HTTP stream (a socket file is unusable after a timeout)."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self._conn = http.client.HTTPConnection(host, port, timeout=60)
        self._conn.request("GET", path)
        self.response = self._conn.getresponse()
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while line := self.response.readline():
                self._lines.put(line)
        except Exception:  # closed under it by the test or by the server
            pass
        finally:
            self._lines.put(None)

    def next(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The next event; None once the server ended the stream; TimeoutError when quiet."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no watch event in time") from None
        if line is None:
            self._lines.put(None)  # stay ended
            return None
        event: dict[str, Any] = json.loads(line)
        return event

    def take(self, count: int, timeout: float = 2.0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(count):
            event = self.next(timeout)
            assert event is not None, f"stream ended after {events}"
            events.append(event)
        return events

    def quiet(self, timeout: float = 0.3) -> bool:
        """Whether nothing arrives for a while (the way to assert "no event was sent")."""
        try:
            return self.next(timeout) is None
        except TimeoutError:
            return True

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reader blocked in recv()
        self._reader.join(timeout=5)
        self._conn.close()
        self.response.close()

    def __enter__(self) -> WatchStream:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
