"""Peer liveness from counters alone (core.liveness): the state machine, sample by sample."""

from __future__ import annotations

import pytest

from kube_l2tp.core.liveness import Liveness, LivenessTracker, Sample

K = (3000, 1000)


def feed(tracker: LivenessTracker[tuple[int, int]], *samples: tuple[float, int, int]) -> Liveness:
    state = Liveness.UNKNOWN
    for t, tx, rx in samples:
        state = tracker.observe(K, Sample(t, tx, rx)).state
    return state


def test_unknown_before_the_history_covers_a_window() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=60)
    assert feed(tracker, (0, 0, 0), (30, 100, 0), (59, 200, 0)) is Liveness.UNKNOWN
    assert tracker.verdict(K) is not None
    assert tracker.verdict((1, 1)) is None


def test_silent_when_tx_rises_and_rx_stays_flat_over_the_window() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=60)
    assert feed(tracker, (0, 0, 5), (30, 100, 5), (60, 200, 5)) is Liveness.SILENT
    v = tracker.verdict(K)
    assert v is not None and v.since == 60
    assert "sent 200 packets in the last 60s and received none" in v.message


def test_active_as_soon_as_rx_rises() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=60)
    assert feed(tracker, (0, 0, 0), (5, 10, 3)) is Liveness.ACTIVE


def test_silent_clears_when_rx_rises_again_and_comes_back() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    assert feed(tracker, (0, 0, 0), (5, 10, 0), (10, 20, 0)) is Liveness.SILENT
    assert feed(tracker, (15, 30, 1)) is Liveness.ACTIVE
    # one reply, then silence again for a whole window while sending
    assert feed(tracker, (20, 40, 1)) is Liveness.ACTIVE
    assert feed(tracker, (25, 50, 1)) is Liveness.SILENT


def test_rx_that_rose_inside_the_window_is_not_silence() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=60)
    feed(tracker, (0, 0, 0), (10, 10, 1))
    # rx flat since t=10, but the window [now-60, now] still contains that rise
    assert feed(tracker, (40, 100, 1), (60, 200, 1)) is Liveness.ACTIVE
    # at t=75 the reference (newest sample at least 60 s old) is t=10: rx flat since, tx rose
    assert feed(tracker, (75, 300, 1)) is Liveness.SILENT


def test_idle_session_keeps_its_verdict() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    assert feed(tracker, (0, 0, 0), (5, 1, 1)) is Liveness.ACTIVE
    assert feed(tracker, (20, 1, 1), (40, 1, 1)) is Liveness.ACTIVE  # nothing sent: no blame
    unknown: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    assert feed(unknown, (0, 0, 0), (20, 0, 0), (40, 0, 0)) is Liveness.UNKNOWN


def test_counter_reset_starts_over() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    assert feed(tracker, (0, 0, 0), (5, 10, 0), (10, 20, 0)) is Liveness.SILENT
    assert feed(tracker, (15, 3, 0)) is Liveness.UNKNOWN
    v = tracker.verdict(K)
    assert v is not None and "re-created" in v.message


def test_repeated_or_old_samples_change_nothing() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    assert feed(tracker, (0, 0, 0), (10, 10, 0)) is Liveness.SILENT
    assert feed(tracker, (10, 10, 5), (3, 10, 9)) is Liveness.SILENT


def test_history_is_bounded_by_the_window() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    for t in range(1000):
        tracker.observe(K, Sample(t, t, 0))
    assert len(tracker._histories[K].samples) <= 12


def test_retain_forgets_unmanaged_sessions() -> None:
    tracker: LivenessTracker[tuple[int, int]] = LivenessTracker(window=10)
    tracker.observe((1, 1), Sample(0, 0, 0))
    tracker.observe((2, 2), Sample(0, 0, 0))
    tracker.retain({(2, 2)})
    assert set(tracker.verdicts()) == {(2, 2)}


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LivenessTracker(window=0)
