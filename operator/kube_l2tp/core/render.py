"""The iproute2 commands equivalent to a set of resources, for this end or the mirrored peer.

A user sees exactly what the agent will program and can do it by hand; ``peer=True`` prints
what the far end needs (ids, ports and cookies swapped, local and remote exchanged), for a peer
outside the cluster such as a router. Only non-default options are printed, as a person would
type them, so the seed's own commands come out as the seed wrote them, with `dev` before each
interface name.

The output is safe to paste into a POSIX shell whatever the names hold (they are valid to the
kernel, not to a shell): every name is quoted where it needs it (shlex), every interface name
follows `dev`/`name`/`master`/`link` so a name such as `mtu` cannot read as a keyword, and a
node name is printed in a comment on one line. ip -batch has no quoting of its own for '#'
(always a comment there) or for a quote inside a name: output holding such names says so.
"""

from __future__ import annotations

import shlex
from dataclasses import replace

from kube_l2tp.api.model import Bridge, Interface, Resources, Session, Tunnel, Udp
from kube_l2tp.core import xfrm


def mirror_tunnel(t: Tunnel) -> Tunnel:
    udp = t.udp
    if udp is not None:
        udp = Udp(
            source_port=udp.destination_port,
            destination_port=udp.source_port,
            checksum=udp.checksum,
            # What one end sends, the other receives: an end that sends zero checksums needs a
            # peer that accepts them (the kernel drops them otherwise), and the reverse.
            ipv6_checksum_tx=udp.ipv6_checksum_rx,
            ipv6_checksum_rx=udp.ipv6_checksum_tx,
        )
    return replace(
        t,
        tunnel_id=t.peer_tunnel_id,
        peer_tunnel_id=t.tunnel_id,
        local=t.remote,
        remote=t.local,
        udp=udp,
        node=f"peer of {t.node}",
    )


def mirror_session(s: Session) -> Session:
    iface = s.interface
    # An address without a peer has no mirror image: the far end picks its own in the prefix.
    addresses = tuple(replace(a, address=a.peer, peer=a.address) for a in iface.addresses if a.peer)
    seq = {"send": "recv", "recv": "send"}.get(s.sequencing, s.sequencing)
    return replace(
        s,
        session_id=s.peer_session_id,
        peer_session_id=s.session_id,
        cookie=s.peer_cookie,
        peer_cookie=s.cookie,
        offset=s.peer_offset,
        peer_offset=s.offset,
        sequencing=seq,  # type: ignore[arg-type]
        interface=replace(iface, addresses=addresses),
    )


def q(name: str) -> str:
    """A name as one shell word."""
    return shlex.quote(name)


_NOT_FOR_BATCH = frozenset("#'\"\\")


def tunnel_command(t: Tunnel) -> str:
    words = [
        "ip l2tp add tunnel",
        f"tunnel_id {t.tunnel_id}",
        f"peer_tunnel_id {t.peer_tunnel_id}",
        f"encap {t.encapsulation}",
        f"local {t.local}",
        f"remote {t.remote}",
    ]
    if t.udp is not None:
        words += [f"udp_sport {t.udp.source_port}", f"udp_dport {t.udp.destination_port}"]
        if t.udp.checksum:
            words.append("udp_csum on")
        if not t.udp.ipv6_checksum_tx:
            words.append("udp6_csum_tx off")
        if not t.udp.ipv6_checksum_rx:
            words.append("udp6_csum_rx off")
    return " ".join(words)


def session_command(s: Session, tunnel: Tunnel) -> str:
    words = ["ip l2tp add session"]
    if s.interface_name:
        words.append(f"name {q(s.interface_name)}")
    words += [
        f"tunnel_id {tunnel.tunnel_id}",
        f"session_id {s.session_id}",
        f"peer_session_id {s.peer_session_id}",
    ]
    if s.cookie:
        words.append(f"cookie {s.cookie}")
    if s.peer_cookie:
        words.append(f"peer_cookie {s.peer_cookie}")
    if s.l2spec_type != "default":
        words.append(f"l2spec_type {s.l2spec_type}")
    if s.sequencing != "none":
        words.append(f"seq {s.sequencing}")
    if s.offset:
        words.append(f"offset {s.offset}")
    if s.peer_offset:
        words.append(f"peer_offset {s.peer_offset}")
    return " ".join(words)


