"""The networkd and linux profiles, the CLI hook, and names that must never become syntax."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from farend import refused, rendered, resources, session, text, tunnel

from kube_l2tp.core import render
from kube_l2tp.core.profiles import PROFILES, Refused, render_far_end

REPO = Path(__file__).parent.parent.parent

# systemd's own test configuration for networkd's L2TP netdevs, run by systemd's CI
# (systemd/systemd test/test-network/conf/25-l2tp-udp.netdev and 25-l2tp-ip.netdev); keys as
# systemd.netdev(5) [L2TP] / [L2TPSession]. Remote is 192.168.30.101 there; a documentation
# address stands in for it here, as elsewhere in these tests.
SYSTEMD_L2TP_UDP = """
[NetDev]
Kind=l2tp
Name=l2tp99

[L2TP]
TunnelId=10
PeerTunnelId=11
UDPSourcePort=3000
UDPDestinationPort=4000
Local=static
Remote=192.0.2.101
EncapsulationType=udp
UDPCheckSum=true
UDP6CheckSumRx=true
UDP6CheckSumTx=true

[L2TPSession]
SessionId=15
PeerSessionId=16
Name=l2tp-ses1

[L2TPSession]
SessionId=17
PeerSessionId=18
Name=l2tp-ses2
"""
SYSTEMD_L2TP_IP = """
[NetDev]
Kind=l2tp
Name=l2tp99

[L2TP]
TunnelId=10
PeerTunnelId=12
Local=static
Remote=192.0.2.101
EncapsulationType=ip

[L2TPSession]
SessionId=25
PeerSessionId=26
Name=l2tp-ses3

[L2TPSession]
SessionId=27
PeerSessionId=28
Name=l2tp-ses4
"""


def _sections(ini: str) -> list[tuple[str, dict[str, str]]]:
    """(section, keys) in order; repeated [L2TPSession] sections kept apart."""
    out: list[tuple[str, dict[str, str]]] = []
    for raw in ini.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            out.append((line.strip("[]"), {}))
        else:
            key, _, value = line.partition("=")
            out[-1][1][key] = value
    return out


def _yes(v: str) -> bool:
    return v in ("yes", "true", "1", "on")


@pytest.mark.parametrize(("example", "udp"), [(SYSTEMD_L2TP_UDP, True), (SYSTEMD_L2TP_IP, False)])
def test_networkd_netdev_is_systemds_own_example(example: str, udp: bool) -> None:
    """Every key of systemd's example has our value (booleans compared as booleans);
    Local= is an address here (the example picks a static one) and [NetDev] Name= is ours."""
    objs = [
        tunnel(
            local="192.0.2.101",
            remote="192.0.2.1",
            tunnelID=11 if udp else 12,
            peerTunnelID=10,
            encapsulation="udp" if udp else "ip",
            udp={"sourcePort": 4000, "destinationPort": 3000, "checksum": True},
        ),
    ]
    first = 15 if udp else 25
    for i, n in enumerate((first, first + 2)):
        objs.append(
            session(
                f"s{i}",
                sessionID=n + 1,
                peerSessionID=n,
                interfaceName=f"l2tp-ses{i + 1 if udp else i + 3}",
            )
        )
    result = rendered("networkd", *objs)
    netdev = next(o for o in result.outputs if o.path and o.path.endswith(".netdev"))
    ours = _sections(netdev.text)
    theirs = _sections(example)
    assert [s for s, _ in ours] == [s for s, _ in theirs]
    for (section, want), (_, got) in zip(theirs, ours, strict=True):
        for key, value in want.items():
            if key in ("Local", "Name") and section in ("NetDev", "L2TP"):
                continue
            if key.startswith("UDP6"):  # IPv6 only: over IPv4 we write none
                assert key not in got
                continue
            if key == "UDPCheckSum":
                assert _yes(got[key]) == _yes(value)
                continue
            assert got[key] == value, (section, key)
    assert ours[1][1]["Local"] == "192.0.2.1"


def test_networkd_seed_files() -> None:
    """The seed's site-b from site-a's manifests, as networkd files."""
    res = render_far_end(resources(*_seed_a()), "networkd")
    assert not isinstance(res, Refused)
    files = {o.path: o.text for o in res.outputs}
    assert sorted(files) == ["60-kube-l2tp-l2tpeth0.network", "60-kube-l2tp-l2tpt4000.netdev"]
    network = files["60-kube-l2tp-l2tpeth0.network"]
    assert network == (
        "[Match]\nName=l2tpeth0\n\n[Link]\nMTUBytes=1488\n\n"
        "[Address]\nAddress=198.51.100.2/32\nPeer=198.51.100.1/32\n"
    )
    netdev = dict(_sections(files["60-kube-l2tp-l2tpt4000.netdev"])[1][1])
    assert netdev == {
        "TunnelId": "4000",
        "PeerTunnelId": "3000",
        "Local": "192.0.2.2",
        "Remote": "192.0.2.1",
        "EncapsulationType": "udp",
        "UDPSourcePort": "6000",
        "UDPDestinationPort": "5000",
        "UDPCheckSum": "no",
    }


def test_networkd_ipv6_checksums_are_always_written() -> None:
    """networkd's UDP6CheckSum*=yes means zero checksums (UDP_ZERO_CSUM6 flags); ours default on."""
    objs = (tunnel(local="2001:db8::1", remote="2001:db8::2"), session())
    netdev = rendered("networkd", *objs).outputs[0].text
    assert "UDP6CheckSumTx=no\nUDP6CheckSumRx=no\n" in netdev
    objs = (
        tunnel(
            local="2001:db8::1",
            remote="2001:db8::2",
            udp={"sourcePort": 1, "destinationPort": 2, "ipv6ChecksumRx": False},
        ),
        session(),
    )
    # our end accepts zero checksums, so the far end may send them: its Tx is zero (yes)
    assert "UDP6CheckSumTx=yes\nUDP6CheckSumRx=no\n" in rendered("networkd", *objs).outputs[0].text


