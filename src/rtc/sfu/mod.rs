//! The server's selective forwarding unit. One task owns one UDP socket and every peer
//! connection on it: a publisher's RTP is forwarded, unchanged but for SSRC and payload
//! type, to each player of the same stream (same app, same room: the registry decides who
//! may connect, the SFU only knows stream keys). Each player connection keeps its own
//! retransmission buffer (the NACK responder), so a lossy player never costs the publisher
//! or the other players anything. A player that joins, or asks (PLI/FIR), gets the
//! publisher asked for a keyframe, at most every 500 ms per publisher.
//!
//! Datagrams are routed by address once known; the first datagram from a new address is
//! an ICE check whose USERNAME names the server's ufrag, which is unique per connection.
//!
//! Clients whose UDP does not pass reach the same port number over TCP (ICE-TCP, RFC 6544):
//! answers carry a passive TCP candidate next to the UDP one, and frames from a TCP
//! connection are datagrams like any other to the core.
//!
//! All of that is [`SfuCore`] (sans-IO: time and datagrams in, datagrams and a deadline
//! out). The task here only owns the sockets and the clock: it feeds the core what arrives,
//! the registry's commands and its deadline, and sends what the core gives back.

mod core;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

pub use self::core::{KEYFRAME_INTERVAL, SfuCore};
use super::peer::{self, RtcError, Transport};
use super::tcp::{Deadlines, TcpIn, TcpLinks};
use crate::proto::MediaRole;
/// A connection that sent nothing at all (no STUN, no media, no RTCP) for this long is gone
/// (RFC 7675's consent lifetime). Media and RTCP count: agents such as libnice send a
/// consent check only every ~25 s while their media flows.
pub const CONSENT_EXPIRY: Duration = Duration::from_secs(30);
const MAX_BATCH: usize = 64;
/// ICE-TCP connections at most, and from one address (a NAT may hide a few devices, each
/// with a publish and a play connection).
const MAX_TCP: usize = 1024;
const MAX_TCP_PER_IP: usize = 32;
/// A TCP connection must send its first frame (an ICE check) within this, and then some
/// frame within the consent lifetime.
const TCP_DEADLINES: Deadlines = Deadlines { first: Duration::from_secs(10), idle: CONSENT_EXPIRY };

/// A stream as the SFU knows it: app, room and stream ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The AppID.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The stream.
    pub stream_id: String,
}

/// Counters of the SFU, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Publish connections now.
    pub publishers: usize,
    /// Play connections now.
    pub players: usize,
    /// Connections whose media arrives over ICE-TCP now.
    pub over_tcp: usize,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP packets forwarded to players.
    pub packets_out: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Bitrate caps (REMB: the lowest of the stream's players' estimates) sent to publishers.
    pub bitrate_caps: u64,
    /// Publishers' lost video packets that arrived again as retransmissions (RTX).
    pub rtx_received: u64,
    /// Publishers' lost video packets rebuilt from FlexFEC.
    pub fec_rebuilt: u64,
}

enum Cmd {
    Offer {
        session: String,
        stream: StreamKey,
        role: MediaRole,
        sdp: String,
        reply: oneshot::Sender<Result<String, RtcError>>,
    },
    EndStream(StreamKey),
    EndPlay(String, StreamKey),
    EndSession(String),
    Stats(oneshot::Sender<SfuStats>),
    Alive(String, oneshot::Sender<bool>),
}

/// A handle to the SFU task. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    tx: mpsc::Sender<Cmd>,
    /// The media socket's address.
    pub addr: SocketAddr,
    /// The ICE-TCP port's address, if it listens.
    pub tcp_addr: Option<SocketAddr>,
}

