"""The control plane at scale: one in-cluster agent among 1000 nodes' objects, on a real
kube-apiserver and etcd.

etcd and kube-apiserver (tests/realapi/server.py; the binaries `make k8s-bin` builds and links to
.cache/k8s-bin) run on 127.0.0.1 of the caller's network namespace, the agent
(agent.cluster.cluster_agent, the same loop `kube-l2tp agent` runs without --manifests) in a
thread of this process. The agent's client is admin's (identity is not what is measured here;
tests/realapi runs it with the chart's ServiceAccount). Measured:

- filtering: every other node's objects (half created before the agent starts, so they would
  come with its first list, half while it watches) against every watch event the agent's two
  watches received (counted where the agent's caches take them in) and what its caches hold.
  The issue's target: 0 events about other nodes' objects.
- time to Ready: from the first of N tunnel+session creates for the agent's node to every one of
  those objects reporting Ready=True for its current generation, as seen by a watch of this
  process on the node's objects; the agent programs the kernel it is given (the real one in the
  guest; tests/unit's FakeKernel natively: `python tests/bench/controlplane.py --fake 1000 1000`).
- API writes: the agent's own count, and kube-apiserver's (apiserver_request_total: every
  PATCH/PUT on the L2TP kinds and every POST of an Event, which only the agent makes here).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the real API server
from workload import NODE, pair

from kube_l2tp.agent.cluster import ClusterSource, cluster_agent
from kube_l2tp.agent.events import kernel_events
from kube_l2tp.agent.loop import Agent, AgentConfig
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.netlink.kernel import Kernel
from realapi.server import REPO, RealApiServer, build_binaries

TESTS = Path(__file__).resolve().parents[1]
GV = "/apis/kubel2tp.io/v1alpha1"
PLURALS = ("l2tptunnels", "l2tpsessions")
OTHER_TUNNEL_IDS = 100_000  # other nodes' tunnel ids start here (no clash with the node's own)
POLL = 0.25


@dataclass(frozen=True)
class ControlPlane:
    server: str  # kube-apiserver's version
    server_start_seconds: float  # etcd + kube-apiserver, fresh data directory, to /readyz
    nodes: int  # other nodes, one tunnel + one session each
    others_cached: int  # other nodes' objects that reached the agent's caches (list or watch)
    others_events: int  # watch events the agent received about other nodes' objects
    own_events: int  # watch events about its own objects
    load_seconds: float  # creating the other nodes' objects
    sessions: int  # the agent's own tunnel+session pairs
    create_seconds: float  # creating them (one POST after the other, admin's client)
    ready_seconds: float  # from the first create to every one of them Ready
    api_writes: int  # the agent's writes to the API (finalizers, status, Events): its count
    server_writes: int  # the same, counted by kube-apiserver
    server_rss_mb: float  # kube-apiserver's and etcd's resident memory at the end
    server_peak_mb: float  # their peaks (VmHWM), summed


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


def wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(POLL)


def binaries() -> Path:
    """.cache/k8s-bin (linked by `make k8s-bin`; in the guest, whose HOME is not the host's),
    else the build script's cache (natively)."""
    linked = REPO / ".cache" / "k8s-bin"
    if (linked / "kube-apiserver").is_file() and (linked / "etcd").is_file():
        return linked.resolve()
    return build_binaries()


def crds(api: RealApiServer) -> None:
    """The CRDs applied server-side, then Established (as `kubectl apply --server-side`)."""
    names = []
    for path in sorted((REPO / "crds").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                api.apply(doc)
                names.append(doc["metadata"]["name"])

    def established() -> bool:
        for name in names:
            body = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conds = (body.get("status") or {}).get("conditions") or []
            if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                return False
        return True

    wait(established, 120, "the CRDs Established")


def server_writes(api: RealApiServer) -> int:
    """kube-apiserver's count of PATCH/PUT on the L2TP kinds plus POSTs of Events."""
    code, text = api.submit("GET", "/metrics")
    assert code == 200, text
    total = 0.0
    for line in str(text).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}", 1)[0]))
        verb, resource = labels.get("verb"), labels.get("resource")
        if (verb in ("PATCH", "APPLY", "UPDATE") and resource in PLURALS) or (
            verb == "POST" and resource == "events"
        ):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def server_memory(api: RealApiServer) -> tuple[float, float]:
    """kube-apiserver's and etcd's VmRSS and VmHWM, summed, in MB."""
    rss = peak = 0
    for pid in api.processes().values():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return rss * 1024 / 1e6, peak * 1024 / 1e6


class ReadyWatch(threading.Thread):
    """Which of the node's objects are Ready, from a watch of this process (the server filters
    by spec.nodeName, so other nodes' objects never come: polling lists of 20,000 objects
    several times a second would load the server being measured)."""

    def __init__(self, api: RealApiServer, plural: str, node: str) -> None:
        super().__init__(name=f"ready-{plural}", daemon=True)
        self.api, self.plural, self.node = api, plural, node
        self.ready: set[str] = set()
        self.stopping = threading.Event()
        self.error: BaseException | None = None
        listed = api.get(f"{GV}/{plural}", fieldSelector=f"spec.nodeName={node}")
        assert not listed["items"], "the node's objects exist before the watch"
        self.version = listed["metadata"]["resourceVersion"]
        self.http = requests.Session()  # its own: requests' sessions are not for sharing
        self.http.trust_env = False
        self.http.cert = (str(api.pki / "admin.crt"), str(api.pki / "admin.key"))
        self.http.verify = str(api.pki / "ca.crt")

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self._watch()
        except BaseException as exc:  # reported by the waiting thread
            self.error = exc

    def _watch(self) -> None:
        params = {
            "watch": "1",
            "fieldSelector": f"spec.nodeName={self.node}",
            "resourceVersion": self.version,
            "timeoutSeconds": "600",
            "allowWatchBookmarks": "true",
        }
        with self.http.get(
            f"{self.api.url}{GV}/{self.plural}", params=params, stream=True, timeout=700
        ) as answer:
            answer.raise_for_status()
            for line in answer.iter_lines():
                if self.stopping.is_set():
                    return
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    raise RuntimeError(f"watch {self.plural}: {obj}")
                self.version = obj["metadata"]["resourceVersion"]
                if event["type"] == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if event["type"] != "DELETED" and ready(obj):
                    self.ready.add(name)
                else:
                    self.ready.discard(name)


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


@contextmanager
def running(agent: Agent) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=agent.run, name="agent", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        agent.stop.set()
        agent.wake()
        thread.join(60)
        source = agent.source
        assert isinstance(source, ClusterSource)
        source.tunnels.stop()
        source.sessions.stop()


def create_all(api: RealApiServer, objects: list[dict[str, Any]]) -> float:
    """POST each object in turn (validated by the server like any user's); seconds taken."""
    start = time.perf_counter()
    for obj in objects:
        plural = f"{obj['kind'].lower()}s"
        code, body = api.submit("POST", f"{GV}/{plural}", obj)
        if code != 201:
            raise RuntimeError(f"create {obj['metadata']['name']}: {code} {body}")
    return time.perf_counter() - start


def control_plane(
    make_kernel: Callable[[], Any] = Kernel,
    nodes: int = 1000,
    sessions: int = 1000,
    timeout: float = 3600.0,
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
    events: list[str] = []  # names, one per watch event the agent's caches took in
    with (
        tempfile.TemporaryDirectory(prefix="bench-cp-") as tmp,
        RealApiServer(Path(tmp) / "api", bin_dir=binaries()) as api,
        kubeconfig(api.kubeconfig),
    ):
        crds(api)
        load = create_all(api, others[:half])
        kernel = make_kernel()
        store = StateStore(Path(tmp) / "state")
        watches: list[ReadyWatch] = []
        try:
            config = AgentConfig(NODE, Path(), Path(tmp) / "state")
            agent = cluster_agent(config, kernel, store, kernel_events)
            source = agent.source
            assert isinstance(source, ClusterSource)
            for cache in (source.tunnels, source.sessions):  # count what the watches bring
                took = cache.on_change

                def counted(kind: str, obj: dict[str, Any] | None, took: Any = took) -> None:
                    if obj is not None:
                        events.append(obj["metadata"]["name"])
                    took(kind, obj)

                cache.on_change = counted
            writes_before = server_writes(api)
            with running(agent):
                wait(lambda: agent.last is not None, timeout, "the agent's first reconcile")
                load += create_all(api, others[half:])
                watches += [ReadyWatch(api, plural, NODE) for plural in PLURALS]
                for w in watches:
                    w.start()
                start = time.perf_counter()
                created = create_all(api, own)

                def all_ready() -> bool:
                    for w in watches:
                        if w.error is not None:
                            raise RuntimeError(f"the Ready watch failed: {w.error!r}")
                    return sum(len(w.ready) for w in watches) == len(own)

                wait(all_ready, timeout, f"{sessions} sessions and their tunnels Ready")
                ready_seconds = time.perf_counter() - start
                cached = {
                    o["metadata"]["name"]
                    for cache in (source.tunnels, source.sessions)
                    for o in cache.snapshot()
                }
                writes = source.writer.writes
            counted_by_server = server_writes(api) - writes_before
            rss, peak = server_memory(api)
        finally:
            for w in watches:
                w.stopping.set()
            store.close()
            close = getattr(kernel, "close", None)  # the FakeKernel has nothing to close
            if close is not None:
                close()
        version, started = api.version, api.start_seconds
    quiet.setLevel(level)
    return ControlPlane(
        server=version,
        server_start_seconds=started,
        nodes=nodes,
        others_cached=len(cached - own_names),
        others_events=sum(name not in own_names for name in events),
        own_events=sum(name in own_names for name in events),
        load_seconds=load,
        sessions=sessions,
        create_seconds=created,
        ready_seconds=ready_seconds,
        api_writes=writes,
        server_writes=counted_by_server,
        server_rss_mb=rss,
        server_peak_mb=peak,
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
