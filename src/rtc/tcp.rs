//! ICE-TCP connections (RFC 6544) carrying RFC 4571 frames, for the tasks that own sockets:
//! the SFU accepts them on its TCP media port (passive), a device connection opens one to
//! each of the server's passive candidates its ICE agent checks (active). Each connection
//! is one small task that reads frames into one bounded channel and writes the frames it is
//! given; the sans-IO cores only see datagrams tagged [`Transport::Tcp`](super::peer::Transport).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rtc::shared::tcp_framing::TcpFrameDecoder;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

/// Frames waiting to be written to one connection; full: the frame is dropped, as a full
/// UDP socket buffer drops a datagram (NACK and keyframes repair media).
const OUT_FRAMES: usize = 512;
/// Frames read from all connections, waiting for the core; full: readers wait, which
/// slows the senders down through TCP.
const IN_FRAMES: usize = 1024;
/// A device's connection attempt to the server's TCP port gives up after this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connections report.
#[derive(Debug)]
pub(crate) enum TcpIn {
    /// A frame from the connection with this peer.
    Frame(SocketAddr, BytesMut),
    /// The connection with this peer ended (its id tells it from a newer one).
    Closed(SocketAddr, u64),
}

/// How long a connection may stay quiet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    /// For the first frame (a stranger that sends nothing is closed soon).
    pub first: Duration,
    /// Between frames afterwards (ICE consent checks come every few seconds).
    pub idle: Duration,
}

/// The ICE-TCP connections of one task, by peer address.
pub(crate) struct TcpLinks {
    links: HashMap<SocketAddr, (u64, mpsc::Sender<Bytes>)>,
    next_id: u64,
    max: usize,
    per_ip: usize,
    deadlines: Deadlines,
    in_tx: mpsc::Sender<TcpIn>,
    in_rx: mpsc::Receiver<TcpIn>,
    /// Connections refused for the caps.
    pub refused: u64,
}

impl TcpLinks {
    /// At most `max` connections, `per_ip` from one address.
    pub(crate) fn new(max: usize, per_ip: usize, deadlines: Deadlines) -> TcpLinks {
        let (in_tx, in_rx) = mpsc::channel(IN_FRAMES);
        TcpLinks { links: HashMap::new(), next_id: 1, max, per_ip, deadlines, in_tx, in_rx, refused: 0 }
    }

    /// Queues `data` as one frame on the connection with `to`. False if there is none.
    pub(crate) fn send(&mut self, to: SocketAddr, data: &[u8]) -> bool {
        let Some((_, tx)) = self.links.get(&to) else { return false };
        if let Some(frame) = frame(data) {
            let _ = tx.try_send(frame);
        }
        true
    }

    /// Opens a connection to `to` from `local` (port 0: any); frames sent meanwhile wait.
    pub(crate) fn connect(&mut self, local: IpAddr, to: SocketAddr) {
        if self.links.contains_key(&to) || !self.admits(to.ip()) {
            return;
        }
        let (id, rx) = self.insert(to);
        let (in_tx, deadlines) = (self.in_tx.clone(), self.deadlines);
        tokio::spawn(async move {
            match dial(local, to).await {
                Ok(stream) => run(stream, to, id, rx, in_tx, deadlines).await,
                Err(e) => {
                    tracing::debug!(peer = %to, error = %e, "ICE-TCP connection failed");
                    let _ = in_tx.send(TcpIn::Closed(to, id)).await;
                }
            }
        });
    }

    /// Takes a connection accepted from `from`, unless it is over the caps (then it is
    /// closed at once).
    pub(crate) fn accept(&mut self, stream: TcpStream, from: SocketAddr) {
        if self.links.contains_key(&from) || !self.admits(from.ip()) {
            self.refused += 1;
            tracing::debug!(peer = %from, "ICE-TCP connection refused (over the caps)");
            return;
        }
        let _ = stream.set_nodelay(true);
        let (id, rx) = self.insert(from);
        tokio::spawn(run(stream, from, id, rx, self.in_tx.clone(), self.deadlines));
    }

    /// Forgets the connection with `peer`: what is queued for it is still written, then it
    /// closes (a stranger's connection that named no media connection of ours).
    pub(crate) fn close(&mut self, peer: SocketAddr) {
        self.links.remove(&peer);
    }

    /// The next frame or closed connection (a closed one is forgotten here).
    pub(crate) async fn recv(&mut self) -> TcpIn {
        // `in_tx` lives in self: the channel never closes.
        let Some(got) = self.in_rx.recv().await else { return std::future::pending().await };
        if let TcpIn::Closed(peer, id) = &got
            && self.links.get(peer).is_some_and(|(i, _)| i == id)
        {
            self.links.remove(peer);
        }
        got
    }

