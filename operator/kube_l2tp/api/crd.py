"""The CustomResourceDefinitions: the one source of the API's schema, rules and columns.

crds/*.yaml (what users apply) is generated from here (`make crds`, which runs
kube_l2tp.files.crds), and the offline validator
validates with these very dicts, so `kube-l2tp validate` and the API server cannot disagree;
tests/unit/test_crd.py fails if crds/ drifts from this module.

Policy on changes the kernel cannot make in place (decided once, applied everywhere): the agent
*replaces* the kernel object (delete, then create; the pseudowire drops briefly). The only fields
that are immutable in the API are those that decide which node's agent owns an object
(L2TPTunnel spec.nodeName, L2TPSession spec.tunnelRef and spec.nodeName), because ownership
cannot move between two agents atomically.
"""

from __future__ import annotations

from typing import Any

import yaml

from kube_l2tp.api import patterns
from kube_l2tp.api.overhead import DEFAULT_ESP_AEAD, ESP_AEADS

GROUP = "kubel2tp.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
TUNNEL_KIND = "L2TPTunnel"
SESSION_KIND = "L2TPSession"
U32_MAX = 4294967295
MAX_IFACES = 64  # bounds for lists: the API server's CEL cost estimator needs them

Schema = dict[str, Any]


def cel(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> Schema:
    """One x-kubernetes-validations entry; ``message`` says what is wrong and how to fix it."""
    out: Schema = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


def matches(pattern: str) -> str:
    """A CEL matches() call on self with the pattern as a raw string literal."""
    assert "'" not in pattern
    return f"self.matches(r'{pattern}')"


def string(description: str, max_length: int, **extra: Any) -> Schema:
    return {"type": "string", "description": description, "maxLength": max_length, **extra}


INT64_MAX = 2**63 - 1


def integer(description: str, minimum: int, maximum: int, **extra: Any) -> Schema:
    """An int64 field. A maximum of INT64_MAX is left out: the API server reads bounds as
    float64, where 2**63 - 1 is not an integer, and refuses every value ("Maximum boundary value
    must be of type integer with format int64"); format int64 bounds it anyway."""
    bounds = {"minimum": minimum} | ({} if maximum >= INT64_MAX else {"maximum": maximum})
    return {
        "type": "integer",
        "format": "int64",
        "description": description,
        **bounds,
        **extra,
    }


def boolean(description: str, default: bool) -> Schema:
    return {"type": "boolean", "description": description, "default": default}


def obj(description: str, properties: dict[str, Schema], **extra: Any) -> Schema:
    return {"type": "object", "description": description, "properties": properties, **extra}


def immutable(what: str, why: str) -> Schema:
    return cel("self == oldSelf", f"{what} is immutable: {why}")


def u32_id(description: str) -> Schema:
    return integer(description + " 32-bit, 1..4294967295.", 1, U32_MAX)


def endpoint_address(description: str, name: str) -> Schema:
    return string(
        description,
        45,
        **{
            "x-kubernetes-validations": [
                cel(
                    matches(patterns.IP),
                    f"{name} must be an IPv4 or IPv6 address such as 192.0.2.1 or 2001:db8::1,"
                    " without a prefix length or zone",
                ),
                cel(
                    f"!{matches(patterns.UNSPECIFIED)}",
                    f"{name} must not be the unspecified address (0.0.0.0 or ::):"
                    " give the tunnel endpoint's real address",
                ),
                cel(
                    f"!{matches(patterns.MULTICAST_OR_BROADCAST)}",
                    f"{name} must be a unicast address: multicast and broadcast addresses"
                    " cannot be a tunnel endpoint",
                ),
                cel(
                    f"!{matches(patterns.IPV4_MAPPED)}",
                    f"{name} must not be an IPv4-mapped IPv6 address (::ffff:a.b.c.d): L2TP's"
                    " IPv6 sockets are IPv6-only; write the IPv4 address itself",
                ),
                cel(
                    f"!{matches(patterns.IPV6_LINK_LOCAL)}",
                    f"{name} must not be an IPv6 link-local address (fe80::/10): a tunnel"
                    " socket has no interface scope; use a global or unique-local address",
                ),
            ]
        },
    )


def ifname(description: str, field: str) -> Schema:
    return string(
        description,
        15,
        **{
            "x-kubernetes-validations": [
                cel(
                    f"{matches(patterns.IFNAME)} && self != '.' && self != '..'",
                    f"{field} must be a Linux interface name: 1 to 15 printable ASCII"
                    " characters, without '/', ':', '%' or white space, and not '.' or '..'",
                )
            ]
        },
    )


def _conditions(more: str = "") -> Schema:
    """metav1.Condition, as Kubernetes' own types declare it."""
    return {
        "type": "array",
        "description": "Observations of the object's state; `Ready` says whether it is programmed"
        " in the kernel and carrying its configuration." + more,
        "maxItems": 16,
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": obj(
            "One condition (metav1.Condition).",
            {
                "type": string("Kind of condition, e.g. Ready, PeerActive.", 316),
                "status": string("True, False or Unknown.", 7, enum=["True", "False", "Unknown"]),
                "reason": string(
                    "One-word CamelCase reason, e.g. Programmed, KernelError, Conflict,"
                    " TunnelNotFound, PeerActive, PeerSilent.",
                    1024,
                ),
                "message": string("Human-readable details.", 32768),
                "lastTransitionTime": {
                    "type": "string",
                    "format": "date-time",
                    "description": "When the status last changed.",
                },
                "observedGeneration": integer(
                    "The .metadata.generation this condition was set for.", 0, INT64_MAX
                ),
            },
            required=["type", "status", "reason", "message", "lastTransitionTime"],
        ),
    }


