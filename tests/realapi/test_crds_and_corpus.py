"""The CRDs on a real kube-apiserver: applied server-side, examples accepted, and the validator's
verdict held against the API server's own on every object of the hostile-input corpus.

The API server judges one object at a time (schema, CEL, transition rules): that is level 1 of
`kube-l2tp validate` (validation.check_object). Rules across objects (levels 2 and 3) are the
operator's webhook's business and are not asked of the server here: for a cross-object case the
server must accept every object and level 1 must pass them all too. For a single-object case
(every error `validate` reports is a level-1 error) the server must refuse exactly the objects
`validate` refuses, naming each field `validate` names.

Dry runs are what `kubectl apply --dry-run=server` sends for a new object: a create with
dryRun=All and fieldValidation=Strict (kubectl's default --validate=strict); one test runs
kubectl itself over every refused object to see the message a user gets.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.problems import Severity

from .fixtures import Kubectl
from .server import REPO, RealApiServer

CORPUS_FILES = sorted((REPO / "tests" / "unit" / "corpus").glob("*.yaml"))
EXAMPLES = sorted((REPO / "examples").rglob("*.yaml")) + sorted(
    (REPO / "operator" / "kube_l2tp" / "embedded").glob("*.yaml")
)


def corpus() -> Iterator[tuple[str, dict[str, Any]]]:
    for path in CORPUS_FILES:
        for case in yaml.safe_load(path.read_text())["cases"]:
            yield f"{path.stem}:{case['name']}", case


CASES = list(corpus())
NOT_CHECKED = "some validation rules were not checked because the object was invalid"


def level1_errors(obj: Any, old: Any = None) -> list[validation.Problem]:
    problems, _ = validation.check_object(copy.deepcopy(obj), "case", old=copy.deepcopy(old))
    return [p for p in problems if p.severity is Severity.ERROR]


def validate_errors(case: dict[str, Any]) -> list[validation.Problem]:
    """What `kube-l2tp validate` reports for the case's objects (all three levels)."""
    if "old" in case:  # an update: validate judges it against the old object (level 1 only)
        return level1_errors(case["objects"][0], case["old"])
    docs = [manifests.Document(f"case#{i}", o) for i, o in enumerate(case["objects"])]
    return [p for p in validation.check_documents(docs).problems if p.severity is Severity.ERROR]


def single_object(case: dict[str, Any]) -> bool:
    """Every error validate reports is one the object alone shows (no other object needed)."""
    alone = {
        (p.kind, p.name, p.path) for o in case["objects"] for p in level1_errors(o, case.get("old"))
    }
    reported = {(p.kind, p.name, p.path) for p in validate_errors(case)}
    return bool(reported) and reported == alone


def dry_run(api: RealApiServer, obj: Any, old: dict[str, Any] | None) -> tuple[int, Any]:
    """The API server's verdict on creating obj (or on updating the stored ``old`` to it)."""
    params = {"dryRun": "All", "fieldValidation": "Strict"}
    try:
        path = api.path_for(str(obj.get("apiVersion")), str(obj.get("kind")))
    except RuntimeError as exc:  # no such group/version/kind: what kubectl says before sending
        return 404, {"message": str(exc)}
    if old is None:
        return api.submit("POST", path, obj, params=params)
    stored = api.create(old)
    body = copy.deepcopy(obj)
    body["metadata"]["resourceVersion"] = stored["metadata"]["resourceVersion"]
    try:
        return api.submit("PUT", f"{path}/{stored['metadata']['name']}", body, params=params)
    finally:
        api.submit("DELETE", f"{path}/{stored['metadata']['name']}")


def server_message(body: Any) -> str:
    return str(body.get("message", "")) if isinstance(body, dict) else str(body)


def test_crds_are_established_and_reapply_cleanly(api: RealApiServer, kubectl: Kubectl) -> None:
    """The fixture applied crds/ server-side; the chart ships the same files."""
    for path in sorted((REPO / "crds").glob("*.yaml")):
        chart_copy = REPO / "charts" / "kube-l2tp" / "crds" / path.name
        assert yaml.safe_load(chart_copy.read_text()) == yaml.safe_load(path.read_text())
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        crd = api.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
        status = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
        assert status["Established"] == "True" and status["NamesAccepted"] == "True", status
        assert status.get("NonStructuralSchema") is None  # a structural schema
    again = kubectl("apply", "--server-side", "-f", "crds/").stdout
    assert again.count("serverside-applied") == 2, again


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(REPO)) for p in EXAMPLES])
def test_examples_are_accepted(api: RealApiServer, kubectl: Kubectl, path: Path) -> None:
    out = kubectl("apply", "--server-side", "-f", str(path)).stdout
    assert out.count("serverside-applied") == len(
        [d for d in yaml.safe_load_all(path.read_text()) if d]
    ), out


