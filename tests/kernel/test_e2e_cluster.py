"""End to end, in the VM: the API server, the operator, two in-cluster agents, the real kernel.

The API server is the realistic emulator (tests/apiserver; no kube-apiserver can run here), in
this process, listening on every address of the guest. The operator runs beside it in a thread of
its own. Each agent is a real `kube-l2tp agent --node ...` process inside its site's network
namespace, the way the DaemonSet runs it in a node's host namespace, and reaches the API over a
management veth (203.0.113.0/24). Users act with kubectl 1.33. The seed's pseudowire runs between
the sites over their own underlay veth (192.0.2.0/24), with the overlay 198.51.100.0/24.

The tests run in order on one such cluster (its start-up is most of the cost under emulation):
apply, then faults (API outage, agent restart, two users' conflicting objects), delete, and a
node that goes away.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import ip, ip_batch, link, run

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))
from apiserver.fixtures import CRD_FILES  # noqa: E402
from apiserver.server import ApiServer  # noqa: E402

REPO = TESTS.parent
SEED = REPO / "operator/kube_l2tp/embedded"
NODES = ("site-a", "site-b")
UNDERLAY = {"site-a": "192.0.2.1", "site-b": "192.0.2.2"}
OVERLAY = {"site-a": "198.51.100.1", "site-b": "198.51.100.2"}
# management network, one /30 per node: (API side in the root namespace, node side)
MGMT = {"site-a": ("203.0.113.1", "203.0.113.2"), "site-b": ("203.0.113.5", "203.0.113.6")}
GV = "/apis/kubel2tp.io/v1alpha1"
METRICS = 9717


def eventually(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy (generous: the guest is emulated)."""
    started = time.monotonic()
    deadline = started + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (AssertionError, subprocess.SubprocessError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            print(f"e2e: {what}: {time.monotonic() - started:.1f}s", file=sys.stderr)
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


@dataclass
class Cluster:
    api: ApiServer
    work: Path
    netns: dict[str, str]
    agents: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    # --- users ---

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.work / "kubeconfig"), "HOME": str(self.work)}
        done = subprocess.run(
            [str(kubectl_bin()), *args], capture_output=True, text=True, env=env, check=False
        )
        if check:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done

    def objects(self) -> list[dict[str, Any]]:
        """Every L2TP object, read in-process (polling with kubectl would load the guest)."""
        return self.api.objects("l2tptunnels") + self.api.objects("l2tpsessions")

    def get(self, name: str) -> dict[str, Any]:
        return next(o for o in self.objects() if o["metadata"]["name"] == name)

    def all_ready(self, names: set[str]) -> bool:
        """Every named object Ready=True for its current generation."""
        seen = {o["metadata"]["name"]: o for o in self.objects()}
        return names <= seen.keys() and all(ready(seen[n]) == ("True", "Programmed") for n in names)

    # --- nodes ---

    def start_agent(self, node: str) -> None:
        log = (self.work / f"agent-{node}.log").open("ab")
        self.agents[node] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns[node], "kube-l2tp", "agent", "--node", node,
             "--state-dir", str(self.work / f"state-{node}"),
             "--metrics-bind-address", f"127.0.0.1:{METRICS}"],
            env={**os.environ, "KUBECONFIG": str(self.work / f"kubeconfig-{node}")},
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()

    def stop_agent(self, node: str) -> int:
        proc = self.agents.pop(node)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)

    def http(self, node: str, path: str) -> tuple[int, str]:
        """GET from the agent's endpoint inside its namespace (no Python start-up: bash)."""
        script = (
            f"exec 3<>/dev/tcp/127.0.0.1/{METRICS} && "
            f'printf "GET {path} HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'
        )
        out = run(["bash", "-c", script], netns=self.netns[node])
        status = out.split("\r\n", 1)[0].split()
        return int(status[1]), out.split("\r\n\r\n", 1)[-1]

    def log(self, node: str) -> str:
        path = self.work / f"agent-{node}.log"
        return path.read_text(errors="replace") if path.exists() else "(not started)"

    # --- the data plane ---

    def ping(self, count: int = 3, interval: float = 0.2) -> tuple[int, int]:
        """site-a -> site-b across the pseudowire: (sent, received)."""
        out = run(
            ["ping", "-q", "-c", str(count), "-i", str(interval), "-W", "2", OVERLAY["site-b"]],
            netns=self.netns["site-a"],
            check=False,
        )
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return int(m[1]), int(m[2])

    def pinging(self, count: int) -> subprocess.Popen[str]:
        """Traffic in the background while a fault happens: 5 pings a second."""
        return subprocess.Popen(
            ["ip", "netns", "exec", self.netns["site-a"], "ping", "-q", "-c", str(count),
             "-i", "0.2", "-W", "2", OVERLAY["site-b"]],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def l2tp(self, node: str) -> str:
        return ip(self.netns[node], "l2tp", "show", "tunnel") + ip(
            self.netns[node], "l2tp", "show", "session"
        )


def ready(obj: dict[str, Any]) -> tuple[str, str] | None:
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"].get("generation"):
        return None
    for cond in status.get("conditions") or ():
        if cond.get("type") == "Ready":
            return cond["status"], cond["reason"]
    return None


def loss(proc: subprocess.Popen[str]) -> tuple[int, int]:
    out, _ = proc.communicate(timeout=120)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    return int(m[1]), int(m[2])


def sample(metrics: str, name: str, node: str) -> float:
    """One sample of an agent metric labelled only with the node."""
    m = re.search(rf'^{name}\{{node="{node}"\}} (\S+)$', metrics, re.MULTILINE)
    assert m, f"{name} for {node} not in /metrics"
    return float(m[1])


def kubectl_bin() -> Path:
    path = REPO / ".cache/k8s-tools/bin/kubectl"
    assert path.is_file(), f"{path} is missing: run `make tools` on the host first"
    return path


def build_network() -> dict[str, str]:
    """Two sites (underlay veth) and a management veth from the root namespace to each."""
    suffix = secrets.token_hex(2)
    names = {node: f"e2e-{node}-{suffix}" for node in NODES}
    for ns in names.values():
        ip(None, "netns", "add", ns)
        ip(ns, "link", "set", "lo", "up")
    a, b = names["site-a"], names["site-b"]
    ip(a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
    for node, ns in names.items():
        api_side, node_side = MGMT[node]
        host_if = f"mgmt-{node[-1]}-{suffix}"
        ip(None, "link", "add", host_if, "type", "veth", "peer", "name", "mgmt0", "netns", ns)
        ip_batch(None, [f"addr add {api_side}/30 dev {host_if}", f"link set {host_if} up"])
        ip_batch(
            ns,
            [
                f"addr add {UNDERLAY[node]}/24 dev eth0",
                "link set eth0 up",
                f"addr add {node_side}/30 dev mgmt0",
                "link set mgmt0 up",
            ],
        )
    return names


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def operator(work: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`kube-l2tp operator` as a process: its own CA and certificate, HTTPS webhooks."""
    log = (work / "operator.log").open("ab")
    proc = subprocess.Popen(
        ["kube-l2tp", "operator", "--health-port", "0", "--webhook-port", str(free_port()),
         "--webhook-host", "127.0.0.1"],
        env={**os.environ, "KUBECONFIG": str(work / "kubeconfig"), "TMPDIR": str(work)},
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log.close()
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("e2e")
    netns = build_network()
    try:
        with ApiServer(crds=CRD_FILES, host="0.0.0.0", kubeconfig=work / "kubeconfig") as api:
            for node in NODES:
                api.write_kubeconfig(
                    work / f"kubeconfig-{node}", f"http://{MGMT[node][0]}:{api.port}"
                )
                api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
            c = Cluster(api, work, netns)
            with operator(work) as op:
                try:
                    for node in NODES:
                        c.start_agent(node)
                    for node in NODES:  # a first reconcile done (Python starts slowly here)
                        eventually(
                            lambda n=node: c.http(n, "/readyz")[0] == 200, 300, f"{node} ready"
                        )
                    yield c
                finally:
                    for node in list(c.agents):
                        c.stop_agent(node)
                    for node in NODES:  # shown with -s, or when the module fails
                        print(f"--- agent {node} ---\n{c.log(node)}", file=sys.stderr)
            oplog = (work / "operator.log").read_text(errors="replace")
            print(f"--- operator ---\n{oplog}", file=sys.stderr)
            assert op.returncode == 0, oplog
            assert not api.errors(), f"the emulator failed while serving: {api.errors()!r}"
    finally:
        for ns in netns.values():
            ip(None, "netns", "del", ns, check=False)


SEED_OBJECTS = {"site-a", "site-a-1", "site-b", "site-b-1"}


def test_kubectl_apply_of_the_seed_gives_pings_and_ready(cluster: Cluster) -> None:
    applied = cluster.kubectl("apply", "-f", str(SEED)).stdout
    assert applied.count("created") == 4, applied
    eventually(lambda: cluster.ping(1) == (1, 1), 180, "a ping across the pseudowire")
    assert cluster.ping(3) == (3, 3)
    eventually(lambda: cluster.all_ready(SEED_OBJECTS), 120, "all four objects Ready")
    table = cluster.kubectl("get", "l2tp").stdout
    rows = [line.split() for line in table.splitlines() if line.startswith("l2tp")]
    assert len(rows) == 4 and all("True" in row for row in rows), table
    # status says what the kernel has
    for node in NODES:
        (session,) = [o for o in cluster.objects() if o["metadata"]["name"] == f"{node}-1"]
        kernel = link(cluster.netns[node], "l2tpeth0")
        st = session["status"]
        assert (st["interfaceName"], st["interfaceIndex"], st["mtu"], st["nodeName"]) == (
            "l2tpeth0",
            kernel["ifindex"],
            kernel["mtu"],
            node,
        )
        assert session["spec"]["nodeName"] == node  # filled in by the operator from the tunnel

    def summary() -> bool:  # the operator's aggregate of the tunnel's sessions
        tunnel = cluster.get("site-a")
        return (tunnel.get("status") or {}).get("sessions") == "1/1"

    eventually(summary, 60, "the operator's session summary on the tunnel")
    webhooks = json.loads(
        cluster.kubectl("get", "validatingwebhookconfigurations", "-o", "json").stdout
    )["items"]
    (config,) = [w for w in webhooks if w["metadata"]["name"] == "kube-l2tp.kubel2tp.io"]
    assert all(h["clientConfig"].get("caBundle") for h in config["webhooks"])
    # each agent received only its own node's objects (server-side field selector)
    for w in cluster.api.watches():
        if w.field_selector.startswith("spec.nodeName="):
            node = w.field_selector.split("=", 1)[1]
            assert all(name.startswith(node) for name in w.names), w


def test_api_outage_keeps_traffic_and_changes_converge_after(cluster: Cluster) -> None:
    index = {n: link(cluster.netns[n], "l2tpeth0")["ifindex"] for n in NODES}
    traffic = cluster.pinging(40)
    with cluster.api.outage():
        time.sleep(2)
        for node in NODES:  # liveness never depends on the API
            assert cluster.http(node, "/healthz")[0] == 200
        # changed meanwhile (the agents cannot see it yet): a smaller MTU on both sides
        for node in NODES:
            path = f"{GV}/l2tpsessions/{node}-1"
            patch = {"spec": {"interface": {"mtu": 1400}}}
            code, body = cluster.api.submit(
                "PATCH", path, patch, content_type="application/merge-patch+json"
            )
            assert code == 200, body
        time.sleep(4)
        assert all(link(cluster.netns[n], "l2tpeth0")["mtu"] == 1488 for n in NODES)
    sent, received = loss(traffic)
    assert sent == received == 40, "traffic was lost while the API was down"
    eventually(
        lambda: all(link(cluster.netns[n], "l2tpeth0")["mtu"] == 1400 for n in NODES),
        120,
        "the MTU changed during the outage to reach both kernels",
    )
    eventually(lambda: cluster.all_ready(SEED_OBJECTS), 60, "Ready for the new generation")
    assert {n: link(cluster.netns[n], "l2tpeth0")["ifindex"] for n in NODES} == index
    assert cluster.ping(3) == (3, 3)
    for node in NODES:
        assert sample(cluster.http(node, "/metrics")[1], "kube_l2tp_api_connected", node) == 1


def test_agent_restart_under_traffic(cluster: Cluster) -> None:
    before = cluster.l2tp("site-a"), link(cluster.netns["site-a"], "l2tpeth0")["ifindex"]
    traffic = cluster.pinging(50)
    assert cluster.stop_agent("site-a") == 0
    cluster.start_agent("site-a")
    eventually(lambda: cluster.http("site-a", "/readyz")[0] == 200, 300, "the agent ready again")
    sent, received = loss(traffic)
    assert sent == received == 50, "traffic was lost while the agent restarted"
    after = cluster.l2tp("site-a"), link(cluster.netns["site-a"], "l2tpeth0")["ifindex"]
    assert after == before
    metrics = cluster.http("site-a", "/metrics")[1]
    assert sample(metrics, "kube_l2tp_kernel_writes_total", "site-a") == 0, metrics
    assert cluster.all_ready(SEED_OBJECTS)


def test_conflicting_objects_from_two_users(cluster: Cluster) -> None:
    """Another team declares tunnel id 3000 on site-a as well: theirs is refused, ours runs.

    The emulator does not call admission webhooks (the operator's webhook would have refused
    it at the door; tests/controller covers that), so this is the agent's own guard."""
    other = {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": "another-team"},  # sorts before "site-a"
        "spec": {
            "nodeName": "site-a",
            "tunnelID": 3000,
            "peerTunnelID": 4100,
            "encapsulation": "ip",
            "local": UNDERLAY["site-a"],
            "remote": "192.0.2.9",
        },
    }
    path = cluster.work / "another-team.yaml"
    path.write_text(json.dumps(other))
    before = cluster.l2tp("site-a")
    cluster.kubectl("apply", "-f", str(path))

    def refused() -> bool:
        return ready(cluster.get("another-team")) == ("False", "Conflict")

    eventually(refused, 60, "another-team refused with reason Conflict")
    obj = cluster.get("another-team")
    message = obj["status"]["conditions"][0]["message"]
    assert "spec.tunnelID" in message and "L2TPTunnel/site-a" in message, message
    # `kubectl events` reads core/v1 Events, which the agent posts (the emulator does not mirror
    # them into events.k8s.io/v1, which `kubectl get events` reads)
    events = cluster.kubectl("events", "-n", "default", "--for", "L2TPTunnel/another-team").stdout
    assert "Conflict" in events and "L2TPTunnel/site-a" in events, events
    assert cluster.all_ready(SEED_OBJECTS) and cluster.l2tp("site-a") == before
    assert cluster.ping(3) == (3, 3)
    cluster.kubectl("delete", "-f", str(path), "--wait=true", "--timeout=120s")


def test_delete_leaves_the_kernels_clean(cluster: Cluster) -> None:
    cluster.kubectl("delete", "-f", str(SEED), "--wait=true", "--timeout=180s")
    assert "No resources found" in cluster.kubectl("get", "l2tp").stderr
    for node in NODES:  # the finalizer went only after the kernel objects
        assert cluster.l2tp(node) == ""
        assert ip(cluster.netns[node], "-o", "link", "show", "dev", "l2tpeth0", check=False) == ""


def test_deleted_node_does_not_block_deletion(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-f", str(SEED))
    eventually(lambda: cluster.all_ready(SEED_OBJECTS), 180, "the seed Ready again")
    assert cluster.stop_agent("site-b") == 0  # the node is gone, and its agent with it
    # the node object goes (as the cloud's node controller deletes it)
    code, body = cluster.api.submit("DELETE", "/api/v1/nodes/site-b")
    assert code == 200, body
    done = cluster.kubectl(
        "delete", "-f", str(SEED / "site-b.yaml"), "--wait=true", "--timeout=120s", check=False
    )
    assert done.returncode == 0, f"site-b's objects stuck on a finalizer: {done.stderr}"
    names = {o["metadata"]["name"] for o in cluster.objects()}
    assert names == {"site-a", "site-a-1"}
    # site-a's agent still owns and removes its own
    cluster.kubectl("delete", "-f", str(SEED / "site-a.yaml"), "--wait=true", "--timeout=120s")
    assert cluster.l2tp("site-a") == ""
