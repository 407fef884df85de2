"""LastGood: which objects a source hands to the reconciler when some are invalid."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from kube_l2tp import embedded
from kube_l2tp.api.manifests import Document
from kube_l2tp.core.lastgood import LastGood

SEED = list(yaml.safe_load_all((embedded.DIRECTORY / "site-a.yaml").read_text()))


def tunnel(name: str, tunnel_id: int, port: int) -> Document:
    body: dict[str, Any] = copy.deepcopy(SEED[0])
    body["metadata"]["name"] = name
    body["spec"].update(tunnelID=tunnel_id, udp={"sourcePort": port, "destinationPort": 6000})
    return Document(f"test:{name}", body)


def names(last_good: LastGood, docs: list[Document]) -> tuple[set[str], set[str]]:
    snapshot = last_good.select(docs)
    return {t.name for t in snapshot.resources.tunnels}, snapshot.stale


def test_a_newcomer_that_collides_loses_to_the_established_object() -> None:
    lg = LastGood()
    assert names(lg, [tunnel("zeta", 3000, 5000)]) == ({"zeta"}, set())
    # "alpha" comes first in any name order, and still is the one refused
    docs = [tunnel("alpha", 3000, 5001), tunnel("zeta", 3000, 5000)]
    snapshot = lg.select(docs)
    assert {t.name for t in snapshot.resources.tunnels} == {"zeta"}
    [problem] = [p for p in snapshot.problems if p.severity.value == "error"]
    assert (problem.name, problem.path, problem.reason) == ("alpha", "spec.tunnelID", "Conflict")


def test_among_newcomers_the_first_in_the_given_order_wins() -> None:
    docs = [tunnel("zeta", 3000, 5000), tunnel("alpha", 3000, 5001)]  # e.g. by creation time
    assert names(LastGood(), docs) == ({"zeta"}, set())


def test_an_invalid_edit_keeps_the_last_valid_version_until_the_object_goes() -> None:
    lg = LastGood()
    names(lg, [tunnel("a", 3000, 5000), tunnel("b", 3001, 5001)])
    edited = tunnel("b", 3000, 5001)  # now collides with a
    snapshot = lg.select([tunnel("a", 3000, 5000), edited])
    assert snapshot.stale == {"L2TPTunnel/b"}
    kept = {t.name: t.tunnel_id for t in snapshot.resources.tunnels}
    assert kept == {"a": 3000, "b": 3001}  # b runs on its last valid version
    broken = copy.deepcopy(edited.body)
    broken["spec"]["tunnelID"] = "not a number"  # invalid on its own
    assert names(lg, [tunnel("a", 3000, 5000), Document("test:b", broken)]) == (
        {"a", "b"},
        {"L2TPTunnel/b"},
    )
    assert names(lg, [tunnel("a", 3000, 5000)]) == ({"a"}, set())  # b deleted: gone
