"""Label and field selectors as the API server parses and applies them.

A per-node agent lists and watches with `fieldSelector=spec.nodeName=<node>`: what it receives is
decided here, so the grammar follows apimachinery's (labels: `=`, `==`, `!=`, `in`, `notin`,
existence, `!`, `<`, `>`; fields: `=`, `==`, `!=`), and an unparsable or unsupported selector is
an error (400), as in Kubernetes, rather than "matches everything".
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?"
_VALUE = r"(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_SET = re.compile(rf"^\s*({_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_BINARY = re.compile(rf"^\s*({_KEY})\s*(==|!=|=|<|>)\s*({_VALUE})\s*$")
_EXISTS = re.compile(rf"^\s*(!?)\s*({_KEY})\s*$")


class SelectorError(ValueError):
    """The selector cannot be parsed or names an unsupported field (the API server: 400)."""


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "<", ">"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return present
            case "!":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values
            case "<" | ">":
                try:
                    number, bound = int(value or ""), int(self.values[0])
                except ValueError:
                    return False
                return number < bound if self.op == "<" else number > bound
        raise AssertionError(self.op)


def _split(selector: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b` is two requirements)."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p for p in parts if p.strip()]


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        requirements = []
        for part in _split(text or ""):
            if m := _SET.match(part):
                values = tuple(v.strip() for v in m[3].split(",") if v.strip())
                requirements.append(Requirement(m[1], m[2], values))
            elif m := _BINARY.match(part):
                op = "=" if m[2] == "==" else m[2]
                if op in "<>" and not m[3].lstrip("-").isdigit():
                    raise SelectorError(f"invalid label selector {text!r}: {m[3]!r} is no integer")
                requirements.append(Requirement(m[1], op, (m[3],)))
            elif m := _EXISTS.match(part):
                requirements.append(Requirement(m[2], "!" if m[1] else "exists"))
            else:
                raise SelectorError(f"unable to parse requirement: {part.strip()!r}")
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.requirements)


FieldGetter = Callable[[Mapping[str, Any]], str]


@dataclass(frozen=True)
class FieldSelector:
    requirements: tuple[tuple[str, str, str], ...] = ()  # (field label, "=" or "!=", value)

    @classmethod
    def parse(cls, text: str | None, supported: Mapping[str, FieldGetter]) -> FieldSelector:
        requirements = []
        for part in _split(text or ""):
            m = re.match(r"^\s*([^=!\s]+)\s*(==|!=|=)\s*(.*?)\s*$", part)
            if m is None:
                raise SelectorError(f"invalid field selector: {part.strip()!r}")
            if m[1] not in supported:
                raise SelectorError(f'field label not supported: "{m[1]}"')
            requirements.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
        return cls(tuple(requirements))

    def matches(self, obj: Mapping[str, Any], supported: Mapping[str, FieldGetter]) -> bool:
        return all(
            (supported[label](obj) == value) == (op == "=")
            for label, op, value in self.requirements
        )


def path_getter(path: str) -> FieldGetter:
    """A field's value as the API server compares it: a string, "" when absent."""
    keys = path.lstrip(".").split(".")

    def get(obj: Mapping[str, Any]) -> str:
        value: Any = obj
        for key in keys:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    return get
