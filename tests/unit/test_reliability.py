"""Issue 12 against the in-memory kernel: never disown, never crash, never adopt.

Each test reproduces one finding on the FakeKernel's model of what the real kernel does (the
kernel suite checks the same in the VM where the kernel's own behaviour matters).
"""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakekernel import FakeKernel, Link
from test_reconcile import from_objects, session, tunnel

from kube_l2tp import embedded
from kube_l2tp.agent import loop
from kube_l2tp.agent.loop import AgentConfig, no_events
from kube_l2tp.agent.standalone import standalone_agent
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.desired import Desired, Owned, desired_state
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.core.state import Address, KernelError, Outcome, SessionConfig
from kube_l2tp.core.triggers import Trigger

NODE = "site-a"


def pairs(count: int, first: int = 0, **session_spec: Any) -> Desired:
    objects: list[dict[str, Any]] = []
    for i in range(first, first + count):
        objects.append(tunnel(f"t{i}", tid=3000 + i, sport=5000 + i))
        objects.append(session(f"s{i}", ref=f"t{i}", sid=1000, **session_spec))
    return desired_state(from_objects(objects), NODE)


def no_sleep(_: float) -> None:
    pass


# --- 1. never disown ------------------------------------------------------------------------


def test_live_tunnels_a_dump_skipped_after_a_bulk_delete_stay_owned() -> None:
    """6.1 resumes L2TP dumps by position: right after the agent deleted half of its tunnels,
    a dump skipped live ones. The plan re-created them, met EEXIST, and undid ownership that
    existed before the round: those tunnels became Conflict for good."""
    kernel, owned = FakeKernel(), Owned()
    everything = pairs(40)
    assert reconcile(kernel, everything, owned, sleep=no_sleep).converged
    half = pairs(20, first=20)
    kernel.linger_dumps = 2
    # the dumps made after the deletes skip three live tunnels (and their sessions)
    kernel.dump_skips = {3020: 3, 3031: 3, 3039: 3}
    kernel.writes.clear()
    result = reconcile(kernel, half, owned, sleep=no_sleep)
    assert not [w for w in kernel.writes if w.startswith("create")], kernel.writes
    assert {3020, 3031, 3039} <= owned.tunnels
    assert {(3020, 1000), (3031, 1000), (3039, 1000)} <= owned.sessions
    assert result.converged, {s: r.message for s, r in result.results.items() if not r.ready}
    kernel.writes.clear()
    assert reconcile(kernel, half, owned, sleep=no_sleep).converged
    assert kernel.writes == []


def test_an_undeclared_tunnel_a_dump_skipped_is_still_deleted_not_forgotten() -> None:
    kernel, owned = FakeKernel(), Owned()
    assert reconcile(kernel, pairs(4), owned, sleep=no_sleep).converged
    kernel.dump_skips = {3003: 1}
    reconcile(kernel, pairs(3), owned, sleep=no_sleep)
    assert 3003 not in kernel.tunnels, "a tunnel no longer declared leaked"


def test_eexist_on_an_owned_object_looks_again_and_never_disowns() -> None:
    """A create of an owned tunnel that fails with EEXIST (neither dump nor GET showed it) is
    retried next round; the ownership that existed before the round stays."""
    kernel, owned = FakeKernel(), Owned()
    desired = pairs(1)
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    hidden = {"left": 1}
    real_get = kernel.get_tunnel

    def get_tunnel(tid: int) -> Any:
        if hidden["left"]:
            hidden["left"] -= 1
            return None
        return real_get(tid)

    kernel.get_tunnel = get_tunnel  # type: ignore[method-assign]
    kernel.dump_skips = {3000: 1}
    result = reconcile(kernel, desired, owned, sleep=no_sleep)
    assert 3000 in owned.tunnels and (3000, 1000) in owned.sessions
    assert result.converged, result.results


# --- 2. one object's failure never stops the others ---------------------------------------


class Refusing(FakeKernel):
    """Raises what the netlink layer must never let out, for one session only."""

    def create_session(self, cfg: SessionConfig) -> None:
        if cfg.tunnel_id == 3001:
            raise ValueError("interface name is 20 bytes")
        super().create_session(cfg)


def test_an_exception_for_one_object_fails_that_object_only() -> None:
    kernel, owned = Refusing(), Owned()
    result = reconcile(kernel, pairs(3), owned, sleep=no_sleep)
    bad = result.results["L2TPSession/s1"]
    assert not bad.ready and bad.reason == "KernelError"
    assert "s1" in bad.subject and "20 bytes" in bad.message and "bug" in bad.message
    others = [r for s, r in result.results.items() if s != "L2TPSession/s1"]
    assert all(r.ready for r in others), others
    assert (3001, 1000) not in owned.sessions


