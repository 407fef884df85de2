"""Proves the harness: the seed's example done with ``ip l2tp`` carries pings between two sites.

Nothing of kube-l2tp is used here; if these fail, the VM, the modules or the fixtures are wrong,
not the product.
"""

from __future__ import annotations

import re

import pytest
from helpers import Routed, TwoSites, ip, ip_json, run

SEED_MTU_UDP_IPV4 = 1446  # 1500 - 20 (IPv4) - 8 (UDP) - 4 (session id) - 4 (L2-specific) - 14 (Eth)
SEED_MTU_UDP_IPV6 = 1426  # the same over a 40-byte IPv6 header


def _seed_site(ns: str, local: str, remote: str, ids: tuple[int, int], ports: tuple[int, int],
               sessions: tuple[int, int]) -> int:  # fmt: skip
    """``ip l2tp add tunnel/session`` as the seed does; returns the MTU the kernel computed."""
    ip(ns, "l2tp", "add", "tunnel", "tunnel_id", str(ids[0]), "peer_tunnel_id", str(ids[1]),
       "encap", "udp", "local", local, "remote", remote,
       "udp_sport", str(ports[0]), "udp_dport", str(ports[1]))  # fmt: skip
    ip(ns, "l2tp", "add", "session", "tunnel_id", str(ids[0]), "session_id", str(sessions[0]),
       "peer_session_id", str(sessions[1]))  # fmt: skip
    (link,) = ip_json(ns, "link", "show", "dev", "l2tpeth0")
    return int(link["mtu"])


def _received(output: str) -> int:
    match = re.search(r"(\d+) received", output)
    assert match, output
    return int(match.group(1))


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_seed_example_pings_across_the_pseudowire(two_sites: TwoSites, family: str) -> None:
    a_local, b_local = (
        (two_sites.a4, two_sites.b4) if family == "ipv4" else (two_sites.a6, two_sites.b6)
    )
    mtu_a = _seed_site(two_sites.a, a_local, b_local, (3000, 4000), (5000, 6000), (1000, 2000))
    mtu_b = _seed_site(two_sites.b, b_local, a_local, (4000, 3000), (6000, 5000), (2000, 1000))

    expected = SEED_MTU_UDP_IPV4 if family == "ipv4" else SEED_MTU_UDP_IPV6
    assert (mtu_a, mtu_b) == (expected, expected)

    for ns, local, peer in (
        (two_sites.a, "198.51.100.1", "198.51.100.2"),
        (two_sites.b, "198.51.100.2", "198.51.100.1"),
    ):
        ip(ns, "link", "set", "l2tpeth0", "up", "mtu", str(expected))
        ip(ns, "addr", "add", local, "peer", peer, "dev", "l2tpeth0")

    out = run(["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2"], netns=two_sites.a)
    assert _received(out) == 3, out


def test_routed_topology_forwards_both_families(routed: Routed) -> None:
    for target in (routed.host2_v4, routed.host2_v6):
        out = run(["ping", "-n", "-c", "1", "-W", "5", target], netns=routed.host1)
        assert _received(out) == 1, out