def _udp() -> Schema:
    return obj(
        "UDP encapsulation settings; required with encapsulation udp, forbidden with ip.",
        {
            "sourcePort": integer(
                "Local UDP port the tunnel listens on and sends from (ip l2tp udp_sport)."
                " The peer's destinationPort.",
                1,
                65535,
            ),
            "destinationPort": integer(
                "The peer's UDP port (ip l2tp udp_dport). The peer's sourcePort.", 1, 65535
            ),
            "checksum": boolean(
                "IPv4 only: compute and check UDP checksums on encapsulating packets"
                " (ip l2tp udp_csum). Default false, as ip l2tp.",
                False,
            ),
            "ipv6ChecksumTx": boolean(
                "IPv6 only: compute UDP checksums on sent packets (ip l2tp udp6_csum_tx)."
                " Default true, as ip l2tp.",
                True,
            ),
            "ipv6ChecksumRx": boolean(
                "IPv6 only: require UDP checksums on received packets (ip l2tp udp6_csum_rx)."
                " Default true, as ip l2tp.",
                True,
            ),
        },
        required=["sourcePort", "destinationPort"],
    )


def _encryption() -> Schema:
    return obj(
        "Encrypt this tunnel's traffic with IPsec ESP (transport mode, on exactly this tunnel's"
        " UDP ports or IP protocol 115 between local and remote; nothing else on the node is"
        " affected). Both ends need the same secret, algorithm and, in steady state, key id:"
        " `kube-l2tp render --peer` prints the far end's `ip xfrm` commands. One key per"
        " direction is derived from the secret (HKDF-SHA256); keys are never logged or shown."
        " ESP costs 34-37 bytes of MTU (1446 -> 1412 for UDP over IPv4 on a 1500 underlay).",
        {
            "type": string("ipsec, the only type.", 5, enum=["ipsec"], default="ipsec"),
            "secretRef": obj(
                "In a cluster: the Secret holding the shared secret (at least 32 random bytes"
                " for the 256-bit algorithms, 16 for aes128gcm16) under its key `secret`."
                " The agent reads only the Secrets its own node's tunnels name.",
                {
                    "namespace": string("The Secret's namespace.", 63, minLength=1),
                    "name": string("The Secret's name.", 253, minLength=1),
                },
                required=["namespace", "name"],
            ),
            "keyFile": string(
                "Standalone agent: absolute path of a file holding the shared secret (its raw"
                " bytes, e.g. `head -c 32 /dev/urandom > FILE`). A file that its group or"
                " others may read is refused: chmod 600 (or 400).",
                4096,
                **{
                    "x-kubernetes-validations": [
                        cel("self.startsWith('/')", "keyFile must be an absolute path")
                    ]
                },
            ),
            "algorithm": string(
                "The ESP AEAD: aes256gcm16 (default; AES-GCM, RFC 4106, 16-byte ICV),"
                " aes128gcm16, or chacha20poly1305 (RFC 7634; fast without AES instructions).",
                32,
                enum=sorted(ESP_AEADS),
                default=DEFAULT_ESP_AEAD,
            ),
            "keyID": integer(
                "Which key: change it (with the same or a new secret) to rotate without losing"
                " traffic. The new inbound key is installed at once, this end sends with it one"
                " window later and stops accepting the old key a window after that, so the two"
                " ends may change keyID at different moments within one window.",
                0,
                65535,
                default=0,
            ),
        },
        **{
            "x-kubernetes-validations": [
                cel(
                    "has(self.secretRef) != has(self.keyFile)",
                    "encryption needs exactly one of secretRef (in a cluster) and keyFile"
                    " (standalone agent)",
                    reason="FieldValueInvalid",
                )
            ]
        },
    )


