"""Issue 12 against the real kernel: never disown, never crash, never adopt.

The bugs live where the kernel's own behaviour matters: multi-part dumps at hundreds of
objects (6.1 resumes L2TP dumps by position), asynchronous teardown (a deleted tunnel's
socket, a 6.12 session's device), interrupted link dumps, the kernel's own link-local
addresses and sequencing, and the 6.10+ session lookup by id alone. Sessions here are left
down (no IPv6 autoconfiguration, no link writes): the dumps are what is tested, and TCG is slow.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import NetnsFactory, TwoSites, in_netns, ip, ip_batch, ip_json
from test_agent import converge, pair, pings, sessions_in

from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.desired import (
    Desired,
    DesiredSession,
    DesiredTunnel,
    Owned,
    canonical_address,
    desired_state,
    normalize_tunnel,
)
from kube_l2tp.core.reconcile import Result, reconcile
from kube_l2tp.core.state import Address, KernelError, Outcome, SessionConfig, TunnelConfig
from kube_l2tp.netlink.kernel import Kernel
from kube_l2tp.netlink.l2tp import L2tp

LOCAL, REMOTE = "192.0.2.1", "192.0.2.2"
BULK = 600
FOREIGN_UDP = f"encap udp local {LOCAL} remote {REMOTE} udp_dport 6000 udp_sport"  # + a port


def ip_words(ns: str, words: str) -> str:
    return ip(ns, *words.split())


def desired(ids: range, *, sessions: int = 1, ifname: str | None = None, **session: Any) -> Desired:
    """Tunnels ``ids`` (UDP, source port 10000 + id % 50000), each with ``sessions`` sessions."""
    tunnels, wanted = {}, {}
    for tid in ids:
        cfg = TunnelConfig(tid, tid + 100000, "udp", LOCAL, REMOTE, 10000 + tid % 50000, 6000)
        tunnels[tid] = DesiredTunnel(f"t{tid}", normalize_tunnel(cfg))
        for sid in range(1000, 1000 + sessions):
            s = SessionConfig(tid, sid, sid + 1000, ifname=ifname, **session)
            wanted[(tid, sid)] = DesiredSession(
                f"s{tid}-{sid}", f"t{tid}", s, False, None, (), None, ()
            )
    return Desired(tunnels, wanted)


class Counting:
    """The kernel port, counting the writes by name."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.kernel, name)
        if name.startswith(("dump_", "get_")):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return target(*args, **kwargs)

        return call


def tunnel_ids(ns: str) -> set[int]:
    with in_netns(ns), Kernel() as kernel:
        return {t.config.tunnel_id for t in kernel.dump_tunnels()}


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def failed(result: Result) -> dict[str, str]:
    return {s: f"{r.reason}: {r.message}" for s, r in result.results.items() if not r.ready}


def hard_failures(result: Result) -> list[str]:
    """Objects failed, not merely still converging (Progressing, TunnelNotReady behind one)."""
    return [s for s, r in result.results.items() if r.reason in ("KernelError", "Conflict")]


# -- 1. never disown ---------------------------------------------------------------------------


def test_a_bulk_delete_disowns_and_leaks_nothing(two_sites: TwoSites) -> None:
    """600 tunnels with a session each; every other one is deleted. On 6.1 the dumps made right
    after skip live tunnels; they were re-created (EEXIST) and disowned for good."""
    ns = two_sites.a
    kept = desired(range(3001, 3001 + BULK, 2))
    owned = Owned()
    with in_netns(ns), Kernel() as kernel:
        assert reconcile(kernel, desired(range(3000, 3000 + BULK)), owned).converged
        counting = Counting(kernel)
        result = reconcile(counting, kept, owned)  # type: ignore[arg-type]
        assert "create_tunnel" not in counting.calls and "create_session" not in counting.calls
        assert set(kept.tunnels) <= owned.tunnels and set(kept.sessions) <= owned.sessions
        assert not failed(result), failed(result)
    assert wait_until(lambda: tunnel_ids(ns) == set(kept.tunnels)), "a deleted tunnel leaked"
    with in_netns(ns), Kernel() as kernel:
        again = Counting(kernel)
        assert reconcile(again, kept, owned).converged  # type: ignore[arg-type]
        assert again.calls == []


