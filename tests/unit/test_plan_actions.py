"""Plan actions are typed: what a write makes the agent's follows from its fields (a host port
from SetMaster.host_port), never from its ``why`` text, and a failed write gives it back."""

from __future__ import annotations

from fakekernel import FakeKernel
from test_reconcile import from_objects, session, tunnel

from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.plan import CreateBridge, CreateSession, Plan, SetMaster, make_plan
from kube_l2tp.core.reconcile import Failure, apply, observe
from kube_l2tp.core.state import SessionConfig


def run(plan: Plan, kernel: FakeKernel, owned: Owned) -> set[str]:
    """Applies the plan; returns the subjects whose write failed (for good or to retry)."""
    failures: dict[str, Failure] = {}
    _, retry = apply(kernel, plan, owned, lambda _: None, failures, set())
    return set(failures) | set(retry)


def test_a_host_port_is_owned_because_the_action_says_so_not_by_its_words() -> None:
    kernel, owned = FakeKernel(), Owned()
    kernel.create_bridge("br0")
    worded = SetMaster(subject="s", why="host port into br0", ifname="eth0", master="br0")
    typed = SetMaster(subject="s", why="attach", ifname="eth1", master="br0", host_port=True)
    assert not run(Plan(actions=[worded, typed]), kernel, owned)
    assert kernel.links["eth0"].master == kernel.links["eth1"].master == "br0"
    assert owned.ports == {"eth1": "br0"}


def test_a_failed_write_gives_back_what_it_recorded() -> None:
    kernel, owned = FakeKernel(), Owned(ports={"eth1": "br9"})
    actions = [
        SetMaster(subject="s", why="", ifname="eth1", master="nobridge", host_port=True),
        CreateSession(subject="t", why="", config=SessionConfig(1, 2, 3, ifname="x0")),
        CreateBridge(subject="b", why="", ifname="eth0"),  # the name is taken: EEXIST
    ]
    assert run(Plan(actions=actions), kernel, owned) == {"s", "t", "b"}
    assert owned.ports == {"eth1": "br9"} and not owned.sessions and not owned.bridges
    assert not owned.seq and not owned.l2spec


def test_the_plan_marks_declared_bridge_ports_as_host_ports() -> None:
    kernel = FakeKernel()
    bridged = session(interface={"bridge": {"name": "br0", "ports": ["eth1"]}})
    desired = desired_state(from_objects([tunnel(), bridged]), "site-a")
    owned = Owned(tunnels={3000})
    kernel.create_tunnel(desired.tunnels[3000].config)
    kernel.create_session(desired.sessions[(3000, 1000)].config)
    owned.sessions.add((3000, 1000))
    kernel.create_bridge("br0")
    owned.bridges.add("br0")
    plan = make_plan(desired, observe(kernel, owned), owned)
    masters = {a.ifname: a.host_port for a in plan.actions if isinstance(a, SetMaster)}
    device = desired.sessions[(3000, 1000)].config.ifname or "l2tpeth0"
    assert masters == {"eth1": True, device: False}
