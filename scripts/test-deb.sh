#!/usr/bin/env bash
# Builds the .debs (scripts/build-deb.sh), inspects them with dpkg-deb, and installs the amd64
# one into a throwaway Debian bookworm root (debootstrap minbase + systemd, cached as a tar in
# ~/.cache) with `dpkg --root`, checking files, the user, the conffile, that nothing is
# enabled or started, that an upgrade try-restarts the units (observed through a recording
# deb-systemd-invoke, as no systemd runs in the root; the virtual board runs the real one),
# and removal and purge.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callbox-target}"
fail() { echo "FAIL: $*" >&2; exit 1; }
"$ROOT/scripts/build-deb.sh" >/dev/null
DEB=$(ls "$CARGO_TARGET_DIR"/debian/callbox_*_amd64.deb)
for deb in "$CARGO_TARGET_DIR"/debian/callbox_*.deb; do
  info=$(dpkg-deb -I "$deb")
  files=$(dpkg-deb -c "$deb")
  for dep in gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-alsa libgstreamer1.0-0; do
    grep -q "Depends:.*$dep" <<<"$info" || fail "$deb does not depend on $dep"
  done
  # No library is linked that GStreamer does not bring: libasound2 comes with gstreamer1.0-alsa.
  ! grep -q "Depends:.*libasound2" <<<"$info" || fail "$deb depends on libasound2 directly"
  grep -q "Recommends:.*gstreamer1.0-libcamera" <<<"$info" || fail "$deb does not recommend gstreamer1.0-libcamera"
  for f in ./usr/share/doc/callbox/LICENSE-MIT ./usr/share/doc/callbox/LICENSE-APACHE ./usr/share/doc/callbox/CHANGELOG.md; do
    grep -q " $f\$" <<<"$files" || fail "$deb lacks $f"
  done
  grep -q "conffiles" <<<"$info" || fail "$deb has no conffiles"
  for f in ./usr/bin/callbox ./usr/lib/systemd/system/callbox.service ./usr/lib/systemd/system/callbox-server.service \
    ./usr/lib/sysusers.d/callbox.conf ./usr/lib/tmpfiles.d/callbox.conf ./etc/callbox/device.toml \
    ./usr/lib/udev/rules.d/60-callbox-gpio.rules ./usr/share/doc/callbox/examples/systemd/raspberry-pi.conf \
    ./usr/share/doc/callbox/examples/systemd/jetson.conf; do
    grep -q " $f\$" <<<"$files" || fail "$deb lacks $f"
  done
  echo "$(basename "$deb"): $(stat -c %s "$deb") bytes, $(grep -c '' <<<"$files") entries"
done
[ "$(dpkg-deb -f "$DEB" Architecture)" = amd64 ] || fail "not amd64"

CACHE="$HOME/.cache/callbox-rootfs-bookworm.tar"
if [ ! -f "$CACHE" ]; then
  command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  tmp=$(mktemp -d)
  debootstrap --variant=minbase --include=systemd bookworm "$tmp" http://deb.debian.org/debian >&2
  tar -C "$tmp" -cf "$CACHE" . && rm -rf "$tmp"
fi
# The same package one revision later, for the upgrade (cargo deb clears its output
# directory of older builds: the first package is put back afterwards).
W=$(mktemp -d)
R=$(mktemp -d)
trap 'rm -rf "$R" "$W"' EXIT
cp "$DEB" "$W/"
DEB2="$W/upgrade.deb"
(cd "$ROOT" && cargo deb --no-build --no-strip --deb-revision 99 --output "$DEB2" >/dev/null 2>&1) || fail "cargo deb (revision 99)"
cp "$W/$(basename "$DEB")" "$DEB"
tar -C "$R" -xf "$CACHE"
# No systemd runs in the root: /run/systemd/system makes the scripts act as if one did, and a
# recording deb-systemd-invoke and systemctl show what they would have done.
mkdir -p "$R/run/systemd/system"
for tool in deb-systemd-invoke systemctl; do
  mv "$R/usr/bin/$tool" "$R/usr/bin/$tool.real"
  printf '#!/bin/sh\necho "%s $*" >> /invoked.log\n' "$tool" > "$R/usr/bin/$tool" && chmod 755 "$R/usr/bin/$tool"
done
invoked() { cat "$R/invoked.log" 2>/dev/null | grep -v daemon-reload || true; }
dpkg --root="$R" --force-depends -i "$DEB" >/dev/null 2>&1 || fail "dpkg -i failed"
[ -x "$R/usr/bin/callbox" ] || fail "no /usr/bin/callbox"
[ -z "$(invoked)" ] || fail "install started or stopped something: $(invoked)"
grep -q '^callbox:' "$R/etc/passwd" || fail "postinst did not create user callbox"
for g in video audio gpio; do grep -q "^$g:.*callbox" "$R/etc/group" || fail "callbox not in group $g"; done
gid=$(awk -F: '$1 == "callbox" { print $3 }' "$R/etc/group")
[ "$(stat -c '%a %g' "$R/etc/callbox/device.toml")" = "640 $gid" ] || fail "device.toml not 0640 root:callbox"
[ -d "$R/var/lib/callbox" ] || fail "no /var/lib/callbox"
grep -q "/etc/callbox/device.toml" "$R/var/lib/dpkg/info/callbox.conffiles" || fail "device.toml is not a conffile"
state=$(systemctl --root="$R" is-enabled callbox.service 2>/dev/null || true)
[ "$state" = disabled ] || fail "callbox.service is '$state', should be disabled until the integrator enables it"
# An integrator's edit of the conffile survives the upgrade; running units are try-restarted.
echo '# edited' >> "$R/etc/callbox/device.toml"
rm -f "$R/invoked.log"
dpkg --root="$R" --force-depends --force-confold -i "$DEB2" >/dev/null 2>&1 || fail "dpkg -i (upgrade) failed"
[ "$(dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Version}' callbox)" = "$(dpkg-deb -f "$DEB2" Version)" ] || fail "not upgraded"
[ "$(invoked)" = "deb-systemd-invoke try-restart callbox-server.service callbox.service" ] || fail "upgrade did: '$(invoked)'"
grep -q '^# edited' "$R/etc/callbox/device.toml" || fail "the upgrade replaced the edited device.toml"
rm -f "$R/invoked.log"
dpkg --root="$R" -r callbox >/dev/null 2>&1 || fail "dpkg -r failed"
[ "$(invoked)" = "deb-systemd-invoke stop callbox-server.service callbox.service" ] || fail "remove did: '$(invoked)'"
[ ! -e "$R/usr/bin/callbox" ] || fail "binary left after remove"
[ -f "$R/etc/callbox/device.toml" ] || fail "remove must keep the conffile"
dpkg --root="$R" -P callbox >/dev/null 2>&1 || fail "dpkg -P failed"
[ ! -e "$R/etc/callbox/device.toml" ] || fail "purge must remove the conffile"
[ ! -e "$R/var/lib/callbox" ] || fail "purge must remove /var/lib/callbox"
echo "deb: installed (nothing started), upgraded (units try-restarted, conffile kept), removed (units stopped) and purged in a bookworm root"
