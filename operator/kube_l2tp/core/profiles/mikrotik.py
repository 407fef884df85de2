"""``mikrotik``: the far end as RouterOS 7 commands (``/interface l2tp-ether`` in unmanaged mode).

Properties from MikroTik's RouterOS manual, L2TP page, "L2TP Ether" section: ``unmanaged-mode``
unlocks ``local-tunnel-id``, ``remote-tunnel-id``, ``local-session-id``, ``remote-session-id``,
``send-cookie``, ``peer-cookie`` (8 or 16 hex digits) and ``local-address``; ``l2tp-proto-version``
is ``l2tpv3-ip`` or ``l2tpv3-udp``; ``use-l2-specific-sublayer`` defaults to ``no`` and
``disabled`` to ``yes``, ``mtu`` to 1420, so all three are always written.

Refused: UDP encapsulation (l2tp-ether has no UDP port settings, so the manifest's ports cannot
be expressed), sequencing (no such property), and more than one session per tunnel (each
l2tp-ether interface is one tunnel with one session).
"""

from __future__ import annotations

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

name = "mikrotik"
summary = "MikroTik RouterOS 7 /interface l2tp-ether with unmanaged-mode=yes"
options: Mapping[str, OptionSpec] = {}
# RouterOS takes an unquoted word of these; anything else would need quoting (and $ expands).
NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"


def render_far(ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result:
    check = Check()
    lines: list[str] = []
    addresses: list[str] = []
    notes: list[str] = []
    for end in ends:
        t = end.far
        if t.encapsulation != "ip":
            check.refuse(
                end.ours,
                "spec.encapsulation",
                "RouterOS's l2tp-ether has no UDP port settings, so the ports of this tunnel"
                " cannot be expressed; set encapsulation: ip (l2tp-proto-version=l2tpv3-ip)",
            )
        check.one_session(end, "a RouterOS l2tp-ether")
        for fs in end.sessions:
            s = fs.far
            check.unsupported(
                fs,
                "spec.sequencing",
                s.sequencing != "none",
                "RouterOS's l2tp-ether has no sequencing setting; set sequencing: none",
            )
            ifname = s.interface_name or f"kube-l2tp-{s.session_id}"
            check.name(fs.ours, "spec.interfaceName", ifname, NAME, "a RouterOS name")
            words = [
                f"add name={ifname}",
                f"connect-to={t.remote}",
                f"local-address={t.local}",
                "unmanaged-mode=yes",
                "l2tp-proto-version=l2tpv3-ip",
                f"local-tunnel-id={t.tunnel_id}",
                f"remote-tunnel-id={t.peer_tunnel_id}",
                f"local-session-id={s.session_id}",
                f"remote-session-id={s.peer_session_id}",
                f"use-l2-specific-sublayer={'yes' if s.l2spec_type == 'default' else 'no'}",
            ]
            if s.cookie:
                words.append(f"send-cookie={s.cookie}")
            if s.peer_cookie:
                words.append(f"peer-cookie={s.peer_cookie}")
            mtu = s.interface.mtu or end.kernel_mtu(fs)
            words += [f"mtu={mtu}", "disabled=no"]
            lines.append(" ".join(words))
            for a in s.interface.addresses:
                addr = AddressSpec.with_prefix(a.address)
                if ":" not in addr:
                    peer = f" network={a.peer}" if a.peer else ""
                    addresses.append(f"/ip address add address={addr}{peer} interface={ifname}")
                else:
                    addresses.append(
                        f"/ipv6 address add address={addr} interface={ifname} advertise=no"
                    )
                    if a.peer:
                        addresses.append(
                            f"/ipv6 route add dst-address={AddressSpec.with_prefix(a.peer)}"
                            f" gateway={ifname}"
                        )
            notes += bridge_note(ifname, fs, "add it to a /interface bridge port yourself")
    if check.refusals:
        return Refused(tuple(check.refusals))
    text = "/interface l2tp-ether\n" + "".join(f"{line}\n" for line in lines)
    text += "".join(f"{line}\n" for line in addresses)
    return Rendered((Output(text),), tuple(notes))
