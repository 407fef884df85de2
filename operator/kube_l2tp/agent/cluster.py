"""The in-cluster agent: the standalone agent's loop, fed by the API server instead of a directory.

- Only this node's objects arrive (server-side field selector on spec.nodeName, see k8s.watch).
- An object gets this node's finalizer before it is programmed, and loses it only once the
  kernel no longer has it, so deleting a resource removes its kernel objects first.
- Status (observedGeneration, a Ready condition with a reason, the interface's name, index and
  MTU) and Events are written after each reconcile, only when something changed. Sessions also
  get a PeerActive condition (peer liveness, core.liveness), rewritten when a verdict changes;
  Ready stays what it is (programmed), a silent peer is not a misconfiguration of this node.
- The API going away changes nothing in the kernel: the last known objects stay desired, and
  when the API is back the watch resumes and whatever changed meanwhile converges.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from kube_l2tp.agent.source import LastGood, Snapshot
from kube_l2tp.agent.standalone import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.api import crd, manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core.desired import Owned
from kube_l2tp.core.liveness import Liveness, PeerVerdict
from kube_l2tp.core.reconcile import ObjectResult, Result
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.connect import clients
from kube_l2tp.k8s.watch import NodeCache
from kube_l2tp.k8s.writer import Writer
from kube_l2tp.netlink.kernel import Kernel

log = logging.getLogger("kube_l2tp.agent")

FAILURE_REASONS_WITH_EVENTS = {
    Reason.KERNEL_ERROR,
    Reason.KERNEL_UNSUPPORTED,
    Reason.CONFLICT,
    Reason.INVALID_SPEC,
}


class ClusterSource:
    """Desired objects from the API caches, with finalizers put on before programming."""

    change_trigger = Trigger.API_EVENT

    def __init__(self, tunnels: NodeCache, sessions: NodeCache, writer: Writer) -> None:
        self.tunnels = tunnels
        self.sessions = sessions
        self.writer = writer
        self._changes = itertools.count()
        self._version = 0
        self._lock = threading.Lock()
        self._modified: list[tuple[str, dict[str, Any]]] = []  # (kind, object) not judged yet
        self.raw: dict[str, dict[str, Any]] = {}  # subject -> API object, of the last load
        self.deleting: set[str] = set()  # subjects with a deletionTimestamp
        self.invalid: dict[str, Problem] = {}
        self.stale: set[str] = set()  # invalid now, running on their last valid version
        self.resources = Resources()  # what the live objects declare, as last loaded
        self._last_good = LastGood()
        # subject -> (what was validated, its verdict): the API objects' schema and CEL checks
        # are repeated only for what changed, not for every object at every reconcile
        self._checked: dict[str, tuple[dict[str, Any], validation.Checked]] = {}

    def changed(self, kind: str, event: str = "LIST", obj: dict[str, Any] | None = None) -> None:
        """Called by the watch threads, after caching the object.

        A modification is judged later, in signature(): most are the watch bringing back the
        agent's own writes (a finalizer, a status), and one that a reconcile already saw must
        not start another (a full pass over the kernel) once that reconcile's writes are known.
        """
        if event == "MODIFIED" and obj is not None:
            with self._lock:
                self._modified.append((kind, obj))
            return
        self._version = next(self._changes)

    def signature(self) -> int:
        """Changes when an object was added, deleted, or modified by anyone but this agent."""
        with self._lock:
            modified, self._modified = self._modified, []
        if any(not self.writer.seen(kind, obj) for kind, obj in modified):
            self._version = next(self._changes)
        return self._version

    def ready(self) -> bool:
        return self.tunnels.synced.is_set() and self.sessions.synced.is_set()

    def api_connected(self) -> bool:
        return self.tunnels.connected and self.sessions.connected

    def load(self) -> Snapshot:
        raw: dict[str, dict[str, Any]] = {}
        for kind, cache in ((crd.TUNNEL_KIND, self.tunnels), (crd.SESSION_KIND, self.sessions)):
            for obj in cache.snapshot():
                raw[f"{kind}/{obj['metadata']['name']}"] = obj
        self.raw = raw
        self.deleting = {s for s, o in raw.items() if o["metadata"].get("deletionTimestamp")}
        checked: dict[str, tuple[dict[str, Any], validation.Checked]] = {}
        # First come, first served: of two objects that collide (a tunnel id, a port, an
        # interface name), the one created later is refused, never the one already running.
        for subject, obj in sorted(raw.items(), key=_created):
            kind = subject.split("/", 1)[0]
            if subject in self.deleting:
                continue  # not desired: the reconcile removes it, then the finalizer goes
            if not self.writer.add_finalizer(kind, obj):
                continue  # programmed only once deletion is guaranteed to clean up
            body = _plain(obj)
            known = self._checked.get(subject)
            if known is None or known[0] != body:
                doc = manifests.Document(f"api:{subject}", body)
                known = (body, validation.check_document(doc))
            checked[subject] = known
        self._checked = checked
        snapshot = self._last_good.select_checked(c for _, c in checked.values())
        self.invalid = {}
        for p in snapshot.problems:
            if p.severity is Severity.ERROR:
                self.invalid.setdefault(f"{p.kind}/{p.name}", p)
        self.stale = snapshot.stale
        self.resources = snapshot.resources
        return snapshot


def _created(item: tuple[str, dict[str, Any]]) -> tuple[str, str]:
    subject, obj = item
    return obj["metadata"].get("creationTimestamp") or "", subject


def _plain(obj: dict[str, Any]) -> dict[str, Any]:
    """What the validator checks: the object without server-set fields and status."""
    meta = obj["metadata"]
    return {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "metadata": {"name": meta["name"], "generation": meta.get("generation", 0)},
        "spec": obj.get("spec"),
    }


class StatusWriter:
    """After each reconcile: status, Events, and finalizers of objects the kernel no longer has."""

    def __init__(
        self,
        source: ClusterSource,
        writer: Writer,
        owned: Owned,
        verdicts: Callable[[], dict[str, PeerVerdict]] = dict,
    ) -> None:
        self.source = source
        self.writer = writer
        self.owned = owned
        self.verdicts = verdicts  # Agent.peer_verdicts
        self._reasons: dict[str, Reason] = {}
        self._result: Result | None = None
        self._verdicts: dict[str, PeerVerdict] = {}
        # subject -> (liveness state, wall-clock time it began): the condition's
        # lastTransitionTime even when the API was down at the moment of the change
        self._peer_since: dict[str, tuple[Liveness, str]] = {}

    def __call__(self, snapshot: Snapshot, result: Result, seconds: float) -> None:
        del snapshot, seconds
        self._result = result
        self._write_all(result)

    def liveness_changed(self, verdicts: dict[str, PeerVerdict]) -> None:
        """Agent.on_liveness: rewrite the sessions' status (only those that differ are sent)."""
        now = conditions.now()
        self._peer_since = {s: v for s, v in self._peer_since.items() if s in verdicts}
        for subject, verdict in verdicts.items():
            known = self._peer_since.get(subject)
            if known is None or known[0] is not verdict.state:
                self._peer_since[subject] = (verdict.state, now)
        if self._result is not None:
            self._write_all(self._result)

    def _write_all(self, result: Result) -> None:
        self._verdicts = self.verdicts()  # once per pass: it is built for all sessions
        deleting = self.source.deleting
        declared = _declared(self.source.resources) if deleting else (set(), set())
        for subject, obj in self.source.raw.items():
            kind = subject.split("/", 1)[0]
            if subject in deleting:
                if self._kernel_clean(kind, obj, declared):
                    self.writer.remove_finalizer(kind, obj)
                continue
            r = self._result_for(subject, obj, result)
            self._write(kind, obj, r)

    def _result_for(self, subject: str, obj: dict[str, Any], result: Result) -> ObjectResult:
        if subject in self.source.invalid:
            p = self.source.invalid[subject]
            where = f"{p.path}: " if p.path else ""
            kept = (
                "; the last valid version stays programmed" if subject in self.source.stale else ""
            )
            return ObjectResult(subject, False, p.reason, where + p.message + kept)
        found = result.results.get(subject)
        if found is not None:
            return found
        if subject.startswith("L2TPSession/"):
            ref = (obj.get("spec") or {}).get("tunnelRef", "")
            if f"L2TPTunnel/{ref}" not in self.source.raw:
                return ObjectResult(
                    subject, False, Reason.TUNNEL_NOT_FOUND, f"no L2TPTunnel {ref!r} on this node"
                )
        return ObjectResult(subject, False, Reason.PROGRESSING, "waiting to be programmed")

    def _write(self, kind: str, obj: dict[str, Any], r: ObjectResult) -> None:
        generation = obj["metadata"].get("generation", 0)
        ready = conditions.condition(
            conditions.READY,
            "True" if r.ready else "False",
            r.reason,
            r.message,
            observed_generation=generation,
        )
        status: dict[str, Any] = {"observedGeneration": generation, "conditions": [ready]}
        subject = f"{kind}/{obj['metadata']['name']}"
        if kind == crd.SESSION_KIND:
            status["conditions"].append(self._peer_condition(subject, obj, r, generation))
            status["nodeName"] = self.writer.node
            if r.interface:
                status.update(interfaceName=r.interface, interfaceIndex=r.ifindex, mtu=r.mtu)
                if r.addr_gen_mode:
                    status["ipv6AddrGenMode"] = r.addr_gen_mode
                if r.qdisc:
                    status["qdisc"] = r.qdisc
            if r.ignored:
                status["ignored"] = list(r.ignored)
        self.writer.status(kind, obj, status)
        before = self._reasons.get(subject)
        self._reasons[subject] = r.reason
        if r.reason != before and r.reason in FAILURE_REASONS_WITH_EVENTS:
            self.writer.event(kind, obj, r.reason, r.message, warning=True)
        elif r.ready and before not in (None, Reason.PROGRAMMED):
            self.writer.event(kind, obj, Reason.PROGRAMMED, r.message, warning=False)

    def _peer_condition(
        self, subject: str, obj: dict[str, Any], r: ObjectResult, generation: int
    ) -> dict[str, Any]:
        verdict = self._verdicts.get(subject)
        since = self._peer_since.get(subject)
        current = conditions.find(
            self.writer.current_status(crd.SESSION_KIND, obj).get("conditions"),
            conditions.PEER_ACTIVE,
        )
        return conditions.peer_active(
            verdict,
            programmed=bool(r.interface),
            current=current,
            observed_generation=generation,
            last_transition_time=since[1]
            if since and verdict and since[0] is verdict.state
            else None,
        )

    def _kernel_clean(
        self, kind: str, obj: dict[str, Any], declared: tuple[set[int], set[SessionIds]]
    ) -> bool:
        """Whether nothing this object declared is left in this node's kernel.

        A kernel object that a live object also declares (``declared``: the live objects' tunnel
        ids and session keys) is that object's, not this one's: a refused duplicate (Conflict)
        must be deletable while the original keeps its tunnel.
        """
        spec = obj.get("spec") or {}
        tunnel_ids, session_keys = declared
        if kind == crd.TUNNEL_KIND:
            tid = spec.get("tunnelID")
            return tid not in self.owned.tunnels or tid in tunnel_ids
        tunnel = self.source.raw.get(f"L2TPTunnel/{spec.get('tunnelRef', '')}")
        key = (((tunnel or {}).get("spec") or {}).get("tunnelID"), spec.get("sessionID"))
        return key not in self.owned.sessions or key in session_keys


