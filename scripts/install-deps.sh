#!/usr/bin/env bash
# Installs the system packages callbox needs to build and test, apt-installing only what is
# missing (idempotent; uses sudo when not root). Safe to run on every `make`.
set -euo pipefail

# Build: pkg-config for -sys crates. Tests: procps (kill), iproute2 (fault tests, later).
PACKAGES=(pkg-config ca-certificates procps)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "installing: ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
