"""A typed view of this node's L2TP objects as the API server sent them.

The agent reads a few fields of each object (metadata for finalizers and status, the ids that
say which kernel objects it declared) and hands the spec to the validator. These frozen
dataclasses hold exactly that, built once per watch copy, so no later phase indexes raw dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kube_l2tp.api.crd import SESSION_KIND, TUNNEL_KIND


@dataclass(frozen=True)
class ApiObject:
    """One L2TPTunnel or L2TPSession, as one copy of it (a resourceVersion) says."""

    kind: str  # TUNNEL_KIND | SESSION_KIND
    name: str
    uid: str | None
    generation: int
    resource_version: str
    created: str  # creationTimestamp ("" when absent)
    deleting: bool  # a deletionTimestamp is set
    finalizers: tuple[str, ...]
    # What the validator checks: the object without server-set fields and status.
    manifest: Mapping[str, Any]
    status: Mapping[str, Any]  # as the server has it in this copy ({} when none)
    tunnel_id: int | None = None  # an L2TPTunnel's spec.tunnelID
    tunnel_ref: str = ""  # an L2TPSession's spec.tunnelRef
    session_id: int | None = None  # an L2TPSession's spec.sessionID

    @property
    def subject(self) -> str:
        return f"{self.kind}/{self.name}"

    @classmethod
    def of(cls, kind: str, obj: Mapping[str, Any]) -> ApiObject:
        meta = obj["metadata"]
        spec = obj.get("spec") or {}
        return cls(
            kind=kind,
            name=meta["name"],
            uid=meta.get("uid"),
            generation=meta.get("generation", 0),
            resource_version=str(meta.get("resourceVersion", "")),
            created=meta.get("creationTimestamp") or "",
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=tuple(meta.get("finalizers") or ()),
            manifest={
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "metadata": {"name": meta["name"], "generation": meta.get("generation", 0)},
                "spec": obj.get("spec"),
            },
            status=obj.get("status") or {},
            tunnel_id=spec.get("tunnelID") if kind == TUNNEL_KIND else None,
            tunnel_ref=spec.get("tunnelRef", "") if kind == SESSION_KIND else "",
            session_id=spec.get("sessionID") if kind == SESSION_KIND else None,
        )


@dataclass(frozen=True)
class ClusterView:
    """This node's objects at one moment, by subject ("L2TPTunnel/name"), tunnels first."""

    objects: Mapping[str, ApiObject]

    @classmethod
    def of(
        cls, tunnels: Iterable[Mapping[str, Any]], sessions: Iterable[Mapping[str, Any]]
    ) -> ClusterView:
        objects: dict[str, ApiObject] = {}
        for kind, items in ((TUNNEL_KIND, tunnels), (SESSION_KIND, sessions)):
            for obj in items:
                o = ApiObject.of(kind, obj)
                objects[o.subject] = o
        return cls(objects)

    def deleting(self) -> frozenset[str]:
        return frozenset(s for s, o in self.objects.items() if o.deleting)

    def tunnel_of(self, session: ApiObject) -> ApiObject | None:
        return self.objects.get(f"{TUNNEL_KIND}/{session.tunnel_ref}")
