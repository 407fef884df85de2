"""The rtnetlink half of the kernel layer: links (bridges, VLANs, l2tpeth...) and their addresses.

A narrow, typed port over pyroute2's IPRoute: frozen data from kube_l2tp.core.state in and out,
every failure a KernelError whose Outcome says what it means. Requests are built as raw
ifinfmsg/ifaddrmsg with the kernel's attribute names (IFLA_*, IFA_*), so they read against
include/uapi/linux/if_link.h and if_addr.h, and skip pyroute2's request normalisation.

Threads: pyroute2 0.9.7 opens a new socket for each thread that uses an IPRoute, in that thread's
network namespace, so a Links object shared with another thread would silently read and change
another namespace (and leak sockets). Links refuses that: create it in the thread that uses it.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import threading
from types import TracebackType
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV6_IFADDR,
    RTMGRP_LINK,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP, ifinfmsg

from kube_l2tp.core.state import Address, KernelError, ObservedLink
from kube_l2tp.netlink import rtdump
from kube_l2tp.netlink.errors import kernel_error

IN6_ADDR_GEN_MODE_NONE = 1  # include/uapi/linux/if_link.h
_DUMP_ATTEMPTS = 3  # a dump racing with a change is flagged NLM_F_DUMP_INTR; retry it

_Msg = Any  # a decoded pyroute2 nlmsg; the library is untyped


class Links:
    """Reads and changes links and addresses in the caller's network namespace.

    One command socket: no multicast groups (``groups=0``), extended acks on so that a failure
    carries the kernel's own explanation ("Unknown device type", ...).
    """

    def __init__(self) -> None:
        try:
            self._ipr = IPRoute(groups=0, ext_ack=True)
        except OSError as exc:
            raise kernel_error("open rtnetlink socket", exc) from exc
        # pyroute2 0.9.7: IPRoute skips NetlinkSocket.__init__, so its public nlm_request() fails
        # with KeyError 'nlm_generator'. False makes it return a tuple, as documented.
        self._ipr.status.setdefault("nlm_generator", False)
        self._thread = threading.get_ident()
        try:
            self._dumper = rtdump.RtDumper()
        except OSError as exc:
            self._ipr.close()
            raise kernel_error("open rtnetlink socket", exc) from exc

    def close(self) -> None:
        self._ipr.close()
        self._dumper.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------

    def dump(self) -> list[ObservedLink]:
        """Every link with its addresses (link-local IPv6 left out: the kernel makes those).

        Decoded with struct (rtdump): about 9x faster than pyroute2's decoder, which stays as
        the reference (dump_pyroute2) the unit tests compare it with.
        """
        self._check_thread("dump links")
        try:
            return self._dumper.dump()
        except (OSError, rtdump.DumpInterruptedError) as exc:
            raise kernel_error("dump links", exc) from exc

    def dump_pyroute2(self) -> list[ObservedLink]:
        """The same as dump(), through pyroute2's generic decoder (slow; a reference)."""
        link_msgs = self._dump("dump links", ifinfmsg(), RTM_GETLINK)
        addresses: dict[int, list[Address]] = {}
        for msg in self._dump("dump addresses", ifaddrmsg(), RTM_GETADDR):
            address = _address_of(msg)
            if address is not None:
                addresses.setdefault(msg["index"], []).append(address)
        links = [_link_of(msg, tuple(addresses.get(msg["index"], ()))) for msg in link_msgs]
        return sorted(links, key=lambda link: link.index)

    # -- changing --------------------------------------------------------------------------------

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        """Set admin state and/or MTU in one request; None leaves that property alone."""
        if up is None and mtu is None:
            return
        msg = _link_by_name(ifname)
        if up is not None:
            msg["change"] = IFF_UP  # only IFF_UP changes; other flags keep their value
            msg["flags"] = IFF_UP if up else 0
        if mtu is not None:
            msg["attrs"].append(("IFLA_MTU", mtu))
        self._ack(f"set link {ifname}", msg, RTM_NEWLINK)

    def set_master(self, ifname: str, master: str | None) -> None:
        """Enslave ``ifname`` to bridge ``master``; None releases it (ip link set X nomaster)."""
        operation = f"set master of {ifname} to {master or 'none'}"
        index = 0 if master is None else self._index(operation, master)
        msg = _link_by_name(ifname)
        msg["attrs"].append(("IFLA_MASTER", index))
        self._ack(operation, msg, RTM_NEWLINK)

    def add_address(self, ifname: str, addr: Address) -> None:
        operation = f"add address {_describe(addr)} on {ifname}"
        msg = _address_msg(self._index(operation, ifname), addr)
        self._ack(operation, msg, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL)

    def del_address(self, ifname: str, addr: Address) -> None:
        operation = f"delete address {_describe(addr)} on {ifname}"
        msg = _address_msg(self._index(operation, ifname), addr)
        self._ack(operation, msg, RTM_DELADDR)

    def create_bridge(self, name: str) -> None:
        msg = _link_by_name(name)
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge")]}))
        self._ack(f"create bridge {name}", msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    def create_vlan(self, name: str, parent: str, vlan_id: int) -> None:
        operation = f"create vlan {name} id {vlan_id} on {parent}"
        msg = _link_by_name(name)
        msg["attrs"].append(("IFLA_LINK", self._index(operation, parent)))
        info = [
            ("IFLA_INFO_KIND", "vlan"),
            ("IFLA_INFO_DATA", {"attrs": [("IFLA_VLAN_ID", vlan_id)]}),
        ]
        msg["attrs"].append(("IFLA_LINKINFO", {"attrs": info}))
        self._ack(operation, msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL)

    def delete_link(self, name: str) -> None:
        self._ack(f"delete link {name}", _link_by_name(name), RTM_DELLINK)

    def set_addr_gen_mode_none(self, ifname: str) -> None:
        """No IPv6 link-local address from now on: a bridge port needs no IPv6 of its own.

        Set it before the link goes up; an address already made is left as it is.
        """
        msg = _link_by_name(ifname)
        inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]}
        msg["attrs"].append(("IFLA_AF_SPEC", {"attrs": [("AF_INET6", inet6)]}))
        self._ack(f"set addrgenmode none on {ifname}", msg, RTM_NEWLINK)

    # -- plumbing --------------------------------------------------------------------------------

    def _index(self, operation: str, ifname: str) -> int:
        """The ifindex of ``ifname``; a missing link fails ``operation`` with NOT_FOUND."""
        (reply,) = self._request(operation, _link_by_name(ifname), RTM_GETLINK, NLM_F_REQUEST)
        return int(reply["index"])

    def _ack(self, operation: str, msg: _Msg, msg_type: int, extra_flags: int = 0) -> None:
        self._request(operation, msg, msg_type, NLM_F_REQUEST | NLM_F_ACK | extra_flags)

    def _dump(self, operation: str, msg: _Msg, msg_type: int) -> tuple[_Msg, ...]:
        flags = NLM_F_REQUEST | NLM_F_DUMP
        for _ in range(_DUMP_ATTEMPTS - 1):
            try:
                return self._request(operation, msg, msg_type, flags)
            except KernelError as exc:
                if not isinstance(exc.__cause__, NetlinkDumpInterrupted):
                    raise
        return self._request(operation, msg, msg_type, flags)

    def _check_thread(self, operation: str) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                f"{operation}: Links used from a thread other than the one that created it; "
                "pyroute2 would open a new socket in that thread's network namespace"
            )

    def _request(self, operation: str, msg: _Msg, msg_type: int, flags: int) -> tuple[_Msg, ...]:
        self._check_thread(operation)
        try:
            return tuple(self._ipr.nlm_request(msg, msg_type=msg_type, msg_flags=flags))
        except (NetlinkError, OSError) as exc:
            raise kernel_error(operation, exc) from exc


