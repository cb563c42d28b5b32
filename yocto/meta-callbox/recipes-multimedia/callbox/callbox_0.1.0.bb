SUMMARY = "callbox: room-based real-time audio/video calls for Linux single-board computers"
DESCRIPTION = "The callbox device daemon (door station, intercom, kiosk: camera, microphone, \
hardware H.264 encoding through GStreamer, WebRTC, GPIO buttons and door relay, systemd) \
and the callbox room server."
HOMEPAGE = "https://github.com/callbox/callbox"
SECTION = "multimedia"
LICENSE = "MIT | Apache-2.0"
# The license line of Cargo.toml (tests/yocto.rs keeps this checksum right).
LIC_FILES_CHKSUM = "file://Cargo.toml;beginline=7;endline=7;md5=86b31c7756a1a7962f28b62856ed4f05"

SRC_URI = "git://github.com/callbox/callbox.git;protocol=https;branch=main"
# Pin a release commit in your own layer or local.conf: SRCREV:pn-callbox = "<commit>".
SRCREV ?= "${AUTOREV}"
PV = "0.1.0+git${SRCPV}"
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
GROUPADD_PARAM:${PN} = "--system gpio"
USERADD_PARAM:${PN} = "--system --home-dir /var/lib/callbox --no-create-home --shell /sbin/nologin \
    --user-group --groups video,audio,gpio callbox"

SYSTEMD_SERVICE:${PN} = "callbox.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysconfdir}/callbox \
        ${D}${nonarch_libdir}/sysusers.d ${D}${nonarch_libdir}/tmpfiles.d
    install -m 0644 ${S}/systemd/callbox.service ${S}/systemd/callbox-server.service ${D}${systemd_system_unitdir}/
    install -m 0644 ${S}/systemd/callbox.sysusers ${D}${nonarch_libdir}/sysusers.d/callbox.conf
    install -m 0644 ${S}/systemd/callbox.tmpfile ${D}${nonarch_libdir}/tmpfiles.d/callbox.conf
    install -m 0640 -g callbox ${S}/configs/raspberry-pi.toml ${D}${sysconfdir}/callbox/device.toml
    chgrp callbox ${D}${sysconfdir}/callbox
    chmod 0750 ${D}${sysconfdir}/callbox
}

CONFFILES:${PN} = "${sysconfdir}/callbox/device.toml"
FILES:${PN} += "${systemd_system_unitdir} ${nonarch_libdir}/sysusers.d ${nonarch_libdir}/tmpfiles.d"
