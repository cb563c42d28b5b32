# callbox's kiosk display (kmssink, gstreamer1.0-plugins-bad-kms) and echo cancellation
# (webrtcdsp, gstreamer1.0-plugins-bad-webrtcdsp) are not in poky's default PACKAGECONFIG.
# webrtcdsp depends on a webrtc-audio-processing recipe (meta-openembedded); drop it here if
# your layers have none and set [audio] echo_cancel = false.
PACKAGECONFIG:append = " kms webrtcdsp"
