"""What the benchmarks program: N tunnel+session pairs, as model objects or as API objects, and
the throwaway network namespaces they are programmed in.

Pair i is tunnel ``t{i}`` (ids 1+i, UDP ports 10000+i, 192.0.2.1 -> 192.0.2.2) carrying session
``s{i}`` (ids 1/1) on interface ``pw{i}``, up, MTU 1400: explicit names, as the issue's
comparison with ``ip -batch`` uses them.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kube_l2tp.api.crd import GROUP, SESSION_KIND, TUNNEL_KIND, VERSION
from kube_l2tp.api.model import Interface, Resources, Session, Tunnel, Udp

NODE = "bench"
LOCAL = "192.0.2.1"
REMOTE = "192.0.2.2"
MTU = 1400


def resources(n: int, node: str = NODE) -> Resources:
    tunnels, sessions = [], []
    for i in range(n):
        tid = 1 + i
        tunnels.append(
            Tunnel(f"t{i}", node, tid, tid, LOCAL, REMOTE, "udp", Udp(10000 + i, 10000 + i))
        )
        sessions.append(
            Session(f"s{i}", f"t{i}", 1, 1, interface_name=f"pw{i}", interface=Interface(mtu=MTU))
        )
    return Resources(tuple(tunnels), tuple(sessions))


def pair(
    i: int, node: str = NODE, *, prefix: str = "", tunnel_id: int | None = None, address: str = ""
) -> list[dict[str, Any]]:
    """Pair i as the L2TPTunnel and L2TPSession a user would apply (``address``: an overlay
    address on the session's interface, with a /31 peer)."""
    tid = 1 + i if tunnel_id is None else tunnel_id
    api_version = f"{GROUP}/{VERSION}"
    interface: dict[str, Any] = {"up": True, "mtu": MTU}
    if address:
        interface["addresses"] = [{"address": address}]
    return [
        {
            "apiVersion": api_version,
            "kind": TUNNEL_KIND,
            "metadata": {"name": f"{prefix}t{i}"},
            "spec": {
                "nodeName": node,
                "tunnelID": tid,
                "peerTunnelID": tid,
                "local": LOCAL,
                "remote": REMOTE,
                "encapsulation": "udp",
                "udp": {"sourcePort": 10000 + i, "destinationPort": 10000 + i},
            },
        },
        {
            "apiVersion": api_version,
            "kind": SESSION_KIND,
            "metadata": {"name": f"{prefix}s{i}"},
            "spec": {
                "tunnelRef": f"{prefix}t{i}",
                "nodeName": node,
                "sessionID": 1,
                "peerSessionID": 1,
                "interfaceName": f"pw{i}",
                "interface": interface,
            },
        },
    ]


def write_manifests(directory: Path, docs: list[dict[str, Any]]) -> Path:
    """One multi-document YAML file, as a user's directory of manifests would hold."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pairs.yaml"
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.write_text(yaml.dump_all(docs, Dumper=dumper, sort_keys=False))
    return path


@contextmanager
def namespace(loopback: bool = False) -> Iterator[str]:
    """A fresh network namespace with eth0 (a dummy) holding 192.0.2.1/24, and ``lo`` up if
    asked (for a metrics endpoint or an API server on 127.0.0.1 inside it)."""
    name = f"bench-{os.getpid()}-{time.monotonic_ns()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    commands = [
        "link add eth0 type dummy",
        f"addr add {LOCAL}/24 dev eth0",
        "link set eth0 up",
        *(["link set lo up"] if loopback else []),
    ]
    try:
        subprocess.run(
            ["ip", "-n", name, "-batch", "-"],
            input="\n".join(commands) + "\n",
            text=True,
            check=True,
        )
        yield name
    finally:
        quiesce(name)
        subprocess.run(["ip", "netns", "del", name], check=True)
        time.sleep(1)  # let the kernel finish tearing the namespace down


def quiesce(ns: str, timeout: float = 600.0) -> None:
    """Delete what L2TP tunnels are left and wait until their session interfaces are gone.

    The kernel tears tunnels down after it has answered (and a deleted namespace entirely in the
    background): without this wait, thousands of interfaces would still be going away while the
    next measurement runs.
    """
    shown = subprocess.run(
        ["ip", "-n", ns, "l2tp", "show", "tunnel"], capture_output=True, text=True, check=False
    )
    ids = re.findall(r"^Tunnel (\d+),", shown.stdout, re.MULTILINE)  # none without L2TP
    if ids:
        deletes = "".join(f"l2tp del tunnel tunnel_id {i}\n" for i in ids)
        # unchecked, quiet: a tunnel already on its way out answers ENODEV, which is fine here
        subprocess.run(
            ["ip", "-n", ns, "-force", "-batch", "-"],
            input=deletes,
            text=True,
            capture_output=True,
            check=False,
        )
    deadline = time.monotonic() + timeout
    while l2tp_links(ns):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ns}: L2TP interfaces still there after {timeout:.0f} s")
        time.sleep(0.5)


def l2tp_links(ns: str) -> list[str]:
    """`ip -o link show type l2tp` in ``ns``: a line per session interface."""
    shown = subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", "type", "l2tp"],
        capture_output=True,
        text=True,
        check=True,
    )
    return shown.stdout.splitlines()
