"""The L2TP generic-netlink port: TunnelConfig/SessionConfig in, ObservedTunnel/ObservedSession out.

Why not pyroute2's own ``L2tp`` class: in 0.9.7 it cross-wires and inverts the IPv6 checksum
options, sends cookies as ASCII text, cannot dump tunnels synchronously and does not know stats
attributes 10/11. Why not its sync ``GenericNetlinkSocket`` either: it drives a private asyncio
loop with ``run_until_complete`` and so raises "This event loop is already running" when called
from a coroutine (the agent is asyncio). So this module talks over one plain blocking
NETLINK_GENERIC socket, and keeps pyroute2 for what it is good at: the message classes
(``ctrlmsg`` for the family lookup, :class:`L2tpMessage` with the kernel's attribute names as a
reference codec that the unit tests hold the fast paths against).

The codec is pure and unit-tested on bytes captured from the kernel and from ``ip l2tp``:
``*_attrs`` functions turn configs into attribute lists, :func:`pack_request` packs them with
``struct``, :func:`decode_tunnels`/:func:`decode_sessions` walk dump replies with
``struct.unpack_from``. Measured in the TCG guest on 1000 sessions: pyroute2's generic parser
11.7 s, this one 0.24 s; dump plus parse 0.28 s against 0.33 s for ``ip -s l2tp show session``.

Names and numbers follow include/uapi/linux/l2tp.h and net/l2tp/l2tp_netlink.c (kernel 6.1).
"""

from __future__ import annotations

import contextlib
import errno as _errno
import operator
import os
import socket
import struct
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, NamedTuple

from pyroute2.netlink import (
    CTRL_CMD_GETFAMILY,
    GENL_ID_CTRL,
    NLA_F_NESTED,
    ctrlmsg,
    genlmsg,
    nla,
)

from kube_l2tp.core.state import (
    STATS_FIELDS,
    Counters,
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    SessionCounters,
    Stats,
    TunnelConfig,
    TunnelCounters,
)
from kube_l2tp.netlink.errors import outcome_for

# --- include/uapi/linux/l2tp.h --------------------------------------------------------------

L2TP_GENL_NAME: Final = "l2tp"
L2TP_GENL_VERSION: Final = 1
L2TP_GENL_MCGROUP: Final = "l2tp"

L2TP_CMD_NOOP: Final = 0
L2TP_CMD_TUNNEL_CREATE: Final = 1
L2TP_CMD_TUNNEL_DELETE: Final = 2
L2TP_CMD_TUNNEL_MODIFY: Final = 3
L2TP_CMD_TUNNEL_GET: Final = 4
L2TP_CMD_SESSION_CREATE: Final = 5
L2TP_CMD_SESSION_DELETE: Final = 6
L2TP_CMD_SESSION_MODIFY: Final = 7
L2TP_CMD_SESSION_GET: Final = 8

CMD_NAMES: Final[dict[int, str]] = {
    L2TP_CMD_NOOP: "NOOP",
    L2TP_CMD_TUNNEL_CREATE: "TUNNEL_CREATE",
    L2TP_CMD_TUNNEL_DELETE: "TUNNEL_DELETE",
    L2TP_CMD_TUNNEL_MODIFY: "TUNNEL_MODIFY",
    L2TP_CMD_TUNNEL_GET: "TUNNEL_GET",
    L2TP_CMD_SESSION_CREATE: "SESSION_CREATE",
    L2TP_CMD_SESSION_DELETE: "SESSION_DELETE",
    L2TP_CMD_SESSION_MODIFY: "SESSION_MODIFY",
    L2TP_CMD_SESSION_GET: "SESSION_GET",
}

L2TP_ATTR_PW_TYPE: Final = 1
L2TP_ATTR_ENCAP_TYPE: Final = 2
L2TP_ATTR_L2SPEC_TYPE: Final = 5
L2TP_ATTR_PROTO_VERSION: Final = 7
L2TP_ATTR_IFNAME: Final = 8
L2TP_ATTR_CONN_ID: Final = 9
L2TP_ATTR_PEER_CONN_ID: Final = 10
L2TP_ATTR_SESSION_ID: Final = 11
L2TP_ATTR_PEER_SESSION_ID: Final = 12
L2TP_ATTR_UDP_CSUM: Final = 13
L2TP_ATTR_COOKIE: Final = 15
L2TP_ATTR_PEER_COOKIE: Final = 16
L2TP_ATTR_RECV_SEQ: Final = 18
L2TP_ATTR_SEND_SEQ: Final = 19
L2TP_ATTR_IP_SADDR: Final = 24
L2TP_ATTR_IP_DADDR: Final = 25
L2TP_ATTR_UDP_SPORT: Final = 26
L2TP_ATTR_UDP_DPORT: Final = 27
L2TP_ATTR_STATS: Final = 30
L2TP_ATTR_IP6_SADDR: Final = 31
L2TP_ATTR_IP6_DADDR: Final = 32
L2TP_ATTR_UDP_ZERO_CSUM6_TX: Final = 33
L2TP_ATTR_UDP_ZERO_CSUM6_RX: Final = 34

L2TP_ATTR_TX_PACKETS: Final = 1
L2TP_ATTR_TX_BYTES: Final = 2
L2TP_ATTR_TX_ERRORS: Final = 3
L2TP_ATTR_RX_PACKETS: Final = 4
L2TP_ATTR_RX_BYTES: Final = 5
L2TP_ATTR_RX_SEQ_DISCARDS: Final = 6
L2TP_ATTR_RX_OOS_PACKETS: Final = 7
L2TP_ATTR_RX_ERRORS: Final = 8
L2TP_ATTR_STATS_PAD: Final = 9
L2TP_ATTR_RX_COOKIE_DISCARDS: Final = 10  # since 5.10
L2TP_ATTR_RX_INVALID: Final = 11  # since 5.12

L2TP_PWTYPE_ETH: Final = 0x0005
L2TP_L2SPECTYPE_NONE: Final = 0
L2TP_L2SPECTYPE_DEFAULT: Final = 1
L2TP_ENCAPTYPE_UDP: Final = 0
L2TP_ENCAPTYPE_IP: Final = 1

# include/uapi/linux/netlink.h, genetlink.h
NLMSG_ERROR: Final = 2
NLMSG_DONE: Final = 3
NLM_F_REQUEST: Final = 0x01
NLM_F_MULTI: Final = 0x02
NLM_F_ACK: Final = 0x04
NLM_F_DUMP: Final = 0x300
NLM_F_CAPPED: Final = 0x100
NLM_F_ACK_TLVS: Final = 0x200
NLMSGERR_ATTR_MSG: Final = 1
NLA_TYPE_MASK: Final = 0x3FFF
NETLINK_GENERIC: Final = 16
SOL_NETLINK: Final = 270
NETLINK_ADD_MEMBERSHIP: Final = 1
NETLINK_EXT_ACK: Final = 11


MODULE_HINT: Final = "load l2tp_netlink/l2tp_eth (modprobe l2tp_eth l2tp_ip l2tp_ip6)"


# --- pyroute2 message class (reference codec) -----------------------------------------------


