"""pyroute2's rtnetlink message classes as the independent reference for netlink.rtdump: the unit
tests decode captured link/address dumps with both and compare."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import IFF_UP

from kube_l2tp.core.state import Address, ObservedLink
from kube_l2tp.netlink import rtdump


def pyroute2_messages(chunks: list[bytes], cls: type, msg_type: int) -> list[Any]:
    """Every ``msg_type`` message of ``chunks``, decoded by pyroute2's ``cls``."""
    out = []
    for chunk in chunks:
        offset = 0
        while offset + 16 <= len(chunk):
            length, kind = struct.unpack_from("=IH", chunk, offset)
            if kind == msg_type:
                msg = cls(chunk[offset : offset + length])
                msg.decode()
                out.append(msg)
            offset += (length + 3) & ~3
    return out


def link_of(msg: Any, addresses: tuple[Address, ...]) -> ObservedLink:
    """One decoded RTM_NEWLINK as rtdump.link_of reads it."""
    kind = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND") or ""
    master = msg.get_attr("IFLA_MASTER")
    vlan_id = parent = None
    if kind == "vlan":
        vlan_id = msg.get_nested("IFLA_LINKINFO", "IFLA_INFO_DATA", "IFLA_VLAN_ID")
        parent = msg.get_attr("IFLA_LINK")
    mode = msg.get_nested("IFLA_AF_SPEC", "AF_INET6", "IFLA_INET6_ADDR_GEN_MODE")
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
        addr_gen_mode=None if mode is None else rtdump.ADDR_GEN_MODES[mode],
        qdisc=msg.get_attr("IFLA_QDISC"),
    )


def address_of(msg: Any) -> Address | None:
    """IFA_LOCAL is our end and IFA_ADDRESS the peer when they differ (see ip-address(8))."""
    prefixlen = msg["prefixlen"]
    address = msg.get_attr("IFA_ADDRESS")
    local = msg.get_attr("IFA_LOCAL") or address
    if local is None:
        return None
    local_ip = ipaddress.ip_address(local)
    peer = None
    if address is not None and ipaddress.ip_address(address) != local_ip:
        peer = f"{ipaddress.ip_address(address)}/{prefixlen}"
    return Address(address=f"{local_ip}/{prefixlen}", peer=peer)
