"""A finding about a manifest: where it is, what is wrong, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Severity(Enum):
    ERROR = "error"  # the API server or the kernel refuses it, or it can never carry a frame
    WARNING = "warning"  # accepted, but not doing what the user probably meant


@dataclass(frozen=True)
class Problem:
    severity: Severity
    kind: str
    name: str
    path: str  # field path, e.g. "spec.udp.sourcePort" ("" for the whole object)
    message: str  # what is wrong and how to fix it
    source: str = ""  # file (and document index) the object came from
    # The condition reason an agent reports: "Conflict" when another object holds what this one
    # declares (an id, a port, a name), "InvalidSpec" for anything wrong with the object itself.
    reason: str = "InvalidSpec"

    def render(self) -> str:
        """One line: file: kind/name: field: message."""
        where = f"{self.source}: " if self.source else ""
        field = f"{self.path}: " if self.path else ""
        tag = "" if self.severity is Severity.ERROR else "warning: "
        return f"{where}{self.kind}/{self.name or '<unnamed>'}: {field}{tag}{self.message}"
