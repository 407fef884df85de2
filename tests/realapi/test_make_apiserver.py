"""`make apiserver` for a person: ready means a kubeconfig path printed that reaches the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from .fixtures import Kubectl
from .server import REPO


def test_serve_prints_a_kubeconfig_that_works_and_stops_on_ctrl_c(
    kubectl_bin: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "KUBE_L2TP_APISERVER_DIR": str(tmp_path / "apiserver")}
    with subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "realapi" / "serve.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()  # printed once the server is ready
            assert line == str(tmp_path / "apiserver" / "kubeconfig")
            kubectl = Kubectl(kubectl_bin, Path(line), tmp_path / "home")
            assert kubectl("get", "--raw", "/readyz").stdout == "ok"
            applied = kubectl("apply", "--server-side", "-f", "crds/").stdout
            assert "serverside-applied" in applied
        finally:
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "ready on https://127.0.0.1:" in stderr, stderr
