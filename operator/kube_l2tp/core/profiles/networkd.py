"""``networkd``: the far end as systemd-networkd files (systemd.netdev(5), systemd.network(5)).

Per tunnel a ``.netdev`` of ``Kind=l2tp`` with an ``[L2TP]`` section and one ``[L2TPSession]``
per session, and per session interface a ``.network`` (addresses with ``Peer=``, MTU). networkd
creates the tunnel once the link holding ``Local=`` is configured by networkd itself
(NETDEV_CREATE_AFTER_CONFIGURED in src/network/netdev/l2tp-tunnel.c): that link needs a
``.network`` of the far end's own (systemd 252 ignores the old ``L2TP=`` key, "Support for
option L2TP= has been removed"), so none is written here; an unmanaged underlay gets no tunnel.

Limits of networkd: no cookies and no sequencing (no such keys in [L2TPSession]), refused. The
UDP checksum keys are written under the names networkd's parser has known since L2TP support
began (``UDPCheckSum=``, ``UDP6CheckSumTx=``, ``UDP6CheckSumRx=``; systemd 252's manual calls
the IPv6 ones ``UDP6ZeroChecksumTx/Rx=``, which 252 ignores as unknown keys, systemd issue
36421), always, since networkd's defaults are not ip l2tp's: ``UDP6CheckSum*=yes`` means *zero*
checksums (the kernel's UDP_ZERO_CSUM6 flags), as the manual describes the Zero keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kube_l2tp.api.model import AddressSpec, Interface
from kube_l2tp.core.profiles.base import (
    Check,
    FarEnd,
    OptionSpec,
    Output,
    Refused,
    Rendered,
    Result,
    bridge_note,
)

name = "networkd"
summary = "systemd-networkd .netdev ([L2TP], [L2TPSession]) and .network files"
options: Mapping[str, OptionSpec] = {}
# systemd's ifname_valid(): 1..15 bytes, no '/', ':' or whitespace; kept to a plain word here.
IFNAME = r"(?!\.{1,2}$)[A-Za-z0-9_.-]{1,15}"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def render_far(ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result:
    check = Check()
    outputs: list[Output] = []
    notes: list[str] = []
    unnamed = 0
    for end in ends:
        t = end.far
        netdev = f"l2tpt{t.tunnel_id}"  # a netdev name: at most 15 bytes, from digits only
        networks: list[Output] = []
        lines = [
            f"# kube-l2tp: far end of L2TPTunnel {end.ours.name}",
            "[NetDev]",
            f"Name={netdev}",
            "Kind=l2tp",
            "",
            "[L2TP]",
            f"TunnelId={t.tunnel_id}",
            f"PeerTunnelId={t.peer_tunnel_id}",
            f"Local={t.local}",
            f"Remote={t.remote}",
            f"EncapsulationType={t.encapsulation}",
        ]
        if t.udp is not None:
            lines += [
                f"UDPSourcePort={t.udp.source_port}",
                f"UDPDestinationPort={t.udp.destination_port}",
            ]
            if t.ipv6:
                lines += [
                    f"UDP6CheckSumTx={_yes(not t.udp.ipv6_checksum_tx)}",
                    f"UDP6CheckSumRx={_yes(not t.udp.ipv6_checksum_rx)}",
                ]
            else:
                lines.append(f"UDPCheckSum={_yes(t.udp.checksum)}")
        for fs in end.sessions:
            s = fs.far
            if s.cookie or s.peer_cookie:
                field = "spec.peerCookie" if s.cookie else "spec.cookie"
                check.refuse(
                    fs.ours,
                    field,
                    "systemd-networkd cannot set L2TP cookies ([L2TPSession] has no cookie key,"
                    " systemd.netdev(5)); remove cookie and peerCookie, or use --profile linux",
                )
            check.unsupported(
                fs,
                "spec.sequencing",
                s.sequencing != "none",
                "systemd-networkd cannot enable sequencing ([L2TPSession] has no such key);"
                " set sequencing: none, or use --profile linux",
            )
            ifname = s.interface_name
            if ifname is None:
                ifname = f"l2tpeth{unnamed}"
                unnamed += 1
            check.name(fs.ours, "spec.interfaceName", ifname, IFNAME, "a networkd Name=")
            lines += [
                "",
                "[L2TPSession]",
                f"Name={ifname}",
                f"SessionId={s.session_id}",
                f"PeerSessionId={s.peer_session_id}",
                f"Layer2SpecificHeader={s.l2spec_type}",
            ]
            networks.append(Output(_network(ifname, s.interface), f"60-kube-l2tp-{ifname}.network"))
            notes += bridge_note(ifname, fs, "attach it yourself (Bridge=, VLAN=)")
        outputs.append(Output("\n".join(lines) + "\n", f"60-kube-l2tp-{netdev}.netdev"))
        outputs += networks
    if check.refusals:
        return Refused(tuple(check.refusals))
    notes.insert(
        0,
        "install the files in /etc/systemd/network/ and run: networkctl reload; networkd"
        " creates the tunnel only once the interface holding its Local= address is configured"
        " by networkd (a .network of yours matches it)",
    )
    return Rendered(tuple(outputs), tuple(notes))


def _network(ifname: str, iface: Interface) -> str:
    """The session interface's .network: MTU, admin state, addresses (with Peer=)."""
    lines = ["[Match]", f"Name={ifname}"]
    link = [f"MTUBytes={iface.mtu}"] if iface.mtu is not None else []
    if not iface.up:
        link.append("ActivationPolicy=down")
    if link:
        lines += ["", "[Link]", *link]
    for a in iface.addresses:
        lines += ["", "[Address]", f"Address={AddressSpec.with_prefix(a.address)}"]
        if a.peer:
            lines.append(f"Peer={AddressSpec.with_prefix(a.peer)}")
    return "\n".join(lines) + "\n"
