"""What the admission webhooks decide, as plain functions over dicts (kopf calls them).

The same rules as `kube-l2tp validate`: the CRD's schema and CEL rules (with the old object on
update), then the cross-object rules over the cluster's objects plus the incoming one. Only the
problems about the incoming object are reported: an object already stored is not the fault of
the one being admitted. A session whose tunnel does not exist yet is admitted with a warning,
so `kubectl apply -f dir/` works in any order; its agent reports TunnelNotFound meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kube_l2tp.api import crd, validation
from kube_l2tp.api.manifests import echo, shape_problem
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


# --- the envelope: what an AdmissionReview must be before any rule runs ---

REVIEW_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
OPERATIONS = ("CREATE", "UPDATE")  # what the webhook configurations subscribe to


@dataclass(frozen=True)
class Envelope:
    """An AdmissionReview as read off the wire: ``request`` when it is understood, else
    ``status`` (400: no answer can even name the request) or ``response`` (a denial)."""

    request: dict[str, Any] | None = None
    status: int = 200
    response: dict[str, Any] | None = None
    reason: str = ""


def read_envelope(raw: bytes) -> Envelope:
    """Check an AdmissionReview before kopf reads it. The API server never sends anything
    else, but a proxy or a future version might: what is not understood is denied (with
    failurePolicy Ignore, an error answer would admit the object)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Envelope(status=400, reason=f"the body is not UTF-8 (byte {exc.start})")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        return Envelope(status=400, reason=f"the body is not JSON: {str(exc)[:200]}")
    if not isinstance(data, dict):
        return Envelope(status=400, reason=f"an AdmissionReview is a JSON object; got {echo(data)}")
    request = data.get("request")
    uid = request.get("uid") if isinstance(request, dict) else None
    if not isinstance(request, dict) or not isinstance(uid, str) or not uid:
        return Envelope(status=400, reason="request.uid is missing: nothing to answer to")
    version = data.get("apiVersion")
    why = _not_understood(data, request)
    if why:
        answer = version if version in REVIEW_VERSIONS else REVIEW_VERSIONS[0]
        return Envelope(status=200, response=denial(answer, uid, why), reason=why)
    return Envelope(request=data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _not_understood(data: dict[str, Any], request: dict[str, Any]) -> str:
    version, kind = data.get("apiVersion"), data.get("kind")
    if version not in REVIEW_VERSIONS or kind != "AdmissionReview":
        return (
            f"not understood: apiVersion {echo(version)} kind {echo(kind)}; this webhook reads"
            f" AdmissionReview {' or '.join(REVIEW_VERSIONS)}"
        )
    operation = request.get("operation")
    if operation not in OPERATIONS:
        return f"operation {echo(operation)} is not reviewed here (only {', '.join(OPERATIONS)})"
    resource = request.get("resource")
    if not isinstance(resource, dict) or not all(
        isinstance(resource.get(k), str) for k in ("group", "version", "resource")
    ):
        return "request.resource must name a group, version and resource"
    if not isinstance(request.get("userInfo"), dict):
        return "request.userInfo is missing"
    objects = [("object", request.get("object"))]
    if operation == "UPDATE":
        objects.append(("oldObject", request.get("oldObject")))
    for field_name, obj in objects:
        if not isinstance(obj, dict):
            return f"request.{field_name} must be an object for {operation}; got {echo(obj)}"
        if obj.get("kind") not in _KINDS:
            return (
                f"request.{field_name}.kind must be {' or '.join(_KINDS)}; got"
                f" {echo(obj.get('kind'))}"
            )
        shape = shape_problem(obj)
        if shape:
            return f"request.{field_name}: {shape}"
    return ""


_KINDS = (crd.TUNNEL_KIND, crd.SESSION_KIND)


def denial(version: str, uid: str, message: str, code: int = 400) -> dict[str, Any]:
    """An AdmissionReview response that refuses the request, saying why."""
    return {
        "apiVersion": version,
        "kind": "AdmissionReview",
        "response": {
            "uid": uid,
            "allowed": False,
            "status": {"code": code, "message": message},
        },
    }
