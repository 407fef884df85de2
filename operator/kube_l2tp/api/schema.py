"""Validate a custom resource the way the API server does, using the CRD itself.

The steps mirror kube-apiserver: apply schema defaults, reject unknown fields (kubectl's default
strict field validation), check the structural schema (types, bounds, enums, required; done by
jsonschema), then run every x-kubernetes-validations CEL rule with ``self`` (and ``oldSelf`` on
update) bound to its node. Rules run in a standard-CEL engine; the CRD uses no Kubernetes CEL
extension, so the API server and this module evaluate the same language.
"""

from __future__ import annotations

import copy
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from kube_l2tp.api.crd import Schema
from kube_l2tp.api.manifests import echo

_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_MISSING: Any = object()


@dataclass(frozen=True)
class Violation:
    path: str  # "spec.udp.sourcePort"
    message: str


def default(schema: Schema, value: Any) -> Any:
    """A copy of ``value`` as the API server stores it: nulls pruned, defaults filled in."""
    value = copy.deepcopy(value)
    _default(schema, value)
    return value


def _default(schema: Schema, value: Any) -> None:
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        # The API server prunes nulls of non-nullable fields before defaulting.
        for key in [
            k for k, v in value.items() if v is None and not props.get(k, {}).get("nullable")
        ]:
            del value[key]
        for key, sub in props.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                _default(sub, value[key])
    elif isinstance(value, list) and "items" in schema:
        for item in value:
            _default(schema["items"], item)


def validate(schema: Schema, value: Any, old: Any = None) -> list[Violation]:
    """Every violation of ``schema`` by the already-defaulted ``value``.

    A CEL rule runs only where its node's subtree passed the structural checks: a rule evaluated
    on a value of the wrong shape would only add a misleading second error.
    """
    structural = [_violation(e) for e in _validator_of(schema).iter_errors(value)]
    broken = [v.path for v in structural]
    old = _MISSING if old is None else old  # None: a create, where transition rules skip
    return structural + list(_rules(schema, value, old, "", broken))


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _validator_of(schema: Schema) -> jsonschema.Draft4Validator:
    """The validator of ``schema``, remembered by identity (the CRDs' schemas are built once and
    never changed) so a directory of 8000 objects does not convert the schema 8000 times. The
    schema is kept with it, so its id cannot be reused while it is cached."""
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached[0] is not schema:
        if len(_VALIDATORS) >= _VALIDATORS_KEPT:
            _VALIDATORS.clear()
        cached = _VALIDATORS[id(schema)] = (
            schema,
            jsonschema.Draft4Validator(_json_schema(schema)),
        )
    return cached[1]


_VALIDATORS: dict[int, tuple[Schema, jsonschema.Draft4Validator]] = {}
_VALIDATORS_KEPT = 8


