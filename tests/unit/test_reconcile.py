"""Reconcile against the in-memory kernel: idempotence, ownership, drift, replacement, errors."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from fakekernel import FakeKernel

from kube_l2tp.api import manifests, validation
from kube_l2tp.api.model import Resources
from kube_l2tp.core.desired import Desired, Owned, desired_state
from kube_l2tp.core.plan import Observed, make_plan
from kube_l2tp.core.reconcile import forget_gone, reconcile
from kube_l2tp.core.state import (
    Address,
    ObservedLink,
    ObservedSession,
    SessionConfig,
    TunnelConfig,
)
from kube_l2tp.files import manifests as manifest_files

REPO = Path(__file__).parent.parent.parent
NODE = "site-a"


def load(*paths: str) -> Resources:
    report = validation.check_documents(manifest_files.load([REPO / p for p in paths]))
    assert not report.errors
    return report.resources


def from_objects(objects: list[dict[str, Any]]) -> Resources:
    docs = [manifests.Document(f"t#{i}", copy.deepcopy(o)) for i, o in enumerate(objects)]
    report = validation.check_documents(docs)
    assert not report.errors, [p.render() for p in report.errors]
    return report.resources


def seed_desired() -> Desired:
    return desired_state(load("examples/seed/site-a.yaml"), NODE)


def tunnel(name: str = "t1", tid: int = 3000, sport: int = 5000, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {
            "nodeName": NODE,
            "tunnelID": tid,
            "peerTunnelID": tid + 1000,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": sport, "destinationPort": 6000},
            **spec,
        },
    }


def session(name: str = "s1", ref: str = "t1", sid: int = 1000, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {"tunnelRef": ref, "sessionID": sid, "peerSessionID": sid + 1000, **spec},
    }


def test_seed_from_scratch_then_zero_writes() -> None:
    kernel, owned = FakeKernel(), Owned()
    result = reconcile(kernel, seed_desired(), owned)
    assert result.converged, result.results
    assert kernel.writes == [
        "create_tunnel 3000",
        "create_session 3000/1000",
        "set_link l2tpeth0 up=True mtu=1488",
        "add_address l2tpeth0 198.51.100.1/32",
    ]
    link = kernel.links["l2tpeth0"]
    assert link.up and link.mtu == 1488
    assert link.addresses == {Address("198.51.100.1/32", "198.51.100.2/32")}
    res = result.results["L2TPSession/site-a-1"]
    assert (res.interface, res.mtu, res.reason) == ("l2tpeth0", 1488, "Programmed")
    kernel.writes.clear()
    again = reconcile(kernel, seed_desired(), owned)
    assert again.converged and again.writes == 0 and kernel.writes == []


def test_restart_with_saved_state_makes_no_writes() -> None:
    kernel, owned = FakeKernel(), Owned()
    saved: list[str] = []
    reconcile(kernel, seed_desired(), owned, save=lambda o: saved.append(o.to_json()))
    kernel.writes.clear()
    restarted = Owned.from_json(saved[-1])
    result = reconcile(kernel, seed_desired(), restarted)
    assert result.converged and kernel.writes == []


def test_ownership_is_recorded_before_the_write() -> None:
    """A crash right after the kernel write must not leave our object looking foreign."""
    kernel, owned = FakeKernel(), Owned()
    saved: list[Owned] = []
    original = kernel.create_tunnel

    def create_and_crash(cfg: TunnelConfig) -> None:
        original(cfg)
        saved.append(Owned.from_json(saved_json[-1]))
        raise SystemExit("crash")

    saved_json: list[str] = []
    kernel.create_tunnel = create_and_crash  # type: ignore[method-assign]
    with contextlib.suppress(SystemExit):
        reconcile(kernel, seed_desired(), owned, save=lambda o: saved_json.append(o.to_json()))
    assert 3000 in saved[-1].tunnels
    kernel.create_tunnel = original  # type: ignore[method-assign]
    result = reconcile(kernel, seed_desired(), saved[-1])
    assert result.converged


def test_foreign_tunnel_is_reported_not_taken_over() -> None:
    kernel, owned = FakeKernel(), Owned()
    foreign = TunnelConfig(3000, 9, "udp", "192.0.2.1", "192.0.2.9", 7000, 7000)
    kernel.tunnels[3000] = foreign
    res = from_objects([tunnel(), session(), tunnel("t2", 3001, 5001), session("s2", "t2")])
    result = reconcile(kernel, desired_state(res, NODE), owned)
    assert result.results["L2TPTunnel/t1"].reason == "Conflict"
    assert result.results["L2TPSession/s1"].reason == "TunnelNotReady"
    assert result.results["L2TPTunnel/t2"].ready and result.results["L2TPSession/s2"].ready
    assert kernel.tunnels[3000] == foreign
    # removing everything deletes ours and leaves the foreign tunnel alone
    reconcile(kernel, desired_state(Resources(), NODE), owned)
    assert list(kernel.tunnels) == [3000] and not kernel.sessions


def test_removal_relies_on_the_cascade() -> None:
    kernel, owned = FakeKernel(), Owned()
    res = from_objects([tunnel(), *(session(f"s{i}", sid=1000 + i) for i in range(5))])
    reconcile(kernel, desired_state(res, NODE), owned)
    kernel.writes.clear()
    result = reconcile(kernel, desired_state(Resources(), NODE), owned)
    assert kernel.writes == ["delete_tunnel 3000"]
    assert not kernel.sessions and not any(n.startswith("l2tpeth") for n in kernel.links)
    assert result.converged and owned.to_json() == Owned().to_json()


def test_drift_is_repaired_and_foreign_addresses_kept() -> None:
    kernel, owned = FakeKernel(), Owned()
    reconcile(kernel, seed_desired(), owned)
    link = kernel.links["l2tpeth0"]
    link.mtu, link.up = 1400, False
    link.addresses = {Address("203.0.113.7/32")}  # someone else's address on our link
    kernel.writes.clear()
    result = reconcile(kernel, seed_desired(), owned)
    assert result.converged
    assert kernel.links["l2tpeth0"].mtu == 1488 and kernel.links["l2tpeth0"].up
    assert Address("203.0.113.7/32") in kernel.links["l2tpeth0"].addresses
    assert not any("del_address" in w for w in kernel.writes)
    # a session deleted by hand comes back; so does a whole tunnel
    kernel.delete_session(3000, 1000)
    assert reconcile(kernel, seed_desired(), owned).converged
    kernel.delete_tunnel(3000)
    assert reconcile(kernel, seed_desired(), owned).converged
    assert kernel.links["l2tpeth0"].addresses == {Address("198.51.100.1/32", "198.51.100.2/32")}


def test_immutable_changes_replace_and_seq_modifies_in_place() -> None:
    kernel, owned = FakeKernel(), Owned()
    reconcile(kernel, desired_state(from_objects([tunnel(), session()]), NODE), owned)
    kernel.writes.clear()
    res = from_objects([tunnel(), session(cookie="014d3636", sequencing="both")])
    result = reconcile(kernel, desired_state(res, NODE), owned)
    assert result.converged
    assert kernel.writes[:2] == ["delete_session 3000/1000", "create_session 3000/1000"]
    assert kernel.sessions[(3000, 1000)].cookie == bytes.fromhex("014d3636")
    kernel.writes.clear()
    res = from_objects([tunnel(), session(cookie="014d3636", sequencing="recv")])
    assert reconcile(kernel, desired_state(res, NODE), owned).converged
    assert kernel.writes == ["modify_session 3000/1000"]
    # a port change replaces the tunnel, and its session comes back in it
    kernel.writes.clear()
    res = from_objects([tunnel(sport=5005), session(cookie="014d3636", sequencing="recv")])
    assert reconcile(kernel, desired_state(res, NODE), owned).converged
    assert kernel.writes[:2] == ["delete_tunnel 3000", "create_tunnel 3000"]
    assert kernel.tunnels[3000].udp_sport == 5005 and (3000, 1000) in kernel.sessions


def test_kernel_turning_send_seq_on_is_not_drift() -> None:
    kernel, owned = FakeKernel(), Owned()
    reconcile(kernel, seed_desired(), owned)
    kernel.peer_sends_seq = True
    kernel.writes.clear()
    assert reconcile(kernel, seed_desired(), owned).converged and kernel.writes == []


def test_one_bad_tunnel_does_not_block_the_others() -> None:
    kernel, owned = FakeKernel(), Owned()
    res = from_objects(
        [
            tunnel("bad", 1, 5001, local="192.0.2.77"),
            session("s-bad", "bad"),
            tunnel(),
            session(),
        ]
    )
    result = reconcile(kernel, desired_state(res, NODE), owned)
    bad = result.results["L2TPTunnel/bad"]
    assert not bad.ready and bad.reason == "KernelError" and "AddressNotAvailable" in bad.message
    assert result.results["L2TPSession/s-bad"].reason == "TunnelNotReady"
    assert result.results["L2TPTunnel/t1"].ready and result.results["L2TPSession/s1"].ready
    assert 1 not in owned.tunnels


def test_bridge_and_vlan_examples_and_their_removal() -> None:
    kernel, owned = FakeKernel(), Owned()
    kernel._add_link("eth1.5", "vlan", vlan_id=5, parent="eth1")
    kernel.links["br-host"] = kernel._add_link("br-host", "bridge")
    res = from_objects(
        [
            tunnel(),
            session(interfaceName="pw0", interface={"bridge": {"name": "br0", "ports": ["eth0"]}}),
            session(
                "s2",
                sid=1001,
                interfaceName="pw1",
                interface={
                    "vlans": [{"id": 5, "bridge": {"name": "brvlan5", "ports": ["eth1.5"]}}]
                },
            ),
        ]
    )
    result = reconcile(kernel, desired_state(res, NODE), owned)
    assert result.converged, result.results
    assert result.rounds == 1  # named interfaces are planned in the same round as their session
    links = kernel.links
    assert links["pw0"].master == "br0" and links["eth0"].master == "br0" and links["br0"].up
    assert links["pw1.5"].parent == "pw1" and links["pw1.5"].master == "brvlan5"
    assert links["eth1.5"].master == "brvlan5"
    kernel.writes.clear()
    assert reconcile(kernel, desired_state(res, NODE), owned).writes == 0
    reconcile(kernel, desired_state(Resources(), NODE), owned)
    assert "br0" not in links and "brvlan5" not in links and "pw1.5" not in links
    assert links["eth0"].master is None and links["eth1.5"].master is None
    assert "br-host" in links


def test_host_port_in_a_foreign_bridge_is_a_conflict() -> None:
    kernel, owned = FakeKernel(), Owned()
    kernel._add_link("br-host", "bridge")
    kernel.links["eth0"].master = "br-host"
    res = from_objects(
        [tunnel(), session(interface={"bridge": {"name": "br0", "ports": ["eth0"]}})]
    )
    result = reconcile(kernel, desired_state(res, NODE), owned)
    assert result.results["L2TPSession/s1"].reason == "Conflict"
    assert kernel.links["eth0"].master == "br-host"


def test_taken_interface_name_is_a_conflict() -> None:
    kernel, owned = FakeKernel(), Owned()
    kernel._add_link("pw0", "dummy")
    res = from_objects([tunnel(), session(interfaceName="pw0")])
    result = reconcile(kernel, desired_state(res, NODE), owned)
    assert result.results["L2TPSession/s1"].reason == "Conflict"
    assert result.results["L2TPTunnel/t1"].ready


def test_offsets_are_reported_as_ignored() -> None:
    res = from_objects([tunnel(), session(offset=4)])
    result = reconcile(FakeKernel(), desired_state(res, NODE), Owned())
    assert result.results["L2TPSession/s1"].ignored == ("spec.offset: 4 is ignored by the kernel",)


def test_examples_converge_on_the_fake_kernel() -> None:
    for path in ("examples/seed/site-a.yaml", "examples/seed/bridge-site-a.yaml"):
        kernel = FakeKernel()
        result = reconcile(kernel, desired_state(load(path), NODE), Owned())
        assert result.converged, (path, result.results)


def test_session_config_round_trip() -> None:
    d = desired_state(load("examples/more/ipv6-ip-encap.yaml"), "node-a")
    cfg = next(iter(d.sessions.values())).config
    assert cfg == SessionConfig(
        tunnel_id=10,
        session_id=100,
        peer_session_id=200,
        cookie=bytes.fromhex("014d3636deadbeef"),
        peer_cookie=bytes.fromhex("0badc0de00c0ffee"),
        send_seq=True,
        recv_seq=True,
        ifname="l2tp-dc1",
    )


def test_l2spec_change_replaces_although_the_kernel_never_reports_it() -> None:
    kernel, owned = FakeKernel(), Owned()
    res = from_objects([tunnel(), session(l2specType="none")])
    assert reconcile(kernel, desired_state(res, NODE), owned).converged
    kernel.writes.clear()
    assert reconcile(kernel, desired_state(res, NODE), owned).writes == 0
    res = from_objects([tunnel(), session(l2specType="default")])
    assert reconcile(kernel, desired_state(res, NODE), owned).converged
    assert kernel.writes[:2] == ["delete_session 3000/1000", "create_session 3000/1000"]
    assert kernel.sessions[(3000, 1000)].l2spec_type == "default"


def test_session_whose_device_was_deleted_is_replaced() -> None:
    kernel, owned = FakeKernel(), Owned()
    reconcile(kernel, seed_desired(), owned)
    kernel.delete_link("l2tpeth0")
    assert (3000, 1000) in kernel.sessions  # the session outlives its device
    kernel.writes.clear()
    result = reconcile(kernel, seed_desired(), owned)
    assert result.converged
    assert kernel.writes[:2] == ["delete_session 3000/1000", "create_session 3000/1000"]
    assert kernel.links["l2tpeth0"].up


def test_a_tunnel_deleted_outside_and_gone_before_the_session_create_is_rebuilt() -> None:
    """`ip l2tp del tunnel` by hand: the kernel drops the session first and the tunnel a moment
    later, so a dump can show the tunnel without its session, and by the time the agent
    re-creates the session the tunnel is gone (ENODEV). That is the kernel moving, not an
    error to report until the next resync: the next round rebuilds both (seen in the VM)."""
    kernel, owned = FakeKernel(), Owned()
    reconcile(kernel, seed_desired(), owned)
    kernel.delete_session(3000, 1000)  # the session is gone; the tunnel is still dumped
    original = kernel.create_session

    def tunnel_goes_first(cfg: Any) -> None:
        kernel.create_session = original  # type: ignore[method-assign]
        kernel.delete_tunnel(cfg.tunnel_id)  # the kernel finishes its delete
        original(cfg)

    kernel.create_session = tunnel_goes_first  # type: ignore[method-assign]
    kernel.writes.clear()
    result = reconcile(kernel, seed_desired(), owned, sleep=lambda _: None)
    assert result.converged, result.results
    assert not result.failures
    assert 3000 in kernel.tunnels and (3000, 1000) in kernel.sessions
    assert "create_tunnel 3000" in kernel.writes


def test_replacing_a_tunnel_waits_for_the_kernels_asynchronous_delete() -> None:
    """The deleted tunnel is still dumped for a while: it is ours going away, not foreign."""
    kernel, owned = FakeKernel(linger_dumps=3), Owned()
    reconcile(
        kernel,
        desired_state(from_objects([tunnel(), session()]), NODE),
        owned,
        sleep=lambda _: None,
    )
    res = from_objects([tunnel(sport=5005), session()])
    result = reconcile(kernel, desired_state(res, NODE), owned, sleep=lambda _: None)
    assert result.converged, result.results
    assert kernel.tunnels[3000].udp_sport == 5005 and (3000, 1000) in kernel.sessions
    assert not owned.deleting


def test_a_delete_still_in_progress_is_not_repeated_across_reconciles() -> None:
    kernel, owned = FakeKernel(linger_dumps=50), Owned()
    reconcile(kernel, desired_state(from_objects([tunnel()]), NODE), owned, sleep=lambda _: None)
    reconcile(kernel, desired_state(Resources(), NODE), owned, sleep=lambda _: None)
    kernel.writes.clear()
    again = reconcile(kernel, desired_state(Resources(), NODE), owned, sleep=lambda _: None)
    assert kernel.writes == [] and again.converged
    back = reconcile(
        kernel, desired_state(from_objects([tunnel()]), NODE), owned, sleep=lambda _: None
    )
    assert back.results["L2TPTunnel/t1"].reason == "Progressing"  # not Conflict


class LinkDumpCountingKernel(FakeKernel):
    link_dumps = 0

    def dump_links(self) -> list[ObservedLink]:
        self.link_dumps += 1
        return super().dump_links()


def test_removing_tunnels_and_sessions_reads_no_links() -> None:
    """A link dump waits for the RTNL lock the kernel holds while tearing interfaces down."""
    kernel, owned = LinkDumpCountingKernel(), Owned()
    res = from_objects([tunnel(), *(session(f"s{i}", sid=1000 + i) for i in range(3))])
    reconcile(kernel, desired_state(res, NODE), owned)
    assert kernel.link_dumps > 0  # declared sessions have links to program
    kernel.link_dumps = 0
    result = reconcile(kernel, desired_state(Resources(), NODE), owned)
    assert result.converged and kernel.writes[-1] == "delete_tunnel 3000"
    assert kernel.link_dumps == 0 and not kernel.tunnels
    assert owned.to_json() == Owned().to_json()


def test_a_bridge_to_remove_is_read_from_the_links() -> None:
    kernel, owned = LinkDumpCountingKernel(), Owned()
    bridged = session(interface={"bridge": {"name": "br0"}})
    reconcile(kernel, desired_state(from_objects([tunnel(), bridged]), NODE), owned)
    assert owned.bridges == {"br0"}
    kernel.link_dumps = 0
    assert reconcile(kernel, desired_state(Resources(), NODE), owned).converged
    assert kernel.link_dumps > 0 and "br0" not in kernel.links


def test_a_deleted_tunnel_a_dump_skipped_is_going_while_its_sessions_are_reported() -> None:
    """L2TP dumps resume by position: while the kernel tears tunnels down, a tunnel dump can
    miss one whose sessions the next dump still lists. They go with it: no session deletes."""
    owned = Owned(tunnels={3000}, sessions={(3000, 1000)}, deleting={(3000, 0)})
    session_left = ObservedSession(SessionConfig(3000, 1000, 2000, ifname="l2tpeth0"))
    observed = Observed.of([], [session_left], [])
    nothing = desired_state(Resources(), NODE)
    forget_gone(owned, nothing, observed)
    assert owned.deleting == {(3000, 0)} and owned.sessions == {(3000, 1000)}
    assert make_plan(nothing, observed, owned).actions == []
    assert forget_gone(owned, nothing, Observed.of([], [], []))  # now gone: records dropped
    assert not owned.deleting and not owned.sessions
