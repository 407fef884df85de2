"""k8s.status.build: what an agent's status pass writes, from one view and one result."""

from __future__ import annotations

from typing import Any

import pytest

from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Owned
from kube_l2tp.core.liveness import Liveness, PeerVerdict
from kube_l2tp.core.reconcile import ObjectResult, Result
from kube_l2tp.k8s import status
from kube_l2tp.k8s.status import ObjectStatus, Peer, Release, Selection
from kube_l2tp.k8s.view import ClusterView

NOW = "2026-12-05T00:00:00Z"
EARLIER = "2026-12-04T00:00:00Z"


def tunnel(name: str, tunnel_id: int, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 2, "resourceVersion": "7", "uid": "u"}
    if deleting:
        meta["deletionTimestamp"] = EARLIER
    return {"kind": "L2TPTunnel", "metadata": meta, "spec": {"tunnelID": tunnel_id}}


def session(name: str, ref: str, session_id: int, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "generation": 3, "resourceVersion": "8"}
    if deleting:
        meta["deletionTimestamp"] = EARLIER
    spec = {"tunnelRef": ref, "sessionID": session_id}
    return {"kind": "L2TPSession", "metadata": meta, "spec": spec}


def live(*tunnel_ids: int) -> Resources:
    return Resources(
        tuple(Tunnel(f"t{i}", "n", i, i + 1, "192.0.2.1", "192.0.2.2") for i in tunnel_ids)
    )


PROGRAMMED = ObjectResult(
    "L2TPSession/s",
    True,
    Reason.PROGRAMMED,
    "ok",
    "l2tpeth0",
    7,
    1446,
    ("offset",),
    "none",
    "noqueue",
)


def ready_of(st: dict[str, Any]) -> tuple[str, str, str]:
    c = st["conditions"][0]
    assert c["type"] == "Ready" and c["lastTransitionTime"] == NOW
    return c["status"], c["reason"], c["message"]


@pytest.mark.parametrize(
    ("objects", "selection", "results", "expected"),
    [
        # the reconcile's verdict, as it is
        (
            [tunnel("t", 3000)],
            Selection(live(3000)),
            {"L2TPTunnel/t": ObjectResult("L2TPTunnel/t", True, Reason.PROGRAMMED, "ok")},
            {"L2TPTunnel/t": ("True", "Programmed", "ok")},
        ),
        # invalid, and running on its last valid version
        (
            [tunnel("t", 3000)],
            Selection(
                live(3000),
                {"L2TPTunnel/t": Problem(Severity.ERROR, "L2TPTunnel", "t", "spec.x", "bad")},
                frozenset({"L2TPTunnel/t"}),
            ),
            {"L2TPTunnel/t": ObjectResult("L2TPTunnel/t", True, Reason.PROGRAMMED, "ok")},
            {
                "L2TPTunnel/t": (
                    "False",
                    "InvalidSpec",
                    "spec.x: bad; the last valid version stays programmed",
                )
            },
        ),
        # invalid, never valid: no path, a Conflict
        (
            [tunnel("t", 3000)],
            Selection(
                Resources(),
                {
                    "L2TPTunnel/t": Problem(
                        Severity.ERROR, "L2TPTunnel", "t", "", "taken", reason=Reason.CONFLICT
                    )
                },
            ),
            {},
            {"L2TPTunnel/t": ("False", "Conflict", "taken")},
        ),
        # no verdict: a session whose tunnel is not on this node, and one waiting
        (
            [tunnel("t", 3000), session("s", "t", 1), session("lost", "gone", 1)],
            Selection(live(3000)),
            {},
            {
                "L2TPTunnel/t": ("False", "Progressing", "waiting to be programmed"),
                "L2TPSession/s": ("False", "Progressing", "waiting to be programmed"),
                "L2TPSession/lost": (
                    "False",
                    "TunnelNotFound",
                    "no L2TPTunnel 'gone' on this node",
                ),
            },
        ),
    ],
)
def test_ready_says_what_validation_and_the_reconcile_said(
    objects: list[dict[str, Any]],
    selection: Selection,
    results: dict[str, ObjectResult],
    expected: dict[str, tuple[str, str, str]],
) -> None:
    view = ClusterView.of(
        [o for o in objects if o["kind"] == "L2TPTunnel"],
        [o for o in objects if o["kind"] == "L2TPSession"],
    )
    built = status.build(view, selection, Result(results=results), Owned(), "node-a", {}, NOW)
    assert all(isinstance(item, ObjectStatus) for item in built)
    got = {
        item.obj.subject: ready_of(item.status) for item in built if isinstance(item, ObjectStatus)
    }
    assert got == expected
    assert [item.obj.subject for item in built] == list(view.objects)  # the view's order


