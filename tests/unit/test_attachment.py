"""Pods on the wire without a cluster: the podNetwork field's validation (schema, CEL and the
offline rules) and the NetworkAttachmentDefinition built from it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from corpus.hostile.cases import session, tunnel
from fakekernel import FakeKernel

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.cli import main
from kube_l2tp.core import attachment
from kube_l2tp.core.desired import Desired, Owned, desired_state
from kube_l2tp.core.reconcile import reconcile

NS, NAME = "default", "wire"


def pod_network(ipam_type: str = "none", **extra: Any) -> dict[str, Any]:
    ipam: dict[str, Any] = {"type": ipam_type}
    if "ranges" in extra:
        ipam["ranges"] = extra.pop("ranges")
    return {"namespace": NS, "name": NAME, "ipam": ipam, **extra}


def bridged(pods: dict[str, Any], **iface: Any) -> dict[str, Any]:
    return {"bridge": {"name": "br0", "podNetwork": pods}, **iface}


def check(*objs: dict[str, Any]) -> validation.Report:
    return validation.check_documents([manifests.Document(f"f#{i}", o) for i, o in enumerate(objs)])


def errors(*objs: dict[str, Any]) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in check(*objs).errors]


def valid(*objs: dict[str, Any]) -> Resources:
    report = check(*objs)
    assert not report.errors, [p.render() for p in report.errors]
    return report.resources


HOST_LOCAL = [
    {"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.50"}
]


# -- validation --------------------------------------------------------------------------------


def test_a_pod_network_on_the_session_bridge_and_on_a_vlan_bridge_is_valid() -> None:
    res = valid(
        tunnel(),
        session(
            interface={
                **bridged(pod_network("host-local", ranges=HOST_LOCAL, hairpinMode=True)),
                "vlans": [
                    {
                        "id": 5,
                        "bridge": {
                            "name": "brvlan5",
                            "podNetwork": {"namespace": "team", "name": "wire-vlan5"},
                        },
                    }
                ],
            }
        ),
    )
    (s,) = res.sessions
    assert s.interface.bridge is not None and s.interface.bridge.pod_network is not None
    pods = s.interface.bridge.pod_network
    assert (pods.namespace, pods.name, pods.ipam, pods.hairpin_mode) == (
        NS,
        NAME,
        "host-local",
        True,
    )
    assert pods.ranges[0].range_start == "203.0.113.10"
    vlan_bridge = s.interface.vlans[0].bridge
    assert vlan_bridge is not None and vlan_bridge.pod_network is not None
    assert vlan_bridge.pod_network.ipam == "none"  # the default


@pytest.mark.parametrize(
    ("interface", "path", "fragment"),
    [
        (
            {"podNetwork": pod_network()},
            "spec.interface.podNetwork",
            "unknown field",
        ),
        (
            {"bridge": {"podNetwork": pod_network()}},
            "spec.interface.bridge.name",
            "required field is missing",
        ),
        (
            bridged(pod_network("host-local")),
            "spec.interface.bridge.podNetwork.ipam.ranges",
            "ipam.ranges is required with ipam.type host-local",
        ),
        (
            bridged(pod_network("static", ranges=HOST_LOCAL)),
            "spec.interface.bridge.podNetwork.ipam.ranges",
            "applies to host-local and whereabouts only",
        ),
        (
            bridged(pod_network("dhcp")),
            "spec.interface.bridge.podNetwork.ipam.type",
            "",
        ),
        (
            bridged({"namespace": "Team_A", "name": NAME}),
            "spec.interface.bridge.podNetwork.namespace",
            "must be a DNS label",
        ),
        (
            bridged({"namespace": NS, "name": "wire/x"}),
            "spec.interface.bridge.podNetwork.name",
            "must be a DNS subdomain",
        ),
        (
            bridged(pod_network("host-local", ranges=[{"subnet": "203.0.113.0"}])),
            "spec.interface.bridge.podNetwork.ipam.ranges[0].subnet",
            "must be an IP network with a prefix length",
        ),
        (
            bridged(
                pod_network(
                    "whereabouts", ranges=[{"subnet": "203.0.113.0/24", "rangeEnd": "2001:db8::9"}]
                )
            ),
            "spec.interface.bridge.podNetwork.ipam.ranges[0].rangeEnd",
            "must be of the subnet's address family",
        ),
    ],
)
def test_the_schema_refuses_with_the_field_named(
    interface: dict[str, Any], path: str, fragment: str
) -> None:
    found = errors(tunnel(), session(interface=interface))
    assert any(p == path and fragment in m for p, m in found), found


@pytest.mark.parametrize(
    ("ranges", "addresses", "path", "fragment"),
    [
        (
            [{"subnet": "203.0.113.1/24"}],
            [],
            "ranges[0].subnet",
            "has host bits set: write 203.0.113.0/24",
        ),
        (
            [{"subnet": "203.0.113.0/25", "rangeStart": "203.0.113.200"}],
            [],
            "ranges[0].rangeStart",
            "203.0.113.200 is outside the subnet 203.0.113.0/25",
        ),
        (
            [{"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.60", "rangeEnd": "203.0.113.6"}],
            [],
            "ranges[0].rangeEnd",
            "comes before rangeStart",
        ),
        (
            HOST_LOCAL,
            [{"address": "203.0.113.20/24"}],
            "ranges[0]",
            "hands out 203.0.113.20, the session's own address (spec.interface.addresses[0]"
            ".address)",
        ),
        (
            [{"subnet": "2001:db8:5::/64"}],
            [{"address": "2001:db8:5::1/64"}, {"address": "203.0.113.1", "peer": "203.0.113.2"}],
            "ranges[0]",
            "hands out 2001:db8:5::1",
        ),
        (
            [{"subnet": "203.0.113.0/24"}],
            [{"address": "198.51.100.1", "peer": "203.0.113.2"}],
            "ranges[0]",
            "the session's own address (spec.interface.addresses[0].peer)",
        ),
        (
            [*HOST_LOCAL, {"subnet": "203.0.113.0/26"}],
            [],
            "ranges[1]",
            "overlaps spec.interface.bridge.podNetwork.ipam.ranges[0]",
        ),
    ],
)
def test_ranges_refused_offline_with_the_field_named(
    ranges: list[dict[str, str]], addresses: list[dict[str, str]], path: str, fragment: str
) -> None:
    iface = bridged(pod_network("host-local", ranges=ranges), addresses=addresses)
    found = errors(tunnel(), session(interface=iface))
    full = f"spec.interface.bridge.podNetwork.ipam.{path}"
    assert any(p == full and fragment in m for p, m in found), found


def test_ranges_beside_the_session_addresses_and_of_both_families_are_valid() -> None:
    valid(
        tunnel(),
        session(
            interface=bridged(
                pod_network(
                    "host-local",
                    ranges=[
                        *HOST_LOCAL,
                        {"subnet": "2001:db8:5::/64", "rangeStart": "2001:db8:5::10"},
                    ],
                ),
                addresses=[{"address": "203.0.113.1/24"}, {"address": "2001:db8:5::1/64"}],
            )
        ),
    )


def test_one_nad_name_declared_twice_is_a_conflict() -> None:
    report = check(
        tunnel(),
        session("s1", interface=bridged(pod_network())),
        session(
            "s2", sessionID=1001, interface={"bridge": {"name": "br1", "podNetwork": pod_network()}}
        ),
    )
    (problem,) = report.errors
    assert (problem.name, problem.path, problem.reason) == (
        "s2",
        "spec.interface.bridge.podNetwork.name",
        "Conflict",
    )
    assert "default/wire is already declared by L2TPSession/s1" in problem.message


# -- the NetworkAttachmentDefinition -----------------------------------------------------------


def nads(interface: dict[str, Any], uid: str | None = "u-1") -> tuple[dict[str, Any], ...]:
    res = valid(tunnel(), session(interface=interface))
    return attachment.network_attachment_definitions(res.sessions[0], res.tunnels[0], uid)


def config_of(nad: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(nad["spec"]["config"])
    return config


def test_nad_is_the_bridge_plugin_on_the_session_bridge_with_the_session_mtu() -> None:
    (nad,) = nads(bridged(pod_network("host-local", ranges=HOST_LOCAL)))
    assert nad["apiVersion"] == "k8s.cni.cncf.io/v1"
    assert nad["kind"] == "NetworkAttachmentDefinition"
    meta = nad["metadata"]
    assert (meta["namespace"], meta["name"]) == (NS, NAME)
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "kube-l2tp",
        "kubel2tp.io/session": "s1",
        "kubel2tp.io/node": "node-a",
    }
    assert meta["annotations"] == {
        "kubel2tp.io/session": "s1",
        "kubel2tp.io/node": "node-a",
        "kubel2tp.io/bridge": "br0",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "kubel2tp.io/v1alpha1",
            "kind": "L2TPSession",
            "name": "s1",
            "uid": "u-1",
            "controller": True,
        }
    ]
    assert config_of(nad) == {
        "cniVersion": "1.0.0",
        "name": NAME,
        "type": "bridge",
        "bridge": "br0",
        "isGateway": False,
        "isDefaultGateway": False,
        "ipMasq": False,
        "hairpinMode": False,
        "mtu": 1446,  # UDP over IPv4, no cookie, 1500-byte underlay: what the kernel computes
        "ipam": {
            "type": "host-local",
            "ranges": [
                [
                    {
                        "subnet": "203.0.113.0/24",
                        "rangeStart": "203.0.113.10",
                        "rangeEnd": "203.0.113.50",
                    }
                ]
            ],
        },
    }


def test_mtu_follows_the_session_declared_or_computed() -> None:
    (declared,) = nads(bridged(pod_network(), mtu=1400))
    assert config_of(declared)["mtu"] == 1400
    res = valid(
        tunnel(local="2001:db8::1", remote="2001:db8::2"),
        session(
            cookie="014d3636deadbeef",
            peerCookie="014d3636deadbeef",
            interface=bridged(pod_network()),
        ),
    )
    (nad,) = attachment.network_attachment_definitions(res.sessions[0], res.tunnels[0])
    assert (
        config_of(nad)["mtu"] == res.sessions[0].kernel_mtu(res.tunnels[0]) == 1418
    )  # 1446 - 20 (IPv6) - 8 (cookie)
    assert "ownerReferences" not in nad["metadata"]  # no uid offline


def test_ipam_of_each_type() -> None:
    (none,) = nads(bridged(pod_network("none", hairpinMode=True)))
    assert config_of(none)["ipam"] == {} and config_of(none)["hairpinMode"] is True
    (static,) = nads(bridged(pod_network("static")))
    assert config_of(static)["ipam"] == {"type": "static"}
    assert config_of(static)["capabilities"] == {"ips": True}
    (one,) = nads(bridged(pod_network("whereabouts", ranges=HOST_LOCAL)))
    assert config_of(one)["ipam"] == {
        "type": "whereabouts",
        "range": "203.0.113.0/24",
        "range_start": "203.0.113.10",
        "range_end": "203.0.113.50",
    }
    dual = [{"subnet": "203.0.113.0/24"}, {"subnet": "2001:db8:5::/64"}]
    (two,) = nads(bridged(pod_network("whereabouts", ranges=dual)))
    assert config_of(two)["ipam"] == {
        "type": "whereabouts",
        "ipRanges": [{"range": "203.0.113.0/24"}, {"range": "2001:db8:5::/64"}],
    }
    (hl,) = nads(bridged(pod_network("host-local", ranges=dual)))
    assert config_of(hl)["ipam"]["ranges"] == [
        [{"subnet": "203.0.113.0/24"}],
        [{"subnet": "2001:db8:5::/64"}],
    ]


def test_a_vlan_bridge_gets_its_own_nad_and_unoffered_bridges_none() -> None:
    iface = {
        "mtu": 1446,
        "bridge": {"name": "br0"},
        "vlans": [
            {"id": 5, "bridge": {"name": "brvlan5", "podNetwork": pod_network()}},
            {"id": 6, "bridge": {"name": "brvlan6"}},
        ],
    }
    (nad,) = nads(iface)
    assert config_of(nad)["bridge"] == "brvlan5" and config_of(nad)["mtu"] == 1446
    assert nads({"bridge": {"name": "br0"}}) == ()
    assert nads({}) == ()


def test_long_names_stay_out_of_labels_but_in_annotations() -> None:
    long_name = "s" * 64
    res = valid(tunnel(), session(long_name, interface=bridged(pod_network())))
    (nad,) = attachment.network_attachment_definitions(res.sessions[0], res.tunnels[0])
    assert "kubel2tp.io/session" not in nad["metadata"]["labels"]
    assert nad["metadata"]["annotations"]["kubel2tp.io/session"] == long_name


def test_render_network_attachments_prints_what_kubectl_applies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "wire.yaml"
    iface = bridged(pod_network("host-local", ranges=HOST_LOCAL), mtu=1446)
    path.write_text(yaml.safe_dump_all([tunnel(), session(interface=iface)]))
    assert main(["render", "--network-attachments", "-f", str(path)]) == 0
    (nad,) = yaml.safe_load_all(capsys.readouterr().out)
    res = valid(tunnel(), session(interface=iface))
    assert [nad] == list(attachment.network_attachment_definitions(res.sessions[0], res.tunnels[0]))
    assert main(["render", "--network-attachments", "--node", "node-b", "-f", str(path)]) == 1
    assert "no bridge is offered to pods" in capsys.readouterr().err


# -- the agent and the plugin's ports (in-memory kernel) ---------------------------------------


def test_the_agent_never_touches_the_plugins_ports() -> None:
    """A pod's veth in the session's bridge: a restart and in-place changes (MTU, a host port
    added then released) write nothing to it; only the agent's own links change."""

    def desired(**iface: Any) -> Desired:
        res = valid(tunnel(nodeName="site-a"), session(interfaceName="pw0", interface=iface))
        return desired_state(res, "site-a")

    kernel, owned = FakeKernel(), Owned()
    saved: list[str] = []
    first = reconcile(
        kernel, desired(**bridged(pod_network())), owned, save=lambda o: saved.append(o.to_json())
    )
    assert first.converged, first.results
    veth = kernel._add_link("veth1234", "veth", master="br0", up=True, mtu=1446)
    kernel.writes.clear()
    restarted = reconcile(kernel, desired(**bridged(pod_network())), Owned.from_json(saved[-1]))
    assert restarted.converged and kernel.writes == []
    changes = [
        bridged(pod_network(), mtu=1400),
        {"bridge": {"name": "br0", "ports": ["eth0"], "podNetwork": pod_network()}},
        bridged(pod_network()),
    ]
    for iface in changes:
        assert reconcile(kernel, desired(**iface), owned).converged
    assert kernel.writes and not [w for w in kernel.writes if "veth1234" in w], kernel.writes
    assert (veth.master, veth.up, veth.mtu) == ("br0", True, 1446)
    assert kernel.links["eth0"].master is None  # the host port the agent added: released