class L2tpMessage(genlmsg):  # type: ignore[misc]
    """The L2TP genl message with the kernel's attribute names, numbered explicitly.

    Unlike pyroute2's ``l2tpmsg``: cookies are raw bytes (``cdata``), UDP_CSUM is a u8 that the
    kernel reads by presence only, and the stats nest knows attributes 10 and 11.
    """

    prefix = "L2TP_ATTR_"
    nla_map = (
        (0, "L2TP_ATTR_NONE", "none"),
        (1, "L2TP_ATTR_PW_TYPE", "uint16"),
        (2, "L2TP_ATTR_ENCAP_TYPE", "uint16"),
        (3, "L2TP_ATTR_OFFSET", "uint16"),
        (4, "L2TP_ATTR_DATA_SEQ", "uint16"),
        (5, "L2TP_ATTR_L2SPEC_TYPE", "uint8"),
        (6, "L2TP_ATTR_L2SPEC_LEN", "uint8"),
        (7, "L2TP_ATTR_PROTO_VERSION", "uint8"),
        (8, "L2TP_ATTR_IFNAME", "asciiz"),
        (9, "L2TP_ATTR_CONN_ID", "uint32"),
        (10, "L2TP_ATTR_PEER_CONN_ID", "uint32"),
        (11, "L2TP_ATTR_SESSION_ID", "uint32"),
        (12, "L2TP_ATTR_PEER_SESSION_ID", "uint32"),
        (13, "L2TP_ATTR_UDP_CSUM", "uint8"),
        (14, "L2TP_ATTR_VLAN_ID", "uint16"),
        (15, "L2TP_ATTR_COOKIE", "cdata"),
        (16, "L2TP_ATTR_PEER_COOKIE", "cdata"),
        (17, "L2TP_ATTR_DEBUG", "uint32"),
        (18, "L2TP_ATTR_RECV_SEQ", "uint8"),
        (19, "L2TP_ATTR_SEND_SEQ", "uint8"),
        (20, "L2TP_ATTR_LNS_MODE", "uint8"),
        (21, "L2TP_ATTR_USING_IPSEC", "uint8"),
        (22, "L2TP_ATTR_RECV_TIMEOUT", "uint64"),
        (23, "L2TP_ATTR_FD", "uint32"),
        (24, "L2TP_ATTR_IP_SADDR", "ip4addr"),
        (25, "L2TP_ATTR_IP_DADDR", "ip4addr"),
        (26, "L2TP_ATTR_UDP_SPORT", "uint16"),
        (27, "L2TP_ATTR_UDP_DPORT", "uint16"),
        (28, "L2TP_ATTR_MTU", "uint16"),
        (29, "L2TP_ATTR_MRU", "uint16"),
        (30, "L2TP_ATTR_STATS", "l2tp_stats"),
        (31, "L2TP_ATTR_IP6_SADDR", "ip6addr"),
        (32, "L2TP_ATTR_IP6_DADDR", "ip6addr"),
        (33, "L2TP_ATTR_UDP_ZERO_CSUM6_TX", "flag"),
        (34, "L2TP_ATTR_UDP_ZERO_CSUM6_RX", "flag"),
        (35, "L2TP_ATTR_PAD", "none"),
    )

    class l2tp_stats(nla):  # type: ignore[misc]  # noqa: N801 - pyroute2 looks it up by name
        nla_flags = NLA_F_NESTED
        prefix = "L2TP_ATTR_"
        nla_map = (
            (0, "L2TP_ATTR_STATS_NONE", "none"),
            (1, "L2TP_ATTR_TX_PACKETS", "uint64"),
            (2, "L2TP_ATTR_TX_BYTES", "uint64"),
            (3, "L2TP_ATTR_TX_ERRORS", "uint64"),
            (4, "L2TP_ATTR_RX_PACKETS", "uint64"),
            (5, "L2TP_ATTR_RX_BYTES", "uint64"),
            (6, "L2TP_ATTR_RX_SEQ_DISCARDS", "uint64"),
            (7, "L2TP_ATTR_RX_OOS_PACKETS", "uint64"),
            (8, "L2TP_ATTR_RX_ERRORS", "uint64"),
            (9, "L2TP_ATTR_STATS_PAD", "none"),
            (10, "L2TP_ATTR_RX_COOKIE_DISCARDS", "uint64"),
            (11, "L2TP_ATTR_RX_INVALID", "uint64"),
        )


# --- encoding (pure) ------------------------------------------------------------------------

Attr = tuple[str, object]
"""(kernel attribute name, value): the same list feeds :func:`pack_request` and L2tpMessage."""

# name -> (number, kind); kinds: u8 u16 u32 flag ip4 ip6 binary string
_ATTR_SPEC: Final[dict[str, tuple[int, str]]] = {
    "L2TP_ATTR_PW_TYPE": (1, "u16"),
    "L2TP_ATTR_ENCAP_TYPE": (2, "u16"),
    "L2TP_ATTR_L2SPEC_TYPE": (5, "u8"),
    "L2TP_ATTR_PROTO_VERSION": (7, "u8"),
    "L2TP_ATTR_IFNAME": (8, "string"),
    "L2TP_ATTR_CONN_ID": (9, "u32"),
    "L2TP_ATTR_PEER_CONN_ID": (10, "u32"),
    "L2TP_ATTR_SESSION_ID": (11, "u32"),
    "L2TP_ATTR_PEER_SESSION_ID": (12, "u32"),
    "L2TP_ATTR_UDP_CSUM": (13, "u8"),
    "L2TP_ATTR_COOKIE": (15, "binary"),
    "L2TP_ATTR_PEER_COOKIE": (16, "binary"),
    "L2TP_ATTR_RECV_SEQ": (18, "u8"),
    "L2TP_ATTR_SEND_SEQ": (19, "u8"),
    "L2TP_ATTR_IP_SADDR": (24, "ip4"),
    "L2TP_ATTR_IP_DADDR": (25, "ip4"),
    "L2TP_ATTR_UDP_SPORT": (26, "u16"),
    "L2TP_ATTR_UDP_DPORT": (27, "u16"),
    "L2TP_ATTR_IP6_SADDR": (31, "ip6"),
    "L2TP_ATTR_IP6_DADDR": (32, "ip6"),
    "L2TP_ATTR_UDP_ZERO_CSUM6_TX": (33, "flag"),
    "L2TP_ATTR_UDP_ZERO_CSUM6_RX": (34, "flag"),
}

IFNAMSIZ: Final = 16


