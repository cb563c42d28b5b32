#!/usr/bin/env bash
# The virtual board: a Debian bookworm VM under qemu (software emulation), booted with
# systemd, with real V4L2 (vivid), ALSA (snd-aloop) and GPIO (gpio-sim, built out of tree from
# linux-source) devices. board/install.sh follows the README in it with the amd64 .deb: the
# room server from the example config with TLS on 443 (a certificate from a CA made here),
# then the device (v4l2 camera, ALSA microphone and speaker, cdev GPIO), both sandboxed units
# enabled under the real systemd. A `callbox peer` here reaches the guest's server through
# qemu's port forwarding as a desk that answers calls; the guest presses the call button on the simulated
# GPIO line; the package is upgraded (both running daemons must restart), the call checked
# (the peer decodes the board's camera, the board decodes the peer), and the package purged.
# The rootfs and the module are cached in ~/.cache. Prints the run time.
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
# upgrade), a test CA and the server's certificate (for callbox.board.test, the guest's
# 10.0.2.15 and, through qemu's port forwarding, the host's 127.0.0.1), an app secret.
"$ROOT/scripts/build-deb.sh" >/dev/null
BIN="$CARGO_TARGET_DIR/release/callbox"
W=$(mktemp -d)
DEB=$(ls "$CARGO_TARGET_DIR"/debian/callbox_*_amd64.deb)
cp "$DEB" "$W/callbox.deb"
(cd "$ROOT" && cargo deb --no-build --no-strip --deb-revision 99 --output "$W/callbox-upgrade.deb" >/dev/null 2>&1) || fail "cargo deb (revision 99)"
cp "$W/callbox.deb" "$DEB"
PIDS=()
QEMU=""
cleanup() { for p in "${PIDS[@]}" $QEMU; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
T="$W/tls" && mkdir "$T"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=callbox-board-test-ca \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign -keyout "$T/ca.key" -out "$T/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=callbox.board.test \
  -keyout "$T/privkey.pem" -out "$T/req.csr" 2>/dev/null
printf 'subjectAltName=DNS:callbox.board.test,IP:10.0.2.15,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' > "$T/ext"
openssl x509 -req -in "$T/req.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial -days 2 -extfile "$T/ext" \
  -out "$T/fullchain.pem" 2>/dev/null || fail "test certificate"
SECRET=$(openssl rand -hex 32)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MPORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

# 4. The image: rootfs + the packages + module + certificates + the install script as a
# boot-time unit, as ext4.
mkdir "$W/rootfs"
tar -C "$W/rootfs" -xf "$RFS"
mkdir -p "$W/rootfs/opt/callbox/tls"
cp "$W/callbox.deb" "$W/callbox-upgrade.deb" "$ROOT/board/install.sh" "$ROOT/board/device.toml.in" "$W/rootfs/opt/callbox/"
cp "$T/ca.pem" "$T/fullchain.pem" "$T/privkey.pem" "$W/rootfs/opt/callbox/tls/"
echo "$SECRET" > "$W/rootfs/opt/callbox/secret"
echo "$MPORT" > "$W/rootfs/opt/callbox/media-port"
cp "$KO" "$W/rootfs/opt/callbox/gpio-sim-oot.ko"
cp "$ROOT/board/callbox-board.service" "$W/rootfs/etc/systemd/system/"
mkdir -p "$W/rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/callbox-board.service "$W/rootfs/etc/systemd/system/multi-user.target.wants/"
# No login prompt on the console the host reads.
ln -sf /dev/null "$W/rootfs/etc/systemd/system/serial-getty@ttyS0.service"
mkfs.ext4 -q -F -d "$W/rootfs" "$W/board.ext4" 3G

# 5. Boot it (software emulation; KVM does not work here) and read its console. The guest's
# server is reached from here at 127.0.0.1:$PORT (TCP 443) and 127.0.0.1:$MPORT (media).
timeout 900 qemu-system-x86_64 -accel tcg,thread=multi -cpu max -smp 2 -m 1536 -nographic -no-reboot \
  -kernel "$W/rootfs/boot/vmlinuz-$KVER" -initrd "$W/rootfs/boot/initrd.img-$KVER" \
  -drive "file=$W/board.ext4,format=raw,if=virtio" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-10.0.2.15:443,hostfwd=udp:127.0.0.1:$MPORT-10.0.2.15:$MPORT" \
  -device virtio-net-pci,netdev=n0 \
  -append "root=/dev/vda rw console=ttyS0 init=/lib/systemd/systemd quiet systemd.show_status=0" > "$W/console.log" 2>&1 &
QEMU=$!
# The peer joins once the guest's server is up (the guest then waits for it before the call).
i=0
until grep -q "CALLBOX-BOARD: server up" "$W/console.log"; do
  kill -0 $QEMU 2>/dev/null || { tail -n 60 "$W/console.log"; fail "the board stopped before its server was up"; }
  i=$((i + 1)); [ $i -gt 1800 ] && { tail -n 60 "$W/console.log"; fail "the board's server never came up"; }
  sleep 0.5
done
CALLBOX_APP_SECRET="$SECRET" "$BIN" peer --server "wss://127.0.0.1:$PORT" --ca-file "$T/ca.pem" --room lobby --user flat \
  --answer --publish flat-main --seconds 900 > "$W/peer.jsonl" 2> "$W/peer.log" &
PIDS+=($!)
disown $! # killed at exit without a "Killed" line
wait $QEMU || true
QEMU=""
grep -E "CALLBOX-BOARD|CALLBOX-FAIL|^DOCTOR|^CHECK-CONFIG" "$W/console.log" || true
! grep -q "CALLBOX-FAIL" "$W/console.log" || { grep -E "^(SERVER-)?JOURNAL" "$W/console.log" | tail -n 90; tail -n 20 "$W/peer.log"; fail "$(grep CALLBOX-FAIL "$W/console.log")"; }
grep -q "CALLBOX-BOARD: upgraded .* daemon restarted .* server restarted" "$W/console.log" || { tail -n 60 "$W/console.log"; fail "no restart on upgrade"; }
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
