"""What every far-end profile shares: its input (the far end of each tunnel), its typed result
(files and notes, or refusals naming the field and why), and the name checks of its syntax.

A profile never prints what its target cannot express: it refuses, field by field, so a router
is never given a configuration that silently differs from ours (a cookie dropped, a sublayer it
does not send). Names that reach a target's syntax are checked against a strict pattern for that
syntax, never escaped: nothing a manifest holds can become a second command.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kube_l2tp.api.model import Resources, Session, Tunnel
from kube_l2tp.core.render import mirror_session, mirror_tunnel


@dataclass(frozen=True)
class Refusal:
    """One option the profile cannot express: which object and field, and why."""

    kind: str  # "L2TPTunnel" | "L2TPSession" | "option"
    name: str
    field: str  # the manifest's field, e.g. "spec.cookie"
    reason: str

    def render(self) -> str:
        return f"{self.kind}/{self.name}: {self.field}: {self.reason}"


@dataclass(frozen=True)
class Output:
    """One piece of configuration: a file to install (``path``) or text to paste (path None)."""

    text: str
    path: str | None = None


@dataclass(frozen=True)
class Rendered:
    outputs: tuple[Output, ...]
    notes: tuple[str, ...] = ()  # what the user still does by hand (said once, not per line)


@dataclass(frozen=True)
class Refused:
    refusals: tuple[Refusal, ...]


Result = Rendered | Refused


@dataclass(frozen=True)
class FarSession:
    """A session as the far end sees it (``far``), with the in-cluster object it mirrors."""

    far: Session
    ours: Session


@dataclass(frozen=True)
class FarEnd:
    """One tunnel as the far end must configure it: ids, ports and cookies swapped."""

    far: Tunnel
    ours: Tunnel
    sessions: tuple[FarSession, ...]

    def kernel_mtu(self, s: FarSession) -> int:
        """The MTU a Linux far end would compute for the session (what ours computes too)."""
        return s.far.kernel_mtu(self.far)


def bridge_note(ifname: str, fs: FarSession, how: str) -> list[str]:
    """Bridges and VLANs are the far end's own business: said once, never rendered."""
    if not (fs.ours.interface.bridge or fs.ours.interface.vlans):
        return []
    return [f"{ifname}: the bridge/VLANs of L2TPSession {fs.ours.name} are not rendered: {how}"]


def far_ends(resources: Resources, node: str | None = None) -> list[FarEnd]:
    """The far end of every tunnel (of ``node``), in the manifests' order."""
    ends = []
    for t in resources.tunnels:
        if node is not None and t.node != node:
            continue
        sessions = tuple(
            FarSession(mirror_session(s), s) for s in resources.sessions if s.tunnel_ref == t.name
        )
        ends.append(FarEnd(mirror_tunnel(t), t, sessions))
    return ends


@dataclass(frozen=True)
class OptionSpec:
    """A setting of the far end that no manifest holds (e.g. the router's loopback)."""

    default: str
    help: str
    pattern: str  # what the target's syntax accepts, checked before anything is printed


@dataclass
class Check:
    """Collects refusals while a profile walks the far ends."""

    refusals: list[Refusal] = field(default_factory=list)

    def refuse(self, obj: Tunnel | Session, path: str, reason: str) -> None:
        kind = "L2TPTunnel" if isinstance(obj, Tunnel) else "L2TPSession"
        self.refusals.append(Refusal(kind, obj.name, path, reason))

    def one_session(self, end: FarEnd, target: str) -> None:
        """Targets whose interface is a tunnel with exactly one session."""
        if len(end.sessions) > 1:
            self.refuse(
                end.ours,
                "metadata.name",
                f"{len(end.sessions)} sessions: {target} is one tunnel with one session;"
                " give each session its own tunnel",
            )

    def unsupported(self, fs: FarSession, path: str, present: bool, reason: str) -> None:
        if present:
            self.refuse(fs.ours, path, reason)

    def name(self, obj: Tunnel | Session, path: str, value: str, pattern: str, target: str) -> str:
        """``value`` if ``target``'s syntax takes it as a plain word, else a refusal."""
        if not re.fullmatch(pattern, value):
            self.refuse(
                obj,
                path,
                f"{value!r} cannot be written in {target} safely (allowed: {pattern}); rename it",
            )
        return value


class Profile(Protocol):
    """A far end's kind (a module). ``render_far`` is pure: the same input gives the same text."""

    name: str
    summary: str
    options: Mapping[str, OptionSpec]

    def render_far(self, ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result: ...


def resolve_options(
    profile: Profile, given: Mapping[str, str]
) -> tuple[dict[str, str], list[Refusal]]:
    """The profile's options with defaults filled in; unknown or unsafe values refused."""
    out = {k: spec.default for k, spec in profile.options.items()}
    refusals = []
    for key, value in given.items():
        spec = profile.options.get(key)
        if spec is None:
            known = ", ".join(sorted(profile.options)) or "none"
            refusals.append(
                Refusal(
                    "option",
                    key,
                    "--peer-option",
                    f"{profile.name} has no option {key!r} (its options: {known})",
                )
            )
        elif not re.fullmatch(spec.pattern, value):
            refusals.append(
                Refusal(
                    "option",
                    key,
                    "--peer-option",
                    f"{value!r} is not accepted for {key} (allowed: {spec.pattern})",
                )
            )
        else:
            out[key] = value
    return out, refusals
