"""The hostile-input corpus: manifests a careless or hostile user can write, each with the
verdict and a fragment of the message that `kube-l2tp validate` must give.

Each case is one file (its bytes are built here, so that cases of megabytes or of thousands of
levels need not be stored). ``level`` says who refuses it, for tests that hold other
implementations to the same verdicts (the real API server: tests/apiserver):

- ``read``: the reader (kubectl refuses it too before sending it, or reads it differently
  from YAML 1.2);
- ``schema``: the API server itself (the CRD's schema and CEL rules, ObjectMeta's checks, the
  kind's existence);
- ``set``: the rules the admission webhook adds (cross-object, and what the kernel refuses);
- ``valid``: accepted everywhere (``render`` must then print safe commands).

tests/unit/test_hostile.py runs every case through the CLI in a child process with a memory and
CPU limit: no traceback, no signal, no hang, and the verdict and message given here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    level: str  # read | schema | set | valid
    message: str  # a fragment of the output ("" for a valid case)
    suffix: str = ".yaml"

    @property
    def valid(self) -> bool:
        return self.level == "valid"


def tunnel(name: str = "t1", **spec: Any) -> dict[str, Any]:
    base = {
        "nodeName": "node-a",
        "tunnelID": 3000,
        "peerTunnelID": 4000,
        "local": "192.0.2.1",
        "remote": "192.0.2.2",
        "udp": {"sourcePort": 5000, "destinationPort": 6000},
    }
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPTunnel",
        "metadata": {"name": name},
        "spec": {**base, **spec},
    }


def session(name: str = "s1", tunnel_ref: str = "t1", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kubel2tp.io/v1alpha1",
        "kind": "L2TPSession",
        "metadata": {"name": name},
        "spec": {"tunnelRef": tunnel_ref, "sessionID": 1000, "peerSessionID": 2000, **spec},
    }


def docs(*objs: dict[str, Any]) -> bytes:
    return yaml.safe_dump_all(objs, sort_keys=False, allow_unicode=True).encode()


TUNNEL_TEXT = """\
apiVersion: kubel2tp.io/v1alpha1
kind: L2TPTunnel
metadata:
  name: t1
spec:
  nodeName: node-a
  tunnelID: {tunnel_id}
  peerTunnelID: 4000
  local: 192.0.2.1
  remote: 192.0.2.2
  udp: {{sourcePort: 5000, destinationPort: 6000}}
