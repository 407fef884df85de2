"""Fixtures for the kernel suite, which runs as root inside the VM (scripts/vm.sh).

The suite must never pass by accident on a machine that cannot run it: unless this is root on a
kernel with L2TP, every test FAILS with the reason (no skips).
"""

from __future__ import annotations

import os
import platform
import secrets
import subprocess
from collections.abc import Iterator
from functools import cache

import pytest
from helpers import CommandError, NetnsFactory, Routed, TwoSites, build_routed, build_two_sites, ip


@cache
def _unfit_reason() -> str | None:
    """Why this machine cannot run the kernel suite, or None if it can."""
    if os.geteuid() != 0:
        return "the kernel suite needs root (run it with: make kernel)"
    try:
        proc = subprocess.run(
            ["ip", "l2tp", "show", "tunnel"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return "iproute2 (ip) is not installed"
    if proc.returncode != 0:
        # The L2TP generic netlink family is missing: "Error talking to the kernel".
        said = "; ".join(line for line in proc.stderr.splitlines() if line.strip())
        return (
            f"kernel {platform.release()} has no L2TP (ip l2tp: {said}); "
            "run the suite in the VM: make kernel"
        )
    missing = [m for m in ("l2tp_eth", "bridge", "8021q", "veth") if not _module_present(m)]
    if missing:
        return f"kernel modules not loaded: {', '.join(missing)} (tests/kernel/run-in-guest.sh)"
    return None


def _module_present(name: str) -> bool:
    return os.path.isdir(f"/sys/module/{name}")


def pytest_report_header() -> str:
    return f"kernel {platform.release()}: {_unfit_reason() or 'root, L2TP available'}"


@pytest.fixture(scope="session", autouse=True)
def _require_l2tp_kernel() -> None:
    reason = _unfit_reason()
    if reason is not None:
        pytest.fail(reason, pytrace=False)


@pytest.fixture
def netns() -> Iterator[NetnsFactory]:
    """A factory of network namespaces, each deleted (with its links and tunnels) afterwards."""
    made: list[str] = []

    def make(prefix: str = "ns") -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        ip(None, "netns", "add", name)
        made.append(name)
        ip(name, "link", "set", "lo", "up")
        return name

    yield make
    errors = []
    for name in reversed(made):
        try:
            ip(None, "netns", "del", name)
        except CommandError as exc:
            errors.append(str(exc))
    assert not errors, f"could not delete namespaces: {errors}"


@pytest.fixture
def two_sites(netns: NetnsFactory) -> TwoSites:
    """site-a and site-b joined by a veth pair: 192.0.2.1/24 and .2, 2001:db8::1/64 and ::2."""
    return build_two_sites(netns)


@pytest.fixture
def routed(netns: NetnsFactory) -> Routed:
    """host-1 <-> router <-> host-2 (192.0.2.0/24, 198.51.100.0/24; 2001:db8:1::/64, :2::/64)."""
    return build_routed(netns)