    /// Connections now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.links.len()
    }

    fn admits(&self, ip: IpAddr) -> bool {
        self.links.len() < self.max && self.links.keys().filter(|a| a.ip() == ip).count() < self.per_ip
    }

    fn insert(&mut self, peer: SocketAddr) -> (u64, mpsc::Receiver<Bytes>) {
        let id = self.next_id;
        self.next_id += 1;
        let (tx, rx) = mpsc::channel(OUT_FRAMES);
        self.links.insert(peer, (id, tx));
        (id, rx)
    }
}

/// `data` with its RFC 4571 length; `None` if it cannot be framed (over 64 KiB).
fn frame(data: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(data.len()).ok()?;
    let mut b = BytesMut::with_capacity(data.len() + 2);
    b.put_u16(len);
    b.put_slice(data);
    Some(b.freeze())
}

async fn dial(local: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if to.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if local.is_ipv4() == to.is_ipv4() && !local.is_unspecified() {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(to))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One connection: frames read go to `in_tx`, frames from `out` are written, until either
/// side ends, a deadline passes or the owner forgets the connection (drops its sender).
async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    mut out: mpsc::Receiver<Bytes>,
    in_tx: mpsc::Sender<TcpIn>,
    deadlines: Deadlines,
) {
    let (mut rd, mut wr) = stream.into_split();
    let mut decoder = TcpFrameDecoder::with_capacity(4096);
    let mut buf = vec![0u8; 16 * 1024];
    let mut wait = deadlines.first;
    loop {
        tokio::select! {
            r = tokio::time::timeout(wait, rd.read(&mut buf)) => {
                let n = match r {
                    Ok(Ok(n)) if n > 0 => n,
                    Ok(Ok(_)) | Ok(Err(_)) => break,
                    Err(_) => {
                        tracing::debug!(%peer, "ICE-TCP connection quiet too long; closing");
                        break;
                    }
                };
                decoder.extend_from_slice(&buf[..n]);
                while let Some(p) = decoder.next_packet() {
                    wait = deadlines.idle;
                    if in_tx.send(TcpIn::Frame(peer, BytesMut::from(&p[..]))).await.is_err() {
                        return;
                    }
                }
            }
            f = out.recv() => match f {
                Some(f) => {
                    if wr.write_all(&f).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    let _ = in_tx.send(TcpIn::Closed(peer, id)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_and_oversize_is_refused() {
        assert_eq!(&frame(b"abc").unwrap()[..], &[0, 3, b'a', b'b', b'c']);
        assert!(frame(&vec![0; 70_000]).is_none());
    }

    /// A stranger's connection: refused over the per-address cap, closed when it sends no
    /// frame in time, and frames flow both ways on an accepted one.
    #[tokio::test]
    async fn accepted_connections_are_capped_timed_and_carry_frames() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let deadlines = Deadlines { first: Duration::from_millis(300), idle: Duration::from_secs(5) };
        let mut links = TcpLinks::new(8, 1, deadlines);
        let mut a = TcpStream::connect(addr).await.unwrap();
        let (s, from) = listener.accept().await.unwrap();
        links.accept(s, from);
        let _b = TcpStream::connect(addr).await.unwrap();
        let (s, from_b) = listener.accept().await.unwrap();
        links.accept(s, from_b);
        assert_eq!((links.len(), links.refused), (1, 1), "one per address");
        a.write_all(&[0, 2, 7, 8, 0]).await.unwrap();
        match links.recv().await {
            TcpIn::Frame(p, f) => assert_eq!((p, &f[..]), (from, &[7u8, 8][..])),
            other => panic!("{other:?}"),
        }
        assert!(links.send(from, b"hi"));
        let mut got = [0u8; 4];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [0, 2, b'h', b'i']);
        // Forgotten: what is queued is still written, then the connection closes.
        assert!(links.send(from, b"bye"));
        links.close(from);
        assert!(!links.send(from, b"late"), "gone");
        let mut rest = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), a.read_to_end(&mut rest)).await.unwrap().unwrap();
        assert_eq!((n, &rest[..]), (5, &[0u8, 3, b'b', b'y', b'e'][..]), "flushed, then closed");
        // A second stranger that sends nothing: closed after the first-frame deadline.
        let mut links = TcpLinks::new(8, 4, deadlines);
        let mut c = TcpStream::connect(addr).await.unwrap();
        let (s, from_c) = listener.accept().await.unwrap();
        links.accept(s, from_c);
        assert!(matches!(links.recv().await, TcpIn::Closed(p, _) if p == from_c));
        assert_eq!(links.len(), 0);
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut got)).await.unwrap().unwrap();
        assert_eq!(n, 0, "closed by the server");
    }
}
