"""Dump decoders, pure: TUNNEL_GET/SESSION_GET replies as ObservedTunnel/ObservedSession, and
the counters alone for a scrape.

6.1's l2tp_nl_tunnel_send/l2tp_nl_session_send put attributes at fixed places: where the attribute
headers are what 6.1 sends, one ``struct`` unpack reads the headers and one the values (the fast
path); any other layout takes the generic walk of :mod:`.codec`. Both give the same answer (unit
tests hold them against each other and against pyroute2's parser; timings in BENCHMARKS.md).
"""

from __future__ import annotations

import operator
import socket
import struct
from collections.abc import Iterable
from typing import Final

from kube_l2tp.core.state import (
    STATS_FIELDS,
    Counters,
    ObservedSession,
    ObservedTunnel,
    SessionConfig,
    SessionCounters,
    Stats,
    TunnelConfig,
    TunnelCounters,
)
from kube_l2tp.netlink.l2tp.attrs import (
    L2TP_ENCAPTYPE_IP,
    L2TP_L2SPECTYPE_DEFAULT,
    L2TP_L2SPECTYPE_NONE,
    STATS_COUNTERS,
    L2tpAttr,
    L2tpCmd,
    L2tpStatsAttr,
)
from kube_l2tp.netlink.l2tp.codec import iter_messages, iter_spans
from kube_l2tp.netlink.nlmsg import NLA_HDR, NLA_TYPE_MASK, U16, U32, U64, RawAttrs, walk_attrs

A, S = L2tpAttr, L2tpStatsAttr

# Plain ints of the attributes the loops below compare against (an enum member's lookup costs
# more than the comparison itself in these loops).
_CONN_ID: Final = int(A.L2TP_ATTR_CONN_ID)
_PEER_CONN_ID: Final = int(A.L2TP_ATTR_PEER_CONN_ID)
_SESSION_ID: Final = int(A.L2TP_ATTR_SESSION_ID)
_PEER_SESSION_ID: Final = int(A.L2TP_ATTR_PEER_SESSION_ID)
_STATS: Final = int(A.L2TP_ATTR_STATS)
_IFNAME: Final = int(A.L2TP_ATTR_IFNAME)
_RECV_SEQ: Final = int(A.L2TP_ATTR_RECV_SEQ)
_SEND_SEQ: Final = int(A.L2TP_ATTR_SEND_SEQ)
_COOKIE: Final = int(A.L2TP_ATTR_COOKIE)
_PEER_COOKIE: Final = int(A.L2TP_ATTR_PEER_COOKIE)
_L2SPEC_TYPE: Final = int(A.L2TP_ATTR_L2SPEC_TYPE)
_TUNNEL_GET: Final = int(L2tpCmd.L2TP_CMD_TUNNEL_GET)
_SESSION_GET: Final = int(L2tpCmd.L2TP_CMD_SESSION_GET)

# Stats fields in declaration order, by kernel attribute number (STATS_PAD and unknowns skipped).
_STATS_POSITION: Final = {
    int(a): list(Stats.__dataclass_fields__).index(a.field) for a in STATS_COUNTERS
}
# What 6.1 sends on 64-bit arches: ten u64 counters in this order, no pads. One unpack reads the
# headers, one the values; anything else takes the generic walk.
_STATS_ORDER: Final = (
    S.L2TP_ATTR_TX_PACKETS,
    S.L2TP_ATTR_TX_BYTES,
    S.L2TP_ATTR_TX_ERRORS,
    S.L2TP_ATTR_RX_PACKETS,
    S.L2TP_ATTR_RX_BYTES,
    S.L2TP_ATTR_RX_SEQ_DISCARDS,
    S.L2TP_ATTR_RX_COOKIE_DISCARDS,
    S.L2TP_ATTR_RX_OOS_PACKETS,
    S.L2TP_ATTR_RX_ERRORS,
    S.L2TP_ATTR_RX_INVALID,
)
_STATS_HEADERS: Final = struct.Struct("=" + "I8x" * 10)
_STATS_VALUES: Final = struct.Struct("=" + "4xQ" * 10)
_STATS_EXPECTED: Final = tuple(
    struct.unpack("=I", NLA_HDR.pack(12, kind))[0] for kind in _STATS_ORDER
)
_STATS_PERMUTATION: Final = tuple(
    _STATS_ORDER.index(S(kind)) for kind in sorted(_STATS_POSITION, key=_STATS_POSITION.__getitem__)
)


