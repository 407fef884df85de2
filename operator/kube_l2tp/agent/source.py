"""Desired resources from a directory of manifests, safely.

A file caught half-written, or an object edited into an invalid state, must not read as "the
user deleted it" and tear down a working pseudowire: the last valid version of each object is
kept (and reported as such) until a valid one replaces it or the object really disappears.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity


@dataclass
class Snapshot:
    resources: Resources
    problems: list[Problem] = field(default_factory=list)
    stale: set[str] = field(default_factory=set)  # "Kind/name" kept from a last valid version


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


class ManifestSource:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._last_good: dict[str, Tunnel | Session] = {}
        self._last: Snapshot | None = None

    def ready(self) -> bool:
        return True

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
            docs = manifests.load([self.directory]) if any(self.directory.iterdir()) else []
        except (OSError, manifests.ManifestError) as exc:
            problem = Problem(Severity.ERROR, "Directory", str(self.directory), "", str(exc))
            if self._last is None:
                return Snapshot(Resources(), [problem])
            # Unreadable: keep everything as it was rather than remove it.
            return Snapshot(self._last.resources, [problem], set(self._last_good))
        report = validation.check_documents(docs)
        bad = {f"{p.kind}/{p.name}" for p in report.errors}
        keep: dict[str, Tunnel | Session] = {}
        stale: set[str] = set()
        objects: list[Tunnel | Session] = [*report.resources.tunnels, *report.resources.sessions]
        for obj in objects:
            subject = f"{_kind(obj)}/{obj.name}"
            if subject not in bad:
                keep[subject] = obj
            elif subject in self._last_good:
                keep[subject] = self._last_good[subject]
                stale.add(subject)
        for subject in bad - keep.keys():
            if subject in self._last_good and _named(subject, docs):
                keep[subject] = self._last_good[subject]
                stale.add(subject)
        tunnels = tuple(o for o in keep.values() if isinstance(o, Tunnel))
        names = {t.name for t in tunnels}
        sessions = tuple(
            o for o in keep.values() if isinstance(o, Session) and o.tunnel_ref in names
        )
        self._last_good = keep  # stale entries already hold their last valid version
        snapshot = Snapshot(Resources(tunnels, sessions), list(report.problems), stale)
        self._last = snapshot
        return snapshot


def _kind(obj: Tunnel | Session) -> str:
    return "L2TPTunnel" if isinstance(obj, Tunnel) else "L2TPSession"


def _named(subject: str, docs: list[manifests.Document]) -> bool:
    """Whether a document still declares ``subject`` (even if invalid)."""
    kind, name = subject.split("/", 1)
    for doc in docs:
        body = doc.body
        if isinstance(body, dict) and body.get("kind") == kind:
            meta = body.get("metadata")
            if isinstance(meta, dict) and meta.get("name") == name:
                return True
    return False
