"""The XFRM netlink codec, without a kernel: layouts, round trips, what is not ours.

The layouts were checked with offsetof() against include/uapi/linux/xfrm.h; the kernel tests
compare what this codec makes with what ``ip xfrm`` makes, byte for byte, in the guest.
"""

from __future__ import annotations

import struct

import pytest

from kube_l2tp.api.model import Tunnel, Udp
from kube_l2tp.core import xfrm
from kube_l2tp.core.xfrm import AF_INET, AF_INET6, Selector
from kube_l2tp.netlink import xfrm as nl
from kube_l2tp.netlink.nlmsg import NetlinkReplyError

SECRET = bytes(range(32))
A = Tunnel("site-a", "node-a", 3000, 4000, "192.0.2.1", "192.0.2.2", "udp", Udp(5000, 6000))
A6 = Tunnel("v6-a", "node-a", 7, 8, "2001:db8::1", "2001:db8::2", "ip")


def _desired(t: Tunnel) -> xfrm.TunnelXfrm:
    return xfrm.desired(t, xfrm.KeyMaterial(SECRET, 1))


def test_selector_layout() -> None:
    sel = Selector(AF_INET, "192.0.2.1", "192.0.2.2", 17, 5000, 6000)
    raw = nl.pack_selector(sel)
    assert len(raw) == nl.SELECTOR_LEN
    assert raw[:4] == bytes([192, 0, 2, 2]) and raw[16:20] == bytes([192, 0, 2, 1])  # daddr first
    assert raw[32:40] == struct.pack(">HHHH", 6000, 0xFFFF, 5000, 0xFFFF)  # network byte order
    assert raw[40:45] == struct.pack("=HBBB", AF_INET, 32, 32, 17)
    assert nl.unpack_selector(raw) == sel


@pytest.mark.parametrize("tunnel", [A, A6])
def test_sa_round_trip(tunnel: Tunnel) -> None:
    for state in _desired(tunnel).states:
        body = nl.sa_body(state.config)
        raw = nl.parse_sa(body)
        assert raw.observed is not None
        assert raw.observed.config == state.config
        assert (raw.family, raw.dst, raw.spi, raw.proto) == (
            state.config.family,
            state.config.dst,
            state.config.spi,
            50,
        )
        assert xfrm.owned(raw.reqid)


def test_sa_layout() -> None:
    sa = _desired(A).states[0].config
    body = nl.sa_body(sa)
    info = body[: nl.USERSA_INFO_LEN]
    assert info[56:60] == bytes([192, 0, 2, 1])  # id.daddr: inbound, so this end
    assert info[72:76] == struct.pack(">I", sa.spi)  # __be32
    assert info[76] == 50  # IPPROTO_ESP
    assert info[96:128] == b"\xff" * 32  # byte and packet limits: XFRM_INF, as ip sets them
    assert struct.unpack_from("=IHBB", info, 208) == (0xB0000BB8, AF_INET, 0, 32)
    length, kind = struct.unpack_from("=HH", body, nl.USERSA_INFO_LEN)
    assert kind == nl.XFRMA_ALG_AEAD and length == 4 + 72 + 36
    name, key_bits, icv_bits = struct.unpack_from("=64sII", body, nl.USERSA_INFO_LEN + 4)
    assert (name.rstrip(b"\0"), key_bits, icv_bits) == (b"rfc4106(gcm(aes))", 288, 128)


def test_sa_counters_are_read() -> None:
    sa = _desired(A).states[0].config
    body = bytearray(nl.sa_body(sa))
    struct.pack_into("=4Q", body, 160, 1234, 5, 1_700_000_000, 0)  # curlft
    struct.pack_into("=3I", body, 192, 1, 2, 3)  # stats
    raw = nl.parse_sa(bytes(body))
    assert raw.observed is not None
    assert raw.observed.add_time == 1_700_000_000
    assert raw.observed.counters == xfrm.SaCounters(1234, 5, 1, 2, 3)


def test_policy_round_trip_and_layout() -> None:
    for tunnel in (A, A6):
        for pol in _desired(tunnel).policies:
            body = nl.policy_body(pol.config)
            assert len(body) == nl.USERPOLICY_INFO_LEN + 4 + nl.USER_TMPL_LEN
            raw = nl.parse_policy(body)
            assert raw.config == pol.config
            assert xfrm.owned(raw.reqid)
    tmpl = nl.policy_body(_desired(A).policies[0].config)[nl.USERPOLICY_INFO_LEN + 4 :]
    assert struct.unpack_from("=IBBBxIII", tmpl, 44) == (
        0xB0000BB8,
        0,
        0,
        0,
        0xFFFFFFFF,
        0xFFFFFFFF,
        0xFFFFFFFF,
    )


def test_ids_for_delete() -> None:
    assert nl.sa_id_body(AF_INET6, "2001:db8::1", 0x1234) == (
        bytes.fromhex("20010db8000000000000000000000001")
        + b"\x00\x00\x12\x34"
        + struct.pack("=HB", AF_INET6, 50)
        + b"\0"
    )
    sel = _desired(A).policies[0].config.selector
    body = nl.policy_id_body("out", sel)
    assert len(body) == nl.USERPOLICY_ID_LEN and body[60] == nl.XFRM_POLICY_OUT


def test_foreign_shapes_are_listed_but_never_taken_for_ours() -> None:
    sa = _desired(A).states[0].config
    body = bytearray(nl.sa_body(sa))
    body[214] = 1  # tunnel mode
    assert nl.parse_sa(bytes(body)).observed is None
    body = bytearray(nl.sa_body(sa))
    body[42] = 24  # a /24 selector: not one flow
    assert nl.parse_sa(bytes(body)).observed is None
    pol = _desired(A).policies[0].config
    no_tmpl = nl.policy_body(pol)[: nl.USERPOLICY_INFO_LEN]
    assert nl.parse_policy(no_tmpl) == nl.RawPolicy(1, 0, pol.priority, 0, None, pol.selector)
    assert nl.parse_policy(no_tmpl).ident == pol.ident  # still a place ours could not take
    two_tmpls = nl.policy_body(pol)
    two_tmpls = (
        two_tmpls[: nl.USERPOLICY_INFO_LEN]
        + struct.pack("=HH", 4 + 128, 5)
        + (two_tmpls[nl.USERPOLICY_INFO_LEN + 4 :] * 2)
    )
    assert nl.parse_policy(two_tmpls).config is None


def _msg(mtype: int, payload: bytes, flags: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, 1, 0) + payload


def test_dump_decoding_and_errors() -> None:
    d = _desired(A)
    chunk = b"".join(_msg(nl.XFRM_MSG_NEWSA, nl.sa_body(s.config), 2) for s in d.states)
    done = _msg(3, struct.pack("=i", 0))
    sas = nl.decode_sas([chunk, done])
    assert [s.observed.config for s in sas if s.observed] == [s.config for s in d.states]
    pols = nl.decode_policies([_msg(nl.XFRM_MSG_NEWPOLICY, nl.policy_body(d.policies[0].config))])
    assert [p.config for p in pols] == [d.policies[0].config]
    err = _msg(2, struct.pack("=i", -17) + _msg(nl.XFRM_MSG_NEWSA, b""))
    with pytest.raises(NetlinkReplyError) as e:
        list(nl.iter_messages([err]))
    assert e.value.errno == 17


def test_no_key_in_reprs() -> None:
    sa = _desired(A).states[0].config
    raw = nl.parse_sa(nl.sa_body(sa))
    assert sa.key.hex() not in repr(raw) and repr(sa.key) not in repr(raw)
