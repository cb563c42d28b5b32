//! GStreamer: capture, encoding, decoding and rendering. Owns everything media-related on
//! a device that is not WebRTC: the source (V4L2 camera, libcamera, test pattern; ALSA
//! microphone or test tone), the H.264 encoder choice ([`encoder`]), Opus, the play
//! pipelines and their sinks, and counters for quality events.
//!
//! Pipelines end (publish) or start (play) in RTP: the publish pipeline payloads H.264
//! and Opus into RTP packets handed to [`crate::rtc`]; the play pipeline takes RTP from
//! it through a jitter buffer. Pipelines are described as `gst-launch` strings (so each
//! board's variant can be unit-tested as text) and run with `gst::parse::launch`.

pub mod chime;
pub mod devices;
pub mod encoder;
mod grid;
pub mod pipeline;
mod player;
mod publisher;
mod running;

pub use grid::Grid;
pub use player::Player;
pub use player::PlayerSink;
pub use publisher::{Publisher, RtpOut};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::Deserialize;

/// Where a running pipeline's failure goes: called once, from the pipeline's bus task, with
/// the first error (or an unexpected end of stream); it must not block.
pub type ErrorSink = Box<dyn FnOnce(MediaError) + Send>;

/// Initialises GStreamer once. Errors if the GStreamer libraries cannot start.
pub fn init() -> Result<(), MediaError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gstreamer::init().map_err(|e| e.to_string())).clone().map_err(MediaError::Init)
}

/// True if GStreamer has an element factory called `name`.
pub fn has_element(name: &str) -> bool {
    init().is_ok() && gstreamer::ElementFactory::find(name).is_some()
}

/// What can go wrong in media.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MediaError {
    /// GStreamer did not initialise.
    #[error("GStreamer did not start: {0}")]
    Init(String),
    /// A pipeline could not be built (a missing element, bad caps).
    #[error("cannot build the pipeline: {0}")]
    Build(String),
    /// No H.264 encoder at all.
    #[error("no H.264 encoder available (install gstreamer1.0-plugins-ugly for x264enc)")]
    NoEncoder,
    /// A running pipeline failed.
    #[error("pipeline error from {element}: {message}")]
    Runtime {
        /// The element that posted the error.
        element: String,
        /// GStreamer's message.
        message: String,
    },
}

/// Where video comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum VideoSource {
    /// A moving test pattern with a clock.
    Test,
    /// A V4L2 camera.
    V4l2 {
        /// e.g. `/dev/video0`.
        device: String,
        /// Ask the camera for MJPEG (USB cameras reach higher rates that way).
        #[serde(default)]
        mjpeg: bool,
    },
    /// A libcamera camera (Raspberry Pi camera modules).
    Libcamera,
}

/// Where audio comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AudioSource {
    /// A quiet sine tone.
    Test,
    /// An ALSA capture device, e.g. `hw:1,0` or `default`.
    Alsa {
        /// ALSA device name.
        device: String,
    },
}

/// Where played video goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VideoSink {
    /// Decode and count frames, show nothing (tests, headless devices).
    #[default]
    Fake,
    /// GStreamer's choice.
    Auto,
    /// DRM/KMS straight to the display (kiosks without a desktop).
    Kms,
    /// A Wayland compositor.
    Wayland,
}

impl VideoSink {
    /// Every sink, as the config file names them.
    pub const ALL: [VideoSink; 4] = [VideoSink::Auto, VideoSink::Kms, VideoSink::Wayland, VideoSink::Fake];

    /// The name in a config file (`[display] sink`).
    pub fn name(self) -> &'static str {
        match self {
            VideoSink::Fake => "fake",
            VideoSink::Auto => "auto",
            VideoSink::Kms => "kms",
            VideoSink::Wayland => "wayland",
        }
    }
}

impl std::str::FromStr for VideoSink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VideoSink::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?}: must be auto, kms, wayland or fake"))
    }
}

/// Where played audio goes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AudioSink {
    /// Decode and count, play nothing.
    #[default]
    Fake,
    /// GStreamer's choice.
    Auto,
    /// An ALSA playback device.
    Alsa {
        /// ALSA device name.
        device: String,
    },
}

