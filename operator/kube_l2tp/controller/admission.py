"""What the admission webhooks decide, as plain functions over dicts (kopf calls them).

The same rules as `kube-l2tp validate`: the CRD's schema and CEL rules (with the old object on
update), then the cross-object rules over the cluster's objects plus the incoming one. Only the
problems about the incoming object are reported: an object already stored is not the fault of
the one being admitted. A session whose tunnel does not exist yet is admitted with a warning,
so `kubectl apply -f dir/` works in any order; its agent reports TunnelNotFound meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kube_l2tp.api import crd, validation
from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity


@dataclass(frozen=True)
class Verdict:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.errors

    def message(self) -> str:
        """One line per problem, as the user sees it in kubectl's error."""
        return "\n".join(self.errors)


def _line(p: Problem) -> str:
    return f"{p.path}: {p.message}" if p.path else p.message


def _typed(kind: str, objs: Iterable[Mapping[str, Any]], skip: str) -> list[Any]:
    """Stored objects were validated and defaulted by the API server: trust, but skip junk."""
    out: list[Any] = []
    cls = Tunnel if kind == crd.TUNNEL_KIND else Session
    for obj in objs:
        try:
            if obj["metadata"]["name"] != skip:
                out.append(cls.from_object(dict(obj)))
        except (KeyError, TypeError):
            continue
    return out


def review(
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    tunnels: Iterable[Mapping[str, Any]],
    sessions: Iterable[Mapping[str, Any]],
) -> Verdict:
    """Errors and warnings for an incoming object, against the cluster's other objects."""
    obj_dict = dict(body)
    problems, obj = validation.check_object(obj_dict, old=dict(old) if old is not None else None)
    if obj is None:
        return Verdict(
            [_line(p) for p in problems if p.severity is Severity.ERROR],
            [_line(p) for p in problems if p.severity is Severity.WARNING],
        )
    kind = crd.TUNNEL_KIND if isinstance(obj, Tunnel) else crd.SESSION_KIND
    others_t = _typed(crd.TUNNEL_KIND, tunnels, obj.name if kind == crd.TUNNEL_KIND else "")
    others_s = _typed(crd.SESSION_KIND, sessions, obj.name if kind == crd.SESSION_KIND else "")
    # The incoming object goes last: rules that find a duplicate report the later one.
    if isinstance(obj, Tunnel):
        resources = Resources((*others_t, obj), tuple(others_s))
    else:
        resources = Resources(tuple(others_t), (*others_s, obj))
    errors: list[str] = []
    warnings = [_line(p) for p in problems]
    for p in validation.check_set(resources):
        if p.kind != kind or p.name != obj.name:
            continue
        if isinstance(obj, Session) and p.path == "spec.tunnelRef":
            warnings.append(
                f"spec.tunnelRef: no L2TPTunnel named {obj.tunnel_ref!r} yet: the session is"
                " not programmed (Ready False, reason TunnelNotFound) until it is created"
            )
        elif p.severity is Severity.ERROR:
            errors.append(_line(p))
        else:
            warnings.append(_line(p))
    return Verdict(errors, warnings)


def spec_unchanged(body: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """An update of metadata only (an agent removing its finalizer) needs no review."""
    return old is not None and body.get("spec") == old.get("spec")


def session_node(spec: Mapping[str, Any], tunnels: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The nodeName to fill into a session that has none: its tunnel's, if the tunnel exists."""
    if spec.get("nodeName"):
        return None
    tunnel = tunnels.get(str(spec.get("tunnelRef", "")))
    if tunnel is None:
        return None
    node = tunnel.get("spec", {}).get("nodeName")
    return str(node) if node else None
