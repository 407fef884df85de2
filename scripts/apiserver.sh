#!/usr/bin/env bash
# `make apiserver`: build (cached) and run a real etcd + kube-apiserver on loopback in the
# foreground until interrupted; prints the path of its admin kubeconfig once it is ready.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/build-k8s-bin.sh" >/dev/null
exec "$ROOT/.venv/bin/python" "$ROOT/tests/realapi/serve.py"
