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

/// `n` UDP sockets on the one address `addr` (port 0: a free port), for the SFU's shards:
/// with more than one, each has `SO_REUSEPORT` and the kernel spreads arriving datagrams
/// over them by address. The port is first bound alone, so one held by anything else (a
/// second server) is an error, not a share. Non-blocking, not yet registered with a runtime.
pub(crate) fn bind_shared(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let alone = std::net::UdpSocket::bind(addr)?;
    alone.set_nonblocking(true)?;
    if n <= 1 {
        return Ok(vec![alone]);
    }
    let addr = alone.local_addr()?;
    drop(alone);
    (0..n)
        .map(|_| {
            let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
            let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
            s.set_reuse_port(true)?;
            s.set_nonblocking(true)?;
            s.bind(&addr.into())?;
            Ok(s.into())
        })
        .collect()
}

/// A UDP socket on `ip` (port 0) that can hold a burst of video.
pub(crate) fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let std = std::net::UdpSocket::bind(addr)?;
    std.set_nonblocking(true)?;
    UdpSocket::from_std(std)
}
