"""A real `kube-l2tp agent` process (standalone, --manifests DIR), as a host runs it.

Measured on it: its resident set (VmRSS, VmHWM from /proc) once it has converged on N pairs and
after one /metrics scrape over HTTP (the issue's target: 80 MB at 4000 sessions), and how fast it
repairs a tunnel deleted by hand (`ip l2tp del tunnel`): the agent hears the L2TP genl and
rtnetlink events and reconciles; its 30 s resync is only the backstop.
"""

from __future__ import annotations

import json
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from workload import MTU, NODE, l2tp_links, namespace, pair, write_manifests

sys.path.insert(0, str(Path(__file__).parent.parent / "kernel"))
from helpers import in_netns

# loop.Agent.reconcile_once's INFO line (a reconcile that wrote something)
RECONCILED = re.compile(r"reconciled in ([0-9.]+)s: (\d+) writes, (\d+)/(\d+) ready")
PORT = 9717
SETTLE = 10.0  # seconds with the kernel complete and no INFO line: converged all the same
LOOK_EVERY = 5.0  # seconds between looks at the kernel
IFF_UP = 1
MIB = 2**20


class AgentProcess:
    """`ip netns exec NS kube-l2tp agent ...` (ip execs it: the pid is the agent's own)."""

    def __init__(self, ns: str, manifests: Path, workdir: Path, metrics: bool = True) -> None:
        self.ns = ns
        self.log = workdir / "agent.log"
        self.argv = [
            *("ip", "netns", "exec", ns, "kube-l2tp", "agent", "--node", NODE),
            *("--manifests", str(manifests), "--state-dir", str(workdir / "state")),
            *("--metrics-bind-address", f"127.0.0.1:{PORT}" if metrics else "off"),
        ]
        self.started = 0.0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes]:
        assert self._proc is not None, "not started"
        return self._proc

    def __enter__(self) -> Self:
        with self.log.open("wb") as out:
            self.started = time.perf_counter()
            self._proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.proc.send_signal(signal.SIGTERM)  # stops between reconciles, kernel left as it is
        try:
            code = self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the agent ignored SIGTERM for 120 s\n{self.tail()}") from None
        if exc_type is None and code != 0:
            raise AssertionError(f"the agent exited {code}\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def exec_done(self, timeout: float = 30.0) -> None:
        """Wait until the pid is the agent's (``ip netns exec`` has exec'd it): memory read from
        /proc before that would be ip's, or this process's (a fork not yet exec'd)."""
        deadline = time.monotonic() + timeout
        while True:
            cmdline = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().split(b"\0")
            if any(b"kube-l2tp" in part for part in cmdline):
                return
            assert time.monotonic() < deadline, f"not the agent after {timeout} s: {cmdline}"
            time.sleep(0.05)

    def converged(self, pairs: int, timeout: float) -> float:
        """Wait until the agent has programmed ``pairs`` pairs; the seconds its reconcile took.

        Its INFO line for a reconcile that wrote something and left every object ready says so
        (and how long that took). A reconcile that only finished what an earlier one started
        writes nothing and logs at DEBUG, so the kernel is watched too: every session interface
        up with its MTU, and nothing logged for SETTLE seconds, counts (its time is then NaN).
        """
        self.exec_done()
        deadline = time.monotonic() + timeout
        complete_since: float | None = None
        next_look = time.monotonic() + LOOK_EVERY
        while time.monotonic() < deadline:
            for m in RECONCILED.finditer(self.log.read_text(errors="replace")):
                if int(m[3]) == int(m[4]) == 2 * pairs:
                    return float(m[1])
            if self.proc.poll() is not None:
                raise AssertionError(f"the agent exited {self.proc.returncode}\n{self.tail()}")
            now = time.monotonic()
            if now >= next_look:  # not too often: a dump of 4000 links costs CPU under TCG
                next_look = now + LOOK_EVERY
                if _links_up(self.ns) != pairs:
                    complete_since = None
                elif complete_since is None:
                    complete_since = now
                elif now - complete_since >= SETTLE:
                    return float("nan")
            time.sleep(0.5)
        raise AssertionError(f"the agent did not program {pairs} pairs in time\n{self.tail()}")

    def memory(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in bytes."""
        fields = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) * 1024  # kB
        return fields["VmRSS"], fields["VmHWM"]

    def scrape(self) -> tuple[float, bytes]:
        """One GET /metrics (seconds, body), from inside the agent's namespace."""
        with in_netns(self.ns):
            start = time.perf_counter()
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=900) as r:
                body: bytes = r.read()
            return time.perf_counter() - start, body


@dataclass(frozen=True)
class Memory:
    sessions: int
    start_to_converged: float  # process start to its converged log line (Python start-up too)
    reconcile: float  # the agent's own figure for that reconcile (NaN: it did not log one)
    rss_converged: int
    hwm_converged: int
    scrape: float  # GET /metrics over HTTP
    scrape_bytes: int
    rss_scraped: int
    hwm_scraped: int
    profile: dict[str, Any] | None = None  # memprofile.py's answers, when it was run:
    traced: dict[str, Any] | None = None  # the resident set's, and tracemalloc's
    agent_log: str = field(default="", repr=False)  # its log up to the scrape, for progress


def memory(n: int, timeout: float = 3600.0) -> Memory:
    """The agent process's memory at N pairs (interfaces up, MTU 1400), metrics served."""
    with tempfile.TemporaryDirectory(prefix="bench-mem-") as tmp:
        work = Path(tmp)
        write_manifests(work / "manifests", [doc for i in range(n) for doc in pair(i)])
        with namespace(loopback=True) as ns, AgentProcess(ns, work / "manifests", work) as agent:
            reconcile = agent.converged(n, timeout)
            converged_at = time.perf_counter() - agent.started
            time.sleep(1)  # the log line comes just before the reconcile's callbacks
            rss_converged, hwm_converged = agent.memory()
            scrape, body = agent.scrape()
            rss_scraped, hwm_scraped = agent.memory()
            agent_log = agent.tail(12)
    served = body.count(b"\nl2tp_session_rx_packets_total{")
    assert served == n, f"/metrics has {served} sessions' rx_packets, not {n}"
    return Memory(
        n,
        converged_at,
        reconcile,
        rss_converged,
        hwm_converged,
        scrape,
        len(body),
        rss_scraped,
        hwm_scraped,
        agent_log=agent_log,
    )


def profile(n: int, trace: bool = False, timeout: float = 3600.0) -> dict[str, Any]:
    """memprofile.py (the same agent, measured from inside) at N pairs; its JSON answer."""
    with tempfile.TemporaryDirectory(prefix="bench-prof-") as tmp:
        work = Path(tmp)
        write_manifests(work / "manifests", [doc for i in range(n) for doc in pair(i)])
        with namespace(loopback=True) as ns:
            argv = [
                *("ip", "netns", "exec", ns, sys.executable),
                *(str(Path(__file__).parent / "memprofile.py"), str(2 * n)),
                *(["--trace"] if trace else []),
                *("agent", "--node", NODE, "--manifests", str(work / "manifests")),
                *("--state-dir", str(work / "state")),
                *("--metrics-bind-address", f"127.0.0.1:{PORT}"),
            ]
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, check=False
            )
    if proc.returncode != 0:
        raise AssertionError(f"memprofile.py exited {proc.returncode}: {proc.stderr[-2000:]}")
    answer: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


