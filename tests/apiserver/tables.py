"""`kubectl get` output: the server-side Table built from a CRD's additionalPrinterColumns.

kubectl asks for `as=Table` and prints what the server computes, so the printer columns in
crds/ are only exercised when the emulator evaluates them. Their JSONPath uses a small subset
(`.a.b`, `[0]`, `[*]`, `[?(@.type=="Ready")]`), which is what is implemented.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_TOKEN = re.compile(
    r"""\.(?P<field>[A-Za-z0-9_-]+)
    |\[(?P<index>-?\d+)\]
    |\[(?P<all>\*)\]
    |\[\?\(@\.(?P<key>[A-Za-z0-9_.-]+)\s*==\s*["'](?P<value>[^"']*)["']\)\]""",
    re.VERBOSE,
)


def jsonpath(path: str, obj: Any) -> list[Any]:
    """Every value the path selects in ``obj``, in document order."""
    values = [obj]
    pos = 0
    while pos < len(path):
        m = _TOKEN.match(path, pos)
        if m is None:
            raise ValueError(f"unsupported JSONPath {path!r} at {path[pos:]!r}")
        pos = m.end()
        out: list[Any] = []
        for value in values:
            if m["field"] is not None and isinstance(value, Mapping) and m["field"] in value:
                out.append(value[m["field"]])
            elif m["index"] is not None and isinstance(value, list):
                index = int(m["index"])
                if -len(value) <= index < len(value):
                    out.append(value[index])
            elif m["all"] is not None and isinstance(value, list):
                out.extend(value)
            elif m["key"] is not None and isinstance(value, list):
                keys = m["key"].split(".")
                out.extend(item for item in value if _dig(item, keys) == m["value"])
        values = out
    return values


def _dig(value: Any, keys: Sequence[str]) -> Any:
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str | None:
    """kubectl's short age ("42s", "5m", "3h", "2d"), computed server-side as Kubernetes does."""
    if not timestamp:
        return None
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def table(
    items: Iterable[Mapping[str, Any]],
    columns: Sequence[Mapping[str, Any]],
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table: Name, then the printer columns (Age alone when none are given)."""
    columns = list(columns) or [_AGE]
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}
    ] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for item in items:
        meta = item.get("metadata", {})
        cells: list[Any] = [meta.get("name")]
        for column in columns:
            found = jsonpath(column["jsonPath"], item)
            value = found[0] if found else None
            cells.append(age(value) if column.get("type") == "date" else value)
        if include_object == "Object":
            shown: dict[str, Any] | None = dict(item)
        elif include_object == "None":
            shown = None
        else:
            shown = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta,
            }
        rows.append({"cells": cells, "object": shown})
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }
