"""pyroute2's parser as the independent reference for the L2TP codec (kube_l2tp.netlink.l2tp).

Slow (the generic nla machinery) and only for tests: the unit tests hold pack_request and the
dump decoders against it on captured bytes. Its nla_map is generated from the codec's one
attribute table (attrs.py), with pyroute2's payload types for each kind.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import Any

from pyroute2.netlink import NLA_F_NESTED, genlmsg, nla

from kube_l2tp.core.state import ObservedSession, ObservedTunnel, SessionConfig, Stats, TunnelConfig
from kube_l2tp.netlink.l2tp.attrs import (
    L2TP_ENCAPTYPE_IP,
    L2TP_GENL_VERSION,
    L2TP_L2SPECTYPE_NONE,
    STATS_COUNTERS,
    Kind,
    L2tpAttr,
    L2tpCmd,
    L2tpStatsAttr,
)
from kube_l2tp.netlink.l2tp.codec import Attr
from kube_l2tp.netlink.nlmsg import NLMSG_DONE, NLMSG_ERROR

_PYROUTE2_TYPE = {
    Kind.NONE: "none",
    Kind.U8: "uint8",
    Kind.U16: "uint16",
    Kind.U32: "uint32",
    Kind.U64: "uint64",
    Kind.FLAG: "flag",
    Kind.STRING: "asciiz",
    Kind.BINARY: "cdata",  # raw bytes: pyroute2's own l2tpmsg sends cookies as ASCII text
    Kind.IP4: "ip4addr",
    Kind.IP6: "ip6addr",
    Kind.NESTED: "l2tp_stats",
}


class L2tpMessage(genlmsg):  # type: ignore[misc]
    """The L2TP genl message with the kernel's attribute names, numbered explicitly.

    Unlike pyroute2's ``l2tpmsg``: cookies are raw bytes (``cdata``), UDP_CSUM is a u8 that the
    kernel reads by presence only, and the stats nest knows attributes 10 and 11.
    """

    prefix = "L2TP_ATTR_"
    nla_map = tuple((int(a), a.name, _PYROUTE2_TYPE[a.kind]) for a in L2tpAttr)

    class l2tp_stats(nla):  # type: ignore[misc]  # noqa: N801 - pyroute2 looks it up by name
        nla_flags = NLA_F_NESTED
        prefix = "L2TP_ATTR_"
        nla_map = tuple(
            (int(a), a.name, "uint64" if a in STATS_COUNTERS else "none") for a in L2tpStatsAttr
        )


def pack_request_pyroute2(
    family: int, cmd: int, attrs: Iterable[Attr], *, seq: int, flags: int
) -> bytes:
    """The same request as codec.pack_request, encoded by pyroute2's machinery."""
    msg = L2tpMessage()
    msg["cmd"] = cmd
    msg["version"] = L2TP_GENL_VERSION
    msg["attrs"] = [[attr.name, value] for attr, value in attrs]
    msg["header"]["type"] = family
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = seq
    msg["header"]["pid"] = 0
    msg.encode()
    return bytes(msg.data)


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
    values = {a.field: nest.get_attr(a.name) for a in STATS_COUNTERS}
    return Stats(**{f: v for f, v in values.items() if v is not None})


def decode_tunnels_pyroute2(chunks: Iterable[bytes]) -> list[ObservedTunnel]:
    """Slow, independent reference for decode_tunnels: pyroute2's parser and L2tpMessage."""
    result = []
    for m in _pyroute2_messages(chunks, L2tpCmd.L2TP_CMD_TUNNEL_GET):
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
    for m in _pyroute2_messages(chunks, L2tpCmd.L2TP_CMD_SESSION_GET):
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