def _seed_a() -> list[dict[str, object]]:
    return [
        tunnel("site-a", nodeName="site-a", udp={"sourcePort": 5000, "destinationPort": 6000}),
        session(
            "site-a-1",
            "site-a",
            interface={
                "mtu": 1488,
                "addresses": [{"address": "198.51.100.1", "peer": "198.51.100.2"}],
            },
        ),
    ]


def test_linux_profile_is_render_peer() -> None:
    res = resources(*_seed_a())
    assert text(rendered("linux", *_seed_a())) == render.render(res, peer=True)


# Names a Linux interface may carry (no '/', ':', '%', whitespace) that are syntax elsewhere.
HOSTILE = ["a;reboot", 'a"b', "a$b", "a'b", "a`id`", "a\\b", "a=b", "[L2TP]", "a#b", "a!b", "a{b}"]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("profile", ["networkd", "mikrotik", "vyos"])
def test_a_hostile_interface_name_never_reaches_the_output(profile: str, name: str) -> None:
    """Refused where the target names the interface after it; renamed where it names its own
    (VyOS's l2tpethN); never written."""
    objs = (tunnel(encapsulation="ip"), session(interfaceName=name))
    result = render_far_end(resources(*objs), profile)
    if isinstance(result, Refused):
        assert {(r.name, r.field) for r in result.refusals} == {("s1", "spec.interfaceName")}
    else:
        assert profile == "vyos"
        assert name not in text(result)


@pytest.mark.parametrize(
    ("profile", "key", "value"),
    [
        ("cisco-ios-xe", "local-interface", "Loopback0\nshutdown"),
        ("cisco-ios-xe", "attachment-interface", "Gi1 ; reload"),
        ("networkd", "underlay-network", "10-eth0"),
        ("mikrotik", "anything", "x"),
    ],
)
def test_options_are_checked_before_anything_is_printed(profile: str, key: str, value: str) -> None:
    objs = (tunnel(encapsulation="ip"), session(l2specType="none"))
    assert refused(profile, *objs, **{key: value}) == {(f"option/{key}", "--peer-option")}


def test_every_profile_is_registered_with_a_summary() -> None:
    assert sorted(PROFILES) == ["cisco-ios-xe", "linux", "mikrotik", "networkd", "vyos"]
    assert all(p.summary for p in PROFILES.values())


def test_cli_render_peer_profile(tmp_path: Path) -> None:
    """The command a user types: files written with --out, refusals on stderr with exit 1."""
    cli = [
        sys.executable,
        "-m",
        "kube_l2tp.cli",
        "render",
        "-f",
        str(REPO / "examples/seed/site-a.yaml"),
    ]
    done = subprocess.run(
        [*cli, "--peer", "--profile", "networkd", "--node", "site-a", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "60-kube-l2tp-l2tpt4000.netdev").read_text().startswith("# kube-l2tp")
    done = subprocess.run(
        [*cli, "--peer", "--profile", "cisco-ios-xe", "--node", "site-a"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "L2TPTunnel/site-a: spec.encapsulation: IOS XE" in done.stderr
    assert done.stdout == ""
