"""The far end from `render --peer --profile`, run by real software against the agent's end.

Site a is programmed by the agent's reconcile from the manifests; site b is what the ``linux``
profile printed, applied by ``ip``. Pings both ways prove the two ends mirror each other.
(systemd-networkd as the far end was tried and did not create the tunnel in the guest yet:
see README, far end.)
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from helpers import NetnsFactory, TwoSites, build_two_sites, in_netns, ip_batch

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.profiles import Rendered, render_far_end
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.netlink.kernel import Kernel

API = "kubel2tp.io/v1alpha1"


def ours(local: str, remote: str, t_spec: dict[str, Any], s_spec: dict[str, Any]) -> Resources:
    """Site a's tunnel and session, as a user writes them; the far end is not in the set."""
    t = {
        "nodeName": "a",
        "tunnelID": 3000,
        "peerTunnelID": 4000,
        "local": local,
        "remote": remote,
        "udp": {"sourcePort": 5000, "destinationPort": 6000},
        **t_spec,
    }
    if t.get("encapsulation") == "ip":
        t.pop("udp")
    s = {
        "tunnelRef": "t-a",
        "sessionID": 1000,
        "peerSessionID": 2000,
        "interfaceName": "pw0",
        "interface": {"addresses": [{"address": "198.51.100.1", "peer": "198.51.100.2"}]},
        **s_spec,
    }
    docs = [
        manifests.Document("a#1", {"apiVersion": API, "kind": "L2TPTunnel",
                                   "metadata": {"name": "t-a"}, "spec": t}),
        manifests.Document("a#2", {"apiVersion": API, "kind": "L2TPSession",
                                   "metadata": {"name": "s-a"}, "spec": s}),
    ]  # fmt: skip
    report = validation.check_documents(docs)
    assert not report.errors, [p.render() for p in report.errors]
    return report.resources


def program_a(sites: TwoSites, res: Resources) -> None:
    with in_netns(sites.a), Kernel() as kernel:
        result = reconcile(kernel, desired_state(res, "a"), Owned())
    assert result.converged, result.results


def pings(ns: str, addr: str, count: int = 3) -> bool:
    argv = ["ip", "netns", "exec", ns, "ping", "-c", str(count), "-W", "2", "-i", "0.2", addr]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


VARIANTS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "seed-udp4": ("192.0.2.1", "192.0.2.2", {}, {}),
    # a sends zero UDP checksums and requires them back: the far end must accept zero ones
    # and send real ones (render --peer swaps tx and rx; unswapped, b drops everything)
    "udp6-asymmetric-checksums": (
        "2001:db8::1",
        "2001:db8::2",
        {"udp": {"sourcePort": 5000, "destinationPort": 6000, "ipv6ChecksumTx": False}},
        {"cookie": "014d3636deadbeef", "peerCookie": "0badc0de"},
    ),
    "ip6-cookies-seq": (
        "2001:db8::1",
        "2001:db8::2",
        {"encapsulation": "ip"},
        {"cookie": "014d3636", "peerCookie": "0badc0de00c0ffee", "sequencing": "both"},
    ),
    "ip4-l2spec-none": ("192.0.2.1", "192.0.2.2", {"encapsulation": "ip"}, {"l2specType": "none"}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_linux_profile_applied_by_ip_is_the_far_end_of_the_agent(
    netns: NetnsFactory, variant: str
) -> None:
    local, remote, t_spec, s_spec = VARIANTS[variant]
    sites = build_two_sites(netns)
    res = ours(local, remote, t_spec, s_spec)
    program_a(sites, res)
    result = render_far_end(res, "linux")
    assert isinstance(result, Rendered)
    (out,) = result.outputs
    ip_batch(sites.b, [c.removeprefix("ip ") for c in out.text.splitlines() if c.startswith("ip ")])
    assert pings(sites.a, "198.51.100.2")
    assert pings(sites.b, "198.51.100.1")
