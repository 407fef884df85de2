"""The control plane at scale: one in-cluster agent among 1000 nodes' objects.

The realistic API emulator (tests/apiserver) runs in this process on 127.0.0.1, the agent
(agent.cluster.cluster_agent, the same loop `kube-l2tp agent` runs without --manifests) in a
thread of it, both in the caller's network namespace. Measured:

- filtering: every other node's objects (half created before the agent starts, so they would
  come with its first list, half while it watches) against what the emulator sent this agent's
  watches (ApiServer.watches() records every event of every watch). The issue's target: 0 events
  about other nodes' objects.
- time to Ready: from the first of N tunnel+session creates for the agent's node to every one of
  those objects reporting Ready=True for its current generation in status, the agent programming
  the kernel it is given (the real one in the guest; tests/unit's FakeKernel natively, to debug:
  `python tests/bench/controlplane.py --fake 1000 1000`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the API emulator
from workload import NODE, pair

from apiserver.fixtures import CRD_FILES
from apiserver.server import ApiServer
from kube_l2tp.agent.cluster import ClusterSource, cluster_agent
from kube_l2tp.agent.events import kernel_events
from kube_l2tp.agent.loop import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.netlink.kernel import Kernel

TESTS = Path(__file__).resolve().parents[1]
OTHER_TUNNEL_IDS = 100_000  # other nodes' tunnel ids start here (no clash with the node's own)
POLL = 0.25


@dataclass(frozen=True)
class ControlPlane:
    nodes: int  # other nodes, one tunnel + one session each
    others_cached: int  # other nodes' objects that reached the agent's caches (list or watch)
    others_events: int  # watch events the agent was sent about other nodes' objects
    own_events: int  # watch events about its own objects
    watches: int  # watches the agent opened
    load_seconds: float  # creating the other nodes' objects
    sessions: int  # the agent's own tunnel+session pairs
    create_seconds: float  # creating them (through the emulator, validated like any create)
    ready_seconds: float  # from the first create to every one of them Ready
    api_writes: int  # the agent's writes to the API (finalizers, status)


def ready(obj: dict[str, Any]) -> bool:
    """Ready=True for the object's current generation, as a user's `kubectl wait` would ask."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    return status.get("observedGeneration") == generation and any(
        c.get("type") == "Ready"
        and c.get("status") == "True"
        and c.get("observedGeneration") == generation
        for c in status.get("conditions") or ()
    )


def ready_among(api: ApiServer, wanted: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """Those of the wanted (plural, name) objects that are Ready now.

    Read in the server's loop, copying only the wanted objects: copying every object (the other
    nodes' too) four times a second was ~18% of the guest's CPU while the agent was measured.
    """

    def collect() -> set[tuple[str, str]]:
        return {
            (res.plural, name)
            for (res, _, name), obj in api.emulator.objects.items()
            if (res.plural, name) in wanted and not obj.deleted and ready(obj.last.raw)
        }

    return api.call(collect)


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL)


@contextmanager
def kubeconfig(path: Path) -> Iterator[None]:
    before = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    try:
        yield
    finally:
        if before is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = before


class _Recent(list[Any]):
    """kmock's record of requests, keeping only the newest (see forgetful)."""

    KEEP = 4

    def append(self, request: Any) -> None:
        if len(self) >= 2 * self.KEEP:
            del self[: self.KEEP]
        super().append(request)


@contextmanager
def forgetful(api: ApiServer) -> Iterator[None]:
    """Make kmock keep only its newest requests.

    kmock keeps every request and routes each new one by re-applying its filters to all the
    earlier ones until it finds the new one (`request in payload._source`, by identity):
    quadratic in the requests kept. Clearing the record every second (as this did) still left
    up to ~250 under load, about half of the emulator's time natively; routing needs only the
    requests being routed (a handful at once: the agent's, its watches', the poll here), so the
    record is bounded instead. Nothing here reads it (ApiServer.watches() is a separate record).
    """

    def bound() -> None:
        api.emulator._requests = _Recent(api.emulator._requests[-_Recent.KEEP :])

    api.call(bound)
    yield


