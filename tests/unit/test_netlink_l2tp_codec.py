"""The L2TP genl codec without a kernel: encoding against what `ip l2tp` sends, decoding of dumps
and events captured in the VM (data/l2tp_captures.json, made by data/capture_l2tp.sh)."""

from __future__ import annotations

import errno
import json
import socket
import struct
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

import pytest

from kube_l2tp.core.state import (
    STATS_FIELDS,
    KernelError,
    ObservedSession,
    ObservedTunnel,
    Outcome,
    SessionConfig,
    SessionCounters,
    Stats,
    TunnelConfig,
    TunnelCounters,
)
from kube_l2tp.netlink import nlmsg
from kube_l2tp.netlink.l2tp import L2tp, L2tpEvent, L2tpEvents, fastpath, port
from kube_l2tp.netlink.l2tp.attrs import L2tpAttr, L2tpCmd
from kube_l2tp.netlink.l2tp.codec import (
    Attr,
    iter_messages,
    pack_request,
    session_create_attrs,
    session_modify_attrs,
    to_kernel_error,
    tunnel_create_attrs,
)
from kube_l2tp.netlink.l2tp.events import parse_events
from kube_l2tp.netlink.l2tp.fastpath import (
    decode_session_counters,
    decode_sessions,
    decode_tunnel_counters,
    decode_tunnels,
)
from kube_l2tp.netlink.nlmsg import NetlinkReplyError
from support.oracles_l2tp import (
    decode_sessions_pyroute2,
    decode_tunnels_pyroute2,
    pack_request_pyroute2,
)

A, C = L2tpAttr, L2tpCmd
L2TP_CMD_SESSION_CREATE = C.L2TP_CMD_SESSION_CREATE
L2TP_CMD_SESSION_GET = C.L2TP_CMD_SESSION_GET
L2TP_CMD_TUNNEL_CREATE = C.L2TP_CMD_TUNNEL_CREATE
L2TP_CMD_TUNNEL_GET = C.L2TP_CMD_TUNNEL_GET

CAPTURES = json.loads((Path(__file__).parent / "data" / "l2tp_captures.json").read_text())
FAMILY = 0x1C  # any id: the family is resolved at run time

SEED_TUNNEL = TunnelConfig(3000, 4000, "udp", "192.0.2.1", "192.0.2.2", 5000, 6000)
SEED_SESSION = SessionConfig(
    3000,
    1000,
    2000,
    cookie=bytes.fromhex("014d3636deadbeef"),
    peer_cookie=bytes.fromhex("01020304"),
    ifname="l2tpeth0",
)

# The configs that data/capture_l2tp.sh created with `ip l2tp add`, by capture name.
CAPTURED_CONFIGS: dict[str, TunnelConfig | SessionConfig] = {
    "tunnel_udp4": SEED_TUNNEL,
    "tunnel_udp4_csum": TunnelConfig(
        3001, 4001, "udp", "192.0.2.1", "192.0.2.2", 5001, 6001, udp_csum=True
    ),
    "tunnel_udp6": TunnelConfig(3002, 4002, "udp", "2001:db8::1", "2001:db8::2", 5002, 6002),
    "tunnel_udp6_tx_off": TunnelConfig(
        3003, 4003, "udp", "2001:db8::1", "2001:db8::2", 5003, 6003, udp6_csum_tx=False
    ),
    "tunnel_udp6_rx_off": TunnelConfig(
        3004, 4004, "udp", "2001:db8::1", "2001:db8::2", 5004, 6004, udp6_csum_rx=False
    ),
    "tunnel_ip4": TunnelConfig(3005, 4005, "ip", "192.0.2.1", "192.0.2.2"),
    "tunnel_ip6": TunnelConfig(3006, 4006, "ip", "2001:db8::1", "2001:db8::2"),
    "session_seed": SEED_SESSION,
    "session_none_both": SessionConfig(
        3001, 1001, 2001, l2spec_type="none", send_seq=True, recv_seq=True
    ),
    "session_recv": SessionConfig(
        3002, 1002, 2002, recv_seq=True, cookie=bytes.fromhex("0a0b0c0d")
    ),
    "session_ip6": SessionConfig(
        3006, 1006, 2006, ifname="l2tp-ip6", peer_cookie=bytes.fromhex("1112131415161718")
    ),
}

# ip l2tp add session also sends these; SESSION_CREATE ignores both.
IGNORED_BY_SESSION_CREATE = {10: "PEER_CONN_ID", 6: "L2SPEC_LEN"}


def chunks(name: str) -> list[bytes]:
    return [bytes.fromhex(c) for c in CAPTURES[name]]


