"""The router profiles (vyos, mikrotik, cisco-ios-xe) held against their vendors' own examples.

Each test builds the in-cluster end whose far end is the vendor's example and compares what
the profile prints, key by key, with the example's text (copied below from the cited page).
"""

from __future__ import annotations

import re

import pytest
from farend import refused, rendered, session, text, tunnel

from kube_l2tp.core.profiles.cisco_ios_xe import cookie_words

# --- VyOS ---------------------------------------------------------------------------------

# https://docs.vyos.io/en/latest/configuration/interfaces/l2tpv3.html, "Example", "Over UDP"
# (vyos/vyos-documentation docs/configuration/interfaces/l2tpv3.rst).
VYOS_OVER_UDP = """
  l2tpv3 l2tpeth10 {
      address 192.168.37.1/27
      destination-port 9001
      encapsulation udp
      source-address 192.0.2.1
      peer-session-id 100
      peer-tunnel-id 200
      remote 203.0.113.24
      session-id 100
      source-port 9000
      tunnel-id 200
  }
"""
# Same page, "Over IP".
VYOS_OVER_IP = """
  l2tpv3 l2tpeth10 {
      address 192.168.37.1/27
      encapsulation ip
      source-address 192.0.2.1
      peer-session-id 100
      peer-tunnel-id 200
      remote 203.0.113.24
      session-id 100
      tunnel-id 200
  }
"""


def _vyos_tree(example: str) -> dict[str, str]:
    return dict(
        line.strip().split(" ", 1) for line in example.strip().splitlines()[1:-1] if line.strip()
    )


def _vyos_set(out: str, ifname: str) -> dict[str, str]:
    prefix = f"set interfaces l2tpv3 {ifname} "
    pairs = {}
    for line in out.splitlines():
        if line.startswith(prefix):
            key, _, value = line[len(prefix) :].partition(" ")
            # the set form quotes values as the page's "Over IPSec" example does: '5000'
            assert re.fullmatch(r"'[^']*'", value), line
            pairs[key] = value.strip("'")
    return pairs


@pytest.mark.parametrize(("example", "udp"), [(VYOS_OVER_UDP, True), (VYOS_OVER_IP, False)])
def test_vyos_far_end_is_the_documented_example(example: str, udp: bool) -> None:
    """docs.vyos.io l2tpv3 examples: our end at 203.0.113.24 mirrors theirs at 192.0.2.1.
    The example's address (a prefix, no peer) has no mirror image, so it is not compared;
    ``mtu`` is added because VyOS defaults to 1488 (interfaces_l2tpv3.xml.in)."""
    spec = {"udp": {"sourcePort": 9001, "destinationPort": 9000}} if udp else {}
    out = text(
        rendered(
            "vyos",
            tunnel(
                local="203.0.113.24",
                remote="192.0.2.1",
                tunnelID=200,
                peerTunnelID=200,
                encapsulation="udp" if udp else "ip",
                **spec,
            ),
            session(sessionID=100, peerSessionID=100, interfaceName="l2tpeth10"),
        )
    )
    expected = _vyos_tree(example)
    del expected["address"]
    got = _vyos_set(out, "l2tpeth10")
    assert got.pop("mtu") == ("1446" if udp else "1458")
    assert got == expected


def test_vyos_peer_address_becomes_a_route_and_names_follow_vyos_rules() -> None:
    out = text(
        rendered(
            "vyos",
            tunnel(),
            session(
                interfaceName="pw0",
                interface={"addresses": [{"address": "198.51.100.1", "peer": "198.51.100.2"}]},
            ),
        )
    )
    assert "set interfaces l2tpv3 l2tpeth0 address '198.51.100.2/32'" in out
    assert "set protocols static route 198.51.100.1/32 interface l2tpeth0" in out


# --- MikroTik -----------------------------------------------------------------------------