def test_an_address_with_a_prefix_and_a_peer_is_programmed_as_ip_does() -> None:
    """``address: 198.51.100.1/24, peer: 198.51.100.2``: ip takes the peer's prefix (32)."""
    desired = desired_state(
        from_objects(
            [
                tunnel(),
                session(
                    interface={
                        "addresses": [{"address": "198.51.100.1/24", "peer": "198.51.100.2"}]
                    }
                ),
            ]
        ),
        NODE,
    )
    (want,) = desired.sessions[(3000, 1000)].addresses
    assert want == Address("198.51.100.1/32", "198.51.100.2/32")
    kernel, owned = FakeKernel(), Owned()
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    kernel.writes.clear()
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    assert kernel.writes == []


# --- 3. never adopt what someone else made --------------------------------------------------


def test_ownership_from_another_boot_or_namespace_is_dropped() -> None:
    owned = Owned(tunnels={3000}, bridges={"br0"}, boot_id="boot-a", netns=4026531840)
    again = Owned.from_json(owned.to_json())
    assert again.kernel_records_of("boot-a", 4026531840) is again
    for boot, netns in (("boot-b", 4026531840), ("boot-a", 4026532000)):
        fresh = again.kernel_records_of(boot, netns)
        assert (fresh.tunnels, fresh.bridges, fresh.boot_id, fresh.netns) == (
            set(),
            set(),
            boot,
            netns,
        )


def test_a_bridge_made_again_by_someone_else_is_not_deleted() -> None:
    bridged = desired_state(
        from_objects([tunnel(), session(interface={"bridge": {"name": "br9"}})]), NODE
    )
    kernel, owned = FakeKernel(), Owned()
    assert reconcile(kernel, bridged, owned, sleep=no_sleep).converged
    assert owned.ifindex["br9"] == kernel.links["br9"].index
    kernel.delete_link("br9")  # a human deletes it and makes a bridge of the same name
    kernel._add_link("br9", "bridge")
    reconcile(kernel, desired_state(from_objects([tunnel(), session()]), NODE), owned)
    assert "br9" in kernel.links, "the agent deleted a bridge it did not make"


# --- 4. a tunnel id or interface name reused while the kernel still releases the old ------


def test_a_new_tunnel_id_on_the_same_local_port_waits_for_the_old_socket() -> None:
    """The old tunnel's UDP socket is released by the kernel's delete work, after the delete
    returned: creating the new id at once met EADDRINUSE and failed for a resync period."""
    kernel, owned = FakeKernel(linger_dumps=3), Owned()
    assert reconcile(kernel, pairs(1), owned, sleep=no_sleep).converged
    moved = desired_state(from_objects([tunnel(tid=3500, sport=5000), session(sid=1000)]), NODE)
    result = reconcile(kernel, moved, owned, sleep=no_sleep)
    assert all(r.reason != "KernelError" for r in result.results.values()), result.results
    assert reconcile(kernel, moved, owned, sleep=no_sleep).converged
    assert 3500 in kernel.tunnels and 3000 not in kernel.tunnels


def test_eaddrinuse_while_a_tunnel_is_going_is_retried_not_failed() -> None:
    class Slow(FakeKernel):
        in_use = 2

        def create_tunnel(self, cfg: Any) -> None:
            if self.in_use:
                self.in_use -= 1
                raise KernelError("create tunnel", errno.EADDRINUSE, Outcome.ADDRESS_IN_USE)
            super().create_tunnel(cfg)

    kernel, owned = Slow(), Owned()
    kernel.in_use = 0
    assert reconcile(kernel, pairs(1), owned, sleep=no_sleep).converged
    kernel.in_use = 2
    moved = desired_state(from_objects([tunnel(tid=3500, sport=5001), session()]), NODE)
    assert reconcile(kernel, moved, owned, sleep=no_sleep).converged


def test_an_interface_name_reused_by_a_new_session_waits_for_the_old_device() -> None:
    """Since 6.12 a deleted session's device is unregistered after the delete returns."""
    kernel, owned = FakeKernel(session_linger_dumps=2), Owned()
    named = {"interfaceName": "pw0"}
    first = desired_state(from_objects([tunnel(), session(sid=1000, **named)]), NODE)
    assert reconcile(kernel, first, owned, sleep=no_sleep).converged
    second = desired_state(from_objects([tunnel(), session(sid=1001, **named)]), NODE)
    result = reconcile(kernel, second, owned, sleep=no_sleep)
    assert all(r.reason not in ("KernelError", "Conflict") for r in result.results.values()), (
        result.results
    )
    assert reconcile(kernel, second, owned, sleep=no_sleep).converged
    assert kernel.sessions[(3000, 1001)].ifname == "pw0"


# --- 5. an interrupted link dump fails nothing -------------------------------------------------


def test_interrupted_link_dumps_are_retried_and_never_fail_objects() -> None:
    kernel, owned = FakeKernel(), Owned()
    desired = pairs(2)
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    kernel.interrupted_link_dumps = 3
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    kernel.interrupted_link_dumps = 100
    result = reconcile(kernel, desired, owned, sleep=no_sleep)
    assert result.incomplete and "BUSY" in result.incomplete.upper()
    assert not result.converged  # `agent --once` must not exit 0 on it
    assert result.results == {}, "no object may be judged on a dump that was interrupted"


