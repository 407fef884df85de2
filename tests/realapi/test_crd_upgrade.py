"""The README's upgrade path on the real kube-apiserver: a release installed by `helm install` from
an older chart, objects created under its CRDs, then the new chart's CRDs applied with
`kubectl apply --server-side --force-conflicts` (Helm never upgrades `crds/`) and `helm upgrade
--reset-then-reuse-values` (`--reuse-values` would keep the old chart's values only, and the new
templates fail on the values they added: seen here, "nil pointer evaluating ...enabled").

The older chart is this repository's at OLD (git archive): its CRDs lack the session's
interface.ipv6AddrGenMode and interface.qdisc and the tunnel's spec.encryption. No earlier CRDs
were ever accepted by a real API server as they were: the two lines a real server refused were
removed in 829208d (a `description` under metadata, a `maximum` of 2**63-1 on observedGeneration),
and the same two removals are applied to the old CRDs here, as that fix would have been released.

Shown: the old CRDs refuse the new fields; after the upgrade the stored objects still read, are
written back unchanged (a PUT validates them against the new schema), pass the product's own
validator, take status writes, and the new fields are accepted.
"""

from __future__ import annotations

import io
import re
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_l2tp.api import manifests, validation

from .chart import helm_bin
from .fixtures import Kubectl
from .server import REPO, RealApiServer

OLD = "d84031d"  # the chart before the sessions' ipv6AddrGenMode/qdisc and tunnels' encryption
RELEASE, NAMESPACE = "upgrade", "kube-l2tp-upgrade"
GV = "/apis/kubel2tp.io/v1alpha1"
IMAGE = ("--set", "image.registry=registry.invalid", "--set", "image.tag=test")  # never pulled


