"""A finding about a manifest: where it is, what is wrong, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from kube_l2tp.api.reasons import Reason


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
    # The condition reason an agent reports: CONFLICT when another object holds what this one
    # declares (an id, a port, a name), INVALID_SPEC for anything wrong with the object itself.
    reason: Reason = Reason.INVALID_SPEC

    def render(self) -> str:
        """One line: file: kind/name: field: message (file: message for a whole document).
        Parts are cut and line breaks escaped: a name or value can be anything a file holds."""
        where = f"{_cut(self.source, 500)}: " if self.source else ""
        field = f"{_cut(self.path, 200)}: " if self.path else ""
        tag = "" if self.severity is Severity.ERROR else "warning: "
        name = _cut(self.name, 260) or "<unnamed>"
        what = f"{_cut(self.kind, 70)}/{name}: " if self.kind else ""
        return f"{where}{what}{field}{tag}{_cut(self.message, 1000)}"


def _cut(text: str, limit: int) -> str:
    """``text`` on one line, at most ``limit`` characters, with control characters (a line
    break, a terminal's escape sequence) escaped as Python writes them."""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
