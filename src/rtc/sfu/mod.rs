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

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

pub(crate) mod accept;

use self::accept::Acceptor;
use super::tcp::{Deadlines, TcpIn, TcpLinks};
use super::udp;
use super::{RtcError, Transport};
pub use callbox_core::rtc::sfu::{CONSENT_EXPIRY, KEYFRAME_INTERVAL, MediaOffer, SfuCore, SfuStats, StreamKey};
const MAX_BATCH: usize = 64;
/// ICE-TCP connections at most, and from one address (a NAT may hide a few devices, each
/// with a publish and a play connection).
const MAX_TCP: usize = 1024;
const MAX_TCP_PER_IP: usize = 32;
/// A TCP connection must send its first frame (an ICE check) within this, and then some
/// frame within the consent lifetime.
const TCP_DEADLINES: Deadlines = Deadlines { first: Duration::from_secs(10), idle: CONSENT_EXPIRY };

enum Cmd {
    Offer { offer: MediaOffer, reply: oneshot::Sender<Result<String, RtcError>> },
    EndStream(StreamKey),
    EndPlay(String, StreamKey),
    EndSession(String),
    Stats(oneshot::Sender<SfuStats>),
    Alive(String, oneshot::Sender<bool>),
    Keyframe(StreamKey, oneshot::Sender<Option<Vec<Vec<u8>>>>),
}

impl Cmd {
    fn name(&self) -> &'static str {
        match self {
            Cmd::Offer { .. } => "offer",
            Cmd::EndStream(_) => "end_stream",
            Cmd::EndPlay(..) => "end_play",
            Cmd::EndSession(_) => "end_session",
            Cmd::Stats(_) => "stats",
            Cmd::Alive(..) => "alive",
            Cmd::Keyframe(..) => "keyframe",
        }
    }
}

/// A handle to the SFU task. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    tx: mpsc::Sender<Cmd>,
    /// The media socket's address.
    pub addr: SocketAddr,
    /// The ICE-TCP port's address, if it listens.
    pub tcp_addr: Option<SocketAddr>,
    /// Commands dropped on a full queue.
    dropped: Arc<AtomicU64>,
}

impl Sfu {
    /// Binds the media socket at `bind` and starts the SFU. `announce` are the addresses
    /// put in answers (with the socket's port); empty means the bound address. With
    /// `tcp_port`, ICE-TCP is accepted on that TCP port of the same IP (0: any free port).
    pub fn start(bind: SocketAddr, announce: Vec<IpAddr>, tcp_port: Option<u16>) -> Result<Sfu, RtcError> {
        Sfu::start_with(bind, announce, tcp_port, |l| l)
    }

    /// [`Sfu::start`], with the ICE-TCP listener wrapped by `acceptor` (tests: one that fails).
    pub(crate) fn start_with<A: Acceptor>(
        bind: SocketAddr,
        announce: Vec<IpAddr>,
        tcp_port: Option<u16>,
        acceptor: impl FnOnce(TcpListener) -> A,
    ) -> Result<Sfu, RtcError> {
        let socket = udp::bind_udp(bind)?;
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
        let accepted = listener.map(|l| accept::spawn(acceptor(l)));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(socket, accepted, core, rx));
        Ok(Sfu { tx, addr, tcp_addr, dropped: Arc::new(AtomicU64::new(0)) })
    }

    /// Answers a device's or browser's offer for `stream`. Replaces that session's earlier
    /// connection for the same stream and role.
    pub async fn offer(&self, offer: MediaOffer) -> Result<String, RtcError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Offer { offer, reply };
        self.tx.send(cmd).await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?;
        rx.await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?
    }

    /// The stream is gone: close its publisher and players.
    pub fn end_stream(&self, stream: StreamKey) {
        self.command(Cmd::EndStream(stream));
    }

    /// `session` stopped playing `stream`.
    pub fn end_play(&self, session: &str, stream: StreamKey) {
        self.command(Cmd::EndPlay(session.to_string(), stream));
    }

    /// `session` is gone: close all its connections.
    pub fn end_session(&self, session: &str) {
        self.command(Cmd::EndSession(session.to_string()));
    }

    /// Queues a command that must not wait (the hub and HTTP handlers call these): on a full
    /// queue it is dropped and counted, and logged as the engine's backlog logs its drops.
    fn command(&self, cmd: Cmd) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.tx.try_send(cmd) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... drops: a relay that stays behind cannot fill the journal.
            if n.is_power_of_two() {
                tracing::warn!(command = cmd.name(), dropped = n, "the media relay is behind; command dropped");
            }
        }
    }

    /// Commands dropped on a full queue since start (`callbox_dropped_total{what="media_command"}`).
    pub fn commands_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Whether `session` still has a media connection (one whose ICE failed or that was
    /// closed is gone).
    pub async fn session_alive(&self, session: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Alive(session.to_string(), reply)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// The stream's latest complete keyframe as RTP datagrams (none yet: its publisher is
    /// asked for one, and a later call may have it).
    pub async fn keyframe(&self, stream: StreamKey) -> Option<Vec<Vec<u8>>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Cmd::Keyframe(stream, reply)).await.ok()?;
        rx.await.ok().flatten()
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
async fn run(
    socket: UdpSocket,
    mut accepted: Option<mpsc::Receiver<(TcpStream, SocketAddr)>>,
    mut core: SfuCore,
    mut cmds: mpsc::Receiver<Cmd>,
) {
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
            conn = next_accepted(&mut accepted) => match conn {
                Some((stream, from)) => tcp.accept(stream, from),
                None => accepted = None, // the accept task ended: no more ICE-TCP
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
fn send(socket: &UdpSocket, tcp: &mut TcpLinks, t: &callbox_core::rtc::peer::Transmit) {
    match t.transport {
        Transport::Udp => udp::send(socket, t),
        Transport::Tcp => {
            tcp.send(t.to, &t.data);
        }
    }
}

/// The next connection the accept task took, or never without ICE-TCP.
async fn next_accepted(
    accepted: &mut Option<mpsc::Receiver<(TcpStream, SocketAddr)>>,
) -> Option<(TcpStream, SocketAddr)> {
    match accepted {
        Some(rx) => rx.recv().await,
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
        Cmd::Offer { offer, reply } => {
            let _ = reply.send(core.handle_offer(Instant::now(), offer));
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
        Cmd::Keyframe(stream, reply) => {
            let _ = reply.send(core.keyframe(Instant::now(), &stream));
        }
    }
}
