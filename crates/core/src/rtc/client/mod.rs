//! A device's media connection for one stream as a sans-IO core ([`ClientCore`]) and what
//! it reports. The task that owns its sockets is the `callbox` crate's
//! `rtc::client::ClientConn`.

use super::Transport;
use crate::proto::ice_servers::TurnTransport;

mod core;

pub use self::core::{CONNECT_LIMIT, ClientCore};

/// What a connection reports.
#[derive(Debug, Clone)]
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
