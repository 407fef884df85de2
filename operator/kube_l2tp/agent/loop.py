"""The agent's loop, shared by both modes: desired objects from a Source in, a converged kernel out.

It reconciles when the source changes (a directory of manifests, the API server's objects),
when the kernel reports an L2TP or link change (event sources given to it: agent.events opens
the real ones), and every --resync seconds as a backstop. Events are hints only: every
reconcile re-reads the whole state. Between reconciles it samples its sessions'
counters every SAMPLE_SECONDS for peer liveness (core.liveness), reusing the session dump of a
reconcile when there was one. SIGTERM and SIGINT stop it between reconciles
without touching the kernel: pseudowires outlive the agent.
"""

from __future__ import annotations

import contextlib
import logging
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kube_l2tp.agent.encryption import XfrmStep
from kube_l2tp.agent.source import Source
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api.problems import Severity
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Desired, desired_state
from kube_l2tp.core.lastgood import Snapshot
from kube_l2tp.core.liveness import (
    DEFAULT_WINDOW_SECONDS,
    Liveness,
    LivenessTracker,
    PeerVerdict,
    Sample,
)
from kube_l2tp.core.plan import session_subject
from kube_l2tp.core.ports import KernelPort
from kube_l2tp.core.reconcile import ObjectResult, Result, reconcile
from kube_l2tp.core.state import (
    Address,
    KernelError,
    ObservedLink,
    ObservedSession,
    ObservedTunnel,
    SessionConfig,
    TunnelConfig,
)
from kube_l2tp.core.triggers import Trigger

log = logging.getLogger("kube_l2tp.agent")

POLL_SECONDS = 1.0  # how often the manifest directory is checked for changes
DEBOUNCE_SECONDS = 0.05  # collect a burst of kernel events or API changes into one reconcile
RETRY_SECONDS = 1.0  # when objects are still Progressing
SAMPLE_SECONDS = 5.0  # peer liveness: how often session counters are sampled at most


@dataclass
class AgentConfig:
    node: str
    manifests: Path
    state_dir: Path
    resync_seconds: float = 30.0
    peer_silence_window: float = DEFAULT_WINDOW_SECONDS


SessionKey = tuple[int, int]


class EventSource(Protocol):
    """A non-blocking socket whose readiness means "the kernel changed" (a hint: the loop
    re-reads everything). netlink.links.LinkEvents and netlink.l2tp.L2tpEvents are the real ones."""

    def fileno(self) -> int: ...

    def drain(self) -> int | Sequence[object]:
        """Everything queued now, without blocking: a count, or the events themselves."""
        ...

    def close(self) -> None: ...


# Opens the loop's event sources when run() starts (they are closed when it returns).
EventSources = Callable[[], Sequence[EventSource]]


