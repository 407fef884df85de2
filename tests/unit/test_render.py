"""render reproduces the seed's own commands from the seed's manifests."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kube_l2tp.api import manifests, validation
from kube_l2tp.core.render import render
from kube_l2tp.files import manifests as manifest_files

HERE = Path(__file__).parent
REPO = HERE.parent.parent
# The examples use documentation addresses in place of the seed's.
SUBST = {
    "1.2.3.4": "192.0.2.1",
    "5.6.7.8": "192.0.2.2",
    "10.42.1.1": "198.51.100.1",
    "10.42.1.2": "198.51.100.2",
}


def seed(example: str, site: str) -> list[str]:
    lines = []
    for row in (HERE / "data" / "seed_commands.tsv").read_text().splitlines()[1:]:
        ex, where, command = row.split("\t")
        if ex == example and where == site and not command.startswith("ping"):
            for old, new in SUBST.items():
                command = command.replace(old, new)
            lines.append(with_dev(command))
    return lines


def with_dev(command: str) -> str:
    """The seed's command as render spells it: `dev`/`name` before every interface name, so a
    name can never read as a keyword; the same command to ip."""
    command = re.sub(r"^ip link set (?!dev )", "ip link set dev ", command)
    return re.sub(r"^ip link add (?!name |link )", "ip link add name ", command)


def rendered(path: str, *, peer: bool = False) -> list[str]:
    report = validation.check_documents(manifest_files.load([REPO / path]))
    assert not report.errors
    text = render(report.resources, peer=peer)
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_site_a_reproduces_the_seed() -> None:
    assert rendered("examples/seed/site-a.yaml") == seed("p2p", "site-A")


def test_peer_of_site_a_reproduces_site_b() -> None:
    assert rendered("examples/seed/site-a.yaml", peer=True) == seed("p2p", "site-B")


def test_site_b_manifest_reproduces_site_b() -> None:
    assert rendered("examples/seed/site-b.yaml") == seed("p2p", "site-B")


def test_bridge_example() -> None:
    # A bridge port gets no IPv6 link-local address by default (interface.ipv6AddrGenMode),
    # set before the link goes up; the rest is the seed's.
    lines = rendered("examples/seed/bridge-site-a.yaml")[2:]
    assert lines[0] == "ip link set dev l2tpeth0 addrgenmode none"
    assert lines[1:] == seed("bridge", "site-A")


def test_addrgenmode_and_qdisc_come_before_up_as_set() -> None:
    docs = manifest_files.load([REPO / "examples/seed/site-a.yaml"])
    session = next(d for d in docs if d.body["kind"] == "L2TPSession")
    session.body["spec"]["interface"].update(ipv6AddrGenMode="random", qdisc="noqueue")
    report = validation.check_documents(docs)
    assert not report.errors
    lines = render(report.resources).splitlines()
    up = next(i for i, line in enumerate(lines) if line.startswith("ip link set dev l2tpeth0 up"))
    assert lines[up - 2 : up] == [
        "tc qdisc replace dev l2tpeth0 root noqueue",
        "ip link set dev l2tpeth0 addrgenmode random",
    ]


@pytest.mark.parametrize("peer", [False, True])
def test_vlan_example_adds_the_vlan_the_seed_assumes(peer: bool) -> None:
    lines = rendered("examples/seed/vlan-site-a.yaml", peer=peer)[2:]
    expected = seed("vlan", "site-A")
    # the seed assumes l2tpeth0.5 exists; render creates it right after the session's link
    assert lines[0] == expected[0]
    assert lines[1:3] == [
        "ip link add link l2tpeth0 name l2tpeth0.5 type vlan id 5",
        "ip link set dev l2tpeth0.5 up",
    ]
    assert lines[3:] == expected[1:]


def test_peer_swaps_cookies_ports_seq_and_keeps_options() -> None:
    lines = rendered("examples/more/ipv6-ip-encap.yaml", peer=True)
    assert lines[0] == (
        "ip l2tp add tunnel tunnel_id 20 peer_tunnel_id 10 encap ip"
        " local 2001:db8:2::1 remote 2001:db8:1::1"
    )
    assert lines[1] == (
        "ip l2tp add session name l2tp-dc1 tunnel_id 20 session_id 200 peer_session_id 100"
        " cookie 0badc0de00c0ffee peer_cookie 014d3636deadbeef seq both"
    )


HOSTILE = {
    "session": "$(reboot)",
    "vlan": "mtu",
    "bridge": "a;b&c|d",
    "port": "`id`>y",
    "vlanbr": "o'q\"#z",
}


def test_names_are_one_shell_word_after_their_keyword() -> None:
    """Every name valid to the kernel is one argument to ip, after dev/name/master/link, in
    a POSIX shell: nothing a name holds runs or reads as anything else."""
    tunnel = {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": "t1"},
        "spec": {
            "nodeName": "node\nrm -rf /",
            "tunnelID": 1,
            "peerTunnelID": 2,
            "local": "192.0.2.1",
            "remote": "192.0.2.2",
            "udp": {"sourcePort": 1, "destinationPort": 2},
        },
    }
    session = {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": "s1"},
        "spec": {
            "tunnelRef": "t1",
            "sessionID": 1,
            "peerSessionID": 2,
            "interfaceName": HOSTILE["session"],
            "interface": {
                "addresses": [{"address": "198.51.100.1/32", "peer": "198.51.100.2"}],
                "bridge": {"name": HOSTILE["bridge"], "ports": [HOSTILE["port"]]},
                "vlans": [
                    {"id": 5, "name": HOSTILE["vlan"], "bridge": {"name": HOSTILE["vlanbr"]}}
                ],
            },
        },
    }
    docs = [manifests.Document("t", tunnel), manifests.Document("s", session)]
    report = validation.check_documents(docs)
    assert not report.errors, [p.render() for p in report.errors]
    for peer in (False, True):
        text = render(report.resources, peer=peer)
        lines = text.splitlines()
        assert lines[0].startswith("# for a POSIX shell only")
        assert all(line.startswith(("ip ", "# ")) for line in lines), lines
        words = [shlex.split(line) for line in lines if line.startswith("ip ")]
        seen = set()
        for argv in words:
            for i, word in enumerate(argv):
                if word in HOSTILE.values():
                    assert argv[i - 1] in ("dev", "name", "master", "link"), argv
                    seen.add(word)
        assert seen == set(HOSTILE.values())