class LinkEvents:
    """Wakes the agent when a link or an address changes, so tampering is repaired promptly.

    It only counts notifications: the agent then re-reads everything with Links.dump() (level-
    based, nothing to lose). A raw non-blocking socket keeps it select()/asyncio friendly.
    """

    def __init__(self) -> None:
        groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
        try:
            self._sock = socket.socket(
                socket.AF_NETLINK,
                socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
                socket.NETLINK_ROUTE,
            )
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self._sock.bind((0, groups))
        except OSError as exc:
            raise kernel_error("subscribe to link events", exc) from exc

    def fileno(self) -> int:
        return self._sock.fileno()

    def drain(self) -> int:
        """Read all pending notifications without blocking; return how many there were.

        An overrun receive buffer (ENOBUFS: notifications were lost) counts as one change, since
        the caller re-reads the whole state anyway.
        """
        count = 0
        while True:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                return count
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise kernel_error("read link events", exc) from exc
                count += 1
                continue
            count += _count_messages(data)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_NLMSG_MIN_TYPE = 0x10  # below: NOOP, ERROR, DONE, OVERRUN


def _count_messages(data: bytes) -> int:
    count, offset = 0, 0
    while offset + _NLMSGHDR.size <= len(data):
        length, msg_type, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        if msg_type >= _NLMSG_MIN_TYPE:
            count += 1
        offset += (length + 3) & ~3
    return count


