"""The validator against a corpus of invalid manifests, and the examples as valid ones."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_l2tp.api import crd, manifests, validation
from kube_l2tp.api.problems import Severity
from kube_l2tp.files import manifests as manifest_files

HERE = Path(__file__).parent
REPO = HERE.parent.parent
CASES = yaml.safe_load((HERE / "corpus" / "invalid.yaml").read_text())["cases"]


def run_case(case: dict[str, Any]) -> list[validation.Problem]:
    objects = copy.deepcopy(case["objects"])
    if "old" in case:
        problems, _ = validation.check_object(objects[0], "case", old=copy.deepcopy(case["old"]))
        return problems
    docs = [manifests.Document(f"case#{i}", o) for i, o in enumerate(objects)]
    return list(validation.check_documents(docs).problems)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_invalid_case_is_rejected_at_its_field(case: dict[str, Any]) -> None:
    errors = [p for p in run_case(case) if p.severity is Severity.ERROR]
    assert errors, f"{case['name']}: accepted, but should fail at {case['expect']}"
    paths = {p.path for p in errors}
    for expected in case["expect"]:
        assert expected in paths, f"{case['name']}: errors at {paths}, expected {expected}"
    for problem in errors:
        line = problem.render()
        assert problem.kind in line and problem.path in line
        # every message names the field it is about (by path or by its own name)
        leaf = problem.path.split(".")[-1].split("[")[0]
        assert problem.path and (leaf in problem.message or leaf in line)


def _rules(schema: Any) -> list[str]:
    found: list[str] = []
    if isinstance(schema, dict):
        found += [r["message"] for r in schema.get("x-kubernetes-validations", [])]
        for value in schema.values():
            found += _rules(value)
    elif isinstance(schema, list):
        for value in schema:
            found += _rules(value)
    return found


def test_corpus_triggers_every_cel_rule() -> None:
    messages = {p.message for case in CASES for p in run_case(case)}
    rules = _rules(crd.all_crds())
    missed = [r for r in rules if not any(m.startswith(r) for m in messages)]
    assert not missed, f"no invalid case triggers these rules: {missed}"


def test_corpus_covers_every_spec_field() -> None:
    def fields(schema: dict[str, Any], path: str) -> list[str]:
        out = []
        for key, sub in schema.get("properties", {}).items():
            out.append(f"{path}.{key}")
            out += fields(sub.get("items", sub), f"{path}.{key}")
        return out

    all_fields = set()
    for kind in (crd.TUNNEL_KIND, crd.SESSION_KIND):
        all_fields |= set(fields(validation.openapi_schema(kind)["properties"]["spec"], "spec"))
    reported = {
        p.path.replace("[0]", "").replace("[1]", "") for case in CASES for p in run_case(case)
    }
    covered = {f for f in all_fields if any(r == f or r.startswith(f + ".") for r in reported)}
    # booleans with defaults are covered by type errors; every field must be reached somehow
    missing = sorted(all_fields - covered - {"spec.udp.ipv6ChecksumRx"})
    assert not missing, f"no invalid case reports these fields: {missing}"


def test_examples_are_valid() -> None:
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        report = validation.check_documents(manifest_files.load([path]))
        assert not report.errors, [p.render() for p in report.errors]


def test_seed_mtu_warns_and_offsets_warn() -> None:
    report = validation.check_documents(manifest_files.load([REPO / "examples/seed/site-a.yaml"]))
    assert [p.path for p in report.warnings] == ["spec.interface.mtu"]
    assert "1446" in report.warnings[0].message
    docs = [
        manifests.Document(
            "a",
            CASES[0]["objects"][0] | {"spec": {**CASES[0]["objects"][0]["spec"], "tunnelID": 1}},
        ),
    ]
    session = yaml.safe_load((HERE / "corpus" / "invalid.yaml").read_text())["base"]["session"]
    session = copy.deepcopy(session)
    session["spec"]["offset"] = 8
    session["spec"]["tunnelRef"] = docs[0].body["metadata"]["name"]
    report = validation.check_documents([*docs, manifests.Document("b", session)])
    assert not report.errors
    assert [p.path for p in report.warnings] == ["spec.offset"]


def test_defaults_match_ip_l2tp() -> None:
    base = yaml.safe_load((HERE / "corpus" / "invalid.yaml").read_text())["base"]
    _, tunnel = validation.check_object(base["tunnel"])
    _, session = validation.check_object(base["session"])
    assert isinstance(tunnel, validation.Tunnel) and isinstance(session, validation.Session)
    assert tunnel.encapsulation == "udp"
    assert tunnel.udp is not None
    assert (tunnel.udp.checksum, tunnel.udp.ipv6_checksum_tx, tunnel.udp.ipv6_checksum_rx) == (
        False,
        True,
        True,
    )
    assert (session.l2spec_type, session.sequencing, session.offset, session.peer_offset) == (
        "default",
        "none",
        0,
        0,
    )
    assert session.cookie is None and session.interface_name is None
    assert session.interface.up is True and session.interface.mtu is None