def tunnel_create_attrs(cfg: TunnelConfig) -> list[Attr]:
    """What ``ip l2tp add tunnel`` (iproute2 6.1) sends, in its order.

    The kernel reads UDP_CSUM by presence (even a 0 turns checksums on), so it is sent only
    when wanted; the ZERO_CSUM6 flags mean "checksum off" and are sent only when off.
    """
    if cfg.encap not in ("udp", "ip"):
        raise ValueError(f"unknown encapsulation {cfg.encap!r}")
    if cfg.ipv6 != (":" in cfg.remote):
        raise ValueError(f"local {cfg.local} and remote {cfg.remote} differ in address family")
    udp = cfg.encap == "udp"
    attrs: list[Attr] = [
        ("L2TP_ATTR_CONN_ID", cfg.tunnel_id),
        ("L2TP_ATTR_PEER_CONN_ID", cfg.peer_tunnel_id),
        ("L2TP_ATTR_PROTO_VERSION", 3),
        ("L2TP_ATTR_ENCAP_TYPE", L2TP_ENCAPTYPE_UDP if udp else L2TP_ENCAPTYPE_IP),
    ]
    if cfg.ipv6:
        attrs += [("L2TP_ATTR_IP6_SADDR", cfg.local), ("L2TP_ATTR_IP6_DADDR", cfg.remote)]
    else:
        attrs += [("L2TP_ATTR_IP_SADDR", cfg.local), ("L2TP_ATTR_IP_DADDR", cfg.remote)]
    if udp:
        if cfg.udp_sport is None or cfg.udp_dport is None:
            raise ValueError("UDP encapsulation needs udp_sport and udp_dport")
        attrs += [("L2TP_ATTR_UDP_SPORT", cfg.udp_sport), ("L2TP_ATTR_UDP_DPORT", cfg.udp_dport)]
        if cfg.ipv6:
            if not cfg.udp6_csum_tx:
                attrs.append(("L2TP_ATTR_UDP_ZERO_CSUM6_TX", True))
            if not cfg.udp6_csum_rx:
                attrs.append(("L2TP_ATTR_UDP_ZERO_CSUM6_RX", True))
        elif cfg.udp_csum:
            attrs.append(("L2TP_ATTR_UDP_CSUM", 1))
    return attrs


def tunnel_delete_attrs(tunnel_id: int) -> list[Attr]:
    return [("L2TP_ATTR_CONN_ID", tunnel_id)]


def session_create_attrs(cfg: SessionConfig) -> list[Attr]:
    """What ``ip l2tp add session`` sends, minus what the kernel ignores on create.

    ip also sends PEER_CONN_ID (0 unless given) and L2SPEC_LEN; L2TP_CMD_SESSION_CREATE reads
    neither (the length follows from the type), so they are left out.
    """
    for name, cookie in (("cookie", cfg.cookie), ("peer_cookie", cfg.peer_cookie)):
        if len(cookie) not in (0, 4, 8):
            raise ValueError(f"{name} must be 4 or 8 bytes, not {len(cookie)}")
    if cfg.ifname is not None and not 0 < len(cfg.ifname.encode()) < IFNAMSIZ:
        raise ValueError(
            f"interface name {cfg.ifname!r} is {len(cfg.ifname.encode())} bytes in UTF-8;"
            f" Linux allows 1..{IFNAMSIZ - 1}: choose a shorter interfaceName"
        )
    l2spec = {"none": L2TP_L2SPECTYPE_NONE, "default": L2TP_L2SPECTYPE_DEFAULT}[cfg.l2spec_type]
    attrs: list[Attr] = [
        ("L2TP_ATTR_CONN_ID", cfg.tunnel_id),
        ("L2TP_ATTR_SESSION_ID", cfg.session_id),
        ("L2TP_ATTR_PEER_SESSION_ID", cfg.peer_session_id),
        ("L2TP_ATTR_PW_TYPE", L2TP_PWTYPE_ETH),
        ("L2TP_ATTR_L2SPEC_TYPE", l2spec),
    ]
    if cfg.recv_seq:
        attrs.append(("L2TP_ATTR_RECV_SEQ", 1))
    if cfg.send_seq:
        attrs.append(("L2TP_ATTR_SEND_SEQ", 1))
    if cfg.cookie:
        attrs.append(("L2TP_ATTR_COOKIE", cfg.cookie))
    if cfg.peer_cookie:
        attrs.append(("L2TP_ATTR_PEER_COOKIE", cfg.peer_cookie))
    if cfg.ifname:
        attrs.append(("L2TP_ATTR_IFNAME", cfg.ifname))
    return attrs


def session_delete_attrs(tunnel_id: int, session_id: int) -> list[Attr]:
    return [("L2TP_ATTR_CONN_ID", tunnel_id), ("L2TP_ATTR_SESSION_ID", session_id)]


def session_modify_attrs(
    tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
) -> list[Attr]:
    """Both flags are always sent: SESSION_MODIFY leaves an absent one unchanged."""
    return [
        ("L2TP_ATTR_CONN_ID", tunnel_id),
        ("L2TP_ATTR_SESSION_ID", session_id),
        ("L2TP_ATTR_RECV_SEQ", int(recv_seq)),
        ("L2TP_ATTR_SEND_SEQ", int(send_seq)),
    ]


_NLMSGHDR: Final = struct.Struct("=IHHII")
_GENLHDR: Final = struct.Struct("=BBH")
_NLA_HDR: Final = struct.Struct("=HH")
_HDRLEN: Final = _NLMSGHDR.size + _GENLHDR.size  # 20


def _pack_attr(name: str, value: object) -> bytes:
    number, kind = _ATTR_SPEC[name]
    if kind == "u8":
        payload = struct.pack("=B", value)
    elif kind == "u16":
        payload = struct.pack("=H", value)
    elif kind == "u32":
        payload = struct.pack("=I", value)
    elif kind == "flag":
        payload = b""
    elif kind == "ip4":
        payload = socket.inet_pton(socket.AF_INET, str(value))
    elif kind == "ip6":
        payload = socket.inet_pton(socket.AF_INET6, str(value))
    elif kind == "string":
        payload = str(value).encode() + b"\0"
    else:
        assert isinstance(value, bytes), name
        payload = value
    size = _NLA_HDR.size + len(payload)
    return _NLA_HDR.pack(size, number) + payload + b"\0" * (-size % 4)


def pack_request(family: int, cmd: int, attrs: Iterable[Attr], *, seq: int, flags: int) -> bytes:
    """One complete genl request (nlmsghdr, genlmsghdr, attributes) as bytes; pid 0."""
    body = b"".join(_pack_attr(name, value) for name, value in attrs)
    header = _NLMSGHDR.pack(_HDRLEN + len(body), family, flags, seq, 0)
    return header + _GENLHDR.pack(cmd, L2TP_GENL_VERSION, 0) + body


def pack_request_pyroute2(
    family: int, cmd: int, attrs: Iterable[Attr], *, seq: int, flags: int
) -> bytes:
    """The same request encoded by pyroute2's machinery: the cross-check for pack_request."""
    msg = L2tpMessage()
    msg["cmd"] = cmd
    msg["version"] = L2TP_GENL_VERSION
    msg["attrs"] = [[name, value] for name, value in attrs]
    msg["header"]["type"] = family
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


# --- decoding (pure) ------------------------------------------------------------------------

_U16: Final = struct.Struct("=H")
_U32: Final = struct.Struct("=I")
_U64: Final = struct.Struct("=Q")
_STATS_FIELDS: Final = {
    L2TP_ATTR_TX_PACKETS: "tx_packets",
    L2TP_ATTR_TX_BYTES: "tx_bytes",
    L2TP_ATTR_TX_ERRORS: "tx_errors",
    L2TP_ATTR_RX_PACKETS: "rx_packets",
    L2TP_ATTR_RX_BYTES: "rx_bytes",
    L2TP_ATTR_RX_ERRORS: "rx_errors",
    L2TP_ATTR_RX_SEQ_DISCARDS: "rx_seq_discards",
    L2TP_ATTR_RX_OOS_PACKETS: "rx_oos_packets",
    L2TP_ATTR_RX_COOKIE_DISCARDS: "rx_cookie_discards",
    L2TP_ATTR_RX_INVALID: "rx_invalid",
}

