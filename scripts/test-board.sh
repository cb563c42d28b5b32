#!/usr/bin/env bash
# The virtual board: a Debian bookworm VM under qemu (software emulation), booted with
# systemd, with real V4L2 (vivid), ALSA (snd-aloop) and GPIO (gpio-sim, built out of tree from
# linux-source) devices. board/install.sh installs the amd64 .deb as the README says, enables
# the sandboxed callbox.service (v4l2 camera, ALSA microphone and speaker, cdev GPIO) against
# a `callbox server` on the host, reached through qemu's user-mode network (10.0.2.2 is the
# host's loopback), upgrades the package (the daemon must restart) and, after the call, purges
# it. The guest presses the call button on the simulated GPIO line; the host checks that a
# `callbox peer` decodes the board's stream and that the board plays the peer's. The rootfs
# and the module are cached in ~/.cache. Prints the run time.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/callbox-target}"
CACHE="$HOME/.cache/callbox-board"
mkdir -p "$CACHE"
t0=$(date +%s)
fail() { echo "FAIL: $*" >&2; exit 1; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
apt_install debootstrap qemu-system-x86 e2fsprogs linux-source-6.1 xz-utils make gcc

# 1. The board's rootfs (kernel, systemd, module tools, the GStreamer plugins callbox uses).
RFS="$CACHE/rootfs-systemd.tar"
if [ ! -f "$RFS" ]; then
  tmp=$(mktemp -d)
  debootstrap --variant=minbase \
    --include=linux-image-amd64,systemd,kmod,udev,alsa-utils,v4l-utils,gpiod,iproute2,procps,ca-certificates \
    bookworm "$tmp" http://deb.debian.org/debian >&2
  # The plugins through apt inside the root (debootstrap trips on dconf's dependency cycle).
  mount -t proc proc "$tmp/proc"
  DEBIAN_FRONTEND=noninteractive chroot "$tmp" apt-get install -y -qq --no-install-recommends \
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
    gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-alsa >&2 || { umount "$tmp/proc"; fail "apt in the rootfs"; }
  umount "$tmp/proc"
  chroot "$tmp" apt-get clean
  tar -C "$tmp" -cf "$RFS" . && rm -rf "$tmp"
  rm -f "$CACHE/rootfs.tar" # the image before systemd booted it
fi
KVER=$(tar -tf "$RFS" | sed -n 's|^\./boot/vmlinuz-||p' | head -n 1)
[ -n "$KVER" ] || fail "no kernel in the rootfs"

# 2. gpio-sim (Debian's kernels lack it): gpio-sim.c + irq_sim.c as one out-of-tree module.
KO="$CACHE/gpio-sim-$KVER.ko"
if [ ! -f "$KO" ]; then
  apt_install "linux-headers-$KVER"
  b=$(mktemp -d)
  tar -C "$b" -xJf /usr/src/linux-source-6.1.tar.xz --strip-components=1 \
    linux-source-6.1/drivers/gpio/gpio-sim.c linux-source-6.1/drivers/gpio/gpiolib.h linux-source-6.1/kernel/irq/irq_sim.c
  mkdir "$b/m" && cp "$b/drivers/gpio/gpio-sim.c" "$b/drivers/gpio/gpiolib.h" "$b/m/"
  sed 's/handle_simple_irq(irq_to_desc(irqnum));/generic_handle_irq(irqnum);/' "$b/kernel/irq/irq_sim.c" > "$b/m/irq_sim.c"
  printf 'obj-m := gpio-sim-oot.o\ngpio-sim-oot-y := gpio-sim.o irq_sim.o\n' > "$b/m/Makefile"
  make -C "/usr/src/linux-headers-$KVER" M="$b/m" modules >&2
  cp "$b/m/gpio-sim-oot.ko" "$KO" && rm -rf "$b"
fi

# 3. The host side: the packages (this build, and the same one revision later for the
# upgrade), a server (media on loopback, announced as 10.0.2.2 for the guest) and a peer.
"$ROOT/scripts/build-deb.sh" >/dev/null
BIN="$CARGO_TARGET_DIR/release/callbox"
W=$(mktemp -d)
DEB=$(ls "$CARGO_TARGET_DIR"/debian/callbox_*_amd64.deb)
cp "$DEB" "$W/callbox.deb"
(cd "$ROOT" && cargo deb --no-build --no-strip --deb-revision 99 --output "$W/callbox-upgrade.deb" >/dev/null 2>&1) || fail "cargo deb (revision 99)"
cp "$W/callbox.deb" "$DEB"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MPORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf '[[apps]]\napp_id = 1234\nsecret = "%s"\n[media]\nbind = "127.0.0.1"\nport = %s\nannounce = ["10.0.2.2", "127.0.0.1"]\n' \
  6b1c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344 "$MPORT" > "$W/server.toml"
"$BIN" server --dev --config "$W/server.toml" --listen "127.0.0.1:$PORT" > "$W/server.out" 2> "$W/server.log" &
PIDS+=($!)
python3 - "$PORT" <<'PY' || fail "the server did not come up"
import socket, sys, time
deadline = time.time() + 20
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close(); sys.exit(0)
    except OSError:
        time.sleep(0.1)
sys.exit(1)
PY
"$BIN" peer --dev --server "ws://127.0.0.1:$PORT" --room lobby --user flat --publish flat-main --seconds 600 > "$W/peer.jsonl" 2> "$W/peer.log" &
PIDS+=($!)

# 4. The image: rootfs + the packages + module + the install script as a boot-time unit, as ext4.
mkdir "$W/rootfs"
tar -C "$W/rootfs" -xf "$RFS"
mkdir -p "$W/rootfs/opt/callbox"
cp "$W/callbox.deb" "$W/callbox-upgrade.deb" "$ROOT/board/install.sh" "$W/rootfs/opt/callbox/"
cp "$KO" "$W/rootfs/opt/callbox/gpio-sim-oot.ko"
sed "s|@PORT@|$PORT|" "$ROOT/board/device.toml.in" > "$W/rootfs/opt/callbox/device.toml.in"
cp "$ROOT/board/callbox-board.service" "$W/rootfs/etc/systemd/system/"
mkdir -p "$W/rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/callbox-board.service "$W/rootfs/etc/systemd/system/multi-user.target.wants/"
# No login prompt on the console the host reads.
ln -sf /dev/null "$W/rootfs/etc/systemd/system/serial-getty@ttyS0.service"
mkfs.ext4 -q -F -d "$W/rootfs" "$W/board.ext4" 3G

# 5. Boot it (software emulation; KVM does not work here) and read its console.
timeout 900 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1536 -nographic -no-reboot \
  -kernel "$W/rootfs/boot/vmlinuz-$KVER" -initrd "$W/rootfs/boot/initrd.img-$KVER" \
  -drive "file=$W/board.ext4,format=raw,if=virtio" \
  -netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
  -append "root=/dev/vda rw console=ttyS0 init=/lib/systemd/systemd quiet systemd.show_status=0" > "$W/console.log" 2>&1 || true
grep -E "CALLBOX-BOARD|CALLBOX-FAIL|^DOCTOR" "$W/console.log" || true
! grep -q "CALLBOX-FAIL" "$W/console.log" || { grep "^JOURNAL" "$W/console.log" | tail -n 60; fail "$(grep CALLBOX-FAIL "$W/console.log")"; }
grep -q "CALLBOX-BOARD: upgraded .* daemon restarted" "$W/console.log" || { tail -n 60 "$W/console.log"; fail "no restart on upgrade"; }
grep -q "CALLBOX-BOARD: purged" "$W/console.log" || { tail -n 60 "$W/console.log"; fail "not purged"; }
last=$(grep '^CALLBOX-STATUS {' "$W/console.log" | tail -n 1 | sed 's/^CALLBOX-STATUS //')
[ -n "$last" ] || { tail -n 60 "$W/console.log"; fail "no status from the board"; }
python3 - "$last" "$W/peer.jsonl" <<'PY' || { tail -n 80 "$W/console.log"; fail "media did not flow"; }
import json, sys
s = json.loads(sys.argv[1])
events = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
pub = [p for p in s["publishing"] if p["stream_id"] == "board-main" and p["state"] == "Publishing"]
play = [p for p in s["playing"] if p["stream_id"] == "flat-main" and p["state"] == "Playing"]
seen = max([e.get("frames_decoded", 0) for e in events if e.get("event") == "quality" and e.get("stream_id") == "board-main"] or [0])
print(f"board: call={s['call']} encoder={s['encoder']} publishing={bool(pub)} "
      f"plays flat-main frames_decoded={play[0]['frames_decoded'] if play else 0}; host peer decoded {seen} board frames")
ok = s["call"] == "in_call" and pub and play and play[0]["frames_decoded"] > 10 and seen > 10
sys.exit(0 if ok else 1)
PY
echo "virtual board passed in $(( $(date +%s) - t0 )) s"
