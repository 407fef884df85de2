"""Where `kube-l2tp agent`'s memory goes: the CLI itself, measured from inside (agentproc).

    python memprofile.py OBJECTS agent --node N --manifests DIR ... --metrics-bind-address ADDR

- imports: the resident set after each package the agent pulls in, imported one after the
  other in this order (a package shared by two is counted with the first);
- then tracemalloc from the first reconcile on: the peak of Python memory in each phase of the
  agent's work (its functions wrapped here: reading the manifests, validating them, the desired
  state, the reconcile), what is held once a reconcile has left OBJECTS objects ready, by the
  line that allocated it, and the peak during one GET /metrics. One frame only: deeper stacks
  make the pure-Python YAML parser 10-60x slower under tracemalloc.

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
import urllib.request
from collections import Counter
from typing import Any

MIB = 2**20
TOP = 10
PREFIXES = ("/kube_l2tp/", "-packages/", "/lib/python3")  # shortened to what follows them
# what the standalone agent imports, heaviest dependencies first, then the project's modules
IMPORTS = (
    "yaml",
    "jsonschema",
    "cel",
    "pyroute2",
    "prometheus_client",
    "kube_l2tp.cli",
    "kube_l2tp.api.validation",
    "kube_l2tp.netlink.kernel",
    "kube_l2tp.agent.standalone",
    "kube_l2tp.agent.serve",
)
# (module, function, what it does): the agent's phases, looked up where the agent calls them
PHASES = (
    ("kube_l2tp.api.manifests", "load", "read and parse the manifests"),
    ("kube_l2tp.api.validation", "check_documents", "validate them"),
    ("kube_l2tp.agent.standalone", "desired_state", "desired state"),
    ("kube_l2tp.agent.standalone", "reconcile", "reconcile"),
)


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
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
    sizes: Counter[str] = Counter()
    for stat in snapshot.statistics("lineno"):
        sizes[where(stat.traceback[0])] += stat.size
    return sizes


def top(sizes: Counter[str]) -> list[tuple[str, float]]:
    return [(k, round(v / MIB, 2)) for k, v in sizes.most_common(TOP) if v > 0]


def instrument(peaks: dict[str, float]) -> None:
    """Wrap each phase: its peak above the memory it started with, the highest of its calls.

    The phases run one after the other in the agent's thread (none inside another), so each
    may reset tracemalloc's peak.
    """
    for module_name, name, label in PHASES:
        module = importlib.import_module(module_name)
        fn = getattr(module, name, None)
        if fn is None:  # renamed: the profile says so rather than failing
            peaks[label] = float("nan")
            continue

        def wrapper(*args: Any, _fn: Any = fn, _label: str = label, **kwargs: Any) -> Any:
            base = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            try:
                return _fn(*args, **kwargs)
            finally:
                peak = tracemalloc.get_traced_memory()[1] - base
                peaks[_label] = max(peaks.get(_label, 0.0), mib(peak))

        setattr(module, name, wrapper)


def main() -> int:
    objects = int(sys.argv[1])
    argv = sys.argv[2:]
    address = argv[argv.index("--metrics-bind-address") + 1]

    answer: dict[str, Any] = {"objects": objects, "rss_python_mib": mib(rss())}
    steps = []
    for name in IMPORTS:
        before = rss()
        importlib.import_module(name)
        steps.append((name, mib(rss() - before)))
    answer["imports_rss_mib"] = steps
    answer["rss_imported_mib"] = mib(rss())
    from kube_l2tp import cli

    peaks: dict[str, float] = {}
    instrument(peaks)
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
            answer["phase_peaks_mib"] = list(peaks.items())
            answer["converged_traced_mib"] = mib(tracemalloc.get_traced_memory()[0])
            held = by_line(tracemalloc.take_snapshot())
            answer["held_by_line"] = top(held)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            with urllib.request.urlopen(f"http://{address}/metrics", timeout=900) as r:
                answer["scrape_bytes"] = len(r.read())
            current, peak = tracemalloc.get_traced_memory()
            answer["scrape_peak_mib"] = mib(peak - base)
            answer["after_scrape_traced_mib"] = mib(current)
        finally:
            print(json.dumps(answer), flush=True)
            os.kill(os.getpid(), signal.SIGTERM)  # the agent stops between reconciles

    threading.Thread(target=observe, name="memprofile", daemon=True).start()
    tracemalloc.start(1)
    code = cli.main(argv)
    return code if "error" not in answer else 1


if __name__ == "__main__":
    sys.exit(main())
