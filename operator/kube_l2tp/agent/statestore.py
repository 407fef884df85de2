"""The agent's ownership record on disk: locked, written atomically, never half-written.

Losing or corrupting this file would make the agent treat its own objects as foreign (safe, but
stuck), so every save is write-to-temp, fsync, rename, fsync-directory; and a lock file keeps two
agents from sharing one record.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from kube_l2tp.core.desired import Owned

DEFAULT_STATE_DIR = Path("/var/lib/kube-l2tp")


class StateError(Exception):
    """The state directory cannot be used; the message says why and what to do."""


class StateStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / "owned.json"
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = os.open(directory / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StateError(f"cannot use state directory {directory}: {exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(self._lock)
            raise StateError(
                f"another kube-l2tp agent holds {directory}/lock: run one agent per network"
                " namespace, or give each its own --state-dir"
            ) from exc
        self._last = ""

    def load(self) -> Owned:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Owned()
        try:
            owned = Owned.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.path} is unreadable ({exc}): the agent will not guess what it owns."
                " Move the file aside to start afresh (existing objects then show as Conflict)"
            ) from exc
        self._last = owned.to_json()
        return owned

    def save(self, owned: Owned) -> None:
        text = owned.to_json()
        if text == self._last:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._last = text

    def close(self) -> None:
        os.close(self._lock)


def peek(directory: Path) -> Owned | None:
    """The record as last saved, without taking the lock (for `kube-l2tp status`)."""
    try:
        return Owned.from_json((directory / "owned.json").read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