def no_events() -> list[EventSource]:
    """No kernel events: the loop reconciles on source changes and resyncs only."""
    return []


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        kernel: KernelPort,
        store: StateStore,
        source: Source,
        events: EventSources,
        xfrm: XfrmStep | None = None,
    ) -> None:
        self.config = config
        self.xfrm = xfrm  # ESP for encrypted tunnels (agent.encryption); None: never touched
        self.kernel = kernel
        self.store = store
        # A directory of manifests (agent.standalone), or this node's API objects (agent.cluster).
        self.source = source
        self.events = events
        self.owned = store.load()
        self.stop = threading.Event()
        self.last: Result | None = None
        self.snapshot: Snapshot | None = None
        self.desired: Desired | None = None  # of the last reconcile: what the agent manages
        self.trigger = Trigger.START  # why the last reconcile ran
        self.on_result: list[Callable[[Snapshot, Result, float], None]] = []
        self.liveness: LivenessTracker[SessionKey] = LivenessTracker(config.peer_silence_window)
        # Called with peer_verdicts() whenever a session's verdict changes (for conditions).
        self.on_liveness: list[Callable[[dict[str, PeerVerdict]], None]] = []
        self._sampled: tuple[float, list[ObservedSession]] | None = None
        self._last_sample = float("-inf")
        self._waker: _Waker | None = None  # while run() runs
        self._incomplete = False  # the last reconcile could not read the kernel completely
        # When the loop last completed a pass (time.monotonic()): /healthz says the agent is stuck
        # when this grows old. Starts at construction, so a slow first reconcile has its bound.
        self.heartbeat = time.monotonic()

    def wake(self) -> None:
        """The source changed: end the loop's wait now, not at the next poll (from any thread).

        An API source calls this on every watch event; without it each change, and each batch of
        objects streaming in, waited up to POLL_SECONDS before its reconcile began.
        """
        waker = self._waker
        if waker is not None:
            waker.wake()

    def peer_verdicts(self) -> dict[str, PeerVerdict]:
        """Peer liveness per managed session, keyed by subject ("L2TPSession/name")."""
        desired = self.desired
        if desired is None:
            return {}
        verdicts = self.liveness.verdicts()
        return {
            session_subject(s.name): verdicts[key]
            for key, s in desired.sessions.items()
            if key in verdicts
        }

    def sample_liveness(self, now: float | None = None) -> None:
        """Feed the managed sessions' counters to the liveness tracker.

        Reuses the session dump of the reconcile that just ran, else makes one dump.
        """
        desired = self.desired
        if desired is None:
            return
        now = time.monotonic() if now is None else now
        if self._sampled is not None:
            at, sessions = self._sampled
            self._sampled = None
        else:
            try:
                at, sessions = now, self.kernel.dump_sessions()
            except KernelError as exc:
                log.debug("liveness sample skipped: %s", exc)
                return
        self._last_sample = at
        before = self.liveness.verdicts()
        for s in sessions:
            key = (s.config.tunnel_id, s.config.session_id)
            if key in desired.sessions:
                self.liveness.observe(key, Sample(at, s.stats.tx_packets, s.stats.rx_packets))
        self.liveness.retain(set(desired.sessions))
        after = self.liveness.verdicts()
        changed = {k for k, v in after.items() if before.get(k, v).state is not v.state}
        for key in changed:
            v = after[key]
            name = desired.sessions[key].name
            level = logging.WARNING if v.state is Liveness.SILENT else logging.INFO
            log.log(level, "%s: %s: %s", session_subject(name), v.state.value, v.message)
        if changed:
            verdicts = self.peer_verdicts()
            for callback in self.on_liveness:
                callback(verdicts)

    def sample_due(self, now: float) -> bool:
        return now - self._last_sample >= SAMPLE_SECONDS

    def _record_sessions(self, sessions: list[ObservedSession]) -> None:
        self._sampled = (time.monotonic(), sessions)

    def reconcile_once(self, why: Trigger = Trigger.START) -> Result:
        if not self.source.ready():
            log.info("waiting for the first complete list of objects before reconciling")
            return self.last or Result()
        reading = self.source.read()  # 1. read: no writes
        snapshot = reading.admit()  # 2. admit: what may be programmed (API: finalizers first)
        if self.snapshot is None or snapshot.problems != self.snapshot.problems:
            for problem in snapshot.problems:  # said once, not at every resync
                level = logging.ERROR if problem.severity is Severity.ERROR else logging.WARNING
                log.log(level, "%s", problem.render())
        started = time.monotonic()
        resources, withheld = snapshot.resources, dict[str, ObjectResult]()
        if self.xfrm is not None:  # SAs and policies before the tunnels: nothing leaves in clear
            resources, withheld = self.xfrm.before(resources, self.config.node)
        desired = desired_state(resources, self.config.node)
        recording = RecordingKernel(self.kernel, self._record_sessions)
        result = reconcile(recording, desired, self.owned, save=self.store.save)  # 3. reconcile
        if result.incomplete:
            # The kernel's state could not be read completely (dumps interrupted again and
            # again): no verdict changes, the last stand, and the loop tries again soon.
            log.warning("kernel state not read completely, trying again: %s", result.incomplete)
            self._incomplete = True
            return self.last or result
        self._incomplete = False
        # the L2TP reconcile is complete: the XFRM objects of removed tunnels may go now
        if self.xfrm is not None:
            self.xfrm.after()
            result.results.update(withheld)
        result = _mark_invalid(result, snapshot)
        seconds = time.monotonic() - started
        quiet = result.writes == 0 and result.converged  # a resync that found nothing to do
        log.log(
            logging.DEBUG if quiet else logging.INFO,
            "reconciled in %.3fs: %d writes, %d/%d ready",
            seconds,
            result.writes,
            sum(r.ready for r in result.results.values()),
            len(result.results),
        )
        for r in result.results.values():
            if not r.ready:
                log.warning("%s: %s: %s", r.subject, r.reason, r.message)
        self.last, self.snapshot, self.desired, self.trigger = result, snapshot, desired, why
        reading.report(result)  # 4. report (API: status built from this read and result, written)
        for callback in self.on_result:
            callback(snapshot, result, seconds)
        return result

    def _contained(self, why: Trigger) -> None:
        """reconcile_once, whatever it raises: one object's input, a bug or a kernel answer
        nobody expected must not end the loop and leave every pseudowire of the node without
        its agent (a crash loop in a cluster). Per-object failures are contained in reconcile
        already; what gets here is logged with its traceback and retried at the next resync."""
        try:
            self.reconcile_once(why)
        except KernelError as exc:
            log.error("reconcile failed: %s", exc)
        except Exception:
            log.exception("reconcile failed unexpectedly (a bug: please report it); retrying")

    def _next_resync(self) -> float:
        """Soon when the kernel is still finishing something (a delete), else the backstop."""
        progressing = self._incomplete or (
            self.last is not None
            and any(r.reason is Reason.PROGRESSING for r in self.last.results.values())
        )
        due = time.monotonic() + (RETRY_SECONDS if progressing else self.config.resync_seconds)
        rotation = self.xfrm.next_step_at if self.xfrm is not None else None
        if rotation is not None:  # a key rotation's next step (wall clock, as the kernel's)
            due = min(due, time.monotonic() + max(0.0, rotation - time.time()))
        return due

    def run(self) -> None:
        """Reconcile until stopped; returns without touching the kernel."""
        events = list(self.events())
        selector = selectors.DefaultSelector()
        for source in events:
            selector.register(source.fileno(), selectors.EVENT_READ, source)
        waker = self._waker = _Waker()
        selector.register(waker.fileno(), selectors.EVENT_READ, waker)
        signature = self.source.signature()
        self._contained(Trigger.START)
        self.sample_liveness()
        _drain(events)  # our own writes
        next_resync = self._next_resync()
        while not self.stop.is_set():
            self.heartbeat = time.monotonic()
            timeout = min(POLL_SECONDS, max(0.0, next_resync - time.monotonic()))
            if self.sample_due(time.monotonic()):
                self.sample_liveness()
            ready = selector.select(timeout)
            if self.stop.is_set():
                break
            why: Trigger | None = None
            if ready:
                time.sleep(DEBOUNCE_SECONDS)
                waker.drain()  # the signature below says whether the source really changed
                if _drain(events):
                    why = Trigger.KERNEL_EVENT
            current = self.source.signature()
            if current != signature:
                signature, why = current, self.source.change_trigger
            if time.monotonic() >= next_resync:
                why = why or Trigger.PERIODIC_RESYNC
            if why is None:
                continue
            log.debug("reconcile: %s", why)
            self._contained(why)
            if self.sample_due(time.monotonic()):
                self.sample_liveness()  # with the dump the reconcile just made
            _drain(events)
            next_resync = self._next_resync()
        for source in events:
            selector.unregister(source.fileno())
            source.close()
        self._waker = None
        selector.unregister(waker.fileno())
        waker.close()