SessionIds = tuple[int | None, int]  # (tunnel id, session id)


def _declared(live: Resources) -> tuple[set[int], set[SessionIds]]:
    """The tunnel ids and session keys the live objects declare (once per status pass, not per
    object being deleted: a mass delete would make that quadratic)."""
    ids = {t.name: t.tunnel_id for t in live.tunnels}
    return set(ids.values()), {(ids.get(s.tunnel_ref), s.session_id) for s in live.sessions}


def cluster_agent(config: AgentConfig, kernel: Kernel, store: StateStore) -> Agent:
    """An Agent whose desired state is this node's objects in the API server."""
    api, core = clients()
    writer = Writer(api, core, config.node)
    holder: list[tuple[ClusterSource, Agent]] = []

    def changed(kind: str, event: str, obj: dict[str, Any] | None) -> None:
        if holder:
            source, agent = holder[0]
            source.changed(kind, event, obj)
            agent.wake()  # reconcile now (if it is a change), not at the loop's next poll

    def on(kind: str) -> Callable[[str, dict[str, Any] | None], None]:
        return lambda event, obj: changed(kind, event, obj)

    tunnels = NodeCache(api, "l2tptunnels", config.node, on(crd.TUNNEL_KIND))
    sessions = NodeCache(api, "l2tpsessions", config.node, on(crd.SESSION_KIND))
    source = ClusterSource(tunnels, sessions, writer)
    agent = Agent(config, kernel, store, source)
    holder.append((source, agent))
    status = StatusWriter(source, writer, agent.owned, agent.peer_verdicts)
    agent.on_result.append(status)
    agent.on_liveness.append(status.liveness_changed)
    tunnels.start()
    sessions.start()
    return agent
