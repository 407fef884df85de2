"""plan_session: what one declared session needs, from the kernel's session, what the agent
owns and the links, as a table of cases (pure: no kernel, no fake)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from kube_l2tp.core.desired import Owned
from kube_l2tp.core.plan import (
    SEND_SEQ_OFF_NOTE,
    Conflict,
    Create,
    Keep,
    Modify,
    Observed,
    Pending,
    Replace,
    SessionDecision,
    plan_session,
)
from kube_l2tp.core.state import (
    ObservedLink,
    ObservedSession,
    ObservedTunnel,
    SessionConfig,
    TunnelConfig,
)

KEY = (3000, 1000)
WANT = SessionConfig(3000, 1000, 2000, ifname="l2tpeth0")
TUNNEL = ObservedTunnel(TunnelConfig(3000, 4000, "udp", "192.0.2.1", "192.0.2.2", 5000, 6000))
DEVICE = ObservedLink("l2tpeth0", 7, "l2tp", up=True, mtu=1446)
GONE = "interface deleted or renamed outside the agent"
KEEP = Keep("l2tpeth0")


def owned(**kw: object) -> Owned:
    """The agent owns the session and its device (index 7), applied as declared."""
    base = Owned(
        tunnels={3000},
        sessions={KEY},
        seq={KEY: (False, False)},
        l2spec={KEY: "default"},
        ifindex={"l2tpeth0": 7},
    )
    return replace(base, **kw)


@dataclass(frozen=True)
class Case:
    want: SessionConfig = WANT
    have: SessionConfig | None = WANT
    owned: Owned = field(default_factory=owned)
    links: tuple[ObservedLink, ...] = (DEVICE,)
    others: tuple[SessionConfig, ...] = ()  # the kernel's other sessions
    tunnel: bool = True  # the tunnel is in the kernel
    expected: SessionDecision = KEEP


CASES = {
    "absent": Case(have=None, owned=Owned(tunnels={3000}), links=(), expected=Create("declared")),
    "absent, on a tunnel being created": Case(
        have=None, owned=Owned(), links=(), tunnel=False, expected=Create("declared")
    ),
    "absent, once ours": Case(
        have=None, links=(), expected=Create("missing (deleted outside the agent)")
    ),
    "absent, the kernel picks the name": Case(
        want=replace(WANT, ifname=None),
        have=None,
        owned=Owned(tunnels={3000}),
        links=(),
        expected=Create("declared"),
    ),
    "equal": Case(),
    "sequencing changed (mutable)": Case(
        want=replace(WANT, send_seq=True, recv_seq=True), expected=Modify("l2tpeth0")
    ),
    "recv_seq changed (mutable)": Case(
        want=replace(WANT, recv_seq=True), expected=Modify("l2tpeth0")
    ),
    "peer session id changed (immutable)": Case(
        want=replace(WANT, peer_session_id=2001),
        expected=Replace(("peer_session_id",), ("l2tpeth0",)),
    ),
    "cookies changed (immutable)": Case(
        want=replace(WANT, cookie=b"\x01\x02\x03\x04", peer_cookie=b"\x05\x06\x07\x08"),
        expected=Replace(("cookie", "peer_cookie"), ("l2tpeth0",)),
    ),
    "l2spec type changed (immutable, as last applied)": Case(
        want=replace(WANT, l2spec_type="none"),
        expected=Replace(("l2spec_type",), ("l2tpeth0",)),
    ),
    "l2spec type never applied by this agent (no record)": Case(
        want=replace(WANT, l2spec_type="none"), owned=owned(l2spec={}), expected=Keep("l2tpeth0")
    ),
    "interface name changed": Case(
        want=replace(WANT, ifname="wire0"), expected=Replace(("ifname",), ("l2tpeth0",))
    ),
    "foreign session with the same ids": Case(
        owned=Owned(tunnels={3000}),
        expected=Conflict(
            "session 1000 already exists in tunnel 3000 and was not created by kube-l2tp:"
            " delete it or choose another sessionID"
        ),
    ),
    "owned, being deleted": Case(
        owned=owned(deleting={KEY}),
        expected=Pending("our delete of it is still in progress in the kernel"),
    ),
    "owned, its device deleted outside": Case(links=(), expected=Replace((GONE,), ())),
    "owned, its device's name now another link's": Case(
        links=(replace(DEVICE, index=8),), expected=Replace((GONE,), ())
    ),
    "owned, a bridge took its device's name": Case(
        links=(replace(DEVICE, kind="bridge"),), expected=Replace((GONE,), ())
    ),
    "owned, immutable change and device gone": Case(
        want=replace(WANT, peer_session_id=2001),
        links=(),
        expected=Replace(("peer_session_id", GONE), ()),
    ),
    "absent, its name a foreign interface's": Case(
        have=None,
        owned=Owned(tunnels={3000}),
        links=(replace(DEVICE, kind="veth"),),
        expected=Conflict(
            "interface name l2tpeth0 is taken by an interface kube-l2tp did not create:"
            " rename or delete it, or choose another interfaceName"
        ),
    ),
    "absent, its name a foreign session's device": Case(
        have=None,
        owned=Owned(tunnels={3000}),
        others=(SessionConfig(3000, 7, 8, ifname="l2tpeth0"),),
        expected=Conflict(
            "interface name l2tpeth0 is taken by the device of session 7 in tunnel 3000, which"
            " kube-l2tp did not create: rename or delete it, or choose another interfaceName"
        ),
    ),
    "absent, its name our other session's (being replaced)": Case(
        have=None,
        owned=Owned(tunnels={3000}, sessions={(3000, 7)}),
        others=(SessionConfig(3000, 7, 8, ifname="l2tpeth0"),),
        expected=Pending("another session of kube-l2tp has l2tpeth0: it is being replaced"),
    ),
    "absent, the device of a session we deleted still going": Case(
        have=None,
        owned=Owned(tunnels={3000}, deleting_links={"l2tpeth0"}),
        expected=Pending("the device l2tpeth0 of a session kube-l2tp deleted is still going"),
    ),
    "the kernel turned send_seq off (peer sends none)": Case(
        want=replace(WANT, send_seq=True),
        owned=owned(seq={KEY: (True, False)}),
        expected=Keep("l2tpeth0", SEND_SEQ_OFF_NOTE),
    ),
    "the kernel turned send_seq on (peer numbers its frames)": Case(
        have=replace(WANT, send_seq=True), expected=Keep("l2tpeth0")
    ),
    "send_seq off by someone else": Case(
        want=replace(WANT, send_seq=True),
        owned=owned(seq={KEY: (False, False)}),
        expected=Modify("l2tpeth0"),
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_plan_session(case: Case) -> None:
    sessions = [ObservedSession(c) for c in (case.have, *case.others) if c is not None]
    observed = Observed.of([TUNNEL] if case.tunnel else [], sessions, case.links)
    have = ObservedSession(case.have) if case.have is not None else None
    assert plan_session(case.want, have, case.owned, observed) == case.expected


def test_it_changes_nothing_it_is_given() -> None:
    mine = owned()
    before = mine.to_json()
    observed = Observed.of([TUNNEL], [ObservedSession(WANT)], [DEVICE])
    plan_session(replace(WANT, peer_session_id=1), ObservedSession(WANT), mine, observed)
    assert mine.to_json() == before and mine.ifindex == {"l2tpeth0": 7}
