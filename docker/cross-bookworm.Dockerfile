# Image for `cross` (see cross.toml): Debian bookworm (GStreamer 1.22, like Raspberry Pi OS
# bookworm) with the cross compiler and the target architecture's -dev packages.
FROM debian:bookworm
ARG DEB_ARCH=arm64
ARG GNU_TRIPLE=aarch64-linux-gnu
ARG RUST_TARGET=AARCH64_UNKNOWN_LINUX_GNU
RUN dpkg --add-architecture ${DEB_ARCH} \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates pkg-config gcc-${GNU_TRIPLE} libc6-dev-${DEB_ARCH}-cross \
      libgstreamer1.0-dev:${DEB_ARCH} libgstreamer-plugins-base1.0-dev:${DEB_ARCH} \
 && rm -rf /var/lib/apt/lists/*
ENV PKG_CONFIG_ALLOW_CROSS=1 \
    PKG_CONFIG_LIBDIR=/usr/lib/${GNU_TRIPLE}/pkgconfig:/usr/share/pkgconfig \
    CARGO_TARGET_${RUST_TARGET}_LINKER=${GNU_TRIPLE}-gcc \
    TARGET_CC=${GNU_TRIPLE}-gcc
