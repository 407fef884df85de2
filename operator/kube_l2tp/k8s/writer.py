"""What an agent writes to the API: per-node finalizers, status, and Events.

Writes are skipped when nothing changed, so a converged node makes no API traffic. Every write
is best effort: a failure is logged and retried at the next reconcile; the kernel is never
touched because of an API error.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kube_l2tp.api.crd import GROUP, VERSION
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.finalizers import node_finalizer

log = logging.getLogger("kube_l2tp.k8s")

PLURALS = {"L2TPTunnel": "l2tptunnels", "L2TPSession": "l2tpsessions"}
EVENT_NAMESPACE = "default"  # Events about cluster-scoped objects live in "default"


class Writer:
    def __init__(self, api: client.CustomObjectsApi, core: client.CoreV1Api, node: str) -> None:
        self.api = api
        self.core = core
        self.node = node
        self.finalizer = node_finalizer(node)
        self.writes = 0

    def add_finalizer(self, kind: str, obj: dict[str, Any]) -> bool:
        """Before the agent programs an object: deleting it must first clean this node's kernel."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if self.finalizer in finalizers or meta.get("deletionTimestamp"):
            return True
        return self._patch_meta(kind, meta, [*finalizers, self.finalizer])

    def remove_finalizer(self, kind: str, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if self.finalizer not in finalizers:
            return True
        return self._patch_meta(kind, meta, [f for f in finalizers if f != self.finalizer])

    def _patch_meta(self, kind: str, meta: dict[str, Any], finalizers: list[str]) -> bool:
        # The resourceVersion makes it a compare-and-swap: a concurrent change makes it fail
        # (409) instead of dropping another controller's finalizer.
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": meta["resourceVersion"]}}
        try:
            self.api.patch_cluster_custom_object(GROUP, VERSION, PLURALS[kind], meta["name"], body)
        except ApiException as exc:
            log.info("%s/%s: finalizer update deferred: %s", kind, meta["name"], exc.reason)
            return False
        self.writes += 1
        return True

    def status(self, kind: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        """Merge-patch /status when it differs from what the object already says."""
        current = obj.get("status") or {}
        merged = dict(current)
        merged.update(status)
        merged["conditions"] = current.get("conditions") or []
        for cond in status.get("conditions", []):
            merged["conditions"] = conditions.merge(merged["conditions"], cond)
        if _same(current, merged):
            return
        name = obj["metadata"]["name"]
        try:
            self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURALS[kind], name, {"status": merged}
            )
            self.writes += 1
        except ApiException as exc:
            log.info("%s/%s: status update deferred: %s", kind, name, exc.reason)

    def event(
        self, kind: str, obj: dict[str, Any], reason: str, message: str, warning: bool
    ) -> None:
        meta = obj["metadata"]
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}."),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=kind, name=meta["name"], uid=meta.get("uid")
            ),
            reason=reason,
            message=message[:1024],
            type="Warning" if warning else "Normal",
            source=client.V1EventSource(component="kube-l2tp-agent", host=self.node),
            first_timestamp=datetime.datetime.now(datetime.UTC),
            last_timestamp=datetime.datetime.now(datetime.UTC),
            count=1,
        )
        try:
            self.core.create_namespaced_event(EVENT_NAMESPACE, body)
            self.writes += 1
        except ApiException as exc:
            log.info("event for %s/%s not posted: %s", kind, meta["name"], exc.reason)


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal apart from condition transition times (kept by conditions.merge anyway)."""

    def strip(s: dict[str, Any]) -> dict[str, Any]:
        out = dict(s)
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions", [])
        ]
        return out

    return strip(a) == strip(b)
