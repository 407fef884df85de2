"""interface.ipv6AddrGenMode and interface.qdisc: defaults, set before up, drift, restart."""

from __future__ import annotations

from typing import Any

import pytest
from fakekernel import FakeKernel
from test_reconcile import from_objects, session, tunnel

from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import reconcile

NODE = "site-a"


def program(kernel: FakeKernel, owned: Owned, **iface: Any) -> list[str]:
    resources = from_objects([tunnel(), session(interfaceName="pw0", interface=iface)])
    kernel.writes.clear()
    result = reconcile(kernel, desired_state(resources, NODE), owned)
    assert result.converged, result.results
    return list(kernel.writes)


def test_bridge_port_gets_no_link_local_before_it_goes_up() -> None:
    kernel, owned = FakeKernel(), Owned()
    writes = program(kernel, owned, bridge={"name": "br0"})
    mode = writes.index("set_addr_gen_mode pw0 none")
    assert mode < writes.index("set_link pw0 up=True mtu=None")
    assert kernel.links["pw0"].addr_gen_mode == "none"
    assert program(kernel, owned, bridge={"name": "br0"}) == []  # converged: zero writes


def test_routed_session_keeps_the_kernels_mode_and_qdisc_as_ip_does() -> None:
    kernel, owned = FakeKernel(), Owned()
    writes = program(kernel, owned)
    assert not [w for w in writes if w.startswith(("set_addr_gen_mode", "set_qdisc"))]
    assert kernel.links["pw0"].addr_gen_mode == "eui64"


@pytest.mark.parametrize("kind", ["noqueue", "pfifo_fast", "fq_codel"])
def test_qdisc_set_before_up_then_stable(kind: str) -> None:
    kernel, owned = FakeKernel(), Owned()
    writes = program(kernel, owned, qdisc=kind, ipv6AddrGenMode="random")
    assert writes.index(f"set_qdisc pw0 {kind}") < writes.index("set_link pw0 up=True mtu=None")
    assert writes.index("set_addr_gen_mode pw0 random") < writes.index(
        "set_link pw0 up=True mtu=None"
    )
    assert program(kernel, owned, qdisc=kind, ipv6AddrGenMode="random") == []


def test_drift_of_mode_and_qdisc_is_repaired() -> None:
    kernel, owned = FakeKernel(), Owned()
    program(kernel, owned, bridge={"name": "br0"}, qdisc="noqueue")
    kernel.links["pw0"].addr_gen_mode = "eui64"  # as `ip link set pw0 addrgenmode eui64`
    kernel.links["pw0"].qdisc = "pfifo_fast"  # as `tc qdisc replace dev pw0 root pfifo_fast`
    writes = program(kernel, owned, bridge={"name": "br0"}, qdisc="noqueue")
    assert "set_addr_gen_mode pw0 none" in writes and "set_qdisc pw0 noqueue" in writes
    assert (kernel.links["pw0"].addr_gen_mode, kernel.links["pw0"].qdisc) == ("none", "noqueue")


def test_explicit_mode_on_a_bridge_port_wins() -> None:
    kernel, owned = FakeKernel(), Owned()
    program(kernel, owned, bridge={"name": "br0"}, ipv6AddrGenMode="eui64")
    assert kernel.links["pw0"].addr_gen_mode == "eui64"
