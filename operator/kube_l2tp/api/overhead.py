"""Encapsulation overhead and the session interface MTU, as the kernel computes it.

Mirrors net/l2tp: l2tp_session_set_header_len() (L2TPv3 header: 4-byte session id, the cookie,
the 4-byte default L2-specific sublayer, and over UDP a 4-byte flags/version word) and
l2tp_eth_adjust_mtu() (underlay route MTU minus outer IP, UDP, that header and the inner
Ethernet header). UDP over IPv4, no cookie, default sublayer, 1500 underlay: 1446.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    esp: EspAead | None = None,
) -> int:
    """The MTU the kernel gives a new session interface on an underlay of ``underlay_mtu``.

    With ``esp``: the MTU at which a full frame, once encrypted, still fits the underlay.
    """
    if esp is not None:
        underlay_mtu = esp_payload_mtu(esp, ipv6=ipv6, underlay_mtu=underlay_mtu)
    return underlay_mtu - overhead(
        ipv6=ipv6, udp=udp, cookie_len=cookie_len, l2spec_default=l2spec_default
    )


# ESP in transport mode (encryption: an L2TPTunnel's traffic wrapped in IPsec ESP).
ESP_HLEN = 8  # SPI + sequence number (struct ip_esp_hdr)
ESP_TRAILER_MIN = 2  # pad length + next header


@dataclass(frozen=True)
class EspAead:
    """An AEAD transform for ESP: its API name, the kernel's name and its sizes in bytes.

    ``block`` is crypto_aead_blocksize(): 1 for the counter-mode AEADs allowed here, so ESP pads
    to 4 bytes. The kernel's key is the cipher key followed by a 4-byte salt (RFC 4106/7634).
    """

    name: str
    kernel_name: str
    cipher_key: int
    salt: int = 4
    iv: int = 8
    icv: int = 16
    block: int = 1

    @property
    def kernel_key(self) -> int:
        """Bytes of XFRMA_ALG_AEAD's key: cipher key + salt."""
        return self.cipher_key + self.salt


ESP_AEADS: dict[str, EspAead] = {
    a.name: a
    for a in (
        EspAead("aes256gcm16", "rfc4106(gcm(aes))", cipher_key=32),
        EspAead("aes128gcm16", "rfc4106(gcm(aes))", cipher_key=16),
        EspAead("chacha20poly1305", "rfc7539esp(chacha20,poly1305)", cipher_key=32),
    )
}
DEFAULT_ESP_AEAD = "aes256gcm16"


def esp_payload_mtu(aead: EspAead, *, ipv6: bool, underlay_mtu: int = DEFAULT_UNDERLAY_MTU) -> int:
    """The largest outer IP packet (header included) that fits once ESP is added.

    Mirrors xfrm_state_mtu() for transport mode: ((mtu - header_len - icv - iphdr) rounded down
    to the ESP alignment) + iphdr - 2, where header_len is the ESP header plus the IV.
    UDP over IPv4 or IPv6 with AES-GCM on a 1500 underlay: 1466 (34 bytes of ESP).
    """
    ip = IPV6_HLEN if ipv6 else IPV4_HLEN
    align = max(4, (aead.block + 3) // 4 * 4)
    body = underlay_mtu - ESP_HLEN - aead.iv - aead.icv - ip
    return body // align * align + ip - ESP_TRAILER_MIN


def esp_overhead(aead: EspAead, *, ipv6: bool, underlay_mtu: int = DEFAULT_UNDERLAY_MTU) -> int:
    """Bytes ESP costs a full-size packet (header, IV, ICV, trailer and worst-case padding)."""
    return underlay_mtu - esp_payload_mtu(aead, ipv6=ipv6, underlay_mtu=underlay_mtu)
