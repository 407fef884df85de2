"""Allocation for L2TPPseudowire: properties over 200 pseudowires on three nodes (hypothesis).

Unique where the kernel needs it (tunnel ids per node, local address + UDP port per node,
session ids per node), never a value a hand-written object holds, stable across restarts and
unrelated changes, released on deletion, and a typed result when a range runs out.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources, Session, Tunnel, Udp
from kube_l2tp.core.allocation import (
    Allocation,
    End,
    Exhausted,
    Ranges,
    Request,
    allocate,
)
from kube_l2tp.core.pseudowire import API_VERSION as API
from kube_l2tp.core.pseudowire import owned_objects

NODES = {"n1": "192.0.2.1", "n2": "192.0.2.2", "n3": "192.0.2.3"}
EXTERNAL = ["203.0.113.7", "203.0.113.8"]
N = 200


@st.composite
def hand_written(draw: st.DrawFn) -> Resources:
    """Hand-written tunnels and sessions on the three nodes, with ids and ports drawn low,
    where the allocator looks first."""
    tunnels, sessions = [], []
    for i in range(draw(st.integers(0, 30))):
        node = draw(st.sampled_from(sorted(NODES)))
        udp = draw(st.booleans())
        t = Tunnel(
            name=f"hand-{i}",
            node=node,
            tunnel_id=draw(st.integers(1, 40)),
            peer_tunnel_id=draw(st.integers(1, 40)),
            local=NODES[node],
            remote=draw(st.sampled_from(EXTERNAL)),
            encapsulation="udp" if udp else "ip",
            udp=Udp(draw(st.integers(20000, 20040)), draw(st.integers(20000, 20040)))
            if udp
            else None,
        )
        tunnels.append(t)
        sessions.append(
            Session(f"hand-{i}-s", t.name, draw(st.integers(1, 40)), draw(st.integers(1, 40)))
        )
    return Resources(tuple(tunnels), tuple(sessions))


@st.composite
def requests(draw: st.DrawFn, count: int = N) -> list[Request]:
    out = []
    for i in range(count):
        a = draw(st.sampled_from(sorted(NODES)))
        external = draw(st.integers(0, 4)) == 0  # about one in five to a router
        if external:
            b = End(draw(st.sampled_from(EXTERNAL)))
        else:
            b_node = draw(st.sampled_from(sorted(set(NODES) - {a})))
            b = End(NODES[b_node], b_node)
        out.append(
            Request(
                f"pw-{i:03d}",
                End(NODES[a], a),
                b,
                encapsulation=draw(st.sampled_from(["udp", "ip"])),
                cookies=draw(st.booleans()),
            )
        )
    return out


def _used(existing: Resources) -> tuple[Counter[tuple[str, int]], ...]:
    """Counters per (scope, value) of what hand-written objects hold on the nodes."""
    tids: Counter[tuple[str, int]] = Counter()
    sids: Counter[tuple[str, int]] = Counter()
    ports: Counter[tuple[str, int]] = Counter()
    by_name = {t.name: t for t in existing.tunnels}
    for t in existing.tunnels:
        tids[t.node, t.tunnel_id] += 1
        if t.udp:
            ports[f"{t.node}/{t.local}", t.udp.source_port] += 1
    for s in existing.sessions:
        sids[by_name[s.tunnel_ref].node, s.session_id] += 1
    return tids, sids, ports


def _allocated(
    reqs: Iterable[Request], result: dict[str, Allocation | Exhausted]
) -> tuple[Counter[tuple[str, int]], ...]:
    tids: Counter[tuple[str, int]] = Counter()
    sids: Counter[tuple[str, int]] = Counter()
    ports: Counter[tuple[str, int]] = Counter()
    for req in reqs:
        alloc = result[req.name]
        assert isinstance(alloc, Allocation), alloc
        for end, v in ((req.a, alloc.a), (req.b, alloc.b)):
            tids[end.scope, v.tunnel_id] += 1
            sids[end.scope, v.session_id] += 1
            if req.encapsulation == "udp":
                assert v.port is not None
                ports[f"{end.scope}/{end.address}", v.port] += 1
            else:
                assert v.port is None
    return tids, sids, ports


# Shrinking a list of 200 requests takes minutes; a failure prints its seed instead.
SETTINGS = settings(
    max_examples=25,
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@SETTINGS
@given(existing=hand_written(), reqs=requests(), seed=st.integers(0, 2**32))
def test_unique_where_the_kernel_needs_it_and_never_a_hand_written_value(
    existing: Resources, reqs: list[Request], seed: int
) -> None:
    result = allocate(reqs, existing, {}, randbits=random.Random(seed).getrandbits)
    ours = _allocated(reqs, result)
    theirs = _used(existing)
    for mine, hand in zip(ours, theirs, strict=True):
        assert max(mine.values(), default=1) == 1, "two pseudowire ends share a value"
        assert not (set(mine) & set(hand)), "a pseudowire took a hand-written object's value"
    for req in reqs:
        alloc = result[req.name]
        assert isinstance(alloc, Allocation)
        for v in (alloc.a, alloc.b):
            assert 1 <= v.tunnel_id < 2**32
            assert 1 <= v.session_id < 2**32
            if req.cookies:
                assert v.cookie is not None
                assert len(v.cookie) == 16
                int(v.cookie, 16)
            else:
                assert v.cookie is None


@SETTINGS
@given(existing=hand_written(), reqs=requests(), seed=st.integers(0, 2**32))
def test_stable_across_restarts_additions_and_deletions(
    existing: Resources, reqs: list[Request], seed: int
) -> None:
    """A restart re-reads the records (in any order) and gets the same values, cookies
    included; adding pseudowires or deleting some changes none of the others."""
    rng = random.Random(seed)
    first = allocate(reqs[:150], existing, {}, randbits=rng.getrandbits)
    records = {k: v for k, v in first.items() if isinstance(v, Allocation)}
    shuffled = list(reqs[:150])
    rng.shuffle(shuffled)
    assert allocate(shuffled, existing, records, randbits=rng.getrandbits) == first
    grown = allocate(reqs, existing, records, randbits=rng.getrandbits)
    assert {k: grown[k] for k in first} == first
    _allocated(reqs, grown)  # still unique with the 50 new ones
    records = {k: v for k, v in grown.items() if isinstance(v, Allocation)}
    kept = reqs[::2]
    shrunk = allocate(kept, existing, records, randbits=rng.getrandbits)
    assert shrunk == {r.name: grown[r.name] for r in kept}


def test_a_record_is_kept_even_when_a_hand_written_object_now_holds_its_value() -> None:
    """The object written later is the one in conflict: the wire in use does not move."""
    req = Request("pw", End("192.0.2.1", "n1"), End("192.0.2.2", "n2"))
    first = allocate([req], Resources(), {})["pw"]
    assert isinstance(first, Allocation)
    late = Tunnel("hand", "n1", first.a.tunnel_id, 9, "192.0.2.1", "198.51.100.9", "ip")
    assert allocate([req], Resources((late,)), {"pw": first})["pw"] == first
    # without the record the allocator steps around it
    fresh = allocate([req], Resources((late,)), {})["pw"]
    assert isinstance(fresh, Allocation)
    assert fresh.a.tunnel_id != first.a.tunnel_id


def test_an_edit_onto_a_taken_node_keeps_what_still_fits() -> None:
    """Moving an end onto a node where another pseudowire holds its ids re-picks only those;
    the cookies (already in the peer's configuration) stay."""
    one = Request("a-first", End("192.0.2.1", "n1"), End("192.0.2.2", "n2"))
    two = Request("b-second", End("192.0.2.3", "n3"), End("192.0.2.2", "n2"), "ip")
    before = allocate([one, two], Resources(), {})
    records = {k: v for k, v in before.items() if isinstance(v, Allocation)}
    moved = Request("b-second", End("192.0.2.1", "n1"), End("192.0.2.2", "n2"), "ip")
    after = allocate([one, moved], Resources(), records)
    assert after["a-first"] == before["a-first"]
    old, new = before["b-second"], after["b-second"]
    assert isinstance(old, Allocation)
    assert isinstance(new, Allocation)
    assert (new.a.cookie, new.b.cookie) == (old.a.cookie, old.b.cookie)
    assert new.b == old.b
    _allocated([one, moved], after)


@settings(max_examples=20, deadline=None)
@given(reqs=requests(count=12), size=st.integers(1, 6))
def test_exhaustion_is_a_typed_result_and_the_rest_still_fit(
    reqs: list[Request], size: int
) -> None:
    """Ranges of ``size`` values: whoever does not fit gets Exhausted naming what ran out and
    where; the others are allocated and unique; nothing raises."""
    ranges = Ranges((1, size), (1, size), (20000, 20000 + size - 1))
    result = allocate(reqs, Resources(), {}, ranges=ranges)
    fitted = [r for r in reqs if isinstance(result[r.name], Allocation)]
    _allocated(fitted, result)
    for r in reqs:
        res = result[r.name]
        if isinstance(res, Exhausted):
            assert res.what in ("tunnel id", "session id", "UDP port")
            assert res.scope in (r.a.scope, r.b.scope)
            assert f"no free {res.what} in" in res.message
    per_node = Counter(e.scope for r in reqs for e in (r.a, r.b))
    if max(per_node.values()) <= size:
        assert len(fitted) == len(reqs)
    else:
        assert len(fitted) < len(reqs)


def test_two_hundred_on_three_nodes_use_the_lowest_free_values() -> None:
    """Deterministic shape: node-to-node UDP pseudowires take ids and ports from the bottom of
    each range, skipping what a hand-written tunnel holds."""
    hand = Tunnel("hand", "n1", 1, 1, "192.0.2.1", "203.0.113.7", udp=Udp(20000, 20000))
    pairs = [("n1", "n2"), ("n2", "n3"), ("n3", "n1")]
    reqs = [
        Request(f"pw-{i:03d}", End(NODES[a], a), End(NODES[b], b))
        for i in range(N)
        for a, b in [pairs[i % 3]]
    ]
    result = allocate(reqs, Resources((hand,)), {})
    _allocated(reqs, result)
    n1_ids = sorted(
        v.tunnel_id
        for r in reqs
        for end, v in zip((r.a, r.b), _pair(result[r.name]), strict=True)
        if end.node == "n1"
    )
    assert n1_ids == list(range(2, 2 + len(n1_ids)))  # 1 is the hand-written tunnel's


def _pair(res: Allocation | Exhausted) -> tuple[object, object]:
    assert isinstance(res, Allocation)
    return res.a, res.b


@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(reqs=requests(), seed=st.integers(0, 2**32))
def test_owned_objects_of_200_pseudowires_pass_validate_together(
    reqs: list[Request], seed: int
) -> None:
    """The objects the operator will write for 200 pseudowires, beside hand-written ones, pass
    the project's own validator as one set: ids and ports unique per node, and every
    node-to-node pair mirrored (ports, ids, cookies), which validate checks across ends."""
    hand = [
        tunnel_doc(f"hand-{node}", node, NODES[node], EXTERNAL[0], tid=1, port=20000)
        for node in sorted(NODES)
    ]
    existing = validation.check_documents(
        [manifests.Document(f"hand#{i}", o) for i, o in enumerate(hand)]
    ).resources
    result = allocate(reqs, existing, {}, randbits=random.Random(seed).getrandbits)
    objects = list(hand)
    for req in reqs:
        alloc = result[req.name]
        assert isinstance(alloc, Allocation)
        objects += owned_objects(req, alloc)
    report = validation.check_documents(
        [manifests.Document(f"pw#{i}", o) for i, o in enumerate(objects)]
    )
    assert not report.errors, [p.render() for p in report.errors[:5]]
    in_cluster = sum((r.a.node is not None) + (r.b.node is not None) for r in reqs)
    assert len(report.resources.tunnels) == in_cluster + len(hand)


def tunnel_doc(
    name: str, node: str, local: str, remote: str, tid: int, port: int
) -> dict[str, object]:
    spec = {
        "nodeName": node,
        "tunnelID": tid,
        "peerTunnelID": tid,
        "local": local,
        "remote": remote,
        "udp": {"sourcePort": port, "destinationPort": port},
    }
    return {"apiVersion": API, "kind": "L2TPTunnel", "metadata": {"name": name}, "spec": spec}
