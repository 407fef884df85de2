"""The CRDs: generated from one source, complete for kubectl explain, columns and selectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_l2tp.api import crd
from kube_l2tp.files import crds

REPO = Path(__file__).parent.parent.parent


def test_crds_dir_matches_the_source() -> None:
    """What users apply is exactly what the validator uses."""
    for name, generated in crd.all_crds().items():
        on_disk = yaml.safe_load((REPO / "crds" / name).read_text())
        assert on_disk == generated, f"crds/{name} is stale: run `make crds`"
    assert crds.main(["--check", "--dir", str(REPO / "crds")]) == 0


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for key, sub in schema.get("properties", {}).items():
        out += _walk(sub, f"{path}.{key}")
    if "items" in schema:
        out += _walk(schema["items"], f"{path}[]")
    return out


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_every_field_is_described_and_bounded(name: str) -> None:
    version = crd.all_crds()[name]["spec"]["versions"][0]
    for path, node in _walk(version["schema"]["openAPIV3Schema"], ""):
        if path == ".metadata":  # the API server refuses anything but its type there
            assert node == {"type": "object"}
            continue
        assert node.get("description"), f"{name}{path} has no description (kubectl explain)"
        if node.get("type") == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{name}{path}: CEL cost needs maxLength"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{name}{path}: CEL cost needs maxItems"


@pytest.mark.parametrize("name", sorted(crd.all_crds()))
def test_crd_shape(name: str) -> None:
    spec = crd.all_crds()[name]["spec"]
    assert spec["group"] == "kubel2tp.io" and spec["scope"] == "Cluster"
    assert "l2tp" in spec["names"]["categories"] and spec["names"]["shortNames"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Node", "ID", "Peer ID", "Ready", "Age"} <= columns
    assert {"jsonPath": ".spec.nodeName"} in version["selectableFields"]
    if spec["names"]["kind"] == "L2TPTunnel":
        assert "Encap" in columns and "Remote" in columns


def test_ownership_fields_are_immutable_and_nothing_else() -> None:
    """The decided policy: only fields that pick the owning agent are immutable."""
    immutable = []
    for name, c in crd.all_crds().items():
        schema = c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for path, node in _walk(schema, ""):
            if any("oldSelf" in r["rule"] for r in node.get("x-kubernetes-validations", [])):
                immutable.append(f"{name}{path}")
    assert sorted(immutable) == [
        "l2tpsessions.yaml.spec.nodeName",
        "l2tpsessions.yaml.spec.tunnelRef",
        "l2tptunnels.yaml.spec.nodeName",
    ]
