"""Links and LinkEvents against the real kernel, each test in a namespace of its own.

What Links reports is compared with what iproute2 reports for the same namespace, so the two
readings of the kernel have to agree, and every error is asserted as the kernel really answers it.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import NetnsFactory, TwoSites, in_netns, ip, ip_json, link

from kube_l2tp.core.state import Address, KernelError, ObservedLink, Outcome
from kube_l2tp.netlink.kernel import Kernel
from kube_l2tp.netlink.links import LinkEvents, Links


@pytest.fixture
def ns(netns: NetnsFactory) -> str:
    return netns("links")


@pytest.fixture
def links(ns: str) -> Iterator[Links]:
    with in_netns(ns), Links() as links:
        yield links


def _ip_view(ns: str) -> list[ObservedLink]:
    """ObservedLinks as iproute2 sees the namespace: the reference Links.dump() must match."""
    infos = ip_json(ns, "-d", "link", "show")
    index = {info["ifname"]: info["ifindex"] for info in infos}
    addrs = {info["ifindex"]: info["addr_info"] for info in ip_json(ns, "addr", "show")}
    view = []
    for info in infos:
        kind = info.get("linkinfo", {}).get("info_kind", "")
        addresses = tuple(
            Address(
                address=f"{a['local']}/{a['prefixlen']}",
                peer=f"{a['address']}/{a['prefixlen']}" if "address" in a else None,
            )
            for a in addrs[info["ifindex"]]
            if not (a["family"] == "inet6" and a["scope"] == "link")
        )
        view.append(
            ObservedLink(
                ifname=info["ifname"],
                index=info["ifindex"],
                kind=kind,
                up="UP" in info["flags"],
                mtu=info["mtu"],
                master_index=index[info["master"]] if "master" in info else None,
                addresses=addresses,
                vlan_id=info["linkinfo"]["info_data"]["id"] if kind == "vlan" else None,
                parent_index=index[info["link"]] if kind == "vlan" else None,
                addr_gen_mode=info.get("inet6_addr_gen_mode"),
                qdisc=info.get("qdisc"),
            )
        )
    return sorted(view, key=lambda observed: observed.index)


def _settled(dump: list[ObservedLink]) -> list[ObservedLink]:
    """The dump without IPv6 link-local addresses, which the kernel adds on its own some time
    after a link is up (so two reads a moment apart may differ); _ip_view leaves them out too."""
    return [
        dataclasses.replace(
            link, addresses=tuple(a for a in link.addresses if not a.address.startswith("fe80:"))
        )
        for link in dump
    ]


def _by_name(links: Links) -> dict[str, ObservedLink]:
    return {observed.ifname: observed for observed in links.dump()}


def _kernel_error(excinfo: pytest.ExceptionInfo[KernelError]) -> tuple[int, Outcome]:
    return excinfo.value.errno, excinfo.value.outcome


def _veth(ns: str, name: str = "veth0", peer: str = "veth1") -> None:
    ip(ns, "link", "add", name, "type", "veth", "peer", "name", peer)


def _wait_for(predicate: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


# -- reading and changing ---------------------------------------------------------------------


def test_fresh_namespace_has_only_loopback(links: Links, ns: str) -> None:
    dump = links.dump()
    assert [(o.ifname, o.kind, o.up) for o in dump] == [("lo", "", True)]
    assert _settled(dump) == _ip_view(ns)


def test_bridge_creation_admin_state_and_mtu(links: Links, ns: str) -> None:
    links.create_bridge("br0")
    br0 = _by_name(links)["br0"]
    assert (br0.kind, br0.up, br0.mtu, br0.master_index) == ("bridge", False, 1500, None)

    links.set_link("br0", up=True, mtu=1446)
    br0 = _by_name(links)["br0"]
    assert (br0.up, br0.mtu) == (True, 1446)
    assert "UP" in link(ns, "br0")["flags"]

    links.set_link("br0", up=False)  # mtu left alone
    assert (_by_name(links)["br0"].up, _by_name(links)["br0"].mtu) == (False, 1446)
    links.set_link("br0", mtu=1500)  # admin state left alone
    assert (_by_name(links)["br0"].up, _by_name(links)["br0"].mtu) == (False, 1500)
    links.set_link("br0")  # nothing asked, nothing sent
    assert _settled(links.dump()) == _ip_view(ns)


def test_vlan_on_a_veth_reports_id_and_parent(links: Links, ns: str) -> None:
    _veth(ns)
    links.create_vlan("veth0.5", "veth0", 5)
    by_name = _by_name(links)
    vlan = by_name["veth0.5"]
    assert (vlan.kind, vlan.vlan_id, vlan.parent_index) == ("vlan", 5, by_name["veth0"].index)
    assert by_name["veth0"].kind == "veth"
    assert (by_name["veth0"].vlan_id, by_name["veth0"].parent_index) == (None, None)
    details = link(ns, "veth0.5")["linkinfo"]
    assert (details["info_kind"], details["info_data"]["id"]) == ("vlan", 5)
    assert _settled(links.dump()) == _ip_view(ns)


def test_master_set_and_released(links: Links, ns: str) -> None:
    _veth(ns)
    links.create_bridge("br0")
    links.set_master("veth0", "br0")
    by_name = _by_name(links)
    assert by_name["veth0"].master_index == by_name["br0"].index
    assert link(ns, "veth0")["master"] == "br0"
    assert _settled(links.dump()) == _ip_view(ns)

    links.set_master("veth0", None)
    assert _by_name(links)["veth0"].master_index is None
    assert "master" not in link(ns, "veth0")


def test_delete_link(links: Links, ns: str) -> None:
    links.create_bridge("br0")
    links.delete_link("br0")
    assert "br0" not in _by_name(links)
    assert [info["ifname"] for info in ip_json(ns, "link", "show")] == ["lo"]


ADDRESSES = [
    Address("192.0.2.1/24"),
    Address("198.51.100.1/32", peer="198.51.100.2/32"),
    Address("203.0.113.1/24", peer="203.0.113.2/24"),
    Address("2001:db8::1/64"),
    Address("2001:db8:1::1/128", peer="2001:db8:1::2/128"),
]


def test_addresses_added_and_deleted_with_and_without_peer(links: Links, ns: str) -> None:
    _veth(ns)
    for address in ADDRESSES:
        links.add_address("veth0", address)
    assert set(_by_name(links)["veth0"].addresses) == set(ADDRESSES)
    assert _settled(links.dump()) == _ip_view(ns)
    (info,) = ip_json(ns, "addr", "show", "dev", "veth0")
    peers = {(a["local"], a.get("address")) for a in info["addr_info"]}
    assert ("198.51.100.1", "198.51.100.2") in peers
    assert ("2001:db8:1::1", "2001:db8:1::2") in peers
    assert ("192.0.2.1", None) in peers

    for address in ADDRESSES:
        links.del_address("veth0", address)
    assert _by_name(links)["veth0"].addresses == ()
    assert ip_json(ns, "addr", "show", "dev", "veth0")[0]["addr_info"] == []


def test_an_address_with_a_prefix_and_a_peer_is_what_ip_makes_of_it(links: Links, ns: str) -> None:
    """``ip addr add 198.51.100.1/24 peer 198.51.100.2`` takes the peer's prefix length; this
    raised ValueError (which stopped the whole agent) and must now program the same."""
    _veth(ns)
    links.add_address("veth0", Address("198.51.100.1/24", peer="198.51.100.2"))
    ip(ns, "addr", "add", "198.51.100.1/24", "peer", "198.51.100.2", "dev", "veth1")
    mine, ips = (
        ip_json(ns, "addr", "show", "dev", dev)[0]["addr_info"] for dev in ("veth0", "veth1")
    )
    fields = ("local", "address", "prefixlen")
    assert [tuple(a.get(f) for f in fields) for a in mine] == [
        tuple(a.get(f) for f in fields) for a in ips
    ]
    assert _by_name(links)["veth0"].addresses == (Address("198.51.100.1/32", "198.51.100.2/32"),)


def test_ipv6_link_local_is_in_the_dump(links: Links, ns: str) -> None:
    """A declared link-local address must be seen to converge (it was left out, so the agent
    re-added it at every reconcile and met EEXIST)."""
    _veth(ns)
    links.set_link("veth0", up=True)
    links.set_link("veth1", up=True)
    assert _wait_for(lambda: _link_local(ns, "veth0")), "the kernel never made a link-local address"
    (made,) = _link_local(ns, "veth0")
    assert Address(f"{made}/64") in _by_name(links)["veth0"].addresses
    links.add_address("veth0", Address("fe80::1/64"))
    assert Address("fe80::1/64") in _by_name(links)["veth0"].addresses
    assert _settled(links.dump()) == _ip_view(ns)


def _link_local(ns: str, ifname: str) -> list[str]:
    (info,) = ip_json(ns, "addr", "show", "dev", ifname)
    return [a["local"] for a in info["addr_info"] if a["local"].startswith("fe80:")]


def test_addr_gen_mode_none_means_no_link_local(links: Links, ns: str) -> None:
    _veth(ns)
    links.set_addr_gen_mode("veth0", "none")
    assert link(ns, "veth0")["inet6_addr_gen_mode"] == "none"
    assert link(ns, "veth1")["inet6_addr_gen_mode"] == "eui64"
    links.set_link("veth0", up=True)
    links.set_link("veth1", up=True)
    # The control end gets its link-local once the carrier is up; by then veth0 would have too.
    assert _wait_for(lambda: _link_local(ns, "veth1")), "control end never got a link-local"
    assert _link_local(ns, "veth0") == []


def test_l2tpeth_has_no_kind_and_cannot_be_deleted_as_a_link(two_sites: TwoSites) -> None:
    """Kernel 6.1's l2tp_eth has no rtnl_link_ops: no IFLA_INFO_KIND, and RTM_DELLINK is refused.

    So an l2tpeth link is known by the session that names it (L2TP_ATTR_IFNAME), not by its kind,
    and it goes away with its session.
    """
    ns = two_sites.a
    tunnel = "tunnel_id 3000 peer_tunnel_id 4000 encap udp udp_sport 5000 udp_dport 6000"
    ip(ns, "l2tp", "add", "tunnel", *tunnel.split(), "local", two_sites.a4, "remote", two_sites.b4)
    session = "tunnel_id 3000 session_id 1000 peer_session_id 2000"
    ip(ns, "l2tp", "add", "session", *session.split())
    with in_netns(ns), Links() as links:
        l2tpeth = _by_name(links)["l2tpeth0"]
        assert (l2tpeth.kind, l2tpeth.mtu, l2tpeth.up) == ("", 1446, False)
        assert "linkinfo" not in link(ns, "l2tpeth0")
        assert _settled(links.dump()) == _ip_view(ns)
        with pytest.raises(KernelError) as excinfo:
            links.delete_link("l2tpeth0")
        assert _kernel_error(excinfo) == (errno.EOPNOTSUPP, Outcome.NOT_SUPPORTED)


# -- errors, as the kernel really answers them -------------------------------------------------


def test_duplicate_bridge_exists(links: Links) -> None:
    links.create_bridge("br0")
    with pytest.raises(KernelError) as excinfo:
        links.create_bridge("br0")
    assert _kernel_error(excinfo) == (errno.EEXIST, Outcome.EXISTS)
    assert "create bridge br0" in str(excinfo.value)


def test_vlan_on_missing_parent_is_not_found(links: Links) -> None:
    with pytest.raises(KernelError) as excinfo:
        links.create_vlan("ghost.5", "ghost", 5)
    assert _kernel_error(excinfo) == (errno.ENODEV, Outcome.NOT_FOUND)
    assert "create vlan ghost.5 id 5 on ghost" in str(excinfo.value)


def test_vlan_id_out_of_range_is_invalid(links: Links, ns: str) -> None:
    _veth(ns)
    with pytest.raises(KernelError) as excinfo:
        links.create_vlan("veth0.4095", "veth0", 4095)
    assert _kernel_error(excinfo) == (errno.ERANGE, Outcome.INVALID)


def test_missing_links_are_not_found(links: Links) -> None:
    calls: list[Callable[[], None]] = [
        lambda: links.set_link("ghost", up=True),
        lambda: links.delete_link("ghost"),
        lambda: links.set_master("ghost", None),
        lambda: links.add_address("ghost", Address("192.0.2.1/24")),
        lambda: links.set_addr_gen_mode("ghost", "none"),
    ]
    for call in calls:
        with pytest.raises(KernelError) as excinfo:
            call()
        assert _kernel_error(excinfo) == (errno.ENODEV, Outcome.NOT_FOUND)
        assert "ghost" in str(excinfo.value)


def test_missing_master_is_not_found(links: Links, ns: str) -> None:
    _veth(ns)
    with pytest.raises(KernelError) as excinfo:
        links.set_master("veth0", "ghost-br")
    assert _kernel_error(excinfo) == (errno.ENODEV, Outcome.NOT_FOUND)


def test_master_that_is_not_a_bridge_is_not_supported(links: Links, ns: str) -> None:
    _veth(ns)
    _veth(ns, "veth2", "veth3")
    with pytest.raises(KernelError) as excinfo:
        links.set_master("veth0", "veth2")
    assert _kernel_error(excinfo) == (errno.EOPNOTSUPP, Outcome.NOT_SUPPORTED)


def test_mtu_out_of_range_is_invalid(links: Links, ns: str) -> None:
    _veth(ns)
    with pytest.raises(KernelError) as excinfo:
        links.set_link("veth0", mtu=67)
    assert _kernel_error(excinfo) == (errno.EINVAL, Outcome.INVALID)
    assert excinfo.value.detail  # the kernel's extack text, e.g. "mtu less than device minimum"


def test_duplicate_address_exists_and_missing_one_is_not_available(links: Links, ns: str) -> None:
    _veth(ns)
    address = Address("198.51.100.1/32", peer="198.51.100.2/32")
    links.add_address("veth0", address)
    with pytest.raises(KernelError) as excinfo:
        links.add_address("veth0", address)
    assert _kernel_error(excinfo) == (errno.EEXIST, Outcome.EXISTS)

    with pytest.raises(KernelError) as excinfo:
        links.del_address("veth0", Address("203.0.113.9/24"))
    assert _kernel_error(excinfo) == (errno.EADDRNOTAVAIL, Outcome.ADDRESS_NOT_AVAILABLE)


# -- namespaces and events ---------------------------------------------------------------------


def test_links_stay_in_the_namespace_they_were_made_in(netns: NetnsFactory) -> None:
    first, second = netns("first"), netns("second")
    home = os.stat("/proc/thread-self/ns/net").st_ino
    with in_netns(first):
        one = Links()
    assert os.stat("/proc/thread-self/ns/net").st_ino == home
    with in_netns(second):
        two = Links()
    with one, two:
        one.create_bridge("br-first")
        assert "br-first" in _by_name(one)
        assert "br-first" not in _by_name(two)
    assert [i["ifname"] for i in ip_json(first, "link", "show")] == ["lo", "br-first"]
    assert [i["ifname"] for i in ip_json(second, "link", "show")] == ["lo"]


def test_links_keep_their_namespace_in_another_thread(
    links: Links, ns: str, netns: NetnsFactory
) -> None:
    """Raw sockets stay in the namespace they were opened in, whichever thread uses them: a
    worker thread in another namespace still reads and changes this one, never its own."""
    other = netns("other")
    errors: list[BaseException] = []
    seen: list[str] = []

    def use() -> None:
        try:
            with in_netns(other):
                links.create_bridge("br-worker")
                seen.extend(o.ifname for o in links.dump())
        except BaseException as exc:  # handed back to the test thread
            errors.append(exc)

    worker = threading.Thread(target=use)
    worker.start()
    worker.join()
    assert errors == []
    assert seen == ["lo", "br-worker"]
    assert [i["ifname"] for i in ip_json(ns, "link", "show")] == ["lo", "br-worker"]
    assert [i["ifname"] for i in ip_json(other, "link", "show")] == ["lo"]
    assert [o.ifname for o in links.dump()] == ["lo", "br-worker"]  # and the first thread too


def _in_thread(netns: str, call: Callable[[], object]) -> object:
    """What ``call`` returns (or raises) in a new thread that is in ``netns``."""
    out: list[object] = []

    def run() -> None:
        with in_netns(netns):
            try:
                out.append(call())
            except Exception as exc:  # handed back to the test thread
                out.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out[0]


def test_kernel_opens_l2tp_only_in_its_own_namespace(ns: str, netns: NetnsFactory) -> None:
    """The L2TP socket opens on first use: a thread in another namespace may not be the one to
    open it (it would land there); once open, any thread uses this namespace's."""
    other = netns("other")
    ip(ns, "link", "add", "br0", "type", "bridge")
    ip(ns, "addr", "add", "192.0.2.1/24", "dev", "br0")
    ip(ns, "link", "set", "br0", "up")
    tunnel = "tunnel_id 7 peer_tunnel_id 8 encap udp udp_sport 5000 udp_dport 6000"
    ip(ns, "l2tp", "add", "tunnel", *tunnel.split(), "local", "192.0.2.1", "remote", "192.0.2.2")
    with in_netns(ns), Kernel() as kernel:
        refused = _in_thread(other, kernel.dump_tunnels)
        assert isinstance(refused, RuntimeError) and "another network namespace" in str(refused)
        names = _in_thread(other, lambda: [link.ifname for link in kernel.dump_links()])
        assert names == ["lo", "br0"]  # the links' sockets were opened here, at creation
        assert kernel.supported()  # opened here, in ns
        tunnels = _in_thread(other, lambda: [t.config.tunnel_id for t in kernel.dump_tunnels()])
        assert tunnels == [7]


def test_link_events_count_changes_in_their_own_namespace_only(netns: NetnsFactory) -> None:
    watched, other = netns("watched"), netns("other")
    with in_netns(watched):
        events = LinkEvents()
    with events:
        assert events.drain() == 0
        ip(other, "link", "add", "br-other", "type", "bridge")
        assert events.drain() == 0

        # Notifications are queued before the kernel answers the request: no waiting needed.
        ip(watched, "link", "add", "br0", "type", "bridge")
        ip(watched, "addr", "add", "192.0.2.1/24", "dev", "br0")
        assert events.drain() >= 2  # RTM_NEWLINK, RTM_NEWADDR
        assert events.drain() == 0  # drained: nothing left
        assert isinstance(events.fileno(), int)
