"""The kernel's change notifications, as the loop's event sources (agent.loop.EventSources).

Opened by the loop when it starts, closed when it returns; tests without root give the loop
fakes (or agent.loop.no_events) instead, and open no netlink socket.
"""

from __future__ import annotations

import logging

from kube_l2tp.agent.loop import EventSource
from kube_l2tp.core.state import KernelError
from kube_l2tp.netlink.l2tp import L2tpEvents
from kube_l2tp.netlink.links import LinkEvents

log = logging.getLogger("kube_l2tp.agent")


def kernel_events() -> list[EventSource]:
    """rtnetlink link/address changes and the "l2tp" genl group; without L2TP in the kernel
    the periodic resync still repairs links."""
    sources: list[EventSource] = [LinkEvents()]
    try:
        sources.append(L2tpEvents())
    except KernelError as exc:
        log.warning("no L2TP events (%s): relying on the periodic resync", exc)
    return sources
