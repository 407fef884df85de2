"""The L2TP genl codec, pure: configs to requests, reply buffers to messages, errnos to errors.

``*_attrs`` functions turn configs into (attribute, value) lists in the order ``ip l2tp``
(iproute2 6.1) sends them, :func:`pack_request` packs them with ``struct`` (the packing of each
attribute follows its kind in :mod:`.attrs`); :func:`iter_spans` walks the messages of a reply.
Names and numbers follow include/uapi/linux/l2tp.h and net/l2tp/l2tp_netlink.c (kernel 6.1).
"""

from __future__ import annotations

import errno as _errno
import os
import socket
import struct
from collections.abc import Iterable, Iterator, Mapping
from typing import Final

from kube_l2tp.core.state import KernelError, Outcome, SessionConfig, TunnelConfig
from kube_l2tp.netlink.errors import outcome_for
from kube_l2tp.netlink.l2tp.attrs import (
    L2TP_ENCAPTYPE_IP,
    L2TP_ENCAPTYPE_UDP,
    L2TP_GENL_VERSION,
    L2TP_L2SPECTYPE_DEFAULT,
    L2TP_L2SPECTYPE_NONE,
    L2TP_PWTYPE_ETH,
    Kind,
    L2tpAttr,
)
from kube_l2tp.netlink.nlmsg import (
    GENL_HDRLEN,
    GENLHDR,
    NLA_HDR,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGHDR,
    NetlinkReplyError,
    RawAttrs,
    error_message,
    walk_attrs,
)

A = L2tpAttr

MODULE_HINT: Final = "load l2tp_netlink/l2tp_eth (modprobe l2tp_eth l2tp_ip l2tp_ip6)"

# --- encoding -------------------------------------------------------------------------------

Attr = tuple[L2tpAttr, object]
"""(kernel attribute, value): what :func:`pack_request` packs."""

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
        (A.L2TP_ATTR_CONN_ID, cfg.tunnel_id),
        (A.L2TP_ATTR_PEER_CONN_ID, cfg.peer_tunnel_id),
        (A.L2TP_ATTR_PROTO_VERSION, 3),
        (A.L2TP_ATTR_ENCAP_TYPE, L2TP_ENCAPTYPE_UDP if udp else L2TP_ENCAPTYPE_IP),
    ]
    if cfg.ipv6:
        attrs += [(A.L2TP_ATTR_IP6_SADDR, cfg.local), (A.L2TP_ATTR_IP6_DADDR, cfg.remote)]
    else:
        attrs += [(A.L2TP_ATTR_IP_SADDR, cfg.local), (A.L2TP_ATTR_IP_DADDR, cfg.remote)]
    if udp:
        if cfg.udp_sport is None or cfg.udp_dport is None:
            raise ValueError("UDP encapsulation needs udp_sport and udp_dport")
        attrs += [(A.L2TP_ATTR_UDP_SPORT, cfg.udp_sport), (A.L2TP_ATTR_UDP_DPORT, cfg.udp_dport)]
        if cfg.ipv6:
            if not cfg.udp6_csum_tx:
                attrs.append((A.L2TP_ATTR_UDP_ZERO_CSUM6_TX, True))
            if not cfg.udp6_csum_rx:
                attrs.append((A.L2TP_ATTR_UDP_ZERO_CSUM6_RX, True))
        elif cfg.udp_csum:
            attrs.append((A.L2TP_ATTR_UDP_CSUM, 1))
    return attrs