def old_chart(tmp: Path) -> Path:
    """charts/kube-l2tp at OLD, with 829208d's two removals in its CRDs."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", OLD, "charts/kube-l2tp"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    chart = tmp / "charts" / "kube-l2tp"
    for crd in (chart / "crds").glob("*.yaml"):
        text = crd.read_text()
        text = re.sub(
            r"(\n +metadata:\n +type: object)\n +description: Object metadata\.", r"\1", text
        )
        text = re.sub(r"\n +maximum: 9223372036854775807", "", text)
        crd.write_text(text)
    return chart


def helm(kubectl: Kubectl, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **kubectl.env,
        "HELM_CACHE_HOME": str(tmp / "helm" / "cache"),
        "HELM_CONFIG_HOME": str(tmp / "helm" / "config"),
        "HELM_DATA_HOME": str(tmp / "helm" / "data"),
    }
    done = subprocess.run(
        [str(helm_bin(kubectl)), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stderr}"
    return done


def tunnel(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-a",
            "tunnelID": 3000 + len(name),
            "peerTunnelID": 4000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 5000 + len(name), "destinationPort": 6000},
            **extra,
        },
    }


def session(name: str, tunnel_ref: str, interface: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {
            "tunnelRef": tunnel_ref,
            "nodeName": "node-a",
            "sessionID": 1000,
            "peerSessionID": 2000,
            "cookie": "014d3636deadbeef",
            "interface": interface,
        },
    }


ENCRYPTION = {"type": "ipsec", "keyFile": "/etc/kube-l2tp/keys/site-a.key"}
NEW_INTERFACE = {"up": True, "mtu": 1400, "ipv6AddrGenMode": "none", "qdisc": "noqueue"}
OLD_INTERFACE = {
    "up": True,
    "mtu": 1400,
    "addresses": [{"address": "198.51.100.1/32", "peer": "198.51.100.2"}],
}


def apply(
    kubectl: Kubectl, *objects: dict[str, Any], ok: bool = True
) -> subprocess.CompletedProcess[str]:
    return kubectl("apply", "--server-side", "-f", "-", stdin=yaml.safe_dump_all(objects), ok=ok)


@pytest.fixture
def fresh_crds(api: RealApiServer, kubectl: Kubectl) -> Any:
    """No CRDs of ours at the start (the session's server has the current ones); the current
    ones again at the end, whatever happened, for the tests that follow."""
    kubectl("delete", "--wait", "-f", "crds/")
    yield
    kubectl("apply", "--server-side", "--force-conflicts", "-f", "crds/")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")


def test_crds_of_an_older_release_upgrade_in_place(
    api: RealApiServer, kubectl: Kubectl, tmp_path: Path, fresh_crds: Any
) -> None:
    chart = old_chart(tmp_path / "old")
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    helm(kubectl, tmp_path, "install", RELEASE, str(chart), "-n", NAMESPACE, *IMAGE)
    try:
        kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")
        upgrade(api, kubectl, tmp_path)
    finally:
        helm(kubectl, tmp_path, "uninstall", RELEASE, "-n", NAMESPACE, "--no-hooks")


def upgrade(api: RealApiServer, kubectl: Kubectl, tmp_path: Path) -> None:
    # objects under the old schema
    apply(kubectl, tunnel("old-t"), session("old-s", "old-t", OLD_INTERFACE))
    # the old CRDs do not know the new fields (kubectl's strict field validation names them)
    refused = apply(kubectl, tunnel("new-t", encryption=ENCRYPTION), ok=False)
    assert ".spec.encryption: field not declared in schema" in refused.stderr, refused.stderr
    refused = apply(kubectl, session("new-s", "old-t", NEW_INTERFACE), ok=False)
    assert ": field not declared in schema" in refused.stderr, refused.stderr
    assert (
        ".spec.interface.ipv6AddrGenMode" in refused.stderr
        or ".spec.interface.qdisc" in refused.stderr
    )

    # Helm created the CRDs (field manager "helm"): a plain server-side apply conflicts with it,
    # which is why the README's command says --force-conflicts
    plain = kubectl("apply", "--server-side", "-f", "charts/kube-l2tp/crds/", ok=False)
    assert plain.returncode != 0
    assert 'conflict with "helm": .spec.versions' in plain.stderr, plain.stderr

    # the README's path: the new CRDs server-side, then the chart
    for _ in range(2):  # the next upgrade runs the same command: it must work again
        kubectl("apply", "--server-side", "--force-conflicts", "-f", "charts/kube-l2tp/crds/")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", "crds/")
    helm(
        kubectl,
        tmp_path,
        "upgrade",
        RELEASE,
        "charts/kube-l2tp",
        "-n",
        NAMESPACE,
        "--reset-then-reuse-values",
    )

    stored = {}
    for plural, name in (("l2tptunnels", "old-t"), ("l2tpsessions", "old-s")):
        code, obj = api.submit("GET", f"{GV}/{plural}/{name}")
        assert code == 200, obj
        stored[name] = obj
        # written back unchanged: validated against the new schema and its CEL rules
        code, answer = api.submit("PUT", f"{GV}/{plural}/{name}", obj)
        assert code == 200, answer
        status = {"status": {"observedGeneration": obj["metadata"]["generation"]}}
        code, answer = api.submit(
            "PATCH",
            f"{GV}/{plural}/{name}/status",
            status,
            content_type="application/merge-patch+json",
        )
        assert code == 200, answer
    assert stored["old-s"]["spec"]["interface"] == OLD_INTERFACE
    # and the product's validator (the same CRDs, offline) finds nothing wrong with them
    as_read = [
        {k: o[k] for k in ("apiVersion", "kind", "spec")} | {"metadata": {"name": n}}
        for n, o in stored.items()
    ]
    report = validation.check_documents(manifests.parse(yaml.safe_dump_all(as_read), "stored"))
    assert not report.errors, [p.render() for p in report.errors]

    # the new fields are accepted now
    apply(kubectl, tunnel("new-t", encryption=ENCRYPTION), session("new-s", "new-t", NEW_INTERFACE))
    code, obj = api.submit("GET", f"{GV}/l2tpsessions/new-s")
    assert obj["spec"]["interface"]["qdisc"] == "noqueue", obj
    code, obj = api.submit("GET", f"{GV}/l2tptunnels/new-t")
    assert obj["spec"]["encryption"] == ENCRYPTION | {"algorithm": "aes256gcm16", "keyID": 0}
