//! A device's connection to the SFU for one stream: a publish connection sends the
//! stream's video and audio, a play connection receives them. Each has its own UDP socket
//! (and, where UDP does not pass, ICE-TCP connections to the server's TCP port) and a small
//! task that owns them and the clock around the sans-IO [`ClientCore`]. The task
//! reports through a bounded event channel; RTP to send arrives on its own bounded channel
//! (dropped, and counted, when full), RTP received goes straight to an [`RtpSink`].

mod relay_io;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use self::relay_io::Relays;
use self::relay_io::{RelayIn, RelayIo};
use super::Kind;
use super::tcp::{Deadlines, TcpIn, TcpLinks};
use super::turn::TurnServer;
use super::udp;
use super::{RtcError, Transport};
pub use crate::proto::MediaRole;
pub use callbox_core::rtc::client::{ClientCore, ClientEvent, LinkStats, Path, Repaired, SendRate};

/// ICE-TCP connections of one media connection at most (one per server candidate).
const TCP_LINKS: usize = 4;
/// The server answers a check at once; ICE consent keeps the connection busy afterwards.
const TCP_DEADLINES: Deadlines = Deadlines { first: Duration::from_secs(10), idle: Duration::from_secs(30) };

/// Where received RTP goes (the play pipeline's sources). Called from the connection task:
/// must not block.
pub trait RtpSink: Send + 'static {
    /// One RTP packet (header and payload, decrypted) of `kind`.
    fn rtp(&mut self, kind: Kind, packet: &[u8]);
}

/// How a connection is set up, besides its role and socket.
#[derive(Clone)]
pub struct LinkOpts {
    /// Silence, once media flowed, before [`ClientEvent::Silent`] (zero: 3 s).
    pub silence: Duration,
    /// TURN servers to allocate on.
    pub relays: Relays,
    /// Publish: estimate the path and report it in [`LinkStats::estimate_kbps`].
    pub send_rate: Option<SendRate>,
    /// Loss repair: NACK/RTX and FlexFEC for video offered (`[media] repair`, on unless
    /// turned off to compare).
    pub repair: bool,
    /// Offer video (false: audio only: a station without a camera, a player that decodes
    /// no video, which then does not receive it either).
    pub video: bool,
}

impl Default for LinkOpts {
    fn default() -> Self {
        LinkOpts { silence: Duration::ZERO, relays: Relays::default(), send_rate: None, repair: true, video: true }
    }
}

/// Commands to a connection.
#[derive(Debug)]
pub enum ClientCmd {
    /// The server's answer to our offer.
    Answer(String),
    /// Ask for a keyframe of the played stream (see [`ClientCore::request_keyframe`]).
    RequestKeyframe,
}

/// A running connection. Dropping it closes the connection.
pub struct ClientConn {
    cmds: mpsc::Sender<ClientCmd>,
    rtp: mpsc::Sender<(Kind, Bytes)>,
    task: tokio::task::JoinHandle<()>,
    /// TURN servers were given: the task must end by itself to release its allocations.
    relays: bool,
    /// The socket's local address.
    pub local: SocketAddr,
}

impl ClientConn {
    /// Starts a connection bound to `bind` (an IP with port 0, or a fixed port), and gives
    /// the offer to send to the server (`media_offer`) at once: it goes out in the same
    /// turn of the caller's loop. Events go to `events`, called from the connection's task
    /// (it must not block: a bounded channel's `try_send`, tagged with whatever the caller
    /// needs).
    /// TURN allocations are made on `relays` meanwhile: their relay candidates join the
    /// checks when ready (the server needs no word of them: it answers checks from any
    /// address that has the connection's credentials).
    pub fn start(
        role: MediaRole,
        bind: SocketAddr,
        opts: LinkOpts,
        sink: Option<Box<dyn RtpSink>>,
        events: impl FnMut(ClientEvent) + Send + 'static,
    ) -> Result<(ClientConn, String), RtcError> {
        let socket = udp::bind_udp(bind)?;
        let local = socket.local_addr()?;
        let silence = if opts.silence.is_zero() { Duration::from_secs(3) } else { opts.silence };
        let relays = opts.relays;
        let (core, offer) =
            ClientCore::new(Instant::now(), role, local, silence, opts.send_rate, opts.repair, opts.video)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (rtp_tx, rtp_rx) = mpsc::channel(1024);
        let with_relays = relays.servers.iter().any(|s| s.turn_urls().next().is_some());
        let io = Io { socket, tcp: TcpLinks::new(TCP_LINKS, TCP_LINKS, TCP_DEADLINES), relays: RelayIo::start(relays) };
        let task = tokio::spawn(run(io, core, sink, Box::new(events), cmd_rx, rtp_rx));
        Ok((ClientConn { cmds: cmd_tx, rtp: rtp_tx, task, relays: with_relays, local }, offer))
    }

