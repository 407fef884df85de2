"""`make apiserver`: a real etcd + kube-apiserver on loopback for a person, until Ctrl-C.

Writes an admin kubeconfig to .cache/apiserver/kubeconfig and prints its path once the server is
ready (the data directory is fresh at every start), e.g.:

    make apiserver &        # or in another terminal
    export KUBECONFIG=$(pwd)/.cache/apiserver/kubeconfig
    kubectl apply --server-side -f crds/
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/
from realapi.server import REPO, RealApiServer


def main() -> int:
    workdir = Path(os.environ.get("KUBE_L2TP_APISERVER_DIR") or REPO / ".cache" / "apiserver")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with RealApiServer(workdir) as server:
        print(
            f"kube-apiserver {server.version} ready on {server.url} in {server.start_seconds:.1f} s"
            f" (logs in {workdir}); Ctrl-C stops it",
            file=sys.stderr,
        )
        print(server.kubeconfig, flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
