"""Two operator replicas on the real kube-apiserver, as the chart runs them with replicas > 1:
separate `kube-l2tp operator` processes with the chart's ServiceAccount token (TokenRequest, never
admin), --leader-election on the chart's Lease name, one webhook certificate shared by both (the
chart then requires webhookTLS.secretName), and one webhook port: kopf binds it with SO_REUSEPORT,
so the kernel spreads connections over both processes as the webhook Service spreads them over
pods, and the configuration both write is the same.

Shown: exactly one holds the Lease and writes (kube_l2tp_operator_leader 1/0); both answer
admission reviews with their own up-to-date indexes; a killed leader's Lease is taken over after
it expires (not before) and a change made while no replica led converges; a replica that stops
releases the Lease and the next takes over at once; and over the whole run no two replicas ever
lead at once (the Lease's holderIdentity and both gauges sampled every 50 ms).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from kube_l2tp.controller.tls import SelfSignedIssuer

from .chart import NAMESPACE, OPERATOR_SA, RELEASE, install
from .fixtures import Kubectl
from .server import REPO, RealApiServer, _die_with_parent, free_port

LEASE = f"{RELEASE}-operator"  # the chart's --leader-election name
DURATION, DEADLINE, RETRY = 6.0, 4.0, 1.0  # quicker than the chart's 15/10/2, same rules
GV = "/apis/kubel2tp.io/v1alpha1"
KUBE_L2TP = Path(sys.executable).parent / "kube-l2tp"


@dataclass
class Replica:
    """One `kube-l2tp operator` process."""

    name: str
    process: subprocess.Popen[bytes]
    health: int
    metrics: int
    log: Path
    webhook_answers: dict[str, float] = field(default_factory=dict)

    def scrape(self) -> dict[str, float]:
        """/metrics as {series: value}; empty when the process does not answer."""
        try:
            text = requests.get(f"http://127.0.0.1:{self.metrics}/metrics", timeout=1).text
        except requests.RequestException:
            return {}
        series = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                series[name] = float(value)
        return series

    def leads(self) -> bool:
        return self.scrape().get("kube_l2tp_operator_leader") == 1.0

    def reviews(self, verdict: str) -> float:
        return sum(
            v
            for k, v in self.scrape().items()
            if k.startswith("kube_l2tp_operator_webhook_requests_total")
            and f'verdict="{verdict}"' in k
        )

    def healthy(self) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{self.health}/healthz", timeout=1).ok
        except requests.RequestException:
            return False


def eventually(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {result!r}")
        time.sleep(0.05)


class Cluster:
    """The operators' shared setting: the API server, the operator's token, the certificate."""

    def __init__(self, api: RealApiServer, kubectl: Kubectl, tmp: Path) -> None:
        self.api, self.kubectl, self.tmp = api, kubectl, tmp
        install(api, kubectl)
        token = api.token(NAMESPACE, OPERATOR_SA)
        self.kubeconfig = api.write_kubeconfig(tmp / "operator.kubeconfig", token=token)
        (tmp / "tls").mkdir()
        issuer = SelfSignedIssuer(["127.0.0.1", "localhost"], tmp / "tls")
        issuer.issue()
        self.tls = issuer.files
        self.webhook_port = free_port()
        self.replicas: list[Replica] = []

    def start(self, name: str) -> Replica:
        health, metrics = free_port(), free_port()
        log = self.tmp / f"{name}.log"
        args = [
            str(KUBE_L2TP),
            "operator",
            *("--webhook-host", "127.0.0.1", "--webhook-port", str(self.webhook_port)),
            *("--health-port", str(health), "--metrics-port", str(metrics)),
            *("--webhook-cert", str(self.tls.certfile), "--webhook-key", str(self.tls.pkeyfile)),
            *("--webhook-ca", str(self.tls.cafile)),
            *("--leader-election", LEASE, "--identity", name),
            *("--lease-duration", str(DURATION), "--lease-renew-deadline", str(DEADLINE)),
            *("--lease-retry-period", str(RETRY)),
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "POD_NAMESPACE": NAMESPACE}
        with log.open("wb") as out:
            process = subprocess.Popen(
                args,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 (no orphan operators)
            )
        replica = Replica(name, process, health, metrics, log)
        self.replicas.append(replica)
        eventually(
            lambda: replica.healthy() or process.poll() is not None, 60, f"{name} to be healthy"
        )
        assert process.poll() is None, f"{name} exited:\n{log.read_text()[-3000:]}"
        return replica

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process.poll() is None:
                replica.process.kill()
            replica.process.wait(10)

    def holder(self) -> str | None:
        code, lease = self.api.submit(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}"
        )
        return (lease.get("spec") or {}).get("holderIdentity") if code == 200 else None

    def lease(self) -> dict[str, Any]:
        code, lease = self.api.submit(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}"
        )
        assert code == 200, lease
        spec: dict[str, Any] = lease["spec"]
        return spec

    def apply(self, *objects: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))

    def sessions_summary(self, tunnel: str) -> str | None:
        code, body = self.api.submit("GET", f"{GV}/l2tptunnels/{tunnel}")
        return ((body.get("status") or {}).get("sessions")) if code == 200 else None

    def review(self, obj: dict[str, Any]) -> dict[str, Any]:
        """One AdmissionReview on a new connection to the shared port (the kernel picks the
        process, as a Service picks a pod), trusting only the shared CA."""
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uuid.uuid4()),
                "kind": {"group": "kubel2tp.io", "version": "v1alpha1", "kind": obj["kind"]},
                "resource": {
                    "group": "kubel2tp.io",
                    "version": "v1alpha1",
                    "resource": "l2tptunnels",
                },
                "operation": "CREATE",
                "userInfo": {"username": "tester"},
                "object": obj,
                "oldObject": None,
                "dryRun": False,
            },
        }
        url = f"https://127.0.0.1:{self.webhook_port}/validate-tunnel"
        with requests.Session() as fresh:  # no keep-alive across reviews
            answer = fresh.post(url, json=review, verify=str(self.tls.cafile), timeout=10)
        assert answer.status_code == 200, answer.text
        response: dict[str, Any] = answer.json()["response"]
        return response


def tunnel(name: str, tunnel_id: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-a",
            "tunnelID": tunnel_id,
            "peerTunnelID": 4000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 5000 + tunnel_id % 1000, "destinationPort": 6000},
        },
    }


def session(name: str, tunnel_ref: str, session_id: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {"tunnelRef": tunnel_ref, "sessionID": session_id, "peerSessionID": 2000},
    }


class Sampler:
    """Every 50 ms: the Lease's holder and which replicas say they lead."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.samples: list[tuple[float, str | None, list[str]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            leaders = [r.name for r in list(self.cluster.replicas) if r.leads()]
            self.samples.append((time.monotonic(), self.cluster.holder(), leaders))
            self._stop.wait(0.05)

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(10)

    def holders(self) -> list[str | None]:
        """The Lease's holders in order, repeats collapsed."""
        seen: list[str | None] = []
        for _, holder, _ in self.samples:
            if not seen or seen[-1] != holder:
                seen.append(holder)
        return seen


