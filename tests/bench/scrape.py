"""One /metrics scrape of N sessions against `ip -s l2tp show session`, and where its time goes.

Runs in the guest (the kernel needs L2TP):

    flock /tmp/kube-l2tp-vm.lock bash scripts/vm.sh tests/bench/scrape-in-guest.sh 100 1000

Programs N tunnel+session pairs with `ip -batch` (the agent's own commands, so the kernel holds
what the agent would have made), then times, best of REPEAT, in that namespace:

- served: the whole /metrics body as the agent serves it (agent.serve.Metrics: the agent's
  registry, then metrics.kernel.KernelMetrics on its own socket), without HTTP;
- first: the first such render (the label cache is empty);
- its parts: the two dumps (kernel and recv), decoding the counters, writing the kernel text;
- reference: support.oracles_metrics.KernelCollector through prometheus_client's generate_latest, on
  L2tp.dump_tunnels/dump_sessions (what served before KernelMetrics);
- ip: `ip -s l2tp show session` in the same namespace.

Also the peak Python memory of one served render (tracemalloc) and the text's size; the body is
parsed with prometheus_client's parser, and must hold every sample of every session. With
``--profile`` as the first argument, cProfile's top functions of one served render go to
stderr.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
sys.path.insert(0, str(Path(__file__).parent.parent))  # tests/: support
from helpers import in_netns, ip_batch

from bench import NODE, ip_commands, namespace, resources
from kube_l2tp.agent.serve import Metrics
from kube_l2tp.core.desired import desired_state
from kube_l2tp.metrics.agent import AgentMetrics
from kube_l2tp.metrics.kernel import KernelMetrics, Names, metric_names
from kube_l2tp.netlink.l2tp import L2tp
from kube_l2tp.netlink.l2tp.attrs import L2tpCmd
from kube_l2tp.netlink.l2tp.fastpath import decode_session_counters, decode_tunnel_counters
from support.oracles_metrics import KernelCollector

REPEAT = 5


def best(fn: Callable[[], object], repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_scrape(n: int, profile: bool = False) -> dict[str, float]:
    res = resources(n)
    names = Names.of(desired_state(res, NODE))
    out: dict[str, float] = {}
    with namespace() as ns:
        ip_batch(ns, ip_commands(res))
        with in_netns(ns), L2tp() as l2tp:
            registry = CollectorRegistry()
            AgentMetrics(registry, NODE)
            metrics = Metrics(registry, KernelMetrics(NODE, l2tp.dump_counters, lambda: names))
            start = time.perf_counter()
            body = metrics.render()
            out["first"] = time.perf_counter() - start
            out["served"] = best(metrics.render)
            tracemalloc.start()
            metrics.render()
            out["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
            out["bytes"] = len(body)
            if profile:
                profiler = cProfile.Profile()
                profiler.runcall(metrics.render)
                report = io.StringIO()
                pstats.Stats(profiler, stream=report).sort_stats("tottime").print_stats(15)
                print(
                    f"--- cProfile of one served render, N={n}\n{report.getvalue()}",
                    file=sys.stderr,
                )

            def dump() -> tuple[list[bytes], list[bytes]]:
                return l2tp.dump_raw(L2tpCmd.L2TP_CMD_TUNNEL_GET), l2tp.dump_raw(
                    L2tpCmd.L2TP_CMD_SESSION_GET
                )

            out["dump"] = best(dump)
            tunnel_raw, session_raw = dump()
            out["decode"] = best(
                lambda: (decode_tunnel_counters(tunnel_raw), decode_session_counters(session_raw))
            )
            counters = decode_tunnel_counters(tunnel_raw), decode_session_counters(session_raw)
            text_only = KernelMetrics(NODE, lambda: counters, lambda: names)
            out["text"] = best(text_only.render)
            reference = CollectorRegistry()
            reference.register(
                KernelCollector(
                    NODE, lambda: (l2tp.dump_tunnels(), l2tp.dump_sessions()), lambda: names
                )
            )
            out["reference"] = best(lambda: generate_latest(reference), 2)
        out["ip"] = best(
            lambda: subprocess.run(
                ["ip", "-n", ns, "-s", "l2tp", "show", "session"], check=True, capture_output=True
            )
        )
    kernel_names = metric_names()
    samples = [
        s
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name in kernel_names
    ]
    assert len(samples) == 1 + 20 * n, (len(samples), n)  # supported; 10 + 9 + 1 per pair
    out["ratio"] = out["served"] / out["ip"]
    return out


def main() -> None:
    args = sys.argv[1:]
    profile = bool(args) and args[0] == "--profile"
    sizes = [int(a) for a in args[profile:]] or [100, 1000]
    rows = []
    for n in sizes:
        r = bench_scrape(n, profile)
        print(f"scrape N={n}: {r}", file=sys.stderr)
        rows.append((n, r))
    print("\n## One /metrics scrape of N sessions against `ip -s l2tp show session`\n")
    print(
        "| N | served | served / ip (bound: 2) | ip -s l2tp show session | first scrape"
        " | dumps | decode | text | reference (generate_latest) | peak memory | text |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for n, r in rows:
        print(
            f"| {n} | {r['served']:.3f} s | {r['ratio']:.2f} | {r['ip']:.3f} s"
            f" | {r['first']:.3f} s | {r['dump']:.3f} s | {r['decode']:.3f} s"
            f" | {r['text']:.3f} s | {r['reference']:.3f} s | {r['peak_mib']:.1f} MiB"
            f" | {r['bytes'] / 1024:.0f} KiB |"
        )


if __name__ == "__main__":
    main()