# help.mikrotik.com/docs/spaces/ROS/pages/2031631/L2TP, "L2TP Ether", Properties: the names
# and values RouterOS 7 documents for /interface l2tp-ether (a copy of the table is stored in
# the search tool's code corpus).
MIKROTIK_PROPERTIES = {
    "connect-to", "comment", "disabled", "mac-address", "unmanaged-mode", "local-tunnel-id",
    "local-session-id", "remote-tunnel-id", "remote-session-id", "peer-cookie", "send-cookie",
    "mtu", "name", "local-address", "use-ipsec", "allow-fast-path", "l2tp-proto-version",
    "cookie-length", "digest-hash", "use-l2-specific-sublayer", "circuit-id", "ipsec-secret",
}  # fmt: skip
# A RouterOS `print detail` of an unmanaged l2tp-ether that interoperated with
# `ip l2tp add tunnel tunnel_id 201 peer_tunnel_id 201 encap ip` (systemd issue 32771).
MIKROTIK_PRINT = (
    "l2tp-proto-version=l2tpv3-ip use-l2-specific-sublayer=yes local-tunnel-id=201"
    " local-session-id=201 remote-tunnel-id=201 remote-session-id=201 unmanaged-mode=yes"
)


def _routeros_add(out: str) -> dict[str, str]:
    lines = out.splitlines()
    assert lines[0] == "/interface l2tp-ether"
    words = lines[1].split(" ")
    assert words[0] == "add"
    return dict(w.split("=", 1) for w in words[1:])


def test_mikrotik_far_end_uses_documented_properties_as_the_printed_example() -> None:
    """RouterOS manual, L2TP Ether properties; values as a RouterOS print of a working peer."""
    out = text(
        rendered(
            "mikrotik",
            tunnel(encapsulation="ip", tunnelID=201, peerTunnelID=201),
            session(sessionID=201, peerSessionID=201),
        )
    )
    props = _routeros_add(out)
    assert set(props) <= MIKROTIK_PROPERTIES
    for pair in MIKROTIK_PRINT.split(" "):
        key, value = pair.split("=")
        assert props[key] == value, key
    assert props["connect-to"] == "192.0.2.1"
    assert props["local-address"] == "192.0.2.2"
    # the manual's defaults are disabled=yes and mtu 1420: both always written
    assert props["disabled"] == "no"
    assert props["mtu"] == "1458"


def test_mikrotik_cookies_swap_and_l2spec_none() -> None:
    out = text(
        rendered(
            "mikrotik",
            tunnel(encapsulation="ip", local="2001:db8::1", remote="2001:db8::2"),
            session(
                cookie="014d3636deadbeef",
                peerCookie="0badc0de",
                l2specType="none",
                interface={"addresses": [{"address": "198.51.100.1", "peer": "198.51.100.2"}]},
            ),
        )
    )
    props = _routeros_add(out)
    # send-cookie is what the router sends: what we expect (our peerCookie), and vice versa
    assert props["send-cookie"] == "0badc0de"
    assert props["peer-cookie"] == "014d3636deadbeef"
    assert props["use-l2-specific-sublayer"] == "no"
    assert "/ip address add address=198.51.100.2/32 network=198.51.100.1" in out


# --- Cisco IOS XE -------------------------------------------------------------------------

# Cisco IOS XE "Layer 2 Tunneling Protocol Version 3" configuration guide (e.g.
# cisco.com/c/en/us/td/docs/ios-xml/ios/wan_lserv/configuration/xe-16-8/wan-lserv-xe-16-8-book/
# wan-l2-tun-pro-v3-xe.html), "Example: Configuring a Static L2TPv3 Session for an Xconnect
# Ethernet Interface" (the l2tp-class and hello lines belong to its control channel, which a
# static session without one omits).
CISCO_EXAMPLE = """
pseudowire-class ether-pw
 encapsulation l2tpv3
 protocol none
 ip local interface Loopback0
!
interface GigabitEthernet0/0/0
 xconnect 10.0.0.1 123 encapsulation l2tpv3 manual pw-class ether-pw
  l2tp id 222 111
  l2tp cookie local 4 54321
  l2tp cookie remote 4 12345
"""