RawAttrs = dict[int, bytes]
"""Attribute number -> payload of one message (the last one wins; L2TP sends no repeats)."""


class NetlinkReplyError(Exception):
    """An NLMSG_ERROR with a non-zero code inside a reply buffer."""

    def __init__(self, errno: int, message: str) -> None:
        self.errno = errno
        self.message = message
        super().__init__(f"errno {errno}: {os.strerror(errno)}{': ' + message if message else ''}")


def _walk_attrs(buf: bytes, start: int, end: int) -> RawAttrs:
    attrs: RawAttrs = {}
    unpack = _NLA_HDR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            break
        attrs[kind & NLA_TYPE_MASK] = buf[start + 4 : start + length]
        start += (length + 3) & ~3
    return attrs


def _error_message(buf: bytes, offset: int, length: int, flags: int) -> str:
    """The extack text (NLMSGERR_ATTR_MSG) of an NLMSG_ERROR, if the kernel sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # error code, then the request's header and, unless capped, its payload; then the TLVs
    echoed = 16 if flags & NLM_F_CAPPED else (_U32.unpack_from(buf, offset + 20)[0] + 3) & ~3
    tlvs = _walk_attrs(buf, offset + 20 + echoed, offset + length)
    return tlvs.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")


def iter_spans(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes, int, int]]:
    """(genl cmd, buffer, start, end of its attributes) per L2TP message of a reply.

    Raises NetlinkReplyError on an NLMSG_ERROR with a code, stops at NLMSG_DONE. Each chunk is
    what one recv() returned: whole netlink messages.
    """
    unpack_hdr = _NLMSGHDR.unpack_from
    for buf in chunks:
        offset, size = 0, len(buf)
        while offset + 16 <= size:
            length, mtype, flags, _seq, _pid = unpack_hdr(buf, offset)
            if length < 16 or offset + length > size:
                raise ValueError(f"truncated netlink message at offset {offset}")
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", buf, offset + 16)[0]
                if code:
                    raise NetlinkReplyError(code, _error_message(buf, offset, length, flags))
            elif length >= _HDRLEN:
                yield buf[offset + 16], buf, offset + _HDRLEN, offset + length
            offset += (length + 3) & ~3


def iter_messages(chunks: Iterable[bytes]) -> Iterator[tuple[int, RawAttrs]]:
    """(genl cmd, attributes) per L2TP message of a reply; see iter_spans."""
    for cmd, buf, start, end in iter_spans(chunks):
        yield cmd, _walk_attrs(buf, start, end)


# Stats fields in declaration order, by kernel attribute number (STATS_PAD and unknowns skipped).
_STATS_POSITION: Final = {
    kind: list(Stats.__dataclass_fields__).index(name) for kind, name in _STATS_FIELDS.items()
}
# What 6.1 sends on 64-bit arches: ten u64 counters in this order, no pads. One unpack reads the
# headers, one the values; anything else takes the generic walk.
_STATS_ORDER: Final = (1, 2, 3, 4, 5, 6, 10, 7, 8, 11)
_STATS_HEADERS: Final = struct.Struct("=" + "I8x" * 10)
_STATS_VALUES: Final = struct.Struct("=" + "4xQ" * 10)
_STATS_EXPECTED: Final = tuple(
    struct.unpack("=I", _NLA_HDR.pack(12, kind))[0] for kind in _STATS_ORDER
)
_STATS_PERMUTATION: Final = tuple(
    _STATS_ORDER.index(kind) for kind in sorted(_STATS_POSITION, key=_STATS_POSITION.__getitem__)
)


def _stats(payload: bytes | None) -> Stats:
    if not payload:
        return Stats()
    if len(payload) == _STATS_VALUES.size and _STATS_HEADERS.unpack(payload) == _STATS_EXPECTED:
        v = _STATS_VALUES.unpack(payload)
        return Stats(*[v[i] for i in _STATS_PERMUTATION])
    values = [0] * len(_STATS_POSITION)
    position = _STATS_POSITION.get
    unpack_hdr, unpack_u64 = _NLA_HDR.unpack_from, _U64.unpack_from
    offset, end = 0, len(payload)
    while offset + 4 <= end:
        length, kind = unpack_hdr(payload, offset)
        if length < 4:
            break
        index = position(kind & NLA_TYPE_MASK)
        if index is not None and length == 12:
            values[index] = unpack_u64(payload, offset + 4)[0]
        offset += (length + 3) & ~3
    return Stats(*values)


def _ip(payload: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(payload) == 16 else socket.AF_INET, payload)


def tunnel_from_attrs(attrs: RawAttrs) -> ObservedTunnel:
    """One TUNNEL_GET message as the config that would create it, plus its counters."""
    encap_ip = _U16.unpack(attrs[L2TP_ATTR_ENCAP_TYPE])[0] == L2TP_ENCAPTYPE_IP
    v6 = L2TP_ATTR_IP6_SADDR in attrs
    local = attrs.get(L2TP_ATTR_IP6_SADDR if v6 else L2TP_ATTR_IP_SADDR)
    remote = attrs.get(L2TP_ATTR_IP6_DADDR if v6 else L2TP_ATTR_IP_DADDR)
    sport = attrs.get(L2TP_ATTR_UDP_SPORT)
    dport = attrs.get(L2TP_ATTR_UDP_DPORT)
    udp_csum = attrs.get(L2TP_ATTR_UDP_CSUM)
    config = TunnelConfig(
        tunnel_id=_U32.unpack(attrs[L2TP_ATTR_CONN_ID])[0],
        peer_tunnel_id=_U32.unpack(attrs[L2TP_ATTR_PEER_CONN_ID])[0],
        encap="ip" if encap_ip else "udp",
        local=_ip(local) if local else "",
        remote=_ip(remote) if remote else "",
        udp_sport=_U16.unpack(sport)[0] if sport else None,
        udp_dport=_U16.unpack(dport)[0] if dport else None,
        # the dump sends UDP_CSUM for IPv4/UDP as a u8 value (unlike create, which reads presence)
        udp_csum=bool(udp_csum and udp_csum[0]),
        udp6_csum_tx=L2TP_ATTR_UDP_ZERO_CSUM6_TX not in attrs,
        udp6_csum_rx=L2TP_ATTR_UDP_ZERO_CSUM6_RX not in attrs,
    )
    return ObservedTunnel(config=config, stats=_stats(attrs.get(L2TP_ATTR_STATS)))


# 6.1 starts every session message with CONN_ID, SESSION_ID, PEER_CONN_ID, PEER_SESSION_ID,
# DEBUG (u32 each) and PW_TYPE (u16): one unpack reads the lot when the headers are as expected.
_SESSION_HEAD: Final = struct.Struct("=" + "II" * 5 + "IH2x")
_SESSION_HEAD_EXPECTED: Final = tuple(
    struct.unpack("=I", _NLA_HDR.pack(length, kind))[0]
    for length, kind in ((8, 9), (8, 11), (8, 10), (8, 12), (8, 17), (6, 1))
)


def session_at(buf: bytes, start: int, end: int) -> ObservedSession:
    """The SESSION_GET message whose attributes span buf[start:end], with counters.

    Kernels up to at least 6.1 do not report the L2-specific sublayer type: it is decoded when
    present and otherwise reported as "default".
    """
    tunnel_id = session_id = peer_session_id = 0
    pos = start
    if end - start >= _SESSION_HEAD.size:
        head = _SESSION_HEAD.unpack_from(buf, start)
        if head[0::2] == _SESSION_HEAD_EXPECTED:
            tunnel_id, session_id, peer_session_id = head[1], head[3], head[7]
            pos += _SESSION_HEAD.size
    cookie = peer_cookie = b""
    ifname = None
    l2spec = L2TP_L2SPECTYPE_DEFAULT
    send_seq = recv_seq = 0
    stats = None
    unpack_hdr, unpack_u32 = _NLA_HDR.unpack_from, _U32.unpack_from
    while pos + 4 <= end:
        length, kind = unpack_hdr(buf, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == L2TP_ATTR_STATS:
            stats = buf[pos + 4 : pos + length]
        elif kind == L2TP_ATTR_IFNAME:
            ifname = buf[pos + 4 : pos + length].rstrip(b"\0").decode()
        elif kind == L2TP_ATTR_RECV_SEQ:
            recv_seq = buf[pos + 4]
        elif kind == L2TP_ATTR_SEND_SEQ:
            send_seq = buf[pos + 4]
        elif kind == L2TP_ATTR_COOKIE:
            cookie = buf[pos + 4 : pos + length]
        elif kind == L2TP_ATTR_PEER_COOKIE:
            peer_cookie = buf[pos + 4 : pos + length]
        elif kind == L2TP_ATTR_L2SPEC_TYPE:
            l2spec = buf[pos + 4]
        elif kind == L2TP_ATTR_CONN_ID:
            tunnel_id = unpack_u32(buf, pos + 4)[0]
        elif kind == L2TP_ATTR_SESSION_ID:
            session_id = unpack_u32(buf, pos + 4)[0]
        elif kind == L2TP_ATTR_PEER_SESSION_ID:
            peer_session_id = unpack_u32(buf, pos + 4)[0]
        pos += (length + 3) & ~3
    config = SessionConfig(
        tunnel_id,
        session_id,
        peer_session_id,
        cookie,
        peer_cookie,
        "none" if l2spec == L2TP_L2SPECTYPE_NONE else "default",
        bool(send_seq),
        bool(recv_seq),
        ifname,
    )
    return ObservedSession(config, _stats(stats))


def decode_tunnels(chunks: Iterable[bytes]) -> list[ObservedTunnel]:
    return [tunnel_from_attrs(a) for cmd, a in iter_messages(chunks) if cmd == L2TP_CMD_TUNNEL_GET]


def decode_sessions(chunks: Iterable[bytes]) -> list[ObservedSession]:
    return [
        session_at(buf, start, end)
        for cmd, buf, start, end in iter_spans(chunks)
        if cmd == L2TP_CMD_SESSION_GET
    ]


# --- counters only, for a scrape (pure) -----------------------------------------------------
#
# A scrape needs ids, the interface name and the counters, nothing else, and reads them for
# every object every time. In 6.1's layout (l2tp_nl_tunnel_send/l2tp_nl_session_send) they sit
# at fixed places: a tunnel's stats nest follows its first five attributes, a session's is its
# last attribute and its IFNAME follows the six-attribute head. At each place one unpack reads
# the attribute headers, which must be what 6.1 sends, and one the values; any other layout
# takes the generic walk.


def _headers(*attrs: tuple[int, int]) -> tuple[int, ...]:
    """(length, type) attribute headers as the u32s that an "=I" unpack reads."""
    return tuple(_U32.unpack(_NLA_HDR.pack(length, kind))[0] for length, kind in attrs)


_NEST_SIZE: Final = 4 + 12 * 10  # STATS: header, then ten (header, u64)
_NEST_HEADERS: Final = struct.Struct("=I" + "I8x" * 10)
_NEST_EXPECTED: Final = _headers((_NEST_SIZE, L2TP_ATTR_STATS), *[(12, k) for k in _STATS_ORDER])
_NEST_VALUES: Final = struct.Struct("=4x" + "4xQ" * 10)
_NEST_COUNTERS: Final = operator.itemgetter(*_STATS_PERMUTATION)  # kernel order -> Stats order
# PROTO_VERSION, CONN_ID, PEER_CONN_ID, DEBUG, ENCAP_TYPE, then the stats nest
_TUNNEL_HEADERS: Final = struct.Struct("=" + "I4x" * 5 + _NEST_HEADERS.format[1:])
_TUNNEL_EXPECTED: Final = _headers((5, 7), (8, 9), (8, 10), (8, 17), (6, 2)) + _NEST_EXPECTED
_TUNNEL_VALUES: Final = struct.Struct("=12xI28x" + _NEST_VALUES.format[3:])  # CONN_ID, counters
_TUNNEL_COUNTERS: Final = operator.itemgetter(*(1 + i for i in _STATS_PERMUTATION))
_SESSION_HEAD_IFNAME: Final = struct.Struct(_SESSION_HEAD.format + "HH")  # + IFNAME's header


def _counters(stats: Stats) -> Counters:
    return tuple(getattr(stats, name) for name in STATS_FIELDS)


def decode_tunnel_counters(chunks: Iterable[bytes]) -> list[TunnelCounters]:
    """(tunnel_id, counters) per TUNNEL_GET message; equal to what decode_tunnels reads."""
    out: list[TunnelCounters] = []
    headers, values = _TUNNEL_HEADERS.unpack_from, _TUNNEL_VALUES.unpack_from
    size = _TUNNEL_HEADERS.size
    for cmd, buf, start, end in iter_spans(chunks):
        if cmd != L2TP_CMD_TUNNEL_GET:
            continue
        if end - start >= size and headers(buf, start) == _TUNNEL_EXPECTED:
            v = values(buf, start)
            out.append((v[0], _TUNNEL_COUNTERS(v)))
            continue
        attrs = _walk_attrs(buf, start, end)
        tid = _U32.unpack(attrs[L2TP_ATTR_CONN_ID])[0]
        out.append((tid, _counters(_stats(attrs.get(L2TP_ATTR_STATS)))))
    return out


def decode_session_counters(chunks: Iterable[bytes]) -> list[SessionCounters]:
    """(tunnel_id, session_id, ifname, counters) per SESSION_GET message; equal to what
    decode_sessions reads."""
    out: list[SessionCounters] = []
    unpack_head = _SESSION_HEAD_IFNAME.unpack_from
    headers, values = _NEST_HEADERS.unpack_from, _NEST_VALUES.unpack_from
    head_size = _SESSION_HEAD_IFNAME.size
    for cmd, buf, start, end in iter_spans(chunks):
        if cmd != L2TP_CMD_SESSION_GET:
            continue
        nest_at = end - _NEST_SIZE
        if nest_at >= start + head_size:
            head = unpack_head(buf, start)
            ifname_end = start + head_size - 4 + head[12]  # IFNAME follows the head
            if (
                head[13] == L2TP_ATTR_IFNAME
                and ifname_end <= nest_at
                and head[0:12:2] == _SESSION_HEAD_EXPECTED
                and headers(buf, nest_at) == _NEST_EXPECTED
            ):
                ifname = buf[start + head_size : ifname_end].rstrip(b"\0").decode()
                out.append((head[1], head[3], ifname, _NEST_COUNTERS(values(buf, nest_at))))
                continue
        s = session_at(buf, start, end)
        out.append((s.config.tunnel_id, s.config.session_id, s.config.ifname, _counters(s.stats)))
    return out


def _pyroute2_messages(chunks: Iterable[bytes], cmd: int) -> Iterator[Any]:
    for buf in chunks:
        offset = 0
        while offset + 16 <= len(buf):
            length, mtype = struct.unpack_from("=IH", buf, offset)
            if mtype == NLMSG_DONE:
                return
            if mtype != NLMSG_ERROR:
                msg = L2tpMessage(buf, offset=offset)
                msg.decode()
                if msg["cmd"] == cmd:
                    yield msg
            offset += (length + 3) & ~3


def _stats_pyroute2(msg: Any) -> Stats:
    nest = msg.get_attr("L2TP_ATTR_STATS")
    if nest is None:
        return Stats()
    values = {f: nest.get_attr(f"L2TP_ATTR_{f.upper()}") for f in _STATS_FIELDS.values()}
    return Stats(**{f: v for f, v in values.items() if v is not None})


def decode_tunnels_pyroute2(chunks: Iterable[bytes]) -> list[ObservedTunnel]:
    """Slow, independent reference for decode_tunnels: pyroute2's parser and L2tpMessage."""
    result = []
    for m in _pyroute2_messages(chunks, L2TP_CMD_TUNNEL_GET):
        v6 = m.get_attr("L2TP_ATTR_IP6_SADDR") is not None
        family = "L2TP_ATTR_IP6_" if v6 else "L2TP_ATTR_IP_"
        config = TunnelConfig(
            tunnel_id=m.get_attr("L2TP_ATTR_CONN_ID"),
            peer_tunnel_id=m.get_attr("L2TP_ATTR_PEER_CONN_ID"),
            encap="ip" if m.get_attr("L2TP_ATTR_ENCAP_TYPE") == L2TP_ENCAPTYPE_IP else "udp",
            local=m.get_attr(family + "SADDR") or "",
            remote=m.get_attr(family + "DADDR") or "",
            udp_sport=m.get_attr("L2TP_ATTR_UDP_SPORT"),
            udp_dport=m.get_attr("L2TP_ATTR_UDP_DPORT"),
            udp_csum=bool(m.get_attr("L2TP_ATTR_UDP_CSUM")),
            udp6_csum_tx=not m.get_attr("L2TP_ATTR_UDP_ZERO_CSUM6_TX"),
            udp6_csum_rx=not m.get_attr("L2TP_ATTR_UDP_ZERO_CSUM6_RX"),
        )
        result.append(ObservedTunnel(config=config, stats=_stats_pyroute2(m)))
    return result


