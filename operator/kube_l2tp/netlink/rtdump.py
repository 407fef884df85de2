"""Links and addresses from one RTM_GETLINK and one RTM_GETADDR dump, decoded with struct.

pyroute2's generic decoder made the agent's every observe of 1000 sessions take seconds
(figures in the history of BENCHMARKS.md). The agent needs
a handful of attributes (name, MTU, flags, master, kind, VLAN id and parent, addresses), so this
reads just those, as the kernel lays them out (include/uapi/linux/if_link.h, if_addr.h,
rtnetlink.h). tests/unit/test_rtdump.py checks it against pyroute2 on captured dumps.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import time
from collections.abc import Iterable, Iterator
from typing import Final

from kube_l2tp.core.state import Address, ObservedLink

NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP, NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO = 3, 4, 5, 10, 18
IFLA_QDISC, IFLA_AF_SPEC, IFLA_INET6_ADDR_GEN_MODE, AF_INET6 = 6, 26, 8, 10
ADDR_GEN_MODES: Final = ("eui64", "none", "stable_secret", "random")  # IN6_ADDR_GEN_MODE_*
IFLA_INFO_KIND, IFLA_INFO_DATA, IFLA_VLAN_ID = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_NLA = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_U16 = struct.Struct("=H")
_RECV = 1 << 16


class DumpInterruptedError(Exception):
    """NLM_F_DUMP_INTR: the table changed during the dump; the caller dumps again."""


def request(msg_type: int, seq: int) -> bytes:
    """A dump request for every link (ifinfomsg) or every address (ifaddrmsg), any family."""
    body = (
        _IFINFOMSG.pack(0, 0, 0, 0, 0)
        if msg_type == RTM_GETLINK
        else _IFADDRMSG.pack(0, 0, 0, 0, 0)
    )
    return (
        _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
        + body
    )


def messages(chunks: Iterable[bytes], seq: int) -> Iterator[tuple[int, bytes, int, int]]:
    """(type, chunk, start and end of its payload) of every message answering ``seq``.

    Messages are not copied out of their chunk: a link message is about 1.5 KiB, of which the
    agent reads a few attributes.
    """
    unpack = _NLMSGHDR.unpack_from
    for chunk in chunks:
        offset = 0
        while offset + _NLMSGHDR.size <= len(chunk):
            length, msg_type, flags, msg_seq, _ = unpack(chunk, offset)
            if length < _NLMSGHDR.size:
                return
            if msg_seq == seq:
                if msg_type == NLMSG_DONE:
                    if flags & NLM_F_DUMP_INTR:
                        raise DumpInterruptedError
                    return
                if msg_type == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", chunk, offset + _NLMSGHDR.size)
                    if code:
                        raise OSError(-code, errno.errorcode.get(-code, str(-code)))
                    return
                if flags & NLM_F_DUMP_INTR:
                    raise DumpInterruptedError
                yield msg_type, chunk, offset + _NLMSGHDR.size, offset + length
            offset += (length + 3) & ~3


_LINK_ATTRS: Final = frozenset(
    (IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER, IFLA_LINKINFO, IFLA_QDISC, IFLA_AF_SPEC)
)
_AF_ATTRS: Final = frozenset((AF_INET6,))
_INET6_ATTRS: Final = frozenset((IFLA_INET6_ADDR_GEN_MODE,))
_INFO_ATTRS: Final = frozenset((IFLA_INFO_KIND, IFLA_INFO_DATA))
_VLAN_ATTRS: Final = frozenset((IFLA_VLAN_ID,))
_ADDR_ATTRS: Final = frozenset((IFA_ADDRESS, IFA_LOCAL))


def _attrs(buf: bytes, start: int, end: int, wanted: frozenset[int]) -> dict[int, bytes]:
    """The payloads of the ``wanted`` attributes in buf[start:end] (the first of each kind);
    the others (stats, AF_SPEC...: most of a link message) are skipped, not copied."""
    out: dict[int, bytes] = {}
    unpack = _NLA.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind in wanted and kind not in out:
            out[kind] = buf[start + 4 : start + length]
        start += (length + 3) & ~3
    return out


def _string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode()


def link_of(msg: bytes, offset: int, end: int, addresses: dict[int, list[Address]]) -> ObservedLink:
    """The link in the RTM_NEWLINK whose payload is msg[offset:end], with its addresses."""
    _, _, index, flags, _ = _IFINFOMSG.unpack_from(msg, offset)
    attrs = _attrs(msg, offset + _IFINFOMSG.size, end, _LINK_ATTRS)
    kind = ""
    vlan_id = parent = None
    info = attrs.get(IFLA_LINKINFO)
    if info is not None:
        nested = _attrs(info, 0, len(info), _INFO_ATTRS)
        kind = _string(nested.get(IFLA_INFO_KIND, b""))
        data = nested.get(IFLA_INFO_DATA)
        if kind == "vlan" and data is not None:
            vid = _attrs(data, 0, len(data), _VLAN_ATTRS).get(IFLA_VLAN_ID)
            vlan_id = _U16.unpack_from(vid)[0] if vid else None
            lower = attrs.get(IFLA_LINK)
            parent = _U32.unpack_from(lower)[0] if lower else None
    master = attrs.get(IFLA_MASTER)
    mtu = attrs.get(IFLA_MTU)
    qdisc = attrs.get(IFLA_QDISC)
    return ObservedLink(
        ifname=_string(attrs.get(IFLA_IFNAME, b"")),
        index=index,
        kind=kind,
        up=bool(flags & IFF_UP),
        mtu=_U32.unpack_from(mtu)[0] if mtu else 0,
        master_index=(_U32.unpack_from(master)[0] or None) if master else None,
        addresses=tuple(addresses.get(index, ())),
        vlan_id=vlan_id,
        parent_index=parent,
        addr_gen_mode=_addr_gen_mode(attrs.get(IFLA_AF_SPEC)),
        qdisc=_string(qdisc) if qdisc is not None else None,
    )


def _addr_gen_mode(af_spec: bytes | None) -> str | None:
    """IFLA_AF_SPEC -> AF_INET6 -> IFLA_INET6_ADDR_GEN_MODE by name; None: no IPv6 on the link."""
    if af_spec is None:
        return None
    inet6 = _attrs(af_spec, 0, len(af_spec), _AF_ATTRS).get(AF_INET6)
    if inet6 is None:
        return None
    mode = _attrs(inet6, 0, len(inet6), _INET6_ATTRS).get(IFLA_INET6_ADDR_GEN_MODE)
    if not mode:
        return None
    return ADDR_GEN_MODES[mode[0]] if mode[0] < len(ADDR_GEN_MODES) else str(mode[0])


def _ip_text(family: int, raw: bytes) -> str:
    """Canonical text, as ipaddress writes it (and core.desired compares): inet_ntop agrees for
    IPv4 and is much faster; IPv6 keeps ipaddress (inet_ntop differs, e.g. for ::ffff:a.b.c.d)."""
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw)
    return str(ipaddress.IPv6Address(raw))


def address_of(msg: bytes, offset: int, end: int) -> tuple[int, Address | None]:
    """(ifindex, address) of the RTM_NEWADDR whose payload is msg[offset:end]; IFA_LOCAL is our
    end, IFA_ADDRESS the peer when they differ (ip-address(8)). IPv6 link-local addresses
    (fe80::/10) are reported too: one can be declared, and one left out never converged (the
    agent re-added it at every reconcile and met EEXIST). The plan touches only declared and
    owned addresses, so the kernel's own link-locals are left alone all the same."""
    family, prefixlen, _, _, index = _IFADDRMSG.unpack_from(msg, offset)
    attrs = _attrs(msg, offset + _IFADDRMSG.size, end, _ADDR_ATTRS)
    raw_address = attrs.get(IFA_ADDRESS)
    raw_local = attrs.get(IFA_LOCAL) or raw_address
    size = {socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
    if raw_local is None or size is None or len(raw_local) != size:
        return index, None
    peer = None
    if raw_address is not None and raw_address != raw_local and len(raw_address) == size:
        peer = f"{_ip_text(family, raw_address)}/{prefixlen}"
    return index, Address(address=f"{_ip_text(family, raw_local)}/{prefixlen}", peer=peer)


def decode(
    link_chunks: Iterable[bytes], addr_chunks: Iterable[bytes], seqs: tuple[int, int]
) -> list[ObservedLink]:
    """Links (sorted by index) with their addresses, from the two dumps' raw replies."""
    addresses: dict[int, list[Address]] = {}
    for msg_type, chunk, start, end in messages(addr_chunks, seqs[1]):
        if msg_type == RTM_NEWADDR:
            index, address = address_of(chunk, start, end)
            if address is not None:
                addresses.setdefault(index, []).append(address)
    links = [
        link_of(chunk, start, end, addresses)
        for msg_type, chunk, start, end in messages(link_chunks, seqs[0])
        if msg_type == RTM_NEWLINK
    ]
    return sorted(links, key=lambda link: link.index)


class RtDumper:
    """Its own NETLINK_ROUTE socket, bound to the namespace of the thread that creates it."""

    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def raw(self, msg_type: int) -> tuple[list[bytes], int]:
        """The reply chunks of one dump, up to its NLMSG_DONE, and the sequence number used."""
        self._seq = self._seq % 0x7FFFFFFF + 1
        self._sock.send(request(msg_type, self._seq))
        chunks = []
        while True:
            chunk = self._sock.recv(_RECV)
            chunks.append(chunk)
            if _ends(chunk, self._seq):
                return chunks, self._seq

    def dump(self, attempts: int = 4, pause: float = 0.02) -> list[ObservedLink]:
        """Links and addresses; a dump interrupted by links coming and going (NLM_F_DUMP_INTR,
        e.g. while a large tunnel's interfaces unregister) is retried after a pause that
        doubles, then DumpInterruptedError is raised (the caller backs off further)."""
        for attempt in range(attempts):
            links, seq_links = self.raw(RTM_GETLINK)
            addrs, seq_addrs = self.raw(RTM_GETADDR)
            try:
                return decode(links, addrs, (seq_links, seq_addrs))
            except DumpInterruptedError:
                if attempt == attempts - 1:
                    raise
                time.sleep(pause * 2**attempt)
        raise AssertionError("unreachable")


def _ends(chunk: bytes, seq: int) -> bool:
    offset = 0
    while offset + _NLMSGHDR.size <= len(chunk):
        length, msg_type, _, msg_seq, _ = _NLMSGHDR.unpack_from(chunk, offset)
        if length < _NLMSGHDR.size:
            return True
        if msg_seq == seq and msg_type in (NLMSG_DONE, NLMSG_ERROR):
            return True
        offset += (length + 3) & ~3
    return False
