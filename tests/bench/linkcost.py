"""What a bridged session costs the kernel, and what interface.ipv6AddrGenMode and interface.qdisc
save: N tunnel+session pairs, each session interface a port of a bridge (1000 ports a bridge: the
kernel's limit is 1024), programmed in a fresh namespace each way:

- ``ip -batch``, the kernel's defaults (IPv6 link-local address, default qdisc): the baseline;
- the agent with the same settings (ipv6AddrGenMode eui64): the agent against ip, like for like;
- the agent with its defaults for a bridge port (ipv6AddrGenMode none);
- the agent with ipv6AddrGenMode none and qdisc noqueue.

Time: until the last write is answered. Kernel memory: MemTotal - MemFree - AnonPages - Cached -
Buffers from /proc/meminfo (what the kernel holds, whoever's Python objects aside), after the
programming less before it, over N; Slab and Percpu alone for comparison.

    python tests/bench/linkcost.py [--profile] [N ...]

In the VM: make bench ARGS="--parts linkcost", or scripts/vm.sh tests/bench/linkcost-in-guest.sh.

With ``--profile``: instead, each way once under cProfile, its top functions by own time to
stderr (a socket's send or recv is the kernel's time: netlink requests are handled in the
sender's system call).
"""

from __future__ import annotations

import cProfile
import io
import pstats
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
from helpers import in_netns, ip_batch
from workload import LOCAL, MTU, NODE, REMOTE, namespace, quiesce, resources

from kube_l2tp.api.model import Bridge, Interface, Resources
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.netlink.kernel import Kernel

PORTS_PER_BRIDGE = 1000
WAYS = ("ip -batch, kernel defaults", "agent, eui64", "agent, none", "agent, none + noqueue")
# --profile only: the agent's order of writes made by ip and tc (each a batch), to tell the
# kernel's share of the agent's time from its own.
IP_WAYS = (
    "ip, the agent's order (kernel defaults)",
    "ip + tc, the agent's writes (none + noqueue)",
)


@dataclass(frozen=True)
class Cost:
    way: str
    n: int
    seconds: float
    kernel_kib: float  # per session
    slab_kib: float
    percpu_kib: float
    runs: tuple[float, ...] = ()  # every run's time, in the order run (bench)


def meminfo() -> dict[str, int]:
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        out[key] = int(value.split()[0])  # kB
    return out


def kernel_held(m: dict[str, int]) -> int:
    return m["MemTotal"] - m["MemFree"] - m["AnonPages"] - m["Cached"] - m["Buffers"]


def bridged(n: int, mode: str | None, qdisc: str | None) -> Resources:
    base = resources(n)
    sessions = tuple(
        replace(
            s,
            interface=Interface(
                mtu=MTU,
                bridge=Bridge(f"br{i // PORTS_PER_BRIDGE}"),
                ipv6_addr_gen_mode=mode,  # type: ignore[arg-type]
                qdisc=qdisc,  # type: ignore[arg-type]
            ),
        )
        for i, s in enumerate(base.sessions)
    )
    return Resources(base.tunnels, sessions)


def batch_commands(n: int) -> list[str]:
    bridges = sorted({f"br{i // PORTS_PER_BRIDGE}" for i in range(n)})
    out = [f"link add {b} type bridge" for b in bridges] + [f"link set {b} up" for b in bridges]
    for i in range(n):
        out += [
            f"l2tp add tunnel tunnel_id {1 + i} peer_tunnel_id {1 + i} encap udp local {LOCAL}"
            f" remote {REMOTE} udp_sport {10000 + i} udp_dport {10000 + i}",
            f"l2tp add session name pw{i} tunnel_id {1 + i} session_id 1 peer_session_id 1",
            f"link set pw{i} master br{i // PORTS_PER_BRIDGE}",
            f"link set pw{i} up mtu {MTU}",
        ]
    return out


def agent_order(n: int, ns: str, mode: str | None, qdisc: str | None) -> None:
    """What the agent writes, in its order (every tunnel, every session, then each interface's
    qdisc, addrgenmode and up, then each bridge port), by ip and tc, a batch per phase, each
    phase timed to stderr: the kernel's share of the agent's time, phase by phase."""
    bridges = sorted({f"br{i // PORTS_PER_BRIDGE}" for i in range(n)})
    commands = batch_commands(n)
    phases: list[tuple[str, str, list[str]]] = [
        ("bridges", "ip", [f"link add {b} type bridge" for b in bridges]),
        ("bridges up", "ip", [f"link set {b} up" for b in bridges]),
        ("tunnels", "ip", [c for c in commands if c.startswith("l2tp add tunnel")]),
        ("sessions", "ip", [c for c in commands if c.startswith("l2tp add session")]),
    ]
    if qdisc:
        phases.append(("qdisc", "tc", [f"qdisc replace dev pw{i} root {qdisc}" for i in range(n)]))
    if mode:
        modes = [f"link set pw{i} addrgenmode {mode}" for i in range(n)]
        phases.append(("addrgenmode", "ip", modes))
    phases.append(("up", "ip", [f"link set pw{i} up mtu {MTU}" for i in range(n)]))
    phases.append(
        ("join", "ip", [f"link set pw{i} master br{i // PORTS_PER_BRIDGE}" for i in range(n)])
    )
    times = []
    for name, tool, lines in phases:
        start = time.perf_counter()
        script = "".join(f"{line}\n" for line in lines)
        subprocess.run([tool, "-n", ns, "-batch", "-"], input=script, text=True, check=True)
        times.append(f"{name} {time.perf_counter() - start:.1f} s")
    print(f"linkcost: phases, N={n}, {mode}, {qdisc}: {', '.join(times)}", file=sys.stderr)