def test_a_programmed_session_says_what_the_kernel_has() -> None:
    view = ClusterView.of([tunnel("t", 3000)], [session("s", "t", 1)])
    result = Result(results={"L2TPSession/s": PROGRAMMED})
    (_, item) = status.build(view, Selection(live(3000)), result, Owned(), "node-a", {}, NOW)
    assert isinstance(item, ObjectStatus)
    st = item.status
    assert st["observedGeneration"] == 3
    assert {k: v for k, v in st.items() if k not in ("conditions", "observedGeneration")} == {
        "nodeName": "node-a",
        "interfaceName": "l2tpeth0",
        "interfaceIndex": 7,
        "mtu": 1446,
        "ipv6AddrGenMode": "none",
        "qdisc": "noqueue",
        "ignored": ["offset"],
    }
    peer = st["conditions"][1]
    assert (peer["type"], peer["status"], peer["reason"]) == (
        "PeerActive",
        "Unknown",
        "AwaitingTraffic",
    )
    assert peer["observedGeneration"] == 3 and peer["lastTransitionTime"] == NOW


ACTIVE = PeerVerdict(Liveness.ACTIVE, 1.0, "packets arrive")


@pytest.mark.parametrize(
    ("peer", "programmed", "expected"),
    [
        (None, False, ("Unknown", "NotProgrammed", NOW)),
        (Peer(ACTIVE, (Liveness.ACTIVE, EARLIER), None), True, ("True", "PeerActive", EARLIER)),
        # the state began before the one remembered: the change is now
        (Peer(ACTIVE, (Liveness.SILENT, EARLIER), None), True, ("True", "PeerActive", NOW)),
        # no evidence yet: a known verdict on the server stays
        (
            Peer(
                None,
                None,
                {
                    "type": "PeerActive",
                    "status": "False",
                    "reason": "PeerSilent",
                    "lastTransitionTime": EARLIER,
                },
            ),
            True,
            ("False", "PeerSilent", EARLIER),
        ),
    ],
)
def test_peer_active(peer: Peer | None, programmed: bool, expected: tuple[str, str, str]) -> None:
    view = ClusterView.of([tunnel("t", 3000)], [session("s", "t", 1)])
    r = PROGRAMMED if programmed else ObjectResult("L2TPSession/s", False, Reason.PROGRESSING, "")
    peers = {"L2TPSession/s": peer} if peer else {}
    built = status.build(
        view, Selection(live(3000)), Result(results={r.subject: r}), Owned(), "n", peers, NOW
    )
    item = built[1]
    assert isinstance(item, ObjectStatus)
    c = item.status["conditions"][1]
    assert (c["status"], c["reason"], c["lastTransitionTime"]) == expected


@pytest.mark.parametrize(
    ("owned", "live_ids", "released"),
    [
        (Owned(), (), ["L2TPTunnel/old", "L2TPSession/old-s"]),  # nothing left: both go
        (Owned(tunnels={4000}, sessions={(4000, 9)}), (), []),  # still in the kernel
        (Owned(tunnels={4000}), (), ["L2TPSession/old-s"]),
        # a live object declares tunnel 4000 (the deleted one was a refused duplicate)
        (Owned(tunnels={4000}), (4000,), ["L2TPTunnel/old", "L2TPSession/old-s"]),
    ],
)
def test_a_deleted_object_is_released_once_its_kernel_objects_are_gone(
    owned: Owned, live_ids: tuple[int, ...], released: list[str]
) -> None:
    view = ClusterView.of(
        [tunnel("old", 4000, deleting=True)], [session("old-s", "old", 9, deleting=True)]
    )
    built = status.build(view, Selection(live(*live_ids)), Result(), owned, "n", {}, NOW)
    assert all(isinstance(item, Release) for item in built)
    assert [item.obj.subject for item in built] == released


def test_a_live_session_keeps_a_deleted_ones_kernel_session() -> None:
    view = ClusterView.of(
        [tunnel("old", 4000, deleting=True), tunnel("t4000", 4000)],
        [session("old-s", "old", 9, deleting=True)],
    )
    selection = Selection(Resources(live(4000).tunnels, (Session("s", "t4000", 9, 10),)))
    owned = Owned(tunnels={4000}, sessions={(4000, 9)})
    built = status.build(view, selection, Result(), owned, "n", {}, NOW)
    assert [i.obj.subject for i in built if isinstance(i, Release)] == [
        "L2TPTunnel/old",
        "L2TPSession/old-s",
    ]