def decode_sessions_pyroute2(chunks: Iterable[bytes]) -> list[ObservedSession]:
    """Slow, independent reference for decode_sessions: pyroute2's parser and L2tpMessage."""
    result = []
    for m in _pyroute2_messages(chunks, L2TP_CMD_SESSION_GET):
        l2spec = m.get_attr("L2TP_ATTR_L2SPEC_TYPE")
        config = SessionConfig(
            tunnel_id=m.get_attr("L2TP_ATTR_CONN_ID"),
            session_id=m.get_attr("L2TP_ATTR_SESSION_ID"),
            peer_session_id=m.get_attr("L2TP_ATTR_PEER_SESSION_ID"),
            cookie=m.get_attr("L2TP_ATTR_COOKIE") or b"",
            peer_cookie=m.get_attr("L2TP_ATTR_PEER_COOKIE") or b"",
            l2spec_type="none" if l2spec == L2TP_L2SPECTYPE_NONE else "default",
            send_seq=bool(m.get_attr("L2TP_ATTR_SEND_SEQ")),
            recv_seq=bool(m.get_attr("L2TP_ATTR_RECV_SEQ")),
            ifname=m.get_attr("L2TP_ATTR_IFNAME"),
        )
        result.append(ObservedSession(config=config, stats=_stats_pyroute2(m)))
    return result


