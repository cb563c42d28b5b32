//! One shard's task: its socket, its share of the ICE-TCP links (shard 0 holds them all),
//! its commands and other shards' messages, and the clock, around its [`SfuCore`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callbox_core::rtc::peer::Transmit;
use callbox_core::rtc::sfu::shard::ShardMsg;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::{CONSENT_EXPIRY, MediaOffer, SfuCore, SfuStats, StreamKey};
use crate::deadline::sleep_until;
use crate::rtc::tcp::{Deadlines, TcpIn, TcpLinks};
use crate::rtc::{RtcError, Transport, udp};

/// Datagrams (or messages) taken at once before timers are looked at again.
const MAX_BATCH: usize = 64;
/// ICE-TCP connections at most, and from one address (a NAT may hide a few devices, each
/// with a publish and a play connection).
const MAX_TCP: usize = 1024;
const MAX_TCP_PER_IP: usize = 32;
/// A TCP connection must send its first frame (an ICE check) within this, and then some
/// frame within the consent lifetime.
const TCP_DEADLINES: Deadlines = Deadlines { first: Duration::from_secs(10), idle: CONSENT_EXPIRY };

pub(super) enum Cmd {
    Offer { offer: MediaOffer, reply: oneshot::Sender<Result<String, RtcError>> },
    EndStream(StreamKey),
    EndPlay(String, StreamKey),
    EndSession(String),
    Stats(oneshot::Sender<SfuStats>),
    Alive(String, oneshot::Sender<bool>),
    Keyframe(StreamKey, oneshot::Sender<Option<Vec<Vec<u8>>>>),
}

impl Cmd {
    pub(super) fn name(&self) -> &'static str {
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

/// What reaches a shard from another.
pub(super) enum ShardIn {
    /// From its core.
    Msg(ShardMsg),
    /// A datagram for an ICE-TCP link (to shard 0, which holds them).
    Tcp(Transmit),
}

/// A shard's state besides its sockets.
pub(super) struct Shard {
    pub index: usize,
    pub core: SfuCore,
    pub cmds: mpsc::Receiver<Cmd>,
    pub inbox: mpsc::Receiver<ShardIn>,
    /// Every shard's inbox, by index.
    pub peers: Vec<mpsc::Sender<ShardIn>>,
    /// Messages to other shards dropped on a full queue (the receiving shard is behind;
    /// media lost this way is repaired as any loss is).
    pub drops: Arc<AtomicU64>,
    /// UDP datagrams gathered for one `sendmmsg` (kept to reuse its allocation).
    pub batch: Vec<Transmit>,
}

impl Shard {
    /// Sends what the core has for the network and for other shards.
    fn flush(&mut self, socket: &UdpSocket, tcp: &mut TcpLinks) {
        while let Some(t) = self.core.poll_transmit() {
            match t.transport {
                Transport::Udp => {
                    self.batch.push(t);
                    if self.batch.len() == udp::MAX_BATCH {
                        udp::send_batch(socket, &self.batch);
                        self.batch.clear();
                    }
                }
                Transport::Tcp if self.index == 0 => {
                    tcp.send(t.to, &t.data);
                }
                Transport::Tcp => self.hand(0, ShardIn::Tcp(t)),
            }
        }
        if !self.batch.is_empty() {
            udp::send_batch(socket, &self.batch);
            self.batch.clear();
        }
        while let Some((to, msg)) = self.core.poll_shard_msg() {
            self.hand(to, ShardIn::Msg(msg));
        }
    }

    fn hand(&self, to: usize, what: ShardIn) {
        let Some(peer) = self.peers.get(to) else { return };
        if let Err(mpsc::error::TrySendError::Full(_)) = peer.try_send(what) {
            let n = self.drops.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(from = self.index, to, dropped = n, "a media shard is behind; message dropped");
            }
        }
    }

    fn take(&mut self, what: ShardIn, tcp: &mut TcpLinks) {
        match what {
            ShardIn::Msg(msg) => self.core.handle_shard_msg(Instant::now(), msg),
            ShardIn::Tcp(t) => {
                tcp.send(t.to, &t.data);
            }
        }
    }
}

/// A shard's task: the sockets and the clock around its [`SfuCore`]. `accepted` is the
/// ICE-TCP accept task's output (shard 0 only).
pub(super) async fn run(
    mut shard: Shard,
    socket: UdpSocket,
    mut accepted: Option<mpsc::Receiver<(TcpStream, SocketAddr)>>,
) {
    let mut buf = vec![0u8; 2048];
    let mut tcp = TcpLinks::new(MAX_TCP, MAX_TCP_PER_IP, TCP_DEADLINES);
    loop {
        shard.flush(&socket, &mut tcp);
        let deadline = shard.core.poll_timeout();
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                if let Ok((n, from)) = r {
                    shard.core.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]);
                }
                // Take what else has arrived before looking at timers again.
                for _ in 0..MAX_BATCH {
                    match socket.try_recv_from(&mut buf) {
                        Ok((n, from)) => shard.core.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]),
                        Err(_) => break,
                    }
                }
            }
            got = shard.inbox.recv() => {
                // Never closed: every shard holds every inbox's sender.
                if let Some(what) = got {
                    shard.take(what, &mut tcp);
                }
                for _ in 0..MAX_BATCH {
                    match shard.inbox.try_recv() {
                        Ok(what) => shard.take(what, &mut tcp),
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
                    shard.core.handle_datagram(Instant::now(), from, Transport::Tcp, &frame);
                    if !shard.core.knows(Transport::Tcp, from) {
                        // A stranger (or `callbox doctor`): its answer, if any, is written,
                        // then the connection closes rather than hold one of the slots.
                        shard.flush(&socket, &mut tcp);
                        tcp.close(from);
                    }
                }
            }
            cmd = shard.cmds.recv() => match cmd {
                Some(cmd) => command(&mut shard.core, cmd),
                None => return,
            },
            _ = sleep_until(deadline) => shard.core.handle_timeout(Instant::now()),
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
