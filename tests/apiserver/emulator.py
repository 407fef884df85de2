"""The Kubernetes API semantics that kopf, kubectl and the agent rely on, on top of kmock.

kmock 0.8's KubernetesEmulator serves discovery and keeps objects with their history, but as
shipped a kopf operator does not run correctly against it:
no resourceVersion, PUT merges, watches replay everything and can lose writes, no selectors, no
/status, no validation. This subclass keeps kmock's HTTP layer, its discovery, its object store
(`emulator.objects[resource, namespace, name]` and its history work as in kmock) and its DSL, so
a test can still inject a fault that takes precedence (`emulator["get", "v1/nodes"] << 500`),
and answers every resource request the way kube-apiserver does:

- metadata: uid, creationTimestamp, one global resourceVersion bumped on every write, generation
  bumped on changes outside metadata and status only; no-op writes change nothing and notify no one;
- optimistic concurrency: 409 on a stale resourceVersion (PUT, or a patch that carries one), 422
  when a JSON-patch `test` fails; PUT replaces, merge-patch and JSON-patch patch;
- /status apart from the main endpoint: the main endpoint ignores .status, /status changes only it;
- custom resources pruned of unknown fields (400 with fieldValidation=Strict, a Warning header
  otherwise), defaulted by the project's own `kube_l2tp.api.schema.default`, and validated by its
  `validation.check_object` (schema and CEL, transition rules with the old object on update):
  errors are a 422 Status with reason Invalid and details.causes [{field, message}]; dryRun=All
  validates without storing;
- finalizers: deletion sets deletionTimestamp; removing the last finalizer removes the object;
- lists with `kind: XList` and metadata.resourceVersion; kubectl's `as=Table` from the CRD's
  printer columns; label selectors and field selectors (metadata.name, metadata.namespace, a CRD's
  selectableFields, the usual built-in ones) on list and watch, anything else a 400;
- watches that subscribe and snapshot in one step (no lost writes), honour ?resourceVersion= by
  replaying the change log (410 when it no longer reaches back), send DELETED when an object
  stops matching the watch's selectors and ADDED when it starts to, optional bookmarks,
  timeoutSeconds, and a record of every event each watch sent (`watches`);
- a POSTed CustomResourceDefinition becomes discoverable and served; deleting it removes its
  objects; namespaces must exist for namespaced objects (default, kube-system, ... are there);
- OpenAPI v3 with the CRDs' schemas: `kubectl explain` works, and kubectl's default validation
  leaves unknown fields to the server (fieldValidation=Strict) as with a real cluster.

Not emulated: server-side apply, strategic merge patch beyond a plain merge (built-in kinds only),
garbage collection (ownerReferences, namespace contents), admission webhooks, authn/authz,
pagination (limit/continue are ignored: one page), protobuf, OpenAPI v2, built-in kinds' schemas.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import gzip
import importlib.resources
import itertools
import json
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import attrs
import jsonpatch
import jsonpointer
import kmock
from kmock._internal import parsing as _kmock_parsing
from kmock._internal.rendering import Response

from kube_l2tp.api import crd as l2tp_crd
from kube_l2tp.api import schema as l2tp_schema
from kube_l2tp.api import validation
from kube_l2tp.api.problems import Severity

from . import tables
from .selectors import FieldGetter, FieldSelector, LabelSelector, SelectorError, path_getter

CRDS = kmock.resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
NAMESPACES = kmock.resource("", "v1", "namespaces")
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_VERBS = {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
_TRUE = {"true", "True", "TRUE", "t", "T", "1"}
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"  # what generateName draws from
_MISSING: Any = object()
_BUILTINS = gzip.decompress(
    importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
)

# Field selectors the real server supports on built-in kinds, beyond metadata.name/namespace.
_BUILTIN_FIELDS: dict[tuple[str, str], dict[str, str]] = {
    ("", "events"): {
        **{f"involvedObject.{k}": f"involvedObject.{k}" for k in ("kind", "namespace", "name")},
        **{f"involvedObject.{k}": f"involvedObject.{k}" for k in ("uid", "apiVersion")},
        **{f"involvedObject.{k}": f"involvedObject.{k}" for k in ("resourceVersion", "fieldPath")},
        "reason": "reason",
        "reportingComponent": "reportingComponent",
        "source": "source.component",
        "type": "type",
    },
    ("events.k8s.io", "events"): {
        **{f"regarding.{k}": f"regarding.{k}" for k in ("kind", "namespace", "name", "uid")},
        "reason": "reason",
        "reportingController": "reportingController",
        "type": "type",
    },
    ("", "nodes"): {"spec.unschedulable": "spec.unschedulable"},
    ("", "namespaces"): {"status.phase": "status.phase"},
    ("", "pods"): {"spec.nodeName": "spec.nodeName", "status.phase": "status.phase"},
    ("", "secrets"): {"type": "type"},
}


def _parse_path(path: str) -> _kmock_parsing.ParsedPath:
    """kmock 0.8's parser raises on /api/v1/namespaces and reads /api/v1/namespaces/x as "the
    namespace x, no resource"; this one follows the API server's URL grammar."""
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    elif len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    else:
        return _ORIGINAL_PARSE_PATH(path)
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    return _kmock_parsing.ParsedPath(
        group=group,
        version=version,
        plural=rest[0] if rest else None,
        namespace=namespace,
        name=rest[1] if len(rest) > 1 else None,
        subresource="/".join(rest[2:]) or None,
    )


