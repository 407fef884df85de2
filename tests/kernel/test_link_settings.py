"""interface.ipv6AddrGenMode and interface.qdisc on the real kernel: what the kernel reports
(its link dump, its qdisc dump, its addresses), traffic across, drift repaired, restarts idle.

Overlay addresses: 198.51.100.0/24; underlay: the two_sites veth (192.0.2.0/24).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from helpers import TwoSites, in_netns, ip, ip_json, link, run
from test_agent import converge, pair, pings

from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.netlink.kernel import Kernel


def root_qdisc(ns: str, ifname: str) -> str:
    """The root qdisc's kind from the kernel's qdisc dump (tc -j qdisc show)."""
    out = run(["tc", "-j", "qdisc", "show", "dev", ifname], netns=ns)
    qdiscs: list[dict[str, Any]] = json.loads(out)
    (root,) = [q for q in qdiscs if q.get("root")]
    return str(root["kind"])


def link_local(ns: str, ifname: str) -> list[str]:
    """The IPv6 link-local addresses the kernel has on ``ifname``."""
    return [
        a["local"]
        for entry in ip_json(ns, "-6", "addr", "show", "dev", ifname)
        for a in entry.get("addr_info", [])
        if a.get("scope") == "link"
    ]


def observed(ns: str, ifname: str) -> tuple[str | None, str | None]:
    """(addr_gen_mode, qdisc) as the agent's own link dump reads them."""
    with in_netns(ns), Kernel() as kernel:
        (have,) = [lnk for lnk in kernel.dump_links() if lnk.ifname == ifname]
    return have.addr_gen_mode, have.qdisc


def default_qdisc() -> str:
    with open("/proc/sys/net/core/default_qdisc") as f:
        return f.read().strip()


def test_bridge_port_has_no_link_local_and_routed_keeps_the_kernels(
    two_sites: TwoSites,
) -> None:
    res = pair(
        two_sites.a4,
        two_sites.b4,
        session_spec={"interface": {"bridge": {"name": "br9"}}},
        overlay=None,
    )
    # site a: bridge port (default none); site b: its mirror has the same bridge: make b routed.
    converge(two_sites.a, res, "a")
    assert link(two_sites.a, "pw0")["inet6_addr_gen_mode"] == "none"
    assert link_local(two_sites.a, "pw0") == []
    assert observed(two_sites.a, "pw0")[0] == "none"
    routed = pair(two_sites.a4, two_sites.b4)
    converge(two_sites.b, routed, "b")
    assert link(two_sites.b, "pw0")["inet6_addr_gen_mode"] == "eui64"  # as ip leaves it
    assert root_qdisc(two_sites.b, "pw0") == default_qdisc()  # untouched: the kernel's
    # ip's own device gets an IPv6 link-local address (after DAD, it shows at once as tentative)
    assert [a for a in link_local(two_sites.b, "pw0") if a.startswith("fe80:")]


@pytest.mark.parametrize("kind", ["noqueue", "pfifo_fast", "fq_codel"])
def test_qdisc_and_mode_applied_traffic_flows_restart_idle(two_sites: TwoSites, kind: str) -> None:
    spec = {"interface": {"qdisc": kind, "ipv6AddrGenMode": "none"}}
    res = pair(two_sites.a4, two_sites.b4, session_spec=spec)
    owned = Owned()
    assert converge(two_sites.a, res, "a", owned).converged
    assert converge(two_sites.b, res, "b").converged
    for ns in (two_sites.a, two_sites.b):
        assert root_qdisc(ns, "pw0") == kind
        assert link(ns, "pw0")["inet6_addr_gen_mode"] == "none"
        assert link_local(ns, "pw0") == []
        assert observed(ns, "pw0") == ("none", kind)
    assert pings(two_sites.a, "198.51.100.2")
    again = converge(two_sites.a, res, "a", owned)
    assert again.converged and again.writes == 0, again.results


def test_drift_of_mode_and_qdisc_is_repaired(two_sites: TwoSites) -> None:
    spec = {"interface": {"qdisc": "noqueue", "bridge": {"name": "br9"}}}
    res = pair(two_sites.a4, two_sites.b4, session_spec=spec, overlay=None)
    owned = Owned()
    desired = desired_state(res, "a")
    with in_netns(two_sites.a), Kernel() as kernel:
        assert reconcile(kernel, desired, owned).converged
    ip(two_sites.a, "link", "set", "dev", "pw0", "addrgenmode", "eui64")
    run(["tc", "qdisc", "replace", "dev", "pw0", "root", "pfifo_fast"], netns=two_sites.a)
    assert observed(two_sites.a, "pw0") == ("eui64", "pfifo_fast")
    with in_netns(two_sites.a), Kernel() as kernel:
        repaired = reconcile(kernel, desired, owned)
        assert repaired.converged and repaired.writes > 0
        assert reconcile(kernel, desired, owned).writes == 0
    assert link(two_sites.a, "pw0")["inet6_addr_gen_mode"] == "none"
    assert root_qdisc(two_sites.a, "pw0") == "noqueue"
