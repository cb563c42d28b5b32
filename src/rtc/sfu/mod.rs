//! The server's selective forwarding unit. It is split into shards, one per core (see
//! `callbox_core::rtc::sfu::shard`): each shard's task owns one UDP socket on the media port
//! (`SO_REUSEPORT`), its peer connections and their timers; shard 0 also owns the ICE-TCP
//! listener. In each shard: a publisher's RTP is forwarded, unchanged but for SSRC and payload
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
//! All of that is [`SfuCore`] (sans-IO: time and datagrams in, datagrams, messages to other
//! shards and a deadline out). The tasks in `task.rs` only own the sockets and the clock:
//! each feeds its core what arrives (datagrams, the registry's commands, other shards'
//! messages) and its deadline, and sends what the core gives back. [`Sfu`] routes a command
//! to the shard that owns what it names, or to all.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub(crate) mod accept;
mod task;

use self::accept::Acceptor;
use self::task::{Cmd, ShardIn};
use super::RtcError;
pub use callbox_core::rtc::sfu::shard::Shards;
pub use callbox_core::rtc::sfu::{CONSENT_EXPIRY, KEYFRAME_INTERVAL, MediaOffer, SfuCore, SfuStats, StreamKey};

/// Each shard's queue of commands and of other shards' messages.
const CMD_QUEUE: usize = 1024;
const SHARD_QUEUE: usize = 4096;

/// A handle to the SFU's shards. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    shards: Vec<mpsc::Sender<Cmd>>,
    rules: Shards,
    /// The media socket's address.
    pub addr: SocketAddr,
    /// The ICE-TCP port's address, if it listens.
    pub tcp_addr: Option<SocketAddr>,
    /// Commands dropped on a full queue.
    dropped: Arc<AtomicU64>,
    /// Messages between shards dropped on a full queue.
    shard_drops: Arc<AtomicU64>,
}

impl Sfu {
    /// Binds the media port at `bind` and starts the SFU in `shards` shards (each its own
    /// socket on the port; shard 0 runs on the caller's runtime, the others each on a thread
    /// of their own). `announce` are the addresses put in answers (with the socket's port);
    /// empty means the bound address. With `tcp_port`, ICE-TCP is accepted on that TCP port
    /// of the same IP (0: any free port).
    pub fn start(
        bind: SocketAddr,
        announce: Vec<IpAddr>,
        tcp_port: Option<u16>,
        shards: usize,
    ) -> Result<Sfu, RtcError> {
        Sfu::start_with(bind, announce, tcp_port, shards, |l| l)
    }