@contextmanager
def running(agent: Agent) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stop.set()
        thread.join(60)
        source = agent.source
        assert isinstance(source, ClusterSource)
        source.tunnels.stop()
        source.sessions.stop()


def control_plane(
    make_kernel: Callable[[], Any] = Kernel,
    nodes: int = 1000,
    sessions: int = 1000,
    timeout: float = 1800.0,
) -> ControlPlane:
    """Run the scenario in the calling thread's network namespace (see the module docstring).

    ``make_kernel`` is called here; the kernel is then used by the agent's thread only.
    """
    others = [
        obj
        for k in range(nodes)
        for obj in pair(k, f"node-{k:04d}", prefix=f"n{k:04d}-", tunnel_id=OTHER_TUNNEL_IDS + k)
    ]
    own = [obj for i in range(sessions) for obj in pair(i)]
    own_names = {o["metadata"]["name"] for o in own}
    half = 2 * (nodes // 2)  # whole pairs before the agent starts, the rest while it watches
    quiet = logging.getLogger("kube_l2tp")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "Progressing" per object and reconcile, while objects arrive
    with (
        tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp,
        ApiServer(crds=CRD_FILES, kubeconfig=Path(tmp) / "kubeconfig") as api,
        kubeconfig(Path(tmp) / "kubeconfig"),
        forgetful(api),
    ):
        start = time.perf_counter()
        for obj in others[:half]:
            api.create(obj)
        load = time.perf_counter() - start
        kernel = make_kernel()
        store = StateStore(Path(tmp) / "state")
        try:
            config = AgentConfig(NODE, Path(), Path(tmp) / "state")
            agent = cluster_agent(config, kernel, store, kernel_events)
            source = agent.source
            assert isinstance(source, ClusterSource)
            with running(agent):
                wait(lambda: agent.last is not None, timeout, "the agent's first reconcile")
                start = time.perf_counter()
                for obj in others[half:]:
                    api.create(obj)
                load += time.perf_counter() - start

                start = time.perf_counter()
                for obj in own:
                    api.create(obj)
                created = time.perf_counter() - start

                everyone = {(f"{o['kind'].lower()}s", o["metadata"]["name"]) for o in own}
                pending = set(everyone)

                def all_ready() -> bool:
                    pending.difference_update(ready_among(api, pending))
                    if pending:
                        return False
                    # all were seen Ready: are they all Ready at once?
                    pending.update(everyone - ready_among(api, everyone))
                    return not pending

                wait(all_ready, timeout, f"{sessions} sessions and their tunnels Ready")
                ready_seconds = time.perf_counter() - start
                cached = {
                    o["metadata"]["name"]
                    for cache in (source.tunnels, source.sessions)
                    for o in cache.snapshot()
                }
                writes = source.writer.writes
        finally:
            store.close()
            close = getattr(kernel, "close", None)  # the FakeKernel has nothing to close
            if close is not None:
                close()
        errors = api.errors()
        assert not errors, f"the emulator failed while serving: {errors!r}"
        # the agent is the only client watching: every watch of these kinds is one of its own
        mine = [w for w in api.watches() if w.resource in ("l2tptunnels", "l2tpsessions")]
        assert len(mine) >= 2, f"the agent's two watches were not recorded: {mine}"
        events = [name for w in mine for _, name in w.sent]
    quiet.setLevel(level)
    return ControlPlane(
        nodes=nodes,
        others_cached=len(cached - own_names),
        others_events=sum(name not in own_names for name in events),
        own_events=sum(name in own_names for name in events),
        watches=len(mine),
        load_seconds=load,
        sessions=sessions,
        create_seconds=created,
        ready_seconds=ready_seconds,
        api_writes=writes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fake", action="store_true", help="tests/unit's FakeKernel (no root)")
    parser.add_argument("nodes", type=int, nargs="?", default=1000)
    parser.add_argument("sessions", type=int, nargs="?", default=1000)
    args = parser.parse_args()
    make_kernel: Callable[[], Any] = Kernel
    if args.fake:
        sys.path.insert(0, str(TESTS / "unit"))
        from fakekernel import FakeKernel

        make_kernel = FakeKernel
    print(control_plane(make_kernel, args.nodes, args.sessions))


if __name__ == "__main__":
    main()
