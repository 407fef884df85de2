"""rtnetlink requests for links and addresses, packed with struct, and the socket that acks them.

pyroute2's IPRoute.nlm_request drives an asyncio loop and its generic encoder for every request,
which made the agent's cold programming of 1000 sessions much slower than ``ip -batch``
(BENCHMARKS.md's history). The agent sends a handful of request shapes, so
they are built here as iproute2 lays them out (include/uapi/linux/rtnetlink.h, if_link.h,
if_addr.h) and sent on one raw NETLINK_ROUTE socket. tests/unit/test_rtrequest.py holds every
shape byte for byte against pyroute2's ifinfmsg/ifaddrmsg encoding of the same message.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from typing import Final

NLMSG_ERROR: Final = 2
NLM_F_REQUEST: Final = 0x01
NLM_F_ACK: Final = 0x04
NLM_F_EXCL: Final = 0x200
NLM_F_CREATE: Final = 0x400
NLM_F_CAPPED: Final = 0x100
NLM_F_ACK_TLVS: Final = 0x200
NLMSGERR_ATTR_MSG: Final = 1
SOL_NETLINK: Final = 270
NETLINK_CAP_ACK: Final = 10
NETLINK_EXT_ACK: Final = 11

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_AF_SPEC = 3, 4, 5, 10, 18, 26
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_VLAN_ID = 1, 2, 1
IFLA_INET6_ADDR_GEN_MODE: Final = 8
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP: Final = 0x1
IN6_ADDR_GEN_MODE_NONE: Final = 1
ADDR_GEN_MODES: Final = {"eui64": 0, "none": 1, "stable_secret": 2, "random": 3}
RTM_NEWQDISC: Final = 36
NLM_F_REPLACE: Final = 0x100
TCA_KIND: Final = 1
TC_H_ROOT: Final = 0xFFFFFFFF
_TCMSG: Final = struct.Struct("=BxxxiIII")  # family, ifindex, handle, parent, info

_NLMSGHDR: Final = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG: Final = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG: Final = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_NLA: Final = struct.Struct("=HH")
_U32: Final = struct.Struct("=I")
_RECV: Final = 1 << 16


# --- packing (pure) -------------------------------------------------------------------------


def nla(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes. Nests carry no NLA_F_NESTED, as pyroute2 and ip send."""
    size = _NLA.size + len(payload)
    return _NLA.pack(size, kind) + payload + b"\0" * (-size % 4)


def u32(kind: int, value: int) -> bytes:
    return nla(kind, _U32.pack(value))


def string(kind: int, value: str) -> bytes:
    return nla(kind, value.encode() + b"\0")


def link_request(
    msg_type: int,
    flags: int,
    seq: int,
    ifname: str,
    attrs: bytes = b"",
    *,
    ifi_flags: int = 0,
    change: int = 0,
) -> bytes:
    """An ifinfomsg addressing the link by IFLA_IFNAME (ifindex 0: no lookup round trip)."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, ifi_flags, change)
    body += string(IFLA_IFNAME, ifname) + attrs
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


def set_link(seq: int, ifname: str, *, up: bool | None, mtu: int | None) -> bytes:
    """Admin state and/or MTU; only IFF_UP is in ``change``, so other flags keep their value."""
    return link_request(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        ifname,
        u32(IFLA_MTU, mtu) if mtu is not None else b"",
        ifi_flags=IFF_UP if up else 0,
        change=IFF_UP if up is not None else 0,
    )


def set_master(seq: int, ifname: str, master_index: int) -> bytes:
    """IFLA_MASTER: the bridge's ifindex, 0 to release (ip link set X nomaster)."""
    return link_request(
        RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifname, u32(IFLA_MASTER, master_index)
    )


def create_bridge(seq: int, name: str) -> bytes:
    info = nla(IFLA_LINKINFO, string(IFLA_INFO_KIND, "bridge"))
    return link_request(
        RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, seq, name, info
    )


def create_vlan(seq: int, name: str, parent_index: int, vlan_id: int) -> bytes:
    data = nla(IFLA_INFO_DATA, nla(IFLA_VLAN_ID, struct.pack("=H", vlan_id)))
    info = nla(IFLA_LINKINFO, string(IFLA_INFO_KIND, "vlan") + data)
    return link_request(
        RTM_NEWLINK,
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        seq,
        name,
        u32(IFLA_LINK, parent_index) + info,
    )


def delete_link(seq: int, name: str) -> bytes:
    return link_request(RTM_DELLINK, NLM_F_REQUEST | NLM_F_ACK, seq, name)


def addr_gen_mode(seq: int, ifname: str, mode: str) -> bytes:
    """ip link set dev X addrgenmode MODE: IFLA_AF_SPEC -> AF_INET6 -> IFLA_INET6_ADDR_GEN_MODE."""
    value = nla(IFLA_INET6_ADDR_GEN_MODE, struct.pack("=B", ADDR_GEN_MODES[mode]))
    spec = nla(IFLA_AF_SPEC, nla(socket.AF_INET6, value))
    return link_request(RTM_NEWLINK, NLM_F_REQUEST | NLM_F_ACK, seq, ifname, spec)


