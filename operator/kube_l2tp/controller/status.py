"""A tunnel's session summary ("2/2"), computed from its sessions' Ready conditions.

Level-based: the summary is a function of the sessions as they are now, compared with what the
tunnel's status says, and written only when they differ, so repeating it is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

FIELDS = ("sessions", "sessionsReady", "sessionsTotal")


def summary(ready: Iterable[bool]) -> dict[str, Any]:
    """The tunnel status fields for sessions with these Ready states."""
    states = list(ready)
    n_ready, total = sum(states), len(states)
    return {"sessions": f"{n_ready}/{total}", "sessionsReady": n_ready, "sessionsTotal": total}


def differs(status: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    current = status or {}
    return any(current.get(k) != wanted[k] for k in FIELDS)
