"""``linux``: the far end as ``ip`` commands, exactly what ``render --peer`` prints.

iproute2 expresses every option of the kernel, so this profile refuses nothing; the commands
come from core.render itself (one source, one set of quoting rules).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from kube_l2tp.api.model import Resources
from kube_l2tp.core import render
from kube_l2tp.core.profiles.base import FarEnd, OptionSpec, Output, Rendered, Result

name = "linux"
summary = "ip l2tp / ip link / ip addr commands (iproute2), as render --peer"
options: Mapping[str, OptionSpec] = {}


def render_far(ends: Sequence[FarEnd], opts: Mapping[str, str]) -> Result:
    ours = Resources(
        tunnels=tuple(e.ours for e in ends),
        sessions=tuple(s.ours for e in ends for s in e.sessions),
    )
    return Rendered((Output(render.render(ours, peer=True)),))
