"""Validation of a set of manifests: per object by the CRD, then across objects and peers.

Three levels, each with a reason to exist:
1. the CRD's own schema and CEL rules (api.schema), exactly what the API server enforces;
2. rules across objects that no schema can see: references, ids and names unique per node,
   local UDP ports, and, where both ends of a pseudowire are in the set, that they mirror each
   other (the kernel cannot check this: unmanaged L2TP has no control protocol);
3. warnings for configurations the kernel accepts but that do not do what was asked.
The operator's admission webhook runs the same functions against the objects in the cluster.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from kube_l2tp.api import crd, manifests, schema
from kube_l2tp.api.manifests import Document, echo
from kube_l2tp.api.model import Bridge, IpRange, Resources, Session, Tunnel
from kube_l2tp.api.problems import Problem, Severity
from kube_l2tp.api.reasons import Reason

ERROR, WARNING = Severity.ERROR, Severity.WARNING
_KINDS = {crd.TUNNEL_KIND: crd.tunnel_crd, crd.SESSION_KIND: crd.session_crd}


@dataclass(frozen=True)
class Report:
    resources: Resources
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity is WARNING]


@cache
def openapi_schema(kind: str) -> crd.Schema:
    """The kind's schema, built once (a directory has thousands of objects). Shared: callers
    must not change it."""
    schema_: crd.Schema = _KINDS[kind]()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema_


def check_object(
    body: Any, source: str = "", old: dict[str, Any] | None = None
) -> tuple[list[Problem], Tunnel | Session | None]:
    """Level 1 for one object: problems, and the typed object when it is valid."""
    if not isinstance(body, dict):
        what = f"not a Kubernetes object (a mapping): got {echo(body)}"
        return [Problem(ERROR, "", "", "", what, source)], None
    shape = manifests.shape_problem(body)
    if shape:
        return [Problem(ERROR, "", "", "", shape, source)], None
    kind = body.get("kind")
    meta = body.get("metadata")
    name = meta.get("name", "") if isinstance(meta, dict) else ""
    name = name if isinstance(name, str) else echo(name)
    api_version = body.get("apiVersion")
    if not isinstance(kind, str) or not kind:
        why = "kind is missing" if kind is None else f"kind must be a string, got {echo(kind)}"
        return [
            Problem(ERROR, "?", name, "kind", f"{why}: set L2TPTunnel or L2TPSession", source)
        ], None
    if kind not in _KINDS:
        ours = isinstance(api_version, str) and api_version.split("/")[0] == crd.GROUP
        if not ours:
            message = "not an L2TPTunnel or L2TPSession: ignored"
            return [Problem(WARNING, kind, name, "kind", message, source)], None
        close = difflib.get_close_matches(kind, list(_KINDS), n=1)
        hint = f": did you mean {close[0]}?" if close else ""
        message = f"no kind {echo(kind)} in {crd.GROUP}; its kinds are {', '.join(_KINDS)}{hint}"
        return [Problem(ERROR, kind, name, "kind", message, source)], None
    if api_version != crd.API_VERSION:
        message = f"must be {crd.API_VERSION}; got {echo(api_version)}"
        return [Problem(ERROR, kind, name, "apiVersion", message, source)], None
    schema_ = openapi_schema(kind)
    obj = schema.default(schema_, body)
    old_obj = schema.default(schema_, old) if old is not None else None
    violations = schema.validate_metadata(obj) + schema.validate(schema_, obj, old_obj)
    problems = [Problem(ERROR, kind, name, v.path, v.message, source) for v in violations]
    if problems:
        return problems, None
    if kind == crd.TUNNEL_KIND:
        return [], Tunnel.from_object(obj, source)
    return [], Session.from_object(obj, source)


@dataclass(frozen=True)
class Checked:
    """One document after level 1: what is kept of it (its body is not: 8000 parsed bodies are
    most of a large directory's memory at load)."""

    subject: str  # "Kind/name", even of an invalid document
    source: str
    problems: list[Problem]
    obj: Tunnel | Session | None  # when it passed


def check_document(doc: Document) -> Checked:
    if doc.error:
        return Checked("", doc.source, [Problem(ERROR, "", "", "", doc.error, doc.source)], None)
    found, obj = check_object(doc.body, doc.source)
    return Checked(subject(doc.body), doc.source, found, obj)


def subject(body: object) -> str:
    """ "Kind/name" of a document's body, even an invalid one ("" if it has neither)."""
    if not isinstance(body, dict):
        return ""
    meta = body.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{body.get('kind')}/{name}"


def check_documents(docs: Iterable[Document]) -> Report:
    """All three levels over a set of documents (the files given to validate, or a directory)."""
    return combine([check_document(doc) for doc in docs])


def combine(checked: Iterable[Checked]) -> Report:
    """Levels 2 and 3 over documents checked one by one; of two objects of one kind and name,
    the first is kept."""
    problems: list[Problem] = []
    tunnels: list[Tunnel] = []
    sessions: list[Session] = []
    seen: dict[tuple[str, str], str] = {}
    for c in checked:
        problems.extend(c.problems)
        obj = c.obj
        if obj is None:
            continue
        kind = crd.TUNNEL_KIND if isinstance(obj, Tunnel) else crd.SESSION_KIND
        first = seen.setdefault((kind, obj.name), c.source)
        if first != c.source:
            message = f"duplicate object: {kind}/{obj.name} is also defined in {first}; rename one"
            problems.append(Problem(ERROR, kind, obj.name, "metadata.name", message, c.source))
            continue
        if isinstance(obj, Tunnel):
            tunnels.append(obj)
        else:
            sessions.append(obj)
    resources = Resources(tuple(tunnels), tuple(sessions))
    problems.extend(check_set(resources))
    return Report(resources, tuple(problems))


def check_set(resources: Resources) -> list[Problem]:
    """Levels 2 and 3 over objects that each passed level 1."""
    problems: list[Problem] = []
    problems += _references(resources)
    for node, group in _by_node(resources).items():
        problems += _unique_per_node(node, group)
    problems += _peers(resources)
    problems += _kernel_rules(resources)
    problems += _pod_networks(resources)
    problems += _warnings(resources)
    return problems


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address the schema already accepted (with or without a prefix length)."""
    return ipaddress.ip_interface(text).ip


DEFAULT_NAME = re.compile(r"l2tpeth[0-9]+")
IPV6_MIN_MTU = 1280


def _kernel_rules(res: Resources) -> Iterable[Problem]:
    """What the schema's patterns accept but the kernel refuses, or cannot make work; checked
    on addresses' values, not their spellings (2001:db8::1 is 2001:DB8:0::1). (IPv4-mapped
    endpoints are the CRD's: patterns.IPV4_MAPPED matches every spelling.)"""
    unnamed: dict[str, Session] = {}  # node -> a session left to the kernel's l2tpethN
    for s in res.sessions:
        tunnel = res.tunnel(s.tunnel_ref)
        if tunnel is not None and not s.interface_name:
            unnamed.setdefault(tunnel.node, s)
    for s in res.sessions:
        iface = s.interface
        seen: dict[object, str] = {}
        for i, a in enumerate(iface.addresses):
            path = f"spec.interface.addresses[{i}].address"
            addr = _ip(a.address)
            if addr in seen:
                yield _s(
                    s,
                    path,
                    f"{a.address} is the address {seen[addr]} again (the same value spelled"
                    " differently): the kernel refuses the second; list it once",
                )
            seen.setdefault(addr, a.address)
            if isinstance(addr, ipaddress.IPv6Address):
                what = (
                    "multicast"
                    if addr.is_multicast
                    else "the loopback address"
                    if addr.is_loopback
                    else "the unspecified address"
                    if addr.is_unspecified
                    else ""
                )
                if what:
                    yield _s(
                        s,
                        path,
                        f"{addr} is {what}: the kernel assigns no such IPv6 address to an"
                        " interface (EADDRNOTAVAIL); use a unicast address",
                    )
                elif iface.mtu is not None and iface.mtu < IPV6_MIN_MTU:
                    yield _s(
                        s,
                        "spec.interface.mtu",
                        f"is {iface.mtu}, below IPv6's minimum of {IPV6_MIN_MTU}: the kernel"
                        f" removes IPv6 from the interface, and {addr} with it; raise the MTU"
                        " or use IPv4 addresses",
                    )
        tunnel = res.tunnel(s.tunnel_ref)
        other = unnamed.get(tunnel.node) if tunnel is not None else None
        if s.interface_name and DEFAULT_NAME.fullmatch(s.interface_name) and other is not None:
            yield _s(
                s,
                "spec.interfaceName",
                f"{s.interface_name!r} is a name the kernel gives sessions left unnamed, and"
                f" L2TPSession/{other.name} on node {tunnel.node if tunnel else ''!r} is one:"
                " which gets it depends on creation order, and the other fails. Choose a name"
                " outside l2tpethN, or name every session on the node",
                reason=CONFLICT,
            )


def _pool(r: IpRange) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, int, int]:
    """A range's subnet and the first and last address it hands out, as integers (host-local's
    defaults: the subnet without its network address, and for IPv4 without its broadcast)."""
    net = ipaddress.ip_network(r.subnet, strict=False)
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses > 2:
        first += 1
        last -= 1 if net.version == 4 else 0
    start = int(ipaddress.ip_address(r.range_start)) if r.range_start else first
    end = int(ipaddress.ip_address(r.range_end)) if r.range_end else last
    return net, start, end


