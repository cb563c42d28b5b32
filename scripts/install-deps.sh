#!/usr/bin/env bash
# Installs the system packages callbox needs to build and test, apt-installing only what is
# missing (idempotent; uses sudo when not root). Safe to run on every `make`.
set -euo pipefail

# Build: pkg-config and the GStreamer headers for the -sys crates (nothing else in Cargo.lock
# links a C library: rustls and ring are Rust and vendored C). Run: the GStreamer plugins
# callbox's pipelines use (x264enc is in -ugly, openh264enc/webrtcdsp/compositor in -bad,
# avdec_h264 in -libav). Tests: procps (kill), iproute2 (fault tests), chromium and
# util-linux (unshare) for the browser test; nftables for the fault tier; python3-gi with the
# GStreamer WebRTC introspection data and libnice for the webrtcbin interop test; pebble (a
# test ACME CA) for the certificate-from-ACME test; coturn (turnserver) for the TURN fault test;
# mosquitto (a real MQTT broker, started by the test itself) for the Home Assistant test.
PACKAGES=(pkg-config ca-certificates procps iproute2 systemd
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-alsa gstreamer1.0-x
  chromium util-linux nftables conntrack
  python3-gi gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0 gstreamer1.0-nice
  pebble coturn mosquitto mosquitto-clients)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "installing: ${missing[*]}"
  # A mirror in the middle of a sync fails an index now and then: retry.
  for i in 1 2 3 4 5; do $SUDO apt-get update -qq && break || sleep 15; done
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# WHIP/WHEP interop tests: aiortc, an independent WebRTC stack, in a venv of its own.
VENV="${HOME}/.cache/callbox-venv"
if ! "$VENV/bin/python3" -c "import aiortc" 2>/dev/null; then
  echo "installing aiortc into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "aiortc==1.*"
fi

# Browser test: playwright-core drives Debian's Chromium (tests/browser/call.mjs).
BROWSER_DIR="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
if [ ! -d "$BROWSER_DIR/node_modules/playwright-core" ]; then
  echo "installing playwright-core into $BROWSER_DIR"
  (cd "$BROWSER_DIR" && npm ci --no-audit --no-fund --loglevel=error)
fi