# -- 3. never adopt after a reboot -----------------------------------------------------------


def test_a_tunnel_boot_scripts_made_again_after_a_reboot_is_not_adopted(
    two_sites: TwoSites, tmp_path: Path
) -> None:
    ns = two_sites.a
    one = desired(range(3000, 3001))
    with in_netns(ns):
        before = StateStore(
            tmp_path, identity=("an-earlier-boot", os.stat("/proc/thread-self/ns/net").st_ino)
        )
        owned = before.load()
        with Kernel() as kernel:
            assert reconcile(kernel, one, owned, save=before.save).converged
        before.close()
    # the reboot: the kernel's objects are gone, and boot scripts make tunnel 3000 again
    ip(ns, "l2tp", "del", "tunnel", "tunnel_id", "3000")
    assert wait_until(lambda: not tunnel_ids(ns))
    ip_words(ns, f"l2tp add tunnel tunnel_id 3000 peer_tunnel_id 4000 {FOREIGN_UDP} 7000")
    with in_netns(ns):
        store = StateStore(tmp_path)  # this boot's id, this namespace
        owned = store.load()
        assert owned.tunnels == set()
        with Kernel() as kernel:
            result = reconcile(kernel, one, owned, save=store.save)
            assert result.results["L2TPTunnel/t3000"].reason == "Conflict"
            reconcile(kernel, desired(range(0)), owned, save=store.save)  # its resource goes
        store.close()
    assert tunnel_ids(ns) == {3000}, "the agent deleted a tunnel it did not make"


# -- 4. ids and names reused while the kernel still releases the old --------------------------


def test_a_new_tunnel_id_on_the_same_port_and_a_reused_interface_name(two_sites: TwoSites) -> None:
    """EADDRINUSE: the old tunnel's socket is released in its delete work; since 6.12 a
    deleted session's device is unregistered after the delete returns (EEXIST on its name)."""
    ns = two_sites.a
    owned = Owned()
    with in_netns(ns), Kernel() as kernel:
        old = desired(range(3000, 3001), sessions=50)
        assert reconcile(kernel, old, owned).converged
        moved = desired(range(3000, 3001), sessions=50)
        (t,) = moved.tunnels.values()
        new_id = TunnelConfig(3500, 4500, "udp", LOCAL, REMOTE, t.config.udp_sport, 6000)
        moved = Desired(
            {3500: DesiredTunnel("t3000", normalize_tunnel(new_id))},
            {
                (3500, k[1]): DesiredSession(
                    s.name,
                    "t3000",
                    SessionConfig(3500, k[1], k[1] + 1000),
                    False,
                    None,
                    (),
                    None,
                    (),
                )
                for k, s in moved.sessions.items()
            },
        )
        result = reconcile(kernel, moved, owned)
        assert not hard_failures(result), failed(result)
        assert wait_until(lambda: reconcile(kernel, moved, owned).converged, 30)

        named = desired(range(3600, 3601), ifname="pw0")
        assert reconcile(kernel, named, owned).converged
        renumbered = Desired(
            named.tunnels,
            {
                (3600, 1001): DesiredSession(
                    "s3600-1000",
                    "t3600",
                    SessionConfig(3600, 1001, 2001, ifname="pw0"),
                    False,
                    None,
                    (),
                    None,
                    (),
                )
            },
        )
        result = reconcile(kernel, renumbered, owned)
        assert not hard_failures(result), failed(result)
        assert wait_until(lambda: reconcile(kernel, renumbered, owned).converged, 30)
    assert sessions_in(ns)[(3600, 1001)].config.ifname == "pw0"


