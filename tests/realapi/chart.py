"""Installing the chart into the real API server: `helm template | kubectl apply --server-side`.

No kubelet runs, so no Pod starts: what can be checked is that every object is accepted, and
what the objects do in the API server itself (RBAC, the node-isolation policy, ServiceAccounts
whose tokens the tests request). Pods are created with spec.nodeName set, as the scheduler would,
so that a token can be bound to them as the kubelet would bind it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from .fixtures import Kubectl
from .server import REPO, RealApiServer

CHART = REPO / "charts" / "kube-l2tp"
SCENARIOS = REPO / "tests" / "unit" / "chart"
RELEASE = "kube-l2tp"  # as the README installs it: objects named kube-l2tp-*
NAMESPACE = "kube-l2tp"
AGENT_SA = f"{RELEASE}-agent"
OPERATOR_SA = f"{RELEASE}-operator"
IMAGE = "registry.invalid/kube-l2tp:test"  # never pulled: no kubelet

# The Prometheus Operator's kinds, for the monitoring scenario: stand-ins with open schemas
# (no registry here ships the Prometheus Operator's CRDs), so those three objects are checked
# for being accepted under their group and kind only, not against the real schemas.
MONITORING_KINDS = (
    ("ServiceMonitor", "servicemonitors", True),
    ("PodMonitor", "podmonitors", True),
    ("PrometheusRule", "prometheusrules", True),
)


def helm_bin(kubectl: Kubectl) -> Path:
    return kubectl.binary.parent / "helm"


def render(
    kubectl: Kubectl, release: str, namespace: str, values: Path | None = None, *extra: str
) -> str:
    args = [str(helm_bin(kubectl)), "template", release, str(CHART), "-n", namespace]
    args += ["--include-crds"]
    if values is not None:
        args += ["-f", str(values)]
    done = subprocess.run(
        [*args, *extra], capture_output=True, text=True, check=True, timeout=120, cwd=REPO
    )
    return done.stdout


def monitoring_crds() -> list[dict[str, Any]]:
    crds = []
    for kind, plural, namespaced in MONITORING_KINDS:
        crds.append(
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": f"{plural}.monitoring.coreos.com"},
                "spec": {
                    "group": "monitoring.coreos.com",
                    "names": {"kind": kind, "plural": plural},
                    "scope": "Namespaced" if namespaced else "Cluster",
                    "versions": [
                        {
                            "name": "v1",
                            "served": True,
                            "storage": True,
                            "schema": {
                                "openAPIV3Schema": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                }
                            },
                        }
                    ],
                },
            }
        )
    return crds


def namespace(api: RealApiServer, name: str) -> None:
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


def install(
    api: RealApiServer,
    kubectl: Kubectl,
    release: str = RELEASE,
    ns: str = NAMESPACE,
    values: Path | None = None,
) -> list[dict[str, Any]]:
    """Render and apply server-side; returns the rendered objects (all applied, or it fails)."""
    namespace(api, ns)
    manifest = render(kubectl, release, ns, values)
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    if any(d["apiVersion"].startswith("monitoring.coreos.com/") for d in docs):
        crds = monitoring_crds()
        for crd in crds:
            api.apply(crd)
        names = [f"crd/{c['metadata']['name']}" for c in crds]
        kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    for other in {d["metadata"].get("namespace") for d in docs} - {None, ns}:
        namespace(api, other)  # e.g. the dashboards' ConfigMap in Grafana's namespace
    out = kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout
    assert out.count("serverside-applied") == len(docs), out
    return docs


def node(api: RealApiServer, name: str) -> None:
    api.apply({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def pod_on(api: RealApiServer, name: str, node_name: str, service_account: str) -> dict[str, Any]:
    """A Pod as the scheduler leaves it (spec.nodeName set); it never runs."""
    node(api, node_name)
    # at once: a graceful deletion waits for a kubelet that never comes
    path = f"/api/v1/namespaces/{NAMESPACE}/pods/{name}"
    code, _ = api.submit("DELETE", path, params={"gracePeriodSeconds": "0"})
    assert code in (200, 404)
    return api.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {
                "nodeName": node_name,
                "serviceAccountName": service_account,
                "containers": [{"name": "agent", "image": IMAGE}],
            },
        }
    )
