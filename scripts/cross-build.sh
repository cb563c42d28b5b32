#!/usr/bin/env bash
# Usage: cross-build.sh arm64|armhf [--run-deps]
# Builds the aarch64 (arm64) or armv7 (armhf) release binary without Docker: rustup's target,
# Debian's cross gcc, and a sysroot of the target's -dev packages the build links against,
# unpacked with `dpkg -x` (apt cannot keep the amd64 and foreign libgstreamer-plugins-base1.0-dev
# installed together). Idempotent; the sysroot is cached in ~/.cache/callbox-sysroot-<arch>.
# `--run-deps` also installs the target's runtime (libc, GStreamer plugins) and qemu-user so the
# binary can be run here with `qemu-<cpu>-static -L /`.
# The last line printed is the built binary's path.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
ARCH="${1:?usage: cross-build.sh arm64|armhf [--run-deps]}"
shift
case "$ARCH" in
  arm64) TARGET=aarch64-unknown-linux-gnu; GNU=aarch64-linux-gnu ;;
  armhf) TARGET=armv7-unknown-linux-gnueabihf; GNU=arm-linux-gnueabihf ;;
  *) echo "unknown architecture $ARCH (arm64 or armhf)" >&2; exit 2 ;;
esac
ENVT="$(echo "$TARGET" | tr 'a-z-' 'A-Z_')"
SYSROOT="${CALLBOX_SYSROOT:-$HOME/.cache/callbox-sysroot-$ARCH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callbox-target}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

apt_install() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  fi
}

# The target's package index: after adding the architecture, or if it is still missing (an
# earlier update hit a mirror in the middle of a sync: retry rather than fail).
if ! dpkg --print-foreign-architectures | grep -qx "$ARCH"; then
  $SUDO dpkg --add-architecture "$ARCH"
fi
if ! apt-cache show "libgstreamer1.0-dev:$ARCH" >/dev/null 2>&1; then
  for i in 1 2 3 4 5; do $SUDO apt-get update -qq >&2 && break || sleep 15; done
fi
apt_install "gcc-$GNU" "libc6-dev-$ARCH-cross"
if [ "${1:-}" = "--run-deps" ]; then
  apt_install qemu-user-static "libc6:$ARCH" "gstreamer1.0-plugins-base:$ARCH" "gstreamer1.0-plugins-good:$ARCH" \
    "gstreamer1.0-plugins-ugly:$ARCH" "gstreamer1.0-plugins-bad:$ARCH" "gstreamer1.0-libav:$ARCH"
fi
rustup target list --installed | grep -qx "$TARGET" || rustup target add "$TARGET" >&2

# What the gstreamer-rs -sys crates link against, and what pkg-config needs to resolve their
# .pc files. Runtime libraries of their dependencies are not needed to link
# (--allow-shlib-undefined); the board has them.
PKGS=(libgstreamer1.0-dev libgstreamer1.0-0 libgstreamer-plugins-base1.0-dev libgstreamer-plugins-base1.0-0
  libglib2.0-dev libglib2.0-0 liborc-0.4-dev liborc-0.4-0 libpcre2-dev libpcre2-8-0 libffi-dev libffi8
  zlib1g-dev zlib1g libmount-dev libmount1 libblkid-dev libblkid1 libselinux1-dev libselinux1 libsepol-dev
  libdw-dev libdw1 libelf-dev libelf1 libunwind-dev libunwind8 liblzma-dev liblzma5 libzstd1 libbz2-1.0)
STAMP="$SYSROOT/.packages"
if [ "$(cat "$STAMP" 2>/dev/null)" != "${PKGS[*]}" ]; then
  rm -rf "$SYSROOT"
  mkdir -p "$SYSROOT/debs"
  (cd "$SYSROOT/debs" && apt-get download "${PKGS[@]/%/:$ARCH}" >&2)
  for d in "$SYSROOT"/debs/*.deb; do dpkg -x "$d" "$SYSROOT"; done
  echo "${PKGS[*]}" > "$STAMP"
fi

export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$SYSROOT"
export PKG_CONFIG_LIBDIR="$SYSROOT/usr/lib/$GNU/pkgconfig:$SYSROOT/usr/share/pkgconfig"
export "CARGO_TARGET_${ENVT}_LINKER=$GNU-gcc"
export "CC_${TARGET//-/_}=$GNU-gcc"
export "CARGO_TARGET_${ENVT}_RUSTFLAGS=-C link-arg=-Wl,--allow-shlib-undefined -C link-arg=-L$SYSROOT/usr/lib/$GNU"
(cd "$ROOT" && cargo build --release --target "$TARGET" >&2)
echo "$CARGO_TARGET_DIR/$TARGET/release/callbox"
