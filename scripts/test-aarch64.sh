#!/usr/bin/env bash
# Builds the aarch64 release binary (scripts/cross-build.sh arm64 --run-deps) and runs it under
# qemu-aarch64-static: --version, check-config of the Raspberry Pi example, and a 20-second
# demo with two virtual devices in which media must flow both ways (the demo exits 1 if not).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="$("$ROOT/scripts/cross-build.sh" arm64 --run-deps | tail -n 1)"
QEMU=(qemu-aarch64-static -L /)
# The plugin scanner is an aarch64 binary too: scan in-process, into an arm64 registry.
export GST_REGISTRY_FORK=no GST_REGISTRY="$HOME/.cache/callbox-gst-registry-aarch64.bin"
echo "aarch64 binary: $BIN ($(stat -c %s "$BIN") bytes)"
"${QEMU[@]}" "$BIN" --version
"${QEMU[@]}" "$BIN" check-config "$ROOT/configs/raspberry-pi.toml"
start=$(date +%s)
"${QEMU[@]}" "$BIN" demo --peers 2 --duration 20 --listen 127.0.0.1:0 | tail -n 6
echo "aarch64 demo under qemu-user: $(( $(date +%s) - start )) s"