    /// Gives the connection the server's answer.
    ///
    /// Returns false when the answer was not taken: the task has ended (and reported
    /// [`ClientEvent::Failed`], which renegotiates), or its command queue is full, which the
    /// answer, a new connection's first command, does not meet in practice. The caller logs it.
    #[must_use]
    pub fn answer(&self, sdp: String) -> bool {
        self.cmds.try_send(ClientCmd::Answer(sdp)).is_ok()
    }

    /// Asks the server for a keyframe of the played stream: a player whose path came back
    /// decodes again at once instead of waiting for the publisher's next periodic keyframe.
    pub fn request_keyframe(&self) {
        let _ = self.cmds.try_send(ClientCmd::RequestKeyframe);
    }

    /// A sender for RTP to publish (from the encoder pipeline's thread: `try_send`).
    pub fn rtp_sender(&self) -> mpsc::Sender<(Kind, Bytes)> {
        self.rtp.clone()
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        // The task sees its command channel close and ends by itself, releasing its TURN
        // allocations on the way out; one that has none is stopped at once.
        if !self.relays {
            self.task.abort();
        }
    }
}

/// A connection's sockets: UDP, ICE-TCP connections to the server, TURN streams.
struct Io {
    socket: tokio::net::UdpSocket,
    tcp: TcpLinks,
    relays: RelayIo,
}

/// A connection's task: the sockets, the clock and the channels around [`ClientCore`].
async fn run(
    mut io: Io,
    mut core: ClientCore,
    mut sink: Option<Box<dyn RtpSink>>,
    mut events: Box<dyn FnMut(ClientEvent) + Send>,
    mut cmds: mpsc::Receiver<ClientCmd>,
    mut rtp: mpsc::Receiver<(Kind, Bytes)>,
) {
    let mut buf = vec![0u8; 2048];
    let local_ip = io.socket.local_addr().map(|a| a.ip()).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut servers: Vec<TurnServer> = Vec::new();
    loop {
        while let Some(t) = core.poll_transmit() {
            match t.transport {
                Transport::Udp => udp::send(&io.socket, &t),
                Transport::Tcp => {
                    // The agent checks one of the server's passive candidates: connect to
                    // it first (the check waits in the connection's queue).
                    if !io.tcp.send(t.to, &t.data) {
                        io.tcp.connect(local_ip, t.to);
                        io.tcp.send(t.to, &t.data);
                    }
                }
            }
        }
        while let Some((i, msg)) = core.poll_relay_transmit() {
            if let Some(server) = servers.get(i) {
                io.relays.send(i, server, msg);
            }
        }
        while let Some((kind, packet)) = core.poll_rtp() {
            if let Some(sink) = sink.as_mut() {
                sink.rtp(kind, &packet);
            }
        }
        while let Some(e) = core.poll_event() {
            events(e);
        }
        if core.is_failed() {
            return release(&mut core, &mut io, &servers);
        }
        let deadline = core.poll_timeout();
        tokio::select! {
            r = io.socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => core.handle_datagram(Instant::now(), from, Transport::Udp, &buf[..n]),
                Err(e) => tracing::debug!(error = %e, "media socket error"),
            },
            got = io.tcp.recv() => {
                if let TcpIn::Frame(from, frame) = got {
                    core.handle_datagram(Instant::now(), from, Transport::Tcp, &frame);
                }
            }
            got = io.relays.recv() => match got {
                RelayIn::Resolved(server) => match core.add_relay(Instant::now(), server.clone()) {
                    Ok(i) => {
                        debug_assert_eq!(i, servers.len());
                        servers.push(server);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot use a TURN server"),
                },
                RelayIn::Message(i, msg) => core.handle_relay_input(Instant::now(), i, &msg),
                RelayIn::Closed(i) => core.relay_closed(i),
            },
            cmd = cmds.recv() => match cmd {
                Some(ClientCmd::Answer(sdp)) => core.handle_answer(Instant::now(), sdp),
                Some(ClientCmd::RequestKeyframe) => core.request_keyframe(Instant::now()),
                None => return release(&mut core, &mut io, &servers),
            },
            Some((kind, raw)) = rtp.recv() => {
                let now = Instant::now();
                core.send_rtp(now, kind, &raw);
                // Take what else is queued in one go, then send once.
                while let Ok((kind, raw)) = rtp.try_recv() {
                    core.send_rtp(now, kind, &raw);
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
        }
    }
}

/// The connection is over: its TURN allocations are released (the stream tasks write what is
/// queued before they see their channel close).
fn release(core: &mut ClientCore, io: &mut Io, servers: &[TurnServer]) {
    core.release_relays(Instant::now());
    while let Some(t) = core.poll_transmit() {
        if t.transport == Transport::Udp {
            udp::send(&io.socket, &t);
        }
    }
    while let Some((i, msg)) = core.poll_relay_transmit() {
        if let Some(server) = servers.get(i) {
            io.relays.send(i, server, msg);
        }
    }
}