def agent(n: int, mode: str | None, qdisc: str | None, ns: str) -> None:
    desired = desired_state(bridged(n, mode, qdisc), NODE)
    owned = Owned()
    with in_netns(ns), Kernel() as kernel:
        for _ in range(5):
            if reconcile(kernel, desired, owned).converged:
                return
    raise AssertionError(f"{n} bridged sessions did not converge")


def settle(timeout: float = 120.0) -> None:
    """Wait until the kernel's memory stops shrinking: a deleted namespace of N bridged sessions
    is torn down in the background for many seconds under TCG, and would slow (and skew the
    memory of) the next measurement."""
    deadline = time.monotonic() + timeout
    last = kernel_held(meminfo())
    while time.monotonic() < deadline:
        time.sleep(2)
        now = kernel_held(meminfo())
        if abs(now - last) < 1024:  # kB: less than 1 MiB moved in 2 s
            return
        last = now


def measure(way: str, n: int) -> Cost:
    settle()
    with namespace() as ns:
        run = {
            WAYS[0]: partial(ip_batch, ns, batch_commands(n)),
            WAYS[1]: partial(agent, n, "eui64", None, ns),
            WAYS[2]: partial(agent, n, None, None, ns),
            WAYS[3]: partial(agent, n, None, "noqueue", ns),
            IP_WAYS[0]: partial(agent_order, n, ns, None, None),
            IP_WAYS[1]: partial(agent_order, n, ns, "none", "noqueue"),
        }[way]
        before = meminfo()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        time.sleep(2)  # IPv6 autoconfiguration's timers (DAD, router solicitations) run on
        after = meminfo()
        quiesce(ns)
    return Cost(
        way,
        n,
        seconds,
        (kernel_held(after) - kernel_held(before)) / n,
        (after["Slab"] - before["Slab"]) / n,
        (after["Percpu"] - before["Percpu"]) / n,
    )


def report(rows: list[Cost], repeat: int = 2) -> None:
    print("## Kernel cost of a bridged session (interface.ipv6AddrGenMode, interface.qdisc)\n")
    print(
        "N tunnel+session pairs, each session interface up (MTU 1400) and a port of a bridge,"
        " programmed in a fresh namespace once the kernel's memory has settled. Kernel memory"
        " from /proc/meminfo (MemTotal - MemFree - AnonPages - Cached - Buffers), after less"
        f" before, per session. Each way {repeat} time(s) (forward, then reverse order): best"
        " time, least memory; every run's time listed.\n"
    )
    print("| N | way | time | vs ip -batch | runs | kernel memory / session | Slab | Percpu |")
    print("|---|---|---|---|---|---|---|---|")
    base = {r.n: r for r in rows if r.way == WAYS[0]}
    for r in rows:
        ratio = base[r.n].seconds / r.seconds if r.n in base else float("nan")
        print(
            f"| {r.n} | {r.way} | {r.seconds:.1f} s | {ratio:.2f}x faster"
            f" | {', '.join(f'{t:.1f}' for t in r.runs)} |"
            f" {r.kernel_kib:.0f} KiB | {r.slab_kib:.0f} KiB | {r.percpu_kib:.0f} KiB |"
        )
    print()


def bench(sizes: list[int], repeat: int = 2, ways: Sequence[str] = WAYS) -> list[Cost]:
    """Each way ``repeat`` times, in forward then reverse order (a run after a heavy one was seen
    2x slower); the best time and the smallest memory of each way count."""
    rows = []
    for n in sizes:
        runs: dict[str, list[Cost]] = {way: [] for way in ways}
        for rep in range(repeat):
            for way in ways if rep % 2 == 0 else ways[::-1]:
                cost = measure(way, n)
                print(f"linkcost: {cost}", file=sys.stderr, flush=True)
                runs[way].append(cost)
        for way in ways:
            best = min(runs[way], key=lambda c: c.seconds)
            least = min(runs[way], key=lambda c: c.kernel_kib)
            runs_s = tuple(c.seconds for c in runs[way])
            rows.append(replace(least, seconds=best.seconds, runs=runs_s))
    return rows


def profile(n: int) -> None:
    for way in (WAYS[0], *IP_WAYS, WAYS[1], WAYS[3]):
        if way not in WAYS:
            print(f"--- {measure(way, n)}", file=sys.stderr, flush=True)
            continue
        profiler = cProfile.Profile()
        cost = profiler.runcall(measure, way, n)
        text = io.StringIO()
        stats = pstats.Stats(profiler, stream=text)
        stats.sort_stats("tottime").print_stats(15)
        stats.sort_stats("cumulative").print_stats("kube_l2tp", 25)
        print(f"--- {cost}\n{text.getvalue()}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    sizes = [int(a) for a in args if a != "--profile"] or [1000]
    if "--profile" in args:
        for n in sizes:
            profile(n)
    else:
        report(bench(sizes))