def replace_root_qdisc(seq: int, index: int, kind: str) -> bytes:
    """tc qdisc replace dev X root KIND (no options: the qdisc's defaults), as tc sends it."""
    body = _TCMSG.pack(socket.AF_UNSPEC, index, 0, TC_H_ROOT, 0) + string(TCA_KIND, kind)
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), RTM_NEWQDISC, flags, seq, 0) + body


def get_link(seq: int, ifname: str) -> bytes:
    """RTM_GETLINK of one link by name: answered by its RTM_NEWLINK, or an error."""
    return link_request(RTM_GETLINK, NLM_F_REQUEST, seq, ifname)


_Local = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_Peer = ipaddress.IPv4Address | ipaddress.IPv6Address | None


def address_request(
    msg_type: int, flags: int, seq: int, index: int, local: _Local, peer: _Peer
) -> bytes:
    """As ip addr add/del sends it: IFA_LOCAL = our end, IFA_ADDRESS = the peer (or our end)."""
    family = socket.AF_INET6 if local.version == 6 else socket.AF_INET
    body = _IFADDRMSG.pack(family, local.network.prefixlen, 0, 0, index)
    body += nla(IFA_LOCAL, local.ip.packed) + nla(IFA_ADDRESS, (peer or local.ip).packed)
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, flags, seq, 0) + body


def add_address(seq: int, index: int, local: _Local, peer: _Peer) -> bytes:
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    return address_request(RTM_NEWADDR, flags, seq, index, local, peer)


def del_address(seq: int, index: int, local: _Local, peer: _Peer) -> bytes:
    return address_request(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, seq, index, local, peer)


# --- answers (pure) -------------------------------------------------------------------------


def _error_text(buf: bytes, offset: int, length: int, flags: int) -> str:
    """The kernel's extack message (NLMSGERR_ATTR_MSG) of an NLMSG_ERROR, if it sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # error code, then the request's header and, unless capped, its payload; then the TLVs
    echoed = 16 if flags & NLM_F_CAPPED else (_U32.unpack_from(buf, offset + 20)[0] + 3) & ~3
    start, end = offset + 20 + echoed, offset + length
    while start + _NLA.size <= end:
        size, kind = _NLA.unpack_from(buf, start)
        if size < _NLA.size:
            break
        if kind == NLMSGERR_ATTR_MSG:
            return buf[start + 4 : start + size].split(b"\0", 1)[0].decode(errors="replace")
        start += (size + 3) & ~3
    return ""


class Answer:
    """What the kernel answered one request: an errno (0: done) and its message, or a reply."""

    __slots__ = ("errno", "message", "reply")

    def __init__(self, errno: int = 0, message: str = "", reply: bytes = b"") -> None:
        self.errno = errno
        self.message = message
        self.reply = reply

    def error(self) -> OSError | None:
        """An OSError(errno, kernel's message or strerror) for kernel_error(), None when done."""
        if not self.errno:
            return None
        return OSError(self.errno, self.message or os.strerror(self.errno))


def answers(chunk: bytes) -> list[tuple[int, Answer]]:
    """(seq, answer) for every ack, error or single reply in one recv() of a request socket."""
    out = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(chunk):
        length, msg_type, flags, seq, _ = _NLMSGHDR.unpack_from(chunk, offset)
        if length < _NLMSGHDR.size or offset + length > len(chunk):
            raise ValueError(f"truncated netlink message at offset {offset}")
        if msg_type == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", chunk, offset + _NLMSGHDR.size)
            text = _error_text(chunk, offset, length, flags) if code else ""
            out.append((seq, Answer(-code, text)))
        else:
            out.append((seq, Answer(reply=chunk[offset : offset + length])))
        offset += (length + 3) & ~3
    return out


def ifindex_of(reply: bytes) -> int:
    """The ifindex in an RTM_NEWLINK answering get_link."""
    return int(_IFINFOMSG.unpack_from(reply, _NLMSGHDR.size)[2])


# --- the socket -----------------------------------------------------------------------------


class RtRequests:
    """One raw NETLINK_ROUTE socket for requests, bound to the namespace it was opened in.

    One request at a time, each answered before the next is sent, as ``ip -batch`` does:
    keeping many in flight was measured (1000 link changes, natively) to save nothing, since
    rtnetlink does the work inside sendmsg. Extended acks are on, so a failure carries the
    kernel's own explanation; acks are capped (the request is not echoed back).
    """

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self._sock.bind((0, 0))
        except BaseException:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def seq(self) -> int:
        """The sequence number for the next request."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        return self._seq

    def send(self, request: bytes) -> Answer:
        """Send one request (its sequence number from seq()) and return the kernel's answer;
        answers to other sequence numbers (left by an interrupted earlier call) are dropped."""
        seq = _NLMSGHDR.unpack_from(request)[3]
        self._sock.send(request)
        while True:
            for got, answer in answers(self._sock.recv(_RECV)):
                if got == seq:
                    return answer
