"""The PeerActive condition from a liveness verdict (pure: no API server)."""

from __future__ import annotations

from kube_l2tp.api import crd
from kube_l2tp.core.liveness import Liveness, PeerVerdict
from kube_l2tp.k8s import conditions

ACTIVE = PeerVerdict(Liveness.ACTIVE, 5.0, "receiving: rx_packets rose to 3")
SILENT = PeerVerdict(Liveness.SILENT, 9.0, "sent 20 packets in the last 60s and received none")
UNKNOWN = PeerVerdict(Liveness.UNKNOWN, 0.0, "not enough samples yet")


def key(c: dict[str, object]) -> tuple[object, ...]:
    return c["type"], c["status"], c["reason"], c.get("observedGeneration")


def test_verdicts_map_to_status_and_reason() -> None:
    active = conditions.peer_active(ACTIVE, True, None, 3, "2030-01-01T00:00:00Z")
    assert key(active) == ("PeerActive", "True", "PeerActive", 3)
    assert active["message"] == ACTIVE.message
    assert active["lastTransitionTime"] == "2030-01-01T00:00:00Z"
    silent = conditions.peer_active(SILENT, True, None, 3)
    assert key(silent) == ("PeerActive", "False", "PeerSilent", 3)
    assert "received none" in silent["message"]
    waiting = conditions.peer_active(UNKNOWN, True, None, 3)
    assert key(waiting) == ("PeerActive", "Unknown", "AwaitingTraffic", 3)
    assert "not enough samples yet" in waiting["message"]
    assert key(conditions.peer_active(None, True, None, 3))[2] == "AwaitingTraffic"


def test_a_first_sample_without_evidence_changes_nothing() -> None:
    """Not sampled yet and sampled once say the same: the first sample rewrites no status."""
    never = conditions.peer_active(None, True, None, 1)
    once = conditions.peer_active(UNKNOWN, True, None, 1)
    assert {**never, "lastTransitionTime": ""} == {**once, "lastTransitionTime": ""}
    reset = PeerVerdict(Liveness.UNKNOWN, 7.0, "counters reset (session re-created)")
    assert "counters reset" in conditions.peer_active(reset, True, None, 1)["message"]


def test_not_in_the_kernel_is_unknown_whatever_was_known() -> None:
    known = conditions.peer_active(ACTIVE, True, None, 1)
    gone = conditions.peer_active(ACTIVE, False, known, 2)
    assert key(gone) == ("PeerActive", "Unknown", "NotProgrammed", 2)


def test_no_evidence_keeps_a_known_verdict_but_evidence_replaces_it() -> None:
    known = conditions.peer_active(SILENT, True, None, 1, "2030-01-01T00:00:00Z")
    assert conditions.peer_active(UNKNOWN, True, known, 2) == known  # observed for generation 1
    assert conditions.peer_active(None, True, known, 2) == known
    unknown = conditions.peer_active(UNKNOWN, True, None, 1)
    assert conditions.peer_active(UNKNOWN, True, unknown, 1)["reason"] == "AwaitingTraffic"
    assert key(conditions.peer_active(ACTIVE, True, known, 2))[:3] == (
        "PeerActive",
        "True",
        "PeerActive",
    )
    # merged into the status, a change of status is a transition; the same status keeps its time
    merged = conditions.merge([known], conditions.peer_active(ACTIVE, True, known, 2, "T2"))
    assert merged[0]["lastTransitionTime"] == "T2"
    again = conditions.merge([known], conditions.peer_active(SILENT, True, known, 2, "T3"))
    assert again[0]["lastTransitionTime"] == "2030-01-01T00:00:00Z"


def test_the_printer_column_reads_this_condition() -> None:
    version = crd.session_crd()["spec"]["versions"][0]
    peer = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Peer")
    assert f'@.type=="{conditions.PEER_ACTIVE}"' in peer["jsonPath"]
    described = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    text = described["conditions"]["description"]
    assert all(
        word in text
        for word in (conditions.PEER_ACTIVE, conditions.AWAITING_TRAFFIC, conditions.NOT_PROGRAMMED)
    )
    assert all(reason in text for reason in conditions.PEER_REASONS.values())