def test_the_corpus_base_objects_are_accepted(api: RealApiServer) -> None:
    for path in CORPUS_FILES:
        base = yaml.safe_load(path.read_text()).get("base", {})
        for obj in base.values():
            code, body = dry_run(api, obj, None)
            assert code == 201, (path.name, server_message(body))


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_validate_and_the_api_server_agree(
    api: RealApiServer, name: str, case: dict[str, Any]
) -> None:
    old = case.get("old")
    single = single_object(case)
    refused_by_server: dict[int, str] = {}
    for i, obj in enumerate(case["objects"]):
        code, body = dry_run(api, obj, old)
        assert code < 500, (name, i, code, body)
        if code >= 400:
            refused_by_server[i] = server_message(body)
        mine = level1_errors(obj, old)
        verdict = "refused" if mine else "accepted"
        server = f"refused: {refused_by_server[i]}" if i in refused_by_server else "accepted"
        assert bool(mine) == (i in refused_by_server), (
            f"{name} object {i}: validate (level 1) {verdict} it"
            f" {[p.render() for p in mine]}, the API server {server}"
        )
        if mine:  # the server names every field the validator names
            message = refused_by_server[i]
            named = [p.path for p in mine if _names_field(message, p.path, obj)]
            # ... but the server runs no CEL rule on an object its schema already refused
            assert named if NOT_CHECKED in message else len(named) == len(mine), (name, message)
    if single:
        refused_by_validate = {
            i
            for i, obj in enumerate(case["objects"])
            if any(
                p.name == str((obj.get("metadata") or {}).get("name", ""))
                and p.kind == obj.get("kind")
                for p in validate_errors(case)
            )
        }
        assert refused_by_validate == set(refused_by_server), name
        for expected in case["expect"]:
            assert any(  # (a CEL rule's field is not named when the schema refused first)
                _names_field(m, expected, case["objects"][i]) or NOT_CHECKED in m
                for i, m in refused_by_server.items()
            ), (name, expected, refused_by_server)
    else:
        assert not refused_by_server, f"{name}: a cross-object case, but the server refused"


def _names_field(message: str, path: str, obj: Any) -> bool:
    """The server's message names the field (apiVersion: by the version it cannot serve)."""
    if path == "apiVersion":
        return str(obj.get("apiVersion")) in message
    return re.search(rf"(^|[\s,\[\"]){re.escape(path)}(?![\w.\[])", message) is not None


def test_kubectl_shows_the_servers_field_for_every_refused_object(
    api: RealApiServer, kubectl: Kubectl, tmp_path: Path
) -> None:
    """What a user sees: `kubectl apply --dry-run=server` over every object the corpus's
    single-object cases make invalid, each in its own file; the server's error names the field."""
    expected: dict[str, list[str]] = {}
    for name, case in CASES:
        if "old" in case or not single_object(case):
            continue
        for i, obj in enumerate(case["objects"]):
            paths = [p.path for p in level1_errors(obj)]
            if paths and "apiVersion" not in paths:
                # JSON: PyYAML would write `nodeName: n` plain, which kubectl reads as false
                file = tmp_path / f"{name.replace(':', '-')}-{i}.json"
                file.write_text(json.dumps(obj))
                expected[str(file)] = paths
    assert len(expected) > 50
    done = kubectl("apply", "--dry-run=server", "-f", str(tmp_path), ok=False)
    assert done.returncode != 0
    errors: dict[str, str] = {}  # file -> its error (a message can run over several lines)
    current = ""
    for line in done.stderr.splitlines():
        current = next((f for f in expected if f'"{f}"' in line), current)
        if current:
            errors[current] = errors.get(current, "") + line + "\n"
    missing = sorted(set(expected) - set(errors))
    assert not missing, f"kubectl reported no error for {missing}:\n{done.stderr[-3000:]}"
    for file, paths in expected.items():
        for path in paths:
            if path == "metadata.name" and "resource name may not be empty" in errors[file]:
                continue  # kubectl's own refusal, before sending: it cannot name a file's object
            if NOT_CHECKED in errors[file]:  # no CEL rule run after a schema error
                assert any(p in errors[file] for p in paths), (file, paths, errors[file])
                continue
            assert path in errors[file], (file, path, errors[file])


def test_the_hostile_corpus_levels_are_the_servers(kubectl: Kubectl, tmp_path: Path) -> None:
    """tests/unit/corpus/hostile: every case `validate` refuses at the schema level, the API
    server refuses too (kubectl apply --dry-run=server); every case it accepts there (valid, or
    refused only by the rules across objects, which are the webhook's) the server accepts.
    Cases refused by the reader (kubectl reads them differently, or refuses them itself) are
    not the server's to judge."""
    sys.path.insert(0, str(REPO / "tests" / "unit"))
    from corpus.hostile.cases import CASES as HOSTILE

    files = {}
    for case in HOSTILE:
        if case.level == "read":
            continue
        path = tmp_path / "cases" / f"{case.name}{case.suffix}"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(case.content)
        files[str(path)] = case
    assert sum(c.level == "schema" for c in files.values()) >= 10
    done = kubectl("apply", "--dry-run=server", "-f", str(tmp_path / "cases"), ok=False)
    refused = {f for line in done.stderr.splitlines() for f in files if f'"{f}"' in line}
    disagree = sorted(
        f"{c.name} ({c.level})" for f, c in files.items() if (c.level == "schema") != (f in refused)
    )
    assert not disagree, f"validate and the API server disagree on {disagree}:\n{done.stderr}"
