"""metav1.Condition dicts, as agents write them and the operator reads them."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.liveness import NO_SAMPLES, Liveness, PeerVerdict

READY = "Ready"
# Peer liveness of a session, separate from Ready (programmed): True while packets arrive, False
# when we send and nothing comes back for a whole window, Unknown before there is evidence.
PEER_ACTIVE = "PeerActive"
PEER_REASONS = {Liveness.ACTIVE: Reason.PEER_ACTIVE, Liveness.SILENT: Reason.PEER_SILENT}
AWAITING_TRAFFIC = Reason.AWAITING_TRAFFIC
NOT_PROGRAMMED = Reason.NOT_PROGRAMMED
Status = Literal["True", "False", "Unknown"]


def now() -> str:
    """RFC 3339 in UTC with seconds, as metav1.Time serialises."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(
    type_: str,
    status: Status,
    reason: Reason,
    message: str = "",
    observed_generation: int | None = None,
    last_transition_time: str | None = None,
) -> dict[str, Any]:
    """One condition with every field metav1.Condition requires (plain strings: the dict is
    what the API server gets)."""
    cond: dict[str, Any] = {
        "type": type_,
        "status": status,
        "reason": str(reason),
        "message": message,
        "lastTransitionTime": last_transition_time or now(),
    }
    if observed_generation is not None:
        cond["observedGeneration"] = observed_generation
    return cond


def find(conditions: Any, type_: str) -> Mapping[str, Any] | None:
    """The condition of this type in a status' conditions list, tolerating junk."""
    if not isinstance(conditions, Sequence):
        return None
    for cond in conditions:
        if isinstance(cond, Mapping) and cond.get("type") == type_:
            return cond
    return None


def is_true(status: Any, type_: str = READY) -> bool:
    """Whether an object's status (a mapping or None) has this condition with status True."""
    if not isinstance(status, Mapping):
        return False
    cond = find(status.get("conditions"), type_)
    return cond is not None and cond.get("status") == "True"


def merge(conditions: Sequence[Mapping[str, Any]], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Replace the condition of new's type, keeping lastTransitionTime when status is unchanged."""
    out: list[dict[str, Any]] = []
    placed = False
    for cond in conditions:
        if cond.get("type") != new.get("type"):
            out.append(dict(cond))
            continue
        merged = dict(new)
        if cond.get("status") == new.get("status") and cond.get("lastTransitionTime"):
            merged["lastTransitionTime"] = cond["lastTransitionTime"]
        out.append(merged)
        placed = True
    if not placed:
        out.append(dict(new))
    return out


def peer_active(
    verdict: PeerVerdict | None,
    programmed: bool,
    current: Mapping[str, Any] | None,
    observed_generation: int,
    last_transition_time: str | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The PeerActive condition of a session from its liveness verdict (``now``: the
    transition time of a condition that changes now; default the clock's).

    A verdict without evidence (Unknown: an agent restart or a re-created session starts the
    counters' history again) does not replace a known PeerActive/PeerSilent: the next window
    decides, so restarting every agent does not flip every session's condition twice.
    """
    if not programmed:
        return condition(
            PEER_ACTIVE,
            "Unknown",
            NOT_PROGRAMMED,
            "the session is not in this node's kernel: no counters to judge the peer by",
            observed_generation,
            now,
        )
    if verdict is not None and verdict.state in PEER_REASONS:
        status: Status = "True" if verdict.state is Liveness.ACTIVE else "False"
        return condition(
            PEER_ACTIVE,
            status,
            PEER_REASONS[verdict.state],
            verdict.message,
            observed_generation,
            last_transition_time or now,
        )
    if current is not None and current.get("reason") in PEER_REASONS.values():
        return dict(current)
    return condition(
        PEER_ACTIVE,
        "Unknown",
        AWAITING_TRAFFIC,
        # A session not sampled yet reads as one sampled once: the same text, so its first
        # sample does not rewrite the status of every session just programmed.
        "no packet received yet, and not yet a whole window of sending without reply"
        f" ({verdict.message if verdict else NO_SAMPLES})",
        observed_generation,
        now,
    )
