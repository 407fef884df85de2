"""What was built: the package's version and the source revision it was built from.

The version is the installed distribution's; the revision is what the image was built from
(KUBE_L2TP_REVISION, set by the Dockerfile from its REVISION build argument), else the git
checkout the code runs from, else "unknown". `kube-l2tp --version` and the metric
kube_l2tp_build_info report both.
"""

from __future__ import annotations

import os
import subprocess
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


@cache
def package_version() -> str:
    try:
        return version("kube-l2tp")
    except PackageNotFoundError:
        return "unknown"


@cache
def revision() -> str:
    env = os.environ.get("KUBE_L2TP_REVISION", "").strip()
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def describe() -> str:
    return f"kube-l2tp {package_version()} (commit {revision()})"