def _pod_bridges(s: Session) -> Iterable[tuple[str, Bridge]]:
    """The bridges of ``s`` offered to pods, with their field paths."""
    iface = s.interface
    if iface.bridge and iface.bridge.pod_network:
        yield "spec.interface.bridge", iface.bridge
    for i, vlan in enumerate(iface.vlans):
        if vlan.bridge and vlan.bridge.pod_network:
            yield f"spec.interface.vlans[{i}].bridge", vlan.bridge


def _pod_networks(res: Resources) -> Iterable[Problem]:
    """What the schema cannot see of a pod network: ranges inside their subnets, apart from one
    another and from the session's own addresses (a pod would get one of them), and one
    NetworkAttachmentDefinition per namespace and name."""
    nads: dict[tuple[str, str], str] = {}  # (namespace, name) -> the session that declares it
    for s in res.sessions:
        own = [
            (f"spec.interface.addresses[{k}].{part}", _ip(text))
            for k, a in enumerate(s.interface.addresses)
            for part, text in (("address", a.address), ("peer", a.peer))
            if text
        ]
        for base, bridge in _pod_bridges(s):
            pods = bridge.pod_network
            assert pods is not None
            key = (pods.namespace, pods.name)
            other = nads.setdefault(key, s.name)
            if other != s.name:
                yield _s(
                    s,
                    f"{base}.podNetwork.name",
                    f"the NetworkAttachmentDefinition {pods.namespace}/{pods.name} is already"
                    f" declared by L2TPSession/{other}: one name per pod network; choose another",
                    reason=CONFLICT,
                )
            pools: list[tuple[int, int, int, int]] = []  # (version, start, end, index)
            for j, r in enumerate(pods.ranges):
                path = f"{base}.podNetwork.ipam.ranges[{j}]"
                net, start, end = _pool(r)
                if str(net.network_address) != r.subnet.split("/")[0]:
                    yield _s(s, f"{path}.subnet", f"{r.subnet} has host bits set: write {net}")
                bad = False
                for field, text in (("rangeStart", r.range_start), ("rangeEnd", r.range_end)):
                    if text and ipaddress.ip_address(text) not in net:
                        bad = True
                        yield _s(s, f"{path}.{field}", f"{text} is outside the subnet {net}")
                if bad:
                    continue
                if start > end:
                    yield _s(
                        s,
                        f"{path}.rangeEnd",
                        f"{r.range_end} comes before rangeStart {r.range_start}: swap them",
                    )
                    continue
                for where, addr in own:
                    if addr.version == net.version and start <= int(addr) <= end:
                        yield _s(
                            s,
                            path,
                            f"hands out {addr}, the session's own address ({where}): a pod"
                            " would get it too; move rangeStart or rangeEnd past it",
                        )
                for version, o_start, o_end, k in pools:
                    if version == net.version and start <= o_end and o_start <= end:
                        yield _s(
                            s,
                            path,
                            f"overlaps {base}.podNetwork.ipam.ranges[{k}]: two pods could get"
                            " the same address; make the ranges disjoint",
                        )
                pools.append((net.version, start, end, j))


