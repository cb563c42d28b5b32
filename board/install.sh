#!/bin/sh
# The virtual board (scripts/test-board.sh), booted with systemd: real V4L2 (vivid), ALSA
# (snd-aloop) and GPIO (gpio-sim) devices; callbox installed from its .deb following the
# README (adapted: amd64 package, root, no network): the room server as "Deploying on the
# internet" says (TLS on 443, the example config edited), the device as "Install on a board"
# says, both sandboxed units enabled; the call button pressed on the simulated GPIO line while
# a peer on the host (through qemu's port forwarding) publishes; the package upgraded (both
# running units must restart); then purged.
# Lines for the host: CALLBOX-BOARD (steps), CALLBOX-STATUS (status JSON), CALLBOX-FAIL.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
say() { echo "CALLBOX-BOARD: $*"; }
fail() {
  echo "CALLBOX-FAIL: $*"
  journalctl -u callbox --no-pager -n 60 -o cat | sed 's/^/JOURNAL /'
  journalctl -u callbox-server --no-pager -n 30 -o cat | sed 's/^/SERVER-JOURNAL /'
  systemctl poweroff --force --force
  exit 1
}
IF=$(ls /sys/class/net | grep -v '^lo$' | head -n 1)
ip link set lo up; ip link set "$IF" up
ip addr add 10.0.2.15/24 dev "$IF"; ip route add default via 10.0.2.2
modprobe vivid n_devs=1 >/dev/null 2>&1 || say "vivid failed"
modprobe snd-aloop >/dev/null 2>&1 || say "snd-aloop failed"
modprobe configfs >/dev/null 2>&1; mountpoint -q /sys/kernel/config || mount -t configfs none /sys/kernel/config
insmod /opt/callbox/gpio-sim-oot.ko || { say "gpio-sim failed"; dmesg | tail -n 5; }
# One simulated chip with 8 lines; buttons released (active low: pulled up).
G=/sys/kernel/config/gpio-sim/board
mkdir -p $G/bank0 && echo 8 > $G/bank0/num_lines && echo 1 > $G/live
CHIP=$(cat $G/bank0/chip_name)
LINES=$(ls -d /sys/devices/platform/$(cat $G/dev_name)/$CHIP)
for n in 1 2 3 4; do echo pull-up > "$LINES/sim_gpio$n/pull"; done
udevadm settle
say "devices: $(ls /dev/video* | tr '\n' ' ') $(ls /dev/snd | tr '\n' ' ') /dev/$CHIP"

# README: sudo apt install ./callbox_*.deb (the plugins it depends on are in the image).
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /opt/callbox/callbox.deb >/tmp/apt.log 2>&1 \
  || { cat /tmp/apt.log; fail "apt install"; }
for unit in callbox callbox-server; do
  [ "$(systemctl is-enabled $unit)" = disabled ] || fail "$unit.service enabled by the install"
  [ "$(systemctl is-active $unit)" = inactive ] || fail "$unit.service started by the install"
done
[ "$(stat -c '%G %a' /dev/$CHIP)" = "gpio 660" ] || fail "/dev/$CHIP is $(stat -c '%G %a' /dev/$CHIP), not gpio 660"
say "installed: $(callbox --version); units disabled; /dev/$CHIP group gpio"

# README, Deploying on the internet: the server from the example, TLS, enabled.
echo "10.0.2.15 callbox.board.test" >> /etc/hosts
mkdir -p /etc/callbox/tls
cp /opt/callbox/tls/fullchain.pem /opt/callbox/tls/privkey.pem /opt/callbox/tls/ca.pem /etc/callbox/tls/
sed -e 's|^listen = .*|listen = "0.0.0.0:443"|' \
    -e 's|^# \[\[apps\]\]|[[apps]]|' -e 's|^# app_id = 1234|app_id = 1234|' \
    -e "s|^# secret = .*|secret = \"$(cat /opt/callbox/secret)\"|" \
    -e "s|^port = 7882|port = $(cat /opt/callbox/media-port)|" \
    -e 's|^announce = \[\]|announce = ["10.0.2.15", "127.0.0.1"]|' \
    -e 's|^# cert = .*|cert = "/etc/callbox/tls/fullchain.pem"|' -e 's|^# key = .*|key = "/etc/callbox/tls/privkey.pem"|' \
    /usr/share/doc/callbox/examples/server.toml > /etc/callbox/server.toml
