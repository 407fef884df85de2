"""The agent's XFRM step: ESP states and policies for the node's encrypted tunnels.

It runs in two halves around the L2TP reconcile. ``before`` reads each encrypted tunnel's
secret, adds and repairs SAs and policies, and withholds from the L2TP reconcile every tunnel
whose encryption cannot be set up (a missing or unsafe key file, a conflict with someone else's
XFRM object, a kernel error): such a tunnel is not programmed at all, so nothing of it leaves in
clear, and its status says why. ``after`` removes the agent's SAs and policies that are no longer
wanted, once the tunnels that used them are gone. Only objects with the agent's reqids
(core.xfrm.owned) are ever changed.

Secrets: read from ``keyFile`` (standalone). ``secretRef`` (a cluster Secret) is not read by this
version: such a tunnel is withheld with reason SecretNotFound rather than run in clear.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

from kube_l2tp.api.model import Resources, Tunnel
from kube_l2tp.api.reasons import Reason
from kube_l2tp.core import xfrm
from kube_l2tp.core.plan import session_subject, tunnel_subject
from kube_l2tp.core.reconcile import ObjectResult
from kube_l2tp.core.state import KernelError
from kube_l2tp.core.xfrm import XfrmConfigError

log = logging.getLogger(__name__)


def read_key_file(path: str) -> bytes:
    """The secret in ``path``; refused if group or others may read or write it."""
    where = f"spec.encryption.keyFile {path}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise XfrmConfigError(Reason.SECRET_NOT_FOUND, f"{where}: no such file") from None
    except OSError as exc:
        raise XfrmConfigError(Reason.SECRET_NOT_FOUND, f"{where}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # a directory, a FIFO (O_NONBLOCK: never waits on it)
            raise XfrmConfigError(Reason.INVALID_KEY, f"{where}: not a regular file")
        if st.st_mode & 0o077:
            raise XfrmConfigError(
                Reason.INVALID_KEY,
                f"{where}: group or others may access it (mode {stat.S_IMODE(st.st_mode):04o}):"
                f" chmod 600 {path}",
            )
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(xfrm.MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise XfrmConfigError(Reason.SECRET_NOT_FOUND, f"{where}: {exc.strerror}") from None
    finally:
        os.close(fd)


class XfrmPort(Protocol):
    """What this step needs of netlink.xfrm.Xfrm (a fake in unit tests)."""

    def dump_sas(self) -> Sequence[RawSaLike]: ...
    def dump_policies(self) -> Sequence[RawPolicyLike]: ...
    def add_sa(self, sa: xfrm.SaConfig) -> None: ...
    def delete_sa(self, family: int, dst: str, spi: int) -> None: ...
    def add_policy(self, pol: xfrm.PolicyConfig, *, replace: bool = False) -> None: ...
    def delete_policy(self, direction: xfrm.Dir, selector: xfrm.Selector) -> None: ...


class RawSaLike(Protocol):
    @property
    def family(self) -> int: ...
    @property
    def dst(self) -> str: ...
    @property
    def spi(self) -> int: ...
    @property
    def reqid(self) -> int: ...
    @property
    def observed(self) -> xfrm.ObservedSa | None: ...


class RawPolicyLike(Protocol):
    @property
    def reqid(self) -> int: ...
    @property
    def config(self) -> xfrm.PolicyConfig | None: ...
    @property
    def ident(self) -> tuple[xfrm.Dir, xfrm.Selector] | None: ...


@dataclass
class XfrmStep:
    """``port`` is opened on first need: a node without encrypted tunnels never opens NETLINK_XFRM
    (nor needs the xfrm_user module). Known gap: SAs left by an earlier run of the agent whose
    tunnels have all lost their encryption since are removed only once some tunnel is encrypted."""

    open_port: Callable[[], XfrmPort]
    read_key: Callable[[str], bytes] = read_key_file
    clock: Callable[[], float] = time.time
    window: float = xfrm.DEFAULT_ROTATION_WINDOW
    pending: xfrm.XfrmPlan = field(default_factory=xfrm.XfrmPlan)
    next_step_at: float | None = None  # the earliest rotation step due (reconcile then)
    port: XfrmPort | None = None

    def _secret(self, t: Tunnel) -> bytes:
        enc = t.encryption
        assert enc is not None
        if enc.key_file:
            return self.read_key(enc.key_file)
        raise XfrmConfigError(
            Reason.SECRET_NOT_FOUND,
            f"spec.encryption.secretRef {enc.secret_namespace}/{enc.secret_name}: this agent"
            " reads keyFile only; the tunnel is not programmed (it would run in clear)",
        )

    def before(self, resources: Resources, node: str) -> tuple[Resources, dict[str, ObjectResult]]:
        """Program the wanted SAs and policies; returns the resources the L2TP reconcile may
        program (withheld tunnels removed) and the results of the withheld objects."""
        mine = resources.for_node(node)
        encrypted = [t for t in mine.tunnels if t.encryption is not None]
        try:
            if self.port is None:
                if not encrypted:
                    return resources, {}
                self.port = self.open_port()
            port = self.port
            sas = port.dump_sas()
            pols = port.dump_policies()
        except (KernelError, OSError) as exc:  # no XFRM here: only the encrypted tunnels wait
            self.pending = xfrm.XfrmPlan()
            why = (Reason.KERNEL_ERROR, f"XFRM is not usable on this node: {exc}")
            return _withhold(resources, dict.fromkeys((t.name for t in encrypted), why))
        ours = [s.observed for s in sas if xfrm.owned(s.reqid) and s.observed]
        foreign: list[tuple[int, str, int] | tuple[xfrm.Dir, xfrm.Selector]] = [
            (s.family, s.dst, s.spi) for s in sas if not xfrm.owned(s.reqid)
        ]
        foreign += [p.ident for p in pols if not xfrm.owned(p.reqid) and p.ident]
        our_pols = [p.config for p in pols if xfrm.owned(p.reqid) and p.config]
        held: dict[str, tuple[Reason, str]] = {}
        wanted: dict[str, xfrm.TunnelXfrm] = {}
        now = self.clock()
        for first, second in xfrm.reqid_clashes(encrypted):
            held[second.name] = (
                Reason.CONFLICT,
                f"tunnel ids {first.tunnel_id} (L2TPTunnel/{first.name}) and"
                f" {second.tunnel_id} share their low 28 bits, which name their XFRM reqid",
            )
        for t in encrypted:
            if t.name in held:
                continue
            enc = t.encryption
            assert enc is not None
            try:
                keys = xfrm.KeyMaterial(self._secret(t), enc.key_id, enc.algorithm)
                wanted[t.name] = xfrm.desired(t, keys, ours, now, self.window)
            except XfrmConfigError as exc:
                held[t.name] = (exc.reason, str(exc))
        for a, b in xfrm.spi_clashes(s for w in wanted.values() for s in w.states):
            held[b.tunnel] = (
                Reason.CONFLICT,
                f"its SPI {b.config.spi:#010x} is L2TPTunnel/{a.tunnel}'s",
            )
        owner: dict[object, str] = {}
        for name, w in wanted.items():
            owner.update((s.config.ident, name) for s in w.states)
            owner.update((p.config.ident, name) for p in w.policies)
        plan = xfrm.plan((w for n, w in wanted.items() if n not in held), ours, our_pols, foreign)
        for c in plan.conflicts:
            held[owner[c.ident]] = (Reason.CONFLICT, f"someone else's XFRM object holds {_what(c)}")
        if plan.conflicts:  # again, without the tunnels in conflict
            plan = xfrm.plan(
                (w for n, w in wanted.items() if n not in held), ours, our_pols, foreign
            )
        for sa in plan.repair_sas:
            self._try(held, owner, sa, partial(port.delete_sa, sa.family, sa.dst, sa.spi))
        inbound = {s.config.ident for w in wanted.values() for s in w.states if s.direction == "in"}
        for sa in sorted(plan.add_sas, key=lambda c: c.ident not in inbound):  # inbound first
            self._try(held, owner, sa, partial(port.add_sa, sa))
        for pol in plan.put_policies:
            self._try(held, owner, pol, partial(port.add_policy, pol, replace=True))
        self.pending = plan
        steps = [w.next_step_at for n, w in wanted.items() if n not in held and w.next_step_at]
        self.next_step_at = min(steps, default=None)
        return _withhold(resources, held)

    def _try(
        self,
        held: dict[str, tuple[Reason, str]],
        owner: dict[object, str],
        obj: xfrm.SaConfig | xfrm.PolicyConfig,
        write: Callable[[], None],
    ) -> None:
        name = owner.get(obj.ident)
        if name in held:
            return
        try:
            write()
        except KernelError as exc:
            if name is not None:
                held[name] = (Reason.KERNEL_ERROR, str(exc))

    def after(self) -> None:
        """Remove the agent's SAs and policies no tunnel wants any more."""
        plan, self.pending = self.pending, xfrm.XfrmPlan()
        port = self.port
        if port is None:
            return
        for pol in plan.delete_policies:
            _quietly(partial(port.delete_policy, pol.direction, pol.selector))
        for sa in plan.delete_sas:
            _quietly(partial(port.delete_sa, sa.family, sa.dst, sa.spi))


def _what(obj: xfrm.SaConfig | xfrm.PolicyConfig) -> str:
    if isinstance(obj, xfrm.SaConfig):
        return f"SPI {obj.spi:#010x} towards {obj.dst}"
    s = obj.selector
    return f"the {obj.direction} policy of {s.src} -> {s.dst} proto {s.proto}"


def _quietly(write: Callable[[], None]) -> None:
    try:
        write()
    except KernelError as exc:  # gone already, or retried at the next reconcile
        log.warning("xfrm cleanup: %s", exc)


def _withhold(
    resources: Resources, held: dict[str, tuple[Reason, str]]
) -> tuple[Resources, dict[str, ObjectResult]]:
    results: dict[str, ObjectResult] = {}
    for name, (reason, message) in held.items():
        results[tunnel_subject(name)] = ObjectResult(tunnel_subject(name), False, reason, message)
        for s in resources.sessions:
            if s.tunnel_ref == name:
                subject = session_subject(s.name)
                why = f"its tunnel L2TPTunnel/{name} is not programmed: {reason}"
                results[subject] = ObjectResult(subject, False, Reason.TUNNEL_NOT_READY, why)
    kept = tuple(t for t in resources.tunnels if t.name not in held)
    return Resources(kept, resources.sessions), results
