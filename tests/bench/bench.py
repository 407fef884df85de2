"""Benchmarks of the agent against iproute2 in the same guest (make bench).

Measures cold programming of N tunnel+session pairs (UDP, interface up with an MTU) three ways
(the agent, `ip -batch` with the same commands, a shell loop of `ip` commands), a restart over
N live sessions (time and kernel writes), and removal of N (the agent, which deletes tunnels and
lets the kernel cascade, against `ip -batch` deleting the same tunnels). Each runs in a fresh
network namespace. Prints markdown between markers for BENCHMARKS.md.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
from helpers import in_netns

from kube_l2tp.api.model import Interface, Resources, Session, Tunnel, Udp
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.core.render import render
from kube_l2tp.netlink.kernel import Kernel

NODE = "bench"


def resources(n: int) -> Resources:
    tunnels, sessions = [], []
    for i in range(n):
        tid = 1 + i
        tunnels.append(
            Tunnel(
                f"t{i}", NODE, tid, tid, "192.0.2.1", "192.0.2.2", "udp", Udp(10000 + i, 10000 + i)
            )
        )
        sessions.append(
            Session(f"s{i}", f"t{i}", 1, 1, interface_name=f"pw{i}", interface=Interface(mtu=1400))
        )
    return Resources(tuple(tunnels), tuple(sessions))


@contextmanager
def namespace() -> Iterator[str]:
    name = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "add", "eth0", "type", "dummy"], check=True)
    subprocess.run(["ip", "-n", name, "addr", "add", "192.0.2.1/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "eth0", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)
        time.sleep(1)  # let the kernel finish tearing the namespace down


def ip_commands(res: Resources) -> list[str]:
    return [c.removeprefix("ip ") for c in render(res).splitlines() if c.startswith("ip ")]


def timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def batch(ns: str, commands: list[str]) -> None:
    subprocess.run(
        ["ip", "-n", ns, "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True
    )


def bench_n(n: int, loop: bool) -> dict[str, float]:
    res = resources(n)
    out: dict[str, float] = {}
    with namespace() as ns:
        owned = Owned()
        with in_netns(ns), Kernel() as kernel:
            desired = desired_state(res, NODE)
            start = time.perf_counter()
            result = reconcile(kernel, desired, owned)
            out["agent"] = time.perf_counter() - start
            assert result.converged, [r for r in result.results.values() if not r.ready][:3]
            start = time.perf_counter()
            again = reconcile(kernel, desired, owned)
            out["restart"] = time.perf_counter() - start
            out["restart_writes"] = again.writes
            start = time.perf_counter()
            gone = reconcile(kernel, desired_state(Resources(), NODE), owned)
            out["agent_remove"] = time.perf_counter() - start
            assert gone.converged
            # the kernel tears tunnels down after acking: wait (not timed, as for ip -batch)
            deadline = time.monotonic() + 120
            while kernel.dump_tunnels():
                assert time.monotonic() < deadline, "tunnels still present after 120 s"
                time.sleep(0.1)
    commands = ip_commands(res)
    with namespace() as ns:
        out["batch"] = timed(lambda: batch(ns, commands))
        deletes = [f"l2tp del tunnel tunnel_id {t.tunnel_id}" for t in res.tunnels]
        out["batch_remove"] = timed(lambda: batch(ns, deletes))
    if loop:
        with namespace() as ns:
            out["loop"] = timed(
                lambda: [subprocess.run(["ip", "-n", ns, *c.split()], check=True) for c in commands]
            )
    return out


def bench_scrape(n: int, repeat: int = 3) -> dict[str, float]:
    """One /metrics scrape over N managed sessions against `ip -s l2tp show session`.

    Programs N tunnel+session pairs, then times the kernel collector's full scrape (one tunnel
    dump, one session dump, the exposition text) and `ip -s l2tp show session` in the same
    namespace (best of ``repeat``), and the peak Python memory of one scrape (tracemalloc).
    The issue's bound: a scrape takes at most 2x what ip takes.
    """
    import tracemalloc

    from prometheus_client import CollectorRegistry, generate_latest

    from kube_l2tp.metrics.kernel import KernelCollector, Names
    from kube_l2tp.netlink.l2tp import L2tp

    res = resources(n)
    out: dict[str, float] = {}
    with namespace() as ns:
        with in_netns(ns), Kernel() as kernel:
            desired = desired_state(res, NODE)
            assert reconcile(kernel, desired, Owned()).converged
            with L2tp() as l2tp:  # the scraper's own socket, as the agent's HTTP thread has
                names = Names.of(desired)
                collector = KernelCollector(
                    NODE, lambda: (l2tp.dump_tunnels(), l2tp.dump_sessions()), lambda: names
                )
                registry = CollectorRegistry()
                registry.register(collector)
                scrapes = []
                for _ in range(repeat):
                    start = time.perf_counter()
                    text = generate_latest(registry)
                    scrapes.append(time.perf_counter() - start)
                tracemalloc.start()
                generate_latest(registry)
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
        ip_times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run(
                ["ip", "-n", ns, "-s", "l2tp", "show", "session"], check=True, capture_output=True
            )
            ip_times.append(time.perf_counter() - start)
    out["scrape"] = min(scrapes)
    out["ip_show"] = min(ip_times)
    out["ratio"] = out["scrape"] / out["ip_show"]
    out["peak_mib"] = peak / 2**20
    out["bytes"] = len(text)
    return out


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000]
    rows = []
    for n in sizes:
        r = bench_n(n, loop=n <= 100)
        rows.append((n, r))
        print(f"N={n}: {r}", file=sys.stderr)
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "?",
    )
    print("=== BENCHMARKS.md ===")
    print("# Benchmarks\n")
    print(f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}")
    print(
        f"- guest kernel: {platform.release()} under QEMU TCG (software emulation),"
        f" {os.cpu_count()} vCPUs"
    )
    print(f"- CPU: {cpu}; python {platform.python_version()}")
    print("- every figure in one guest boot; compare ratios, not absolute times (TCG is slow)\n")
    print("## Cold programming of N tunnel+session pairs (UDP, link up, MTU 1400)\n")
    print("| N | agent | ip -batch | agent / batch | shell loop | loop / agent |")
    print("|---|---|---|---|---|---|")
    for n, r in rows:
        loop = (
            f"{r['loop']:.2f} s | {r['loop'] / r['agent']:.0f}x" if "loop" in r else "not run | -"
        )
        print(
            f"| {n} | {r['agent']:.2f} s | {r['batch']:.2f} s"
            f" | {r['agent'] / r['batch']:.2f} | {loop} |"
        )
    print("\n## Restart over N live sessions, and removal of N\n")
    print(
        "| N | restart (converged check) | kernel writes | agent removal | ip -batch del tunnel |"
    )
    print("|---|---|---|---|---|")
    for n, r in rows:
        print(
            f"| {n} | {r['restart']:.2f} s | {int(r['restart_writes'])}"
            f" | {r['agent_remove']:.2f} s | {r['batch_remove']:.2f} s |"
        )
    scrapes = []
    for n in sizes:
        r = bench_scrape(n)
        scrapes.append((n, r))
        print(f"scrape N={n}: {r}", file=sys.stderr)
    print("\n## One /metrics scrape of N sessions against `ip -s l2tp show session`\n")
    print("| N | scrape | ip -s l2tp show session | scrape / ip (bound: 2) | peak memory | text |")
    print("|---|---|---|---|---|---|")
    for n, r in scrapes:
        print(
            f"| {n} | {r['scrape']:.3f} s | {r['ip_show']:.3f} s | {r['ratio']:.2f}"
            f" | {r['peak_mib']:.1f} MiB | {r['bytes'] / 1024:.0f} KiB |"
        )
    print("=== end ===")


if __name__ == "__main__":
    main()
