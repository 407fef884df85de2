"""include/uapi/linux/l2tp.h, written once: commands, attributes (with their payload kinds) and
the stats nest, with the kernel's names verbatim so the code can be grepped against the header.

Everything else is derived from these tables: the encoder's packing (codec), the decoders' plain
int numbers (fastpath), the event names (events) and the tests' pyroute2 reference codec.
"""

from __future__ import annotations

from enum import Enum, IntEnum
from typing import Final

L2TP_GENL_NAME: Final = "l2tp"
L2TP_GENL_VERSION: Final = 1
L2TP_GENL_MCGROUP: Final = "l2tp"


class L2tpCmd(IntEnum):
    L2TP_CMD_NOOP = 0
    L2TP_CMD_TUNNEL_CREATE = 1
    L2TP_CMD_TUNNEL_DELETE = 2
    L2TP_CMD_TUNNEL_MODIFY = 3
    L2TP_CMD_TUNNEL_GET = 4
    L2TP_CMD_SESSION_CREATE = 5
    L2TP_CMD_SESSION_DELETE = 6
    L2TP_CMD_SESSION_MODIFY = 7
    L2TP_CMD_SESSION_GET = 8

    @property
    def short(self) -> str:
        """ "TUNNEL_CREATE", "SESSION_DELETE", ...: the name events carry."""
        return self.name.removeprefix("L2TP_CMD_")


class Kind(Enum):
    """An attribute's payload as the kernel's nla_policy reads it."""

    NONE = "none"
    U8 = "u8"
    U16 = "u16"
    U32 = "u32"
    U64 = "u64"
    FLAG = "flag"  # presence only
    STRING = "string"  # NUL-terminated
    BINARY = "binary"
    IP4 = "ip4"
    IP6 = "ip6"
    NESTED = "nested"


class L2tpAttr(IntEnum):
    """enum l2tp_attr_type: (number, payload kind)."""

    kind: Kind

    def __new__(cls, number: int, kind: Kind) -> L2tpAttr:
        member = int.__new__(cls, number)
        member._value_ = number
        member.kind = kind
        return member

    L2TP_ATTR_NONE = 0, Kind.NONE
    L2TP_ATTR_PW_TYPE = 1, Kind.U16
    L2TP_ATTR_ENCAP_TYPE = 2, Kind.U16
    L2TP_ATTR_OFFSET = 3, Kind.U16
    L2TP_ATTR_DATA_SEQ = 4, Kind.U16
    L2TP_ATTR_L2SPEC_TYPE = 5, Kind.U8
    L2TP_ATTR_L2SPEC_LEN = 6, Kind.U8
    L2TP_ATTR_PROTO_VERSION = 7, Kind.U8
    L2TP_ATTR_IFNAME = 8, Kind.STRING
    L2TP_ATTR_CONN_ID = 9, Kind.U32
    L2TP_ATTR_PEER_CONN_ID = 10, Kind.U32
    L2TP_ATTR_SESSION_ID = 11, Kind.U32
    L2TP_ATTR_PEER_SESSION_ID = 12, Kind.U32
    L2TP_ATTR_UDP_CSUM = 13, Kind.U8  # create reads it by presence, a dump sends the value
    L2TP_ATTR_VLAN_ID = 14, Kind.U16
    L2TP_ATTR_COOKIE = 15, Kind.BINARY
    L2TP_ATTR_PEER_COOKIE = 16, Kind.BINARY
    L2TP_ATTR_DEBUG = 17, Kind.U32
    L2TP_ATTR_RECV_SEQ = 18, Kind.U8
    L2TP_ATTR_SEND_SEQ = 19, Kind.U8
    L2TP_ATTR_LNS_MODE = 20, Kind.U8
    L2TP_ATTR_USING_IPSEC = 21, Kind.U8
    L2TP_ATTR_RECV_TIMEOUT = 22, Kind.U64
    L2TP_ATTR_FD = 23, Kind.U32
    L2TP_ATTR_IP_SADDR = 24, Kind.IP4
    L2TP_ATTR_IP_DADDR = 25, Kind.IP4
    L2TP_ATTR_UDP_SPORT = 26, Kind.U16
    L2TP_ATTR_UDP_DPORT = 27, Kind.U16
    L2TP_ATTR_MTU = 28, Kind.U16
    L2TP_ATTR_MRU = 29, Kind.U16
    L2TP_ATTR_STATS = 30, Kind.NESTED  # L2tpStatsAttr
    L2TP_ATTR_IP6_SADDR = 31, Kind.IP6
    L2TP_ATTR_IP6_DADDR = 32, Kind.IP6
    L2TP_ATTR_UDP_ZERO_CSUM6_TX = 33, Kind.FLAG
    L2TP_ATTR_UDP_ZERO_CSUM6_RX = 34, Kind.FLAG
    L2TP_ATTR_PAD = 35, Kind.NONE


class L2tpStatsAttr(IntEnum):
    """The L2TP_ATTR_STATS nest; every counter a u64 named as core.state.Stats's field."""

    L2TP_ATTR_STATS_NONE = 0
    L2TP_ATTR_TX_PACKETS = 1
    L2TP_ATTR_TX_BYTES = 2
    L2TP_ATTR_TX_ERRORS = 3
    L2TP_ATTR_RX_PACKETS = 4
    L2TP_ATTR_RX_BYTES = 5
    L2TP_ATTR_RX_SEQ_DISCARDS = 6
    L2TP_ATTR_RX_OOS_PACKETS = 7
    L2TP_ATTR_RX_ERRORS = 8
    L2TP_ATTR_STATS_PAD = 9
    L2TP_ATTR_RX_COOKIE_DISCARDS = 10  # since 5.10
    L2TP_ATTR_RX_INVALID = 11  # since 5.12

    @property
    def field(self) -> str:
        """The core.state.Stats field: "tx_packets", ..."""
        return self.name.removeprefix("L2TP_ATTR_").lower()


STATS_COUNTERS: Final = tuple(
    a
    for a in L2tpStatsAttr
    if a not in (L2tpStatsAttr.L2TP_ATTR_STATS_NONE, L2tpStatsAttr.L2TP_ATTR_STATS_PAD)
)
"""The counters of the nest (NONE and PAD are not counters)."""

L2TP_PWTYPE_ETH: Final = 0x0005
L2TP_L2SPECTYPE_NONE: Final = 0
L2TP_L2SPECTYPE_DEFAULT: Final = 1
L2TP_ENCAPTYPE_UDP: Final = 0
L2TP_ENCAPTYPE_IP: Final = 1
