"""A kernel whose L2TP modules are missing: clear per-object results, then recovery.

Named to run last in the single pytest process of a VM boot: it unloads the L2TP modules and
disables module autoloading for a moment, then restores both.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import TwoSites, in_netns

from kube_l2tp import embedded
from kube_l2tp.api import validation
from kube_l2tp.core.desired import Owned, desired_state
from kube_l2tp.core.reconcile import reconcile
from kube_l2tp.files import manifests as manifest_files
from kube_l2tp.netlink.kernel import Kernel

MODPROBE = Path("/proc/sys/kernel/modprobe")
L2TP_MODULES = ["l2tp_eth", "l2tp_ip6", "l2tp_ip", "l2tp_netlink", "l2tp_core"]


@pytest.fixture
def no_autoload() -> Iterator[None]:
    """Module autoloading off (the kernel runs /bin/false), restored afterwards."""
    saved = MODPROBE.read_text().strip()
    MODPROBE.write_text("/bin/false\n")
    try:
        yield
    finally:
        MODPROBE.write_text(saved + "\n")
        for module in ("l2tp_eth", "l2tp_ip", "l2tp_ip6"):
            subprocess.run(["modprobe", module], check=True)


def unload(*modules: str) -> None:
    """rmmod each; namespaces deleted by earlier tests release their tunnels asynchronously."""
    for module in modules:
        for _ in range(50):
            if not Path(f"/sys/module/{module}").exists():
                break
            if subprocess.run(["rmmod", module], check=False, capture_output=True).returncode:
                time.sleep(0.2)
        assert not Path(f"/sys/module/{module}").exists(), f"cannot unload {module}"


def test_missing_modules_are_reported_and_recovered(two_sites: TwoSites, no_autoload: None) -> None:
    res = validation.check_documents(manifest_files.load([embedded.DIRECTORY])).resources
    desired = desired_state(res, "site-a")
    owned = Owned()
    unload(*L2TP_MODULES)
    with in_netns(two_sites.a), Kernel() as kernel:
        result = reconcile(kernel, desired, owned)
    assert set(result.results) == {"L2TPTunnel/site-a", "L2TPSession/site-a-1"}
    for r in result.results.values():
        assert not r.ready and r.reason == "KernelUnsupported", r
        assert "modprobe" in r.message
    # the L2TP core is back but Ethernet pseudowires are not: the tunnel works, the session says why
    subprocess.run(["modprobe", "l2tp_netlink"], check=True)
    with in_netns(two_sites.a), Kernel() as kernel:
        result = reconcile(kernel, desired, owned)
    assert result.results["L2TPTunnel/site-a"].ready
    session = result.results["L2TPSession/site-a-1"]
    assert session.reason == "KernelUnsupported" and "l2tp_eth" in session.message, session
    subprocess.run(["modprobe", "l2tp_eth"], check=True)
    with in_netns(two_sites.a), Kernel() as kernel:
        assert reconcile(kernel, desired, owned).converged