# -- 5. an interrupted link dump fails nothing ----------------------------------------------


def test_tearing_down_a_large_tunnel_fails_no_object(two_sites: TwoSites) -> None:
    """600 l2tpeth devices unregistering interrupt link dumps (NLM_F_DUMP_INTR): retried back to
    back three times, then every declared object failed with "errno 0"."""
    ns = two_sites.a
    ip_batch(
        ns,
        [
            f"l2tp add tunnel tunnel_id 9000 peer_tunnel_id 9000 encap udp udp_sport 9000"
            f" udp_dport 9000 local {LOCAL} remote {REMOTE}",
            *(
                f"l2tp add session tunnel_id 9000 session_id {sid} peer_session_id {sid}"
                for sid in range(1, BULK + 1)
            ),
        ],
    )
    mine = desired(range(3000, 3002))
    owned = Owned()
    verdicts: list[str] = []
    with in_netns(ns), Kernel() as kernel:
        assert reconcile(kernel, mine, owned).converged
        ip(ns, "l2tp", "del", "tunnel", "tunnel_id", "9000")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            result = reconcile(kernel, mine, owned)
            verdicts.append("incomplete" if result.incomplete else "judged")
            assert result.incomplete or result.converged, failed(result)
            if len(ip_json(ns, "link", "show")) < 10:  # the 600 devices are gone
                break
    print(
        f"reconciles during the teardown: {len(verdicts)},"
        f" incomplete: {verdicts.count('incomplete')}"
    )


# -- 6. IPv6 link-local --------------------------------------------------------------------


def test_a_declared_ipv6_link_local_address_converges(two_sites: TwoSites) -> None:
    ns = two_sites.a
    plain = desired(range(3000, 3001), ifname="pw0")
    ((key, s),) = plain.sessions.items()
    address = canonical_address(Address("fe80::1/64"))
    linked = Desired(
        plain.tunnels,
        {key: DesiredSession(s.name, s.tunnel, s.config, True, None, (address,), None, ())},
    )
    owned = Owned()
    with in_netns(ns), Kernel() as kernel:
        assert reconcile(kernel, linked, owned).converged
        counting = Counting(kernel)
        for _ in range(2):
            assert reconcile(counting, linked, owned).converged  # type: ignore[arg-type]
        assert counting.calls == [], counting.calls
    (info,) = ip_json(ns, "addr", "show", "dev", "pw0")
    assert "fe80::1" in {a["local"] for a in info["addr_info"]}


# -- 7. risks settled ----------------------------------------------------------------------


def test_the_kernel_turning_send_seq_off_for_an_unnumbering_peer_is_left(
    two_sites: TwoSites,
) -> None:
    """Site a declares sequencing send; site b numbers nothing. a's kernel (LAC mode) turns
    sending off at b's first frame; the agent leaves it, Ready, and says so. (a's interface is
    down, so a sends nothing first: b would turn its own sending on at a numbered frame.)"""
    seq = pair(LOCAL, REMOTE, session_spec={"sequencing": "send", "interface": {"up": False}})
    plain = pair(LOCAL, REMOTE)
    owned = Owned()
    assert converge(two_sites.a, seq, "a", owned).converged
    assert sessions_in(two_sites.a)[(3000, 1000)].config.send_seq
    assert converge(two_sites.b, plain, "b").converged
    pings(two_sites.b, "198.51.100.1", 1)  # unnumbered ARP from b (a is down: no answer)
    assert wait_until(lambda: not sessions_in(two_sites.a)[(3000, 1000)].config.send_seq, 10)
    with in_netns(two_sites.a), Kernel() as kernel:
        counting = Counting(kernel)
        for _ in range(2):
            result = reconcile(counting, desired_state(seq, "a"), owned)  # type: ignore[arg-type]
        assert "modify_session" not in counting.calls, counting.calls
    r = result.results["L2TPSession/s-a"]
    assert r.ready and any("sequence numbers" in note for note in r.ignored), r
    assert not sessions_in(two_sites.a)[(3000, 1000)].config.send_seq


