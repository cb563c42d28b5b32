SUMMARY = "callbox: room-based real-time audio/video calls for Linux single-board computers"
DESCRIPTION = "The callbox device daemon (door station, intercom, kiosk: camera, microphone, \
hardware H.264 encoding through GStreamer, WebRTC, GPIO buttons and door relay, systemd) \
and the callbox room server."
SECTION = "multimedia"
LICENSE = "MIT | Apache-2.0"
# The license line of Cargo.toml (tests/yocto.rs keeps this checksum right).
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=86b31c7756a1a7962f28b62856ed4f05"

# The source is the git repository this layer sits in (yocto/meta-callbox is inside it), at
# the pinned commit below. Point CALLBOX_GIT_URI at your own mirror to build elsewhere, e.g.
# CALLBOX_GIT_URI = "git://git.example.com/callbox.git;protocol=https" in local.conf.
CALLBOX_SRC_DIR := "${@os.path.abspath(os.path.join(d.getVar('THISDIR'), '../../../..'))}"
CALLBOX_GIT_URI ??= "git://${CALLBOX_SRC_DIR};protocol=file"
SRC_URI = "${CALLBOX_GIT_URI};nobranch=1"
# A fixed commit, so a build is reproducible and matches callbox-crates.inc: both come from
# the same Cargo.lock. `scripts/yocto-crates.py --pin` moves the pin to HEAD (with Cargo.lock
# committed) and rewrites the crate list; tests/yocto.rs fails while they disagree.
SRCREV = "a045ea042b020f9b6ffca7ebbf7abb56d3576c57"
# sha256 of Cargo.lock at SRCREV: 133869e5612258fc19f3bda9c945e24c526c76f29f195784aaf71469666f3aa2
PV = "0.1.0+git"
S = "${WORKDIR}/git"

# callbox needs Rust >= 1.92 (edition 2024, gstreamer-rs 0.25). scarthgap's own Rust is older:
# add meta-lts-mixins (branch scarthgap/rust) for a current toolchain.
inherit cargo cargo-update-recipe-crates pkgconfig systemd useradd

require ${BPN}-crates.inc

DEPENDS += "glib-2.0 gstreamer1.0 gstreamer1.0-plugins-base"

# The GStreamer elements callbox's pipelines use (see docs/media.md). x264 and libav carry
# LICENSE_FLAGS "commercial": accept them (LICENSE_FLAGS_ACCEPTED) or rely on the board's
# hardware encoder (v4l2h264enc on a Pi, from gstreamer1.0-plugins-good-video4linux2).
RDEPENDS:${PN} += " \
    gstreamer1.0-plugins-base-app gstreamer1.0-plugins-base-videoconvertscale \
    gstreamer1.0-plugins-base-videorate gstreamer1.0-plugins-base-videotestsrc \
    gstreamer1.0-plugins-base-audioconvert gstreamer1.0-plugins-base-audioresample \
    gstreamer1.0-plugins-base-audiotestsrc gstreamer1.0-plugins-base-volume \
    gstreamer1.0-plugins-base-opus gstreamer1.0-plugins-base-alsa gstreamer1.0-plugins-base-compositor \
    gstreamer1.0-plugins-base-tcp gstreamer1.0-plugins-base-playback \
    gstreamer1.0-plugins-good-rtp gstreamer1.0-plugins-good-rtpmanager \
    gstreamer1.0-plugins-good-video4linux2 gstreamer1.0-plugins-good-autodetect \
    gstreamer1.0-plugins-bad-videoparsersbad gstreamer1.0-plugins-bad-kms \
    gstreamer1.0-plugins-bad-inter gstreamer1.0-plugins-bad-webrtcdsp \
    gstreamer1.0-plugins-base-ogg \
"
RRECOMMENDS:${PN} += "gstreamer1.0-plugins-ugly-x264 gstreamer1.0-libav"

USERADD_PACKAGES = "${PN}"
# render: callbox.service names it (GPU render nodes); added unless the image has it already.
GROUPADD_PARAM:${PN} = "--system gpio; --system render"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/callbox --no-create-home --shell /sbin/nologin \
    --user-group --groups video,audio,gpio,render callbox"

SYSTEMD_SERVICE:${PN} = "callbox.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

# A board's sandbox drop-in for callbox.service (systemd/boards/: raspberry-pi, jetson), e.g.
# CALLBOX_BOARD = "raspberry-pi" in local.conf for a Pi camera module through libcamera.
CALLBOX_BOARD ??= ""

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysconfdir}/callbox \
        ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d ${D}${nonarch_base_libdir}/udev/rules.d
    install -m 0644 ${S}/systemd/callbox.service ${S}/systemd/callbox-server.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/callbox.sysusers ${D}${nonarch_libdir}/sysusers.d/callbox.conf
    install -m 0644 ${S}/systemd/callbox.tmpfile ${D}${nonarch_libdir}/tmpfiles.d/callbox.conf
    install -m 0644 ${S}/systemd/callbox-gpio.rules ${D}${nonarch_base_libdir}/udev/rules.d/60-callbox-gpio.rules
    if [ -n "${CALLBOX_BOARD}" ]; then
        install -d ${D}${sysconfdir}/systemd/system/callbox.service.d
        install -m 0644 ${S}/systemd/boards/${CALLBOX_BOARD}.conf ${D}${sysconfdir}/systemd/system/callbox.service.d/board.conf
    fi
    install -m 0640 -g callbox ${S}/configs/raspberry-pi.toml ${D}${sysconfdir}/callbox/device.toml
    chgrp callbox ${D}${sysconfdir}/callbox
    chmod 0750 ${D}${sysconfdir}/callbox
}

CONFFILES:${PN} = "${sysconfdir}/callbox/device.toml"
FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d \
    ${nonarch_base_libdir}/udev/rules.d ${sysconfdir}/systemd/system/callbox.service.d"
