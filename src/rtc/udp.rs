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

/// Datagrams handed to the kernel in one `sendmmsg` call at most.
pub(crate) const MAX_BATCH: usize = 64;

/// Sends `batch` with one `sendmmsg` system call per [`MAX_BATCH`] datagrams (a profile of
/// the SFU put a third of its time in one `sendto` per datagram). A full socket buffer
/// drops the rest of the call's datagrams, as [`send`] drops one.
pub(crate) fn send_batch(socket: &UdpSocket, batch: &[Transmit]) {
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    for chunk in batch.chunks(MAX_BATCH) {
        // SAFETY: all-zero mmsghdr, iovec and sockaddr_storage are valid (null pointers,
        // zero lengths); each is filled below before the call reads it.
        let mut hdrs: [libc::mmsghdr; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut iovs: [libc::iovec; MAX_BATCH] = unsafe { std::mem::zeroed() };
        let mut addrs: [libc::sockaddr_storage; MAX_BATCH] = unsafe { std::mem::zeroed() };
        for (i, t) in chunk.iter().enumerate() {
            let sa = socket2::SockAddr::from(t.to);
            // SAFETY: `sa` holds `sa.len()` bytes of a sockaddr, which fits a sockaddr_storage.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    sa.as_ptr().cast::<u8>(),
                    (&mut addrs[i] as *mut libc::sockaddr_storage).cast::<u8>(),
                    sa.len() as usize,
                );
            }
            iovs[i] = libc::iovec { iov_base: t.data.as_ptr() as *mut libc::c_void, iov_len: t.data.len() };
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = sa.len();
            hdrs[i].msg_hdr.msg_iov = &mut iovs[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut done = 0;
        while done < chunk.len() {
            let rest = &mut hdrs[done..chunk.len()];
            let sent = socket.try_io(tokio::io::Interest::WRITABLE, || {
                // SAFETY: `rest` points at filled headers whose buffers (the transmits'
                // data, `iovs`, `addrs`) outlive the call.
                let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
                if n < 0 { Err(std::io::Error::last_os_error()) } else { Ok(n as usize) }
            });
            match sent {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    // One bad destination fails only its own datagram.
                    tracing::trace!(error = %e, peer = %chunk[done].to, "media send failed");
                    done += 1;
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use callbox_core::rtc::Transport;

    #[tokio::test]
    async fn a_batch_larger_than_one_call_reaches_every_destination_in_order() {
        let socket = bind_udp("127.0.0.1:0".parse().unwrap()).unwrap();
        let from = socket.local_addr().unwrap();
        let sinks =
            [std::net::UdpSocket::bind("127.0.0.1:0").unwrap(), std::net::UdpSocket::bind("127.0.0.1:0").unwrap()];
        let batch: Vec<Transmit> = (0..MAX_BATCH as u8 + 10)
            .map(|i| Transmit {
                from,
                to: sinks[usize::from(i % 2)].local_addr().unwrap(),
                transport: Transport::Udp,
                data: bytes::BytesMut::from(&[i; 3][..]),
            })
            .collect();
        socket.writable().await.unwrap();
        send_batch(&socket, &batch);
        for (k, sink) in sinks.iter().enumerate() {
            sink.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 16];
            for i in (0..MAX_BATCH as u8 + 10).filter(|i| usize::from(i % 2) == k) {
                let n = sink.recv(&mut buf).unwrap();
                assert_eq!(&buf[..n], &[i; 3], "datagram {i} to sink {k}");
            }
        }
    }
}
