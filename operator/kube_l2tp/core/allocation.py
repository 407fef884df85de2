"""Allocation for L2TPPseudowire: tunnel ids, session ids, UDP ports and cookies, pure.

Given the hand-written tunnels and sessions and what earlier allocations recorded, give every
pseudowire the values it left out:

- tunnel ids unique per node (the kernel's tunnel ids are per network namespace: EEXIST);
- UDP source ports unique per node and local address (the tunnel's socket: EADDRINUSE);
- session ids unique per node across all sessions: the kernel needs that only for IP
  encapsulation (it finds those sessions by id alone), unique everywhere keeps an edit from
  UDP to IP from colliding;
- cookies random 64-bit, one per direction.

An external peer's values are allocated in a scope of its own address, so two pseudowires to
one router never share its ids or ports. Recorded values are never re-rolled, so an operator
restart or an unrelated edit changes nothing on the wire; a pseudowire that is gone has no
record, which releases its values. Running out of a range is a typed result for that one
pseudowire (``Exhausted``), never an exception that would stop the others.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from kube_l2tp.api.model import Encap, Resources

MAX_ID = 2**32 - 1


@dataclass(frozen=True)
class End:
    """One end of a pseudowire: a node of the cluster, or an external peer (node None)."""

    address: str
    node: str | None = None

    @property
    def scope(self) -> str:
        """Where its ids must be unique: the node, or the external peer's address."""
        return self.node if self.node is not None else f"external:{self.address}"


@dataclass(frozen=True)
class Request:
    name: str
    a: End
    b: End
    encapsulation: Encap = "udp"
    cookies: bool = True


@dataclass(frozen=True)
class EndValues:
    tunnel_id: int
    session_id: int
    port: int | None  # this end's UDP source port (the other end's destination); None for IP
    cookie: str | None  # 16 hex digits this end sends (the other end's peerCookie)


@dataclass(frozen=True)
class Allocation:
    a: EndValues
    b: EndValues


@dataclass(frozen=True)
class Exhausted:
    """No free value left for one pseudowire: what ran out, where, and the range searched."""

    pseudowire: str
    what: str  # "tunnel id" | "session id" | "UDP port"
    scope: str
    low: int
    high: int

    @property
    def message(self) -> str:
        return (
            f"no free {self.what} in {self.low}..{self.high} on {self.scope}: free some, or"
            " set the value on the pseudowire"
        )


@dataclass(frozen=True)
class Ranges:
    tunnel_ids: tuple[int, int] = (1, MAX_ID)
    session_ids: tuple[int, int] = (1, MAX_ID)
    # Below Linux's ephemeral ports (32768-60999), above the well-known and registered
    # defaults (1701 for L2TP): a port the kernel hands another socket never collides.
    ports: tuple[int, int] = (20000, 29999)


Result = Allocation | Exhausted


@dataclass
class _Taken:
    """Values in use, per scope key."""

    used: dict[tuple[str, ...], set[int]] = field(default_factory=lambda: defaultdict(set))

    def add(self, key: tuple[str, ...], value: int | None) -> None:
        if value is not None:
            self.used[key].add(value)

    def free(self, key: tuple[str, ...], value: int | None) -> bool:
        return value is None or value not in self.used[key]

    def lowest(self, key: tuple[str, ...], low: int, high: int) -> int | None:
        """The lowest free value: at most len(used)+1 steps, whatever the range."""
        used = self.used[key]
        value = low
        while value <= high:
            if value not in used:
                return value
            value += 1
        return None


def _keys(end: End) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    return ("tunnel", end.scope), ("session", end.scope), ("port", end.scope, end.address)


def _hand_written(resources: Resources, taken: _Taken) -> None:
    """What hand-written objects use, at their node and at their remote (if it is a peer)."""
    tunnels = {t.name: t for t in resources.tunnels}
    for t in resources.tunnels:
        here, there = End(t.local, t.node), End(t.remote)
        taken.add(_keys(here)[0], t.tunnel_id)
        taken.add(_keys(there)[0], t.peer_tunnel_id)
        if t.udp is not None:
            taken.add(_keys(here)[2], t.udp.source_port)
            taken.add(_keys(there)[2], t.udp.destination_port)
    for s in resources.sessions:
        parent = tunnels.get(s.tunnel_ref)
        if parent is not None:
            taken.add(_keys(End(parent.local, parent.node))[1], s.session_id)
            taken.add(_keys(End(parent.remote))[1], s.peer_session_id)


