#!/usr/bin/env bash
# The kernels the kernel suite runs on, by short name, and where their images are:
#
#   bash scripts/kernels.sh path 6.12     prints the image (fetching and unpacking it if needed)
#   bash scripts/kernels.sh fetch         makes every kernel ready (make deps calls this)
#   bash scripts/kernels.sh list          prints the short names: 6.1 6.12
#
#   6.1    Debian 12's kernel, installed on the host by install-system-deps.sh (linux-image-amd64,
#          so its exact version follows the host's Debian updates).
#   6.12   Debian 13's kernel, pinned below: fetched as a package file from Debian's registry (the
#          trixie suite) with a private apt configuration (the host's apt sources, lists and
#          packages are never touched), checked against the pinned SHA-256, unpacked under the
#          cache, and its modules copied to the host's /lib/modules/<version> (the guest sees the
#          host's root read-only and loads L2TP from there; a directory of another version is
#          harmless to the host).
#
# Cache: ${KUBE_L2TP_CACHE:-$HOME/.cache/kube-l2tp}/kernels/ (outside the clone, so a second run
# and a fresh clone on the same machine reuse it). Idempotent; concurrent runs wait on a lock.
# A kernel that cannot be fetched is an error (exit 1), never a skip.
set -euo pipefail

# Debian 13's kernel as served on 2026-12-02. To move the pin: `apt-cache show` it through the same
# private configuration (see fetch_612) and copy Version and SHA256 here.
readonly K612_PACKAGE=linux-image-6.12.117+deb13-amd64
readonly K612_VERSION=6.12.117-1
readonly K612_SHA256=ca712d36790184f6ac125ce2b20ea4e2202ae6bb7817b7de268f1f0115ccda73
readonly K612_RELEASE=6.12.117+deb13-amd64
readonly K612_URI=${KUBE_L2TP_DEBIAN_URI:-http://deb.debian.org/debian}

cache=${KUBE_L2TP_CACHE:-$HOME/.cache/kube-l2tp}/kernels

die() {
  echo "kernels.sh: ERROR: $*" >&2
  exit 1
}

path_61() {
  local image
  image=$(ls /boot/vmlinuz-6.1.*-amd64 2>/dev/null | sort -V | tail -1 || true)
  [[ -n $image ]] || die "no Debian 12 kernel /boot/vmlinuz-6.1.*-amd64 (make deps installs linux-image-amd64)"
  [[ -d /lib/modules/${image##*/vmlinuz-} ]] || die "no modules for ${image##*/vmlinuz-} in /lib/modules"
  echo "$image"
}

ready_612() {
  [[ -r $cache/$K612_RELEASE/boot/vmlinuz-$K612_RELEASE && -s /lib/modules/$K612_RELEASE/modules.dep ]]
}

fetch_612() {
  local dir=$cache/$K612_RELEASE apt=$cache/apt deb tmp
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$cache/debs"
  if [[ ! -r $dir/boot/vmlinuz-$K612_RELEASE ]]; then
    deb=$cache/debs/${K612_PACKAGE}_${K612_VERSION}_amd64.deb
    if ! echo "$K612_SHA256  $deb" | sha256sum --check --status 2>/dev/null; then
      printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
        "$K612_URI" /usr/share/keyrings/debian-archive-keyring.gpg >"$apt/trixie.sources"
      # Private sources, lists, cache and (empty) dpkg status: nothing of the host's apt is read
      # or written. Sandbox::User=root: the cache is under root's home, which _apt cannot enter.
      local opts=(
        -o "Dir::Etc::sourcelist=$apt/trixie.sources" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o Dir::State::status=/dev/null -o APT::Sandbox::User=root -qq
      )
      echo "kernels.sh: fetching $K612_PACKAGE $K612_VERSION from $K612_URI (trixie, ~108 MB)" >&2
      [[ $(stat -c %a /tmp) == 1777 ]] || die "/tmp must be mode 1777 for apt's signature check"
      apt-get "${opts[@]}" update || die "apt-get update of the trixie suite failed ($K612_URI)"
      (cd "$cache/debs" && apt-get "${opts[@]}" download "$K612_PACKAGE=$K612_VERSION") ||
        die "could not download $K612_PACKAGE=$K612_VERSION (no longer served? move the pin)"
      echo "$K612_SHA256  $deb" | sha256sum --check --status ||
        die "$deb does not match the pinned SHA-256 $K612_SHA256"
    fi
    tmp=$(mktemp -d "$cache/unpack.XXXXXX")
    dpkg-deb -x "$deb" "$tmp"
    rm -rf "$dir"
    mv "$tmp" "$dir"
  fi
  if [[ ! -s /lib/modules/$K612_RELEASE/modules.dep ]]; then
    [[ -w /lib/modules ]] || die "/lib/modules is not writable (run as root)"
    rm -rf "/lib/modules/$K612_RELEASE.partial"
    cp -a "$dir/usr/lib/modules/$K612_RELEASE" "/lib/modules/$K612_RELEASE.partial"
    rm -rf "/lib/modules/$K612_RELEASE"
    mv "/lib/modules/$K612_RELEASE.partial" "/lib/modules/$K612_RELEASE"
    depmod "$K612_RELEASE"
  fi
}

path_612() {
  if ! ready_612; then
    mkdir -p "$cache"
    exec 9>"$cache/.lock"
    flock 9
    ready_612 || fetch_612
    exec 9>&-
  fi
  echo "$cache/$K612_RELEASE/boot/vmlinuz-$K612_RELEASE"
}

case ${1:-} in
  list) echo "6.1 6.12" ;;
  path)
    case ${2:-} in
      6.1) path_61 ;;
      6.12) path_612 ;;
      *) die "unknown kernel '${2:-}': KERNEL is 6.1 (Debian 12) or 6.12 (Debian 13)" ;;
    esac
    ;;
  fetch) path_61 >/dev/null && path_612 >/dev/null ;;
  *) die "usage: scripts/kernels.sh path 6.1|6.12 | fetch | list" ;;
esac
