"""The agent's XFRM step on an in-memory XFRM table: fail closed, repair, rotate, clean up."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from kube_l2tp.agent.encryption import XfrmStep, read_key_file
from kube_l2tp.api.model import Encryption, Resources, Session, Tunnel, Udp
from kube_l2tp.core import xfrm
from kube_l2tp.core.state import KernelError, Outcome
from kube_l2tp.netlink.xfrm import RawPolicy, RawSa

SECRET = bytes(range(32))


class FakeXfrm:
    """What the kernel keeps, as the codec reports it (add times from the test's clock)."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.sas: dict[tuple[int, str, int], tuple[xfrm.SaConfig, int]] = {}
        self.pols: dict[tuple[str, xfrm.Selector], xfrm.PolicyConfig] = {}
        self.writes: list[str] = []

    def dump_sas(self) -> list[RawSa]:
        return [
            RawSa(c.family, c.dst, c.spi, 50, c.reqid, xfrm.ObservedSa(c, t))
            for c, t in self.sas.values()
        ]

    def dump_policies(self) -> list[RawPolicy]:
        return [
            RawPolicy(int(p.direction == "out"), 0, p.priority, p.reqid, p, p.selector)
            for p in self.pols.values()
        ]

    def add_sa(self, sa: xfrm.SaConfig) -> None:
        if sa.ident in self.sas:
            raise KernelError("add", errno.EEXIST, Outcome.EXISTS)
        self.sas[sa.ident] = (sa, int(self.clock[0]))
        self.writes.append(f"add sa {sa.dst} {sa.spi:#x}")

    def delete_sa(self, family: int, dst: str, spi: int) -> None:
        del self.sas[(family, dst, spi)]
        self.writes.append(f"del sa {dst} {spi:#x}")

    def add_policy(self, pol: xfrm.PolicyConfig, *, replace: bool = False) -> None:
        self.pols[pol.ident] = pol
        self.writes.append(f"put policy {pol.direction}")

    def delete_policy(self, direction: xfrm.Dir, selector: xfrm.Selector) -> None:
        del self.pols[(direction, selector)]
        self.writes.append(f"del policy {direction}")


def tunnel(name: str = "site-a", key_file: str | None = "/k", key_id: int = 1) -> Tunnel:
    enc = Encryption(key_id=key_id, key_file=key_file) if key_file or key_id else None
    if key_file is None and key_id >= 0:
        enc = Encryption(key_id=key_id, secret_namespace="ns", secret_name="s")
    return Tunnel(name, "node-a", 3000, 4000, "192.0.2.1", "192.0.2.2", "udp", Udp(5000, 6000),
                  encryption=enc)  # fmt: skip


CLEAR = Tunnel("clear", "node-a", 9, 9, "192.0.2.1", "192.0.2.3", "ip")
SESSION = Session("site-a-1", "site-a", 1, 2)


def step(clock: list[float], keys: dict[str, bytes] | None = None) -> tuple[XfrmStep, FakeXfrm]:
    fake = FakeXfrm(clock)
    files = keys if keys is not None else {"/k": SECRET}

    def read(path: str) -> bytes:
        if path not in files:
            raise xfrm.XfrmConfigError("SecretNotFound", f"keyFile {path}: no such file")
        return files[path]

    return XfrmStep(lambda: fake, read_key=read, clock=lambda: clock[0], window=60), fake


def test_nothing_encrypted_never_opens_xfrm() -> None:
    opened: list[int] = []
    s = XfrmStep(lambda: opened.append(1) or FakeXfrm([0.0]))  # type: ignore[func-returns-value]
    res = Resources((CLEAR,))
    assert s.before(res, "node-a") == (res, {})
    s.after()
    assert opened == []


def test_program_then_steady() -> None:
    clock = [1000.0]
    s, fake = step(clock)
    res = Resources((tunnel(), CLEAR), (SESSION,))
    out, held = s.before(res, "node-a")
    assert held == {} and out == res
    assert fake.writes[0].startswith("add sa 192.0.2.1")  # inbound first
    assert [w.split()[0:2] for w in fake.writes] == [["add", "sa"]] * 2 + [["put", "policy"]] * 2
    s.after()
    fake.writes.clear()
    s.before(res, "node-a")
    s.after()
    assert fake.writes == []  # in sync: no write


def test_missing_key_or_secret_ref_withholds_the_tunnel_and_its_sessions() -> None:
    clock = [0.0]
    s, fake = step(clock, keys={})
    res = Resources((tunnel(), CLEAR), (SESSION,))
    out, held = s.before(res, "node-a")
    assert out.tunnels == (CLEAR,)  # never programmed in clear
    assert held["L2TPTunnel/site-a"].reason == "SecretNotFound"
    assert held["L2TPSession/site-a-1"].reason == "TunnelNotReady"
    assert fake.sas == {}
    s2, _ = step(clock)
    out, held = s2.before(Resources((tunnel(key_file=None),)), "node-a")
    assert out.tunnels == () and "keyFile only" in held["L2TPTunnel/site-a"].message


def test_short_key_is_invalid_and_never_shown() -> None:
    s, _ = step([0.0], keys={"/k": b"short-secret"})
    _, held = s.before(Resources((tunnel(),)), "node-a")
    r = held["L2TPTunnel/site-a"]
    assert r.reason == "InvalidKey" and "short-secret" not in r.message


def test_tampering_repaired_foreign_untouched_removal_cleans() -> None:
    clock = [0.0]
    s, fake = step(clock)
    res = Resources((tunnel(),))
    s.before(res, "node-a")
    s.after()
    foreign = xfrm.SaConfig(2, "192.0.2.1", "192.0.2.2", 0x1000, 7, xfrm.Selector(2, "192.0.2.1",
                            "192.0.2.2", 17), "rfc4106(gcm(aes))", bytes(20))  # fmt: skip
    fake.sas[foreign.ident] = (foreign, 0)
    ident, (cfg, t) = next(iter(fake.sas.items()))
    fake.sas[ident] = (xfrm.SaConfig(**{**cfg.__dict__, "key": bytes(36)}), t)  # key changed
    fake.pols.popitem()  # a policy deleted by hand
    s.before(res, "node-a")
    s.after()
    assert fake.sas[ident][0] == cfg and len(fake.pols) == 2
    s.before(Resources(()), "node-a")  # the tunnel is gone
    s.after()
    assert list(fake.sas) == [foreign.ident] and fake.pols == {}


def test_foreign_policy_in_our_place_is_a_conflict() -> None:
    s, fake = step([0.0])
    pol = xfrm.policies(tunnel())[0].config
    fake.pols[pol.ident] = xfrm.PolicyConfig(pol.direction, pol.selector, 7, "192.0.2.1", "x", 1)
    out, held = s.before(Resources((tunnel(),)), "node-a")
    assert out.tunnels == () and held["L2TPTunnel/site-a"].reason == "Conflict"
    assert fake.pols[pol.ident].reqid == 7 and fake.sas == {}


def test_rotation_through_the_agent() -> None:
    clock = [1000.0]
    s, fake = step(clock)
    s.before(Resources((tunnel(key_id=1),)), "node-a")
    s.after()
    old = set(fake.sas)
    clock[0] = 2000.0
    s.before(Resources((tunnel(key_id=2),)), "node-a")
    s.after()
    assert len(fake.sas) == 3 and old < set(fake.sas)  # new inbound added, old both kept
    assert s.next_step_at == 2060.0
    clock[0] = 2060.0
    s.before(Resources((tunnel(key_id=2),)), "node-a")
    assert len(fake.sas) == 3 and old < set(fake.sas)  # not a moment early:
    assert s.next_step_at == 2061.0  # the kernel keeps whole seconds, counted from their end
    clock[0] = 2061.0
    s.before(Resources((tunnel(key_id=2),)), "node-a")
    s.after()
    assert len(fake.sas) == 3 and len(old & set(fake.sas)) == 1  # sends with 2, accepts 1
    clock[0] = 2121.0
    s.before(Resources((tunnel(key_id=2),)), "node-a")
    s.after()
    assert len(fake.sas) == 2 and not old & set(fake.sas) and s.next_step_at is None


def test_key_file_permissions(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(SECRET)
    key.chmod(0o600)
    assert read_key_file(str(key)) == SECRET
    for mode in (0o640, 0o604, 0o620):
        key.chmod(mode)
        with pytest.raises(xfrm.XfrmConfigError, match=f"mode {mode:04o}.*chmod 600") as e:
            read_key_file(str(key))
        assert e.value.reason == "InvalidKey"
    with pytest.raises(xfrm.XfrmConfigError, match="no such file") as e:
        read_key_file(str(tmp_path / "nothing"))
    assert e.value.reason == "SecretNotFound"
    os.chmod(tmp_path, 0o700)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    for odd in (tmp_path, fifo):  # a directory crashed the agent once; a FIFO must not hang it
        with pytest.raises(xfrm.XfrmConfigError, match="not a regular file"):
            read_key_file(str(odd))


def test_no_xfrm_in_the_kernel_withholds_only_the_encrypted_tunnels() -> None:
    def refuse() -> FakeXfrm:
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")

    s = XfrmStep(refuse)
    out, held = s.before(Resources((tunnel(), CLEAR), (SESSION,)), "node-a")
    assert out.tunnels == (CLEAR,)
    assert held["L2TPTunnel/site-a"].reason == "KernelError"
    assert "Protocol not supported" in held["L2TPTunnel/site-a"].message
    s.after()  # nothing to clean, no port: no error