# --- error messages (pure) ------------------------------------------------------------------


def _detail(operation: str, code: int, subject: Mapping[str, object]) -> str:
    """What the user should do about ``code`` in ``operation``; falls back to strerror."""
    local, remote = subject.get("local"), subject.get("remote")
    sport, tid, sid = subject.get("udp_sport"), subject.get("tunnel_id"), subject.get("session_id")
    ifname = subject.get("ifname")
    if code in (_errno.EPERM, _errno.EACCES):
        return "the agent needs CAP_NET_ADMIN in this network namespace"
    if operation == "create_tunnel":
        if code == _errno.EEXIST:
            return f"tunnel id {tid} already exists"
        if code == _errno.EADDRINUSE:
            where = f"{local}:{sport}" if sport is not None else f"{local} (encap ip)"
            return f"local {where} already used by another tunnel or socket"
        if code == _errno.EADDRNOTAVAIL:
            return f"local address {local} is not assigned to any interface on this host"
        if code == _errno.ENETUNREACH:
            return f"no route to remote {remote}"
        if code in _MODULE_MISSING:
            return f"encapsulation not supported by this kernel: {MODULE_HINT}"
    if operation == "create_session":
        if code == _errno.ENODEV:
            return f"tunnel {tid} does not exist"
        if code == _errno.EEXIST:
            name = f" or interface name {ifname} is taken" if ifname else ""
            return f"session id {sid} already exists in tunnel {tid}{name}"
        if code == _errno.EPROTONOSUPPORT:
            return f"Ethernet pseudowires not supported: {MODULE_HINT}"
    if operation == "delete_tunnel" and code == _errno.ENODEV:
        return f"tunnel {tid} does not exist"
    if operation in ("delete_session", "modify_session") and code == _errno.ENODEV:
        return f"session {sid} in tunnel {tid} does not exist"
    return os.strerror(code)


_MODULE_MISSING: Final = (_errno.EPROTONOSUPPORT, _errno.EAFNOSUPPORT, _errno.ESOCKTNOSUPPORT)


def to_kernel_error(
    operation: str, code: int, subject: Mapping[str, object], kernel_message: str = ""
) -> KernelError:
    """KernelError with the errno's outcome and an actionable message."""
    detail = _detail(operation, code, subject)
    if kernel_message:
        detail = f"{detail} (kernel: {kernel_message})"
    outcome = outcome_for(code)
    if code in _MODULE_MISSING:  # a missing l2tp_ip/l2tp_ip6/l2tp_eth module, here and only here
        outcome = Outcome.NOT_SUPPORTED
    return KernelError(operation, code, outcome, detail)


