"""The in-cluster agent: agent.loop's Agent, fed by the API server instead of a directory.

- Only this node's objects arrive (server-side field selector on spec.nodeName, see k8s.watch).
- An object gets this node's finalizer before it is programmed, and loses it only once the
  kernel no longer has it, so deleting a resource removes its kernel objects first.
- Status (observedGeneration, a Ready condition with a reason, the interface's name, index and
  MTU) and Events are written after each reconcile, only when something changed. Sessions also
  get a PeerActive condition (peer liveness, core.liveness), rewritten when a verdict changes;
  Ready stays what it is (programmed), a silent peer is not a misconfiguration of this node.
- Each pass has visible phases: read (ClusterSource.read: the caches as a typed view, no
  writes); admit (this node's finalizer on every live object, then validation); reconcile
  (agent.loop); status, built purely from the view and the result (k8s.status), then written
  with the Events and the release of finalizers (StatusWriter).
- The API going away changes nothing in the kernel: the last known objects stay desired, and
  when the API is back the watch resumes and whatever changed meanwhile converges.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kube_l2tp.agent.loop import Agent, AgentConfig, EventSources
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api import crd, manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Owned
from kube_l2tp.core.lastgood import LastGood, Snapshot
from kube_l2tp.core.liveness import Liveness, PeerVerdict
from kube_l2tp.core.ports import KernelPort
from kube_l2tp.core.reconcile import Result
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s import status as statuses
from kube_l2tp.k8s.connect import clients
from kube_l2tp.k8s.status import ObjectStatus, Peer, Release, Selection
from kube_l2tp.k8s.view import ApiObject, ClusterView
from kube_l2tp.k8s.watch import NodeCache, OnChange, node_caches
from kube_l2tp.k8s.writer import Writer

log = logging.getLogger("kube_l2tp.agent")

FAILURE_REASONS_WITH_EVENTS = {
    Reason.KERNEL_ERROR,
    Reason.KERNEL_UNSUPPORTED,
    Reason.CONFLICT,
    Reason.INVALID_SPEC,
}


class ClusterSource:
    """Desired objects from this node's API caches (a Source of agent.loop)."""

    change_trigger = Trigger.API_EVENT

    def __init__(
        self, writer: Writer, watch: Callable[[OnChange], tuple[NodeCache, NodeCache]]
    ) -> None:
        """``watch``: this node's caches (k8s.watch.node_caches), calling back on changes."""
        self.writer = writer
        self.status: StatusWriter | None = None  # the report phase, once started
        self._wake: list[Callable[[], None]] = []
        self._changes = itertools.count()
        self._version = 0
        self._lock = threading.Lock()
        self._modified: list[ApiObject] = []  # not judged yet
        self._last_good = LastGood()
        # subject -> (what was validated, its verdict): the API objects' schema and CEL checks
        # are repeated only for what changed, not for every object at every reconcile
        self._checked: dict[str, tuple[Mapping[str, Any], validation.Checked]] = {}
        # (subject, resourceVersion) -> typed copy, of the last read: unchanged objects are
        # not converted again
        self._typed: dict[tuple[str, str], ApiObject] = {}
        self.tunnels, self.sessions = watch(self.changed)  # started by start()

    def start(self, wake: Callable[[], None], status: StatusWriter) -> None:
        """Start the watches: ``wake`` is called on every change (the loop's Agent.wake), and
        ``status`` reports each pass."""
        self._wake.append(wake)
        self.status = status
        self.tunnels.start()
        self.sessions.start()

    def stop(self) -> None:
        self.tunnels.stop()
        self.sessions.stop()

    def changed(self, kind: str, event: str = "LIST", obj: dict[str, Any] | None = None) -> None:
        """Called by the watch threads, after caching the object.

        A modification is judged later, in signature(): most are the watch bringing back the
        agent's own writes (a finalizer, a status), and one that a reconcile already saw must
        not start another (a full pass over the kernel) once that reconcile's writes are known.
        """
        if event == "MODIFIED" and obj is not None:
            with self._lock:
                self._modified.append(ApiObject.of(kind, obj))
        else:
            self._version = next(self._changes)
        for wake in self._wake:
            wake()  # reconcile now (if it is a change), not at the loop's next poll

    def signature(self) -> int:
        """Changes when an object was added, deleted, or modified by anyone but this agent."""
        with self._lock:
            modified, self._modified = self._modified, []
        if any(not self.writer.seen(obj) for obj in modified):
            self._version = next(self._changes)
        return self._version

    def ready(self) -> bool:
        return self.tunnels.synced.is_set() and self.sessions.synced.is_set()

    def api_connected(self) -> bool:
        return self.tunnels.connected and self.sessions.connected

    def read(self) -> ClusterPass:
        """Phase 1, read: the caches' objects as a typed view. No writes."""
        typed: dict[tuple[str, str], ApiObject] = {}
        objects: dict[str, ApiObject] = {}
        for kind, cache in ((crd.TUNNEL_KIND, self.tunnels), (crd.SESSION_KIND, self.sessions)):
            for raw in cache.snapshot():
                meta = raw["metadata"]
                key = (f"{kind}/{meta['name']}", str(meta.get("resourceVersion", "")))
                obj = self._typed.get(key) or ApiObject.of(kind, raw)
                typed[key] = objects[obj.subject] = obj
        self._typed = typed
        return ClusterPass(self, ClusterView(objects))

    def admit(self, view: ClusterView) -> tuple[Snapshot, Selection]:
        """Phase 2, admit: this node's finalizer on each live object, then validation of the
        objects that have it (only those may be programmed: deleting them must clean up)."""
        checked: dict[str, tuple[Mapping[str, Any], validation.Checked]] = {}
        # First come, first served: of two objects that collide (a tunnel id, a port, an
        # interface name), the one created later is refused, never the one already running.
        for obj in sorted(view.objects.values(), key=lambda o: (o.created, o.subject)):
            if obj.deleting:
                continue  # not desired: the reconcile removes it, then the finalizer goes
            if not self.writer.add_finalizer(obj):
                continue  # programmed only once deletion is guaranteed to clean up
            known = self._checked.get(obj.subject)
            if known is None or known[0] != obj.manifest:
                doc = manifests.Document(f"api:{obj.subject}", dict(obj.manifest))
                known = (obj.manifest, validation.check_document(doc))
            checked[obj.subject] = known
        self._checked = checked
        snapshot = self._last_good.select_checked(c for _, c in checked.values())
        invalid: dict[str, Problem] = {}
        for p in snapshot.problems:
            if p.severity is Severity.ERROR:
                invalid.setdefault(f"{p.kind}/{p.name}", p)
        return snapshot, Selection(snapshot.resources, invalid, frozenset(snapshot.stale))


