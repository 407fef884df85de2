"""Per-node finalizer names and metav1.Condition helpers (pure; no API server)."""

from __future__ import annotations

import re

from kube_l2tp.api.reasons import Reason
from kube_l2tp.k8s import conditions
from kube_l2tp.k8s.finalizers import PREFIX, is_node_finalizer, node_finalizer, stale

QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


def test_short_node_name_is_kept_verbatim() -> None:
    assert node_finalizer("node-a") == "l2tp.kubel2tp.io/node-a"


def test_long_node_name_is_hashed_stably_and_valid() -> None:
    node = "ip-10-0-0-1." + "a" * 70 + ".compute.internal"
    name = node_finalizer(node)
    assert name == node_finalizer(node)
    assert name != node_finalizer(node + "x")
    part = name.removeprefix(PREFIX)
    assert len(part) <= 63 and QUALIFIED_NAME.match(part)
    assert part.startswith("ip-10-0-0-1.")


def test_stale_names_only_our_finalizers_of_absent_nodes() -> None:
    fins = [node_finalizer("a"), node_finalizer("b"), "kopf.zalando.org/KopfFinalizerMarker"]
    assert stale(fins, ["a"]) == [node_finalizer("b")]
    assert is_node_finalizer(fins[0]) and not is_node_finalizer(fins[2])


def test_conditions_ready_and_merge_keeps_transition_time() -> None:
    old = conditions.condition("Ready", "True", Reason.PROGRAMMED, last_transition_time="T0")
    assert conditions.is_true({"conditions": [old]})
    assert not conditions.is_true(None)
    assert not conditions.is_true({"conditions": "junk"})
    same = conditions.merge(
        [old], conditions.condition("Ready", "True", Reason.PROGRAMMED, "again")
    )
    assert same[0]["lastTransitionTime"] == "T0" and same[0]["message"] == "again"
    flipped = conditions.merge([old], conditions.condition("Ready", "False", Reason.KERNEL_ERROR))
    assert flipped[0]["lastTransitionTime"] != "T0"
    other = conditions.merge([old], conditions.condition("PeerActive", "False", Reason.PEER_SILENT))
    assert [c["type"] for c in other] == ["Ready", "PeerActive"]
