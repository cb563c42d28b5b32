#!/usr/bin/env bash
# Builds the Debian packages with cargo-deb (installed from crates.io if missing): amd64 from
# the native release build, arm64 from the aarch64 build when it exists (`make aarch64`).
# Prints the package paths.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callbox-target}"
command -v cargo-deb >/dev/null 2>&1 || cargo install cargo-deb --locked >&2
cd "$ROOT"
cargo build --release >&2
cargo deb --no-build --no-strip >&2
ARM="$CARGO_TARGET_DIR/aarch64-unknown-linux-gnu/release/callbox"
if [ -x "$ARM" ]; then
  cargo deb --no-build --no-strip --target aarch64-unknown-linux-gnu >&2
fi
ls "$CARGO_TARGET_DIR"/debian/callbox_*.deb