class ClusterPass:
    """One pass of the loop over one read of the API caches (agent.source.Reading)."""

    def __init__(self, source: ClusterSource, view: ClusterView) -> None:
        self.source = source
        self.view = view
        self.selection = Selection(Resources())  # until admit()

    def admit(self) -> Snapshot:
        snapshot, self.selection = self.source.admit(self.view)
        return snapshot

    def report(self, result: Result) -> None:
        """Phases 4 and 5: status built from this pass' view and result, then written."""
        if self.source.status is not None:
            self.source.status.write(self.view, self.selection, result)


class StatusWriter:
    """After each reconcile: status, Events, and finalizers of objects the kernel no longer has."""

    def __init__(
        self,
        writer: Writer,
        owned: Owned,
        verdicts: Callable[[], dict[str, PeerVerdict]] = dict,
    ) -> None:
        self.writer = writer
        self.owned = owned  # Agent.owned: what the kernel has of the agent's (reconcile updates it)
        self.verdicts = verdicts  # Agent.peer_verdicts
        self._reasons: dict[str, Reason] = {}
        # the inputs of the last pass: a liveness change rewrites the sessions' status with them
        self._last: tuple[ClusterView, Selection, Result] | None = None
        # subject -> (liveness state, wall-clock time it began): the condition's
        # lastTransitionTime even when the API was down at the moment of the change
        self._peer_since: dict[str, tuple[Liveness, str]] = {}

    def write(self, view: ClusterView, selection: Selection, result: Result) -> None:
        self._last = (view, selection, result)
        self._write_all(view, selection, result)

    def liveness_changed(self, verdicts: dict[str, PeerVerdict]) -> None:
        """Agent.on_liveness: rewrite the sessions' status (only those that differ are sent)."""
        now = conditions.now()
        self._peer_since = {s: v for s, v in self._peer_since.items() if s in verdicts}
        for subject, verdict in verdicts.items():
            known = self._peer_since.get(subject)
            if known is None or known[0] is not verdict.state:
                self._peer_since[subject] = (verdict.state, now)
        if self._last is not None:
            self._write_all(*self._last)

    def _write_all(self, view: ClusterView, selection: Selection, result: Result) -> None:
        verdicts = self.verdicts()  # once per pass: it is built for all sessions
        peers = {
            subject: Peer(
                verdicts.get(subject),
                self._peer_since.get(subject),
                conditions.find(
                    self.writer.current_status(obj).get("conditions"), conditions.PEER_ACTIVE
                ),
            )
            for subject, obj in view.objects.items()
            if obj.kind == crd.SESSION_KIND and not obj.deleting
        }
        built = statuses.build(
            view, selection, result, self.owned, self.writer.node, peers, conditions.now()
        )
        for item in built:
            if isinstance(item, Release):
                self.writer.remove_finalizer(item.obj)
            else:
                self._write(item)

    def _write(self, item: ObjectStatus) -> None:
        obj, r = item.obj, item.result
        self.writer.status(obj, item.status)
        before = self._reasons.get(obj.subject)
        self._reasons[obj.subject] = r.reason
        if r.reason != before and r.reason in FAILURE_REASONS_WITH_EVENTS:
            self.writer.event(obj, r.reason, r.message, warning=True)
        elif r.ready and before not in (None, Reason.PROGRAMMED):
            self.writer.event(obj, Reason.PROGRAMMED, r.message, warning=False)


def cluster_agent(
    config: AgentConfig, kernel: KernelPort, store: StateStore, events: EventSources
) -> Agent:
    """An Agent whose desired state is this node's objects in the API server."""
    api, core = clients()
    writer = Writer(api, core, config.node)
    source = ClusterSource(writer, functools.partial(node_caches, api, config.node))
    agent = Agent(config, kernel, store, source, events)
    status = StatusWriter(writer, agent.owned, agent.peer_verdicts)
    agent.on_liveness.append(status.liveness_changed)
    source.start(agent.wake, status)
    return agent
