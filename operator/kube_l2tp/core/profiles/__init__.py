"""Far-end configurations: the other end of each tunnel in that end's own language.

One module per profile (linux, networkd, cisco-ios-xe, mikrotik, vyos), each a pure renderer
from the far ends (base.FarEnd) to files and notes, or to refusals naming the field it cannot
express and why. ``render --peer --profile NAME`` and, later, the pseudowire's status use
``render_far_end``.
"""

from __future__ import annotations

from collections.abc import Mapping

from kube_l2tp.api.model import Resources
from kube_l2tp.core.profiles import cisco_ios_xe, linux, mikrotik, networkd, vyos
from kube_l2tp.core.profiles.base import (
    Output,
    Profile,
    Refusal,
    Refused,
    Rendered,
    Result,
    far_ends,
    resolve_options,
)

PROFILES: Mapping[str, Profile] = {
    p.name: p for p in (linux, networkd, cisco_ios_xe, mikrotik, vyos)
}

__all__ = [
    "PROFILES",
    "Output",
    "Profile",
    "Refusal",
    "Refused",
    "Rendered",
    "Result",
    "render_far_end",
]


def render_far_end(
    resources: Resources,
    profile: str,
    *,
    node: str | None = None,
    options: Mapping[str, str] | None = None,
) -> Result:
    """The far end of every tunnel (of ``node``) as ``profile`` writes it."""
    p = PROFILES[profile]
    opts, refusals = resolve_options(p, options or {})
    if refusals:
        return Refused(tuple(refusals))
    return p.render_far(far_ends(resources, node), opts)
