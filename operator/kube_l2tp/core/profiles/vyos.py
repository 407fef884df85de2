"""``vyos``: the far end as VyOS ``set interfaces l2tpv3`` commands.

From VyOS's documentation (configuration/interfaces/l2tpv3) and its interface definition
(vyos-1x interface-definitions/interfaces_l2tpv3.xml.in): an ``l2tpethN`` interface is one tunnel
and one session (``tunnel-id``, ``peer-tunnel-id``, ``session-id``, ``peer-session-id``, ids
1..429496729), ``encapsulation`` udp|ip, ``source-address``, ``remote``, ``source-port`` and
``destination-port`` (default 5000), ``mtu`` (default 1488, which fragments every full frame on a
1500 underlay, so it is always written) and ``address`` (CIDR, no peer form: a peer becomes a
static route). VyOS runs ``ip l2tp`` with its defaults: no cookies, the default L2-specific
sublayer, no sequencing, default UDP checksums; anything else is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from kube_l2tp.api.model import AddressSpec
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

name = "vyos"
summary = "VyOS set interfaces l2tpv3 ... commands"
options: Mapping[str, OptionSpec] = {}
VYOS_MAX_ID = 429496729  # the constraint in interfaces_l2tpv3.xml.in, as written there
IFNAME = r"l2tpeth[0-9]+"


def render_far(ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result:
    check = Check()
    lines: list[str] = []
    notes: list[str] = []
    taken = {
        fs.far.interface_name
        for end in ends
        for fs in end.sessions
        if fs.far.interface_name and re.fullmatch(IFNAME, fs.far.interface_name)
    }
    free = (f"l2tpeth{n}" for n in range(10**6) if f"l2tpeth{n}" not in taken)
    for end in ends:
        t = end.far
        for value, path in (
            (t.tunnel_id, "spec.peerTunnelID"),
            (t.peer_tunnel_id, "spec.tunnelID"),
        ):
            if value > VYOS_MAX_ID:
                check.refuse(end.ours, path, f"VyOS accepts tunnel ids up to {VYOS_MAX_ID}")
        check.one_session(end, "a VyOS l2tpv3 interface")
        if t.udp is not None and (
            t.udp.checksum or not (t.udp.ipv6_checksum_tx and t.udp.ipv6_checksum_rx)
        ):
            check.refuse(
                end.ours,
                "spec.udp",
                "VyOS has no UDP checksum settings (it uses ip l2tp's defaults: off over IPv4,"
                " on over IPv6); remove checksum/ipv6Checksum* from the tunnel",
            )
        for fs in end.sessions:
            s = fs.far
            for value, path in (
                (s.session_id, "spec.peerSessionID"),
                (s.peer_session_id, "spec.sessionID"),
            ):
                if value > VYOS_MAX_ID:
                    check.refuse(fs.ours, path, f"VyOS accepts session ids up to {VYOS_MAX_ID}")
            if s.cookie or s.peer_cookie:
                check.refuse(
                    fs.ours,
                    "spec.cookie",
                    "VyOS's l2tpv3 interface has no cookie settings; remove cookie and peerCookie",
                )
            if s.l2spec_type != "default":
                check.refuse(
                    fs.ours,
                    "spec.l2specType",
                    "VyOS always uses the default L2-specific sublayer; set l2specType: default",
                )
            if s.sequencing != "none":
                check.refuse(
                    fs.ours,
                    "spec.sequencing",
                    "VyOS has no sequencing setting; set sequencing: none",
                )
            ifname = s.interface_name
            if ifname is None or not re.fullmatch(IFNAME, ifname):
                ifname = next(free)
                if s.interface_name:
                    notes.append(
                        f"VyOS names l2tpv3 interfaces l2tpethN: {s.interface_name} is {ifname}"
                    )
            base = f"set interfaces l2tpv3 {ifname}"
            lines += [
                f"{base} encapsulation '{t.encapsulation}'",
                f"{base} source-address '{t.local}'",
                f"{base} remote '{t.remote}'",
                f"{base} tunnel-id '{t.tunnel_id}'",
                f"{base} peer-tunnel-id '{t.peer_tunnel_id}'",
                f"{base} session-id '{s.session_id}'",
                f"{base} peer-session-id '{s.peer_session_id}'",
            ]
            if t.udp is not None:
                lines += [
                    f"{base} source-port '{t.udp.source_port}'",
                    f"{base} destination-port '{t.udp.destination_port}'",
                ]
            lines.append(f"{base} mtu '{s.interface.mtu or end.kernel_mtu(fs)}'")
            for a in s.interface.addresses:
                lines.append(f"{base} address '{AddressSpec.with_prefix(a.address)}'")
                if a.peer:
                    lines.append(
                        f"set protocols static route{'6' if ':' in a.peer else ''}"
                        f" {AddressSpec.with_prefix(a.peer)} interface {ifname}"
                    )
            if not s.interface.up:
                lines.append(f"{base} disable")
            notes += bridge_note(
                ifname, fs, f"set interfaces bridge brN member interface {ifname} yourself"
            )
    if check.refusals:
        return Refused(tuple(check.refusals))
    return Rendered((Output("\n".join(lines) + "\n"),), tuple(notes))