"""


def tunnel_text(tunnel_id: str = "3000", extra: str = "") -> bytes:
    return (TUNNEL_TEXT.format(tunnel_id=tunnel_id) + extra).encode()


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


BOMB = "".join(
    [
        'x0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n',
        *(f"x{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)),
    ]
)


def bomb_at(where: str) -> bytes:
    """A billion laughs whose last alias is used as ``where`` of a tunnel."""
    head = "bombs:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines())
    body = {
        "name": tunnel_text().decode().replace("  name: t1", "  name: *a9"),
        "annotations": tunnel_text()
        .decode()
        .replace("  name: t1", "  name: t1\n  annotations: {a: *a9}"),
        "addresses": "",
    }[where]
    if where == "addresses":
        text = (
            docs(tunnel()).decode()
            + "---\n"
            + head
            + yaml.safe_dump(session()).replace(
                "  tunnelRef: t1", "  tunnelRef: t1\n  interface: {addresses: *a9}"
            )
        )
        return text.encode()
    return (head + body).encode()


PAIR_A = tunnel("a", local="2001:db8::1", remote="2001:db8::2", tunnelID=10, peerTunnelID=20)
PAIR_B = tunnel(
    "b",
    nodeName="node-b",
    local="2001:DB8:0:0::2",
    remote="2001:db8:0::1",
    tunnelID=20,
    peerTunnelID=10,
    udp={"sourcePort": 6000, "destinationPort": 5000},
)


def _cases() -> list[Case]:
    v6 = {"local": "2001:db8::1", "remote": "2001:db8::2"}
    return [
        # --- 1. crashes: nesting, huge integers, kind List, non-string keys
        Case(
            "deep-flow-5000",
            b"[" * 5000 + b"]" * 5000,
            "read",
            "brackets nested more than 1000 deep",
        ),
        Case(
            "deep-flow-100000", b"[" * 100000 + b"]" * 100000, "read", "brackets nested more than"
        ),
        Case("deep-json-100000", b"[" * 100000 + b"]" * 100000, "read", "brackets nested", ".json"),
        Case(
            "deep-json-500",
            json.dumps(nested(500)).encode(),
            "read",
            "nested more than 64 levels deep",
            ".json",
        ),
        Case(
            "deep-spec-block-300",
            docs(tunnel(udp=nested(300))),
            "read",
            "nested more than 64 levels deep",
        ),
        Case(
            "deep-labels-flow-200",
            tunnel_text().replace(
                b"  name: t1", b"  name: t1\n  labels: " + b"{a: " * 200 + b"x" + b"}" * 200
            ),
            "read",
            "nested more than 64 levels deep",
        ),
        Case("huge-int-5000-digits", tunnel_text("9" * 5000), "read", "an integer of 5000 digits"),
        Case(
            "huge-int-json",
            json.dumps(tunnel()).replace("3000", "9" * 5000).encode(),
            "read",
            "not valid JSON",
            ".json",
        ),
        Case("int-beyond-64-bits", tunnel_text("9" * 20), "read", "beyond 64 bits"),
        Case(
            "list-null-and-scalar-items",
            b"apiVersion: v1\nkind: List\nitems: [null, 3, text]\n",
            "read",
            "not a Kubernetes object (a mapping): got None",
        ),
        Case(
            "list-items-null",
            b"apiVersion: v1\nkind: List\nitems:\n",
            "read",
            "items must be a list",
        ),
        Case(
            "list-items-scalar",
            b"apiVersion: v1\nkind: List\nitems: 5\n",
            "read",
            "items must be a list",
        ),
        Case(
            "key-int-top",
            b"1: a\n" + tunnel_text(),
            "read",
            "mapping key 1 is not a string: quote it",
        ),
        Case(
            "key-int-in-labels",
            tunnel_text().replace(b"  name: t1", b"  name: t1\n  labels: {1: a}"),
            "read",
            "mapping key 1 is not a string",
        ),
        Case(
            "key-bool-in-spec",
            tunnel_text().replace(b"  nodeName: node-a", b"  true: x\n  nodeName: node-a"),
            "read",
            "mapping key True is not a string",
        ),
        Case("key-null", b"? \n: x\n", "read", "mapping key None is not a string"),
        Case(
            "key-collection",
            b"? [a, b]\n: x\n",
            "read",
            "a mapping key must be a string, not a collection",
        ),
        Case(
            "json-top-scalar", b"42", "read", "not a Kubernetes object (a mapping): got 42", ".json"
        ),
        Case(
            "not-utf8",
            b"kind: L2TPTunnel\nmetadata: {name: \xff\xfe}\n",
            "read",
            "not UTF-8 text (byte 34)",
        ),
        Case("recursive-alias", b"a: &x [*x]\n", "read", "alias *x refers to no complete anchor"),
        Case("unknown-tag", tunnel_text("!!python/object:os.system 1"), "read", "unsupported tag"),
        # --- 2. resource exhaustion: alias bombs, huge values, file size
        Case(
            "alias-bomb-name", bomb_at("name"), "read", "aliases expand to more than 100000 values"
        ),
        Case(
            "alias-bomb-annotations",
            bomb_at("annotations"),
            "read",
            "aliases expand to more than 100000 values",
        ),
        Case(
            "alias-bomb-addresses",
            bomb_at("addresses"),
            "read",
            "aliases expand to more than 100000 values",
        ),
        Case(
            "huge-value-7mb-name",
            tunnel_text().replace(b"name: t1", b"name: " + b"a" * 7_000_000),
            "schema",
            "metadata.name: must be a DNS subdomain",
        ),
        Case(
            "huge-value-7mb-remote",
            tunnel_text().replace(b"remote: 192.0.2.2", b"remote: " + b"9" * 7_000_000 + b"x"),
            "schema",
            "spec.remote: must be at most 45 characters long",
        ),
        Case(
            "file-over-8mib",
            tunnel_text() + b"#" * (8 * 1024 * 1024),
            "read",
            "larger than 8 MiB: refused",
        ),
        # --- 3. accepted before, but the kernel refuses it or it cannot work
        Case(
            "ipv4-mapped-endpoint",
            docs(tunnel(local="::ffff:192.0.2.1", remote="::ffff:192.0.2.2")),
            "schema",
            "must not be an IPv4-mapped IPv6 address",
        ),
        Case(
            "ipv4-mapped-endpoint-hex",
            docs(tunnel(local="0:0:0:0:0:ffff:c000:201", remote="2001:db8::2")),
            "schema",
            "spec.local must not be an IPv4-mapped IPv6 address",
        ),
        Case(
            "ifname-16-bytes-8-chars",
            docs(tunnel(), session(interfaceName="é" * 8)),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        Case(
            "ifname-u00a0",
            docs(tunnel(), session(interfaceName="pw\u00a0x")),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        Case(
            "ifname-byte-a0-in-letter",
            docs(tunnel(), session(interfaceName="pwà")),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        Case(
            "ifname-nul",
            docs(tunnel(), session(interfaceName="pw\x00x")),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        Case(
            "ifname-tab",
            docs(tunnel(), session(interfaceName="pw\tx")),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        Case(
            "bridge-port-u2028",
            docs(tunnel(), session(interface={"bridge": {"name": "br0", "ports": ["eth\u20280"]}})),
            "schema",
            "bridge.ports[] must be a Linux interface name",
        ),
        Case(
            "v6-multicast-address",
            docs(tunnel(**v6), session(interface={"addresses": [{"address": "ff02::1/128"}]})),
            "set",
            "is multicast",
        ),
        Case(
            "v6-loopback-address",
            docs(tunnel(**v6), session(interface={"addresses": [{"address": "::1"}]})),
            "set",
            "is the loopback address",
        ),
        Case(
            "v6-unspecified-address",
            docs(tunnel(**v6), session(interface={"addresses": [{"address": "::/64"}]})),
            "set",
            "is the unspecified address",
        ),
        Case(
            "address-twice-spelled-differently",
            docs(
                tunnel(),
                session(
                    interface={
                        "addresses": [
                            {"address": "2001:db8::1/64"},
                            {"address": "2001:DB8:0::1/128"},
                        ]
                    }
                ),
            ),
            "set",
            "the same value spelled differently",
        ),
        Case(
            "v6-address-mtu-1200",
            docs(
                tunnel(),
                session(interface={"mtu": 1200, "addresses": [{"address": "2001:db8::1/64"}]}),
            ),
            "set",
            "below IPv6's minimum of 1280",
        ),
        Case(
            "l2tpeth0-beside-unnamed",
            docs(
                tunnel(),
                session("s1", interfaceName="l2tpeth0"),
                session("s2", sessionID=1001, peerSessionID=2001),
            ),
            "set",
            "is a name the kernel gives sessions left unnamed",
        ),
        Case(
            "pair-by-address-value-cookie-mismatch",
            docs(
                PAIR_A,
                PAIR_B,
                session("sa", "a", cookie="0123456789abcdef"),
                session("sb", "b", sessionID=2000, peerSessionID=1000),
            ),
            "set",
            "the peer discards every frame",
        ),
        # --- 4. accepted before, but kubectl or the API server refuses it (and the reverse)
        Case(
            "duplicate-key",
            tunnel_text(extra="  tunnelID: 9999\n").replace(b"  udp:", b"  tunnelID: 1\n  udp:"),
            "read",
            "duplicate key 'tunnelID'",
        ),
        Case(
            "duplicate-key-json",
            json.dumps(tunnel())
            .replace('"tunnelID": 3000', '"tunnelID": 3000, "tunnelID": 1')
            .encode(),
            "read",
            "duplicate key 'tunnelID'",
            ".json",
        ),
        Case(
            "name-trailing-newline",
            docs(tunnel("t1\n")),
            "schema",
            "metadata.name: must be a DNS subdomain",
        ),
        Case(
            "label-key-invalid",
            docs({**tunnel(), "metadata": {"name": "t1", "labels": {"-bad": "x"}}}),
            "schema",
            "metadata.labels['-bad']: invalid key",
        ),
        Case(
            "label-value-invalid",
            docs({**tunnel(), "metadata": {"name": "t1", "labels": {"a": "x y"}}}),
            "schema",
            "a label value must be empty",
        ),
        Case(
            "label-value-int",
            docs({**tunnel(), "metadata": {"name": "t1", "labels": {"a": 5}}}),
            "schema",
            "must be a string, got integer 5",
        ),
        Case(
            "label-nan",
            tunnel_text().replace(b"  name: t1", b"  name: t1\n  labels: {a: .nan}"),
            "read",
            "(infinity or NaN) has no JSON form",
        ),
        Case(
            "annotations-300k",
            docs({**tunnel(), "metadata": {"name": "t1", "annotations": {"a": "x" * 300_000}}}),
            "schema",
            "the API server allows 262144",
        ),
        Case(
            "metadata-unknown-field",
            docs({**tunnel(), "metadata": {"name": "t1", "nmae": "x"}}),
            "schema",
            "metadata.nmae: unknown field",
        ),
        Case(
            "kind-missing",
            docs({k: v for k, v in tunnel().items() if k != "kind"}),
            "read",
            "kind is missing",
        ),
        Case(
            "kind-misspelled",
            docs({**tunnel(), "kind": "L2TPTunel"}),
            "schema",
            "did you mean L2TPTunnel?",
        ),
        Case(
            "sexagesimal-is-a-string",
            tunnel_text("17:01"),
            "schema",
            "must be of type integer, got string '17:01'",
        ),
        Case(
            "sexagesimal-node-name-valid",
            tunnel_text().replace(b"nodeName: node-a", b"nodeName: 17:01"),
            "valid",
            "",
        ),
        Case(
            "yaml11-bool-yes",
            tunnel_text().replace(b"nodeName: node-a", b"nodeName: yes"),
            "read",
            "quote it ('yes')",
        ),
        Case("yaml11-octal", tunnel_text("0755"), "read", "read differently by YAML 1.1"),
        Case("yaml11-underscore", tunnel_text("3_000"), "read", "read differently by YAML 1.1"),
        Case("float-3000.0-valid", tunnel_text("3000.0"), "valid", ""),
        Case("float-1e3-valid", tunnel_text("1e3"), "valid", ""),
        Case(
            "float-3000.5",
            tunnel_text("3000.5"),
            "schema",
            "spec.tunnelID: must be of type integer, got number 3000.5",
        ),
        Case(
            "json-float-3000.0-valid",
            json.dumps(tunnel()).replace("3000", "3000.0").encode(),
            "valid",
            "",
            ".json",
        ),
        Case(
            "json-bom-valid", b"\xef\xbb\xbf" + json.dumps(tunnel()).encode(), "valid", "", ".json"
        ),
        Case("yaml-bom-valid", b"\xef\xbb\xbf" + tunnel_text(), "valid", ""),
        Case(
            "json-nan",
            json.dumps(tunnel()).replace("3000", "NaN").encode(),
            "read",
            "NaN is not a JSON number",
            ".json",
        ),
        Case("infinity", tunnel_text(".inf"), "read", "(infinity or NaN) has no JSON form"),
        # --- 5. offline and API server must agree: ASCII-only names (RE2's \s is not Rust's)
        Case(
            "vlan-default-name-bytes",
            docs(tunnel(), session(interfaceName="pwéé", interface={"vlans": [{"id": 4094}]})),
            "schema",
            "spec.interfaceName must be a Linux interface name",
        ),
        # --- 6. valid names that a shell or ip -batch would read as something else
        Case(
            "render-hostile-names-valid",
            docs(
                tunnel(nodeName="node;reboot"),
                session(
                    interfaceName="$(reboot)",
                    interface={
                        "bridge": {"name": "a|b&c", "ports": ["`id`>x"]},
                        "vlans": [{"id": 5, "name": "mtu", "bridge": {"name": "o'q\"#"}}],
                    },
                ),
            ),
            "valid",
            "",
        ),
        Case(
            "render-newline-in-node-valid",
            docs(tunnel(nodeName="a\nip link del dev eth0")),
            "valid",
            "",
        ),
        # encryption: where the secret is must be absolute and single; its path never printed
        Case(
            "encryption-relative-key-file",
            docs(tunnel(encryption={"keyFile": "../../etc/shadow"})),
            "schema",
            "keyFile must be an absolute path",
        ),
        Case(
            "encryption-no-secret",
            docs(tunnel(encryption={"algorithm": "aes128gcm16"})),
            "schema",
            "encryption needs exactly one of secretRef",
        ),
        Case(
            "encryption-shell-in-key-file-valid",
            docs(tunnel(encryption={"keyFile": "/k;$(reboot)`id`\nip link del dev eth0"})),
            "valid",
            "",
        ),
    ]


CASES = _cases()
CASES += [
    Case(
        "json-lone-surrogate",
        json.dumps(tunnel()).replace('"t1"', '"t1", "annotations": {"a": "\\ud800"}').encode(),
        "read",
        "holds a lone UTF-16 surrogate",
        ".json",
    ),
    Case(
        "yaml-lone-surrogate",
        tunnel_text().replace(b"name: t1", b'name: "\\ud800"'),
        "read",
        "found invalid Unicode character escape code",
    ),
    Case(
        "terminal-escape-in-name",
        docs(tunnel("t1\x1b[2J\x1b[31mok")),
        "schema",
        "L2TPTunnel/t1\\x1b[2J\\x1b[31mok: metadata.name: must be a DNS subdomain",
    ),
]
CASES += [
    Case(
        "values-over-the-bound",
        b"[" + b"0," * 400_000 + b"0]\n",
        "read",
        "more than 400000 values in one file",
    ),
    Case(
        "alias-across-documents",
        b"base: &spec {nodeName: node-a, tunnelID: 3000, peerTunnelID: 4000, local: 192.0.2.1,"
        b" remote: 192.0.2.2, udp: {sourcePort: 5000, destinationPort: 6000}}\n"
        b"---\n" + tunnel_text().split(b"spec:")[0] + b"spec: {<<: *spec}\n",
        "read",
        "alias *spec refers to no complete anchor",
    ),
]
CASES += [
    Case(
        "merge-key-override-valid",
        tunnel_text().split(b"spec:")[0]
        + b"spec:\n  <<: {nodeName: node-a, tunnelID: 1, peerTunnelID: 4000, local: 192.0.2.1,"
        b" remote: 192.0.2.2, udp: {sourcePort: 5000, destinationPort: 6000}}\n"
        b"  tunnelID: 3000\n",
        "valid",
        "",
    ),
]
# Pods on the wire (spec.interface.bridge.podNetwork): the refusals the issue names.
_PODS = {"namespace": "default", "name": "wire"}
CASES += [
    Case(
        "pod-network-without-bridge",
        docs(tunnel(), session(interface={"podNetwork": _PODS})),
        "schema",
        "spec.interface.podNetwork: unknown field",
    ),
    Case(
        "pod-network-range-wrong-family",
        docs(
            tunnel(),
            session(
                interface={
                    "bridge": {
                        "name": "br0",
                        "podNetwork": {
                            **_PODS,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [
                                    {"subnet": "203.0.113.0/24", "rangeStart": "2001:db8::1"}
                                ],
                            },
                        },
                    }
                }
            ),
        ),
        "schema",
        "ranges[0].rangeStart: rangeStart must be of the subnet's address family",
    ),
    Case(
        "pod-network-range-holds-session-address",
        docs(
            tunnel(),
            session(
                interface={
                    "addresses": [{"address": "203.0.113.1/24"}],
                    "bridge": {
                        "name": "br0",
                        "podNetwork": {
                            **_PODS,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [{"subnet": "203.0.113.0/24"}],
                            },
                        },
                    },
                }
            ),
        ),
        "set",
        "hands out 203.0.113.1, the session's own address (spec.interface.addresses[0].address)",
    ),
]


def write(directory: Path) -> dict[str, Path]:
    """Every case as a file in ``directory`` (name -> path), for a test that feeds them to
    another implementation (kubectl and a real API server) and compares verdicts by level."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for case in CASES:
        path = directory / f"{case.name}{case.suffix}"
        path.write_bytes(case.content)
        out[case.name] = path
    return out