def _t(
    tunnel: Tunnel,
    path: str,
    message: str,
    severity: Severity = ERROR,
    reason: Reason = Reason.INVALID_SPEC,
) -> Problem:
    return Problem(severity, crd.TUNNEL_KIND, tunnel.name, path, message, tunnel.source, reason)


def _s(
    session: Session,
    path: str,
    message: str,
    severity: Severity = ERROR,
    reason: Reason = Reason.INVALID_SPEC,
) -> Problem:
    return Problem(severity, crd.SESSION_KIND, session.name, path, message, session.source, reason)


CONFLICT = Reason.CONFLICT  # the reason of a problem that another object causes (first come wins)


def _references(res: Resources) -> Iterable[Problem]:
    for s in res.sessions:
        tunnel = res.tunnel(s.tunnel_ref)
        if tunnel is None:
            names = ", ".join(t.name for t in res.tunnels) or "none"
            yield _s(
                s,
                "spec.tunnelRef",
                f"no L2TPTunnel named {s.tunnel_ref!r} (tunnels here: {names}):"
                " create it, or fix the name",
            )
        elif s.node is not None and s.node != tunnel.node:
            yield _s(
                s,
                "spec.nodeName",
                f"must equal the tunnel's nodeName {tunnel.node!r}; got {s.node!r}:"
                " remove spec.nodeName (it is filled in from the tunnel) or fix it",
            )


