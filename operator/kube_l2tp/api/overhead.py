"""Encapsulation overhead and the session interface MTU, as the kernel computes it.

Mirrors net/l2tp: l2tp_session_set_header_len() (L2TPv3 header: 4-byte session id, the cookie,
the 4-byte default L2-specific sublayer, and over UDP a 4-byte flags/version word) and
l2tp_eth_adjust_mtu() (underlay route MTU minus outer IP, UDP, that header and the inner
Ethernet header). UDP over IPv4, no cookie, default sublayer, 1500 underlay: 1446.
"""

from __future__ import annotations

ETH_HLEN = 14
IPV4_HLEN = 20
IPV6_HLEN = 40
UDP_HLEN = 8
DEFAULT_UNDERLAY_MTU = 1500


def l2tp_header_len(*, udp: bool, cookie_len: int, l2spec_default: bool) -> int:
    """session->hdr_len for L2TPv3."""
    return 4 + cookie_len + (4 if l2spec_default else 0) + (4 if udp else 0)


def overhead(*, ipv6: bool, udp: bool, cookie_len: int, l2spec_default: bool) -> int:
    """Bytes added to each inner IP packet: outer IP + UDP + L2TPv3 header + inner Ethernet."""
    outer = (IPV6_HLEN if ipv6 else IPV4_HLEN) + (UDP_HLEN if udp else 0)
    return (
        outer
        + l2tp_header_len(udp=udp, cookie_len=cookie_len, l2spec_default=l2spec_default)
        + ETH_HLEN
    )


def session_mtu(
    *,
    ipv6: bool,
    udp: bool,
    cookie_len: int,
    l2spec_default: bool,
    underlay_mtu: int = DEFAULT_UNDERLAY_MTU,
) -> int:
    """The MTU the kernel gives a new session interface on an underlay of ``underlay_mtu``."""
    return underlay_mtu - overhead(
        ipv6=ipv6, udp=udp, cookie_len=cookie_len, l2spec_default=l2spec_default
    )
