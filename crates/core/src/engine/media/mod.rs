//! The engine's media: for every stream the session publishes, a publish pipeline and a
//! publish connection; for every stream it plays, a play connection and a play pipeline.
//! Driven by the session's state (Publishing / Playing start media, NoPublish / NoPlay
//! stop it), kept alive without the application acting:
//!
//! - a media connection whose path is cut (no answer to consent checks) is kept: it comes
//!   back by itself when the path does, which is the fastest recovery from a Wi-Fi roam or
//!   an LTE handover. While the room connection is demonstrably working
//!   ([`Session::signalling_fresh`](crate::engine::session::Session::signalling_fresh)) a link that stays down, goes silent (no RTP or report
//!   from the server for `silence_ms`) or failed is replaced by a new one, offered over
//!   signalling, with back-off. An offer lost with the room connection is sent again once
//!   in the room; an offer left unanswered times out and is renegotiated. After a re-login
//!   (the server forgot us) every connection is renegotiated at once;
//! - while a stream's media does not flow, the application sees PublishRequesting /
//!   PlayRequesting with 1003038 / 1004029, and Publishing / Playing again when it does;
//! - a link that comes back tells the session (`network_back`), which replaces a silent
//!   room connection at once;
//! - a publish pipeline that fails (element error, encoder stall) is rebuilt with back-off;
//!   after three failures of a hardware encoder the next encoder of the chain is used;
//! - quality every 3 s, first-frame and stall/resume events.
//!
//! The shape is the signalling half's: [`MediaSupervisor`] is the sans-IO core (stream
//! states, joins, answers, notes and time in; [`Command`]s, offers, events and the next
//! deadline out) and the `MediaRunner` (in the `callbox` crate) owns GStreamer and the connections and carries out the
//! commands. Both run inside the driver task: connections and pipelines put their notes on
//! the runner's one bounded channel, and the driver feeds them to the supervisor.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::engine::event::EngineEvent;
use crate::media::encoder::Choice;
use crate::media::{MediaConfig, MediaError};
use crate::proto::MediaRole;
use crate::rtc::client::ClientEvent;

mod adapt;
mod controls;
mod link;
mod stall;
mod supervisor;
#[cfg(test)]
mod tests;

pub use adapt::Adapter;
pub use controls::{Control, MAX_VOLUME, MIN_SOUND_LEVEL_INTERVAL, PlaySettings, sound_level};
pub use supervisor::{MediaSupervisor, Present};

/// Media settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineMedia {
    /// Capture, encoding and playback.
    pub config: MediaConfig,
    /// Local IP for media sockets; `None`: the address that routes to the server.
    pub bind: Option<IpAddr>,
}

/// Where a media connection binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// This local IP (configured, or the signalling connection's local address).
    Ip(IpAddr),
    /// The local IP that routes to this server address (the kernel is asked).
    Towards(SocketAddr),
    /// No signalling connection has said which local address reaches the server yet.
    Unknown,
}

impl Bind {
    /// The socket address to bind (port 0: any); `towards` asks the kernel for the local
    /// address that routes to the server. An error names why there is none: media never
    /// binds to loopback by default, where the server could not reach it.
    pub fn resolve(self, towards: impl Fn(SocketAddr) -> Option<IpAddr>) -> Result<SocketAddr, String> {
        let ip = match self {
            Bind::Ip(ip) => ip,
            Bind::Towards(server) => towards(server).ok_or_else(|| {
                format!("no local address routes to the server's {server}: the network is down or has no route there")
            })?,
            Bind::Unknown => {
                return Err(
                    "no signalling connection yet: the local address that reaches the server is not known".into()
                );
            }
        };
        Ok(SocketAddr::new(ip, 0))
    }
}