def _by_node(res: Resources) -> dict[str, Resources]:
    nodes = sorted({t.node for t in res.tunnels})
    return {node: res.for_node(node) for node in nodes}


def _unique_per_node(node: str, res: Resources) -> Iterable[Problem]:
    where = f"on node {node!r}"
    first_id: dict[int, Tunnel] = {}
    first_port: dict[tuple[str, int], Tunnel] = {}
    for t in res.tunnels:
        other = first_id.setdefault(t.tunnel_id, t)
        if other is not t:
            yield _t(
                t,
                "spec.tunnelID",
                f"tunnel id {t.tunnel_id} is already used by L2TPTunnel/{other.name} {where}:"
                " tunnel ids must be unique per node",
                reason=CONFLICT,
            )
        if t.udp is not None:
            key = (str(_ip(t.local)), t.udp.source_port)
            other = first_port.setdefault(key, t)
            if other is not t:
                yield _t(
                    t,
                    "spec.udp.sourcePort",
                    f"{t.local} port {t.udp.source_port} is already used by"
                    f" L2TPTunnel/{other.name} {where}: each UDP tunnel needs its own local"
                    " address and source port",
                    reason=CONFLICT,
                )
    tunnels = {t.name: t for t in res.tunnels}
    per_tunnel: dict[tuple[str, int], Session] = {}
    by_id: dict[int, list[Session]] = defaultdict(list)
    for s in res.sessions:
        other_s = per_tunnel.setdefault((s.tunnel_ref, s.session_id), s)
        if other_s is not s:
            yield _s(
                s,
                "spec.sessionID",
                f"session id {s.session_id} is already used by L2TPSession/{other_s.name} in"
                f" tunnel {s.tunnel_ref!r}: session ids must be unique per tunnel",
                reason=CONFLICT,
            )
        else:
            by_id[s.session_id].append(s)
    for sid, group in by_id.items():
        ip_encap = [s for s in group if tunnels[s.tunnel_ref].encapsulation == "ip"]
        if len(group) > 1 and ip_encap:
            for s in group[1:]:
                yield _s(
                    s,
                    "spec.sessionID",
                    f"session id {sid} is also used by L2TPSession/{group[0].name} {where}, and"
                    f" L2TPSession/{ip_encap[0].name} uses IP encapsulation, where the kernel"
                    " identifies sessions by id alone: use a session id unique on the node",
                    reason=CONFLICT,
                )
    yield from _interface_names(node, res)


