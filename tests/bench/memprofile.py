"""Where `kube-l2tp agent`'s memory goes: the CLI itself, measured from inside (agentproc).

    python memprofile.py OBJECTS [--trace] agent --node N --manifests DIR ... \
        --metrics-bind-address ADDR

Without --trace, the resident set (VmRSS) only, so the figures are the process's own:

- imports: its growth by each of the agent's own modules, in the order `kube-l2tp agent`
  imports them, with the third-party packages each brought in first;
- phases: its growth in each phase of the agent's first reconcile (the agent's functions are
  wrapped here: reading the manifests, validating them, the desired state, the reconcile),
  once a reconcile has left OBJECTS objects ready, and by one GET /metrics.

With --trace, tracemalloc from the first reconcile on (its own tables inflate the resident set,
so that is not read then): each phase's peak of Python memory, what is held once converged by
the line that allocated it, the peak of one GET /metrics and what it leaves held, by line. One
frame only: deeper stacks make the pure-Python YAML parser 10-60x slower under tracemalloc.

Prints one JSON line, then stops the agent with SIGTERM, as on a node.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
import time
import tracemalloc
from collections import Counter
from typing import Any

MIB = 2**20
TOP = 10
PREFIXES = ("/kube_l2tp/", "-packages/", "/lib/python3")  # shortened to what follows them
# what `kube-l2tp agent` imports, in its order (cli.cmd_agent); the CEL engine loads later, at the
# first validation, so it shows in that phase
STEPS = (
    "kube_l2tp.cli",
    "kube_l2tp.agent.events",
    "kube_l2tp.agent.loop",
    "kube_l2tp.agent.standalone",
    "kube_l2tp.agent.statestore",
    "kube_l2tp.netlink.kernel",
    "kube_l2tp.agent.serve",
)
SITE = "-packages/"  # site-packages or dist-packages: a third-party module
# (module, function, what it does): the agent's phases, looked up where the agent calls them
PHASES = (
    ("kube_l2tp.core.lastgood", "LastGood.select", "read, parse and validate the manifests"),
    ("kube_l2tp.agent.loop", "desired_state", "desired state"),
    ("kube_l2tp.agent.loop", "reconcile", "reconcile"),
)


def status(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as lines:
        for line in lines:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def mib(size: float) -> float:
    return round(size / MIB, 1)


def where(frame: tracemalloc.Frame) -> str:
    path = frame.filename
    for prefix in PREFIXES:
        if prefix in path:
            path = path.split(prefix, 1)[1]
            if prefix == "/lib/python3":
                path = path.split("/", 1)[-1]
            break
    return f"{path}:{frame.lineno}"


def by_line(snapshot: tracemalloc.Snapshot) -> Counter[str]:
    """Sizes by allocating line, leaving out this profiler's own (and tracemalloc's)."""
    mine = [tracemalloc.Filter(False, f) for f in (__file__, tracemalloc.__file__)]
    sizes: Counter[str] = Counter()
    for stat in snapshot.filter_traces(mine).statistics("lineno"):
        sizes[where(stat.traceback[0])] += stat.size
    return sizes


def top(sizes: Counter[str]) -> list[tuple[str, float]]:
    return [(k, round(v / MIB, 2)) for k, v in sizes.most_common(TOP) if v > 0]


def third_party() -> set[str]:
    """Top-level names of the third-party packages imported so far."""
    return {
        name.split(".", 1)[0]
        for name, module in list(sys.modules.items())
        if SITE in (getattr(module, "__file__", None) or "")
    }


def instrument(phases: dict[str, float], trace: bool) -> None:
    """Wrap each phase: the growth of the resident set, or with ``trace`` the peak of Python
    memory above what the phase started with; the highest over its calls.

    The phases run one after the other in the agent's thread (none inside another), so each
    may reset tracemalloc's peak.
    """
    for module_name, dotted, label in PHASES:
        owner: Any = importlib.import_module(module_name)
        *path, name = dotted.split(".")  # "Class.method": wrapped on the class
        for part in path:
            owner = getattr(owner, part, None)
        fn = getattr(owner, name, None)
        if fn is None:  # renamed: the profile says so rather than failing
            phases[label] = float("nan")
            continue

        def wrapper(*args: Any, _fn: Any = fn, _label: str = label, **kwargs: Any) -> Any:
            base = tracemalloc.get_traced_memory()[0] if trace else status()
            tracemalloc.reset_peak()
            try:
                return _fn(*args, **kwargs)
            finally:
                after = tracemalloc.get_traced_memory()[1] if trace else status()
                phases[_label] = max(phases.get(_label, 0.0), mib(after - base))

        setattr(owner, name, wrapper)


def main() -> int:
    objects = int(sys.argv[1])
    trace = sys.argv[2] == "--trace"
    argv = sys.argv[3:] if trace else sys.argv[2:]
    address = argv[argv.index("--metrics-bind-address") + 1]

    answer: dict[str, Any] = {"objects": objects, "traced": trace, "rss_python": mib(status())}
    steps = []
    for name in STEPS:
        before, packages = status(), third_party()
        importlib.import_module(name)
        steps.append((name, mib(status() - before), sorted(third_party() - packages)))
    answer["imports"] = steps
    answer["rss_imported"] = mib(status())
    from kube_l2tp import cli

    phases: dict[str, float] = {}
    instrument(phases, trace)
    converged = threading.Event()

    class Converged(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            args = record.args
            if (
                str(record.msg).startswith("reconciled in")
                and isinstance(args, tuple)
                and args[2] == args[3] == objects
            ):
                converged.set()

    logging.getLogger("kube_l2tp.agent").addHandler(Converged())

    def observe() -> None:
        try:
            if not converged.wait(7200):
                answer["error"] = f"no reconcile left {objects} objects ready in two hours"
                return
            time.sleep(1)
            import urllib.request  # here: not counted with the agent's imports

            answer["phases"] = list(phases.items())
            held: Counter[str] = Counter()
            if trace:
                answer["converged_traced"] = mib(tracemalloc.get_traced_memory()[0])
                held = by_line(tracemalloc.take_snapshot())
                answer["held_by_line"] = top(held)
            else:
                answer["rss_converged"] = mib(status())
                answer["hwm_converged"] = mib(status("VmHWM"))
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            size = 0
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=900) as r:
                while piece := r.read(1 << 16):  # the scraper is in this process: keep none
                    size += len(piece)
            answer["scrape_bytes"] = size
            if trace:
                current, peak = tracemalloc.get_traced_memory()
                answer["scrape_peak_traced"] = mib(peak - base)
                answer["after_scrape_traced"] = mib(current)
                left = by_line(tracemalloc.take_snapshot()) - held
                answer["left_by_scrape_by_line"] = top(left)
            else:
                answer["rss_scraped"] = mib(status())
                answer["hwm_scraped"] = mib(status("VmHWM"))
        finally:
            print(json.dumps(answer), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # the agent stops between reconciles

    threading.Thread(target=observe, name="memprofile", daemon=True).start()
    if trace:
        tracemalloc.start(1)
    code = cli.main(argv)
    return code if "error" not in answer else 1


if __name__ == "__main__":
    sys.exit(main())
