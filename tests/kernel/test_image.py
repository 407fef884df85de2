"""The project's image, run for real: the OCI archive `make image` builds, unpacked by umoci on
the host (build/kube-l2tp-image-bundle, which the VM sees read-only), started with crun in the VM.

The agent runs as the chart's DaemonSet runs it: uid 0 in the network namespace it is started in
(no network namespace of its own), NET_ADMIN and no other capability, a read-only root file
system, and it programs the seed's wire from the embedded manifests: pings cross it. The
operator's entrypoint starts from the same image as its non-root user with no capability and,
with no API server here, says why it cannot run and exits non-zero. Without the image every test
here FAILS (make kernel builds it first); it never skips.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from helpers import TwoSites, ip

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = REPO / "build/kube-l2tp-image.tar"
BUNDLE = REPO / "build/kube-l2tp-image-bundle"
CAP_NET_ADMIN = 12
Run = Callable[..., subprocess.CompletedProcess[str]]
# cgroup2 alone at /sys/fs/cgroup unless it is there already (the VM's own /sys has it; the host's
# hybrid hierarchy and the fresh /sys of `ip netns exec` do not).
UNIFIED = (
    '{ [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]'
    " || mount -t cgroup2 cgroup2 /sys/fs/cgroup; }"
    ' && exec "$@"'
)


@cache
def image_config() -> dict[str, Any]:
    """The image's configuration (labels, user, entrypoint), read from the OCI archive itself."""
    if not ARCHIVE.is_file() or not (BUNDLE / "rootfs").is_dir():
        pytest.fail(f"no image at {ARCHIVE} (and {BUNDLE}): build it with `make image`")
    with tarfile.open(ARCHIVE) as tar:

        def blob(digest: str) -> Any:
            algorithm, hexa = digest.split(":")
            member = tar.extractfile(f"blobs/{algorithm}/{hexa}")
            assert member is not None
            return json.load(member)

        index = tar.extractfile("index.json")
        assert index is not None
        (manifest,) = json.load(index)["manifests"]
        config: dict[str, Any] = blob(blob(manifest["digest"])["config"]["digest"])
    return config


@pytest.fixture
def crun(tmp_path: Path) -> Run:
    """Run a command of the image with crun: ``run(netns, args, uid=, caps=)``."""
    base = json.loads((BUNDLE / "config.json").read_text())  # umoci's, from the image's config
    state = tmp_path / "crun"
    count = iter(range(100))

    def run(
        netns: str | None, args: list[str], *, uid: int | None = None, caps: list[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        spec = copy.deepcopy(base)
        spec["root"] = {"path": str(BUNDLE / "rootfs"), "readonly": True}
        spec["process"]["args"] = args
        spec["process"]["terminal"] = False
        spec["process"]["noNewPrivileges"] = True
        if uid is not None:
            spec["process"]["user"] = {"uid": uid, "gid": uid}
        spec["process"]["capabilities"] = {
            k: list(caps) for k in ("bounding", "effective", "permitted")
        }
        spec["process"].pop("rlimits", None)
        linux = spec.setdefault("linux", {})
        # No network namespace: the agent programs the one it is started in (hostNetwork).
        linux["namespaces"] = [{"type": t} for t in ("pid", "mount", "ipc", "uts")]
        linux.pop("cgroupsPath", None)
        linux.pop("resources", None)
        spec["mounts"] = [
            m for m in spec.get("mounts", []) if m["destination"] not in ("/sys", "/sys/fs/cgroup")
        ] + [
            {"destination": d, "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}
            for d in ("/tmp", "/var/lib/kube-l2tp")
        ]
        config = tmp_path / f"config-{next(count)}.json"
        config.write_text(json.dumps(spec))
        name = f"kube-l2tp-test-{config.stem}"
        # crun puts nothing in a cgroup here (disabled), yet refuses a hybrid v1/v2 hierarchy
        # (as the host's): a mount namespace of its own with cgroup2 alone at /sys/fs/cgroup.
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", UNIFIED, "sh"]
        command += ["crun", "--root", str(state), "--cgroup-manager=disabled", "run"]
        command += ["--no-pivot", "--bundle", str(BUNDLE), "--config", str(config), name]
        if netns is not None:
            command = ["ip", "netns", "exec", netns, *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    return run


def test_the_image_is_labelled_non_root_and_holds_no_compiler() -> None:
    config = image_config()
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", labels["org.opencontainers.image.revision"])
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["kube-l2tp"]
    rootfs = BUNDLE / "rootfs"
    compilers = [
        p
        for d in ("usr/bin", "usr/local/bin", "bin")
        for pattern in ("*gcc*", "cc", "c++", "*clang*", "tcc", "ld", "as")
        for p in (rootfs / d).glob(pattern)
    ]
    assert not compilers
    assert (rootfs / "opt/kube-l2tp/bin/kube-l2tp").is_file()


def test_version_and_capabilities_inside_the_container(crun: Run) -> None:
    """As the agent is started: uid 0, NET_ADMIN alone (CapEff, CapBnd: bit 12 only)."""
    revision = image_config()["config"]["Labels"]["org.opencontainers.image.revision"]
    script = "grep -E '^Cap(Eff|Bnd|Prm):' /proc/self/status && id -u && kube-l2tp --version"
    done = crun(None, ["sh", "-c", script], uid=0, caps=["CAP_NET_ADMIN"])
    assert done.returncode == 0, done.stderr
    caps = dict(re.findall(r"(Cap\w+):\s+([0-9a-f]+)", done.stdout))
    assert {k: int(v, 16) for k, v in caps.items()} == dict.fromkeys(
        ("CapEff", "CapBnd", "CapPrm"), 1 << CAP_NET_ADMIN
    )
    assert done.stdout.splitlines()[-2:] == ["0", f"kube-l2tp 0.1.0 (commit {revision})"]


def test_the_agent_from_the_image_programs_the_seeds_wire(two_sites: TwoSites, crun: Run) -> None:
    def agent(ns: str, node: str) -> subprocess.CompletedProcess[str]:
        args = ["kube-l2tp", "agent", "--node", node, "--manifests", "embedded", "--once"]
        return crun(ns, args, uid=0, caps=["CAP_NET_ADMIN"])

    # both sites at once: each is a Python start under emulation, most of this test's time
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(agent, (two_sites.a, two_sites.b), ("site-a", "site-b")))
    for done in runs:
        assert done.returncode == 0, done.stdout + done.stderr
    tunnels = ip(two_sites.a, "l2tp", "show", "tunnel")
    assert "Tunnel 3000, encap UDP" in tunnels
    assert "From 192.0.2.1 to 192.0.2.2" in tunnels
    ping = subprocess.run(
        ["ip", "netns", "exec", two_sites.a, "ping", "-c", "3", "-W", "2", "-i", "0.2",
         "198.51.100.2"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_the_operator_entrypoint_starts_and_says_why_it_cannot_run(crun: Run) -> None:
    """The image's own user (65532), no capability; no API server here: a one-line reason."""
    done = crun(None, ["kube-l2tp", "operator", "--health-port", "0"])
    assert done.returncode == 2, done.stdout + done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("kube-l2tp operator: cannot start: no Kubernetes API server")
    assert "KUBECONFIG" in line