/// What the supervisor asks the runner to do.
#[derive(Debug)]
pub enum Command {
    /// Open a media connection for the stream, replacing its previous one (a player gets a
    /// new play pipeline too). Its events come back tagged with `epoch`.
    OpenLink {
        /// Publish or play.
        role: MediaRole,
        /// The stream.
        stream: String,
        /// Tags what comes back for this command.
        epoch: u64,
        /// Where the connection's socket binds.
        bind: Bind,
        /// How long without anything from the server before the link counts as silent.
        silence: Duration,
        /// TURN/STUN servers (the server's and the device's own).
        ice: Vec<crate::proto::ice_servers::IceServer>,
        /// Publish: the range its bandwidth estimate moves in.
        send_rate: Option<crate::rtc::client::SendRate>,
        /// Play: build a video decoder (false: the stream has no video, or the device no
        /// display; its video RTP is dropped undecoded).
        decode_video: bool,
        /// Play: what the pipeline starts set to.
        settings: PlaySettings,
    },
    /// Set a play pipeline's controls (video decoded or dropped, audio gain).
    PlayControls {
        /// The stream.
        stream: String,
        /// The settings.
        settings: PlaySettings,
    },
    /// Camera on or off on every publish pipeline, and on those built later.
    Camera(bool),
    /// Close the stream's connection (a player's pipeline stays until the next `OpenLink`).
    CloseLink {
        /// Publish or play.
        role: MediaRole,
        /// The stream.
        stream: String,
    },
    /// Give the connection the server's answer.
    Answer {
        /// Publish or play.
        role: MediaRole,
        /// The stream.
        stream: String,
        /// The SDP.
        sdp: String,
    },
    /// Ask the server for a keyframe of a played stream (PLI).
    RequestKeyframe {
        /// The stream.
        stream: String,
    },
    /// Make the publish pipeline's encoder send a keyframe now.
    ForceKeyframe {
        /// The stream.
        stream: String,
    },
    /// Start a publish pipeline with this encoder, its video held to `rate`, replacing
    /// any; its failure comes back tagged with `epoch`.
    StartPipeline {
        /// The stream.
        stream: String,
        /// Tags what comes back for this command.
        epoch: u64,
        /// The encoder, and whether it is a fallback.
        choice: Choice,
        /// The video rate.
        rate: crate::media::VideoRate,
    },
    /// Hold the running publish pipeline's video to this rate (adaptation).
    SetRate {
        /// The stream.
        stream: String,
        /// The video rate.
        rate: crate::media::VideoRate,
    },
    /// Size the publish pipeline's Opus in-band FEC for this share of lost packets, percent.
    SetAudioLoss {
        /// The stream.
        stream: String,
        /// The share of lost packets, percent.
        percent: u32,
    },
    /// Microphone mute on every publish pipeline, and on those built later.
    Mute(bool),
    /// Stop the publish pipeline (it failed; a new one starts after the back-off).
    StopPipeline {
        /// The stream.
        stream: String,
    },
    /// The stream is no longer published / played: drop its connection and pipeline.
    Remove {
        /// Publish or play.
        role: MediaRole,
        /// The stream.
        stream: String,
    },
    /// Show these channels in the grid (grid layout); empty: no grid.
    Grid(Vec<String>),
    /// Make the running publish pipeline fail as a hardware encoder would (a test hook:
    /// its failure comes back as any pipeline failure does, and recovery follows).
    #[cfg(any(test, feature = "test-hooks"))]
    InjectFault {
        /// The stream.
        stream: String,
    },
}

/// What the runner tells the supervisor, tagged with the epoch of the command it answers.
#[derive(Debug)]
pub enum Note {
    /// A new media connection's offer, to send to the server.
    Offer(MediaRole, String, u64, String),
    /// A media connection's event.
    Link(MediaRole, String, u64, ClientEvent),
    /// A pipeline failed (element error, or it could not start).
    Pipeline(MediaRole, String, u64, MediaError),
    /// A connection (for a player, with its pipeline) could not be opened.
    OpenFailed(MediaRole, String, u64, String),
    /// The play pipeline of this link rendered its first video frame.
    Rendered(String, u64),
}

/// The supervisor's outputs for the driver (its commands go to the runner).
#[derive(Debug)]
pub enum MediaOutput {
    /// An offer to send over signalling; `tag` comes back with the answer.
    Offer {
        /// The stream.
        stream: String,
        /// Publish or play.
        role: MediaRole,
        /// The SDP.
        sdp: String,
        /// Comes back with the answer.
        tag: u64,
    },
    /// For the application.
    Event(EngineEvent),
    /// A media link came back: the network works again.
    NetworkBack,
}

/// A publish pipeline's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishCounts {
    /// Video frames captured (into the encoder).
    pub captured: u64,
    /// Video frames encoded.
    pub encoded: u64,
    /// Audio buffers encoded.
    pub audio: u64,
}

/// A play pipeline's counters since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlayCounts {
    /// Video frames decoded.
    pub decoded: u64,
    /// Video frames rendered.
    pub rendered: u64,
    /// Audio buffers decoded.
    pub audio: u64,
    /// The decoded picture's width (0: none decoded).
    pub width: u32,
    /// The decoded picture's height.
    pub height: u32,
    /// The video jitter buffer's wait now, ms (0: not known; the ceiling is reported).
    pub jitter_ms: u32,
}

/// The running pipelines' counters, read by the supervisor on its ticks.
pub trait Meters {
    /// The publish pipeline's counts, if one runs.
    fn publisher(&self, stream: &str) -> Option<PublishCounts>;
    /// The publish pipeline's encoder bitrate as it runs, kbit/s.
    fn encoder_kbps(&self, stream: &str) -> Option<u32>;
    /// The play pipeline's counts and when it last rendered video.
    fn player(&self, stream: &str) -> Option<(PlayCounts, Option<Instant>)>;
    /// The last sound levels of the stream's pipeline, RMS dBFS: [the stream's (captured,
    /// or as received), what is played (after the volume)].
    fn sound_levels(&self, _role: MediaRole, _stream: &str) -> Option<[Option<f32>; 2]> {
        None
    }
}
