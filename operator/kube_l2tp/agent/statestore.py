"""The agent's ownership record on disk: locked, written atomically, never half-written.

Losing or corrupting this file would make the agent treat its own objects as foreign (safe, but
stuck), so every save is write-to-temp, fsync, rename, fsync-directory; and a lock file keeps two
agents from sharing one record.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from kube_l2tp.core.desired import Owned

DEFAULT_STATE_DIR = Path("/var/lib/kube-l2tp")

log = logging.getLogger("kube_l2tp.agent")


def this_boot_and_namespace() -> tuple[str, int]:
    """(boot id, network namespace inode) of the calling thread: what kernel objects live in."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return boot_id, os.stat("/proc/thread-self/ns/net").st_ino


class StateError(Exception):
    """The state directory cannot be used; the message says why and what to do."""


class StateStore:
    """``identity`` is (boot id, netns inode), by default this boot's and the caller's: the
    record keeps only ownership made under the same (Owned.kernel_records_of)."""

    def __init__(self, directory: Path, identity: tuple[str, int] | None = None) -> None:
        self.identity = identity or this_boot_and_namespace()
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
        boot_id, netns = self.identity
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Owned(boot_id=boot_id, netns=netns)
        try:
            owned = Owned.from_json(text)
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.path} is unreadable ({exc}): the agent will not guess what it owns."
                " Move the file aside to start afresh (existing objects then show as Conflict)"
            ) from exc
        if not owned.boot_id:  # written before records carried their boot: trusted as before
            owned.boot_id, owned.netns = boot_id, netns
        mine = owned.kernel_records_of(boot_id, netns)
        if mine is not owned:
            log.warning(
                "%s was written in another boot or network namespace (boot %s, netns %d; now"
                " boot %s, netns %d): its ownership is dropped, since the kernel's objects do not"
                " outlive either; objects found under the same ids or names are someone else's",
                self.path,
                owned.boot_id,
                owned.netns,
                boot_id,
                netns,
            )
        self._last = owned.to_json()
        return mine

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
