"""Desired resources from a directory of manifests, safely.

A file caught half-written, or an object edited into an invalid state, must not read as "the
user deleted it" and tear down a working pseudowire: the last valid version of each object is
kept (and reported as such) until a valid one replaces it or the object really disappears.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kube_l2tp.api import validation
from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.files import manifests


@dataclass
class Snapshot:
    resources: Resources
    problems: list[Problem] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # "Kind/name" kept from a last valid version

    @property
    def unreadable(self) -> list[Problem]:
        """Files or documents that could not be read or parsed (not objects that are invalid)."""
        return [p for p in self.problems if p.severity is Severity.ERROR and not p.name]


class Source(Protocol):
    """Where desired objects come from: a directory, or the API server."""

    def load(self) -> Snapshot: ...

    def signature(self) -> Hashable:
        """Changes whenever the objects may have changed (polled by the agent's loop)."""
        ...

    def ready(self) -> bool:
        """Whether the full desired state is known. Until then nothing may be pruned: an
        agent restarted during an API outage must not read "no objects" as "delete all"."""
        ...

    def api_connected(self) -> bool | None:
        """Whether the source's API watches are connected; None for a source without an API."""
        ...

    @property
    def change_trigger(self) -> Trigger:
        """What the loop calls a reconcile that a change of signature() starts."""
        ...


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


class ManifestSource:
    """A directory of manifest files, read file by file: a file that cannot be read or parsed
    is reported and keeps what it declared last (its objects stay programmed), and never
    stops the other files' objects from being programmed."""

    change_trigger = Trigger.MANIFESTS_CHANGED

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._last_good = LastGood()
        self._last: Snapshot | None = None
        self._declared: dict[Path, set[str]] = {}  # file -> subjects it declared when last read

    def ready(self) -> bool:
        return True

    def api_connected(self) -> bool | None:
        return None

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """Changes whenever a manifest file is added, removed or rewritten (cheap to poll)."""
        out = []
        try:
            for path in manifests.files_in([self.directory]):
                st = path.stat()
                out.append((str(path), st.st_mtime_ns, st.st_size))
        except (OSError, manifests.ManifestError):
            return ()
        return tuple(out)

    def load(self) -> Snapshot:
        try:
            empty = not any(self.directory.iterdir())
            files = [] if empty else manifests.files_in([self.directory])
        except (OSError, manifests.ManifestError) as exc:
            problem = Problem(Severity.ERROR, "Directory", str(self.directory), "", str(exc))
            if self._last is None:
                return Snapshot(Resources(), [problem])
            # Unreadable: keep everything as it was rather than remove it.
            return Snapshot(self._last.resources, [problem], set(self._last_good.kept))
        checked: list[validation.Checked] = []
        declared: dict[Path, set[str]] = {}
        unread: set[str] = set()
        for path in files:
            mine = [validation.check_document(doc) for doc in manifests.read(path)]
            subjects = {c.subject for c in mine if c.subject}
            if any(c.subject == "" and c.problems for c in mine):  # a document not read
                subjects |= self._declared.get(path, set())
                unread |= subjects
            declared[path] = subjects
            checked += mine
        self._declared = declared
        snapshot = self._last_good.select_checked(checked, unread)
        self._last = snapshot
        return snapshot


def _kind(obj: Tunnel | Session) -> str:
    return "L2TPTunnel" if isinstance(obj, Tunnel) else "L2TPSession"
