"""Netlink framing shared by the codecs: header layouts, flags, the attribute walk and the
kernel's error answer (include/uapi/linux/netlink.h, genetlink.h)."""

from __future__ import annotations

import os
import struct
from typing import Final

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

NLMSGHDR: Final = struct.Struct("=IHHII")
GENLHDR: Final = struct.Struct("=BBH")
NLA_HDR: Final = struct.Struct("=HH")
GENL_HDRLEN: Final = NLMSGHDR.size + GENLHDR.size  # 20
U16: Final = struct.Struct("=H")
U32: Final = struct.Struct("=I")
U64: Final = struct.Struct("=Q")

RawAttrs = dict[int, bytes]
"""Attribute number -> payload of one message (the last one wins; L2TP sends no repeats)."""


class NetlinkReplyError(Exception):
    """An NLMSG_ERROR with a non-zero code inside a reply buffer."""

    def __init__(self, errno: int, message: str) -> None:
        self.errno = errno
        self.message = message
        super().__init__(f"errno {errno}: {os.strerror(errno)}{': ' + message if message else ''}")


def walk_attrs(buf: bytes, start: int, end: int) -> RawAttrs:
    attrs: RawAttrs = {}
    unpack = NLA_HDR.unpack_from
    while start + 4 <= end:
        length, kind = unpack(buf, start)
        if length < 4:
            break
        attrs[kind & NLA_TYPE_MASK] = buf[start + 4 : start + length]
        start += (length + 3) & ~3
    return attrs


def error_message(buf: bytes, offset: int, length: int, flags: int) -> str:
    """The extack text (NLMSGERR_ATTR_MSG) of an NLMSG_ERROR, if the kernel sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # error code, then the request's header and, unless capped, its payload; then the TLVs
    echoed = 16 if flags & NLM_F_CAPPED else (U32.unpack_from(buf, offset + 20)[0] + 3) & ~3
    tlvs = walk_attrs(buf, offset + 20 + echoed, offset + length)
    return tlvs.get(NLMSGERR_ATTR_MSG, b"").rstrip(b"\0").decode(errors="replace")