def _claims(req: Request, values: Allocation) -> list[tuple[tuple[str, ...], int | None]]:
    out: list[tuple[tuple[str, ...], int | None]] = []
    for end, v in ((req.a, values.a), (req.b, values.b)):
        tkey, skey, pkey = _keys(end)
        out += [(tkey, v.tunnel_id), (skey, v.session_id)]
        if req.encapsulation == "udp":
            out.append((pkey, v.port if v.port is not None else -1))
    return out


def _claim(taken: _Taken, claims: Iterable[tuple[tuple[str, ...], int | None]]) -> bool:
    """Take every value or none: a record that no longer fits leaves nothing behind."""
    done: list[tuple[tuple[str, ...], int]] = []
    for key, value in claims:
        if value is None:
            continue
        if value < 0 or not taken.free(key, value):
            for k, v in done:
                taken.used[k].discard(v)
            return False
        taken.add(key, value)
        done.append((key, value))
    return True


def _new_cookie(randbits: Callable[[int], int]) -> str:
    return f"{randbits(64):016x}"


def allocate(
    requests: Sequence[Request],
    existing: Resources,
    recorded: Mapping[str, Allocation],
    *,
    ranges: Ranges = Ranges(),
    randbits: Callable[[int], int] = secrets.randbits,
) -> dict[str, Result]:
    """An allocation for every request, by name.

    Recorded values come first and are kept as they are (a restart re-reads them and gets the
    same answer); the rest are the lowest free values, requests taken by name, so the result
    does not depend on the order the API listed them in.
    """
    taken = _Taken()
    out: dict[str, Result] = {}
    for req in sorted(requests, key=lambda r: r.name):
        kept = recorded.get(req.name)
        # A record is kept unless an earlier record holds its values (only after an edit moved
        # an end onto a node where another pseudowire holds them). Hand-written objects never
        # displace a record (they are counted after): the object made later is in conflict.
        if kept is not None and _claim(taken, _claims(req, kept)):
            out[req.name] = kept
    _hand_written(existing, taken)
    for req in sorted(requests, key=lambda r: r.name):
        if req.name not in out:
            out[req.name] = _fresh(req, recorded.get(req.name), taken, ranges, randbits)
    return out


def _fresh(
    req: Request,
    old: Allocation | None,
    taken: _Taken,
    ranges: Ranges,
    randbits: Callable[[int], int],
) -> Result:
    """New values, keeping whatever of an old record is still free (cookies always)."""
    ends: list[EndValues] = []
    claimed: list[tuple[tuple[str, ...], int]] = []
    for end, prev in ((req.a, old.a if old else None), (req.b, old.b if old else None)):
        tkey, skey, pkey = _keys(end)
        picks: list[int] = []
        wanted: Iterable[tuple[str, tuple[str, ...], tuple[int, int], int | None]] = (
            ("tunnel id", tkey, ranges.tunnel_ids, prev.tunnel_id if prev else None),
            ("session id", skey, ranges.session_ids, prev.session_id if prev else None),
        )
        if req.encapsulation == "udp":
            wanted = (*wanted, ("UDP port", pkey, ranges.ports, prev.port if prev else None))
        for what, key, (low, high), before in wanted:
            value = before if before is not None and taken.free(key, before) else None
            if value is None:
                value = taken.lowest(key, low, high)
            if value is None:
                for k, v in claimed:  # release what this request took before running out
                    taken.used[k].discard(v)
                return Exhausted(req.name, what, end.scope, low, high)
            taken.add(key, value)
            claimed.append((key, value))
            picks.append(value)
        cookie = None
        if req.cookies:
            cookie = prev.cookie if prev and prev.cookie else _new_cookie(randbits)
        port = picks[2] if len(picks) > 2 else None
        ends.append(EndValues(picks[0], picks[1], port, cookie))
    return Allocation(ends[0], ends[1])