    /// [`Sfu::start`], with the ICE-TCP listener wrapped by `acceptor` (tests: one that fails).
    pub(crate) fn start_with<A: Acceptor>(
        bind: SocketAddr,
        announce: Vec<IpAddr>,
        tcp_port: Option<u16>,
        shards: usize,
        acceptor: impl FnOnce(TcpListener) -> A,
    ) -> Result<Sfu, RtcError> {
        let rules = Shards::new(shards);
        let sockets = super::udp::bind_shared(bind, rules.count())?;
        let addr = sockets[0].local_addr()?;
        let at = |port: u16| -> Vec<SocketAddr> {
            let mut c: Vec<SocketAddr> = announce.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            if c.is_empty() {
                c.push(SocketAddr::new(addr.ip(), port));
            }
            c
        };
        let listener = match tcp_port {
            Some(port) => Some(bind_tcp(SocketAddr::new(bind.ip(), port))?),
            None => None,
        };
        let tcp_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let core = |index: usize| {
            let core = SfuCore::new(addr, at(addr.port())).on_shard(index, rules);
            match tcp_addr {
                Some(local) => core.with_tcp(local, at(local.port())),
                None => core,
            }
        };
        // Taken by shard 0, which holds the ICE-TCP links.
        let mut accepted = listener.map(|l| accept::spawn(acceptor(l)));
        let (mut cmd_tx, mut cmd_rx, mut in_tx, mut in_rx) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rules.count() {
            let (tx, rx) = mpsc::channel(CMD_QUEUE);
            cmd_tx.push(tx);
            cmd_rx.push(rx);
            let (tx, rx) = mpsc::channel::<ShardIn>(SHARD_QUEUE);
            in_tx.push(tx);
            in_rx.push(rx);
        }
        let drops = Arc::new(AtomicU64::new(0));
        for (index, ((socket, cmds), inbox)) in sockets.into_iter().zip(cmd_rx).zip(in_rx).enumerate() {
            let shard = task::Shard {
                index,
                core: core(index),
                cmds,
                inbox,
                peers: in_tx.clone(),
                drops: drops.clone(),
                batch: Vec::new(),
            };
            if index == 0 {
                let socket = tokio::net::UdpSocket::from_std(socket)?;
                tokio::spawn(task::run(shard, socket, accepted.take()));
            } else {
                std::thread::Builder::new().name(format!("callbox-sfu-{index}")).spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt,
                        Err(e) => return tracing::error!(shard = index, error = %e, "media shard cannot start"),
                    };
                    rt.block_on(async move {
                        match tokio::net::UdpSocket::from_std(socket) {
                            Ok(socket) => task::run(shard, socket, None).await,
                            Err(e) => tracing::error!(shard = index, error = %e, "media shard cannot start"),
                        }
                    });
                })?;
            }
        }
        Ok(Sfu { shards: cmd_tx, rules, addr, tcp_addr, dropped: Arc::new(AtomicU64::new(0)), shard_drops: drops })
    }

    /// How many shards forward media.
    pub fn shard_count(&self) -> usize {
        self.rules.count()
    }

    /// Answers a device's or browser's offer for `stream`. Replaces that session's earlier
    /// connection for the same stream and role.
    pub async fn offer(&self, offer: MediaOffer) -> Result<String, RtcError> {
        let (reply, rx) = oneshot::channel();
        let shard = &self.shards[self.rules.of_offer(&offer)];
        let cmd = Cmd::Offer { offer, reply };
        shard.send(cmd).await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?;
        rx.await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?
    }

    /// The stream is gone: close its publisher and players (on every shard).
    pub fn end_stream(&self, stream: StreamKey) {
        for shard in 0..self.shards.len() {
            self.command(shard, Cmd::EndStream(stream.clone()));
        }
    }

    /// `session` stopped playing `stream`.
    pub fn end_play(&self, session: &str, stream: StreamKey) {
        let shard = self.rules.player(session, &stream);
        self.command(shard, Cmd::EndPlay(session.to_string(), stream));
    }

    /// `session` is gone: close all its connections.
    pub fn end_session(&self, session: &str) {
        for shard in 0..self.shards.len() {
            self.command(shard, Cmd::EndSession(session.to_string()));
        }
    }

    /// Queues a command that must not wait (the hub and HTTP handlers call these): on a full
    /// queue it is dropped and counted, and logged as the engine's backlog logs its drops.
    fn command(&self, shard: usize, cmd: Cmd) {
        if let Err(mpsc::error::TrySendError::Full(cmd)) = self.shards[shard].try_send(cmd) {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8, ... drops: a relay that stays behind cannot fill the journal.
            if n.is_power_of_two() {
                tracing::warn!(command = cmd.name(), shard, dropped = n, "the media relay is behind; command dropped");
            }
        }
    }

    /// Commands dropped on a full queue since start (`callbox_dropped_total{what="media_command"}`).
    pub fn commands_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Messages between shards dropped on a full queue since start
    /// (`callbox_dropped_total{what="media_shard_message"}`).
    pub fn shard_messages_dropped(&self) -> u64 {
        self.shard_drops.load(Ordering::Relaxed)
    }

    /// Whether `session` still has a media connection (one whose ICE failed or that was
    /// closed is gone), on any shard.
    pub async fn session_alive(&self, session: &str) -> bool {
        for shard in &self.shards {
            let (reply, rx) = oneshot::channel();
            if shard.send(Cmd::Alive(session.to_string(), reply)).await.is_ok() && rx.await.unwrap_or(false) {
                return true;
            }
        }
        false
    }

    /// The stream's latest complete keyframe as RTP datagrams (none yet: its publisher is
    /// asked for one, and a later call may have it).
    pub async fn keyframe(&self, stream: StreamKey) -> Option<Vec<Vec<u8>>> {
        let (reply, rx) = oneshot::channel();
        let shard = &self.shards[self.rules.home(&stream)];
        shard.send(Cmd::Keyframe(stream, reply)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Relay counters, summed over the shards.
    pub async fn stats(&self) -> Option<SfuStats> {
        let mut sum = SfuStats::default();
        for shard in &self.shards {
            let (tx, rx) = oneshot::channel();
            shard.send(Cmd::Stats(tx)).await.ok()?;
            sum += rx.await.ok()?;
        }
        sum.shard_drops = self.shard_messages_dropped();
        Some(sum)
    }
}

/// A listening TCP socket (address reuse, so a restarted server gets its port back at once).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