chown root:callbox /etc/callbox/server.toml /etc/callbox/tls/*; chmod 0640 /etc/callbox/server.toml /etc/callbox/tls/*
chgrp callbox /etc/callbox/tls; chmod 0750 /etc/callbox/tls
callbox check-config /etc/callbox/server.toml > /tmp/check.txt 2>&1 || { cat /tmp/check.txt; fail "check-config server.toml"; }
sed 's/^/CHECK-CONFIG /' /tmp/check.txt
systemctl enable --now callbox-server || fail "systemctl enable --now callbox-server"
i=0
until journalctl -u callbox-server -o cat --no-pager | grep -q "callbox server listening"; do
  i=$((i + 1)); [ $i -gt 240 ] && { journalctl -u callbox-server -o cat --no-pager | tail -n 20; fail "the server did not start"; }
  sleep 0.5
done
say "server up: $(systemctl show -p MainPID --value callbox-server), exposure $(systemd-analyze security callbox-server --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for callbox-server.service: //p')"

# README: sudoedit /etc/callbox/device.toml (a conffile, 0640 root:callbox: written in place).
sed -e "s|@CHIP@|/dev/$CHIP|" -e "s|@SECRET@|$(cat /opt/callbox/secret)|" /opt/callbox/device.toml.in > /etc/callbox/device.toml
[ "$(stat -c '%U %G %a' /etc/callbox/device.toml)" = "root callbox 640" ] || fail "device.toml $(stat -c '%U %G %a' /etc/callbox/device.toml)"
# README: sudo -u callbox callbox doctor && sudo systemctl enable --now callbox
runuser -u callbox -- callbox doctor > /tmp/doctor.txt 2>&1; rc=$?
sed 's/^/DOCTOR /' /tmp/doctor.txt
[ $rc -eq 0 ] || fail "doctor as the service user exited $rc"
systemctl enable --now callbox || fail "systemctl enable --now callbox"
say "exposure: $(systemd-analyze security callbox --no-pager 2>/dev/null | sed -n 's/.*Overall exposure level for callbox.service: //p')"

status() { callbox status --json 2>/dev/null | tr -d '\n'; }
# Polls the daemon's status (nothing here to await but the status itself) until it matches
# PATTERN, for at most 5 minutes of this slow emulated board.
wait_status() {
  i=0
  until status | grep -q "$1"; do
    i=$((i + 1)); [ $i -gt 600 ] && fail "$2"
    sleep 0.5
  done
}
connected() { wait_status '"state": *"Connected"' "never connected ($1)"; }
connected "first start"
pid1=$(systemctl show -p MainPID --value callbox)
spid1=$(systemctl show -p MainPID --value callbox-server)
say "logged in under systemd (pid $pid1) after $(cut -d' ' -f1 /proc/uptime) s of uptime"

# An upgrade (the same build one revision later) restarts both running daemons.
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends /opt/callbox/callbox-upgrade.deb >/tmp/apt.log 2>&1 \
  || { cat /tmp/apt.log; fail "apt upgrade"; }
pid2=$(systemctl show -p MainPID --value callbox)
spid2=$(systemctl show -p MainPID --value callbox-server)
for unit in callbox callbox-server; do
  [ "$(systemctl is-active $unit)" = active ] || fail "$unit not active after the upgrade"
done
[ "$pid2" != "$pid1" ] && [ "$pid2" != 0 ] || fail "the upgrade did not restart the device daemon (pid $pid1 -> $pid2)"
[ "$spid2" != "$spid1" ] && [ "$spid2" != 0 ] || fail "the upgrade did not restart the server (pid $spid1 -> $spid2)"
grep -q "^user_id = \"board\"" /etc/callbox/device.toml || fail "the upgrade replaced device.toml"
say "upgraded to $(dpkg-query -W -f='${Version}' callbox): daemon restarted (pid $pid1 -> $pid2), server restarted (pid $spid1 -> $spid2), device.toml kept"
connected "after the upgrade"
# The host's peer comes back by itself after the server's restart.
wait_status '"flat"' "the peer on the host never joined"
say "the host's peer is in the room"

# Press the call button: the line goes low, then back up.
echo pull-down > "$LINES/sim_gpio1/pull"; sleep 0.3; echo pull-up > "$LINES/sim_gpio1/pull"
say "call button pressed"
for i in $(seq 1 40); do
  sleep 2
  echo "CALLBOX-STATUS $(status)"
done
journalctl -u callbox --no-pager -n 30 -o cat | sed 's/^/JOURNAL /'
journalctl -u callbox-server --no-pager -n 20 -o cat | sed 's/^/SERVER-JOURNAL /'

# README-less but expected: purge stops the daemon and removes its files and state.
DEBIAN_FRONTEND=noninteractive apt-get purge -y -q callbox >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; fail "apt purge"; }
[ "$(systemctl is-active callbox)" != active ] || fail "still running after purge"
[ "$(systemctl is-active callbox-server)" != active ] || fail "the server still running after purge"
[ ! -e /etc/callbox/device.toml ] && [ ! -e /var/lib/callbox ] && [ ! -e /var/lib/private/callbox-server ] && [ ! -e /usr/bin/callbox ] \
  || fail "files left after purge"
say "purged: daemons stopped, config and state removed"
say "done"
systemctl poweroff --force --force