class _Waker:
    """A socket pair whose reading end is in the loop's selector: another thread writes a byte
    to end the wait (a self-pipe)."""

    def __init__(self) -> None:
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def wake(self) -> None:
        # full: a wake-up is pending anyway; closed: the loop has ended
        with contextlib.suppress(OSError):
            self._writer.send(b"\0")

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._reader.recv(4096):
                pass

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class RecordingKernel:
    """The kernel port, remembering the last session dump (so liveness needs no dump of its own)."""

    def __init__(self, kernel: KernelPort, record: Callable[[list[ObservedSession]], None]) -> None:
        self._kernel = kernel
        self._record = record

    def dump_sessions(self) -> list[ObservedSession]:
        sessions = self._kernel.dump_sessions()
        self._record(sessions)
        return sessions

    def dump_tunnels(self) -> list[ObservedTunnel]:
        return self._kernel.dump_tunnels()

    def dump_links(self) -> list[ObservedLink]:
        return self._kernel.dump_links()

    def get_tunnel(self, tunnel_id: int) -> ObservedTunnel | None:
        return self._kernel.get_tunnel(tunnel_id)

    def get_session(self, tunnel_id: int, session_id: int) -> ObservedSession | None:
        return self._kernel.get_session(tunnel_id, session_id)

    def create_tunnel(self, cfg: TunnelConfig) -> None:
        self._kernel.create_tunnel(cfg)

    def delete_tunnel(self, tunnel_id: int) -> None:
        self._kernel.delete_tunnel(tunnel_id)

    def create_session(self, cfg: SessionConfig) -> None:
        self._kernel.create_session(cfg)

    def delete_session(self, tunnel_id: int, session_id: int) -> None:
        self._kernel.delete_session(tunnel_id, session_id)

    def modify_session(
        self, tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
    ) -> None:
        self._kernel.modify_session(tunnel_id, session_id, send_seq=send_seq, recv_seq=recv_seq)

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        self._kernel.set_link(ifname, up=up, mtu=mtu)

    def set_addr_gen_mode(self, ifname: str, mode: str) -> None:
        self._kernel.set_addr_gen_mode(ifname, mode)

    def set_qdisc(self, ifname: str, kind: str) -> None:
        self._kernel.set_qdisc(ifname, kind)

    def set_master(self, ifname: str, master: str | None) -> None:
        self._kernel.set_master(ifname, master)

    def add_address(self, ifname: str, addr: Address) -> None:
        self._kernel.add_address(ifname, addr)

    def del_address(self, ifname: str, addr: Address) -> None:
        self._kernel.del_address(ifname, addr)

    def create_bridge(self, name: str) -> None:
        self._kernel.create_bridge(name)

    def create_vlan(self, name: str, parent: str, vlan_id: int) -> None:
        self._kernel.create_vlan(name, parent, vlan_id)

    def delete_link(self, name: str) -> None:
        self._kernel.delete_link(name)


def _drain(sources: Sequence[EventSource]) -> int:
    count = 0
    for source in sources:
        drained = source.drain()
        count += drained if isinstance(drained, int) else len(drained)
    return count


def _mark_invalid(result: Result, snapshot: Snapshot) -> Result:
    """Objects running on a last valid version say so; the rest is what the kernel says."""
    for subject in snapshot.stale:
        r = result.results.get(subject)
        if r is not None:
            result.results[subject] = ObjectResult(
                subject,
                False,
                Reason.INVALID_SPEC,
                "the manifest is invalid; the last valid version stays programmed"
                f" (kernel: {r.reason})",
                r.interface,
                r.ifindex,
                r.mtu,
                r.ignored,
                r.addr_gen_mode,
                r.qdisc,
            )
    return result


def install_signal_handlers(agent: Agent) -> None:
    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping; kernel state is left as it is", signum)
        agent.stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