# --- the socket -----------------------------------------------------------------------------

_RECV_SIZE: Final = 1 << 16  # a dump skb is at most 32 KiB in 6.1
_DELETE_POLL: Final = 0.01


def _open_genl_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        sock.bind((0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class _Family(NamedTuple):
    id: int
    groups: dict[str, int]


def _resolve_family(sock: socket.socket) -> _Family:
    """CTRL_CMD_GETFAMILY "l2tp" with pyroute2's ctrlmsg; the kernel autoloads l2tp_netlink."""
    msg = ctrlmsg()
    msg["cmd"] = CTRL_CMD_GETFAMILY
    msg["version"] = 1
    msg["attrs"] = [["CTRL_ATTR_FAMILY_NAME", L2TP_GENL_NAME]]
    msg["header"]["type"] = GENL_ID_CTRL
    msg["header"]["flags"] = NLM_F_REQUEST
    msg["header"]["sequence_number"] = 1
    msg.encode()
    sock.send(bytes(msg.data))
    data = sock.recv(_RECV_SIZE)
    length, mtype = struct.unpack_from("=IH", data)
    if mtype == NLMSG_ERROR:
        code = -struct.unpack_from("=i", data, 16)[0]
        if code in (_errno.ENOENT, _errno.EOPNOTSUPP):
            raise KernelError("open", code, Outcome.NOT_SUPPORTED, MODULE_HINT)
        raise to_kernel_error("open", code, {})
    reply = ctrlmsg(data[:length])
    reply.decode()
    groups = {
        g.get_attr("CTRL_ATTR_MCAST_GRP_NAME"): g.get_attr("CTRL_ATTR_MCAST_GRP_ID")
        for g in reply.get_attr("CTRL_ATTR_MCAST_GROUPS", [])
    }
    return _Family(reply.get_attr("CTRL_ATTR_FAMILY_ID"), groups)


@contextlib.contextmanager
def _as_kernel_errors(operation: str, subject: Mapping[str, object]) -> Iterator[None]:
    """Everything a call on the L2TP socket can raise, as a KernelError naming ``operation``:
    the kernel's error answer, the socket's own errors (ENOBUFS: a full receive buffer;
    EMSGSIZE: an answer larger than the buffer), a request the codec refuses (ValueError:
    an interface name over 15 bytes) or a malformed answer. The agent then fails one object."""
    try:
        yield
    except NetlinkReplyError as exc:
        raise to_kernel_error(operation, exc.errno, subject, exc.message) from None
    except OSError as exc:
        code = exc.errno or _errno.EIO
        raise to_kernel_error(operation, code, subject, exc.strerror or str(exc)) from exc
    except ValueError as exc:
        raise KernelError(operation, _errno.EINVAL, Outcome.INVALID, str(exc)) from exc


class L2tp:
    """The L2TP genl family on one blocking socket of the caller's network namespace.

    Not thread-safe; use one instance per thread. Every command waits for the kernel's ack, so
    errors surface as :class:`KernelError` from the call that caused them.
    """

    def __init__(self) -> None:
        sock = _open_genl_socket()
        try:
            family = _resolve_family(sock)
        except BaseException:
            sock.close()
            raise
        self._attach(sock, family)

    @classmethod
    def on_socket(cls, sock: socket.socket, family: int) -> L2tp:
        """An instance on a given socket and family id (tests replay kernel answers this way)."""
        self = cls.__new__(cls)
        self._attach(sock, _Family(family, {}))
        return self

    def _attach(self, sock: socket.socket, family: _Family) -> None:
        self._sock = sock
        self._family = family
        self._seq = 1
        self._buf = bytearray(_RECV_SIZE)

    @property
    def family_id(self) -> int:
        return self._family.id

    @property
    def mcast_groups(self) -> dict[str, int]:
        return dict(self._family.groups)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> L2tp:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- transport --

    def _send(self, cmd: int, attrs: Sequence[Attr], flags: int) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1
        self._sock.send(pack_request(self._family.id, cmd, attrs, seq=self._seq, flags=flags))
        return self._seq

    def _replies(self, seq: int) -> Iterator[bytes]:
        """Chunks answering ``seq`` up to its NLMSG_DONE or NLMSG_ERROR (the ack); skips stale
        chunks that an interrupted earlier request may have left behind."""
        view = memoryview(self._buf)
        while True:
            size = self._sock.recv_into(self._buf, _RECV_SIZE, socket.MSG_TRUNC)
            if size > _RECV_SIZE:
                raise OSError(_errno.EMSGSIZE, "netlink reply larger than the receive buffer")
            chunk = bytes(view[:size])
            if size < 16 or _U32.unpack_from(chunk, 8)[0] != seq:
                continue
            yield chunk
            offset = 0
            while offset + 16 <= size:
                length, mtype = struct.unpack_from("=IH", chunk, offset)
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    return
                offset += max((length + 3) & ~3, 16)

    def _request(
        self, operation: str, cmd: int, attrs: list[Attr], subject: Mapping[str, object]
    ) -> list[bytes]:
        """Send one request and wait for its ack; returns the reply chunks (a GET's answer)."""
        with _as_kernel_errors(operation, subject):
            seq = self._send(cmd, attrs, NLM_F_REQUEST | NLM_F_ACK)
            chunks = list(self._replies(seq))
            for _ in iter_spans(chunks):
                pass
            return chunks

    def dump_raw(self, cmd: int) -> list[bytes]:
        """The raw reply chunks of one NLM_F_DUMP of ``cmd`` (for decoding, tests, captures)."""
        seq = self._send(cmd, [], NLM_F_REQUEST | NLM_F_DUMP)
        return list(self._replies(seq))

    # -- the port --

    def dump_tunnels(self) -> list[ObservedTunnel]:
        with _as_kernel_errors("dump_tunnels", {}):
            return decode_tunnels(self.dump_raw(L2TP_CMD_TUNNEL_GET))

    def dump_sessions(self) -> list[ObservedSession]:
        """All sessions of the namespace in one dump: names, cookies, seq flags, counters."""
        with _as_kernel_errors("dump_sessions", {}):
            return decode_sessions(self.dump_raw(L2TP_CMD_SESSION_GET))

    def dump_counters(self) -> tuple[list[TunnelCounters], list[SessionCounters]]:
        """Ids, interface names and counters of every tunnel and session: one dump of each.

        What a scrape reads: nothing else is decoded and no object is made per session.
        """
        with _as_kernel_errors("dump_counters", {}):
            tunnels = decode_tunnel_counters(self.dump_raw(L2TP_CMD_TUNNEL_GET))
            return tunnels, decode_session_counters(self.dump_raw(L2TP_CMD_SESSION_GET))

    def get_tunnel(self, tunnel_id: int) -> ObservedTunnel | None:
        """The tunnel by id (L2TP_CMD_TUNNEL_GET, not a dump); None if the kernel has none."""
        subject = {"tunnel_id": tunnel_id}
        try:
            chunks = self._request(
                "get_tunnel", L2TP_CMD_TUNNEL_GET, tunnel_delete_attrs(tunnel_id), subject
            )
        except KernelError as exc:
            if exc.outcome is Outcome.NOT_FOUND:
                return None
            raise
        with _as_kernel_errors("get_tunnel", subject):
            found = [t for t in decode_tunnels(chunks) if t.config.tunnel_id == tunnel_id]
        return found[0] if found else None

    def get_session(self, tunnel_id: int, session_id: int) -> ObservedSession | None:
        """The session by (tunnel, session) id; None if the kernel has none.

        Since 6.10 the kernel looks an L2TPv3 session up by its id alone when the id is unique
        in the namespace (l2tp_v3_session_get): asked for (T, S) after T's session S went, it
        answers with another tunnel's session S. Only an answer from tunnel T counts.
        """
        subject = {"tunnel_id": tunnel_id, "session_id": session_id}
        try:
            chunks = self._request(
                "get_session",
                L2TP_CMD_SESSION_GET,
                session_delete_attrs(tunnel_id, session_id),
                subject,
            )
        except KernelError as exc:
            if exc.outcome is Outcome.NOT_FOUND:
                return None
            raise
        with _as_kernel_errors("get_session", subject):
            found = [
                s
                for s in decode_sessions(chunks)
                if (s.config.tunnel_id, s.config.session_id) == (tunnel_id, session_id)
            ]
        return found[0] if found else None

    def _session_is_there(self, operation: str, tunnel_id: int, session_id: int) -> None:
        """Refuse ``operation`` on (T, S) unless tunnel T has session S: on 6.10 and later the
        kernel would act on another tunnel's session S if T's went in between (get_session)."""
        if self.get_session(tunnel_id, session_id) is None:
            raise KernelError(
                operation,
                _errno.ENODEV,
                Outcome.NOT_FOUND,
                f"session {session_id} in tunnel {tunnel_id} does not exist",
            )

    def create_tunnel(self, cfg: TunnelConfig) -> None:
        subject = {
            "tunnel_id": cfg.tunnel_id,
            "local": cfg.local,
            "remote": cfg.remote,
            "udp_sport": cfg.udp_sport if cfg.encap == "udp" else None,
        }
        with _as_kernel_errors("create_tunnel", subject):
            attrs = tunnel_create_attrs(cfg)
        self._request("create_tunnel", L2TP_CMD_TUNNEL_CREATE, attrs, subject)

    def delete_tunnel(self, tunnel_id: int, *, wait: float = 0.0) -> None:
        """Deletes the tunnel and, with it, its sessions and their interfaces.

        The kernel acks first and does the work afterwards: until it is done, dumps still list
        the tunnel and its sessions, and creating the same tunnel id or interface name fails
        with EEXIST. ``wait`` > 0 polls up to that many seconds until the id is free, and
        raises KernelError(BUSY) if it is not.
        """
        self._request(
            "delete_tunnel",
            L2TP_CMD_TUNNEL_DELETE,
            tunnel_delete_attrs(tunnel_id),
            {"tunnel_id": tunnel_id},
        )
        if wait <= 0:
            return
        deadline = time.monotonic() + wait
        while self.tunnel_exists(tunnel_id):
            if time.monotonic() >= deadline:
                raise KernelError(
                    "delete_tunnel",
                    _errno.EBUSY,
                    Outcome.BUSY,
                    f"tunnel {tunnel_id} is still being deleted by the kernel after {wait:g} s",
                )
            time.sleep(_DELETE_POLL)

    def tunnel_exists(self, tunnel_id: int) -> bool:
        """Whether the kernel still knows ``tunnel_id`` (L2TP_CMD_TUNNEL_GET, not a dump)."""
        return self.get_tunnel(tunnel_id) is not None

    def create_session(self, cfg: SessionConfig) -> None:
        subject = {"tunnel_id": cfg.tunnel_id, "session_id": cfg.session_id, "ifname": cfg.ifname}
        with _as_kernel_errors("create_session", subject):
            attrs = session_create_attrs(cfg)
        self._request("create_session", L2TP_CMD_SESSION_CREATE, attrs, subject)

    def delete_session(self, tunnel_id: int, session_id: int) -> None:
        self._session_is_there("delete_session", tunnel_id, session_id)
        self._request(
            "delete_session",
            L2TP_CMD_SESSION_DELETE,
            session_delete_attrs(tunnel_id, session_id),
            {"tunnel_id": tunnel_id, "session_id": session_id},
        )

    def modify_session(
        self, tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
    ) -> None:
        self._session_is_there("modify_session", tunnel_id, session_id)
        self._request(
            "modify_session",
            L2TP_CMD_SESSION_MODIFY,
            session_modify_attrs(tunnel_id, session_id, send_seq=send_seq, recv_seq=recv_seq),
            {"tunnel_id": tunnel_id, "session_id": session_id},
        )


# --- events ---------------------------------------------------------------------------------


class L2tpEvent(NamedTuple):
    cmd: str  # "TUNNEL_CREATE", "SESSION_DELETE", ...; "OVERFLOW" when events were lost
    tunnel_id: int
    session_id: int | None


class L2tpEvents:
    """The "l2tp" multicast group on its own non-blocking socket, for an asyncio reader.

    The kernel multicasts to every network namespace (genlmsg_multicast_allns), so events of
    other namespaces arrive too: treat them as hints to re-read state, never as state. Tunnel
    deletion sends no per-session events. "OVERFLOW" means the socket buffer ran over (ENOBUFS)
    and events were lost: re-read everything.
    """

    def __init__(self) -> None:
        self._sock = _open_genl_socket()
        try:
            family = _resolve_family(self._sock)
            group = family.groups.get(L2TP_GENL_MCGROUP)
            if group is None:
                raise KernelError("subscribe", _errno.ENOENT, Outcome.NOT_SUPPORTED, MODULE_HINT)
            self._sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
            self._sock.setblocking(False)
        except BaseException:
            self._sock.close()
            raise

    @classmethod
    def on_socket(cls, sock: socket.socket) -> L2tpEvents:
        """An instance reading a given non-blocking socket (tests replay captured events)."""
        self = cls.__new__(cls)
        self._sock = sock
        return self

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> L2tpEvents:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def drain(self) -> list[L2tpEvent]:
        """Everything queued now, without blocking."""
        events: list[L2tpEvent] = []
        while True:
            try:
                chunk = self._sock.recv(_RECV_SIZE)
            except BlockingIOError:
                return events
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    events.append(L2tpEvent("OVERFLOW", 0, None))
                    continue
                raise
            events.extend(parse_events(chunk))


def parse_events(chunk: bytes) -> list[L2tpEvent]:
    """Multicast notifications (whole TUNNEL_*/SESSION_* messages) as events."""
    events = []
    for cmd, attrs in iter_messages([chunk]):
        tunnel = attrs.get(L2TP_ATTR_CONN_ID)
        session = attrs.get(L2TP_ATTR_SESSION_ID)
        events.append(
            L2tpEvent(
                CMD_NAMES.get(cmd, str(cmd)),
                _U32.unpack(tunnel)[0] if tunnel else 0,
                _U32.unpack(session)[0] if session else None,
            )
        )
    return events