def tunnel_spec() -> Schema:
    return obj(
        "An unmanaged (static) L2TPv3 tunnel on one node; the equivalent of `ip l2tp add tunnel`."
        " Changing an id, an address, the encapsulation or a UDP setting makes the agent replace"
        " the tunnel and its sessions (a short interruption): the kernel cannot change them in"
        " place.",
        {
            "nodeName": string(
                "The node whose agent programs this tunnel (its Kubernetes Node name, or the"
                " --node name of a standalone agent). Immutable.",
                253,
                minLength=1,
                **{
                    "x-kubernetes-validations": [
                        immutable(
                            "spec.nodeName",
                            "a tunnel cannot move between nodes; delete it and create a new one"
                            " on the other node",
                        )
                    ]
                },
            ),
            "tunnelID": u32_id(
                "This end's tunnel id (ip l2tp tunnel_id); must equal the peer's peerTunnelID."
                " Unique per node."
            ),
            "peerTunnelID": u32_id(
                "The peer's tunnel id (ip l2tp peer_tunnel_id); must equal the peer's tunnelID."
            ),
            "local": endpoint_address(
                "This node's address for the tunnel (ip l2tp local): it must be assigned to an"
                " interface on the node. IPv4 or IPv6.",
                "spec.local",
            ),
            "remote": endpoint_address(
                "The peer's address (ip l2tp remote); the same family as local.", "spec.remote"
            ),
            "encapsulation": string(
                "udp (default, as ip l2tp) or ip (IP protocol 115: less overhead, but no NAT"
                " or firewall may be in the path; ip l2tp encap).",
                3,
                enum=["udp", "ip"],
                default="udp",
            ),
            "udp": _udp(),
            "encryption": _encryption(),
        },
        required=["nodeName", "tunnelID", "peerTunnelID", "local", "remote"],
        **{
            "x-kubernetes-validations": [
                cel(
                    "self.encapsulation != 'udp' || has(self.udp)",
                    "spec.udp is required with encapsulation udp: set udp.sourcePort and"
                    " udp.destinationPort (ip l2tp udp_sport and udp_dport)",
                    ".udp",
                    "FieldValueRequired",
                ),
                cel(
                    "self.encapsulation != 'ip' || !has(self.udp)",
                    "spec.udp is not allowed with encapsulation ip, which has no ports: remove"
                    " spec.udp, or set encapsulation udp",
                    ".udp",
                    "FieldValueForbidden",
                ),
                cel(
                    "self.local.contains(':') == self.remote.contains(':')",
                    "spec.remote must be of the same address family as spec.local (both IPv4 or"
                    " both IPv6)",
                    ".remote",
                ),
                cel(
                    "!has(self.udp) || !self.local.contains(':') || !has(self.udp.checksum)"
                    " || !self.udp.checksum",
                    "spec.udp.checksum applies to IPv4 only: over IPv6 use"
                    " udp.ipv6ChecksumTx and udp.ipv6ChecksumRx",
                    ".udp.checksum",
                ),
                cel(
                    "!has(self.udp) || self.local.contains(':')"
                    " || ((!has(self.udp.ipv6ChecksumTx) || self.udp.ipv6ChecksumTx)"
                    " && (!has(self.udp.ipv6ChecksumRx) || self.udp.ipv6ChecksumRx))",
                    "spec.udp.ipv6ChecksumTx and ipv6ChecksumRx apply to IPv6 only: over IPv4"
                    " use udp.checksum",
                    ".udp",
                ),
            ]
        },
    )


