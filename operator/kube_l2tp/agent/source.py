"""Where the loop's desired objects come from (Source), and the directory of manifests.

Each read goes through core.lastgood.LastGood: an invalid edit or a file caught half-written
keeps the object's last valid version instead of reading as a delete.
"""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Protocol

from kube_l2tp.api import validation
from kube_l2tp.api.model import Resources
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.core.lastgood import LastGood, Snapshot
from kube_l2tp.core.reconcile import Result
from kube_l2tp.core.triggers import Trigger
from kube_l2tp.files import manifests


class Reading(Protocol):
    """One read of a source, and what the loop's later phases do with it in the same pass."""

    def admit(self) -> Snapshot:
        """Before anything is programmed: the desired objects (the API: those that carry this
        node's finalizer, which this phase puts on)."""
        ...

    def report(self, result: Result) -> None:
        """After the reconcile: tell the objects' owners (the API: status, Events, finalizers
        of deleted objects released)."""
        ...


class Source(Protocol):
    """Where desired objects come from: a directory, or the API server."""

    def read(self) -> Reading:
        """The objects as they are now; no writes anywhere."""
        ...

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

    def read(self) -> Loaded:
        return Loaded(self.load())

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


class Loaded:
    """A read of manifests: nothing to admit, nobody to report to (the CLI prints results)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def admit(self) -> Snapshot:
        return self.snapshot

    def report(self, result: Result) -> None:
        del result