def _interface_names(node: str, res: Resources) -> Iterable[Problem]:
    """Interface names the agent creates must be distinct; bridges may be shared."""
    created: dict[str, tuple[str, Session]] = {}  # name -> (role, declaring session)
    bridges: dict[str, Session] = {}
    port_of: dict[str, tuple[str, Session]] = {}  # host port -> (bridge, session)

    def claim(name: str, role: str, s: Session, path: str) -> Iterable[Problem]:
        other = created.get(name)
        if other is None:
            created[name] = (role, s)
        else:
            yield _s(
                s,
                path,
                f"interface name {name!r} is already used by L2TPSession/{other[1].name}"
                f" ({other[0]}) on node {node!r}: interface names must be unique per node",
                reason=CONFLICT,
            )

    def bridge(b_name: str, ports: tuple[str, ...], s: Session, path: str) -> Iterable[Problem]:
        bridges.setdefault(b_name, s)
        for i, port in enumerate(ports):
            other = port_of.setdefault(port, (b_name, s))
            if other[0] != b_name:
                yield _s(
                    s,
                    f"{path}.ports[{i}]",
                    f"host port {port!r} is already a port of bridge {other[0]!r}"
                    f" (L2TPSession/{other[1].name}): an interface can be in one bridge only",
                    reason=CONFLICT,
                )

    for s in res.sessions:
        iface = s.interface
        if s.interface_name:
            yield from claim(s.interface_name, "session interface", s, "spec.interfaceName")
        if iface.bridge:
            yield from bridge(iface.bridge.name, iface.bridge.ports, s, "spec.interface.bridge")
        for i, vlan in enumerate(iface.vlans):
            if vlan.name or s.interface_name:
                vname = vlan.ifname(s.interface_name or "")
                yield from claim(vname, "VLAN interface", s, f"spec.interface.vlans[{i}].name")
            if vlan.bridge:
                path = f"spec.interface.vlans[{i}].bridge"
                yield from bridge(vlan.bridge.name, vlan.bridge.ports, s, path)
    for b_name, s in bridges.items():
        if b_name in created:
            yield _s(
                s,
                "spec.interface.bridge.name",
                f"bridge name {b_name!r} is also a session or VLAN interface name on node"
                f" {node!r}: choose another bridge name",
            )
    for port, (b_name, s) in port_of.items():
        if port in created or port in bridges:
            yield _s(
                s,
                "spec.interface.bridge.ports",
                f"host port {port!r} of bridge {b_name!r} is an interface the agent creates:"
                " list only existing host interfaces as ports",
            )


def _peers(res: Resources) -> Iterable[Problem]:
    """Where both ends are in the set, they must mirror each other or no frame gets through."""
    index = {(t.tunnel_id, t.peer_tunnel_id, _ip(t.local), _ip(t.remote)): t for t in res.tunnels}
    for a in res.tunnels:
        b = index.get((a.peer_tunnel_id, a.tunnel_id, _ip(a.remote), _ip(a.local)))
        if b is None or b is a:
            continue
        if a.encapsulation != b.encapsulation:
            yield _t(
                a,
                "spec.encapsulation",
                f"is {a.encapsulation} but the peer L2TPTunnel/{b.name} uses"
                f" {b.encapsulation}: both ends must use the same encapsulation",
            )
            continue
        if (a.encryption is None) != (b.encryption is None):
            yield _t(
                a,
                "spec.encryption",
                f"is {'set' if a.encryption else 'not set'} but the peer L2TPTunnel/{b.name}'s"
                f" is {'set' if b.encryption else 'not set'}: one end alone encrypting drops"
                " every frame; set encryption on both ends or on neither",
            )
        elif a.encryption and b.encryption and a.encryption.algorithm != b.encryption.algorithm:
            yield _t(
                a,
                "spec.encryption.algorithm",
                f"is {a.encryption.algorithm} but the peer L2TPTunnel/{b.name} uses"
                f" {b.encryption.algorithm}: both ends must use the same algorithm",
            )
        if a.udp and b.udp:
            if a.udp.destination_port != b.udp.source_port:
                yield _t(
                    a,
                    "spec.udp.destinationPort",
                    f"is {a.udp.destination_port} but the peer L2TPTunnel/{b.name} listens on"
                    f" sourcePort {b.udp.source_port}: set destinationPort to"
                    f" {b.udp.source_port}",
                )
            if a.ipv6 and not a.udp.ipv6_checksum_tx and b.udp.ipv6_checksum_rx:
                yield _t(
                    a,
                    "spec.udp.ipv6ChecksumTx",
                    f"is false, so this end sends zero UDP checksums, but the peer"
                    f" L2TPTunnel/{b.name} has ipv6ChecksumRx true and drops such packets:"
                    " set both to true, or the peer's ipv6ChecksumRx to false",
                )
        yield from _session_pairs(res, a, b)


