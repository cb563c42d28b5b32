# callbox encodes and decodes audio with opusenc/opusdec (gstreamer1.0-plugins-base-opus),
# which poky's default PACKAGECONFIG leaves out.
PACKAGECONFIG:append = " opus"
