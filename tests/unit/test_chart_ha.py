# ruff: noqa: F401, F811  (the fixtures helm and render come from test_chart)
"""The operator's replicas in the chart: leader election's Lease and its Role, the
PodDisruptionBudget, anti-affinity and the update strategy, per values (helm template, parsed).

What the Lease does on a real API server with two operator processes: tests/realapi/test_ha.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_chart import CHART, Helm, Render, _component, _container, helm, render

from kube_l2tp.cli import build_parser
from kube_l2tp.controller.app import LeaderElection
from kube_l2tp.k8s.lease import Timing

OPERATOR = "l2-kube-l2tp-operator"  # the fullname test_chart renders with, + "-operator"
HA = ("default", "--set", "operator.replicas=3", "--set", "operator.webhookTLS.secretName=tls")


def _deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = _component(docs, "Deployment", "operator")
    return deployment


def _grants(role: dict[str, Any]) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {
        (g, r, v, tuple(rule.get("resourceNames", ())))
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


@pytest.mark.parametrize("scenario", ["default", "ha"])
def test_operator_args_elect_through_the_lease_the_role_grants(
    render: Render, scenario: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment's command line, parsed by the CLI, names the Lease the Role grants."""
    from kube_l2tp import cli

    docs = render(scenario)
    container = _container(_deployment(docs))
    parsed = build_parser().parse_args(container["args"])
    monkeypatch.setenv("POD_NAMESPACE", "kube-l2tp")
    monkeypatch.setenv("POD_NAME", "op-1")
    election = cli._leader_election(parsed)
    assert isinstance(election, LeaderElection)
    assert (election.namespace, election.name, election.identity) == ("kube-l2tp", OPERATOR, "op-1")
    expected = Timing(8, 5, 1) if scenario == "ha" else Timing(15, 10, 2)
    assert election.timing == expected
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}) for e in container["env"]}
    assert env["POD_NAME"] == {"fieldPath": "metadata.name"}
    assert env["POD_NAMESPACE"] == {"fieldPath": "metadata.namespace"}
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"] == role["metadata"] | {"name": OPERATOR, "namespace": "kube-l2tp"}
    lease = ("coordination.k8s.io", "leases")
    assert _grants(role) == {
        (*lease, "create", ()),
        *((*lease, v, (OPERATOR,)) for v in ("get", "update")),
    }
    (binding,) = [d for d in docs if d["kind"] == "RoleBinding"]
    assert binding["roleRef"]["name"] == OPERATOR
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": OPERATOR, "namespace": "kube-l2tp"}
    ]


def test_leader_election_off_has_no_role_and_no_lease_args(render: Render) -> None:
    docs = render("default", "--set", "operator.leaderElection.enabled=false")
    parsed = build_parser().parse_args(_container(_deployment(docs))["args"])
    assert parsed.leader_election is None
    assert not [d for d in docs if d["kind"] in ("Role", "RoleBinding")]


def test_one_replica_recreates_and_has_no_budget(render: Render) -> None:
    docs = render("default")
    spec = _deployment(docs)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    assert "affinity" not in spec["template"]["spec"]
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize("extra", [(), ("--set", "operator.podDisruptionBudget.minAvailable=50%")])
def test_replicas_get_a_budget_spread_and_a_rolling_update(
    render: Render, extra: tuple[str, ...]
) -> None:
    docs = render(*HA, *extra)
    deployment = _deployment(docs)
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    pod_labels = spec["template"]["metadata"]["labels"]
    (term,) = spec["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    selector = term["podAffinityTerm"]["labelSelector"]["matchLabels"]
    assert selector == spec["selector"]["matchLabels"] and selector.items() <= pod_labels.items()
    (pdb,) = _component(docs, "PodDisruptionBudget", "operator")
    assert pdb["spec"]["minAvailable"] == (1 if not extra else "50%")
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    # the PDB selects the operator's pods only, never the agent's
    (agent,) = _component(docs, "DaemonSet", "agent")
    agent_labels = agent["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= agent_labels.items()


def test_a_users_affinity_replaces_the_default_spread(render: Render) -> None:
    docs = render("custom", "--set", "operator.replicas=2")
    affinity = _deployment(docs)["spec"]["template"]["spec"]["affinity"]
    assert set(affinity) == {"nodeAffinity"}


def test_the_budget_can_be_turned_off(render: Render) -> None:
    docs = render(*HA, "--set", "operator.podDisruptionBudget.enabled=false")
    assert not [d for d in docs if d["kind"] == "PodDisruptionBudget"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (
            ["--set", "operator.replicas=2"],
            "operator.replicas > 1 needs operator.webhookTLS.secretName",
        ),
        (
            [*HA[1:], "--set", "operator.leaderElection.enabled=false"],
            "operator.replicas > 1 needs operator.leaderElection.enabled=true",
        ),
        (
            ["--set", "operator.leaderElection.renewDeadline=20"],
            "renewDeadline must be below leaseDuration",
        ),
        (
            ["--set", "operator.leaderElection.retryPeriod=10"],
            "retryPeriod must be below renewDeadline",
        ),
        (["--set", "operator.podDisruptionBudget.minAvailable=0"], "minAvailable"),
    ],
)
def test_values_that_cannot_work_are_refused_with_the_key(
    helm: Helm, args: list[str], said: str
) -> None:
    proc = helm("template", "l2", CHART, *args)
    assert proc.returncode != 0
    assert said in proc.stderr, proc.stderr
