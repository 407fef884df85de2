"""Leader election through a coordination.k8s.io/v1 Lease, by client-go's rules.

Why not kopf's peering (KopfPeering objects): a paused kopf stops its watch streams, and the
admission webhooks read the indexes those streams fill. Every operator replica must keep watching
and serve reviews; only the Lease's holder may write (status, nodeName, finalizers, Events).

Expiry is measured on the local clock: a candidate counts the lease duration from the moment it
saw the record change, never from the renewTime another machine's clock wrote (client-go's
rule). The holder stops leading when it has not renewed for renew_deadline, which is shorter than
the lease duration, so it has stopped before any other replica may take the Lease over. A holder
that stops on purpose releases the Lease (holderIdentity emptied): the next takes over at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from kubernetes import client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """client-go's defaults (kube-controller-manager's too): 15 s, 10 s, 2 s."""

    duration: float = 15.0  # a silent holder's lease is free after this long
    renew_deadline: float = 10.0  # the holder stops leading when it could not renew for this long
    retry: float = 2.0  # how often the holder renews and candidates look

    def __post_init__(self) -> None:
        if not 0 < self.retry < self.renew_deadline < self.duration:
            raise ValueError(
                f"leader election timing: need 0 < retry period ({self.retry:g} s) < renew"
                f" deadline ({self.renew_deadline:g} s) < lease duration ({self.duration:g} s);"
                " e.g. 2, 10 and 15"
            )

    @property
    def request_timeout(self) -> float:
        """Per API call: a read and a write that hang still end before the lease can expire."""
        return min(self.retry, (self.duration - self.renew_deadline) / 2)


@dataclass(frozen=True)
class LeaseRecord:
    """What a Lease's spec says, and the resourceVersion it was read at ("" before a create)."""

    holder: str  # "" when released
    duration: int  # leaseDurationSeconds
    transitions: int
    acquired: dt.datetime | None
    renewed: dt.datetime | None
    version: str = ""


def claim(
    current: LeaseRecord | None,
    seen_for: float,
    identity: str,
    timing: Timing,
    now: dt.datetime,
) -> LeaseRecord | None:
    """The record to write to lead, or None while another holder's lease is live.

    ``seen_for``: seconds since this replica saw ``current`` change (its own clock).
    """
    duration = max(1, round(timing.duration))
    if current is None:
        return LeaseRecord(identity, duration, 0, now, now)
    if current.holder == identity:
        return replace(current, duration=duration, renewed=now)
    if current.holder and seen_for < current.duration:
        return None
    return LeaseRecord(identity, duration, current.transitions + 1, now, now, current.version)


class LeaseStore:
    """One Lease in one namespace, through the official client (blocking: call it in a thread)."""

    def __init__(self, namespace: str, name: str, api: Any, timeout: float) -> None:
        self.namespace = namespace
        self.name = name
        self._api: Any = client.CoordinationV1Api(api)
        self._timeout = timeout

    def read(self) -> LeaseRecord | None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return _record(lease)

    def write(self, record: LeaseRecord) -> LeaseRecord | None:
        """Create (no version) or replace at the version read; None when another writer won."""
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(
                name=self.name, namespace=self.namespace, resource_version=record.version or None
            ),
            spec=client.V1LeaseSpec(
                holder_identity=record.holder,
                lease_duration_seconds=record.duration,
                lease_transitions=record.transitions,
                acquire_time=record.acquired,
                renew_time=record.renewed,
            ),
        )
        try:
            if record.version:
                lease = self._api.replace_namespaced_lease(
                    self.name, self.namespace, body, _request_timeout=self._timeout
                )
            else:
                lease = self._api.create_namespaced_lease(
                    self.namespace, body, _request_timeout=self._timeout
                )
        except client.ApiException as exc:
            if exc.status == 409:
                return None
            raise
        return _record(lease)


def _record(lease: Any) -> LeaseRecord:
    spec = lease.spec
    return LeaseRecord(
        holder=spec.holder_identity or "",
        duration=spec.lease_duration_seconds or 0,
        transitions=spec.lease_transitions or 0,
        acquired=spec.acquire_time,
        renewed=spec.renew_time,
        version=lease.metadata.resource_version or "",
    )


class Elector:
    """Takes and keeps the Lease; ``held`` says whether this replica leads right now.

    ``changed(True/False)`` is called in the event loop whenever ``held`` flips.
    """

    def __init__(
        self,
        store: LeaseStore,
        identity: str,
        timing: Timing,
        changed: Callable[[bool], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.identity = identity
        self.timing = timing
        self.held = False
        self._changed = changed
        self._clock = clock
        self._seen: LeaseRecord | None = None
        self._seen_at = 0.0
        self._renewed_at = 0.0  # when the last successful write was *sent*

    def _set(self, held: bool, why: str) -> None:
        if held != self.held:
            self.held = held
            log.warning(
                "%s %s the lease %s/%s (%s)",
                self.identity,
                "now holds" if held else "no longer holds",
                self.store.namespace,
                self.store.name,
                why,
            )
            self._changed(held)

    async def step(self) -> None:
        """One look at the Lease: renew it, take it over, or wait."""
        started = self._clock()
        try:
            current = await asyncio.to_thread(self.store.read)
            if current is None or self._seen is None or current.version != self._seen.version:
                self._seen, self._seen_at = current, started
            wanted = claim(
                current,
                started - self._seen_at,
                self.identity,
                self.timing,
                dt.datetime.now(dt.UTC),
            )
            if wanted is None:
                self._set(False, f"held by {current.holder if current else '?'}")
                return
            written = await asyncio.to_thread(self.store.write, wanted)
        except Exception as exc:  # the API is unreachable or refuses: keep trying
            log.warning("lease %s/%s: %s", self.store.namespace, self.store.name, exc)
            written = None
        else:
            if written is None:  # another replica wrote in between: it leads now
                self._set(False, "another replica wrote the lease first")
                return
        if written is not None:
            self._seen, self._seen_at, self._renewed_at = written, started, started
            self._set(True, "acquired" if not self.held else "renewed")
        elif self.held and self._clock() - self._renewed_at >= self.timing.renew_deadline:
            self._set(False, f"not renewed for {self.timing.renew_deadline:g} s")

    async def run(self) -> None:
        """Until cancelled; a cancelled holder releases the Lease for a quick takeover."""
        try:
            while True:
                await self.step()
                if self.held:
                    deadline = self._renewed_at + self.timing.renew_deadline
                    await asyncio.sleep(max(0.0, min(self.timing.retry, deadline - self._clock())))
                else:
                    await asyncio.sleep(self.timing.retry)
        finally:
            if self.held:
                self._set(False, "stopping")
                with contextlib.suppress(Exception):
                    await asyncio.shield(asyncio.to_thread(self._release))

    def _release(self) -> None:
        current = self.store.read()
        if current is not None and current.holder == self.identity:
            self.store.write(replace(current, holder="", renewed=dt.datetime.now(dt.UTC)))