/// How played video is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Each played stream in its own sink.
    #[default]
    Single,
    /// Every played stream in one compositor grid on one sink, plus the local preview
    /// (kiosks, multi-party screens).
    Grid,
}

impl Layout {
    /// The name in a config file (`[display] layout`).
    pub fn name(self) -> &'static str {
        match self {
            Layout::Single => "single",
            Layout::Grid => "grid",
        }
    }
}

impl std::str::FromStr for Layout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [Layout::Single, Layout::Grid]
            .into_iter()
            .find(|l| l.name() == s)
            .ok_or_else(|| format!("{s:?}: must be single or grid"))
    }
}

/// How a device captures, encodes and plays.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Video source.
    pub video: VideoSource,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
    /// Video bitrate, kbit/s: the most the encoder is given (with `adaptive`, it follows
    /// the link's estimate below this).
    pub bitrate_kbps: u32,
    /// Follow the link: the encoder's bitrate tracks the bandwidth estimate (the device's
    /// uplink and its players' downlinks), and the picture steps down in size, then rate,
    /// when the estimate is far below `bitrate_kbps` (see `engine::media::adapt`).
    pub adaptive: bool,
    /// The least video bitrate adaptation goes down to, kbit/s.
    pub min_bitrate_kbps: u32,
    /// Force an encoder by element name (e.g. `x264enc`); empty: choose from the chain.
    pub encoder: String,
    /// Audio source.
    pub audio: AudioSource,
    /// Echo cancellation (`webrtcdsp` + `webrtcechoprobe`).
    pub echo_cancel: bool,
    /// Played video sink.
    pub video_sink: VideoSink,
    /// One sink per played stream, or one grid for all of them.
    pub layout: Layout,
    /// In the grid, show the local camera too.
    pub preview: bool,
    /// Played audio sink.
    pub audio_sink: AudioSink,
    /// Seconds without an encoded buffer before the publish pipeline counts as stalled.
    pub stall_secs: u64,
    /// Milliseconds without anything from the server on a media connection (no RTP and no
    /// sender report for a player, no receiver report for a publisher) before it is
    /// renegotiated.
    pub silence_ms: u64,
    /// `videotestsrc` pattern for the test source (`ball`; `snow` is incompressible, for
    /// bitrate benchmarks).
    pub test_pattern: String,
    /// Loss repair: video NACK with retransmissions (RTX) and FlexFEC, Opus in-band FEC
    /// sized to the loss the server reports, and a play jitter buffer that waits for a
    /// retransmission. Off only to compare (`callbox peer --no-repair`, the bench).
    pub repair: bool,
    /// Opus discontinuous transmission: during silence about one packet in 20 is sent
    /// (saves ~25 kbit/s on a metered uplink of a door that mostly listens; the far side
    /// hears comfort noise).
    pub dtx: bool,
    /// The device's own TURN servers (`[[media.ice_servers]]`), used with those the server
    /// hands out at login: where neither UDP nor ICE-TCP reaches the server, media goes
    /// through a relay (TURN over UDP, TCP, or TLS on 443).
    pub ice_servers: Vec<crate::proto::ice_servers::IceServer>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            video: VideoSource::Test,
            width: 640,
            height: 480,
            fps: 30,
            bitrate_kbps: 1000,
            adaptive: true,
            min_bitrate_kbps: 150,
            encoder: String::new(),
            audio: AudioSource::Test,
            echo_cancel: false,
            video_sink: VideoSink::Fake,
            layout: Layout::Single,
            preview: true,
            audio_sink: AudioSink::Fake,
            stall_secs: 5,
            silence_ms: 3000,
            test_pattern: "ball".into(),
            repair: true,
            dtx: false,
            ice_servers: Vec::new(),
        }
    }
}

impl MediaConfig {
    /// Small and cheap: 320x240 at 15 fps, 300 kbit/s (tests, the demo).
    pub fn small() -> Self {
        MediaConfig { width: 320, height: 240, fps: 15, bitrate_kbps: 300, ..Default::default() }
    }

