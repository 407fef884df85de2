"""What an agent writes to the API: per-node finalizers, status, and Events.

Writes are skipped when nothing changed, so a converged node makes no API traffic. Every write
is best effort: a failure is logged and retried at the next reconcile; the kernel is never
touched because of an API error.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from kube_l2tp.api.crd import GROUP, VERSION
from kube_l2tp.api.reasons import Reason
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.finalizers import node_finalizer
from kube_l2tp.k8s.view import ApiObject

log = logging.getLogger("kube_l2tp.k8s")

PLURALS = {"L2TPTunnel": "l2tptunnels", "L2TPSession": "l2tpsessions"}
EVENT_NAMESPACE = "default"  # Events about cluster-scoped objects live in "default"


@dataclass
class _Written:
    """What this writer last wrote to one object, and the object's versions that cannot show
    more recent writes of anyone else: a watch's cached copy at one of them may lag behind."""

    versions: set[str]  # the versions our writes were based on and the ones they produced
    latest: str  # the version our last write produced
    status: Mapping[str, Any] | None = None
    finalized: bool | None = None  # whether our last finalizer write left our finalizer on


class Writer:
    def __init__(self, api: client.CustomObjectsApi, core: client.CoreV1Api, node: str) -> None:
        self.api = api
        self.core = core
        self.node = node
        self.finalizer = node_finalizer(node)
        self.writes = 0
        self._written: dict[tuple[str, str], _Written] = {}  # (kind, name) -> our last writes

    def add_finalizer(self, obj: ApiObject) -> bool:
        """Before the agent programs an object: deleting it must first clean this node's kernel."""
        if obj.deleting or self.finalized(obj):
            return True
        others = [f for f in obj.finalizers if f != self.finalizer]
        return self._patch_meta(obj, [*others, self.finalizer])

    def remove_finalizer(self, obj: ApiObject) -> bool:
        if not self.finalized(obj):
            return True
        return self._patch_meta(obj, [f for f in obj.finalizers if f != self.finalizer])

    def finalized(self, obj: ApiObject) -> bool:
        """Whether the object has this node's finalizer, counting our writes the cache lacks."""
        written = self._since(obj)
        if written is not None and written.finalized is not None:
            return written.finalized
        return self.finalizer in obj.finalizers

    def _patch_meta(self, obj: ApiObject, finalizers: list[str]) -> bool:
        # The resourceVersion makes it a compare-and-swap: a concurrent change makes it fail
        # (409) instead of dropping another controller's finalizer.
        body = {"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version}}
        try:
            answer = self.api.patch_cluster_custom_object(
                GROUP, VERSION, PLURALS[obj.kind], obj.name, body
            )
        except ApiException as exc:
            log.info("%s: finalizer update deferred: %s", obj.subject, exc.reason)
            return False
        self.writes += 1
        self._wrote(obj, answer).finalized = self.finalizer in finalizers
        return True

    def status(self, obj: ApiObject, status: Mapping[str, Any]) -> None:
        """Merge-patch /status when it differs from what the object already says."""
        current = self.current_status(obj)
        merged = dict(current)
        merged.update(status)
        merged["conditions"] = current.get("conditions") or []
        for cond in status.get("conditions", []):
            merged["conditions"] = conditions.merge(merged["conditions"], cond)
        if _same(current, merged):
            return
        try:
            answer = self.api.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURALS[obj.kind], obj.name, {"status": merged}
            )
        except ApiException as exc:
            log.info("%s: status update deferred: %s", obj.subject, exc.reason)
            return
        self.writes += 1
        self._wrote(obj, answer).status = merged

    def seen(self, obj: ApiObject) -> bool:
        """Whether this copy of the object is one of our writes' results, or the copy a write of
        ours was based on: a watch event bringing it back tells the agent nothing new."""
        written = self._written.get((obj.kind, obj.name))
        return written is not None and obj.resource_version in written.versions

    def current_status(self, obj: ApiObject) -> Mapping[str, Any]:
        """The object's status as the server has it, counting our writes the cache lacks
        (comparing with a lagging copy would write the same status twice)."""
        written = self._since(obj)
        if written is not None and written.status is not None:
            return written.status
        return obj.status

    def _since(self, obj: ApiObject) -> _Written | None:
        """Our writes to this object, if the copy given cannot show anything newer."""
        key = (obj.kind, obj.name)
        written = self._written.get(key)
        version = obj.resource_version
        if written is None or version in written.versions:
            if written is not None and version == written.latest:
                written.versions = {version}  # caught up: older versions will not come back
            return written
        del self._written[key]  # someone else wrote after us: the copy is the truth now
        return None

    def _wrote(self, obj: ApiObject, answer: Any) -> _Written:
        key = (obj.kind, obj.name)
        after = answer.get("metadata") if isinstance(answer, dict) else None
        latest = str((after or {}).get("resourceVersion", ""))
        based_on = obj.resource_version
        written = self._written.get(key)
        if written is None:
            written = self._written[key] = _Written({based_on}, latest)
        written.versions |= {based_on, latest}
        written.latest = latest
        return written

    def event(self, obj: ApiObject, reason: Reason, message: str, warning: bool) -> None:
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{obj.name}."),
            involved_object=client.V1ObjectReference(
                api_version=f"{GROUP}/{VERSION}", kind=obj.kind, name=obj.name, uid=obj.uid
            ),
            reason=str(reason),
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
            log.info("event for %s not posted: %s", obj.subject, exc.reason)


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal apart from condition transition times (kept by conditions.merge anyway)."""

    def strip(s: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(s)
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "lastTransitionTime"}
            for c in s.get("conditions", [])
        ]
        return out

    return strip(a) == strip(b)