def attr_list(payload: bytes) -> list[tuple[int, bytes]]:
    """(type, payload) in order, for a genl message body starting with the genl header."""
    out, offset = [], 4
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        out.append((kind, payload[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return out


def names(attrs: list[Attr]) -> list[str]:
    return [attr.name.removeprefix("L2TP_ATTR_") for attr, _ in attrs]


# --- encoding -------------------------------------------------------------------------------


def test_seed_tunnel_attributes() -> None:
    assert tunnel_create_attrs(SEED_TUNNEL) == [
        (A.L2TP_ATTR_CONN_ID, 3000),
        (A.L2TP_ATTR_PEER_CONN_ID, 4000),
        (A.L2TP_ATTR_PROTO_VERSION, 3),
        (A.L2TP_ATTR_ENCAP_TYPE, 0),
        (A.L2TP_ATTR_IP_SADDR, "192.0.2.1"),
        (A.L2TP_ATTR_IP_DADDR, "192.0.2.2"),
        (A.L2TP_ATTR_UDP_SPORT, 5000),
        (A.L2TP_ATTR_UDP_DPORT, 6000),
    ]


def test_seed_session_attributes_carry_cookies_as_raw_bytes() -> None:
    assert session_create_attrs(SEED_SESSION) == [
        (A.L2TP_ATTR_CONN_ID, 3000),
        (A.L2TP_ATTR_SESSION_ID, 1000),
        (A.L2TP_ATTR_PEER_SESSION_ID, 2000),
        (A.L2TP_ATTR_PW_TYPE, 5),
        (A.L2TP_ATTR_L2SPEC_TYPE, 1),
        (A.L2TP_ATTR_COOKIE, b"\x01\x4d\x36\x36\xde\xad\xbe\xef"),
        (A.L2TP_ATTR_PEER_COOKIE, b"\x01\x02\x03\x04"),
        (A.L2TP_ATTR_IFNAME, "l2tpeth0"),
    ]
    wire = pack_request(
        FAMILY, L2TP_CMD_SESSION_CREATE, session_create_attrs(SEED_SESSION), seq=1, flags=5
    )
    assert (15, bytes.fromhex("014d3636deadbeef")) in attr_list(wire[16:])
    assert (8, b"l2tpeth0\0") in attr_list(wire[16:])


def test_udp_csum_is_sent_only_when_on_because_the_kernel_reads_presence() -> None:
    assert "UDP_CSUM" not in names(tunnel_create_attrs(SEED_TUNNEL))
    on = TunnelConfig(1, 2, "udp", "192.0.2.1", "192.0.2.2", 1, 2, udp_csum=True)
    assert (A.L2TP_ATTR_UDP_CSUM, 1) in tunnel_create_attrs(on)
    # IPv4 only: an IPv6 tunnel never carries it, nor the IPv6 flags an IPv4 one
    v6 = TunnelConfig(1, 2, "udp", "2001:db8::1", "2001:db8::2", 1, 2, udp_csum=True)
    assert "UDP_CSUM" not in names(tunnel_create_attrs(v6))
    v4_off = TunnelConfig(
        1, 2, "udp", "192.0.2.1", "192.0.2.2", 1, 2, udp6_csum_tx=False, udp6_csum_rx=False
    )
    assert not {"UDP_ZERO_CSUM6_TX", "UDP_ZERO_CSUM6_RX"} & set(names(tunnel_create_attrs(v4_off)))


@pytest.mark.parametrize(
    ("tx", "rx", "flags"),
    [
        (True, True, []),
        (False, True, ["UDP_ZERO_CSUM6_TX"]),
        (True, False, ["UDP_ZERO_CSUM6_RX"]),
        (False, False, ["UDP_ZERO_CSUM6_TX", "UDP_ZERO_CSUM6_RX"]),
    ],
)
def test_udp6_zero_checksum_flags_mean_off_and_are_not_crossed(
    tx: bool, rx: bool, flags: list[str]
) -> None:
    cfg = TunnelConfig(
        1, 2, "udp", "2001:db8::1", "2001:db8::2", 1, 2, udp6_csum_tx=tx, udp6_csum_rx=rx
    )
    sent = [n for n in names(tunnel_create_attrs(cfg)) if n.startswith("UDP_ZERO")]
    assert sent == flags
    wire = pack_request(FAMILY, L2TP_CMD_TUNNEL_CREATE, tunnel_create_attrs(cfg), seq=1, flags=5)
    zero = [(kind, payload) for kind, payload in attr_list(wire[16:]) if kind in (33, 34)]
    assert zero == [(33 if f.endswith("TX") else 34, b"") for f in flags]  # flags: no payload


def test_ip_encapsulation_sends_no_udp_attributes() -> None:
    cfg = TunnelConfig(1, 2, "ip", "2001:db8::1", "2001:db8::2", udp6_csum_tx=False)
    assert names(tunnel_create_attrs(cfg)) == [
        "CONN_ID",
        "PEER_CONN_ID",
        "PROTO_VERSION",
        "ENCAP_TYPE",
        "IP6_SADDR",
        "IP6_DADDR",
    ]
    assert (A.L2TP_ATTR_ENCAP_TYPE, 1) in tunnel_create_attrs(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        TunnelConfig(1, 2, "udp", "192.0.2.1", "2001:db8::2", 1, 2),
        TunnelConfig(1, 2, "udp", "192.0.2.1", "192.0.2.2"),
    ],
)
def test_inconsistent_tunnels_are_refused_before_the_kernel(cfg: TunnelConfig) -> None:
    with pytest.raises(ValueError, match=r"family|udp_sport"):
        tunnel_create_attrs(cfg)


@pytest.mark.parametrize(
    "cfg",
    [
        SessionConfig(1, 2, 3, cookie=b"\x01\x02"),
        SessionConfig(1, 2, 3, peer_cookie=b"0123456789"),
        SessionConfig(1, 2, 3, ifname="a-name-that-is-too-long"),
    ],
)
def test_bad_cookie_or_name_is_refused_before_the_kernel(cfg: SessionConfig) -> None:
    with pytest.raises(ValueError, match=r"cookie|interface name"):
        session_create_attrs(cfg)


def test_session_l2spec_none_and_sequencing() -> None:
    cfg = SessionConfig(1, 2, 3, l2spec_type="none", send_seq=True, recv_seq=False)
    attrs = session_create_attrs(cfg)
    assert (A.L2TP_ATTR_L2SPEC_TYPE, 0) in attrs
    assert (A.L2TP_ATTR_SEND_SEQ, 1) in attrs
    assert "RECV_SEQ" not in names(attrs)
    assert "IFNAME" not in names(attrs)  # the kernel picks l2tpethN


def test_modify_session_always_sends_both_sequencing_flags() -> None:
    assert session_modify_attrs(7, 8, send_seq=False, recv_seq=True) == [
        (A.L2TP_ATTR_CONN_ID, 7),
        (A.L2TP_ATTR_SESSION_ID, 8),
        (A.L2TP_ATTR_RECV_SEQ, 1),
        (A.L2TP_ATTR_SEND_SEQ, 0),
    ]


@pytest.mark.parametrize("name", sorted(CAPTURED_CONFIGS))
def test_struct_packing_equals_pyroute2_encoding(name: str) -> None:
    cfg = CAPTURED_CONFIGS[name]
    if isinstance(cfg, TunnelConfig):
        cmd, attrs = L2TP_CMD_TUNNEL_CREATE, tunnel_create_attrs(cfg)
    else:
        cmd, attrs = L2TP_CMD_SESSION_CREATE, session_create_attrs(cfg)
    ours = pack_request(FAMILY, cmd, attrs, seq=77, flags=5)
    assert ours == pack_request_pyroute2(FAMILY, cmd, attrs, seq=77, flags=5)
    assert struct.unpack_from("=IHHII", ours) == (len(ours), FAMILY, 5, 77, 0)


@pytest.mark.parametrize("name", sorted(CAPTURES["requests"]))
def test_requests_match_what_ip_l2tp_sends(name: str) -> None:
    """Byte for byte for tunnels; for sessions minus the two attributes the kernel ignores."""
    ip_payload = bytes.fromhex(CAPTURES["requests"][name]["payload"])
    cfg = CAPTURED_CONFIGS[name]
    if isinstance(cfg, TunnelConfig):
        ours = pack_request(
            FAMILY, L2TP_CMD_TUNNEL_CREATE, tunnel_create_attrs(cfg), seq=1, flags=5
        )
        assert ours[16:] == ip_payload, CAPTURES["requests"][name]["command"]
    else:
        ours = pack_request(
            FAMILY, L2TP_CMD_SESSION_CREATE, session_create_attrs(cfg), seq=1, flags=5
        )
        expected = [a for a in attr_list(ip_payload) if a[0] not in IGNORED_BY_SESSION_CREATE]
        assert ours[16:20] == ip_payload[:4]  # cmd, version
        assert attr_list(ours[16:]) == expected, CAPTURES["requests"][name]["command"]


# --- decoding -------------------------------------------------------------------------------


def test_tunnel_dump_decodes_to_the_configs_that_made_it() -> None:
    observed = {t.config.tunnel_id: t for t in decode_tunnels(chunks("tunnel_dump"))}
    expected = {c.tunnel_id: c for c in CAPTURED_CONFIGS.values() if isinstance(c, TunnelConfig)}
    assert {tid: t.config for tid, t in observed.items()} == expected
    # the seed's tunnel carried the pings of the capture
    assert observed[3000].stats.tx_packets > 0
    assert observed[3000].stats.rx_packets > 0


def test_session_dump_decodes_cookies_names_sequencing_and_counters() -> None:
    observed = {s.config.session_id: s for s in decode_sessions(chunks("session_dump"))}
    seed = observed[1000]
    assert seed.config == SEED_SESSION
    assert observed[1001].config == SessionConfig(
        3001, 1001, 2001, l2spec_type="default", send_seq=True, recv_seq=True, ifname="l2tpeth1"
    )  # the kernel does not report the L2-specific sublayer: "none" reads back as "default"
    assert observed[1002].config.cookie == bytes.fromhex("0a0b0c0d")
    assert observed[1002].config.peer_cookie == b""  # ip l2tp show prints a stale one here
    assert (observed[1002].config.send_seq, observed[1002].config.recv_seq) == (False, True)
    assert observed[1006].config.peer_cookie == bytes.fromhex("1112131415161718")
    assert observed[1006].config.ifname == "l2tp-ip6"
    # counters against the interface's own, read in the same capture
    sysfs = CAPTURES["l2tpeth0_statistics"]
    assert seed.stats.rx_packets == sysfs["rx_packets"] > 0
    assert seed.stats.tx_packets == sysfs["tx_packets"] > 0
    assert seed.stats.rx_bytes == sysfs["rx_bytes"]
    assert observed[1001].stats == Stats()


def test_stats_attributes_10_and_11_are_read() -> None:
    """The kernel puts RX_COOKIE_DISCARDS (10) between 6 and 7 and RX_INVALID (11) last."""
    body = b"".join(struct.pack("=HHQ", 12, kind, kind * 100) for kind in (1, 6, 10, 7, 8, 11))
    body += struct.pack("=HH", 4, 9)  # a pad attribute, as nla_put_u64_64bit may add
    stats = fastpath._stats(body)
    assert (stats.rx_cookie_discards, stats.rx_invalid) == (1000, 1100)
    assert (stats.tx_packets, stats.rx_seq_discards, stats.rx_oos_packets) == (100, 600, 700)


def test_stats_in_the_kernels_own_layout_take_the_one_unpack_path() -> None:
    order = (1, 2, 3, 4, 5, 6, 10, 7, 8, 11)  # l2tp_nl_session_send in 6.1
    body = b"".join(struct.pack("=HHQ", 12, kind, kind * 100) for kind in order)
    assert len(body) == fastpath._STATS_VALUES.size
    assert fastpath._stats(body) == Stats(
        tx_packets=100,
        tx_bytes=200,
        tx_errors=300,
        rx_packets=400,
        rx_bytes=500,
        rx_errors=800,
        rx_seq_discards=600,
        rx_oos_packets=700,
        rx_cookie_discards=1000,
        rx_invalid=1100,
    )
    swapped = b"".join(struct.pack("=HHQ", 12, kind, kind * 100) for kind in reversed(order))
    assert fastpath._stats(swapped) == fastpath._stats(body)  # the generic walk, same answer


def test_sessions_in_another_attribute_order_take_the_generic_walk() -> None:
    """The one-unpack head is a shortcut for 6.1's order, not an assumption."""
    (seed, *_) = [c for c in chunks("session_dump") if len(c) > 40]
    length = struct.unpack_from("=I", seed)[0]
    attrs = attr_list(seed[16:length])
    body = b"".join(
        struct.pack("=HH", 4 + len(p), kind) + p + b"\0" * (-len(p) % 4)
        for kind, p in reversed(attrs)
    )
    message = struct.pack("=IHHII", 20 + len(body), FAMILY, 2, 1, 0) + seed[16:20] + body
    done = struct.pack("=IHHIIi", 20, nlmsg.NLMSG_DONE, nlmsg.NLM_F_MULTI, 1, 0, 0)
    reordered = decode_sessions([message + done])
    assert reordered == decode_sessions_pyroute2([message + done])
    assert reordered == decode_sessions([seed])[:1]


@pytest.mark.parametrize("dump", ["tunnel_dump", "session_dump"])
def test_struct_parser_agrees_with_pyroute2_on_captured_bytes(dump: str) -> None:
    if dump == "tunnel_dump":
        assert decode_tunnels(chunks(dump)) == decode_tunnels_pyroute2(chunks(dump))
    else:
        assert decode_sessions(chunks(dump)) == decode_sessions_pyroute2(chunks(dump))


def synthetic_session_dump(count: int, per_chunk: int) -> list[bytes]:
    """``count`` copies of the captured seed session with new ids, spread over many chunks."""
    template = next(
        c for c in chunks("session_dump") if struct.unpack_from("=H", c, 4)[0] != nlmsg.NLMSG_DONE
    )
    length = struct.unpack_from("=I", template)[0]
    message = bytearray(template[:length])
    # SESSION_ID is the second attribute: offset 20 (headers) + 8 (CONN_ID) + 4 (its header)
    assert struct.unpack_from("=HH", message, 28) == (8, 11)
    out, chunk = [], bytearray()
    for i in range(count):
        struct.pack_into("=I", message, 32, 10_000 + i)
        chunk += message
        if (i + 1) % per_chunk == 0:
            out.append(bytes(chunk))
            chunk = bytearray()
    done = struct.pack("=IHHIIi", 20, nlmsg.NLMSG_DONE, nlmsg.NLM_F_MULTI, 1, 0, 0)
    out.append(bytes(chunk) + done)
    return out


def test_parsers_agree_on_a_large_multi_chunk_dump() -> None:
    dump = synthetic_session_dump(300, per_chunk=70)
    fast = decode_sessions(dump)
    assert [s.config.session_id for s in fast] == list(range(10_000, 10_300))
    assert fast == decode_sessions_pyroute2(dump)


def test_events_name_the_command_and_the_ids() -> None:
    events = [e for c in CAPTURES["events"] for e in parse_events(bytes.fromhex(c))]
    assert events == [
        L2tpEvent("TUNNEL_CREATE", 3900, None),
        L2tpEvent("SESSION_CREATE", 3900, 1900),
        L2tpEvent("SESSION_DELETE", 3900, 1900),
        L2tpEvent("TUNNEL_DELETE", 3900, None),
    ]


def test_drain_reads_what_is_queued_without_blocking() -> None:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    with L2tpEvents.on_socket(ours) as events, kernel:
        assert events.drain() == []
        for chunk in CAPTURES["events"]:
            kernel.send(bytes.fromhex(chunk))
        assert [e.cmd for e in events.drain()] == [
            "TUNNEL_CREATE",
            "SESSION_CREATE",
            "SESSION_DELETE",
            "TUNNEL_DELETE",
        ]
        assert events.drain() == []


class OverflowingSocket:
    """recv() as a netlink socket answers after its buffer ran over, then when empty."""

    def __init__(self) -> None:
        self.answers: list[bytes | OSError] = [
            OSError(errno.ENOBUFS, "No buffer space available"),
            bytes.fromhex(CAPTURES["events"][0]),
            BlockingIOError(errno.EAGAIN, "empty"),
        ]

    def recv(self, size: int) -> bytes:
        answer = self.answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer


def test_lost_events_are_reported_as_overflow() -> None:
    events = L2tpEvents.on_socket(OverflowingSocket())  # type: ignore[arg-type]
    assert events.drain() == [
        L2tpEvent("OVERFLOW", 0, None),
        L2tpEvent("TUNNEL_CREATE", 3900, None),
    ]


def nlmsgerr(seq: int, code: int, message: str = "") -> bytes:
    """An NLMSG_ERROR as the kernel sends it with extack on: the echoed request header, TLVs."""
    request = struct.pack("=IHHII", 16, FAMILY, 5, seq, 0)
    tlvs = b""
    if message:
        text = message.encode() + b"\0"
        tlvs = struct.pack("=HH", 4 + len(text), 1) + text + b"\0" * (-len(text) % 4)
    flags = 0x100 | (0x200 if tlvs else 0)  # capped, with TLVs
    body = struct.pack("=i", -code) + request + tlvs
    return struct.pack("=IHHII", 16 + len(body), nlmsg.NLMSG_ERROR, flags, seq, 0) + body


def test_an_error_in_a_reply_raises_with_errno_and_kernel_text() -> None:
    with pytest.raises(NetlinkReplyError) as info:
        list(iter_messages([nlmsgerr(3, errno.EINVAL, "Attribute failed policy validation")]))
    assert info.value.errno == errno.EINVAL
    assert info.value.message == "Attribute failed policy validation"
    assert list(iter_messages([nlmsgerr(3, 0)])) == []  # an ack


@pytest.mark.parametrize(
    ("operation", "code", "outcome", "text"),
    [
        ("create_tunnel", errno.EEXIST, Outcome.EXISTS, "tunnel id 3000 already exists"),
        (
            "create_tunnel",
            errno.EADDRINUSE,
            Outcome.ADDRESS_IN_USE,
            "local 192.0.2.1:5000 already used by another tunnel or socket",
        ),
        (
            "create_tunnel",
            errno.EADDRNOTAVAIL,
            Outcome.ADDRESS_NOT_AVAILABLE,
            "local address 192.0.2.1 is not assigned to any interface on this host",
        ),
        ("create_tunnel", errno.ENETUNREACH, Outcome.NETWORK_UNREACHABLE, "no route to remote"),
        ("create_tunnel", errno.EPROTONOSUPPORT, Outcome.NOT_SUPPORTED, "modprobe l2tp_eth"),
        ("create_session", errno.ENODEV, Outcome.NOT_FOUND, "tunnel 3000 does not exist"),
        ("create_session", errno.EEXIST, Outcome.EXISTS, "session id 1000 already exists"),
        ("delete_session", errno.ENODEV, Outcome.NOT_FOUND, "session 1000 in tunnel 3000"),
        ("create_session", errno.EPERM, Outcome.PERMISSION, "CAP_NET_ADMIN"),
    ],
)
def test_errors_say_what_to_do(operation: str, code: int, outcome: Outcome, text: str) -> None:
    subject = {
        "tunnel_id": 3000,
        "session_id": 1000,
        "local": "192.0.2.1",
        "remote": "192.0.2.2",
        "udp_sport": 5000,
    }
    err = to_kernel_error(operation, code, subject)
    assert (err.operation, err.errno, err.outcome) == (operation, code, outcome)
    assert text in err.detail


# --- the socket loop, against a fake kernel -------------------------------------------------


@pytest.fixture
def fake_kernel() -> Iterator[tuple[L2tp, socket.socket]]:
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with L2tp.on_socket(ours, FAMILY) as l2tp, kernel:
        yield l2tp, kernel


def with_seq(chunk: bytes, seq: int) -> bytes:
    """Rewrite the sequence number of every message in a captured chunk."""
    out, offset = bytearray(chunk), 0
    while offset + 16 <= len(out):
        struct.pack_into("=I", out, offset + 8, seq)
        offset += (struct.unpack_from("=I", out, offset)[0] + 3) & ~3
    return bytes(out)


def test_dump_skips_stale_replies_and_reads_to_done(
    fake_kernel: tuple[L2tp, socket.socket],
) -> None:
    l2tp, kernel = fake_kernel
    seq = l2tp._seq + 1
    kernel.send(with_seq(chunks("tunnel_dump")[0], seq - 1))  # left over from an earlier request
    for chunk in chunks("session_dump"):
        kernel.send(with_seq(chunk, seq))
    sessions = l2tp.dump_sessions()
    request = kernel.recv(4096)
    assert struct.unpack_from("=IHHII", request)[1:4] == (FAMILY, 0x301, seq)  # REQUEST|DUMP
    assert request[16] == L2TP_CMD_SESSION_GET
    assert [s.config.session_id for s in sessions] == [1000, 1001, 1002, 1006]
    assert all(isinstance(s, ObservedSession) for s in sessions)


def test_tunnel_dump_through_the_socket(fake_kernel: tuple[L2tp, socket.socket]) -> None:
    l2tp, kernel = fake_kernel
    for chunk in chunks("tunnel_dump"):
        kernel.send(with_seq(chunk, l2tp._seq + 1))
    assert len(l2tp.dump_tunnels()) == 7
    assert kernel.recv(4096)[16] == L2TP_CMD_TUNNEL_GET


def test_a_failed_create_raises_kernel_error(fake_kernel: tuple[L2tp, socket.socket]) -> None:
    l2tp, kernel = fake_kernel
    kernel.send(nlmsgerr(l2tp._seq + 1, errno.EADDRINUSE))
    with pytest.raises(KernelError) as info:
        l2tp.create_tunnel(SEED_TUNNEL)
    assert info.value.outcome is Outcome.ADDRESS_IN_USE
    assert "192.0.2.1:5000" in info.value.detail
    request = kernel.recv(4096)
    assert request[16:] == bytes.fromhex(CAPTURES["requests"]["tunnel_udp4"]["payload"])


def session_reply(seq: int, tunnel_id: int, session_id: int) -> bytes:
    """The kernel's answer to SESSION_GET: the session's message, then the ack."""
    attrs = [
        (A.L2TP_ATTR_CONN_ID, tunnel_id),
        (A.L2TP_ATTR_SESSION_ID, session_id),
        (A.L2TP_ATTR_PEER_SESSION_ID, session_id + 1000),
        (A.L2TP_ATTR_IFNAME, "l2tpeth0"),
    ]
    message = pack_request(FAMILY, C.L2TP_CMD_SESSION_GET, attrs, seq=seq, flags=0)
    return message + nlmsgerr(seq, 0)


def test_an_acked_command_returns(fake_kernel: tuple[L2tp, socket.socket]) -> None:
    l2tp, kernel = fake_kernel
    kernel.send(session_reply(l2tp._seq + 1, 3000, 1000))  # the session is there...
    kernel.send(nlmsgerr(l2tp._seq + 2, 0))  # ...and the modify is acked
    l2tp.modify_session(3000, 1000, send_seq=True, recv_seq=True)
    get, modify = kernel.recv(4096), kernel.recv(4096)
    assert (get[16], modify[16]) == (C.L2TP_CMD_SESSION_GET, C.L2TP_CMD_SESSION_MODIFY)
    assert struct.unpack_from("=H", modify, 6)[0] == 0x5  # REQUEST|ACK


@pytest.mark.parametrize("operation", ["delete_session", "modify_session"])
def test_a_session_operation_never_reaches_another_tunnels_session(
    fake_kernel: tuple[L2tp, socket.socket], operation: str
) -> None:
    """Since 6.10 a v3 session is looked up by its id alone when that id is unique: asked for
    (3000, 1000) after tunnel 3000's session went, the kernel answers with tunnel 3001's
    session 1000, and would delete or modify it. The answer's tunnel is checked first."""
    l2tp, kernel = fake_kernel
    kernel.send(session_reply(l2tp._seq + 1, 3001, 1000))
    call = {
        "delete_session": lambda: l2tp.delete_session(3000, 1000),
        "modify_session": lambda: l2tp.modify_session(3000, 1000, send_seq=True, recv_seq=False),
    }[operation]
    with pytest.raises(KernelError) as info:
        call()
    assert info.value.outcome is Outcome.NOT_FOUND
    assert kernel.recv(4096)[16] == C.L2TP_CMD_SESSION_GET
    kernel.setblocking(False)
    with pytest.raises(BlockingIOError):  # nothing else was sent: no delete, no modify
        kernel.recv(4096)


def test_socket_errors_and_refused_input_are_kernel_errors_of_that_call(
    fake_kernel: tuple[L2tp, socket.socket],
) -> None:
    """ENOBUFS/EMSGSIZE on the L2TP socket and an interface name over 15 bytes (ten non-ASCII
    letters are 20 bytes) ended the agent's loop; now each fails only its own call."""
    l2tp, _ = fake_kernel
    with pytest.raises(KernelError) as info:
        l2tp.create_session(SessionConfig(3000, 1000, 2000, ifname="ääääääääää"))
    assert info.value.outcome is Outcome.INVALID
    assert "20 bytes" in info.value.detail and "interfaceName" in info.value.detail

    class Full:
        def send(self, data: bytes) -> int:
            raise OSError(errno.ENOBUFS, "No buffer space available")

        def close(self) -> None:
            pass

    with L2tp.on_socket(Full(), FAMILY) as full:  # type: ignore[arg-type]
        with pytest.raises(KernelError) as info:
            full.dump_tunnels()
        assert info.value.outcome is Outcome.BUSY
        with pytest.raises(KernelError) as info:
            full.create_tunnel(SEED_TUNNEL)
        assert info.value.outcome is Outcome.BUSY


def test_delete_tunnel_can_wait_until_the_kernel_is_done(
    fake_kernel: tuple[L2tp, socket.socket],
) -> None:
    l2tp, kernel = fake_kernel
    seq = l2tp._seq
    kernel.send(nlmsgerr(seq + 1, 0))  # the delete's ack
    kernel.send(with_seq(chunks("tunnel_dump")[0][:224], seq + 2))  # still there...
    kernel.send(nlmsgerr(seq + 2, 0))
    kernel.send(nlmsgerr(seq + 3, errno.ENODEV))  # ...and now gone
    l2tp.delete_tunnel(3000, wait=5)
    requests = [kernel.recv(4096) for _ in range(3)]
    assert [r[16] for r in requests] == [C.L2TP_CMD_TUNNEL_DELETE] + [L2TP_CMD_TUNNEL_GET] * 2
    assert all(struct.unpack_from("=H", r, 6)[0] == 0x5 for r in requests)  # not dumps


def test_delete_tunnel_that_the_kernel_does_not_finish_is_busy(
    fake_kernel: tuple[L2tp, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    l2tp, kernel = fake_kernel
    kernel.send(nlmsgerr(l2tp._seq + 1, 0))
    monkeypatch.setattr(l2tp, "tunnel_exists", lambda tunnel_id: True)
    with pytest.raises(KernelError) as info:
        l2tp.delete_tunnel(3000, wait=0.05)
    assert info.value.outcome is Outcome.BUSY
    assert "still being deleted" in info.value.detail


@pytest.mark.parametrize("code", [errno.ENOENT, errno.EOPNOTSUPP])
def test_no_l2tp_in_the_kernel_is_not_supported(code: int) -> None:
    """No "l2tp" genl family (module missing, kernel without L2TP): opening says so and how to
    fix it. Fed the kernel's answer, so it holds on any host; the kernel suite unloads the
    modules for the real thing (tests/kernel/test_zz_kernel_modules.py)."""
    ours, kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with ours, kernel:
        kernel.send(nlmsgerr(1, code))
        with pytest.raises(KernelError) as info:
            port.resolve_family(ours)
    assert info.value.outcome is Outcome.NOT_SUPPORTED
    assert "modprobe l2tp_eth" in info.value.detail


# --- counters only, for a scrape ------------------------------------------------------------


def as_counters(
    tunnels: list[ObservedTunnel], sessions: list[ObservedSession]
) -> tuple[list[TunnelCounters], list[SessionCounters]]:
    """What the counters decoders must read: the full decoders' ids, names and stats."""
    return (
        [(t.config.tunnel_id, astuple(t.stats)) for t in tunnels],
        [(s.config.tunnel_id, s.config.session_id, s.config.ifname, astuple(s.stats))
         for s in sessions],
    )  # fmt: skip


def test_counters_decoders_read_what_the_full_decoders_read_on_captured_dumps() -> None:
    tunnels, sessions = as_counters(
        decode_tunnels(chunks("tunnel_dump")), decode_sessions(chunks("session_dump"))
    )
    assert decode_tunnel_counters(chunks("tunnel_dump")) == tunnels
    assert decode_session_counters(chunks("session_dump")) == sessions
    assert [t[0] for t in tunnels] == [3000, 3001, 3002, 3003, 3004, 3005, 3006]
    assert sessions[0][:3] == (3000, 1000, "l2tpeth0")
    assert sessions[0][3][STATS_FIELDS.index("rx_packets")] > 0  # the capture's pings


def with_counters(chunk: bytes, first: int) -> bytes:
    """A captured chunk whose stats nests carry distinct values from ``first`` on."""
    out, offset = bytearray(chunk), 0
    while offset + 16 <= len(out):
        length = struct.unpack_from("=I", out, offset)[0]
        pos = offset + 20
        while pos + 4 <= offset + length:
            alen, kind = struct.unpack_from("=HH", out, pos)
            if kind == A.L2TP_ATTR_STATS:
                for inner in range(pos + 4, pos + alen, 12):
                    struct.pack_into("=Q", out, inner + 4, first)
                    first += 2**40 + 1  # beyond 32 bits, and beyond a double's 53 at the end
            pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return bytes(out)


def test_counters_are_read_at_their_own_attribute_numbers() -> None:
    """Every counter distinct, so reading the kernel's order (10 between 6 and 7) wrongly shows."""
    tunnel_dump = [with_counters(c, 1) for c in chunks("tunnel_dump")]
    session_dump = [with_counters(c, 2**62) for c in chunks("session_dump")]
    tunnels, sessions = as_counters(decode_tunnels(tunnel_dump), decode_sessions(session_dump))
    assert decode_tunnel_counters(tunnel_dump) == tunnels
    assert decode_session_counters(session_dump) == sessions
    assert len({v for _, c in tunnels for v in c}) == 10 * len(tunnels)
    assert max(v for *_, c in sessions for v in c) > 2**53


def test_counters_of_a_large_multi_chunk_dump() -> None:
    dump = synthetic_session_dump(300, per_chunk=70)
    assert decode_session_counters(dump) == as_counters([], decode_sessions(dump))[1]


def reencode(message: bytes, attrs: list[tuple[int, bytes]]) -> bytes:
    """A SESSION_GET/TUNNEL_GET message of ``message``'s headers with ``attrs`` as its body."""
    body = b"".join(
        struct.pack("=HH", 4 + len(p), kind) + p + b"\0" * (-len(p) % 4) for kind, p in attrs
    )
    head = struct.pack("=IHHII", 20 + len(body), FAMILY, 2, 1, 0) + message[16:20]
    return head + body + struct.pack("=IHHIIi", 20, nlmsg.NLMSG_DONE, nlmsg.NLM_F_MULTI, 1, 0, 0)


def first_message(name: str) -> bytes:
    chunk = chunks(name)[0]
    return chunk[: struct.unpack_from("=I", chunk)[0]]


def test_counters_in_another_layout_take_the_generic_walk() -> None:
    """The fixed places are 6.1's layout, not an assumption: other orders, a pad attribute in
    the stats, or no interface name are read by walking the attributes."""
    for name, decode in (
        ("tunnel_dump", decode_tunnel_counters),
        ("session_dump", decode_session_counters),
    ):
        message = with_counters(first_message(name), 7)
        attrs = attr_list(message[16:])
        expected = decode([message])
        assert decode([reencode(message, attrs)]) == expected  # the same layout, the fast path
        assert decode([reencode(message, attrs[::-1])]) == expected
        stats = dict(attrs)[A.L2TP_ATTR_STATS]
        padded = [(k, struct.pack("=HH", 4, 9) + stats if k == A.L2TP_ATTR_STATS else p)
                  for k, p in attrs]  # fmt: skip
        assert decode([reencode(message, padded)]) == expected
    message = first_message("session_dump")
    nameless = [(k, p) for k, p in attr_list(message[16:]) if k != A.L2TP_ATTR_IFNAME]
    ((tid, sid, ifname, _),) = decode_session_counters([reencode(message, nameless)])
    assert (tid, sid, ifname) == (3000, 1000, None)


def test_dump_counters_makes_one_tunnel_dump_and_one_session_dump(
    fake_kernel: tuple[L2tp, socket.socket],
) -> None:
    l2tp, kernel = fake_kernel
    seq = l2tp._seq
    for chunk in chunks("tunnel_dump"):
        kernel.send(with_seq(chunk, seq + 1))
    for chunk in chunks("session_dump"):
        kernel.send(with_seq(chunk, seq + 2))
    tunnels, sessions = l2tp.dump_counters()
    assert [kernel.recv(4096)[16] for _ in range(2)] == [L2TP_CMD_TUNNEL_GET, L2TP_CMD_SESSION_GET]
    assert (tunnels, sessions) == as_counters(
        decode_tunnels(chunks("tunnel_dump")), decode_sessions(chunks("session_dump"))
    )


def test_the_kernels_own_layout_never_takes_the_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*_: object) -> None:
        raise AssertionError("generic walk taken")

    expected = (decode_tunnel_counters(chunks("tunnel_dump")),
                decode_session_counters(chunks("session_dump")))  # fmt: skip
    monkeypatch.setattr(fastpath, "walk_attrs", walk)
    monkeypatch.setattr(fastpath, "session_at", walk)
    assert decode_tunnel_counters(chunks("tunnel_dump")) == expected[0]
    assert decode_session_counters(chunks("session_dump")) == expected[1]
    assert decode_session_counters(synthetic_session_dump(50, per_chunk=20))
