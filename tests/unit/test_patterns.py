"""The address regexes in the CRD's CEL rules agree with Python's ipaddress module."""

from __future__ import annotations

import ipaddress
import re

from hypothesis import given
from hypothesis import strategies as st

from kube_l2tp.api import patterns

IP = re.compile(patterns.IP)
IFACE = re.compile(patterns.IP_OPT_PREFIX)


def _is_ip(text: str) -> bool:
    if "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@given(st.ip_addresses())
def test_every_address_matches_in_every_spelling(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    spellings = {str(addr)}
    if addr.version == 6:
        spellings.add(addr.exploded)
        spellings.add(addr.exploded.upper())
    for text in spellings:
        assert IP.match(text), text
        assert IFACE.match(f"{text}/{addr.max_prefixlen}"), text


@given(st.text(alphabet="0123456789abcdefABCDEF:./%", max_size=45))
def test_regex_agrees_with_ipaddress_on_noise(text: str) -> None:
    assert bool(IP.match(text)) == _is_ip(text), text


def test_known_cases() -> None:
    for good in [
        "192.0.2.1",
        "2001:db8::1",
        "::",
        "::1",
        "::ffff:192.0.2.1",
        "2001:DB8:0:0:0:0:0:1",
    ]:
        assert IP.match(good), good
    for bad in [
        "192.0.2.01",
        "192.0.2",
        "256.1.1.1",
        "2001:db8::1::2",
        "fe80::1%eth0",
        "1:2:3:4:5:6:7:8:9",
        "",
    ]:
        assert not IP.match(bad), bad
    assert not IFACE.match("192.0.2.1/33") and not IFACE.match("2001:db8::/129")


@given(st.ip_addresses())
def test_special_address_patterns_agree(
    addr: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    for text in {str(addr), addr.exploded}:
        if addr.version == 6 and "." in text:
            continue  # embedded IPv4 spellings are not classified by the textual patterns
        assert bool(re.match(patterns.UNSPECIFIED, text)) == addr.is_unspecified, text
        assert bool(re.match(patterns.IPV6_LINK_LOCAL, text)) == (
            addr.version == 6 and addr in ipaddress.ip_network("fe80::/10")
        ), text
        multicast = addr.is_multicast or str(addr) == "255.255.255.255"
        assert bool(re.match(patterns.MULTICAST_OR_BROADCAST, text)) == multicast, text