# --- 7. risks settled ---------------------------------------------------------------------


def test_the_kernel_turning_send_seq_off_for_an_unnumbering_peer_is_not_fought() -> None:
    kernel, owned = FakeKernel(peer_unnumbered=True), Owned()
    desired = pairs(1, sequencing="send")
    reconcile(kernel, desired, owned, sleep=no_sleep)
    kernel.writes.clear()
    for _ in range(3):
        result = reconcile(kernel, desired, owned, sleep=no_sleep)
    assert not [w for w in kernel.writes if w.startswith("modify_session")], kernel.writes
    r = result.results["L2TPSession/s0"]
    assert r.ready and any("sequence numbers" in note for note in r.ignored), r


def test_a_foreign_link_that_took_a_session_devices_name_is_never_touched() -> None:
    desired = desired_state(
        from_objects(
            [tunnel(), session(interface={"mtu": 1400, "addresses": [{"address": "198.51.100.1"}]})]
        ),
        NODE,
    )
    kernel, owned = FakeKernel(), Owned()
    assert reconcile(kernel, desired, owned, sleep=no_sleep).converged
    assert kernel.sessions[(3000, 1000)].ifname == "l2tpeth0"
    for kind in ("dummy", ""):  # another kind; or the same kind under another index
        device = kernel.sessions[(3000, 1000)].ifname or ""
        kernel._drop_link(device)  # deleted by hand: the session keeps the stale name
        foreign = kernel._add_link(device, kind)
        kernel.writes.clear()
        result = reconcile(kernel, desired, owned, sleep=no_sleep)
        assert kernel.links[device] is foreign
        assert (foreign.up, foreign.mtu, foreign.addresses) == (False, 1500, set()), foreign
        assert not [w for w in kernel.writes if f" {device} " in f"{w} "], kernel.writes
        assert result.converged
        assert kernel.sessions[(3000, 1000)].ifname != device
        assert isinstance(kernel.links[kernel.sessions[(3000, 1000)].ifname or ""], Link)


def test_the_state_store_drops_a_record_of_another_boot(tmp_path: Path) -> None:
    first = StateStore(tmp_path, identity=("boot-a", 4026531840))
    owned = first.load()
    owned.tunnels.add(3000)
    owned.bridges.add("br0")
    first.save(owned)
    first.close()
    same = StateStore(tmp_path, identity=("boot-a", 4026531840))
    assert same.load().tunnels == {3000}
    same.close()
    rebooted = StateStore(tmp_path, identity=("boot-b", 4026531840))
    fresh = rebooted.load()
    assert (fresh.tunnels, fresh.bridges, fresh.boot_id) == (set(), set(), "boot-b")
    rebooted.save(fresh)
    rebooted.close()
    assert Owned.from_json((tmp_path / "owned.json").read_text()).boot_id == "boot-b"


def test_a_record_written_before_boot_ids_is_kept(tmp_path: Path) -> None:
    (tmp_path / "owned.json").write_text(Owned(tunnels={3000}).to_json())
    store = StateStore(tmp_path, identity=("boot-a", 1))
    assert store.load().tunnels == {3000}
    store.close()


class Crashing(FakeKernel):
    """Raises what nobody expected from its first dumps, then works."""

    crashes = 2

    def dump_tunnels(self) -> list[Any]:
        if self.crashes:
            self.crashes -= 1
            raise RuntimeError("an answer nobody expected")
        return super().dump_tunnels()


def test_the_agent_loop_outlives_an_unexpected_exception(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loop, "POLL_SECONDS", 0.02)
    kernel = Crashing()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("site-a", embedded.DIRECTORY, tmp_path / "state", resync_seconds=0.05)
    agent = standalone_agent(config, kernel, store, no_events)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (agent.last and agent.last.converged):
        time.sleep(0.02)
    alive = thread.is_alive()
    agent.stop.set()
    agent.wake()
    thread.join(10)
    store.close()
    assert alive, "the agent's loop ended on one exception"
    assert kernel.crashes == 0 and agent.last is not None and agent.last.converged


def test_the_agent_keeps_its_verdicts_while_the_kernel_cannot_be_read_completely(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel()
    store = StateStore(tmp_path / "state")
    config = AgentConfig("site-a", embedded.DIRECTORY, tmp_path / "state")
    agent = standalone_agent(config, kernel, store, no_events)
    seen: list[Any] = []
    agent.on_result.append(lambda _s, result, _t: seen.append(result))
    first = agent.reconcile_once()
    assert first.converged
    kernel.interrupted_link_dumps = 100
    again = agent.reconcile_once(Trigger.KERNEL_EVENT)  # backs off about 1.5 s, then gives up
    store.close()
    assert again is first and seen == [first], "statuses were rewritten from an interrupted dump"
    assert agent._next_resync() - time.monotonic() <= loop.RETRY_SECONDS
