"""``cisco-ios-xe``: the far end as a static (manual) L2TPv3 xconnect on Cisco IOS XE.

The shape of Cisco's "Configuring a Static L2TPv3 Session for an Xconnect Ethernet Interface"
example (Layer 2 Tunneling Protocol Version 3, IOS XE configuration guide): a
``pseudowire-class`` with ``encapsulation l2tpv3``, ``protocol none`` (no control channel) and
``ip local interface``; on the attachment circuit ``xconnect PEER VCID encapsulation l2tpv3
manual pw-class NAME`` with ``l2tp id LOCAL REMOTE`` and ``l2tp cookie local|remote SIZE LOW
[HIGH]``. ``local`` is the cookie the router expects in received packets (our ``cookie``),
``remote`` the one it sends (our ``peerCookie``).

What this profile cannot express, it refuses: UDP encapsulation (the xconnect carries L2TPv3
directly over IP, protocol 115), IPv6 underlays (platform-dependent on IOS XE; not rendered),
the default L2-specific sublayer and sequencing (Cisco's default sublayer for Ethernet is none,
ip-l2tp(8) INTEROPERABILITY; the in-cluster end must say ``l2specType: none``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kube_l2tp.core.profiles.base import (
    Check,
    FarEnd,
    OptionSpec,
    Output,
    Refused,
    Rendered,
    Result,
)

name = "cisco-ios-xe"
summary = "Cisco IOS XE pseudowire-class and xconnect ... encapsulation l2tpv3 manual"
_IOS_IFNAME = r"[A-Za-z][A-Za-z0-9/.:-]{0,63}"
options: Mapping[str, OptionSpec] = {
    "local-interface": OptionSpec(
        "Loopback0",
        "the router's interface holding the tunnel's address (ip local interface)",
        _IOS_IFNAME,
    ),
    "attachment-interface": OptionSpec(
        "GigabitEthernet1",
        "the router's port the pseudowire is cross-connected to (interface ... xconnect)",
        _IOS_IFNAME,
    ),
}


def cookie_words(hexstr: str) -> str:
    """``SIZE LOW [HIGH]`` in decimal; the high word is the first on the wire (network order)."""
    raw = bytes.fromhex(hexstr)
    if len(raw) == 4:
        return f"4 {int.from_bytes(raw, 'big')}"
    return f"8 {int.from_bytes(raw[4:], 'big')} {int.from_bytes(raw[:4], 'big')}"


def render_far(ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result:
    check = Check()
    lines: list[str] = []
    notes: list[str] = []
    for end in ends:
        t = end.far
        if t.encapsulation != "ip":
            check.refuse(
                end.ours,
                "spec.encapsulation",
                "IOS XE's manual xconnect carries L2TPv3 directly over IP (protocol 115), not UDP;"
                " set encapsulation: ip",
            )
        if t.ipv6:
            check.refuse(
                end.ours,
                "spec.local",
                "this profile renders IPv4 underlays only (L2TPv3 over IPv6 depends on the IOS XE"
                " platform); use IPv4 addresses or --profile linux",
            )
        check.one_session(end, "an xconnect on one attachment interface")
        pw_class = f"kube-l2tp-{t.tunnel_id}"
        for fs in end.sessions:
            s = fs.far
            if s.l2spec_type != "none":
                check.refuse(
                    fs.ours,
                    "spec.l2specType",
                    "Cisco's default L2-specific sublayer for Ethernet is none (Linux's is the"
                    " 4-byte default one; ip-l2tp(8) INTEROPERABILITY); set l2specType: none",
                )
            check.unsupported(
                fs,
                "spec.sequencing",
                s.sequencing != "none",
                "not rendered for IOS XE (Cisco sequences only with its default sublayer);"
                " set sequencing: none",
            )
            if s.interface.addresses:
                notes.append(
                    f"the addresses of L2TPSession {fs.ours.name} are not rendered: an xconnect has"
                    " no IP interface of its own; they belong to the device on"
                    f" {opts['attachment-interface']}"
                )
            lines += [
                f"! kube-l2tp: far end of L2TPTunnel {end.ours.name}, L2TPSession {fs.ours.name}",
                f"pseudowire-class {pw_class}",
                " encapsulation l2tpv3",
                " protocol none",
                f" ip local interface {opts['local-interface']}",
                "!",
                f"interface {opts['attachment-interface']}",
                f" xconnect {t.remote} {s.session_id} encapsulation l2tpv3 manual"
                f" pw-class {pw_class}",
                f"  l2tp id {s.session_id} {s.peer_session_id}",
            ]
            # local: what the router expects to receive, i.e. what our end sends.
            if s.peer_cookie:
                lines.append(f"  l2tp cookie local {cookie_words(s.peer_cookie)}")
            if s.cookie:
                lines.append(f"  l2tp cookie remote {cookie_words(s.cookie)}")
            lines.append("!")
    if check.refusals:
        return Refused(tuple(check.refusals))
    notes.insert(
        0,
        f"{opts['local-interface']} must hold the tunnel's address; the pseudowire is"
        f" cross-connected to {opts['attachment-interface']} (--peer-option"
        " local-interface=IF, attachment-interface=IF); CEF must be enabled (ip cef)",
    )
    return Rendered((Output("\n".join(lines) + "\n"),), tuple(notes))