@pytest.fixture
def cluster(api: RealApiServer, kubectl: Kubectl, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(api, kubectl, tmp_path)
    try:
        yield c
    finally:
        c.stop_all()
        api.submit("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/{LEASE}")


def test_one_leader_writes_both_review_takeover_converges(cluster: Cluster) -> None:
    a = cluster.start("replica-a")
    eventually(lambda: cluster.holder() == "replica-a", 20, "replica-a to take the Lease")
    b = cluster.start("replica-b")
    sampler = Sampler(cluster)
    with sampler.running():
        eventually(a.leads, 10, "replica-a's gauge")
        assert not b.leads()
        # a writes: the tunnel's session summary, once the webhooks let the objects in
        cluster.apply(tunnel("t1", 3000), session("s1", "t1", 1000))
        eventually(lambda: cluster.sessions_summary("t1") == "0/1", 20, "t1's summary 0/1")

        # both answer reviews, each with its own index holding t1: a duplicate id is refused
        verdicts = [cluster.review(tunnel("dup", 3000)) for _ in range(24)]
        assert all(not v["allowed"] for v in verdicts), verdicts
        assert all("already used by L2TPTunnel/t1" in v["status"]["message"] for v in verdicts)
        assert a.reviews("denied") > 0 and b.reviews("denied") > 0, (
            a.reviews("denied"),
            b.reviews("denied"),
        )

        # the leader dies without a word; a change arrives while no replica leads
        renewed_before = cluster.lease()["renewTime"]
        a.process.kill()
        killed = time.monotonic()
        a.process.wait(10)
        cluster.apply(session("s2", "t1", 1001))  # the webhook is b's alone now
        # b sees s2 but does not write: a's Lease has not expired yet
        time.sleep(max(0.0, killed + 2.0 - time.monotonic()))
        assert cluster.holder() == "replica-a" and not b.leads()
        assert cluster.sessions_summary("t1") == "0/1"
        eventually(lambda: cluster.holder() == "replica-b", DURATION + 10, "replica-b's takeover")
        took_over = time.monotonic() - killed
        eventually(lambda: cluster.sessions_summary("t1") == "0/2", 20, "t1's summary 0/2")
        converged = time.monotonic() - killed
        assert b.leads()
        # not before the Lease could have expired (a renewed at most RETRY before the kill),
        # and within its duration plus two looks (when b saw the last renewal, when it looked)
        assert DURATION - RETRY - 0.5 <= took_over <= DURATION + 2 * RETRY + 1.0, took_over
        assert cluster.lease()["leaseTransitions"] >= 1
        assert cluster.lease()["renewTime"] != renewed_before

        # a replica that stops (SIGTERM, as a rolling update does) hands over at once
        c = cluster.start("replica-c")
        b.process.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        eventually(lambda: cluster.holder() == "replica-c", DURATION + 10, "replica-c's takeover")
        handed_over = time.monotonic() - stopped
        assert b.process.wait(30) == 0
        assert handed_over < RETRY + 2.0, handed_over
        cluster.apply(session("s3", "t1", 1002))
        eventually(lambda: cluster.sessions_summary("t1") == "0/3", 20, "t1's summary 0/3")
        assert c.leads()
    print(
        f"\nHA: takeover after a kill {took_over:.1f} s (lease {DURATION:g} s), change"
        f" converged {converged:.1f} s after the kill; handover on SIGTERM {handed_over:.1f} s;"
        f" {len(sampler.samples)} samples"
    )

    # never two leaders: by the gauges, and by the Lease
    both = [(t, leaders) for t, _, leaders in sampler.samples if len(leaders) > 1]
    assert not both, both[:5]
    holders = [h for h in sampler.holders() if h]  # "" while released
    assert holders == ["replica-a", "replica-b", "replica-c"], sampler.holders()
    for _, holder, leaders in sampler.samples:
        assert all(name == holder for name in leaders), (holder, leaders)


def test_the_operators_lease_rights_are_its_own_lease_only(
    api: RealApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    """The chart's Role, asked of the API server's authorizer with the operator's own token:
    create Leases in its namespace (RBAC cannot name what is created), read and renew its own
    Lease, and nothing else: not another Lease, not a delete, not another namespace."""
    install(api, kubectl)
    token = api.token(NAMESPACE, OPERATOR_SA)
    as_operator = Kubectl(
        kubectl.binary, api.write_kubeconfig(tmp_path / "op.kubeconfig", token=token), tmp_path
    )

    def can(verb: str, resource: str, namespace: str = NAMESPACE) -> bool:
        answer = as_operator("auth", "can-i", verb, resource, "-n", namespace, ok=False)
        assert answer.stdout.strip() in ("yes", "no"), answer.stderr
        return answer.stdout.strip() == "yes"

    assert can("create", "leases.coordination.k8s.io")
    assert can("get", f"leases.coordination.k8s.io/{LEASE}")
    assert can("update", f"leases.coordination.k8s.io/{LEASE}")
    assert not can("get", "leases.coordination.k8s.io/kube-controller-manager")
    assert not can("update", "leases.coordination.k8s.io/another-lease")
    assert not can("delete", f"leases.coordination.k8s.io/{LEASE}")
    assert not can("patch", f"leases.coordination.k8s.io/{LEASE}")
    assert not can("list", "leases.coordination.k8s.io")
    assert not can("create", "leases.coordination.k8s.io", "kube-system")
    assert not can("update", f"leases.coordination.k8s.io/{LEASE}", "kube-system")