MAX_RANGES = 8
IPAM_TYPES = ["none", "static", "host-local", "whereabouts"]


def _ip_range() -> Schema:
    def address(field: str, which: str) -> Schema:
        return string(
            f"The {which} address pods may get; default: the subnet's {which} usable address.",
            45,
            **{
                "x-kubernetes-validations": [
                    cel(
                        matches(patterns.IP),
                        f"{field} must be an IP address without a prefix length, e.g. 203.0.113.10",
                    )
                ]
            },
        )

    def same_family(field: str) -> Schema:
        return cel(
            f"!has(self.{field}) || self.{field}.contains(':') == self.subnet.contains(':')",
            f"{field} must be of the subnet's address family (both IPv4 or both IPv6)",
            f".{field}",
        )

    return obj(
        "A range of addresses the IPAM plugin hands out (host-local's range, whereabouts'"
        " range). It must not hold the session's own interface addresses.",
        {
            "subnet": string(
                "The pods' subnet, e.g. 203.0.113.0/24 or 2001:db8:5::/64.",
                49,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.IP_PREFIX),
                            "subnet must be an IP network with a prefix length,"
                            " e.g. 203.0.113.0/24 or 2001:db8:5::/64",
                        )
                    ]
                },
            ),
            "rangeStart": address("rangeStart", "first"),
            "rangeEnd": address("rangeEnd", "last"),
        },
        required=["subnet"],
        **{"x-kubernetes-validations": [same_family("rangeStart"), same_family("rangeEnd")]},
    )


def _pod_network() -> Schema:
    return obj(
        "Offer this bridge to pods (and KubeVirt VMs) as a Multus secondary network: the"
        " operator keeps a NetworkAttachmentDefinition (k8s.cni.cncf.io/v1) of this namespace"
        " and name whose CNI config is the reference `bridge` plugin on this bridge, with the"
        " session's MTU. A pod asks for it with the annotation k8s.v1.cni.cncf.io/networks:"
        " <namespace>/<name>. The agent never touches the ports the plugin adds. For a pod on"
        " a VLAN of the wire, declare it on that VLAN's bridge (interface.vlans[].bridge).",
        {
            "namespace": string(
                "The NetworkAttachmentDefinition's namespace (a DNS label).",
                63,
                minLength=1,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.DNS_LABEL),
                            "podNetwork.namespace must be a DNS label: lower-case letters,"
                            " digits and '-', starting and ending with a letter or digit",
                        )
                    ]
                },
            ),
            "name": string(
                "The NetworkAttachmentDefinition's name (a DNS subdomain).",
                253,
                minLength=1,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.DNS_SUBDOMAIN),
                            "podNetwork.name must be a DNS subdomain: lower-case letters,"
                            " digits, '-' and '.', starting and ending with a letter or digit",
                        )
                    ]
                },
            ),
            "hairpinMode": boolean(
                "Let a pod's frames come back out of its own port (the bridge plugin's"
                " hairpinMode). Default false.",
                False,
            ),
            "ipam": obj(
                "How pods get addresses on the segment.",
                {
                    "type": string(
                        "none (default: no address; the pod or VM sets its own), static"
                        " (each pod's addresses from its network annotation's `ips`),"
                        " host-local (from ranges, remembered on this node: the segment is"
                        " on one node) or whereabouts (from ranges, cluster-wide; the"
                        " whereabouts plugin must be installed).",
                        11,
                        enum=IPAM_TYPES,
                        default="none",
                    ),
                    "ranges": {
                        "type": "array",
                        "description": "The address ranges of host-local and whereabouts;"
                        " one address per range for each pod (one IPv4 and one IPv6 range"
                        " give a dual-stack pod).",
                        "minItems": 1,
                        "maxItems": MAX_RANGES,
                        "items": _ip_range(),
                    },
                },
                **{
                    "x-kubernetes-validations": [
                        cel(
                            "!(self.type in ['host-local', 'whereabouts']) || has(self.ranges)",
                            "ipam.ranges is required with ipam.type host-local or whereabouts:"
                            " give at least one subnet",
                            ".ranges",
                            "FieldValueRequired",
                        ),
                        cel(
                            "self.type in ['host-local', 'whereabouts'] || !has(self.ranges)",
                            "ipam.ranges applies to host-local and whereabouts only: remove it,"
                            " or set ipam.type host-local",
                            ".ranges",
                            "FieldValueForbidden",
                        ),
                    ]
                },
            ),
        },
        required=["namespace", "name"],
    )


