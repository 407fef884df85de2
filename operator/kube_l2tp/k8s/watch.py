"""A node's view of its own L2TP objects: list + watch, filtered by the API server.

The field selector `spec.nodeName=<node>` (a CRD selectableField) means the server never sends
this agent another node's objects. The cache survives API outages untouched: losing the API
must never look like "everything was deleted" and tear down the data plane. On reconnect it
resumes from the last resourceVersion, or relists when that is too old (410 Gone).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from kube_l2tp.api.crd import GROUP, SESSION_KIND, TUNNEL_KIND, VERSION

log = logging.getLogger("kube_l2tp.k8s")

BACKOFF_MAX = 30.0
WATCH_TIMEOUT = 300  # server-side watch timeout; the watch is simply restarted
UNSUPPORTED_RETRY = 60.0  # a CRD without selectableFields: look again this often (it may be fixed)
NEEDS = "Kubernetes 1.31 or later"  # CRD selectableFields (beta, on by default, in 1.31)


def field_selector_refused(exc: ApiException) -> bool:
    """The server answered, but cannot select these objects by spec.nodeName: a CRD without
    selectableFields (an older CRD applied, or a server older than 1.31, which drops the field)."""
    return exc.status == 400 and "field label not supported" in str(exc.body or exc.reason)


class NodeCache(threading.Thread):
    """One kind's objects for one node, kept current in a daemon thread."""

    def __init__(
        self,
        api: client.CustomObjectsApi,
        plural: str,
        node: str,
        on_change: Callable[[str, dict[str, Any] | None], None],
    ) -> None:
        super().__init__(name=f"watch-{plural}", daemon=True)
        self.api = api
        self.plural = plural
        self.selector = f"spec.nodeName={node}"
        self.on_change = on_change  # (event type or "LIST", the object or None), after caching
        self.objects: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()  # a first list has completed
        self.connected = False
        self.problem = ""  # why the server cannot serve this node's objects (it answered)
        self.events_received = 0
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._version = ""

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.objects.values())

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        backoff = 1.0
        while not self.stopping.is_set():
            try:
                if not self._version:
                    self._list()
                self._watch()
                backoff = 1.0
            except ApiException as exc:
                if exc.status == 410:  # our resourceVersion is too old: list again
                    self._version = ""
                    continue
                if field_selector_refused(exc):
                    self._unsupported(exc)
                    continue
                backoff = self._lost(exc, backoff)
            except Exception as exc:  # connection refused, reset, timeouts: keep the cache
                backoff = self._lost(exc, backoff)

    def _unsupported(self, exc: ApiException) -> None:
        """Not an outage: say what is wrong and what is needed, once, and look again later."""
        self.connected = True
        version = self._server_version()
        problem = (
            f"the API server ({version}) cannot select {self.plural} by spec.nodeName"
            f" ({str(exc.body or exc.reason).strip()}): the agent needs the CRD's"
            f" selectableFields, served by {NEEDS}. Apply the CRDs of this release"
            " (kubectl apply --server-side -f crds/) on such a server; until then this agent"
            " receives no objects and programs nothing"
        )
        if problem != self.problem:
            log.error("%s", problem)
        self.problem = problem
        self.stopping.wait(UNSUPPORTED_RETRY)

    def _server_version(self) -> str:
        try:
            info = client.VersionApi(self.api.api_client).get_code()
        except Exception:  # the version is a detail of the message, not worth failing over
            return "version unknown"
        return f"Kubernetes {info.git_version}"

    def _lost(self, exc: BaseException, backoff: float) -> float:
        if self.connected:
            log.warning("%s: API unreachable (%s); keeping the last known state", self.plural, exc)
        self.connected = False
        self.stopping.wait(backoff)
        return min(backoff * 2, BACKOFF_MAX)

    def _list(self) -> None:
        body: dict[str, Any] = self.api.list_cluster_custom_object(  # type: ignore[assignment]
            GROUP, VERSION, self.plural, field_selector=self.selector
        )
        with self._lock:
            self.objects = {o["metadata"]["name"]: o for o in body.get("items", [])}
        self._version = body["metadata"]["resourceVersion"]
        self.connected = True
        self.problem = ""
        self.synced.set()
        self.on_change("LIST", None)

    def _watch(self) -> None:
        stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
            self.api.list_cluster_custom_object,
            GROUP,
            VERSION,
            self.plural,
            field_selector=self.selector,
            resource_version=self._version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_TIMEOUT,
        )
        self.connected = True
        for event in stream:
            if self.stopping.is_set():
                return
            kind: str = event["type"]
            obj: dict[str, Any] = event["object"]
            if kind == "ERROR":
                code = obj.get("code") if isinstance(obj, dict) else None
                raise ApiException(status=code or 500, reason=str(obj))
            self._version = obj["metadata"]["resourceVersion"]
            if kind == "BOOKMARK":
                continue
            self.events_received += 1
            name = obj["metadata"]["name"]
            with self._lock:
                if kind == "DELETED":
                    self.objects.pop(name, None)
                else:
                    self.objects[name] = obj
            self.on_change(kind, obj)
        # The server closed the watch (its timeout): run() resumes it from _version.


# (kind, event type or "LIST", the object or None), after caching
OnChange = Callable[[str, str, dict[str, Any] | None], None]


def node_caches(
    api: client.CustomObjectsApi, node: str, on_change: OnChange
) -> tuple[NodeCache, NodeCache]:
    """This node's L2TPTunnel and L2TPSession caches (not started)."""

    def on(kind: str) -> Callable[[str, dict[str, Any] | None], None]:
        return lambda event, obj: on_change(kind, event, obj)

    return (
        NodeCache(api, "l2tptunnels", node, on(TUNNEL_KIND)),
        NodeCache(api, "l2tpsessions", node, on(SESSION_KIND)),
    )