# -- drift repair ----------------------------------------------------------------------------


def _repaired(ipr: IPRoute, ifname: str, address: str, old_index: int) -> int:
    """The ifindex of ``ifname`` once it is a new interface, up, with ``address``; else 0."""
    try:
        (link,) = ipr.link("get", ifname=ifname)
    except NetlinkError:
        return 0  # not there (yet)
    index = int(link["index"])
    if index == old_index or not link["flags"] & IFF_UP:
        return 0
    local = address.split("/", maxsplit=1)[0]
    if not any(a.get_attr("IFA_LOCAL") == local for a in ipr.get_addr(index=index)):
        return 0
    return index


def _links_up(ns: str) -> int:
    """L2TP interfaces in ``ns`` that are up with the workload's MTU."""
    return len(re.findall(rf"<[^>]*\bUP\b[^>]*> mtu {MTU} ", "\n".join(l2tp_links(ns))))


def _index_of(ipr: IPRoute, ifname: str) -> int:
    (link,) = ipr.link("get", ifname=ifname)
    return int(link["index"])


@dataclass(frozen=True)
class Drift:
    sessions: int
    tries: int
    seconds: tuple[float, ...]  # per try: `ip l2tp del tunnel` returned -> repaired

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def max(self) -> float:
        return max(self.seconds)


def drift(sessions: int = 4, tries: int = 20, timeout: float = 120.0) -> Drift:
    """Delete one managed tunnel by hand, ``tries`` times (round robin over ``sessions``), and
    time each until its session's interface is back: a new interface, up, with its address.

    The clock starts when `ip l2tp del tunnel` has returned (the kernel has acknowledged; its
    teardown finishes asynchronously), and the interface is polled every 10 ms through a netlink
    socket of this process (pyroute2, independent of the agent's own code).
    """
    addresses = [f"198.51.100.{1 + i}/32" for i in range(sessions)]
    docs = [doc for i in range(sessions) for doc in pair(i, address=addresses[i])]
    seconds = []
    with tempfile.TemporaryDirectory(prefix="bench-drift-") as tmp:
        work = Path(tmp)
        write_manifests(work / "manifests", docs)
        with (
            namespace() as ns,
            AgentProcess(ns, work / "manifests", work, metrics=False) as agent,
        ):
            agent.converged(sessions, timeout)
            with in_netns(ns):
                ipr = IPRoute(groups=0)  # requests only: no events piling up
            try:
                for t in range(tries):
                    i = t % sessions
                    old = _index_of(ipr, f"pw{i}")
                    subprocess.run(
                        ["ip", "-n", ns, "l2tp", "del", "tunnel", "tunnel_id", str(1 + i)],
                        check=True,
                    )
                    start = time.perf_counter()
                    while not _repaired(ipr, f"pw{i}", addresses[i], old):
                        if time.perf_counter() - start > timeout:
                            raise AssertionError(f"pw{i} not repaired in {timeout} s")
                        time.sleep(0.01)
                    seconds.append(time.perf_counter() - start)
                    time.sleep(1)  # the agent settles (its own writes' events) before the next
            finally:
                ipr.close()
    return Drift(sessions, tries, tuple(seconds))