def _link_by_name(ifname: str) -> _Msg:
    """An ifinfmsg addressing a link by IFLA_IFNAME (ifindex 0): no lookup round trip needed."""
    msg = ifinfmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["attrs"] = [("IFLA_IFNAME", ifname)]
    return msg


def _link_of(msg: _Msg, addresses: tuple[Address, ...]) -> ObservedLink:
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
    master = msg.get_attr("IFLA_MASTER")
    vlan_id = parent = None
    if kind == "vlan":
        vlan_id = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
        parent = msg.get_attr("IFLA_LINK")
    return ObservedLink(
        ifname=msg.get_attr("IFLA_IFNAME"),
        index=msg["index"],
        kind=kind,
        up=bool(msg["flags"] & IFF_UP),
        mtu=msg.get_attr("IFLA_MTU"),
        master_index=master or None,
        addresses=addresses,
        vlan_id=vlan_id,
        parent_index=parent,
    )


def _address_of(msg: _Msg) -> Address | None:
    """IFA_LOCAL is our end and IFA_ADDRESS the peer when they differ (see ip-address(8))."""
    prefixlen = msg["prefixlen"]
    address = msg.get_attr("IFA_ADDRESS")
    local = msg.get_attr("IFA_LOCAL") or address
    if local is None:
        return None
    local_ip = ipaddress.ip_address(local)
    if local_ip.version == 6 and local_ip.is_link_local:
        return None
    peer = None
    if address is not None and ipaddress.ip_address(address) != local_ip:
        peer = f"{ipaddress.ip_address(address)}/{prefixlen}"
    return Address(address=f"{local_ip}/{prefixlen}", peer=peer)


def _address_msg(index: int, addr: Address) -> _Msg:
    """As ip addr add/del sends it: IFA_LOCAL = our end, IFA_ADDRESS = peer (or our end again).

    With a peer the kernel keeps one prefix length, the peer's; a different one on our end would
    be dropped silently and never match a dump, so it is refused here.
    """
    local = ipaddress.ip_interface(addr.address)
    peer = ipaddress.ip_interface(addr.peer) if addr.peer is not None else None
    if peer is not None:
        if peer.version != local.version:
            raise ValueError(f"{_describe(addr)}: address and peer are of different families")
        if peer.network.prefixlen != local.network.prefixlen:
            raise ValueError(f"{_describe(addr)}: address and peer need the same prefix length")
    msg = ifaddrmsg()
    msg["family"] = socket.AF_INET6 if local.version == 6 else socket.AF_INET
    msg["prefixlen"] = local.network.prefixlen
    msg["index"] = index
    msg["attrs"] = [
        ("IFA_LOCAL", str(local.ip)),
        ("IFA_ADDRESS", str((peer or local).ip)),
    ]
    return msg


def _describe(addr: Address) -> str:
    return addr.address if addr.peer is None else f"{addr.address} peer {addr.peer}"