# A module-level fix of kmock's parser, applied on import (kmock's request parsing calls it by
# module attribute before any handler can intervene).
_ORIGINAL_PARSE_PATH = _kmock_parsing.parse_path
_kmock_parsing.parse_path = _parse_path


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API failure, answered as a metav1.Status with the code and reason Kubernetes uses."""

    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def no_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


@dataclass
class Kind:
    """What the server knows about one resource: discovery names, scope, subresources, schema."""

    resource: kmock.resource
    kind: str
    list_kind: str
    namespaced: bool
    status: bool  # has a /status subresource
    custom: bool  # served from a CustomResourceDefinition
    generation: bool  # metadata.generation is maintained
    fields: dict[str, FieldGetter]  # supported field selector labels
    schema: dict[str, Any] | None = None
    columns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def api_version(self) -> str:
        r = self.resource
        return f"{r.group}/{r.version}" if r.group else str(r.version)

    @property
    def group_resource(self) -> str:
        r = self.resource
        return f"{r.plural}.{r.group}" if r.group else str(r.plural)

    def not_found(self, name: str) -> ApiError:
        details = {"name": name, "group": self.resource.group, "kind": self.resource.plural}
        return ApiError(404, "NotFound", f'{self.group_resource} "{name}" not found', details)

    def conflict(self, name: str, why: str) -> ApiError:
        details = {"name": name, "group": self.resource.group, "kind": self.resource.plural}
        message = f'Operation cannot be fulfilled on {self.group_resource} "{name}": {why}'
        return ApiError(409, "Conflict", message, details)

    def invalid(self, name: str, causes: list[dict[str, str]]) -> ApiError:
        parts = [f"{c['field']}: {c['message']}" for c in causes]
        listed = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
        qualified = f"{self.kind}.{self.resource.group}" if self.resource.group else self.kind
        details = {
            "name": name,
            "group": self.resource.group,
            "kind": self.kind,
            "causes": [{"reason": c["reason"], "message": c["message"], "field": c["field"]}
                       for c in causes],
        }  # fmt: skip
        return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {listed}', details)


def _cause(field_path: str, message: str, reason: str = "FieldValueInvalid") -> dict[str, str]:
    return {"field": field_path, "message": message, "reason": reason}


@dataclass(frozen=True)
class Change:
    """One write, as kept in the change log that watches replay from a resourceVersion."""

    rv: int
    resource: kmock.resource
    type: str  # ADDED, MODIFIED, DELETED
    obj: dict[str, Any]  # the new state (for DELETED: the last state, with the deletion's rv)
    old: dict[str, Any] | None


@dataclass(eq=False)
class Watch:
    """One watch request: its selectors, its queue of changes, and what it was sent."""

    id: int
    kind: Kind
    namespace: str | None
    label_selector: str
    field_selector: str
    labels: LabelSelector
    fields: FieldSelector
    queue: asyncio.Queue[Change | None] = field(default_factory=asyncio.Queue)
    sent: list[tuple[str, str]] = field(default_factory=list)  # (type, name), no bookmarks
    open: bool = True

    @property
    def resource(self) -> str:
        return str(self.kind.resource.plural)

    def matches(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata", {})
        return (
            (self.namespace is None or meta.get("namespace") == self.namespace)
            and self.labels.matches(obj)
            and self.fields.matches(obj, self.kind.fields)
        )

    def event(self, change: Change) -> dict[str, Any] | None:
        """What this watch sees of a change: an object entering or leaving its selection is
        ADDED or DELETED to it, as the API server's watch cache does."""
        if change.type == "DELETED":
            return {"type": "DELETED", "object": change.obj} if self.matches(change.obj) else None
        now_in = self.matches(change.obj)
        was_in = change.old is not None and self.matches(change.old)
        if now_in:
            return {"type": "MODIFIED" if was_in else "ADDED", "object": change.obj}
        if was_in and change.old is not None:
            last = copy.deepcopy(change.old)
            last["metadata"]["resourceVersion"] = str(change.rv)
            return {"type": "DELETED", "object": last}
        return None

    def record(self, event: Mapping[str, Any]) -> None:
        self.sent.append((event["type"], event["object"]["metadata"]["name"]))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: null deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def prune(schema: Mapping[str, Any], value: Any, path: str = "") -> list[str]:
    """Remove, in place, the fields the structural schema does not know; return their paths."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    dropped: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        props = schema["properties"]
        for key in list(value):
            sub = f"{path}.{key}" if path else key
            if key not in props:
                if not (path == "" and key in ("apiVersion", "kind", "metadata")):
                    del value[key]
                    dropped.append(sub)
            elif not (path == "" and key == "metadata"):
                dropped += prune(props[key], value[key], sub)
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            dropped += prune(schema["additionalProperties"], item, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            dropped += prune(schema["items"], item, f"{path}[{index}]")
    return dropped


def _value_at(obj: Any, path: str) -> Any:
    for key in re.findall(r"[^.\[\]]+", path):
        if isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        elif isinstance(obj, dict) and key in obj:
            obj = obj[key]
        else:
            return _MISSING
    return obj


def _without(obj: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in keys}


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal but for the resourceVersion: such a write is a no-op for the API server."""
    return _without(a, "metadata") == _without(b, "metadata") and _without(
        a["metadata"], "resourceVersion", "managedFields"
    ) == _without(b["metadata"], "resourceVersion", "managedFields")


