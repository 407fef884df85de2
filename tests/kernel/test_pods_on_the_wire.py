"""Pods on the wire: the NetworkAttachmentDefinition's CNI config, run by the real reference
``bridge`` and ``host-local`` plugins (Debian's containernetworking-plugins) exactly as Multus
runs a delegate, against the bridge the agent programs for a pseudowire.

Site a's session is bridged into br0, offered to pods; site b's session carries 203.0.113.2 on
its own interface. A "pod" is a network namespace; the plugin runs in site a's namespace (the
node's), as Multus runs it in the host's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from helpers import NetnsFactory, TwoSites, in_netns, ip, ip_json

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.core import attachment
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import Result, reconcile
from kube_l2tp.netlink.kernel import Kernel

CNI_PATH = Path("/usr/lib/cni")  # Debian 12's containernetworking-plugins
FAR = "203.0.113.2"  # site b's address on the segment
POD_RANGE = {"subnet": "203.0.113.0/24", "rangeStart": "203.0.113.10", "rangeEnd": "203.0.113.50"}


def _tunnel(name: str, node: str, local: str, remote: str, tid: int, peer: int, sport: int,
            dport: int) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "tunnelID": tid,
            "peerTunnelID": peer,
            "local": local,
            "remote": remote,
            "udp": {"sourcePort": sport, "destinationPort": dport},
        },
    }


def _session(
    name: str, tunnel: str, sid: int, peer: int, interface: dict[str, Any]
) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {
            "tunnelRef": tunnel,
            "sessionID": sid,
            "peerSessionID": peer,
            "interfaceName": "pw0",
            "interface": interface,
        },
    }


def resources(sites: TwoSites) -> Resources:
    pods = {
        "namespace": "default",
        "name": "wire",
        "ipam": {"type": "host-local", "ranges": [POD_RANGE]},
    }
    objs = [
        _tunnel("t-a", "a", sites.a4, sites.b4, 3000, 4000, 5000, 6000),
        _session("s-a", "t-a", 1000, 2000, {"bridge": {"name": "br0", "podNetwork": pods}}),
        _tunnel("t-b", "b", sites.b4, sites.a4, 4000, 3000, 6000, 5000),
        _session("s-b", "t-b", 2000, 1000, {"addresses": [{"address": f"{FAR}/24"}]}),
    ]
    report = validation.check_documents(
        [manifests.Document(f"m#{i}", o) for i, o in enumerate(objs)]
    )
    assert not report.errors, [p.render() for p in report.errors]
    return report.resources


def converge(ns: str, res: Resources, node: str, owned: Owned) -> Result:
    with in_netns(ns), Kernel() as kernel:
        result = reconcile(kernel, desired_state(res, node), owned)
    assert result.converged, result.results
    return result


@dataclass(frozen=True)
class Cni:
    """The bridge plugin as Multus calls a delegate: environment, config on stdin, in the
    node's namespace."""

    node_ns: str
    config: dict[str, Any]

    def __call__(self, command: str, pod_ns: str, container_id: str) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": f"/run/netns/{pod_ns}",
            "CNI_IFNAME": "net1",
            "CNI_PATH": str(CNI_PATH),
        }
        proc = subprocess.run(
            ["ip", "netns", "exec", self.node_ns, str(CNI_PATH / self.config["type"])],
            input=json.dumps(self.config),
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert proc.returncode == 0, (
            f"CNI {command} exited {proc.returncode}: {proc.stdout} {proc.stderr}"
        )
        return json.loads(proc.stdout) if proc.stdout.strip() else {}


@dataclass(frozen=True)
class Wire:
    sites: TwoSites
    res: Resources
    owned: dict[str, Owned]
    cni: Cni


@pytest.fixture
def wire(two_sites: TwoSites) -> Wire:
    for plugin in ("bridge", "host-local"):
        assert (CNI_PATH / plugin).is_file(), (
            f"{CNI_PATH / plugin} is missing: install Debian's containernetworking-plugins"
            " (make deps)"
        )
    res = resources(two_sites)
    owned = {"a": Owned(), "b": Owned()}
    converge(two_sites.a, res, "a", owned["a"])
    converge(two_sites.b, res, "b", owned["b"])
    (nad,) = attachment.network_attachment_definitions(res.sessions[0], res.tunnels[0])
    return Wire(two_sites, res, owned, Cni(two_sites.a, json.loads(nad["spec"]["config"])))


def host_end(result: dict[str, Any]) -> str:
    """The pod's veth on the node, from the plugin's result (which lists the bridge too)."""
    (name,) = [i["name"] for i in result["interfaces"] if "sandbox" not in i and i["name"] != "br0"]
    return str(name)


def links(ns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ip_json(ns, "-d", "link", "show")}


def ping(ns: str, addr: str, count: int, interval: str = "0.2") -> tuple[int, int]:
    """(sent, received) of ``count`` pings."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-i", interval, "-W", "2", addr],
        capture_output=True,
        text=True,
        check=False,
    )
    return _counts(proc.stdout)


def _counts(out: str) -> tuple[int, int]:
    found = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert found, out
    return int(found[1]), int(found[2])


def test_a_pod_pings_the_far_site_and_keeps_its_port_across_an_agent_restart(
    wire: Wire, netns: NetnsFactory
) -> None:
    site_a = wire.sites.a
    pod = netns("pod")
    result = wire.cni("ADD", pod, "pod-0001")
    (ip4,) = [i["address"] for i in result["ips"]]
    address = ip4.split("/")[0]
    assert 10 <= int(address.split(".")[-1]) <= 50, result  # from the declared range
    host_veth = host_end(result)
    have = links(site_a)
    assert have[host_veth]["master"] == "br0" and have["pw0"]["master"] == "br0"
    net1 = links(pod)["net1"]
    assert net1["mtu"] == 1446 == have["pw0"]["mtu"]  # the session's MTU, from the NAD
    assert ping(pod, FAR, 3) == (3, 3)
    # A foreign port in the same bridge (another plugin's, a human's): never the agent's either.
    ip(site_a, "link", "add", "other0", "type", "veth", "peer", "name", "other1")
    ip(site_a, "link", "set", "other0", "master", "br0")

    # The agent restarts (its record read back, a new reconcile) while the pod sends 100 pings.
    saved = wire.owned["a"].to_json()
    index = have[host_veth]["ifindex"]
    with subprocess.Popen(
        ["ip", "netns", "exec", pod, "ping", "-c", "100", "-i", "0.05", "-W", "1", FAR],
        stdout=subprocess.PIPE,
        text=True,
    ) as traffic:
        try:
            restarted = converge(site_a, wire.res, "a", Owned.from_json(saved))
            again = converge(site_a, wire.res, "a", Owned.from_json(saved))
        finally:
            out, _ = traffic.communicate(timeout=120)
    sent, received = _counts(out)
    print(f"pods-on-the-wire: agent restart under traffic: {sent} sent, {received} received")
    assert (sent, received) == (100, 100), out
    assert restarted.writes == 0 and again.writes == 0, (restarted.results, again.results)
    have = links(site_a)
    assert have[host_veth]["master"] == "br0" and have["other0"]["master"] == "br0"
    assert have[host_veth]["ifindex"] == index  # the same veth, never re-created

    # DEL removes the plugin's veth and nothing else: the bridge, the pseudowire port, the
    # foreign port stay, and the wire still carries (site a's own check: b reaches nothing
    # on a's side now, so look at the links).
    wire.cni("DEL", pod, "pod-0001")
    have = links(site_a)
    assert host_veth not in have and "net1" not in links(pod)
    assert have["pw0"]["master"] == "br0" and have["other0"]["master"] == "br0"
    assert "UP" in have["br0"]["flags"]
    # A second pod gets an address again and reaches the far site: the segment is intact.
    pod2 = netns("pod")
    wire.cni("ADD", pod2, "pod-0002")
    assert ping(pod2, FAR, 3) == (3, 3)
    wire.cni("DEL", pod2, "pod-0002")


def test_removing_the_session_under_a_pod_leaves_the_pod_its_interface(
    wire: Wire, netns: NetnsFactory
) -> None:
    """The README's promise: the agent deletes the bridge it owns with the session; the pod's
    veth, which it never owned, stays (detached) until the pod goes, and DEL still succeeds."""
    site_a = wire.sites.a
    pod = netns("pod")
    result = wire.cni("ADD", pod, "pod-0003")
    host_veth = host_end(result)
    assert ping(pod, FAR, 2) == (2, 2)
    others = Resources(wire.res.tunnels[1:2], wire.res.sessions[1:2])  # site a's objects gone
    converge(site_a, others, "a", wire.owned["a"])
    have = links(site_a)
    assert "br0" not in have and "pw0" not in have
    assert host_veth in have and "master" not in have[host_veth]
    assert "net1" in links(pod)
    assert ping(pod, FAR, 2)[1] == 0  # no segment any more
    wire.cni("DEL", pod, "pod-0003")
    assert host_veth not in links(site_a) and "net1" not in links(pod)


def test_static_ipam_takes_the_pod_address_from_the_runtime_config(
    wire: Wire, netns: NetnsFactory
) -> None:
    """ipam static: the NAD names no address; Multus passes the pod's annotation `ips` as
    runtimeConfig (the config's `ips` capability), and the static plugin assigns it."""
    bridge = wire.res.sessions[0].interface.bridge
    assert bridge is not None and bridge.pod_network is not None
    static = replace(bridge, pod_network=replace(bridge.pod_network, ipam="static", ranges=()))
    config = attachment.cni_config(static, 1446)
    assert config["capabilities"] == {"ips": True}
    config["runtimeConfig"] = {"ips": ["203.0.113.60/24"]}  # what Multus adds
    cni = Cni(wire.sites.a, config)
    pod = netns("pod")
    result = cni("ADD", pod, "pod-0004")
    assert [i["address"] for i in result["ips"]] == ["203.0.113.60/24"]
    (addr,) = [a for a in ip_json(pod, "addr", "show", "dev", "net1")[0]["addr_info"]
               if a["family"] == "inet"]  # fmt: skip
    assert (addr["local"], addr["prefixlen"]) == ("203.0.113.60", 24)
    assert ping(pod, FAR, 3) == (3, 3)
    cni("DEL", pod, "pod-0004")
    assert "net1" not in links(pod)
