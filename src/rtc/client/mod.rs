//! A device's connection to the SFU for one stream: a publish connection sends the
//! stream's video and audio, a play connection receives them. Each has its own UDP socket
//! (and, where UDP does not pass, ICE-TCP connections to the server's TCP port) and a small
//! task that owns them and the clock around the sans-IO [`ClientCore`]. The task
//! reports through a bounded event channel; RTP to send arrives on its own bounded channel
//! (dropped, and counted, when full), RTP received goes straight to an [`RtpSink`].

mod core;
mod relay_io;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use self::core::ClientCore;
pub use self::relay_io::Relays;
use self::relay_io::{RelayIn, RelayIo};
use super::Kind;
use super::ice_servers::TurnTransport;
use super::peer::{self, RtcError, Transport};
use super::tcp::{Deadlines, TcpIn, TcpLinks};
use super::turn::TurnServer;
pub use crate::proto::MediaRole;

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

/// What a connection reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// ICE and DTLS are up: media flows. Also sent when a link that was disconnected or
    /// silent works again.
    Connected,
    /// No answer to consent checks for 2 s: the path is cut. The connection is kept and
    /// comes back by itself ([`ClientEvent::Connected`]) when the path does.
    Disconnected,
    /// ICE says connected, but nothing came from the server for the silence limit: no RTP
    /// and no sender report (play), no receiver report (publish).
    Silent,
    /// The connection is over (consent lapsed, DTLS failed, unusable answer): renegotiate.
    Failed,
    /// The server asks for a keyframe (PLI or FIR).
    KeyframeRequested,
    /// The first complete video frame arrived (play).
    FirstVideoFrame,
    /// Counters, every second.
    Stats(Box<LinkStats>),
}

/// Cumulative counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// RTP packets sent (publish) or received (play), per kind: video, audio.
    pub packets: [u64; 2],
    /// RTP payload bytes sent or received, per kind.
    pub bytes: [u64; 2],
    /// Video frames sent or received (RTP packets with the marker bit).
    pub frames: u64,
    /// Packets the publisher's pipeline produced that the link could not take.
    pub dropped: u64,
    /// Round-trip time to the server, ms (from ICE checks).
    pub rtt_ms: Option<f64>,
    /// Packets lost, as counted by the receiver (play) or reported back (publish).
    pub lost: u64,
    /// How the server's packets last arrived: UDP, ICE-TCP, or through a TURN relay.
    pub path: Path,
    /// Keyframe requests received (publish).
    pub keyframe_requests: u64,
    /// Publish: the send-side estimate of the path to the server (GCC over TWCC), kbit/s,
    /// audio and video together; none before the server's first feedback.
    pub estimate_kbps: Option<f64>,
    /// Publish: the lowest estimate among the stream's players, as the server's last REMB
    /// said, kbit/s; none while nobody plays it or no player's estimate is known.
    pub cap_kbps: Option<f64>,
    /// Loss repair so far (see [`Repaired`]).
    pub repaired: Repaired,
    /// Publish: the fraction of audio packets the server reports lost (its receiver reports,
    /// smoothed), 0..1; what the Opus encoder's in-band FEC is sized for.
    pub audio_loss: Option<f64>,
}

/// What loss repair did on one connection, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Repaired {
    /// Publish: video packets sent again on request (NACK, as RTX).
    pub rtx_sent: u64,
    /// Play: retransmitted video packets that arrived.
    pub rtx_received: u64,
    /// Play: FlexFEC repair packets that arrived.
    pub fec_received: u64,
    /// Play: video packets FlexFEC rebuilt.
    pub fec_rebuilt: u64,
    /// Play: video packets lost for good (after retransmission and FEC).
    pub video_lost: u64,
    /// Play: audio frames, lost and rebuilt (see [`crate::rtc::repair::AudioRepair`]).
    pub audio: crate::rtc::repair::AudioRepair,
    /// Play: video frames, complete and intact (see [`crate::rtc::repair::VideoFrames`]).
    pub frames: crate::rtc::repair::VideoFrames,
}

/// The range a publish connection's bandwidth estimate moves in, kbit/s (audio and video
/// together), and where it starts: a new stream at the maximum (a call starts at full
/// quality and comes down within a second or two where the path is thinner), a replaced
/// connection at the last estimate (a link renegotiated on a thin path must not start by
/// flooding it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendRate {
    /// The estimate's floor.
    pub min_kbps: u32,
    /// The estimate's ceiling.
    pub max_kbps: u32,
    /// The estimate's starting point.
    pub start_kbps: u32,
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
}

impl Default for LinkOpts {
    fn default() -> Self {
        LinkOpts { silence: Duration::ZERO, relays: Relays::default(), send_rate: None, repair: true }
    }
}

/// The way a connection's media travels, as status and quality events name it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Path {
    /// Straight to the server over UDP.
    #[default]
    Udp,
    /// Straight to the server over ICE-TCP.
    Tcp,
    /// Through a TURN relay reached over UDP, TCP or TLS.
    Turn(TurnTransport),
}

impl Path {
    /// `udp`, `tcp`, `turn-udp`, `turn-tcp` or `turn-tls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Path::Udp => "udp",
            Path::Tcp => "tcp",
            Path::Turn(t) => t.path_name(),
        }
    }
}

impl From<Transport> for Path {
    fn from(t: Transport) -> Path {
        match t {
            Transport::Udp => Path::Udp,
            Transport::Tcp => Path::Tcp,
        }
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
        let socket = peer::bind_udp(bind)?;
        let local = socket.local_addr()?;
        let silence = if opts.silence.is_zero() { Duration::from_secs(3) } else { opts.silence };
        let relays = opts.relays;
        let (core, offer) = ClientCore::new(Instant::now(), role, local, silence, opts.send_rate, opts.repair)?;
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (rtp_tx, rtp_rx) = mpsc::channel(1024);
        let with_relays = relays.servers.iter().any(|s| s.turn_urls().next().is_some());
        let io = Io { socket, tcp: TcpLinks::new(TCP_LINKS, TCP_LINKS, TCP_DEADLINES), relays: RelayIo::start(relays) };
        let task = tokio::spawn(run(io, core, sink, Box::new(events), cmd_rx, rtp_rx));
        Ok((ClientConn { cmds: cmd_tx, rtp: rtp_tx, task, relays: with_relays, local }, offer))
    }

    /// Gives the connection the server's answer.
    pub fn answer(&self, sdp: String) {
        let _ = self.cmds.try_send(ClientCmd::Answer(sdp));
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
                Transport::Udp => peer::send(&io.socket, &t),
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
            peer::send(&io.socket, &t);
        }
    }
    while let Some((i, msg)) = core.poll_relay_transmit() {
        if let Some(server) = servers.get(i) {
            io.relays.send(i, server, msg);
        }
    }
}
