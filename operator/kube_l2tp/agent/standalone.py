"""The standalone agent: a directory of manifests in, a converged kernel out.

The loop is agent.loop's, fed by agent.source.ManifestSource (re-read when a file changes; a
file that cannot be read keeps what it declared last). What is left here is what only this
mode has: its wiring, and the one-line-per-object summary of `kube-l2tp agent --once`.
"""

from __future__ import annotations

from typing import TextIO

from kube_l2tp.agent.encryption import XfrmStep
from kube_l2tp.agent.loop import Agent, AgentConfig, EventSources
from kube_l2tp.agent.source import ManifestSource
from kube_l2tp.agent.statestore import StateStore
from kube_l2tp.core.ports import KernelPort
from kube_l2tp.core.reconcile import Result


def standalone_agent(
    config: AgentConfig,
    kernel: KernelPort,
    store: StateStore,
    events: EventSources,
    xfrm: XfrmStep | None = None,
) -> Agent:
    """An Agent whose desired state is the manifests in ``config.manifests``."""
    return Agent(config, kernel, store, ManifestSource(config.manifests), events, xfrm)


def print_results(result: Result, out: TextIO) -> None:
    """One line per object, for --once and for people."""
    for r in sorted(result.results.values(), key=lambda r: r.subject):
        state = "Ready" if r.ready else "NotReady"
        line = f"{r.subject}: {state} ({r.reason})"
        if r.interface:
            line += f" interface={r.interface} index={r.ifindex} mtu={r.mtu}"
        if not r.ready:
            line += f": {r.message}"
        for note in r.ignored:
            line += f" [{note}]"
        print(line, file=out)
    print(
        f"{sum(r.ready for r in result.results.values())}/{len(result.results)} ready,"
        f" {result.writes} kernel writes",
        file=out,
    )
