"""Peer liveness of unmanaged sessions, from the kernel's counters alone.

Static L2TPv3 has no control channel and no hello: the only evidence that the far end is alive is
that packets arrive. Per session the agent feeds samples (time, tx_packets, rx_packets); the
verdict is

- ``PeerSilent`` when tx rose while rx stayed flat over the whole window (we send, nothing comes
  back: the peer is down, or drops our frames, e.g. on a cookie or session id mismatch);
- ``PeerActive`` as soon as rx rises (it clears PeerSilent at once);
- ``Unknown`` until the history covers a window or rx has risen once.

An idle session (neither tx nor rx moved over the window) keeps its verdict: with nothing sent,
silence says nothing about the peer. Counters going backwards mean the session was re-created:
its history starts again. Time is whatever clock the caller uses (the agent: monotonic seconds).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

DEFAULT_WINDOW_SECONDS = 60.0
NO_SAMPLES = "not enough samples yet"  # also what a session never sampled is told

K = TypeVar("K")


class Liveness(Enum):
    UNKNOWN = "Unknown"
    ACTIVE = "PeerActive"
    SILENT = "PeerSilent"


@dataclass(frozen=True)
class Sample:
    time: float
    tx_packets: int
    rx_packets: int


@dataclass(frozen=True)
class PeerVerdict:
    """What the Kubernetes layer turns into a condition: state, when it began, and why."""

    state: Liveness
    since: float  # the sample time at which this state began
    message: str


@dataclass
class _History:
    samples: deque[Sample] = field(default_factory=deque)
    verdict: PeerVerdict = field(
        default_factory=lambda: PeerVerdict(Liveness.UNKNOWN, 0.0, NO_SAMPLES)
    )


class LivenessTracker(Generic[K]):
    """Verdicts for many sessions, keyed by anything hashable (the agent: its session ids)."""

    def __init__(self, window: float = DEFAULT_WINDOW_SECONDS) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, not {window}")
        self.window = window
        self._histories: dict[K, _History] = {}

    def observe(self, key: K, sample: Sample) -> PeerVerdict:
        h = self._histories.setdefault(key, _History())
        if h.samples:
            last = h.samples[-1]
            if sample.time <= last.time:
                return h.verdict  # a repeated or out-of-order sample adds nothing
            if sample.tx_packets < last.tx_packets or sample.rx_packets < last.rx_packets:
                h.samples.clear()  # counters went back: a new session under the same ids
                h.verdict = PeerVerdict(
                    Liveness.UNKNOWN, sample.time, "counters reset (session re-created)"
                )
        h.samples.append(sample)
        # Keep the newest sample at least a window old (the reference) and everything after it.
        horizon = sample.time - self.window
        while len(h.samples) > 1 and h.samples[1].time <= horizon:
            h.samples.popleft()
        state, message = _judge(h.samples, horizon, self.window)
        if state is None or state is h.verdict.state:
            return h.verdict
        h.verdict = PeerVerdict(state, sample.time, message)
        return h.verdict

    def verdict(self, key: K) -> PeerVerdict | None:
        h = self._histories.get(key)
        return h.verdict if h else None

    def verdicts(self) -> dict[K, PeerVerdict]:
        # list() copies in one step, so a scraping thread can read while the agent's loop writes.
        return {k: h.verdict for k, h in list(self._histories.items())}

    def retain(self, keys: set[K]) -> None:
        """Forget sessions that are no longer managed."""
        for key in [k for k in self._histories if k not in keys]:
            del self._histories[key]


def _judge(samples: deque[Sample], horizon: float, window: float) -> tuple[Liveness | None, str]:
    """The new state, or None to keep the current one."""
    newest = samples[-1]
    if len(samples) >= 2 and newest.rx_packets > samples[-2].rx_packets:
        return Liveness.ACTIVE, f"receiving: rx_packets rose to {newest.rx_packets}"
    reference = samples[0]
    if reference.time > horizon:
        return None, ""  # the history does not cover a window yet
    sent = newest.tx_packets - reference.tx_packets
    if newest.rx_packets == reference.rx_packets and sent > 0:
        return Liveness.SILENT, (
            f"sent {sent} packets in the last {window:g}s and received none"
            f" (rx_packets stayed at {newest.rx_packets})"
        )
    return None, ""