impl Sfu {
    /// Binds the media socket at `bind` and starts the SFU. `announce` are the addresses
    /// put in answers (with the socket's port); empty means the bound address. With
    /// `tcp_port`, ICE-TCP is accepted on that TCP port of the same IP (0: any free port).
    pub fn start(bind: SocketAddr, announce: Vec<IpAddr>, tcp_port: Option<u16>) -> Result<Sfu, RtcError> {
        let socket = peer::bind_udp(bind)?;
        let addr = socket.local_addr()?;
        let at = |port: u16| -> Vec<SocketAddr> {
            let mut c: Vec<SocketAddr> = announce.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            if c.is_empty() {
                c.push(SocketAddr::new(addr.ip(), port));
            }
            c
        };
        let mut core = SfuCore::new(addr, at(addr.port()));
        let listener = match tcp_port {
            Some(port) => {
                let l = bind_tcp(SocketAddr::new(bind.ip(), port))?;
                let local = l.local_addr()?;
                core = core.with_tcp(local, at(local.port()));
                Some(l)
            }
            None => None,
        };
        let tcp_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(socket, listener, core, rx));
        Ok(Sfu { tx, addr, tcp_addr })
    }

    /// Answers a device's or browser's offer for `stream`. Replaces that session's earlier
    /// connection for the same stream and role.
    pub async fn offer(
        &self,
        session: &str,
        stream: StreamKey,
        role: MediaRole,
        sdp: String,
    ) -> Result<String, RtcError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Offer { session: session.to_string(), stream, role, sdp, reply };
        self.tx.send(cmd).await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?;
        rx.await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?
    }

    /// The stream is gone: close its publisher and players.
    pub fn end_stream(&self, stream: StreamKey) {
        let _ = self.tx.try_send(Cmd::EndStream(stream));
    }

    /// `session` stopped playing `stream`.
    pub fn end_play(&self, session: &str, stream: StreamKey) {
        let _ = self.tx.try_send(Cmd::EndPlay(session.to_string(), stream));
    }

    /// `session` is gone: close all its connections.
    pub fn end_session(&self, session: &str) {
        let _ = self.tx.try_send(Cmd::EndSession(session.to_string()));
    }

    /// The counters.
    /// Whether `session` still has a media connection (one whose ICE failed or that was
    /// closed is gone).
    pub async fn session_alive(&self, session: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Alive(session.to_string(), reply)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Relay counters.
    pub async fn stats(&self) -> Option<SfuStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// A listening TCP socket (address reuse, so a restarted server gets its port back at once).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// The SFU's task: the sockets and the clock around [`SfuCore`].
async fn run(socket: UdpSocket, listener: Option<TcpListener>, mut core: SfuCore, mut cmds: mpsc::Receiver<Cmd>) {
    let mut buf = vec![0u8; 2048];
    let mut tcp = TcpLinks::new(MAX_TCP, MAX_TCP_PER_IP, TCP_DEADLINES);
    loop {
        while let Some(t) = core.poll_transmit() {
            send(&socket, &mut tcp, &t);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    core.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]);
                }
                // Take what else has arrived before looking at timers again.
                for _ in 0..MAX_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => core.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            r = accept(listener.as_ref()) => match r {
                Ok((stream, from)) => tcp.accept(stream, from),
                Err(e) => {
                    // Out of descriptors, typically: wait rather than spin.
                    tracing::warn!(error = %e, "cannot accept an ICE-TCP connection");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            },
            got = tcp.recv() => {
                if let TcpIn::Frame(from, frame) = got {
                    core.handle_datagram(Instant::now(), from, Transport::Tcp, &frame);
                    if !core.knows(Transport::Tcp, from) {
                        // A stranger (or `callbox doctor`): its answer, if any, is written,
                        // then the connection closes rather than hold one of the slots.
                        while let Some(t) = core.poll_transmit() {
                            send(&socket, &mut tcp, &t);
                        }
                        tcp.close(from);
                    }
                }
            }
            cmd = cmds.recv() => match cmd {
                Some(cmd) => command(&mut core, cmd),
                None => return,
            },
            _ = sleep_until(deadline) => core.handle_timeout(Instant::now()),
        }
    }
}

/// Sends one transmit over UDP or the TCP connection it names.
fn send(socket: &UdpSocket, tcp: &mut TcpLinks, t: &peer::Transmit) {
    match t.transport {
        Transport::Udp => peer::send(socket, t),
        Transport::Tcp => {
            tcp.send(t.to, &t.data);
        }
    }
}

/// The next connection on the ICE-TCP port, or never without one.
async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or for ever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

fn command(core: &mut SfuCore, cmd: Cmd) {
    match cmd {
        Cmd::Offer { session, stream, role, sdp, reply } => {
            let _ = reply.send(core.handle_offer(Instant::now(), session, stream, role, sdp));
        }
        Cmd::EndStream(stream) => core.end_stream(&stream),
        Cmd::EndPlay(session, stream) => core.end_play(&session, &stream),
        Cmd::EndSession(session) => core.end_session(&session),
        Cmd::Alive(session, reply) => {
            let _ = reply.send(core.session_alive(&session));
        }
        Cmd::Stats(reply) => {
            let _ = reply.send(core.stats());
        }
    }
}