def _shape(config: str) -> list[str]:
    """The example's lines with what is site-specific (names, addresses, vc id) abstracted."""
    out = []
    for line in config.strip().splitlines():
        if line.startswith("!"):
            continue
        named = re.sub(r"pw-class \S+|pseudowire-class \S+", "PWCLASS", line)
        out.append(re.sub(r"xconnect \S+ \d+", "xconnect PEER VCID", named))
    return out


def test_cisco_far_end_is_the_documented_static_session() -> None:
    """Cisco's local cookie is what it expects to receive (what we send: our cookie 54321),
    its remote cookie what it sends (what we expect: our peerCookie 12345)."""
    result = rendered(
        "cisco-ios-xe",
        tunnel(encapsulation="ip"),
        session(
            sessionID=111,
            peerSessionID=222,
            l2specType="none",
            cookie=f"{54321:08x}",
            peerCookie=f"{12345:08x}",
        ),
        **{"attachment-interface": "GigabitEthernet0/0/0"},
    )
    out = text(result)
    assert _shape(out) == _shape(CISCO_EXAMPLE)
    assert " xconnect 192.0.2.1 222 encapsulation l2tpv3 manual pw-class kube-l2tp-4000" in out


def test_cisco_eight_byte_cookie_is_low_then_high_word() -> None:
    """``l2tp cookie local 8 LOW HIGH``: the high word is the first four bytes on the wire."""
    assert cookie_words("014d3636deadbeef") == f"8 {0xDEADBEEF} {0x014D3636}"
    assert cookie_words("0badc0de") == f"4 {0x0BADC0DE}"


# --- What each profile refuses, by field ----------------------------------------------------


@pytest.mark.parametrize(
    ("profile", "tspec", "sspec", "fields"),
    [
        ("cisco-ios-xe", {}, {"l2specType": "none"}, {("L2TPTunnel/t1", "spec.encapsulation")}),
        (
            "cisco-ios-xe",
            {"encapsulation": "ip"},
            {"sequencing": "both"},
            {("L2TPSession/s1", "spec.l2specType"), ("L2TPSession/s1", "spec.sequencing")},
        ),
        (
            "cisco-ios-xe",
            {"encapsulation": "ip", "local": "2001:db8::1", "remote": "2001:db8::2"},
            {"l2specType": "none"},
            {("L2TPTunnel/t1", "spec.local")},
        ),
        ("mikrotik", {}, {}, {("L2TPTunnel/t1", "spec.encapsulation")}),
        (
            "mikrotik",
            {"encapsulation": "ip"},
            {"sequencing": "send"},
            {("L2TPSession/s1", "spec.sequencing")},
        ),
        ("vyos", {}, {"cookie": "0badc0de"}, {("L2TPSession/s1", "spec.cookie")}),
        ("vyos", {}, {"l2specType": "none"}, {("L2TPSession/s1", "spec.l2specType")}),
        (
            "vyos",
            {"udp": {"sourcePort": 1, "destinationPort": 2, "checksum": True}},
            {},
            {("L2TPTunnel/t1", "spec.udp")},
        ),
        ("vyos", {"tunnelID": 500000000}, {}, {("L2TPTunnel/t1", "spec.tunnelID")}),
        ("networkd", {}, {"peerCookie": "0badc0de"}, {("L2TPSession/s1", "spec.peerCookie")}),
        ("networkd", {}, {"sequencing": "recv"}, {("L2TPSession/s1", "spec.sequencing")}),
    ],
)
def test_profile_refuses_what_it_cannot_express(
    profile: str, tspec: dict[str, object], sspec: dict[str, object], fields: set[tuple[str, str]]
) -> None:
    assert refused(profile, tunnel(**tspec), session(**sspec)) == fields


@pytest.mark.parametrize("profile", ["cisco-ios-xe", "mikrotik", "vyos"])
def test_one_session_per_tunnel_on_routers(profile: str) -> None:
    t = tunnel(encapsulation="ip")
    s1 = session("s1", l2specType="none")
    s2 = session("s2", sessionID=1001, peerSessionID=2001, l2specType="none")
    assert ("L2TPTunnel/t1", "metadata.name") in refused(profile, t, s1, s2)
