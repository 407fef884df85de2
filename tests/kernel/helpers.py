"""Helpers for kernel tests: run commands in a network namespace, switch a thread into one, and
build the topologies the suite uses.

Every address here is from the documentation ranges (RFC 5737, RFC 3849), and everything is made
inside namespaces the tests create themselves, inside the VM.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"


class CommandError(AssertionError):
    """A helper command failed; the message carries its stderr, which is what a reader needs."""


def run(cmd: Sequence[str], *, netns: str | None = None, check: bool = True) -> str:
    """Run ``cmd`` (in ``netns`` via ``ip netns exec``) and return its stdout."""
    argv = ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)
    proc = subprocess.run(
        argv, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def ip(netns: str | None, *args: str, check: bool = True) -> str:
    """``ip [-n netns] args``: iproute2 enters the namespace itself, no extra process."""
    return run(["ip", *(["-n", netns] if netns else []), *args], check=check)


def ip_json(netns: str | None, *args: str) -> Any:
    """``ip -j`` output, parsed (a list of objects)."""
    out = ip(netns, "-j", *args)
    return json.loads(out) if out.strip() else []


def ip_batch(netns: str | None, commands: Iterable[str]) -> None:
    """Several ``ip`` commands in one process (each start costs ~60 ms under emulation)."""
    argv = ["ip", *(["-n", netns] if netns else []), "-batch", "-"]
    script = "".join(f"{command}\n" for command in commands)
    proc = subprocess.run(argv, input=script, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise CommandError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")


def link(netns: str | None, ifname: str) -> dict[str, Any]:
    """One link as ``ip -d -j link show`` reports it."""
    (info,) = ip_json(netns, "-d", "link", "show", "dev", ifname)
    return dict(info)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Move the calling thread into network namespace ``name`` for the block, then back.

    Netlink sockets opened inside the block (Links(), LinkEvents()) stay bound to ``name`` after
    it. Only this thread moves (setns(2) is per thread), unlike pyroute2's pushns/popns, which keep
    one process-wide stack and create the namespace if it is missing.
    """
    target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except BaseException:
        os.close(target)
        raise
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


NetnsFactory = Callable[[str], str]


# -- topologies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoSites:
    """The seed's two sites: one veth pair (``eth0`` on both sides) between namespaces a and b."""

    a: str
    b: str
    ifname: str = "eth0"
    a4: str = "192.0.2.1"
    b4: str = "192.0.2.2"
    a6: str = "2001:db8::1"
    b6: str = "2001:db8::2"


def build_two_sites(make_netns: NetnsFactory) -> TwoSites:
    sites = TwoSites(a=make_netns("site-a"), b=make_netns("site-b"))
    ip(sites.a, "link", "add", sites.ifname, "type", "veth", "peer", "name", sites.ifname,
       "netns", sites.b)  # fmt: skip
    for ns, v4, v6 in ((sites.a, sites.a4, sites.a6), (sites.b, sites.b4, sites.b6)):
        ip_batch(
            ns,
            [
                f"addr add {v4}/24 dev {sites.ifname}",
                f"addr add {v6}/64 dev {sites.ifname} nodad",
                f"link set {sites.ifname} up",
            ],
        )
    return sites


@dataclass(frozen=True)
class Routed:
    """The kernel selftest's topology: host-1 <-> router <-> host-2, IPv4 and IPv6.

    host-1 eth0 192.0.2.1/24, 2001:db8:1::1/64 | router eth1 192.0.2.254, 2001:db8:1::254;
    router eth2 198.51.100.254, 2001:db8:2::254 | host-2 eth0 198.51.100.1/24, 2001:db8:2::1/64.
    """

    host1: str
    router: str
    host2: str
    host1_v4: str = "192.0.2.1"
    host2_v4: str = "198.51.100.1"
    host1_v6: str = "2001:db8:1::1"
    host2_v6: str = "2001:db8:2::1"
    router1_v4: str = "192.0.2.254"
    router2_v4: str = "198.51.100.254"
    router1_v6: str = "2001:db8:1::254"
    router2_v6: str = "2001:db8:2::254"


def build_routed(make_netns: NetnsFactory) -> Routed:
    t = Routed(host1=make_netns("host-1"), router=make_netns("router"), host2=make_netns("host-2"))
    ip(t.host1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth1", "netns", t.router)
    ip(t.host2, "link", "add", "eth0", "type", "veth", "peer", "name", "eth2", "netns", t.router)
    ip_batch(
        t.router,
        [
            f"addr add {t.router1_v4}/24 dev eth1",
            f"addr add {t.router1_v6}/64 dev eth1 nodad",
            f"addr add {t.router2_v4}/24 dev eth2",
            f"addr add {t.router2_v6}/64 dev eth2 nodad",
            "link set eth1 up",
            "link set eth2 up",
        ],
    )
    run(
        ["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"],
        netns=t.router,
    )
    for ns, v4, v6, gw4, gw6, far4, far6 in (
        (t.host1, t.host1_v4, t.host1_v6, t.router1_v4, t.router1_v6, "198.51.100.0/24",
         "2001:db8:2::/64"),
        (t.host2, t.host2_v4, t.host2_v6, t.router2_v4, t.router2_v6, "192.0.2.0/24",
         "2001:db8:1::/64"),
    ):  # fmt: skip
        ip_batch(
            ns,
            [
                f"addr add {v4}/24 dev eth0",
                f"addr add {v6}/64 dev eth0 nodad",
                "link set eth0 up",
                f"route add {far4} via {gw4}",
                f"route add {far6} via {gw6}",
            ],
        )
    return t