def _bridge(what: str) -> Schema:
    return obj(
        f"Attach {what} to a Linux bridge. The agent creates the bridge if it does not exist"
        " (and then owns it), sets it up, and enslaves the listed host ports, which must exist.",
        {
            "name": ifname("The bridge's interface name, e.g. br0.", "bridge.name"),
            "ports": {
                "type": "array",
                "description": "Existing host interfaces to enslave to the bridge too, e.g. eth0"
                " (the seed's `ip link set eth0 master br0`). They are released when the"
                " session goes.",
                "maxItems": MAX_IFACES,
                "items": ifname("A host interface name.", "bridge.ports[]"),
                "x-kubernetes-validations": [
                    cel(
                        "self.all(p, self.exists_one(q, q == p))",
                        "bridge.ports must not list an interface twice",
                    )
                ],
            },
            "podNetwork": _pod_network(),
        },
        required=["name"],
    )


def _interface() -> Schema:
    address = obj(
        "An address on the session interface (ip addr add ADDRESS [peer PEER]).",
        {
            "address": string(
                "Local address, with an optional prefix length (198.51.100.1 or"
                " 198.51.100.1/24); without one it is a host address (/32, /128).",
                49,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.IP_OPT_PREFIX),
                            "address must be an IP address with an optional prefix length of"
                            " its family, e.g. 198.51.100.1/32 or 2001:db8::1/128",
                        )
                    ]
                },
            ),
            "peer": string(
                "The far end's address for a point-to-point link (ip addr add ... peer PEER).",
                49,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.IP_OPT_PREFIX),
                            "peer must be an IP address with an optional prefix length of its"
                            " family, e.g. 198.51.100.2",
                        )
                    ]
                },
            ),
        },
        required=["address"],
        **{
            "x-kubernetes-validations": [
                cel(
                    "!has(self.peer) || self.address.contains(':') == self.peer.contains(':')",
                    "peer must be of the same address family as address",
                    ".peer",
                )
            ]
        },
    )
    vlan = obj(
        "A VLAN sub-interface on the session interface (the seed's l2tpeth0.5), usually bridged"
        " with a host VLAN interface (the seed's brvlan5 example).",
        {
            "id": integer("The 802.1Q VLAN id.", 1, 4094),
            "name": ifname(
                "The VLAN interface's name; default <session interface>.<id>, e.g. l2tpeth0.5.",
                "vlans[].name",
            ),
            "bridge": _bridge("the VLAN interface"),
        },
        required=["id"],
    )
    return obj(
        "How the session's network interface is set up (ip link set / ip addr add).",
        {
            "up": boolean("Set the interface administratively up. Default true.", True),
            "mtu": integer(
                "Interface MTU. Default: what the kernel computes from the encapsulation"
                " overhead and the underlay route's MTU (1446 for UDP over IPv4 on a 1500"
                " underlay). A larger value makes full-size frames fragment the outer packet.",
                68,
                65535,
            ),
            "ipv6AddrGenMode": {
                "type": "string",
                "description": "How the kernel makes the interface's IPv6 link-local address"
                " (ip link set dev X addrgenmode MODE): eui64 (the kernel's default, from the"
                " MAC address), random, or none (no IPv6 link-local address and none of the"
                " IPv6 autoconfiguration and neighbour discovery that comes with it). Default:"
                " none for a session that is a bridge port (interface.bridge: a bridge port"
                " needs no IPv6 of its own, as systemd-networkd's LinkLocalAddressing=no for"
                " bridge ports), else the kernel's own (eui64 unless the node's"
                " net.ipv6.conf.default.addr_gen_mode says otherwise), as with ip. Set before the"
                " interface goes up; a change on an interface already up applies to addresses"
                " made from then on.",
                "enum": ["eui64", "none", "random"],
            },
            "qdisc": {
                "type": "string",
                "description": "The interface's root queueing discipline (tc qdisc replace dev X"
                " root KIND): noqueue (no queue: the smallest and fastest), pfifo_fast or"
                " fq_codel. Default: the kernel's (net.core.default_qdisc, usually fq_codel,"
                " about half of an interface's kernel memory), left as the kernel makes it.",
                "enum": ["noqueue", "pfifo_fast", "fq_codel"],
            },
            "addresses": {
                "type": "array",
                "description": "Addresses to assign, e.g. the seed's"
                " `ip addr add 10.42.1.1 peer 10.42.1.2`. Leave empty for a bridged session.",
                "maxItems": MAX_IFACES,
                "items": address,
                "x-kubernetes-validations": [
                    cel(
                        "self.all(a, self.exists_one(b, b.address == a.address))",
                        "interface.addresses must not list an address twice",
                    )
                ],
            },
            "bridge": _bridge("the session interface"),
            "vlans": {
                "type": "array",
                "description": "VLAN sub-interfaces over the session, each bridged separately.",
                "maxItems": MAX_IFACES,
                "items": vlan,
                "x-kubernetes-validations": [
                    cel(
                        "self.all(v, self.exists_one(w, w.id == v.id))",
                        "interface.vlans must not list a VLAN id twice",
                    )
                ],
            },
        },
    )


