"""The rtnetlink half of the kernel layer: links (bridges, VLANs, l2tpeth...) and their addresses.

A narrow, typed port: frozen data from kube_l2tp.core.state in and out, every failure a
KernelError whose Outcome says what it means. Requests are packed with struct (rtrequest) and
dumps decoded with struct (rtdump), both on raw NETLINK_ROUTE sockets, with the kernel's
attribute names (IFLA_*, IFA_*) so they read against include/uapi/linux/if_link.h and if_addr.h.
pyroute2's IPRoute was much slower per request; its message classes remain the reference the unit
tests hold both codecs against (tests/support/oracles_links.py).

Threads and namespaces: the sockets stay in the network namespace they were opened in, whichever
thread uses them later (pyroute2's IPRoute opened a new socket per thread, in that thread's
namespace, so the old Links refused other threads). Not thread-safe: one user at a time.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR, RTMGRP_LINK

from kube_l2tp.core.state import Address, KernelError, ObservedLink, Outcome
from kube_l2tp.netlink import rtdump, rtrequest
from kube_l2tp.netlink.closing import Closing
from kube_l2tp.netlink.errors import kernel_error


class Links(Closing):
    """Reads and changes links and addresses in the caller's network namespace.

    Two sockets, neither in a multicast group: one for requests (extended acks, so a failure
    carries the kernel's own explanation, "Unknown device type", ...), one for dumps.
    """

    def __init__(self) -> None:
        try:
            self._requests = rtrequest.RtRequests()
        except OSError as exc:
            raise kernel_error("open rtnetlink socket", exc) from exc
        try:
            self._dumper = rtdump.RtDumper()
        except OSError as exc:
            self._requests.close()
            raise kernel_error("open rtnetlink socket", exc) from exc

    def close(self) -> None:
        self._requests.close()
        self._dumper.close()

    # -- reading ---------------------------------------------------------------------------------

    def dump(self) -> list[ObservedLink]:
        """Every link with its addresses (IPv6 link-local ones included: one can be declared).

        An interrupted dump (links coming and going) is retried with a pause; if it keeps being
        interrupted the KernelError's outcome is BUSY: try again later, nothing failed."""
        try:
            return self._dumper.dump()
        except (OSError, rtdump.DumpInterruptedError) as exc:
            raise kernel_error("dump links", exc) from exc
        except (ValueError, struct.error) as exc:  # an answer that cannot be decoded
            raise KernelError("dump links", errno.EIO, Outcome.OTHER, str(exc)) from exc

    # -- changing --------------------------------------------------------------------------------

    def set_link(self, ifname: str, *, up: bool | None = None, mtu: int | None = None) -> None:
        """Set admin state and/or MTU in one request; None leaves that property alone."""
        if up is None and mtu is None:
            return
        self._send(f"set link {ifname}", rtrequest.set_link, ifname, up=up, mtu=mtu)

    def set_master(self, ifname: str, master: str | None) -> None:
        """Enslave ``ifname`` to bridge ``master``; None releases it (ip link set X nomaster)."""
        operation = f"set master of {ifname} to {master or 'none'}"
        index = 0 if master is None else self._index(operation, master)
        self._send(operation, rtrequest.set_master, ifname, index)

    def add_address(self, ifname: str, addr: Address) -> None:
        operation = f"add address {_describe(addr)} on {ifname}"
        local, peer = _address_parts(addr)
        self._send(operation, rtrequest.add_address, self._index(operation, ifname), local, peer)

    def del_address(self, ifname: str, addr: Address) -> None:
        operation = f"delete address {_describe(addr)} on {ifname}"
        local, peer = _address_parts(addr)
        self._send(operation, rtrequest.del_address, self._index(operation, ifname), local, peer)

    def create_bridge(self, name: str) -> None:
        self._send(f"create bridge {name}", rtrequest.create_bridge, name)

    def create_vlan(self, name: str, parent: str, vlan_id: int) -> None:
        operation = f"create vlan {name} id {vlan_id} on {parent}"
        self._send(operation, rtrequest.create_vlan, name, self._index(operation, parent), vlan_id)

    def delete_link(self, name: str) -> None:
        self._send(f"delete link {name}", rtrequest.delete_link, name)

    def set_addr_gen_mode(self, ifname: str, mode: str) -> None:
        """ip link set dev X addrgenmode MODE. Before the link goes up: with "none" no IPv6
        link-local address is made (and no autoconfiguration); one already made stays."""
        self._send(f"set addrgenmode {mode} on {ifname}", rtrequest.addr_gen_mode, ifname, mode)

    def set_qdisc(self, ifname: str, kind: str) -> None:
        """tc qdisc replace dev X root KIND. Before the link goes up, the kernel's default qdisc
        is then never made (dev_activate attaches it only where no root qdisc was set)."""
        operation = f"set root qdisc {kind} on {ifname}"
        index = self._index(operation, ifname)
        try:
            self._send(operation, rtrequest.replace_root_qdisc, index, kind)
        except KernelError as exc:
            # The link exists (just looked up): ENOENT here is "Specified qdisc kind is unknown",
            # a kernel without sch_KIND, not a link that vanished (which the agent would retry).
            if exc.errno != errno.ENOENT:
                raise
            raise KernelError(
                operation,
                exc.errno,
                Outcome.NOT_SUPPORTED,
                f"this kernel has no {kind} qdisc (modprobe sch_{kind}), or choose another qdisc",
            ) from exc

    # -- plumbing --------------------------------------------------------------------------------

    def _index(self, operation: str, ifname: str) -> int:
        """The ifindex of ``ifname``; a missing link fails ``operation`` with NOT_FOUND."""
        answer = self._send(operation, rtrequest.get_link, ifname)
        return rtrequest.ifindex_of(answer.reply)

    def _send(
        self, operation: str, build: Callable[..., bytes], *args: Any, **kwargs: Any
    ) -> rtrequest.Answer:
        """Build a request with the next sequence number (``build(seq, *args)``), send it and
        return the kernel's answer; an error answer raises KernelError naming ``operation``."""
        try:
            answer = self._requests.send(build(self._requests.seq(), *args, **kwargs))
        except OSError as exc:
            raise kernel_error(operation, exc) from exc
        except (ValueError, struct.error) as exc:  # a request the codec cannot encode
            raise KernelError(operation, errno.EINVAL, Outcome.INVALID, str(exc)) from exc
        error = answer.error()
        if error is not None:
            raise kernel_error(operation, error) from error
        return answer


class LinkEvents(Closing):
    """Wakes the agent when a link or an address changes, so tampering is repaired promptly.

    It only counts notifications: the agent then re-reads everything with Links.dump() (level-
    based, nothing to lose). A raw non-blocking socket, for the agent's selector loop.
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


def _address_parts(
    addr: Address,
) -> tuple[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface,
    ipaddress.IPv4Address | ipaddress.IPv6Address | None,
]:
    """Our end and the peer, as ``ip addr add/del`` sends them (rtrequest.address_request).

    With a peer the kernel keeps one prefix length, and iproute2 sends the peer's
    (ipaddr_modify: ifa_prefixlen = peer.bitlen; a peer without one is a host): so does this,
    whatever our end's says. Anything unusable is a KernelError(INVALID) for this address only.
    """
    try:
        local = ipaddress.ip_interface(addr.address)
        if addr.peer is None:
            return local, None
        peer = ipaddress.ip_interface(
            addr.peer if "/" in addr.peer else f"{addr.peer}/{local.max_prefixlen}"
        )
    except ValueError as exc:
        raise KernelError(
            f"address {_describe(addr)}", errno.EINVAL, Outcome.INVALID, str(exc)
        ) from exc
    if peer.version != local.version:
        raise KernelError(
            f"address {_describe(addr)}",
            errno.EINVAL,
            Outcome.INVALID,
            "address and peer are of different families: declare both IPv4 or both IPv6",
        )
    return ipaddress.ip_interface(f"{local.ip}/{peer.network.prefixlen}"), peer.ip


def _describe(addr: Address) -> str:
    return addr.address if addr.peer is None else f"{addr.address} peer {addr.peer}"