def _session_pairs(res: Resources, a: Tunnel, b: Tunnel) -> Iterable[Problem]:
    peers = {s.session_id: s for s in res.sessions if s.tunnel_ref == b.name}
    for s in (s for s in res.sessions if s.tunnel_ref == a.name):
        p = peers.get(s.peer_session_id)
        if p is None:
            yield _s(
                s,
                "spec.peerSessionID",
                f"the peer L2TPTunnel/{b.name} has no session with sessionID"
                f" {s.peer_session_id}: the peer will discard this session's frames",
                WARNING,
            )
            continue
        if p.peer_session_id != s.session_id:
            yield _s(
                s,
                "spec.sessionID",
                f"the peer L2TPSession/{p.name} expects peerSessionID {p.peer_session_id},"
                f" not {s.session_id}: make the ids mirror each other",
            )
        if (s.cookie or "").lower() != (p.peer_cookie or "").lower():
            yield _s(
                s,
                "spec.cookie",
                f"is {s.cookie or 'unset'} but the peer L2TPSession/{p.name} expects peerCookie"
                f" {p.peer_cookie or 'unset'}: the peer discards every frame; make them equal",
            )
        if s.interface.mtu != p.interface.mtu:
            mine = s.interface.mtu or "the kernel's default"
            theirs = p.interface.mtu or "the kernel's default"
            yield _s(
                s,
                "spec.interface.mtu",
                f"is {mine} but the peer L2TPSession/{p.name} uses {theirs}: frames larger"
                " than the smaller MTU are dropped by the receiving interface; use the same"
                " MTU on both ends",
                WARNING,
            )
        if s.l2spec_type != p.l2spec_type:
            yield _s(
                s,
                "spec.l2specType",
                f"is {s.l2spec_type} but the peer L2TPSession/{p.name} uses {p.l2spec_type}:"
                " frames would be misparsed; set the same value on both ends",
            )
        if s.recv_seq and not p.send_seq and not s.send_seq:
            yield _s(
                s,
                "spec.sequencing",
                f"is {s.sequencing}, which drops unnumbered packets, but the peer"
                f" L2TPSession/{p.name} does not send sequence numbers: set the peer's"
                " sequencing to send or both",
            )


def _warnings(res: Resources) -> Iterable[Problem]:
    for s in res.sessions:
        for field, value in (("offset", s.offset), ("peerOffset", s.peer_offset)):
            if value:
                yield _s(
                    s,
                    f"spec.{field}",
                    f"is {value}, but current kernels ignore offsets (ip l2tp prints 'Ignoring"
                    " option'): data always starts right after the L2TP header",
                    WARNING,
                )
        tunnel = res.tunnel(s.tunnel_ref)
        if tunnel is None or s.interface.mtu is None:
            continue
        encrypted = s.encrypted_mtu(tunnel)
        fits = s.kernel_mtu(tunnel) if encrypted is None else encrypted
        if s.interface.mtu > fits:
            esp = " with ESP's 34-37 bytes" if encrypted is not None else ""
            yield _s(
                s,
                "spec.interface.mtu",
                f"is {s.interface.mtu}, above the {fits} that fits a 1500-byte underlay{esp}:"
                " every full-size frame will be sent as two IP fragments (slower, and dropped"
                f" where fragments are filtered). Use {fits} unless the underlay MTU is larger",
                WARNING,
            )