def session_spec() -> Schema:
    return obj(
        "An L2TPv3 Ethernet session (pseudowire) in a tunnel; the equivalent of"
        " `ip l2tp add session` plus the interface's set-up. Changing an id, a cookie, l2specType"
        " or interfaceName makes the agent replace the session (a short interruption);"
        " sequencing and everything under interface change in place.",
        {
            "tunnelRef": string(
                "Name of the L2TPTunnel this session lives in; the session is programmed on that"
                " tunnel's node. Immutable.",
                253,
                minLength=1,
                **{
                    "x-kubernetes-validations": [
                        immutable(
                            "spec.tunnelRef",
                            "a session cannot move to another tunnel; create a new session",
                        )
                    ]
                },
            ),
            "nodeName": string(
                "The tunnel's node. Optional: filled in from the tunnel by the operator, so"
                " that each node's agent can select its sessions server-side. Must equal the"
                " tunnel's nodeName. Immutable once set.",
                253,
                minLength=1,
                **{
                    "x-kubernetes-validations": [
                        immutable("spec.nodeName", "it follows the tunnel, which cannot move")
                    ]
                },
            ),
            "sessionID": u32_id(
                "This end's session id (ip l2tp session_id); must equal the peer's"
                " peerSessionID. Unique per tunnel, and per node when any tunnel using it has"
                " IP encapsulation."
            ),
            "peerSessionID": u32_id(
                "The peer's session id (ip l2tp peer_session_id); must equal the peer's sessionID."
            ),
            "interfaceName": ifname(
                "Name of the session's network interface (ip l2tp name). Default: the kernel's"
                " l2tpethN; the actual name is in status.interfaceName.",
                "spec.interfaceName",
            ),
            "cookie": string(
                "Cookie sent in every data packet (ip l2tp cookie): 8 or 16 hex digits (4 or 8"
                " bytes), e.g. 014d3636deadbeef. Must equal the peer's peerCookie. Default: none.",
                16,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.COOKIE),
                            "spec.cookie must be 8 or 16 hex digits (4 or 8 bytes),"
                            " e.g. 014d3636deadbeef",
                        )
                    ]
                },
            ),
            "peerCookie": string(
                "Cookie expected in every received packet (ip l2tp peer_cookie): 8 or 16 hex"
                " digits. Must equal the peer's cookie; packets without it are discarded.",
                16,
                **{
                    "x-kubernetes-validations": [
                        cel(
                            matches(patterns.COOKIE),
                            "spec.peerCookie must be 8 or 16 hex digits (4 or 8 bytes),"
                            " e.g. 014d3636deadbeef",
                        )
                    ]
                },
            ),
            "l2specType": string(
                "Layer-2-specific sublayer (ip l2tp l2spec_type): default (RFC 3931's 4-byte"
                " header, Linux's default) or none (the default of some vendors, e.g. Cisco)."
                " Must match the peer.",
                7,
                enum=["default", "none"],
                default="default",
            ),
            "sequencing": string(
                "Sequence numbers (ip l2tp seq): none (default), send, recv (drop out-of-order"
                " and unnumbered packets) or both. Needs l2specType default.",
                4,
                enum=["none", "send", "recv", "both"],
                default="none",
            ),
            "offset": integer(
                "Accepted for compatibility with ip l2tp's offset; current kernels ignore it"
                " (the agent reports it as ignored).",
                0,
                65535,
                default=0,
            ),
            "peerOffset": integer(
                "Accepted for compatibility with ip l2tp's peer_offset; current kernels ignore"
                " it (the agent reports it as ignored).",
                0,
                65535,
                default=0,
            ),
            "interface": _interface(),
        },
        required=["tunnelRef", "sessionID", "peerSessionID"],
        **{
            "x-kubernetes-validations": [
                cel(
                    "self.l2specType != 'none' || self.sequencing == 'none'",
                    "spec.sequencing needs l2specType default: with l2specType none the kernel"
                    " has nowhere to carry sequence numbers (recv would drop every packet)."
                    " Set sequencing none, or l2specType default",
                    ".sequencing",
                ),
                cel(
                    "!has(self.interfaceName) || !has(self.interface) || !has(self.interface.vlans)"
                    " || self.interface.vlans.all(v, has(v.name)"
                    " || size(self.interfaceName) + 1 + size(string(v.id)) <= 15)",
                    "the default VLAN interface name <interfaceName>.<id> would exceed 15"
                    " characters: set interface.vlans[].name, or a shorter interfaceName",
                    ".interface.vlans",
                ),
            ]
        },
    )