def _link_set(name: str, up: bool, mtu: int | None) -> str:
    words = [f"ip link set dev {q(name)}", "up" if up else "down"]
    if mtu is not None:
        words.append(f"mtu {mtu}")
    return " ".join(words)


def _bridge(port: str, bridge: Bridge, created: set[str]) -> list[str]:
    """The seed's order: create the bridge, enslave the pseudowire, then host ports, then up."""
    lines = []
    b = q(bridge.name)
    if bridge.name not in created:
        lines.append(f"ip link add name {b} type bridge")
    lines.append(f"ip link set dev {q(port)} master {b}")
    lines += [f"ip link set dev {q(p)} master {b}" for p in bridge.ports]
    if bridge.name not in created:
        lines.append(f"ip link set dev {b} up")
        created.add(bridge.name)
    return lines


def interface_commands(name: str, iface: Interface, bridges: set[str]) -> list[str]:
    # Before up, as the agent does: the kernel makes the link-local address and qdisc at up.
    lines = [f"tc qdisc replace dev {name} root {iface.qdisc}"] if iface.qdisc else []
    if iface.addr_gen_mode:
        lines.append(f"ip link set dev {name} addrgenmode {iface.addr_gen_mode}")
    lines.append(_link_set(name, iface.up, iface.mtu))
    for a in iface.addresses:
        peer = f" peer {a.peer}" if a.peer else ""
        lines.append(f"ip addr add {a.address}{peer} dev {q(name)}")
    if iface.bridge:
        lines += _bridge(name, iface.bridge, bridges)
    for vlan in iface.vlans:
        vname = vlan.ifname(name)
        lines.append(f"ip link add link {q(name)} name {q(vname)} type vlan id {vlan.id}")
        lines.append(f"ip link set dev {q(vname)} up")
        if vlan.bridge:
            lines += _bridge(vname, vlan.bridge, bridges)
    return lines


def _comment(text: str) -> str:
    """``text`` safe inside a one-line comment (a node name may hold a line break)."""
    return text.encode("unicode_escape").decode("ascii")


def encryption_commands(t: Tunnel) -> list[str]:
    enc = t.encryption
    assert enc is not None
    return [
        f"# IPsec ESP {enc.algorithm}, key id {enc.key_id}: $KEY_<SPI> is that SA's key, 0x and"
        f" {2 * enc.aead.kernel_key} hex digits derived from the shared secret (HKDF-SHA256,"
        " README: Encryption); keys are never printed",
        *xfrm.ip_commands(t, enc.algorithm, enc.key_id),
    ]


def render(resources: Resources, *, node: str | None = None, peer: bool = False) -> str:
    """Commands per node, tunnels first, each followed by its sessions and their interfaces."""
    out: list[str] = []
    nodes = sorted({t.node for t in resources.tunnels if node is None or t.node == node})
    for n in nodes:
        mine = resources.for_node(n)
        if len(nodes) > 1 or peer:
            out.append(
                f"# node {_comment(n)}" + (": commands for the peer (mirrored)" if peer else "")
            )
        unnamed = 0
        bridges: set[str] = set()
        for tunnel in mine.tunnels:
            t = mirror_tunnel(tunnel) if peer else tunnel
            if t.encryption is not None:  # the policies first: no frame of it leaves in clear
                out += encryption_commands(t)
            out.append(tunnel_command(t))
            for session in (s for s in mine.sessions if s.tunnel_ref == tunnel.name):
                s = mirror_session(session) if peer else session
                out.append(session_command(s, t))
                name = s.interface_name
                if name is None:
                    name = f"l2tpeth{unnamed}"
                    unnamed += 1
                    out.append(
                        f"# {name}: the kernel's name for this session, if no other l2tpethN exists"
                    )
                out += interface_commands(name, s.interface, bridges)
                if peer:
                    out += [
                        f"# {name}: add an address of your own in the prefix of {a.address}"
                        for a in session.interface.addresses
                        if not a.peer
                    ]
        if any(s.offset or s.peer_offset for s in mine.sessions):
            out.append("# offset/peer_offset: current kernels ignore them (ip l2tp says so too)")
    if any(_NOT_FOR_BATCH.intersection(line) for line in out if not line.startswith("#")):
        out.insert(
            0, "# for a POSIX shell only: a name holds '#' or a quote, which ip -batch cannot carry"
        )
    return "\n".join(out) + ("\n" if out else "")