def test_a_foreign_link_that_took_a_session_devices_name_is_never_touched(
    two_sites: TwoSites,
) -> None:
    """The session keeps its device's name after the device is renamed (or deleted); a link
    or another session's device, that takes the name since is someone else's (a bridge, here:
    its module is loaded in the guest)."""
    ns = two_sites.a
    up = desired(range(3000, 3001))
    ((key, s),) = up.sessions.items()
    address = canonical_address(Address("198.51.100.1/32"))
    wanted = Desired(
        up.tunnels,
        {key: DesiredSession(s.name, s.tunnel, s.config, True, 1400, (address,), None, ())},
    )
    owned = Owned()
    with in_netns(ns), Kernel() as kernel:
        assert reconcile(kernel, wanted, owned).converged
        device = sessions_in(ns)[key].config.ifname
        assert device and device.startswith("l2tpeth")
        ip(ns, "link", "set", device, "down")  # a link is renamed only when down
        ip(ns, "link", "set", device, "name", "renamed0")
        ip(ns, "link", "add", device, "type", "bridge")
        result = reconcile(kernel, wanted, owned)
        assert result.converged, failed(result)
        (squatter,) = ip_json(ns, "addr", "show", "dev", device)
        assert (squatter["mtu"], squatter["addr_info"], "UP" in squatter["flags"]) == (
            1500,
            [],
            False,
        )
        assert sessions_in(ns)[key].config.ifname != device
        # now another session's device under the name this session's device had
        ours = sessions_in(ns)[key].config.ifname or ""
        ip(ns, "link", "set", ours, "down")
        ip(ns, "link", "set", ours, "name", "renamed1")
        ip(ns, "link", "del", device)
        ip_words(ns, f"l2tp add tunnel tunnel_id 9000 peer_tunnel_id 9000 {FOREIGN_UDP} 9000")
        ip_words(ns, f"l2tp add session tunnel_id 9000 session_id 1 peer_session_id 1 name {ours}")
        result = reconcile(kernel, wanted, owned)
        assert result.converged, failed(result)
        (foreign,) = ip_json(ns, "addr", "show", "dev", ours)
        assert (foreign["mtu"], foreign["addr_info"], "UP" in foreign["flags"]) == (
            1446,
            [],
            False,
        )


def test_a_session_operation_never_reaches_another_tunnels_session(netns: NetnsFactory) -> None:
    """Since 6.10 the kernel looks a v3 session up by its id alone when the id is unique in the
    namespace: a delete of (3000, 1000), after tunnel 3000's session 1000 went, reached tunnel
    3001's session 1000."""
    ns = netns("ses")
    ip(ns, "addr", "add", f"{LOCAL}/24", "dev", "lo")
    for tid, port in ((3000, 5000), (3001, 5001)):
        ip_words(ns, f"l2tp add tunnel tunnel_id {tid} peer_tunnel_id {tid} {FOREIGN_UDP} {port}")
    ip_words(ns, "l2tp add session tunnel_id 3001 session_id 1000 peer_session_id 1000")
    with in_netns(ns), L2tp() as l2tp:
        with pytest.raises(KernelError) as deleting:
            l2tp.delete_session(3000, 1000)
        with pytest.raises(KernelError) as modifying:
            l2tp.modify_session(3000, 1000, send_seq=True, recv_seq=True)
        assert deleting.value.outcome is modifying.value.outcome is Outcome.NOT_FOUND
        assert l2tp.get_session(3000, 1000) is None
        (theirs,) = l2tp.dump_sessions()
        assert (theirs.config.tunnel_id, theirs.config.send_seq) == (3001, False)