def _status(extra: dict[str, Schema], conditions: str = "") -> Schema:
    return obj(
        "Written by the agent and the operator.",
        {
            "observedGeneration": integer(
                "The .metadata.generation the status was computed for.", 0, INT64_MAX
            ),
            "conditions": _conditions(conditions),
            **extra,
        },
    )


def _crd(
    kind: str,
    *,
    plural: str,
    short_names: list[str],
    description: str,
    spec: Schema,
    status: Schema,
    columns: list[Schema],
    selectable: list[str],
) -> Schema:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "kube-l2tp"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["l2tp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "selectableFields": [{"jsonPath": p} for p in selectable],
                    "schema": {
                        "openAPIV3Schema": obj(
                            description,
                            {
                                "apiVersion": string("API version: kubel2tp.io/v1alpha1.", 64),
                                "kind": string(f"{kind}.", 64),
                                # nothing but type: the API server forbids more here
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            required=["spec"],
                        )
                    },
                }
            ],
        },
    }


def _col(name: str, path: str, type_: str = "string", priority: int = 0) -> Schema:
    col: Schema = {"name": name, "type": type_, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


READY = '.status.conditions[?(@.type=="Ready")].status'
REASON = '.status.conditions[?(@.type=="Ready")].reason'
PEER = '.status.conditions[?(@.type=="PeerActive")].reason'
PEER_ACTIVE = (
    " `PeerActive` is the peer's liveness, judged from the kernel's packet counters (static"
    " L2TPv3 has no hello): True (reason PeerActive) as soon as packets arrive; False"
    " (PeerSilent) when packets were sent and none arrived for a whole window (the agent's"
    " --peer-silence-window, default 60 s); Unknown before there is evidence (AwaitingTraffic;"
    " an idle session keeps its last verdict) or while the session is not in the kernel"
    " (NotProgrammed). Ready does not depend on it: Ready means programmed, and a silent peer"
    " is usually a problem at the other end."
)
AGE = _col("Age", ".metadata.creationTimestamp", "date")


def tunnel_crd() -> Schema:
    return _crd(
        TUNNEL_KIND,
        plural="l2tptunnels",
        short_names=["l2tpt", "l2tptunnel"],
        description="L2TPTunnel: a static L2TPv3 tunnel between this node and a peer"
        " (ip l2tp add tunnel).",
        spec=tunnel_spec(),
        status=_status(
            {
                "sessions": string("Sessions ready out of declared, e.g. 2/2.", 32),
                "sessionsReady": integer("Sessions in this tunnel that are Ready.", 0, 2**31),
                "sessionsTotal": integer("Sessions declared in this tunnel.", 0, 2**31),
            }
        ),
        columns=[
            _col("Node", ".spec.nodeName"),
            _col("ID", ".spec.tunnelID", "integer"),
            _col("Peer ID", ".spec.peerTunnelID", "integer"),
            _col("Remote", ".spec.remote"),
            _col("Encap", ".spec.encapsulation"),
            _col("Sessions", ".status.sessions"),
            _col("Ready", READY),
            _col("Reason", REASON, priority=1),
            AGE,
        ],
        selectable=[".spec.nodeName"],
    )


def session_crd() -> Schema:
    return _crd(
        SESSION_KIND,
        plural="l2tpsessions",
        short_names=["l2tps", "l2tpsession"],
        description="L2TPSession: an Ethernet pseudowire in an L2TPTunnel"
        " (ip l2tp add session) and the set-up of its interface.",
        spec=session_spec(),
        status=_status(
            {
                "nodeName": string("The node the session is programmed on.", 253),
                "interfaceName": string("The session interface's actual name.", 15),
                "interfaceIndex": integer("The session interface's ifindex.", 0, 2**31),
                "mtu": integer("The session interface's MTU in the kernel.", 0, 65535),
                "ipv6AddrGenMode": string(
                    "The session interface's IPv6 address generation mode in the kernel"
                    " (eui64, none, stable_secret, random).",
                    16,
                ),
                "qdisc": string(
                    "The session interface's root qdisc in the kernel (noop while it is down).",
                    16,
                ),
                "ignored": {
                    "type": "array",
                    "description": "Fields accepted for compatibility that the kernel ignores.",
                    "maxItems": 8,
                    "items": string("A field path and why it is ignored.", 256),
                },
            },
            conditions=PEER_ACTIVE,
        ),
        columns=[
            _col("Tunnel", ".spec.tunnelRef"),
            _col("Node", ".spec.nodeName"),
            _col("ID", ".spec.sessionID", "integer"),
            _col("Peer ID", ".spec.peerSessionID", "integer"),
            _col("Interface", ".status.interfaceName"),
            _col("MTU", ".status.mtu", "integer"),
            _col("Ready", READY),
            _col("Peer", PEER),
            _col("Reason", REASON, priority=1),
            AGE,
        ],
        selectable=[".spec.nodeName", ".spec.tunnelRef"],
    )


def all_crds() -> dict[str, Schema]:
    """File name in crds/ -> CRD."""
    return {"l2tptunnels.yaml": tunnel_crd(), "l2tpsessions.yaml": session_crd()}


def dump(crd: Schema) -> str:
    header = "# Generated by `make crds` from operator/kube_l2tp/api/crd.py. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=False, width=100)