def tunnel_delete_attrs(tunnel_id: int) -> list[Attr]:
    return [(A.L2TP_ATTR_CONN_ID, tunnel_id)]


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
        (A.L2TP_ATTR_CONN_ID, cfg.tunnel_id),
        (A.L2TP_ATTR_SESSION_ID, cfg.session_id),
        (A.L2TP_ATTR_PEER_SESSION_ID, cfg.peer_session_id),
        (A.L2TP_ATTR_PW_TYPE, L2TP_PWTYPE_ETH),
        (A.L2TP_ATTR_L2SPEC_TYPE, l2spec),
    ]
    if cfg.recv_seq:
        attrs.append((A.L2TP_ATTR_RECV_SEQ, 1))
    if cfg.send_seq:
        attrs.append((A.L2TP_ATTR_SEND_SEQ, 1))
    if cfg.cookie:
        attrs.append((A.L2TP_ATTR_COOKIE, cfg.cookie))
    if cfg.peer_cookie:
        attrs.append((A.L2TP_ATTR_PEER_COOKIE, cfg.peer_cookie))
    if cfg.ifname:
        attrs.append((A.L2TP_ATTR_IFNAME, cfg.ifname))
    return attrs


def session_delete_attrs(tunnel_id: int, session_id: int) -> list[Attr]:
    return [(A.L2TP_ATTR_CONN_ID, tunnel_id), (A.L2TP_ATTR_SESSION_ID, session_id)]


def session_modify_attrs(
    tunnel_id: int, session_id: int, *, send_seq: bool, recv_seq: bool
) -> list[Attr]:
    """Both flags are always sent: SESSION_MODIFY leaves an absent one unchanged."""
    return [
        (A.L2TP_ATTR_CONN_ID, tunnel_id),
        (A.L2TP_ATTR_SESSION_ID, session_id),
        (A.L2TP_ATTR_RECV_SEQ, int(recv_seq)),
        (A.L2TP_ATTR_SEND_SEQ, int(send_seq)),
    ]


def _pack_attr(attr: L2tpAttr, value: object) -> bytes:
    kind = attr.kind
    if kind is Kind.U8:
        payload = struct.pack("=B", value)
    elif kind is Kind.U16:
        payload = struct.pack("=H", value)
    elif kind is Kind.U32:
        payload = struct.pack("=I", value)
    elif kind is Kind.U64:
        payload = struct.pack("=Q", value)
    elif kind is Kind.FLAG:
        payload = b""
    elif kind is Kind.IP4:
        payload = socket.inet_pton(socket.AF_INET, str(value))
    elif kind is Kind.IP6:
        payload = socket.inet_pton(socket.AF_INET6, str(value))
    elif kind is Kind.STRING:
        payload = str(value).encode() + b"\0"
    elif kind is Kind.BINARY:
        assert isinstance(value, bytes), attr.name
        payload = value
    else:
        raise ValueError(f"{attr.name} ({kind.value}) is not sent by this codec")
    size = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(size, attr) + payload + b"\0" * (-size % 4)


def pack_request(family: int, cmd: int, attrs: Iterable[Attr], *, seq: int, flags: int) -> bytes:
    """One complete genl request (nlmsghdr, genlmsghdr, attributes) as bytes; pid 0."""
    body = b"".join(_pack_attr(attr, value) for attr, value in attrs)
    header = NLMSGHDR.pack(GENL_HDRLEN + len(body), family, flags, seq, 0)
    return header + GENLHDR.pack(cmd, L2TP_GENL_VERSION, 0) + body


# --- reply walking --------------------------------------------------------------------------


def iter_spans(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes, int, int]]:
    """(genl cmd, buffer, start, end of its attributes) per L2TP message of a reply.

    Raises NetlinkReplyError on an NLMSG_ERROR with a code, stops at NLMSG_DONE. Each chunk is
    what one recv() returned: whole netlink messages.
    """
    unpack_hdr = NLMSGHDR.unpack_from
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
                    raise NetlinkReplyError(code, error_message(buf, offset, length, flags))
            elif length >= GENL_HDRLEN:
                yield buf[offset + 16], buf, offset + GENL_HDRLEN, offset + length
            offset += (length + 3) & ~3


def iter_messages(chunks: Iterable[bytes]) -> Iterator[tuple[int, RawAttrs]]:
    """(genl cmd, attributes) per L2TP message of a reply; see iter_spans."""
    for cmd, buf, start, end in iter_spans(chunks):
        yield cmd, walk_attrs(buf, start, end)


# --- error messages -------------------------------------------------------------------------


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
