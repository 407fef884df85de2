"""The struct-packed rtnetlink requests equal pyroute2's encoding of the same messages, and the
kernel's answers (acks, errors with extack text, a link by name) are read as the kernel sends
them. The kernel suite (tests/kernel/test_links.py) runs the same requests against a kernel."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from kube_l2tp.core.state import Address, KernelError, Outcome
from kube_l2tp.netlink import rtrequest
from kube_l2tp.netlink.links import _address_parts

ACK = NLM_F_REQUEST | NLM_F_ACK
HDR = struct.Struct("=IHHII")


def _pyroute2(msg: Any, msg_type: int, flags: int, seq: int) -> bytes:
    msg["header"]["type"] = msg_type
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


def _link(ifname: str, *attrs: tuple[str, object], flags: int = 0, change: int = 0) -> Any:
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["flags"] = flags
    msg["change"] = change
    msg["attrs"] = [("IFLA_IFNAME", ifname), *attrs]
    return msg


@pytest.mark.parametrize(
    ("up", "mtu", "flags", "change", "attrs"),
    [
        (True, 1400, IFF_UP, IFF_UP, [("IFLA_MTU", 1400)]),
        (False, None, 0, IFF_UP, []),
        (None, 1500, 0, 0, [("IFLA_MTU", 1500)]),
    ],
)
def test_set_link(
    up: bool | None, mtu: int | None, flags: int, change: int, attrs: list[tuple[str, object]]
) -> None:
    ours = rtrequest.set_link(7, "pw0", up=up, mtu=mtu)
    reference = _link("pw0", *attrs, flags=flags, change=change)
    assert ours == _pyroute2(reference, rtrequest.RTM_NEWLINK, ACK, 7)


def test_link_requests_equal_pyroute2() -> None:
    create = ACK | NLM_F_CREATE | NLM_F_EXCL
    bridge = ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]})
    vlan_info = [
        ("IFLA_INFO_KIND", "vlan"),
        ("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", 5)]}),
    ]
    inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", rtrequest.IN6_ADDR_GEN_MODE_NONE)]}
    cases = [
        (rtrequest.create_bridge(3, "br0"), _link("br0", bridge), rtrequest.RTM_NEWLINK, create),
        (
            rtrequest.create_vlan(4, "pw0.5", 9, 5),
            _link("pw0.5", ("IFLA_LINK", 9), ("IFLA_LINKINFO", {"attrs": vlan_info})),
            rtrequest.RTM_NEWLINK,
            create,
        ),
        (
            rtrequest.set_master(5, "eth1", 12),
            _link("eth1", ("IFLA_MASTER", 12)),
            rtrequest.RTM_NEWLINK,
            ACK,
        ),
        (
            rtrequest.set_master(6, "eth1", 0),
            _link("eth1", ("IFLA_MASTER", 0)),
            rtrequest.RTM_NEWLINK,
            ACK,
        ),
        (rtrequest.delete_link(7, "br0"), _link("br0"), rtrequest.RTM_DELLINK, ACK),
        (
            rtrequest.addr_gen_mode(8, "pw0", "none"),
            _link("pw0", ("IFLA_AF_SPEC", {"attrs": [("AF_INET6", inet6)]})),
            rtrequest.RTM_NEWLINK,
            ACK,
        ),
        (rtrequest.get_link(9, "lo"), _link("lo"), rtrequest.RTM_GETLINK, NLM_F_REQUEST),
    ]
    for ours, reference, msg_type, flags in cases:
        seq = HDR.unpack_from(ours)[3]
        assert ours == _pyroute2(reference, msg_type, flags, seq), reference


@pytest.mark.parametrize(
    "address",
    [
        Address("192.0.2.1/24"),
        Address("198.51.100.1/32", peer="198.51.100.2/32"),
        Address("2001:db8::1/64"),
        Address("2001:db8:1::1/128", peer="2001:db8:1::2/128"),
    ],
)
def test_address_requests_equal_pyroute2(address: Address) -> None:
    local, peer = _address_parts(address)

    def reference() -> Any:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET6 if local.version == 6 else socket.AF_INET
        msg["prefixlen"] = local.network.prefixlen
        msg["index"] = 4
        msg["attrs"] = [("IFA_LOCAL", str(local.ip)), ("IFA_ADDRESS", str(peer or local.ip))]
        return msg

    add = _pyroute2(reference(), rtrequest.RTM_NEWADDR, ACK | NLM_F_CREATE | NLM_F_EXCL, 11)
    assert rtrequest.add_address(11, 4, local, peer) == add
    delete = _pyroute2(reference(), rtrequest.RTM_DELADDR, ACK, 12)
    assert rtrequest.del_address(12, 4, local, peer) == delete


def test_address_parts_take_the_prefix_from_the_peer_as_ip_does() -> None:
    """``ip addr add 198.51.100.1/24 peer 198.51.100.2`` sends prefix length 32, the peer's
    (iproute2 ipaddr_modify). It raised ValueError here, which stopped the whole agent."""
    assert _address_parts(Address("198.51.100.1/24", peer="198.51.100.2")) == (
        ipaddress.ip_interface("198.51.100.1/32"),
        ipaddress.ip_address("198.51.100.2"),
    )
    assert _address_parts(Address("198.51.100.1/32", peer="198.51.100.2/24")) == (
        ipaddress.ip_interface("198.51.100.1/24"),
        ipaddress.ip_address("198.51.100.2"),
    )
    with pytest.raises(KernelError, match="different families") as info:
        _address_parts(Address("198.51.100.1/32", peer="2001:db8::2/32"))
    assert info.value.outcome is Outcome.INVALID
    assert _address_parts(Address("192.0.2.1/24")) == (
        ipaddress.ip_interface("192.0.2.1/24"),
        None,
    )


def _error(seq: int, code: int, text: str = "", *, capped: bool = True) -> bytes:
    """An NLMSG_ERROR as the kernel sends it with NETLINK_EXT_ACK (and CAP_ACK when capped)."""
    request = rtrequest.set_link(seq, "pw0", up=True, mtu=67)
    echoed = request[:16] if capped else request
    tlvs = rtrequest.string(rtrequest.NLMSGERR_ATTR_MSG, text) if text else b""
    flags = (rtrequest.NLM_F_CAPPED if capped else 0) | (rtrequest.NLM_F_ACK_TLVS if text else 0)
    body = struct.pack("=i", -code) + echoed + tlvs
    return HDR.pack(16 + len(body), rtrequest.NLMSG_ERROR, flags, seq, 0) + body


def test_answers_read_acks_errors_and_extack_text() -> None:
    chunk = _error(1, 0) + _error(2, errno.EINVAL, "mtu less than device minimum")
    chunk += _error(3, errno.ENODEV) + _error(4, errno.EEXIST, "File exists", capped=False)
    got = {seq: (a.errno, a.message) for seq, a in rtrequest.answers(chunk)}
    assert got == {
        1: (0, ""),
        2: (errno.EINVAL, "mtu less than device minimum"),
        3: (errno.ENODEV, ""),
        4: (errno.EEXIST, "File exists"),
    }
    (_, ok), (_, bad), (_, plain), _ = rtrequest.answers(chunk)
    assert ok.error() is None
    assert bad.error() is not None and bad.error().args == (  # type: ignore[union-attr]
        errno.EINVAL,
        "mtu less than device minimum",
    )
    assert plain.error().args == (errno.ENODEV, "No such device")  # type: ignore[union-attr]


def test_a_link_reply_carries_its_index() -> None:
    body = struct.pack("=BxHiII", 0, 1, 42, 1, 0) + rtrequest.string(rtrequest.IFLA_IFNAME, "lo")
    reply = HDR.pack(16 + len(body), rtrequest.RTM_NEWLINK, 0, 5, 0) + body
    ((seq, answer),) = rtrequest.answers(reply)
    assert (seq, answer.errno, rtrequest.ifindex_of(answer.reply)) == (5, 0, 42)


def test_truncated_answer_is_an_error() -> None:
    with pytest.raises(ValueError, match="truncated"):
        rtrequest.answers(_error(1, 0)[:-4])


class _Replay:
    """A socket that answers with given chunks, as the kernel's queue would hold them."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.sent: list[bytes] = []

    def send(self, data: bytes) -> int:
        self.sent.append(data)
        return len(data)

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0)

    def close(self) -> None:
        pass


