#!/usr/bin/env bash
# Build kube-apiserver and etcd from the pinned Go modules of tests/k8s-bin, once, into a cache
# outside the clone; prints the directory holding both binaries.
#
# No registry here ships a kube-apiserver binary, but the Go module proxy serves k8s.io/kubernetes
# and its staging modules (tests/k8s-bin/go.mod replaces each with its published v0.x twin).
# The cache directory is keyed by go.mod, go.sum and the Go version, so a second run, and a fresh
# clone on the same machine, reuse it; Go's own module and build caches stay in their default places
# under $HOME. A cold build is long on 2 cores (see tests/k8s-bin/README.md), so it runs under
# nice (5: still behind everyone else's work, without taking an hour when the machine is busy).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MOD="$ROOT/tests/k8s-bin"
export GOTOOLCHAIN=local GOFLAGS=-buildvcs=false CGO_ENABLED=0

# Go's own install place, for shells that did not read the profile that puts it on PATH (CI)
command -v go >/dev/null || PATH="$PATH:/usr/local/go/bin"
command -v go >/dev/null || { echo "build-k8s-bin: Go is needed (go 1.26 or newer)" >&2; exit 1; }
kube_version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$MOD/go.mod")"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" && $2 ~ /^v/ {print $2; exit}' "$MOD/go.mod")"
key="$(cat "$MOD/go.mod" "$MOD/go.sum" <(go env GOVERSION) | sha256sum | cut -c1-12)"
OUT="${K8S_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-l2tp/k8s-bin}/$kube_version-etcd$etcd_version-$key"

if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/etcd" ]; then
    echo "$OUT"
    exit 0
fi

mkdir -p "$OUT"
# One build per machine at a time: a second caller waits for the first and then reuses its result
# (parallel cold builds on 2 cores each took the others' CPU and made every one of them slow).
exec 9>"$OUT/.lock"
flock 9
if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/etcd" ]; then
    echo "$OUT"
    exit 0
fi
tmp="$(mktemp -d "$OUT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
minor="${kube_version#v1.}"
minor="${minor%%.*}"
# The server reports this version (kubectl version, /version); without it, v0.0.0-master.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done
echo "build-k8s-bin: building kube-apiserver $kube_version and etcd $etcd_version into $OUT" >&2
(
    cd "$MOD"
    go mod download
    nice -n 5 go build -trimpath -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    nice -n 5 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
)
"$tmp/kube-apiserver" --version >&2
"$tmp/etcd" --version >&2
mv "$tmp/kube-apiserver" "$tmp/etcd" "$OUT/"  # etcd last: both present means both complete
echo "build-k8s-bin: built in $(($(date +%s) - start)) s" >&2
echo "$OUT"
