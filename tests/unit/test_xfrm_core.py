"""The encrypted tunnel's pure core: key schedule, SAs and policies, rotation, ESP overhead."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kube_l2tp.api import overhead
from kube_l2tp.api.model import Resources, Tunnel, Udp
from kube_l2tp.core import xfrm

SECRET = bytes(range(32))

A = Tunnel("site-a", "node-a", 3000, 4000, "192.0.2.1", "192.0.2.2", "udp", Udp(5000, 6000))
B = Tunnel("site-b", "node-b", 4000, 3000, "192.0.2.2", "192.0.2.1", "udp", Udp(6000, 5000))
A6 = Tunnel("v6-a", "node-a", 7, 7, "2001:db8::1", "2001:db8::2", "ip")
B6 = Tunnel("v6-b", "node-b", 7, 7, "2001:db8::2", "2001:db8::1", "ip")


# RFC 5869 appendix A, test cases 1 and 3 (SHA-256).
@pytest.mark.parametrize(
    ("ikm", "salt", "info", "okm"),
    [
        (
            b"\x0b" * 22,
            bytes(range(13)),
            bytes(range(0xF0, 0xFA)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
        ),
        (
            b"\x0b" * 22,
            b"",
            b"",
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
        ),
    ],
)
def test_hkdf_rfc5869_vectors(ikm: bytes, salt: bytes, info: bytes, okm: str) -> None:
    assert xfrm.hkdf_sha256(ikm, info, 42, salt=salt).hex() == okm


def _oracle(ikm: bytes, purpose: bytes, alg: str, key_id: int, context: bytes, n: int) -> bytes:
    """The documented schedule, rebuilt here byte by byte with the library alone."""
    info = b"kube-l2tp xfrm v1\0" + purpose + b"\0" + alg.encode() + struct.pack("!H", key_id)
    return HKDF(algorithm=SHA256(), length=n, salt=None, info=info + context).derive(ikm)


def test_derivation_matches_the_documented_schedule() -> None:
    out, _ = xfrm.flows(A)
    # sender's tunnel id, receiver's, family (AF_INET = 2), sender's address, receiver's
    context = struct.pack("!IIB", 3000, 4000, 2) + bytes([192, 0, 2, 1, 192, 0, 2, 2])
    assert out.context() == context
    k = xfrm.derive(SECRET, out, 1, overhead.ESP_AEADS["aes256gcm16"])
    raw = int.from_bytes(_oracle(b"kube-l2tp xfrm v1", b"spi", "aes256gcm16", 1, context, 4), "big")
    assert k.spi == 0x100 + raw % (2**32 - 0x100)
    assert k.key == _oracle(SECRET, b"key", "aes256gcm16", 1, context, 36)


# Fixed vectors: a change of the schedule breaks every deployed peer; it must show here.
def test_derivation_fixed_vectors() -> None:
    out, inn = xfrm.flows(A)
    alg = overhead.ESP_AEADS["aes256gcm16"]
    k_out = xfrm.derive(SECRET, out, 1, alg)
    k_in = xfrm.derive(SECRET, inn, 1, alg)
    assert (k_out.spi, k_out.key.hex()) == VECTOR_OUT
    assert (k_in.spi, k_in.key.hex()) == VECTOR_IN


VECTOR_OUT = (
    0xB28CFB96,
    "f4e8902b90d3d0ec492ed21defe73418b0a6aa18eeefd7b59175cfb6618ad0ddf9ab81ba",
)
VECTOR_IN = (0x69EA8BF2, "8c2193ebf3b1ffb97b7c94c70d07fd5be1de2ca73a42c99a2d6968c6ff8dd12f298323c1")


def test_both_ends_agree_and_directions_differ() -> None:
    for near, far in ((A, B), (A6, B6)):
        a = xfrm.desired(near, xfrm.KeyMaterial(SECRET, 3))
        b = xfrm.desired(far, xfrm.KeyMaterial(SECRET, 3))
        a_by = {s.direction: s.config for s in a.states}
        b_by = {s.direction: s.config for s in b.states}
        # what one end sends, the other receives: same SA, same key
        for x, y in ((a_by["out"], b_by["in"]), (a_by["in"], b_by["out"])):
            assert (x.src, x.dst, x.spi, x.key, x.selector) == (
                y.src,
                y.dst,
                y.spi,
                y.key,
                y.selector,
            )
        assert a_by["out"].key != a_by["in"].key  # never one key (nor nonce space) both ways
        assert a_by["out"].spi != a_by["in"].spi


def test_equal_tunnel_ids_still_give_two_keys() -> None:
    out, inn = xfrm.flows(A6)
    alg = overhead.ESP_AEADS["aes128gcm16"]
    assert xfrm.derive(SECRET, out, 0, alg).key != xfrm.derive(SECRET, inn, 0, alg).key


def test_key_id_algorithm_and_secret_each_change_the_key() -> None:
    out, _ = xfrm.flows(A)
    base = xfrm.derive(SECRET, out, 1, overhead.ESP_AEADS["aes256gcm16"])
    others = [
        xfrm.derive(SECRET, out, 2, overhead.ESP_AEADS["aes256gcm16"]),
        xfrm.derive(SECRET, out, 1, overhead.ESP_AEADS["chacha20poly1305"]),
        xfrm.derive(bytes(32), out, 1, overhead.ESP_AEADS["aes256gcm16"]),
    ]
    assert all(o.key != base.key for o in others)
    # the SPI follows key id and algorithm, not the secret: a wrong secret still meets the SA
    assert [o.spi != base.spi for o in others] == [True, True, False]


@pytest.mark.parametrize(
    ("name", "key_len"), [("aes256gcm16", 36), ("aes128gcm16", 20), ("chacha20poly1305", 36)]
)
def test_key_lengths(name: str, key_len: int) -> None:
    s = xfrm.sa(A, xfrm.KeyMaterial(SECRET, 0, name), "out", 0).config
    assert len(s.key) == key_len
    assert s.icv_bits == 128


def test_bad_input_is_refused_with_a_reason() -> None:
    with pytest.raises(xfrm.XfrmConfigError, match="algorithm 'des'") as e:
        xfrm.desired(A, xfrm.KeyMaterial(SECRET, 0, "des"))
    assert e.value.reason == "UnknownAlgorithm"
    with pytest.raises(xfrm.XfrmConfigError, match="16 bytes; aes256gcm16 needs 32") as e:
        xfrm.desired(A, xfrm.KeyMaterial(bytes(16), 0))
    assert e.value.reason == "InvalidKey"
    with pytest.raises(xfrm.XfrmConfigError, match="keyID 65536"):
        xfrm.desired(A, xfrm.KeyMaterial(SECRET, 65536))
    xfrm.desired(A, xfrm.KeyMaterial(bytes(16), 0, "aes128gcm16"))  # 16 bytes suffice for AES-128


def test_keys_are_never_in_a_repr() -> None:
    d = xfrm.desired(A, xfrm.KeyMaterial(SECRET, 0))
    text = (
        repr(d)
        + repr(xfrm.KeyMaterial(SECRET))
        + repr(xfrm.derive(SECRET, xfrm.flows(A)[0], 0, overhead.ESP_AEADS["aes256gcm16"]))
    )
    for s in (x.config for x in d.states):
        assert s.key.hex() not in text and repr(s.key) not in text
    assert SECRET.hex() not in text and repr(SECRET) not in text


def test_states_and_policies_select_exactly_the_tunnel_flow() -> None:
    d = xfrm.desired(A, xfrm.KeyMaterial(SECRET, 0))
    out_sa = next(s.config for s in d.states if s.direction == "out")
    in_sa = next(s.config for s in d.states if s.direction == "in")
    assert (out_sa.src, out_sa.dst, out_sa.family) == ("192.0.2.1", "192.0.2.2", xfrm.AF_INET)
    assert out_sa.selector == xfrm.Selector(xfrm.AF_INET, "192.0.2.1", "192.0.2.2", 17, 5000, 6000)
    assert in_sa.selector == xfrm.Selector(xfrm.AF_INET, "192.0.2.2", "192.0.2.1", 17, 6000, 5000)
    pol = {p.config.direction: p.config for p in d.policies}
    assert pol["out"].selector == out_sa.selector and pol["in"].selector == in_sa.selector
    assert (pol["out"].tmpl_src, pol["out"].tmpl_dst) == ("192.0.2.1", "192.0.2.2")
    assert (pol["in"].tmpl_src, pol["in"].tmpl_dst) == ("192.0.2.2", "192.0.2.1")
    assert {out_sa.reqid, in_sa.reqid, pol["in"].reqid, pol["out"].reqid} == {0xB0000BB8}
    assert all(s.config.aead_name == "rfc4106(gcm(aes))" for s in d.states)
    assert all(s.config.spi >= 0x100 for s in d.states)
    v6 = xfrm.desired(A6, xfrm.KeyMaterial(SECRET, 0))
    assert {p.config.selector for p in v6.policies} == {
        xfrm.Selector(xfrm.AF_INET6, "2001:db8::1", "2001:db8::2", 115),
        xfrm.Selector(xfrm.AF_INET6, "2001:db8::2", "2001:db8::1", 115),
    }
    assert v6.policies[0].config.selector.prefixlen == 128


def test_ownership_by_reqid_range() -> None:
    assert xfrm.owned(xfrm.reqid(1)) and xfrm.owned(xfrm.reqid(0xFFFFFFFF))
    assert not any(xfrm.owned(r) for r in (0, 1, 16384, 0xA0000000, 0xC0000000))
    t2 = Tunnel("x", "node-a", 3000 + 2**28, 1, "192.0.2.1", "192.0.2.3", "ip")
    assert xfrm.reqid_clashes([A, A6, t2]) == [(A, t2)]


def test_spi_clash_is_found() -> None:
    s = xfrm.desired(A, xfrm.KeyMaterial(SECRET, 0)).states[0]
    other = xfrm.XfrmState("other", "in", 0, dataclasses.replace(s.config, key=bytes(36)))
    assert xfrm.spi_clashes([s, s]) == []  # the same SA twice is not a clash
    assert xfrm.spi_clashes([s, other]) == [(s, other)]


W = 60.0


def test_rotation_steps() -> None:
    r = xfrm.rotation
    # a new tunnel: key 1 both ways at once
    assert r(1, xfrm.Installed(), 0, W) == xfrm.KeySet(frozenset({1}), 1)
    # key 2 asked for at t=100: install inbound 2 first, keep sending with 1
    steady = xfrm.Installed({1: 0.0}, {1: 0.0})
    assert r(2, steady, 100, W) == xfrm.KeySet(frozenset({1, 2}), 1, 160)
    # inbound 2 installed at 101: still sending with 1 during the window
    rot = xfrm.Installed({1: 0.0, 2: 101.0}, {1: 0.0})
    assert r(2, rot, 150, W) == xfrm.KeySet(frozenset({1, 2}), 1, 161)
    # after the window: send with 2, keep accepting 1 for one more window
    assert r(2, rot, 161, W) == xfrm.KeySet(frozenset({1, 2}), 2, 221)
    switched = xfrm.Installed({1: 0.0, 2: 101.0}, {2: 161.0})
    assert r(2, switched, 200, W) == xfrm.KeySet(frozenset({1, 2}), 2, 221)
    # then only 2
    assert r(2, switched, 221, W) == xfrm.KeySet(frozenset({2}), 2)
    # steady state
    assert r(2, xfrm.Installed({2: 101.0}, {2: 161.0}), 1e9, W) == xfrm.KeySet(frozenset({2}), 2)


def test_rotation_without_a_working_outbound_switches_at_once() -> None:
    # the old outbound SA is gone (deleted by hand): no point waiting, nothing else can send
    assert xfrm.rotation(2, xfrm.Installed({1: 0.0}, {}), 10, W) == xfrm.KeySet(frozenset({2}), 2)


def test_two_ends_rotating_within_a_window_lose_nothing() -> None:
    """Both ends simulated second by second: what each sends, the other accepts."""
    for skew in (0, 1, 30, 59, -59):
        ends = {
            "a": (xfrm.Installed({1: 0.0}, {1: 0.0}), 100.0),
            "b": (xfrm.Installed({1: 0.0}, {1: 0.0}), 100.0 + skew),
        }
        for now in range(0, 400):
            sent = {}
            for name, (inst, start) in ends.items():
                target = 2 if now >= start else 1
                ks = xfrm.rotation(target, inst, now, W)
                inbound = {k: inst.inbound.get(k, float(now)) for k in ks.inbound}
                outbound = {ks.outbound: inst.outbound.get(ks.outbound, float(now))}
                ends[name] = (xfrm.Installed(inbound, outbound), start)
                sent[name] = ks.outbound
            assert sent["a"] in ends["b"][0].inbound, (skew, now)
            assert sent["b"] in ends["a"][0].inbound, (skew, now)
        for inst, _ in ends.values():  # both ends done: key 2 only, both ways
            assert (set(inst.inbound), set(inst.outbound)) == ({2}, {2})


def _observed(tunnel: Tunnel, enc: xfrm.KeyMaterial, direction: str, at: int) -> xfrm.ObservedSa:
    return xfrm.ObservedSa(xfrm.sa(tunnel, enc, direction, enc.key_id).config, at)  # type: ignore[arg-type]


def test_desired_during_rotation_keeps_old_sas_untouched() -> None:
    old = xfrm.KeyMaterial(SECRET, 1)
    new = xfrm.KeyMaterial(bytes(32), 2)  # a new secret with the new key id
    steady = [_observed(A, old, "in", 0), _observed(A, old, "out", 0)]
    d = xfrm.desired(A, new, steady, now=100)
    assert [(s.direction, s.key_id) for s in d.states] == [("in", 2)]
    assert d.kept == {s.config.ident for s in steady}
    assert d.next_step_at == 160
    # one window after the new inbound SA: send with the new key, still accept the old one
    rotating = [*steady, _observed(A, new, "in", 100)]
    d2 = xfrm.desired(A, new, rotating, now=170)
    assert [(s.direction, s.key_id) for s in d2.states] == [("in", 2), ("out", 2)]
    assert d2.kept == {steady[0].config.ident}
    p = xfrm.plan([d2], rotating, [p.config for p in d2.policies])
    assert p.add_sas == (d2.states[1].config,) and p.delete_sas == (steady[1].config,)
    # the old SAs were never rebuilt from the new secret
    assert all(c.key != steady[0].config.key for c in p.add_sas)
    # two windows after: only the new key
    done = [rotating[2], _observed(A, new, "out", 170)]
    p = xfrm.plan([xfrm.desired(A, new, [*done, steady[0]], now=230)], [*done, steady[0]], [])
    assert p.delete_sas == (steady[0].config,) and p.add_sas == ()


def test_plan_creates_repairs_and_removes_only_owned_objects() -> None:
    enc = xfrm.KeyMaterial(SECRET, 0)
    d = xfrm.desired(A, enc)
    states = [s.config for s in d.states]
    pols = [p.config for p in d.policies]
    fresh = xfrm.plan([d], [], [])
    assert (fresh.add_sas, fresh.put_policies) == (tuple(states), tuple(pols))
    assert not fresh.delete_sas and not fresh.delete_policies
    foreign_sa = dataclasses.replace(states[0], spi=0x1000, reqid=7)
    foreign_pol = dataclasses.replace(pols[0], reqid=7, priority=5)
    tampered = dataclasses.replace(states[1], key=bytes(36))
    observed = [xfrm.ObservedSa(states[0]), xfrm.ObservedSa(tampered), xfrm.ObservedSa(foreign_sa)]
    p = xfrm.plan([d], observed, [pols[1], foreign_pol])
    assert p.repair_sas == (tampered,) and p.add_sas == (states[1],)
    assert p.put_policies == (
        pols[0],
    )  # the deleted one; the foreign one on its selector is not ours
    assert not p.delete_sas and not p.delete_policies
    in_sync = xfrm.plan([d], [xfrm.ObservedSa(c) for c in states], pols)
    assert in_sync.empty
    gone = xfrm.plan([], [xfrm.ObservedSa(c) for c in [*states, foreign_sa]], [*pols, foreign_pol])
    assert gone.delete_sas == tuple(states) and gone.delete_policies == tuple(pols)


# ESP overhead, checked against xfrm_state_mtu() by hand:
# ((1500 - 16 - 16 - 20) & ~3) + 20 - 2 = 1466; IPv6: ((1500 - 16 - 16 - 40) & ~3) + 40 - 2 = 1466.
@pytest.mark.parametrize(
    ("ipv6", "underlay", "payload"),
    [
        (False, 1500, 1466),
        (True, 1500, 1466),
        (False, 1501, 1466),
        (False, 1503, 1466),
        (False, 1504, 1470),
        (True, 9000, 8966),
    ],
)
def test_esp_payload_mtu(ipv6: bool, underlay: int, payload: int) -> None:
    for name in overhead.ESP_AEADS:
        assert (
            overhead.esp_payload_mtu(overhead.ESP_AEADS[name], ipv6=ipv6, underlay_mtu=underlay)
            == payload
        )


def test_esp_overhead_bounds_and_session_mtu() -> None:
    gcm = overhead.ESP_AEADS["aes256gcm16"]
    for mtu in range(1280, 1600):
        o = overhead.esp_overhead(gcm, ipv6=False, underlay_mtu=mtu)
        # header 8 + IV 8 + ICV 16 + trailer 2 + padding 0..3
        assert 34 <= o <= 37
    cbc_like = overhead.EspAead("x", "cbc(aes)", 16, salt=0, iv=16, icv=12, block=16)
    assert all(
        8 + 16 + 12 + 2
        <= overhead.esp_overhead(cbc_like, ipv6=True, underlay_mtu=m)
        <= 8 + 16 + 12 + 17
        for m in range(1280, 1600)
    )
    # UDP/IPv4, no cookie, default sublayer: 1446 clear, 1412 encrypted
    clear = overhead.session_mtu(ipv6=False, udp=True, cookie_len=0, l2spec_default=True)
    enc = overhead.session_mtu(ipv6=False, udp=True, cookie_len=0, l2spec_default=True, esp=gcm)
    assert (clear, enc) == (1446, 1412)
    # IP encapsulation over IPv6, 8-byte cookie: 1500 - 40 - 4 - 8 - 4 - 14 = 1430 clear
    assert (
        overhead.session_mtu(ipv6=True, udp=False, cookie_len=8, l2spec_default=True, esp=gcm)
        == 1430 - 34
    )


def test_render_prints_both_ends_ip_xfrm_without_keys() -> None:
    from kube_l2tp.api.model import Encryption
    from kube_l2tp.core import render

    t = dataclasses.replace(A, encryption=Encryption(key_id=1, key_file="/k"))
    here = render.render(Resources((t,)))
    there = render.render(Resources((t,)), peer=True)
    enc = xfrm.KeyMaterial(SECRET, 1)
    ours = {s.direction: s.config for s in xfrm.desired(A, enc).states}
    theirs = {s.direction: s.config for s in xfrm.desired(B, enc).states}
    for text, sas in ((here, ours), (there, theirs)):
        lines = text.splitlines()
        xfrm_lines = [i for i, line in enumerate(lines) if line.startswith("ip xfrm")]
        l2tp_line = next(i for i, line in enumerate(lines) if line.startswith("ip l2tp add tunnel"))
        assert len(xfrm_lines) == 4 and max(xfrm_lines) < l2tp_line  # ESP before any L2TP
        for c in sas.values():
            assert f"spi {c.spi:#010x}" in text and f"$KEY_{c.spi:08X} 128" in text
            assert c.key.hex() not in text
        assert SECRET.hex() not in text
    # what one end sends the other receives: same SPIs, swapped roles
    assert ours["out"].spi == theirs["in"].spi and ours["in"].spi == theirs["out"].spi


def test_mtu_warning_counts_esp() -> None:
    from kube_l2tp.api import manifests, validation

    def docs(mtu: int, encrypted: bool) -> list[manifests.Document]:
        udp = {"sourcePort": 5000, "destinationPort": 6000}
        ends = {"local": "192.0.2.1", "remote": "192.0.2.2"}
        spec: dict[str, object] = {"nodeName": "n", "tunnelID": 1, "peerTunnelID": 2, **ends}
        spec["udp"] = udp
        if encrypted:
            spec["encryption"] = {"keyFile": "/k"}
        t = {"apiVersion": "kubel2tp.io/v1alpha1", "kind": "L2TPTunnel",
             "metadata": {"name": "t"}, "spec": spec}  # fmt: skip
        s = {"apiVersion": "kubel2tp.io/v1alpha1", "kind": "L2TPSession",
             "metadata": {"name": "s"},
             "spec": {"tunnelRef": "t", "sessionID": 1, "peerSessionID": 2,
                      "interface": {"mtu": mtu}}}  # fmt: skip
        return [manifests.Document("t", t), manifests.Document("s", s)]

    def warned(mtu: int, encrypted: bool) -> list[str]:
        report = validation.check_documents(docs(mtu, encrypted))
        assert not report.errors, [p.render() for p in report.errors]
        return [p.message for p in report.warnings]

    assert warned(1446, False) == [] and warned(1412, True) == []
    (message,) = warned(1446, True)
    assert "above the 1412 that fits a 1500-byte underlay with ESP" in message
    assert warned(1413, True) and warned(1447, False)