def _stats(payload: bytes | None) -> Stats:
    if not payload:
        return Stats()
    if len(payload) == _STATS_VALUES.size and _STATS_HEADERS.unpack(payload) == _STATS_EXPECTED:
        v = _STATS_VALUES.unpack(payload)
        return Stats(*[v[i] for i in _STATS_PERMUTATION])
    values = [0] * len(_STATS_POSITION)
    position = _STATS_POSITION.get
    unpack_hdr, unpack_u64 = NLA_HDR.unpack_from, U64.unpack_from
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
    encap_ip = U16.unpack(attrs[A.L2TP_ATTR_ENCAP_TYPE])[0] == L2TP_ENCAPTYPE_IP
    v6 = A.L2TP_ATTR_IP6_SADDR in attrs
    local = attrs.get(A.L2TP_ATTR_IP6_SADDR if v6 else A.L2TP_ATTR_IP_SADDR)
    remote = attrs.get(A.L2TP_ATTR_IP6_DADDR if v6 else A.L2TP_ATTR_IP_DADDR)
    sport = attrs.get(A.L2TP_ATTR_UDP_SPORT)
    dport = attrs.get(A.L2TP_ATTR_UDP_DPORT)
    udp_csum = attrs.get(A.L2TP_ATTR_UDP_CSUM)
    config = TunnelConfig(
        tunnel_id=U32.unpack(attrs[_CONN_ID])[0],
        peer_tunnel_id=U32.unpack(attrs[_PEER_CONN_ID])[0],
        encap="ip" if encap_ip else "udp",
        local=_ip(local) if local else "",
        remote=_ip(remote) if remote else "",
        udp_sport=U16.unpack(sport)[0] if sport else None,
        udp_dport=U16.unpack(dport)[0] if dport else None,
        # the dump sends UDP_CSUM for IPv4/UDP as a u8 value (unlike create, which reads presence)
        udp_csum=bool(udp_csum and udp_csum[0]),
        udp6_csum_tx=A.L2TP_ATTR_UDP_ZERO_CSUM6_TX not in attrs,
        udp6_csum_rx=A.L2TP_ATTR_UDP_ZERO_CSUM6_RX not in attrs,
    )
    return ObservedTunnel(config=config, stats=_stats(attrs.get(_STATS)))


