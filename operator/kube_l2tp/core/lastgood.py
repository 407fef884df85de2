"""Validation with memory: the last valid version of each object, shared by every source.

A file caught half-written, or an object edited into an invalid state, must not read as "the
user deleted it" and tear down a working pseudowire: the last valid version of each object is
kept (and reported as such) until a valid one replaces it or the object really disappears.
Pure: the sources (agent.source, agent.cluster) read; this decides what is desired.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity


@dataclass
class Snapshot:
    resources: Resources
    problems: list[Problem] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # "Kind/name" kept from a last valid version

    @property
    def unreadable(self) -> list[Problem]:
        """Files or documents that could not be read or parsed (not objects that are invalid)."""
        return [p for p in self.problems if p.severity is Severity.ERROR and not p.name]


class LastGood:
    """Validation with memory, shared by every source.

    - An object that fails validation keeps its last valid version (reported as stale) for as
      long as it is still declared, so an invalid edit never reads as a delete.
    - Established objects are validated first: when a newcomer collides with a running object
      (the same tunnel id, port or interface name), the newcomer is the one refused.
    """

    def __init__(self) -> None:
        self.kept: dict[str, Tunnel | Session] = {}

    def select(self, docs: Iterable[manifests.Document]) -> Snapshot:
        """Desired resources from ``docs`` (in order of precedence among newcomers), each
        checked as it comes (a generator's bodies are dropped as they are checked)."""
        return self.select_checked(validation.check_document(doc) for doc in docs)

    def select_checked(
        self, items: Iterable[validation.Checked], unread: Iterable[str] = ()
    ) -> Snapshot:
        """The same from documents already checked one by one (level 1), e.g. remembered.
        ``unread``: subjects declared where a file could not be read this time; they keep
        their last valid version, as invalid ones do."""
        checked = list(items)
        ordered = sorted(checked, key=lambda c: c.subject not in self.kept)  # stable
        report = validation.combine(ordered)
        bad = {f"{p.kind}/{p.name}" for p in report.errors}
        declared = {c.subject for c in checked} | set(unread)
        keep: dict[str, Tunnel | Session] = {}
        stale: set[str] = set()
        objects: list[Tunnel | Session] = [*report.resources.tunnels, *report.resources.sessions]
        for obj in objects:
            subject = f"{_kind(obj)}/{obj.name}"
            if subject not in bad:
                keep[subject] = obj
        for subject in (bad | declared) - keep.keys():
            if subject in self.kept and subject in declared:
                keep[subject] = self.kept[subject]
                stale.add(subject)
        tunnels = tuple(o for o in keep.values() if isinstance(o, Tunnel))
        names = {t.name for t in tunnels}
        sessions = tuple(
            o for o in keep.values() if isinstance(o, Session) and o.tunnel_ref in names
        )
        self.kept = keep  # stale entries already hold their last valid version
        return Snapshot(Resources(tunnels, sessions), list(report.problems), stale)


def _kind(obj: Tunnel | Session) -> str:
    return "L2TPTunnel" if isinstance(obj, Tunnel) else "L2TPSession"