    /// Checks values; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        for s in &self.ice_servers {
            s.validate().map_err(|e| format!("media.ice_servers: {e}"))?;
        }
        if !(16..=4096).contains(&self.width) || !(16..=4096).contains(&self.height) {
            return Err("media.width/height: must be between 16 and 4096".into());
        }
        if !(1..=120).contains(&self.fps) {
            return Err("media.fps: must be between 1 and 120".into());
        }
        if !(50..=50_000).contains(&self.bitrate_kbps) {
            return Err("media.bitrate_kbps: must be between 50 and 50000".into());
        }
        if !(50..=self.bitrate_kbps).contains(&self.min_bitrate_kbps) {
            return Err(format!("media.min_bitrate_kbps: must be between 50 and bitrate_kbps ({})", self.bitrate_kbps));
        }
        if !self.test_pattern.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(format!("media.test_pattern: {:?} is not a pattern name", self.test_pattern));
        }
        if !self.encoder.is_empty() && encoder::Encoder::from_element(&self.encoder).is_none() {
            return Err(format!(
                "media.encoder: {:?} is not one of v4l2h264enc, nvv4l2h264enc, vaapih264enc, x264enc, openh264enc",
                self.encoder
            ));
        }
        Ok(())
    }
}

pub use callbox_core::engine::video_rate::VideoRate;

impl MediaConfig {
    /// The configured maximum video: full size, full rate, `bitrate_kbps`.
    pub fn full_rate(&self) -> VideoRate {
        VideoRate { kbps: self.bitrate_kbps, width: self.width, height: self.height, fps: self.fps }
    }
}

/// Counters a pipeline updates from its streaming threads and the engine reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Raw video frames out of the source (publish) or decoded (play).
    pub video_frames: AtomicU64,
    /// Encoded video frames (publish) or frames that reached the sink (play).
    pub video_frames_out: AtomicU64,
    /// Audio buffers encoded (publish) or decoded (play).
    pub audio_buffers: AtomicU64,
    /// When the first frame was seen at each counter.
    first: Mutex<[Option<Instant>; 3]>,
    /// When the last video frame was seen (stall detection).
    last_video: Mutex<Option<Instant>>,
    /// Told when a counter's first buffer passes.
    on_first: FirstHook,
}

/// What [`Counters::on_first`] is given.
pub type OnFirst = Box<dyn Fn(usize) + Send + Sync>;

/// The callback of [`Counters::on_first`], if set.
#[derive(Default)]
struct FirstHook(Mutex<Option<OnFirst>>);

impl std::fmt::Debug for FirstHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FirstHook")
    }
}

impl Counters {
    /// Calls `hook(which)` from the streaming thread when counter `which` (0 video in,
    /// 1 video out, 2 audio) sees its first buffer, so a first frame is reported when it
    /// happens rather than at the next poll. It must not block.
    pub fn on_first(&self, hook: OnFirst) {
        if let Ok(mut h) = self.on_first.0.lock() {
            *h = Some(hook);
        }
    }

    fn bump(&self, which: usize) {
        let c = match which {
            0 => &self.video_frames,
            1 => &self.video_frames_out,
            _ => &self.audio_buffers,
        };
        if c.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Ok(mut f) = self.first.lock() {
                f[which].get_or_insert(Instant::now());
            }
            if let Ok(h) = self.on_first.0.lock()
                && let Some(h) = h.as_ref()
            {
                h(which);
            }
        }
        if which == 1
            && let Ok(mut l) = self.last_video.lock()
        {
            *l = Some(Instant::now());
        }
    }

    /// When the first frame passed counter `which` (0 video in, 1 video out, 2 audio).
    pub fn first(&self, which: usize) -> Option<Instant> {
        self.first.lock().ok().and_then(|f| f[which])
    }

    /// When the last video frame passed the out counter.
    pub fn last_video(&self) -> Option<Instant> {
        self.last_video.lock().ok().and_then(|l| *l)
    }

    /// (video in, video out, audio) now.
    pub fn snapshot(&self) -> [u64; 3] {
        [
            self.video_frames.load(Ordering::Relaxed),
            self.video_frames_out.load(Ordering::Relaxed),
            self.audio_buffers.load(Ordering::Relaxed),
        ]
    }
}
