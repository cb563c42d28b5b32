//! The UDP half of a peer connection: binding a media socket and sending what a core gives.

use std::net::SocketAddr;

use callbox_core::rtc::peer::Transmit;
use tokio::net::UdpSocket;

/// Sends one transmit. A full socket buffer drops the datagram (media is loss-tolerant;
/// NACK and the next keyframe repair it).
pub(crate) fn send(socket: &UdpSocket, t: &Transmit) {
    match socket.try_send_to(&t.data, t.to) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Err(e) => tracing::trace!(error = %e, peer = %t.to, "media send failed"),
    }
}

/// A UDP socket on `ip` (port 0) that can hold a burst of video.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}
