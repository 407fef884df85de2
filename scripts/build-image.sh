#!/usr/bin/env bash
# Build the project's image from its Dockerfile without a container engine, into
# build/kube-l2tp-image.tar (an OCI archive), and print its size and the build time.
#
# buildah (Debian's package) builds with chroot isolation, its storage kept under $KUBE_L2TP_CACHE
# (default ~/.cache/kube-l2tp): no daemon, nothing in the clone.
# No container registry is reachable here, so the base image (the Dockerfile's BASE_IMAGE) is made
# from Debian's packages: a minimal bookworm root filesystem with python3 and its venv module
# (mmdebstrap), imported as a local image named after what it holds, made once and reused.
# The build's pip reaches only the package index (PyPI); the image installs only the wheels it made.
# Set BASE_IMAGE to build on another base (e.g. the public python image, where a registry is
# reachable); IMAGE_OUT to write the archive elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

cache=${KUBE_L2TP_CACHE:-$HOME/.cache/kube-l2tp}
out=${IMAGE_OUT:-build/kube-l2tp-image.tar}
need=()
# crun runs the image in the kernel suite's VM (tests/kernel/test_image.py), on the bundle umoci
# unpacks here.
for tool in buildah mmdebstrap umoci crun; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
    echo "build-image: installing ${need[*]} (Debian's packages)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${need[@]}" >/dev/null
fi

# overlay (the kernel's, as root): vfs also works (IMAGE_STORAGE_DRIVER=vfs) but copies the whole
# file system at every step, ~10 GB and several times slower for this Dockerfile.
driver=${IMAGE_STORAGE_DRIVER:-overlay}
store=(--storage-driver "$driver" --root "$cache/containers/$driver" --runroot "$cache/containers/run-$driver")
bah() { buildah "${store[@]}" "$@"; }

# The base: its name carries a digest of what it is made from, so a change makes a new one.
suite=bookworm
packages=python3,python3-venv,ca-certificates
debopts=(--variant=essential --include="$packages"
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright')
key=$(printf '%s\n' "$suite" "${debopts[@]}" | sha256sum | cut -c1-16)
if [[ -z ${BASE_IMAGE:-} ]]; then
    BASE_IMAGE=localhost/kube-l2tp-base:$suite-$key
    if ! bah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        rootfs=$cache/image-base/$suite-$key.tar
        if [[ ! -s $rootfs ]]; then
            mkdir -p "$cache/image-base"
            mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
            echo "build-image: making the base from Debian's packages ($suite: $packages)" >&2
            mmdebstrap --quiet --mode=root "${debopts[@]}" "$suite" "$rootfs.part" \
                ${mirror:+"$mirror"}
            mv "$rootfs.part" "$rootfs"
        fi
        ctr=$(bah from scratch)
        bah add --quiet "$ctr" "$rootfs" / >/dev/null
        bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --env LANG=C.UTF-8 --cmd python3 "$ctr"
        bah commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    fi
fi

# Nothing the image is made of changed since the last build: keep it (make kernel asks each time).
inputs=(Dockerfile .dockerignore pyproject.toml README.md operator scripts/build-image.sh)
stamp=$( { echo "$BASE_IMAGE"; git ls-files -s "${inputs[@]}"; git diff HEAD -- "${inputs[@]}"; } \
    | sha256sum | cut -c1-16)
bundle=${out%.tar}-bundle
if [[ -s $out && -d $bundle/rootfs && $(cat "$bundle.stamp" 2>/dev/null) == "$stamp" ]]; then
    echo "build-image: $out is up to date ($(du -m "$out" | cut -f1) MB)"
    exit 0
fi

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
revision=$(git rev-parse HEAD)
git diff --quiet HEAD -- pyproject.toml README.md operator || revision+=-dirty
tag=localhost/kube-l2tp:$version
args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$version"
    --build-arg "REVISION=$revision")
# The host's CA bundle, for a network whose TLS to the package index needs it (as the host's pip).
ca=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
if [[ -r $ca ]]; then
    args+=(--volume "$ca:/run/kube-l2tp-build-ca.crt:ro" --build-arg PIP_CERT=/run/kube-l2tp-build-ca.crt)
fi
bah bud --quiet --isolation chroot --network host --layers --format oci "${args[@]}" \
    -f Dockerfile -t "$tag" . >/dev/null
mkdir -p "$(dirname "$out")"
rm -f "$out"
bah push --quiet "$tag" "oci-archive:$out:kube-l2tp:$version" >/dev/null

# Unpacked for the kernel suite (the VM sees this filesystem read-only): rootfs/ and umoci's record.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xf "$out" -C "$tmp"
rm -rf "$bundle"
umoci unpack --image "$tmp:kube-l2tp:$version" "$bundle" >/dev/null
echo "$stamp" > "$bundle.stamp"

size=$(du -m "$out" | cut -f1)
echo "build-image: $out ($tag, commit $revision): ${size} MB, built in $(($(date +%s) - start)) s"