def _json(request: kmock.Request) -> Any:
    if not request.body:
        return None
    try:
        return json.loads(request.body)
    except ValueError as exc:
        raise bad_request(f"the body of the request is not valid JSON: {exc}") from None


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's Kubernetes emulator with kube-apiserver's semantics (see the module docstring).

    Every method here runs in the server's event loop; nothing awaits between reading and writing
    the state, so each request is atomic without a lock.
    """

    bookmark_interval: float = 30.0  # seconds between BOOKMARKs when a watch allows them
    history_limit: int = 100_000  # changes kept for watches that resume from a resourceVersion

    _rv: int = attrs.field(default=0, init=False)
    _kinds: dict[kmock.resource, Kind] = attrs.field(factory=dict, init=False)
    _changes: collections.deque[Change] = attrs.field(factory=collections.deque, init=False)
    _watches: list[Watch] = attrs.field(factory=list, init=False)
    _watch_ids: Iterator[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    def __attrs_post_init__(self) -> None:
        # The scaffold's discovery, not kmock's CRUD reactions: every resource request is ours.
        kmock.KubernetesScaffold.__attrs_post_init__(self)
        self._changes = collections.deque(maxlen=self.history_limit)
        (self.fallback**1)[self._claims] << self._serve
        (self.fallback**1)[lambda request: request.url.path.startswith("/openapi/v3")] << (
            self._serve_openapi
        )
        (self.fallback**-1) << (lambda: _respond(404, no_resource().status()))  # /openapi/v2 etc.
        self.resources.load_data(_BUILTINS)  # = load_bundled(), minus its deprecated read_binary
        for name in DEFAULT_NAMESPACES:
            namespace = {"metadata": {"name": name}, "spec": {"finalizers": ["kubernetes"]}}
            self.submit("POST", "/api/v1/namespaces", {**namespace, "status": {"phase": "Active"}})

    async def _handle(self, request: kmock.Request) -> Any:
        # Skip KubernetesEmulator._handle: it mutates objects before any reaction is consulted,
        # so an injected fault could not make a write fail.
        return await kmock.RawHandler._handle(self, request)

    async def _serve_server_version(self, request: kmock.Request) -> dict[str, str]:
        return {
            "major": "1",
            "minor": "33",
            "gitVersion": "v1.33.0-kube-l2tp-emulator",
            "platform": "linux/amd64",
        }

    async def _serve_group(self, request: kmock.Request) -> Any:
        try:
            return await super()._serve_group(request)
        except kmock.KubernetesError:
            return _respond(404, no_resource().status())  # an answer, not a crash to record

    async def _serve_version(self, request: kmock.Request) -> Any:
        # kmock lists a subresource with its parent's verbs, short names and categories, which
        # would make `kubectl get l2tp` expand to l2tptunnels/status too.
        try:
            listing: dict[str, Any] = await super()._serve_version(request)  # type: ignore[assignment]
        except kmock.KubernetesError:
            return _respond(404, no_resource().status())
        for entry in listing["resources"]:
            if "/" in entry["name"]:
                entry.update(singularName="", verbs=["get", "patch", "update"])
                entry.update(shortNames=[], categories=[])
        return listing

    async def _serve_openapi(self, request: kmock.Request) -> Response:
        """OpenAPI v3, enough for kubectl: `explain` reads the CRDs' schemas and descriptions,
        and `apply`/`create` with their default --validate=strict see that the server takes
        fieldValidation (a PATCH operation per kind that lists it) and leave it to the server."""
        groups: dict[str, list[kmock.resource]] = collections.defaultdict(list)
        for res in list(self.resources):
            if res.plural and "/" not in res.plural and res.version:
                key = f"apis/{res.group}/{res.version}" if res.group else f"api/{res.version}"
                groups[key].append(res)
        wanted = request.url.path.removeprefix("/openapi/v3").strip("/")
        if not wanted:
            paths = {
                key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={self._rv}"} for key in groups
            }
            return _respond(200, {"paths": paths})
        if wanted not in groups:
            return _respond(404, no_resource().status())
        return _respond(200, _openapi_document([self._kind(res) for res in groups[wanted]]))

    # --- the public surface for tests (call in the server's loop) ---

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def watches(self) -> list[Watch]:
        """Every watch served so far, open or closed, with the events each one sent."""
        return list(self._watches)

    def close_watches(self) -> None:
        """End every open watch stream (the server is going away)."""
        for watch in self._watches:
            if watch.open:
                watch.queue.put_nowait(None)

    def submit(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, Any]:
        """One request straight into the API logic (no HTTP, no reactions): status and body."""
        parsed = _parse_path(path)
        raw = b"" if body is None else json.dumps(body).encode()
        request = kmock.Request(
            method=method,
            url=path,
            params=dict(params or {}),
            headers={"Content-Type": content_type},
            body=raw,
            data=body,
            resource=kmock.resource(parsed.group, parsed.version, parsed.plural),
            namespace=parsed.namespace,
            name=parsed.name,
            subresource=parsed.subresource,
        )
        response = self._answer(request)
        if isinstance(response.payload, AsyncIterator):
            raise ValueError("watches cannot be submitted; use a client")
        return int(response.status or 200), response.payload

    # --- dispatch ---

    @staticmethod
    def _claims(request: kmock.Request) -> bool:
        return request.resource is not None and request.resource.plural is not None

    async def _serve(self, request: kmock.Request) -> Response:
        return self._answer(request)

    def _answer(self, request: kmock.Request) -> Response:
        try:
            return self._dispatch(request)
        except ApiError as exc:
            return _respond(exc.code, exc.status())

    def _dispatch(self, request: kmock.Request) -> Response:
        assert request.resource is not None
        kind = self._kind(request.resource)
        ns, name, sub = request.namespace, request.name, request.subresource
        if ns is not None and not kind.namespaced:
            raise no_resource()
        if sub is not None and (sub != "status" or not kind.status or name is None):
            raise no_resource()
        method = str(request.method.value).upper()
        watch = request.params.get("watch") in _TRUE
        if method == "GET" and watch:
            return self._watch(kind, ns, name, request)
        if method == "GET":
            return self._get(kind, ns, name, request) if name else self._list(kind, ns, request)
        if method == "POST" and name is None:
            return self._create(kind, ns, request)
        if method in ("PUT", "PATCH") and name is not None:
            return self._update(kind, ns, name, sub, request, patch=method == "PATCH")
        if method == "DELETE" and sub is None:
            if name is not None:
                return self._delete(kind, ns, name, request)
            return self._delete_collection(kind, ns, request)
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow {method} here")

    def _kind(self, resource: kmock.resource) -> Kind:
        if resource in self._kinds:
            return self._kinds[resource]
        if resource not in self.resources:
            raise no_resource()
        info = self.resources[resource]
        key = (str(resource.group), str(resource.plural))
        paths = {"metadata.name": "metadata.name"}
        if info.namespaced:
            paths["metadata.namespace"] = "metadata.namespace"
        paths |= _BUILTIN_FIELDS.get(key, {})
        kind = Kind(
            resource=resource,
            kind=str(info.kind),
            list_kind=f"{info.kind}List",
            namespaced=bool(info.namespaced),
            status="status" in info.subresources,
            custom=False,
            generation=resource == CRDS,
            fields={label: path_getter(path) for label, path in paths.items()},
        )
        self._kinds[resource] = kind
        return kind

    # --- reading ---

    def _current(self, kind: Kind, ns: str | None, name: str) -> dict[str, Any] | None:
        key = (kind.resource, ns if kind.namespaced else None, name)
        if key not in self._objects:
            return None
        stored = self._objects[key]
        return None if stored.deleted else stored.last.raw

    def _existing(self, kind: Kind, ns: str | None, name: str) -> dict[str, Any]:
        current = self._current(kind, ns, name)
        if current is None:
            raise kind.not_found(name)
        return current

    def _items(self, kind: Kind, ns: str | None) -> list[dict[str, Any]]:
        found = [
            (key[1] or "", key[2], obj.last.raw)
            for key, obj in self._objects.items()
            if key[0] == kind.resource and not obj.deleted and (ns is None or key[1] == ns)
        ]
        return [obj for _, _, obj in sorted(found, key=lambda t: (t[0], t[1]))]

    def _selectors(
        self, kind: Kind, params: Mapping[str, str], name: str | None = None
    ) -> tuple[str, str, LabelSelector, FieldSelector]:
        label_text = params.get("labelSelector", "")
        field_text = params.get("fieldSelector", "")
        if name is not None:
            field_text = ",".join(filter(None, [field_text, f"metadata.name={name}"]))
        try:
            labels = LabelSelector.parse(label_text)
            fields = FieldSelector.parse(field_text, kind.fields)
        except SelectorError as exc:
            raise bad_request(str(exc)) from None
        return label_text, field_text, labels, fields

    def _get(self, kind: Kind, ns: str | None, name: str, request: kmock.Request) -> Response:
        obj = self._existing(kind, ns, name)
        if _wants_table(request):
            return _respond(200, self._table(kind, [obj], request))
        return _respond(200, obj)

    def _list(self, kind: Kind, ns: str | None, request: kmock.Request) -> Response:
        _, _, labels, fields = self._selectors(kind, request.params)
        items = [
            obj
            for obj in self._items(kind, ns)
            if labels.matches(obj) and fields.matches(obj, kind.fields)
        ]
        if _wants_table(request):
            return _respond(200, self._table(kind, items, request))
        return _respond(
            200,
            {
                "apiVersion": kind.api_version,
                "kind": kind.list_kind,
                "metadata": {"resourceVersion": str(self._rv)},
                "items": items,
            },
        )

    def _table(self, kind: Kind, items: list[dict[str, Any]], request: kmock.Request) -> Any:
        include = request.params.get("includeObject", "Metadata")
        return tables.table(items, kind.columns, str(self._rv), include)

    # --- watching ---

    def _watch(
        self, kind: Kind, ns: str | None, name: str | None, request: kmock.Request
    ) -> Response:
        params = request.params
        label_text, field_text, labels, fields = self._selectors(kind, params, name)
        watch = Watch(
            next(self._watch_ids), kind, ns, label_text, field_text, labels, fields
        )  # fmt: skip
        since_text = params.get("resourceVersion", "")
        initial_events = params.get("sendInitialEvents") in _TRUE
        initial: list[dict[str, Any]] = []
        replay: list[Change] = []
        if since_text in ("", "0") or initial_events:
            initial = [
                {"type": "ADDED", "object": obj}
                for obj in self._items(kind, ns)
                if watch.matches(obj)
            ]
        else:
            try:
                since = int(since_text)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {since_text!r}") from None
            oldest = self._changes[0].rv if self._changes else self._rv + 1
            if since < oldest - 1:
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({oldest})")
                return _respond(200, _stream_of([{"type": "ERROR", "object": gone.status()}]))
            replay = [c for c in self._changes if c.rv > since and c.resource == kind.resource]
        # Subscribed in the same step as the snapshot was taken: no write can fall in between.
        self._watches.append(watch)
        for change in replay:
            watch.queue.put_nowait(change)
        timeout = params.get("timeoutSeconds")
        stream = self._stream(
            watch,
            initial,
            end_marker=initial_events,
            bookmarks=params.get("allowWatchBookmarks") in _TRUE,
            timeout=float(timeout) if timeout else None,
        )
        return _respond(200, stream)

    async def _stream(
        self,
        watch: Watch,
        initial: list[dict[str, Any]],
        *,
        end_marker: bool,
        bookmarks: bool,
        timeout: float | None,
    ) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            yield b""  # send the headers now: a quiet watch is still an established watch
            for event in initial:
                watch.record(event)
                yield event
            if end_marker:
                yield self._bookmark(watch, {"k8s.io/initial-events-end": "true"})
            while True:
                wait = self.bookmark_interval if bookmarks else None
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    wait = left if wait is None else min(wait, left)
                try:
                    change = await asyncio.wait_for(watch.queue.get(), wait)
                except TimeoutError:
                    if bookmarks:
                        yield self._bookmark(watch)
                    continue
                if change is None:
                    return
                update = watch.event(change)
                if update is not None:
                    watch.record(update)
                    yield update
        finally:
            watch.open = False

    def _bookmark(self, watch: Watch, annotations: dict[str, str] | None = None) -> Any:
        meta: dict[str, Any] = {"resourceVersion": str(self._rv)}
        if annotations:
            meta["annotations"] = annotations
        kind = watch.kind
        return {
            "type": "BOOKMARK",
            "object": {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": meta},
        }

    # --- writing ---

    def _store(
        self, kind: Kind, obj: dict[str, Any], type_: str, old: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Commit one write: a new resourceVersion, the store, the log, every open watch."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        meta = obj["metadata"]
        key = (kind.resource, meta.get("namespace") if kind.namespaced else None, meta["name"])
        if type_ == "DELETED":
            self._objects[key].history.append(obj)  # the last state stays in kmock's history
            self._objects[key].delete()
        elif key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        change = Change(self._rv, kind.resource, type_, obj, old)
        self._changes.append(change)
        for watch in self._watches:
            if watch.open and watch.kind.resource == kind.resource:
                watch.queue.put_nowait(change)
        if kind.resource == CRDS:
            self._crd_changed(obj, type_)
        return obj

    def _create(self, kind: Kind, ns: str | None, request: kmock.Request) -> Response:
        body = _json(request)
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise bad_request("the body must be a JSON object with an object as metadata")
        obj = copy.deepcopy(body)
        self._identity(kind, obj)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            suffix = "".join(random.choices(_SUFFIX, k=5))  # a name, not a secret
            meta["name"] = meta["generateName"] + suffix
        if not meta.get("name"):
            cause = _cause("metadata.name", "Required value: name or generateName is required")
            raise kind.invalid("", [{**cause, "reason": "FieldValueRequired"}])
        if kind.namespaced:
            if meta.get("namespace") not in (None, ns):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent"
                    " on the request"
                )
            if ns is None:
                raise no_resource()
            if self._current(self._kind(NAMESPACES), None, ns) is None:
                raise self._kind(NAMESPACES).not_found(ns)
            meta["namespace"] = ns
        else:
            meta.pop("namespace", None)
        if self._current(kind, ns, meta["name"]) is not None:
            details = {
                "name": meta["name"],
                "group": kind.resource.group,
                "kind": kind.resource.plural,
            }
            message = f'{kind.group_resource} "{meta["name"]}" already exists'
            raise ApiError(409, "AlreadyExists", message, details)
        for owned in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(owned, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if kind.generation:
            meta["generation"] = 1
        if kind.custom and kind.status:
            obj.pop("status", None)  # a custom resource's status is written through /status only
        obj, warnings = self._admit(kind, obj, None, request.params)
        if kind.resource == CRDS:
            obj["status"] = _crd_status(obj)
        if _dry_run(request):
            return _respond(201, obj, warnings)
        return _respond(201, self._store(kind, obj, "ADDED", None), warnings)

    def _update(
        self,
        kind: Kind,
        ns: str | None,
        name: str,
        sub: str | None,
        request: kmock.Request,
        *,
        patch: bool,
    ) -> Response:
        current = self._existing(kind, ns, name)
        if patch:
            new = self._patched(kind, current, request)
        else:
            new = _json(request)
            if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
                raise bad_request("the body must be a JSON object with an object as metadata")
            if kind.custom and not (new.get("metadata") or {}).get("resourceVersion"):
                cause = _cause(
                    "metadata.resourceVersion",
                    "Invalid value: 0x0: must be specified for an update",
                )
                raise kind.invalid(name, [cause])
        if not isinstance(new, dict) or not isinstance(new.get("metadata", {}), dict):
            raise bad_request("the patched object must be a JSON object")
        new = copy.deepcopy(new)
        self._identity(kind, new)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL"
                f" ({name})"
            )
        expected = meta.get("resourceVersion")
        if expected and expected != current["metadata"]["resourceVersion"]:
            why = "the object has been modified; please apply your changes to the latest version"
            raise kind.conflict(name, why + " and try again")
        new = self._server_owned(kind, current, new, sub)
        new, warnings = self._admit(kind, new, current, request.params)
        if kind.generation and _without(new, "metadata", "status") != _without(
            current, "metadata", "status"
        ):
            new["metadata"]["generation"] = current["metadata"].get("generation", 0) + 1
        if kind.resource == CRDS:
            new["status"] = _crd_status(new)
        if _same(new, current):
            return _respond(200, current, warnings)
        if _dry_run(request):
            return _respond(200, new, warnings)
        released = new["metadata"].get("deletionTimestamp") and not new["metadata"].get(
            "finalizers"
        )
        stored = self._store(kind, new, "DELETED" if released else "MODIFIED", current)
        return _respond(200, stored, warnings)

    def _patched(self, kind: Kind, current: dict[str, Any], request: kmock.Request) -> Any:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip()
        body = _json(request)
        if content_type == "application/json-patch+json":
            if not isinstance(body, list):
                raise bad_request("a JSON patch must be a list of operations")
            try:
                return jsonpatch.apply_patch(current, body)
            except jsonpatch.InvalidJsonPatch as exc:
                raise bad_request(str(exc)) from None
            except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
                raise ApiError(422, "Invalid", str(exc)) from None
        if content_type == "application/merge-patch+json" or (
            content_type == "application/strategic-merge-patch+json" and not kind.custom
        ):
            if not isinstance(body, dict):
                raise bad_request("a merge patch must be a JSON object")
            return merge_patch(current, body)
        accepted = "application/json-patch+json, application/merge-patch+json"
        raise ApiError(
            415,
            "UnsupportedMediaType",
            f"the body of the request was in an unknown format - accepted media types include:"
            f" {accepted} (the emulator has no server-side apply or strategic merge patch for"
            f" custom resources)",
        )

    def _server_owned(
        self, kind: Kind, current: dict[str, Any], new: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        """What a client may change through this endpoint, the rest taken from the stored object."""
        if sub == "status":
            result = copy.deepcopy(current)
            if "status" in new:
                result["status"] = new["status"]
            else:
                result.pop("status", None)
            return result
        if kind.status:
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        meta, old = new["metadata"], current["metadata"]
        for key in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds",
                    "generation", "namespace"):  # fmt: skip
            if key in old:
                meta[key] = old[key]
            else:
                meta.pop(key, None)
        meta["resourceVersion"] = old["resourceVersion"]
        if old.get("deletionTimestamp"):
            added = sorted(set(meta.get("finalizers") or []) - set(old.get("finalizers") or []))
            if added:
                message = (
                    "Forbidden: no new finalizers can be added if the object is being deleted,"
                    f" found new finalizers {added}"
                )
                raise kind.invalid(old["name"], [_cause("metadata.finalizers", message)])
        return new

    def _identity(self, kind: Kind, obj: dict[str, Any]) -> None:
        """apiVersion and kind must name this resource; absent, they are filled in."""
        for key, expected in (("apiVersion", kind.api_version), ("kind", kind.kind)):
            given = obj.get(key)
            if given not in (None, "", expected):
                raise bad_request(f"{key} {given!r} does not match the resource ({expected!r})")
            obj[key] = expected

    def _admit(
        self,
        kind: Kind,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        params: Mapping[str, str],
    ) -> tuple[dict[str, Any], list[str]]:
        """Prune, default and validate a custom resource; return it and any warnings."""
        if not (kind.custom and kind.schema):
            return obj, []
        ours = kind.resource.group == l2tp_crd.GROUP and kind.kind in (
            l2tp_crd.TUNNEL_KIND,
            l2tp_crd.SESSION_KIND,
        )
        schema = validation.openapi_schema(kind.kind) if ours else kind.schema
        obj = copy.deepcopy(obj)
        unknown = prune(schema, obj)
        mode = params.get("fieldValidation", "Warn")
        if unknown and mode == "Strict":
            listed = ", ".join(f'unknown field "{p}"' for p in unknown)
            raise bad_request(
                f'{kind.kind} in version "{kind.resource.version}" cannot be handled as a'
                f" {kind.kind}: strict decoding error: {listed}"
            )
        warnings = [f'unknown field "{p}"' for p in unknown] if mode == "Warn" else []
        obj = l2tp_schema.default(schema, obj)
        if ours:
            problems, _ = validation.check_object(obj, "", old=old)
            causes = []
            for p in problems:
                if p.severity is not Severity.ERROR:
                    continue
                if p.message.startswith("required field is missing"):
                    causes.append(
                        _cause(p.path, f"Required value: {p.message}", "FieldValueRequired")
                    )
                    continue
                value = _value_at(obj, p.path)
                shown = "" if value is _MISSING else f"Invalid value: {json.dumps(value)}: "
                causes.append(_cause(p.path, shown + p.message))
            if causes:
                raise kind.invalid(obj["metadata"].get("name", ""), causes)
        return obj, warnings

    def _delete(self, kind: Kind, ns: str | None, name: str, request: kmock.Request) -> Response:
        current = self._existing(kind, ns, name)
        body = _json(request)
        options: dict[str, Any] = body if isinstance(body, dict) else {}
        meta = current["metadata"]
        pre = options.get("preconditions") or {}
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(key) and pre[key] != meta.get(key):
                why = (
                    f"Precondition failed: {label} in precondition: {pre[key]},"
                    f" {label} in object meta: {meta.get(key)}"
                )
                raise kind.conflict(name, why)
        dry = _dry_run(request) or "All" in (options.get("dryRun") or [])
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return _respond(200, current)
            new = copy.deepcopy(current)
            new["metadata"]["deletionTimestamp"] = now()
            new["metadata"]["deletionGracePeriodSeconds"] = 0
            return _respond(200, new if dry else self._store(kind, new, "MODIFIED", current))
        if dry:
            return _respond(200, current)
        return _respond(200, self._store(kind, copy.deepcopy(current), "DELETED", current))

    def _delete_collection(self, kind: Kind, ns: str | None, request: kmock.Request) -> Response:
        _, _, labels, fields = self._selectors(kind, request.params)
        deleted = []
        for obj in self._items(kind, ns):
            if labels.matches(obj) and fields.matches(obj, kind.fields):
                meta = obj["metadata"]
                response = self._delete(kind, meta.get("namespace"), meta["name"], request)
                deleted.append(response.payload)
        body = {"apiVersion": kind.api_version, "kind": kind.list_kind, "items": deleted}
        return _respond(200, {**body, "metadata": {"resourceVersion": str(self._rv)}})

    # --- CustomResourceDefinitions ---

    def _crd_changed(self, crd: dict[str, Any], type_: str) -> None:
        spec = crd["spec"]
        names = spec["names"]
        served = {v["name"]: v for v in spec["versions"] if v.get("served", True)}
        for res in [r for r, k in self._kinds.items() if k.custom]:
            same = res.group == spec["group"] and res.plural == names["plural"]
            if same and (type_ == "DELETED" or res.version not in served):
                self._unserve(self._kinds[res])
        if type_ == "DELETED":
            return
        for version, definition in served.items():
            res = kmock.resource(spec["group"], version, names["plural"])
            namespaced = spec["scope"] == "Namespaced"
            subresources = set(definition.get("subresources") or {})
            self.resources[res] = kmock.ResourceInfo(
                namespaced=namespaced,
                kind=names["kind"],
                singular=names.get("singular", names["kind"].lower()),
                verbs=_VERBS,
                shortnames=names.get("shortNames", []),
                categories=names.get("categories", []),
                subresources=subresources,
            )
            paths = ["metadata.name"] + (["metadata.namespace"] if namespaced else [])
            paths += [f["jsonPath"].lstrip(".") for f in definition.get("selectableFields", [])]
            self._kinds[res] = Kind(
                resource=res,
                kind=names["kind"],
                list_kind=names.get("listKind", names["kind"] + "List"),
                namespaced=namespaced,
                status="status" in subresources,
                custom=True,
                generation=True,
                fields={p: path_getter(p) for p in paths},
                schema=(definition.get("schema") or {}).get("openAPIV3Schema"),
                columns=list(definition.get("additionalPrinterColumns", [])),
            )

    def _unserve(self, kind: Kind) -> None:
        """A CRD (or one of its versions) is gone: so are its objects, watches and discovery."""
        for obj in self._items(kind, None):
            self._store(kind, copy.deepcopy(obj), "DELETED", obj)
        for watch in self._watches:
            if watch.open and watch.kind.resource == kind.resource:
                watch.queue.put_nowait(None)
        del self._kinds[kind.resource]
        del self.resources[kind.resource]


def _openapi_document(kinds: list[Kind]) -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for kind in kinds:
        group, version = kind.resource.group or "", str(kind.resource.version)
        gvk = {"group": group, "version": version, "kind": kind.kind}
        prefix = ".".join(reversed(group.split("."))) if group else "io.k8s.api.core"
        name = f"{prefix}.{version}.{kind.kind}"
        schema = copy.deepcopy(kind.schema) if kind.schema else {"type": "object"}
        if not kind.schema:
            schema["x-kubernetes-preserve-unknown-fields"] = True  # built-in: not described here
        schemas[name] = {**schema, "x-kubernetes-group-version-kind": [gvk]}
        reply = {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}
        operation = {
            "x-kubernetes-group-version-kind": gvk,
            "parameters": [
                {"name": query, "in": "query", "schema": {"type": "string"}}
                for query in ("dryRun", "fieldManager", "fieldValidation")
            ],
            "responses": {"200": {"description": "OK", "content": reply}},
        }
        base = f"/apis/{group}/{version}" if group else f"/api/{version}"
        scope = "/namespaces/{namespace}" if kind.namespaced else ""
        collection = f"{base}{scope}/{kind.resource.plural}"
        paths[collection] = {"get": operation, "post": operation}
        paths[collection + "/{name}"] = {"get": operation, "put": operation, "patch": operation}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _crd_status(crd: dict[str, Any]) -> dict[str, Any]:
    """What the apiextensions controllers would soon write: names accepted, established."""
    spec = crd["spec"]
    stamp = (crd.get("status") or {}).get("conditions", [{}])[0].get("lastTransitionTime", now())
    conditions = [
        ("NamesAccepted", "NoConflicts", "no conflicts found"),
        ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
    ]
    return {
        "conditions": [
            {"type": t, "status": "True", "reason": r, "message": m, "lastTransitionTime": stamp}
            for t, r, m in conditions
        ],
        "acceptedNames": spec["names"],
        "storedVersions": [v["name"] for v in spec["versions"] if v.get("storage")],
    }


def _wants_table(request: kmock.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _dry_run(request: kmock.Request) -> bool:
    return request.params.get("dryRun") == "All"


async def _stream_of(events: list[dict[str, Any]]) -> AsyncIterator[Any]:
    yield b""
    for event in events:
        yield event


def _respond(code: int, payload: Any, warnings: list[str] | None = None) -> Response:
    # kmock merges a returned Response's headers into its reaction's own, shared across requests:
    # always send the same header names (None removes one) so nothing leaks between answers.
    warning = ", ".join(f'299 - "{w}"' for w in warnings) if warnings else None
    headers = {"Content-Type": "application/json", "Warning": warning}
    return Response(status=code, payload=payload, headers=headers)
