"""The XFRM netlink port: SaConfig/PolicyConfig in, ObservedSa/PolicyConfig out.

pyroute2 0.9.7 knows the XFRM message names but not the structs' layouts as this kernel has them,
so this module packs and parses struct xfrm_usersa_info, xfrm_userpolicy_info, xfrm_user_tmpl and
xfrm_algo_aead itself with ``struct`` (offsets checked against include/uapi/linux/xfrm.h with
offsetof() on x86_64: usersa_info 224 bytes, userpolicy_info 168, user_tmpl 64, selector 56),
over one blocking NETLINK_XFRM socket, as netlink/l2tp/ does for L2TP and for the same reason
(pyroute2's sync sockets drive a private event loop, which fails inside any running loop).

What ``ip xfrm`` (iproute2 ip/ipxfrm.c, ip/xfrm_state.c, ip/xfrm_policy.c) sends is the reference:
infinite byte and packet limits (XFRM_INF), a template that allows every algorithm (~0), port
masks of 0xffff for a port given. The kernel tests compare both ways in the guest.

Keys: the kernel returns them in dumps (XFRMA_ALG_AEAD); they stay in ``bytes`` fields with
``repr=False`` and never reach an exception's text.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final

from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.core.xfrm import (
    AF_INET6,
    IPPROTO_ESP,
    Dir,
    ObservedSa,
    PolicyConfig,
    SaConfig,
    SaCounters,
    Selector,
)
from kube_l2tp.netlink.errors import outcome_for
from kube_l2tp.netlink.nlmsg import (
    NETLINK_EXT_ACK,
    NLA_TYPE_MASK,
    NLM_F_ACK,
    NLM_F_ACK_TLVS,
    NLM_F_CAPPED,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSGERR_ATTR_MSG,
    SOL_NETLINK,
    NetlinkReplyError,
)

# --- include/uapi/linux/xfrm.h ----------------------------------------------------------------

NETLINK_XFRM: Final = 6
NLM_F_CREATE: Final = 0x400
NLM_F_EXCL: Final = 0x200

XFRM_MSG_NEWSA: Final = 0x10
XFRM_MSG_DELSA: Final = 0x11
XFRM_MSG_GETSA: Final = 0x12
XFRM_MSG_NEWPOLICY: Final = 0x13
XFRM_MSG_DELPOLICY: Final = 0x14
XFRM_MSG_GETPOLICY: Final = 0x15
XFRM_MSG_UPDPOLICY: Final = 0x19

XFRMA_TMPL: Final = 5
XFRMA_REPLAY_VAL: Final = 10
XFRMA_ALG_AEAD: Final = 18

XFRM_POLICY_IN: Final = 0
XFRM_POLICY_OUT: Final = 1
XFRM_POLICY_ALLOW: Final = 0
XFRM_MODE_TRANSPORT: Final = 0
XFRM_INF: Final = 0xFFFFFFFFFFFFFFFF
ALL_ALGS: Final = 0xFFFFFFFF

_DIRS: Final[dict[Dir, int]] = {"in": XFRM_POLICY_IN, "out": XFRM_POLICY_OUT}
_DIR_NAMES: Final[dict[int, Dir]] = {v: k for k, v in _DIRS.items()}

_NLMSGHDR: Final = struct.Struct("=IHHII")
_NLA: Final = struct.Struct("=HH")
_PORTS: Final = struct.Struct(">HHHH")  # dport, dport_mask, sport, sport_mask (__be16)
_SEL_TAIL: Final = struct.Struct(
    "=HBBB3xiI"
)  # family, prefixlen_d, prefixlen_s, proto, ifindex, user
_SPI: Final = struct.Struct(">I")
_LFT_CFG: Final = struct.Struct("=8Q")
_LFT_CUR: Final = struct.Struct("=4Q")  # bytes, packets, add_time, use_time
_STATS: Final = struct.Struct("=3I")  # replay_window, replay, integrity_failed
_SA_TAIL: Final = struct.Struct("=IIHBBB7x")  # seq, reqid, family, mode, replay_window, flags
_POL_TAIL: Final = struct.Struct("=IIBBBB4x")  # priority, index, dir, action, flags, share
_TMPL_TAIL: Final = struct.Struct("=IBBBxIII")  # reqid, mode, share, optional, a/e/c algos
_AEAD_HDR: Final = struct.Struct("=64sII")  # alg_name, alg_key_len (bits), alg_icv_len (bits)

SELECTOR_LEN: Final = 56
USERSA_INFO_LEN: Final = 224
USERSA_ID_LEN: Final = 24
USERPOLICY_INFO_LEN: Final = 168
USERPOLICY_ID_LEN: Final = 64
USER_TMPL_LEN: Final = 64

# Offsets inside struct xfrm_usersa_info.
_SA_ID: Final = 56
_SA_SADDR: Final = 80
_SA_CURLFT: Final = 160
_SA_STATS: Final = 192
_SA_TAIL_AT: Final = 204
_POL_TAIL_AT: Final = 152


def _addr(text: str) -> bytes:
    """xfrm_address_t: the address, zero-padded to 16 bytes."""
    return ipaddress.ip_address(text).packed.ljust(16, b"\0")


def _text(family: int, raw: bytes) -> str:
    if family == AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return str(ipaddress.IPv4Address(raw[:4]))


def pack_selector(sel: Selector) -> bytes:
    ports = _PORTS.pack(
        sel.dport, 0xFFFF if sel.dport else 0, sel.sport, 0xFFFF if sel.sport else 0
    )
    tail = _SEL_TAIL.pack(sel.family, sel.prefixlen, sel.prefixlen, sel.proto, 0, 0)
    return _addr(sel.dst) + _addr(sel.src) + ports + tail


def unpack_selector(buf: bytes, at: int = 0) -> Selector | None:
    """None for a selector that is not one host-to-host flow (never one of the agent's)."""
    dport, _dm, sport, _sm = _PORTS.unpack_from(buf, at + 32)
    family, plen_d, plen_s, proto, _ifindex, _user = _SEL_TAIL.unpack_from(buf, at + 40)
    if family not in (socket.AF_INET, socket.AF_INET6):
        return None
    full = 128 if family == AF_INET6 else 32
    if plen_d != full or plen_s != full:
        return None
    dst = _text(family, buf[at : at + 16])
    src = _text(family, buf[at + 16 : at + 32])
    return Selector(family, src, dst, proto, sport, dport)


def _attr(kind: int, payload: bytes) -> bytes:
    pad = b"\0" * (-(4 + len(payload)) % 4)
    return _NLA.pack(4 + len(payload), kind) + payload + pad


def _message(mtype: int, flags: int, seq: int, body: bytes) -> bytes:
    return _NLMSGHDR.pack(16 + len(body), mtype, flags, seq, 0) + body


def sa_body(sa: SaConfig) -> bytes:
    """XFRM_MSG_NEWSA's payload: struct xfrm_usersa_info and XFRMA_ALG_AEAD."""
    info = (
        pack_selector(sa.selector)
        + _addr(sa.dst)
        + _SPI.pack(sa.spi)
        + struct.pack("=B3x", IPPROTO_ESP)
        + _addr(sa.src)
        + _LFT_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
        + _LFT_CUR.pack(0, 0, 0, 0)
        + _STATS.pack(0, 0, 0)
        + _SA_TAIL.pack(0, sa.reqid, sa.family, XFRM_MODE_TRANSPORT, sa.replay_window, 0)
    )
    name = sa.aead_name.encode()
    aead = _AEAD_HDR.pack(name, len(sa.key) * 8, sa.icv_bits) + sa.key
    return info + _attr(XFRMA_ALG_AEAD, aead)


def sa_id_body(family: int, dst: str, spi: int) -> bytes:
    """XFRM_MSG_DELSA's payload: struct xfrm_usersa_id."""
    return _addr(dst) + _SPI.pack(spi) + struct.pack("=HBx", family, IPPROTO_ESP)


def policy_body(pol: PolicyConfig) -> bytes:
    """XFRM_MSG_NEWPOLICY's payload: struct xfrm_userpolicy_info and one XFRMA_TMPL."""
    family = pol.selector.family
    info = (
        pack_selector(pol.selector)
        + _LFT_CFG.pack(XFRM_INF, XFRM_INF, XFRM_INF, XFRM_INF, 0, 0, 0, 0)
        + _LFT_CUR.pack(0, 0, 0, 0)
        + _POL_TAIL.pack(pol.priority, 0, _DIRS[pol.direction], XFRM_POLICY_ALLOW, 0, 0)
    )
    tmpl = (
        _addr(pol.tmpl_dst)
        + _SPI.pack(0)
        + struct.pack("=B3x", IPPROTO_ESP)
        + struct.pack("=H2x", family)
        + _addr(pol.tmpl_src)
        + _TMPL_TAIL.pack(pol.reqid, XFRM_MODE_TRANSPORT, 0, 0, ALL_ALGS, ALL_ALGS, ALL_ALGS)
    )
    return info + _attr(XFRMA_TMPL, tmpl)


def policy_id_body(direction: Dir, selector: Selector) -> bytes:
    """XFRM_MSG_DELPOLICY's payload: struct xfrm_userpolicy_id (looked up by selector)."""
    return pack_selector(selector) + struct.pack("=IB3x", 0, _DIRS[direction])


# --- parsing ------------------------------------------------------------------------------------


def _attrs(buf: bytes, start: int, end: int) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while start + 4 <= end:
        length, kind = _NLA.unpack_from(buf, start)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = buf[start + 4 : start + length]
        start += (length + 3) & ~3
    return found


def iter_messages(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(type, payload) per message of a reply; raises NetlinkReplyError on an error code."""
    for buf in chunks:
        offset, size = 0, len(buf)
        while offset + 16 <= size:
            length, mtype, flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, offset)
            if length < 16 or offset + length > size:
                raise ValueError(f"truncated netlink message at offset {offset}")
            if mtype == NLMSG_DONE:
                return
            if mtype == NLMSG_ERROR:
                code = -struct.unpack_from("=i", buf, offset + 16)[0]
                if code:
                    raise NetlinkReplyError(code, _error_text(buf, offset, length, flags))
            else:
                yield mtype, buf[offset + 16 : offset + length]
            offset += (length + 3) & ~3


def _error_text(buf: bytes, offset: int, length: int, flags: int) -> str:
    if not flags & NLM_F_ACK_TLVS:
        return ""
    echoed = (
        16 if flags & NLM_F_CAPPED else (struct.unpack_from("=I", buf, offset + 20)[0] + 3) & ~3
    )
    tlvs = _attrs(buf, offset + 20 + echoed, offset + length)
    return tlvs.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")


@dataclass(frozen=True)
class RawSa:
    """Any SA of the namespace, as dumped; ``observed`` only for ESP transport SAs we can read."""

    family: int
    dst: str
    spi: int
    proto: int
    reqid: int
    observed: ObservedSa | None


def parse_sa(payload: bytes) -> RawSa:
    """One XFRM_MSG_NEWSA of a dump."""
    _seq, reqid, family, mode, replay_window, _flags = _SA_TAIL.unpack_from(payload, _SA_TAIL_AT)
    dst = _text(family, payload[_SA_ID : _SA_ID + 16])
    (spi,) = _SPI.unpack_from(payload, _SA_ID + 16)
    proto = payload[_SA_ID + 20]
    attrs = _attrs(payload, USERSA_INFO_LEN, len(payload))
    aead = attrs.get(XFRMA_ALG_AEAD)
    selector = unpack_selector(payload)
    observed = None
    if aead is not None and selector is not None and mode == XFRM_MODE_TRANSPORT:
        name, key_bits, icv_bits = _AEAD_HDR.unpack_from(aead)
        key = aead[_AEAD_HDR.size : _AEAD_HDR.size + key_bits // 8]
        nbytes, packets, add_time, _use = _LFT_CUR.unpack_from(payload, _SA_CURLFT)
        window, replay, integrity = _STATS.unpack_from(payload, _SA_STATS)
        config = SaConfig(
            family=family,
            src=_text(family, payload[_SA_SADDR : _SA_SADDR + 16]),
            dst=dst,
            spi=spi,
            reqid=reqid,
            selector=selector,
            aead_name=name.rstrip(b"\0").decode(errors="replace"),
            key=key,
            icv_bits=icv_bits,
            replay_window=replay_window,
        )
        counters = SaCounters(nbytes, packets, window, replay, integrity)
        observed = ObservedSa(config, add_time, counters)
    return RawSa(family, dst, spi, proto, reqid, observed)


@dataclass(frozen=True)
class RawPolicy:
    """Any policy of the namespace; ``config`` only for one host-to-host ESP transport template."""

    direction: int
    index: int
    priority: int
    reqid: int  # of the first template (0: none)
    config: PolicyConfig | None
    selector: Selector | None = None  # when it is one host-to-host flow

    @property
    def ident(self) -> tuple[Dir, Selector] | None:
        """Where it sits, in the form PolicyConfig.ident has (None: no policy of ours could)."""
        if self.selector is None or self.direction not in _DIR_NAMES:
            return None
        return (_DIR_NAMES[self.direction], self.selector)


def parse_policy(payload: bytes) -> RawPolicy:
    """One XFRM_MSG_NEWPOLICY of a dump."""
    priority, index, direction, action, _flags, _share = _POL_TAIL.unpack_from(
        payload, _POL_TAIL_AT
    )
    attrs = _attrs(payload, USERPOLICY_INFO_LEN, len(payload))
    tmpl = attrs.get(XFRMA_TMPL, b"")
    selector = unpack_selector(payload)
    if len(tmpl) < USER_TMPL_LEN:
        return RawPolicy(direction, index, priority, 0, None, selector)
    (family,) = struct.unpack_from("=H", tmpl, 24)
    reqid, mode, _share2, _optional, _a, _e, _c = _TMPL_TAIL.unpack_from(tmpl, 44)
    config = None
    if (
        len(tmpl) == USER_TMPL_LEN  # exactly one template
        and selector is not None
        and direction in _DIR_NAMES
        and action == XFRM_POLICY_ALLOW
        and mode == XFRM_MODE_TRANSPORT
        and tmpl[20] == IPPROTO_ESP
        and family == selector.family
    ):
        config = PolicyConfig(
            direction=_DIR_NAMES[direction],
            selector=selector,
            reqid=reqid,
            tmpl_src=_text(family, tmpl[28:44]),
            tmpl_dst=_text(family, tmpl[0:16]),
            priority=priority,
        )
    return RawPolicy(direction, index, priority, reqid, config, selector)


def decode_sas(chunks: Iterable[bytes]) -> list[RawSa]:
    return [parse_sa(p) for t, p in iter_messages(chunks) if t == XFRM_MSG_NEWSA]


def decode_policies(chunks: Iterable[bytes]) -> list[RawPolicy]:
    return [parse_policy(p) for t, p in iter_messages(chunks) if t == XFRM_MSG_NEWPOLICY]


# --- the socket ---------------------------------------------------------------------------------

_RECV_SIZE: Final = 1 << 16


class Xfrm:
    """NETLINK_XFRM on one blocking socket of the caller's network namespace (one per thread).

    Every command waits for the kernel's ack; failures raise :class:`KernelError` naming the
    SA (destination, SPI) or policy (direction, flow), never a key.
    """

    def __init__(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            sock.bind((0, 0))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._seq = 0
        self._buf = bytearray(_RECV_SIZE)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Xfrm:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _send(self, mtype: int, flags: int, body: bytes) -> int:
        self._seq = self._seq % 0xFFFFFFFF + 1
        self._sock.send(_message(mtype, flags, self._seq, body))
        return self._seq

    def _replies(self, seq: int) -> Iterator[bytes]:
        """Chunks answering ``seq`` up to its NLMSG_DONE or ack; stale chunks are skipped."""
        while True:
            size = self._sock.recv_into(self._buf, _RECV_SIZE, socket.MSG_TRUNC)
            if size > _RECV_SIZE:
                raise OSError(_errno.EMSGSIZE, "netlink reply larger than the receive buffer")
            chunk = bytes(self._buf[:size])
            if size < 16 or _NLMSGHDR.unpack_from(chunk)[3] != seq:
                continue
            yield chunk
            offset = 0
            while offset + 16 <= size:
                length, mtype = struct.unpack_from("=IH", chunk, offset)
                if mtype in (NLMSG_DONE, NLMSG_ERROR):
                    return
                offset += max((length + 3) & ~3, 16)

    def _request(self, operation: str, mtype: int, flags: int, body: bytes, subject: str) -> None:
        seq = self._send(mtype, NLM_F_REQUEST | NLM_F_ACK | flags, body)
        try:
            for _ in iter_messages(self._replies(seq)):
                pass
        except NetlinkReplyError as exc:
            code = exc.errno
            # XFRM answers a delete of a missing SA with ESRCH (a missing policy: ENOENT)
            outcome = Outcome.NOT_FOUND if code == _errno.ESRCH else outcome_for(code)
            raise KernelError(f"{operation} {subject}", code, outcome, exc.message) from None

    def dump_raw(self, mtype: int) -> list[bytes]:
        seq = self._send(mtype, NLM_F_REQUEST | NLM_F_DUMP, b"")
        return list(self._replies(seq))

    def dump_sas(self) -> list[RawSa]:
        try:
            return decode_sas(self.dump_raw(XFRM_MSG_GETSA))
        except NetlinkReplyError as exc:
            raise KernelError("dump xfrm states", exc.errno, outcome_for(exc.errno)) from None

    def dump_policies(self) -> list[RawPolicy]:
        try:
            return decode_policies(self.dump_raw(XFRM_MSG_GETPOLICY))
        except NetlinkReplyError as exc:
            raise KernelError("dump xfrm policies", exc.errno, outcome_for(exc.errno)) from None

    def add_sa(self, sa: SaConfig) -> None:
        """NEWSA; EEXIST if the SPI is taken. There is no replace: UPDSA keeps the old key and
        algorithm (xfrm_state_update copies only lifetimes, encap and selector), so a wrong SA is
        repaired by delete and add."""
        subject = f"xfrm state {sa.dst} spi {sa.spi:#010x}"
        flags = NLM_F_CREATE | NLM_F_EXCL
        self._request("add", XFRM_MSG_NEWSA, flags, sa_body(sa), subject)

    def delete_sa(self, family: int, dst: str, spi: int) -> None:
        subject = f"xfrm state {dst} spi {spi:#010x}"
        self._request("delete", XFRM_MSG_DELSA, 0, sa_id_body(family, dst, spi), subject)

    def add_policy(self, pol: PolicyConfig, *, replace: bool = False) -> None:
        """NEWPOLICY (EEXIST if the selector and direction are taken), or UPDPOLICY."""
        mtype, flags = (
            (XFRM_MSG_UPDPOLICY, 0) if replace else (XFRM_MSG_NEWPOLICY, NLM_F_CREATE | NLM_F_EXCL)
        )
        subject = f"xfrm policy {pol.direction} {_flow(pol.selector)}"
        self._request("add" if not replace else "update", mtype, flags, policy_body(pol), subject)

    def delete_policy(self, direction: Dir, selector: Selector) -> None:
        subject = f"xfrm policy {direction} {_flow(selector)}"
        body = policy_id_body(direction, selector)
        self._request("delete", XFRM_MSG_DELPOLICY, 0, body, subject)


def _flow(sel: Selector) -> str:
    ports = f" sport {sel.sport} dport {sel.dport}" if sel.sport or sel.dport else ""
    return f"{sel.src} -> {sel.dst} proto {sel.proto}{ports}"
