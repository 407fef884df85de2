"""Why the agent's loop ran a reconcile: what the drift-repair metric and the logs are told."""

from __future__ import annotations

from enum import StrEnum


class Trigger(StrEnum):
    """A ``StrEnum``: the log lines ("reconcile: kernel event") read as before."""

    START = "start"  # the first reconcile of the loop (and --once)
    KERNEL_EVENT = "kernel event"  # an L2TP or link change the kernel reported
    PERIODIC_RESYNC = "periodic resync"  # the backstop timer, or a retry while Progressing
    MANIFESTS_CHANGED = "manifests changed"  # the standalone agent's directory changed
    API_EVENT = "api event"  # a watch event of this node's objects (the in-cluster agent)

    @property
    def repairs_drift(self) -> bool:
        """Whether writes it makes repair drift: the declared state did not change."""
        return self in (Trigger.KERNEL_EVENT, Trigger.PERIODIC_RESYNC)