def test_send_skips_answers_left_by_an_interrupted_call() -> None:
    requests = rtrequest.RtRequests()
    requests.close()
    replay = _Replay([_error(1, errno.EEXIST), _error(2, 0) + _error(9, errno.EPERM)])
    requests._sock = replay  # type: ignore[assignment]
    requests._seq = 1
    answer = requests.send(rtrequest.delete_link(requests.seq(), "br0"))
    assert (answer.errno, len(replay.sent)) == (0, 1)


@pytest.mark.parametrize(("mode", "value"), [("eui64", 0), ("none", 1), ("random", 3)])
def test_addr_gen_mode_equals_pyroute2(mode: str, value: int) -> None:
    inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", value)]}
    reference = _link("pw0", ("IFLA_AF_SPEC", {"attrs": [("AF_INET6", inet6)]}))
    ours = rtrequest.addr_gen_mode(8, "pw0", mode)
    assert ours == _pyroute2(reference, rtrequest.RTM_NEWLINK, ACK, 8)


@pytest.mark.parametrize("kind", ["noqueue", "pfifo_fast", "fq_codel"])
def test_replace_root_qdisc_equals_pyroute2(kind: str) -> None:
    from pyroute2.netlink.rtnl.tcmsg import tcmsg

    msg = tcmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["index"] = 12
    msg["handle"] = 0
    msg["parent"] = rtrequest.TC_H_ROOT
    msg["attrs"] = [("TCA_KIND", kind)]
    flags = ACK | NLM_F_CREATE | rtrequest.NLM_F_REPLACE
    ours = rtrequest.replace_root_qdisc(5, 12, kind)
    assert ours == _pyroute2(msg, rtrequest.RTM_NEWQDISC, flags, 5)