# 6.1 starts every session message with CONN_ID, SESSION_ID, PEER_CONN_ID, PEER_SESSION_ID,
# DEBUG (u32 each) and PW_TYPE (u16): one unpack reads the lot when the headers are as expected.
_SESSION_HEAD: Final = struct.Struct("=" + "II" * 5 + "IH2x")
_SESSION_HEAD_EXPECTED: Final = tuple(
    struct.unpack("=I", NLA_HDR.pack(length, kind))[0]
    for length, kind in (
        (8, A.L2TP_ATTR_CONN_ID),
        (8, A.L2TP_ATTR_SESSION_ID),
        (8, A.L2TP_ATTR_PEER_CONN_ID),
        (8, A.L2TP_ATTR_PEER_SESSION_ID),
        (8, A.L2TP_ATTR_DEBUG),
        (6, A.L2TP_ATTR_PW_TYPE),
    )
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
    unpack_hdr, unpack_u32 = NLA_HDR.unpack_from, U32.unpack_from
    while pos + 4 <= end:
        length, kind = unpack_hdr(buf, pos)
        if length < 4:
            break
        kind &= NLA_TYPE_MASK
        if kind == _STATS:
            stats = buf[pos + 4 : pos + length]
        elif kind == _IFNAME:
            ifname = buf[pos + 4 : pos + length].rstrip(b"\0").decode()
        elif kind == _RECV_SEQ:
            recv_seq = buf[pos + 4]
        elif kind == _SEND_SEQ:
            send_seq = buf[pos + 4]
        elif kind == _COOKIE:
            cookie = buf[pos + 4 : pos + length]
        elif kind == _PEER_COOKIE:
            peer_cookie = buf[pos + 4 : pos + length]
        elif kind == _L2SPEC_TYPE:
            l2spec = buf[pos + 4]
        elif kind == _CONN_ID:
            tunnel_id = unpack_u32(buf, pos + 4)[0]
        elif kind == _SESSION_ID:
            session_id = unpack_u32(buf, pos + 4)[0]
        elif kind == _PEER_SESSION_ID:
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
    return [tunnel_from_attrs(a) for cmd, a in iter_messages(chunks) if cmd == _TUNNEL_GET]


def decode_sessions(chunks: Iterable[bytes]) -> list[ObservedSession]:
    return [
        session_at(buf, start, end)
        for cmd, buf, start, end in iter_spans(chunks)
        if cmd == _SESSION_GET
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
    return tuple(U32.unpack(NLA_HDR.pack(length, kind))[0] for length, kind in attrs)


_NEST_SIZE: Final = 4 + 12 * 10  # STATS: header, then ten (header, u64)
_NEST_HEADERS: Final = struct.Struct("=I" + "I8x" * 10)
_NEST_EXPECTED: Final = _headers((_NEST_SIZE, _STATS), *[(12, k) for k in _STATS_ORDER])
_NEST_VALUES: Final = struct.Struct("=4x" + "4xQ" * 10)
_NEST_COUNTERS: Final = operator.itemgetter(*_STATS_PERMUTATION)  # kernel order -> Stats order
# PROTO_VERSION, CONN_ID, PEER_CONN_ID, DEBUG, ENCAP_TYPE, then the stats nest
_TUNNEL_HEADERS: Final = struct.Struct("=" + "I4x" * 5 + _NEST_HEADERS.format[1:])
_TUNNEL_EXPECTED: Final = (
    _headers(
        (5, A.L2TP_ATTR_PROTO_VERSION),
        (8, A.L2TP_ATTR_CONN_ID),
        (8, A.L2TP_ATTR_PEER_CONN_ID),
        (8, A.L2TP_ATTR_DEBUG),
        (6, A.L2TP_ATTR_ENCAP_TYPE),
    )
    + _NEST_EXPECTED
)
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
        if cmd != _TUNNEL_GET:
            continue
        if end - start >= size and headers(buf, start) == _TUNNEL_EXPECTED:
            v = values(buf, start)
            out.append((v[0], _TUNNEL_COUNTERS(v)))
            continue
        attrs = walk_attrs(buf, start, end)
        tid = U32.unpack(attrs[_CONN_ID])[0]
        out.append((tid, _counters(_stats(attrs.get(_STATS)))))
    return out


def decode_session_counters(chunks: Iterable[bytes]) -> list[SessionCounters]:
    """(tunnel_id, session_id, ifname, counters) per SESSION_GET message; equal to what
    decode_sessions reads."""
    out: list[SessionCounters] = []
    unpack_head = _SESSION_HEAD_IFNAME.unpack_from
    headers, values = _NEST_HEADERS.unpack_from, _NEST_VALUES.unpack_from
    head_size = _SESSION_HEAD_IFNAME.size
    for cmd, buf, start, end in iter_spans(chunks):
        if cmd != _SESSION_GET:
            continue
        nest_at = end - _NEST_SIZE
        if nest_at >= start + head_size:
            head = unpack_head(buf, start)
            ifname_end = start + head_size - 4 + head[12]  # IFNAME follows the head
            if (
                head[13] == _IFNAME
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