def _json_schema(schema: Schema, top: bool = True) -> Schema:
    """Structural OpenAPI v3 to JSON Schema draft 4. Unknown fields become errors (kubectl's
    strict field validation); metadata is left to validate_metadata()."""
    out = {k: v for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    for informative in ("default", "format", "description"):
        out.pop(informative, None)
    if "properties" in out:
        out["properties"] = {
            key: {} if (top and key == "metadata") else _json_schema(sub, top=False)
            for key, sub in out["properties"].items()
        }
        out["additionalProperties"] = False
    if "items" in out:
        out["items"] = _json_schema(out["items"], top=False)
    return out


def _violation(error: jsonschema.ValidationError) -> Violation:
    path = ""
    for key in error.absolute_path:
        path = _join(path, key)
    value = error.instance
    rule: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    props: dict[str, Any] = rule.get("properties", {})
    match error.validator:
        case "required":
            missing = re.findall(r"'([^']+)' is a required property", error.message)
            field = missing[0] if missing else ""
            return Violation(_join(path, field), "required field is missing: set it")
        case "additionalProperties":
            extra = sorted(set(value) - set(props))
            known = ", ".join(props)
            return Violation(
                _join(path, extra[0]) if extra else path,
                f"unknown field: remove it (known fields here: {known})",
            )
        case "type":
            return Violation(
                path,
                f"must be of type {error.validator_value}, got {_type_name(value)} {echo(value)}",
            )
        case "enum":
            choices = ", ".join(str(c) for c in error.validator_value)
            return Violation(path, f"must be one of: {choices}; got {echo(value)}")
        case "minimum" | "maximum":
            low, high = rule.get("minimum"), rule.get("maximum")
            return Violation(path, f"must be between {low} and {high}; got {echo(value)}")
        case "maxLength":
            return Violation(path, f"must be at most {error.validator_value} characters long")
        case "minLength":
            return Violation(path, "must not be empty")
        case "maxItems":
            return Violation(path, f"must have at most {error.validator_value} items")
    message = error.message  # jsonschema's, which quotes the value back whole
    return Violation(path, message if len(message) <= 200 else message[:197] + "...")


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    names = {str: "string", int: "integer", float: "number", dict: "object", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _under(path: str, broken: list[str]) -> bool:
    """Whether a structural error lies at or below ``path``."""
    if not path:
        return bool(broken)
    return any(b == path or b.startswith((path + ".", path + "[")) for b in broken)


def _rules(
    schema: Schema, value: Any, old: Any, path: str, broken: list[str]
) -> Iterator[Violation]:
    """Children before parents, each node's rules with self bound to it."""
    if isinstance(value, dict):
        for key, sub in schema.get("properties", {}).items():
            if key in value and not (path == "" and key == "metadata"):
                sub_old = old.get(key, _MISSING) if isinstance(old, dict) else _MISSING
                yield from _rules(sub, value[key], sub_old, _join(path, key), broken)
    elif isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            yield from _rules(schema["items"], item, _MISSING, _join(path, index), broken)
    if not _under(path, broken):
        yield from _node_rules(schema, value, old, path)


@lru_cache(maxsize=1)
def _cel() -> Any:
    """The CEL engine (the package's Rust extension) without the package's __init__.

    That __init__ also imports the package's interactive CLI (typer, prompt_toolkit, rich): most
    of the agent's start-up time, and minutes under emulation. The extension alone is all
    validation uses.
    """
    if "cel.cel" in sys.modules:
        return sys.modules["cel.cel"]
    package = importlib.util.find_spec("cel")  # locates it without importing it
    if package is None or not package.submodule_search_locations:
        raise ImportError("the CEL engine is missing: pip install common-expression-language")
    for directory in package.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            spec = importlib.util.spec_from_file_location("cel.cel", f"{directory}/cel{suffix}")
            if spec is None or spec.loader is None:
                continue
            try:
                module = importlib.util.module_from_spec(spec)
            except (ImportError, OSError):
                continue  # no extension file with this suffix
            spec.loader.exec_module(module)
            sys.modules["cel.cel"] = module
            return module
    raise ImportError(f"no CEL extension module in {package.submodule_search_locations}")


@lru_cache(maxsize=256)
def _program(rule: str) -> Any:
    return _cel().compile(rule)


def _scalar(value: Any) -> bool:
    return value is _MISSING or isinstance(value, str | int | float | bool) or value is None


def _execute(text: str, value: Any, old: Any) -> Any:
    """A rule's verdict with ``self`` bound to ``value`` (and ``oldSelf`` to ``old`` if given)."""
    context: dict[str, Any] = {"self": value}
    if old is not _MISSING:
        context["oldSelf"] = old
    return _program(text).execute(context)


@lru_cache(maxsize=4096)
def _remembered(text: str, _kind: str, value: Any, _old_kind: str, old: Any) -> Any:
    """_execute on scalar values, remembered: the rules on addresses and names are regular
    expressions, and a directory's objects repeat the same addresses
    thousands of times. A pure function of its arguments, so caching is exact; errors are not
    cached. The types are part of the key: 1, 1.0 and True are equal in Python but not in CEL."""
    return _execute(text, value, old)


def _node_rules(schema: Schema, value: Any, old: Any, path: str) -> Iterator[Violation]:
    for rule in schema.get("x-kubernetes-validations", []):
        text = rule["rule"]
        transition = "oldSelf" in text
        if transition and old is _MISSING:
            continue  # transition rules run on update only, where both values exist
        sub_old = old if transition else _MISSING
        try:
            if _scalar(value) and _scalar(sub_old):
                ok = _remembered(text, type(value).__name__, value, type(sub_old).__name__, sub_old)
            else:
                ok = _execute(text, value, sub_old)
        except Exception as exc:  # a rule that errors rejects the object, as in Kubernetes
            yield Violation(path, f"{rule['message']} (rule error: {exc})")
            continue
        if ok is not True:
            field_path = rule.get("fieldPath", "")
            where = path + field_path if path else field_path.lstrip(".")
            yield Violation(where, rule["message"])


_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_META_FIELDS = {
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
    "annotations", "ownerReferences", "finalizers", "managedFields",
}  # fmt: skip
ANNOTATIONS_BYTES = 256 * 1024  # the API server's TotalAnnotationSizeLimitB


def _subdomain(text: str) -> bool:
    return len(text) <= 253 and _NAME.fullmatch(text) is not None


def qualified_name(key: str) -> str:
    """Why ``key`` is not a Kubernetes qualified name (label and annotation keys), or ""."""
    prefix, slash, name = key.rpartition("/")
    if slash and not _subdomain(prefix):
        return "its prefix (before '/') must be a DNS subdomain (lower case)"
    if not name or len(name) > 63 or not _QUALIFIED.fullmatch(name):
        return (
            "must be 1-63 letters, digits, '-', '_' or '.', starting and ending with a letter or"
            " digit, with an optional DNS subdomain prefix and '/'"
        )
    return ""


def validate_metadata(obj: dict[str, Any]) -> list[Violation]:
    """The API server's checks on the metadata of a cluster-scoped object (ObjectMeta)."""
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        return [Violation("metadata", f"must be an object, got {_type_name(meta)}")]
    meta = meta or {}
    out: list[Violation] = []
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.append(Violation("metadata.name", "required field is missing: give the object a name"))
    elif not _subdomain(name):
        out.append(
            Violation(
                "metadata.name",
                "must be a DNS subdomain: lower-case letters, digits, '-' and '.', starting"
                " and ending with a letter or digit, at most 253 characters",
            )
        )
    for key in meta:
        if key not in _META_FIELDS:
            out.append(Violation(f"metadata.{key}", "unknown field: remove it"))
    for field in ("labels", "annotations"):
        out += _string_map(meta.get(field), f"metadata.{field}", labels=field == "labels")
    annotations = meta.get("annotations")
    if isinstance(annotations, dict):
        size = sum(
            len(k.encode()) + len(v.encode())
            for k, v in annotations.items()
            if isinstance(k, str) and isinstance(v, str)
        )
        if size > ANNOTATIONS_BYTES:
            out.append(
                Violation(
                    "metadata.annotations",
                    f"{size} bytes in total: the API server allows {ANNOTATIONS_BYTES}",
                )
            )
    finalizers = meta.get("finalizers")
    if finalizers is not None:
        if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
            out.append(Violation("metadata.finalizers", "must be a list of strings"))
        else:
            for i, fin in enumerate(finalizers):
                if qualified_name(fin):
                    out.append(Violation(f"metadata.finalizers[{i}]", qualified_name(fin)))
    generation = meta.get("generation")
    if generation is not None and (type(generation) is not int or generation < 0):
        out.append(Violation("metadata.generation", "must be a non-negative integer"))
    return out


def _string_map(value: Any, path: str, *, labels: bool) -> list[Violation]:
    if value is None:
        return []
    if not isinstance(value, dict):
        return [Violation(path, f"must be a map of strings, got {_type_name(value)}")]
    out: list[Violation] = []
    for key, item in value.items():
        where = f"{path}[{echo(key)}]"
        if not isinstance(key, str) or qualified_name(key):
            out.append(Violation(where, f"invalid key: {qualified_name(str(key))}"))
        if not isinstance(item, str):
            out.append(
                Violation(where, f"must be a string, got {_type_name(item)} {echo(item)}: quote it")
            )
        elif labels and item and (len(item) > 63 or not _QUALIFIED.fullmatch(item)):
            out.append(
                Violation(
                    where,
                    "a label value must be empty, or 1-63 letters, digits, '-', '_' or '.',"
                    " starting and ending with a letter or digit",
                )
            )
        if len(out) >= 8:
            break  # the first few say enough
    return out
