"""Leader election's rules (k8s/lease.py) without an API server: the claim decision, and the
elector against an in-memory Lease with optimistic concurrency, on a clock the test moves.

Two operator processes on the real kube-apiserver: tests/realapi/test_ha.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace

import pytest

from kube_l2tp.k8s.lease import Elector, LeaseRecord, Timing, claim

NOW = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
TIMING = Timing(duration=15, renew_deadline=10, retry=2)


def held_by(holder: str, version: str = "7") -> LeaseRecord:
    return LeaseRecord(holder, 15, 3, NOW, NOW, version)


def test_a_missing_lease_is_created_for_us() -> None:
    record = claim(None, 0.0, "a", TIMING, NOW)
    assert record == LeaseRecord("a", 15, 0, NOW, NOW, "")


def test_the_holder_renews_at_the_version_it_read() -> None:
    later = NOW + dt.timedelta(seconds=2)
    record = claim(held_by("a"), 100.0, "a", TIMING, later)
    assert record is not None
    assert (record.holder, record.renewed, record.version, record.transitions) == (
        "a",
        later,
        "7",
        3,
    )
    assert record.acquired == NOW  # a renewal is not a new acquisition


def test_another_holders_live_lease_is_left_alone() -> None:
    assert claim(held_by("b"), 14.9, "a", TIMING, NOW) is None


def test_a_lease_silent_for_its_duration_is_taken_over() -> None:
    record = claim(held_by("b"), 15.0, "a", TIMING, NOW)
    assert record is not None
    assert (record.holder, record.transitions, record.acquired) == ("a", 4, NOW)
    assert record.version == "7"  # a replace: it fails if b renewed meanwhile


def test_expiry_counts_the_duration_the_holder_wrote() -> None:
    long_lease = replace(held_by("b"), duration=60)
    assert claim(long_lease, 30.0, "a", TIMING, NOW) is None


def test_a_released_lease_is_taken_at_once() -> None:
    record = claim(replace(held_by("b"), holder=""), 0.0, "a", TIMING, NOW)
    assert record is not None and record.holder == "a"


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)]
)
def test_timing_that_could_give_two_leaders_is_refused(
    duration: float, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match=r"retry period .* < renew deadline .* < lease duration"):
        Timing(duration, deadline, retry)


class MemoryLease:
    """One Lease: a write succeeds only at the version last stored (as the API server's)."""

    def __init__(self) -> None:
        self.namespace, self.name = "ns", "lease"
        self.record: LeaseRecord | None = None
        self.serial = 0
        self.down = False

    def read(self) -> LeaseRecord | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        return self.record

    def write(self, record: LeaseRecord) -> LeaseRecord | None:
        if self.down:
            raise ConnectionError("API server unreachable")
        stored = self.record.version if self.record else ""
        if record.version != stored:
            return None
        self.serial += 1
        self.record = replace(record, version=str(self.serial))
        return self.record


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def electors(store: MemoryLease, clock: Clock, *names: str) -> list[Elector]:
    return [Elector(store, n, TIMING, clock=clock) for n in names]  # type: ignore[arg-type]


def test_one_leader_then_takeover_only_after_the_duration() -> None:
    store, clock = MemoryLease(), Clock()
    a, b = electors(store, clock, "a", "b")

    async def scenario() -> None:
        await a.step()
        await b.step()
        assert (a.held, b.held) == (True, False)
        # a dies (no more steps); b keeps looking every retry period
        for _ in range(7):  # 14 s < 15 s: still a's
            clock.now += 2
            await b.step()
            assert not b.held
        clock.now += 2  # 16 s after b last saw a renew
        await b.step()
        assert b.held and store.record is not None and store.record.holder == "b"
        assert store.record.transitions == 1

    asyncio.run(scenario())


def test_the_holder_stops_leading_before_anyone_may_take_over() -> None:
    """API unreachable for the holder only: it stops at renew_deadline (10 s), the other may
    take over only at the lease duration (15 s) after it saw the last renewal."""
    store, clock = MemoryLease(), Clock()
    a, b = electors(store, clock, "a", "b")

    async def scenario() -> None:
        await a.step()
        await b.step()
        store.down = True
        stopped_at = None
        while stopped_at is None:
            clock.now += 1
            await a.step()
            if not a.held:
                stopped_at = clock.now
        assert stopped_at == 10
        store.down = False
        clock.now = 14
        await b.step()
        assert not b.held
        clock.now = 15
        await b.step()
        assert b.held and not a.held

    asyncio.run(scenario())


def test_a_cancelled_holder_releases_the_lease() -> None:
    store, clock = MemoryLease(), Clock()
    a, b = electors(store, clock, "a", "b")
    changes: list[bool] = []
    a._changed = changes.append

    async def scenario() -> None:
        task = asyncio.create_task(a.run())
        await asyncio.sleep(0.05)
        assert a.held
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert store.record is not None and store.record.holder == ""
        await b.step()  # at once, no waiting for the duration
        assert b.held

    asyncio.run(scenario())
    assert changes == [True, False]
