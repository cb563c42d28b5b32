//! The media vocabulary the engine's cores and its GStreamer shell share: how a device
//! captures, encodes and plays ([`MediaConfig`] and its sources and sinks), what can go
//! wrong ([`MediaError`]), the H.264 encoder chain ([`encoder`]), the video rate a stream is
//! held to ([`VideoRate`]) and the pipelines' rules that need no pipeline ([`rules`]). The
//! pipelines themselves are GStreamer's and live in the `callbox` crate.

use serde::Deserialize;

pub mod encoder;
pub mod jitter;
pub mod rules;
mod video_rate;

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

/// Silence, as sound levels are measured (RMS dBFS): quieter is counted as this.
pub const SILENCE_DB: f32 = -100.0;

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
    /// No camera: streams are published with audio only (lift intercoms, flat stations).
    None,
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
    /// No microphone: streams are published with video only.
    None,
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
    /// No display: played video is not decoded at all, only audio is (a display-less
    /// intercom saves the H.264 decode of every caller).
    None,
}

impl VideoSink {
    /// Every sink, as the config file names them.
    pub const ALL: [VideoSink; 5] =
        [VideoSink::Auto, VideoSink::Kms, VideoSink::Wayland, VideoSink::Fake, VideoSink::None];

    /// The name in a config file (`[display] sink`).
    pub fn name(self) -> &'static str {
        match self {
            VideoSink::Fake => "fake",
            VideoSink::Auto => "auto",
            VideoSink::Kms => "kms",
            VideoSink::Wayland => "wayland",
            VideoSink::None => "none",
        }
    }
}

impl std::str::FromStr for VideoSink {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        VideoSink::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?}: must be auto, kms, wayland, fake or none"))
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

/// A mirror of the camera's picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Flip {
    /// As captured.
    #[default]
    None,
    /// Left and right swapped.
    Horizontal,
    /// Top and bottom swapped.
    Vertical,
}

impl std::str::FromStr for Flip {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Flip::None),
            "horizontal" => Ok(Flip::Horizontal),
            "vertical" => Ok(Flip::Vertical),
            _ => Err(format!("{s:?}: must be none, horizontal or vertical")),
        }
    }
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
    /// Show the local camera: a tile of the grid, or (single layout) the display while no
    /// played stream is on it. Switched at run time with `Control::Preview`.
    pub preview: bool,
    /// The camera's picture turned clockwise before the encoder and the preview: 0, 90,
    /// 180 or 270 degrees (a camera mounted sideways). With 90 and 270, `width` x `height`
    /// is the picture after turning (the camera is asked for `height` x `width`).
    pub rotate: u16,
    /// The camera's picture mirrored before the encoder and the preview (after `rotate`).
    pub flip: Flip,
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
            rotate: 0,
            flip: Flip::None,
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
        if ![0, 90, 180, 270].contains(&self.rotate) {
            return Err(format!("media.rotate: {} is not 0, 90, 180 or 270", self.rotate));
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

pub use video_rate::VideoRate;

/// A documented set of [`MediaConfig`] values for a kind of call (the Express model's
/// scenarios); any key set after it still wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scenario {
    /// Audio only: no camera, voice Opus with in-band FEC (lift intercoms, flat stations).
    VoiceCall,
    /// 640x480 at 30 fps, 1000 kbit/s, following the link: the default.
    #[default]
    StandardVideoCall,
    /// 1280x720 at 30 fps, 2500 kbit/s (at least 300), following the link.
    HighQualityVideoCall,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 3] = [Scenario::VoiceCall, Scenario::StandardVideoCall, Scenario::HighQualityVideoCall];

    /// The name in a config file (`[media] scenario`).
    pub fn name(self) -> &'static str {
        match self {
            Scenario::VoiceCall => "voice_call",
            Scenario::StandardVideoCall => "standard_video_call",
            Scenario::HighQualityVideoCall => "high_quality_video_call",
        }
    }

    /// The scenario's configuration.
    pub fn config(self) -> MediaConfig {
        let d = MediaConfig::default();
        match self {
            Scenario::VoiceCall => MediaConfig { video: VideoSource::None, repair: true, dtx: false, ..d },
            Scenario::StandardVideoCall => d,
            Scenario::HighQualityVideoCall => {
                MediaConfig { width: 1280, height: 720, fps: 30, bitrate_kbps: 2500, min_bitrate_kbps: 300, ..d }
            }
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("{s:?}: must be voice_call, standard_video_call or high_quality_video_call"))
    }
}

impl MediaConfig {
    /// The configured maximum video: full size, full rate, `bitrate_kbps`.
    pub fn full_rate(&self) -> VideoRate {
        VideoRate { kbps: self.bitrate_kbps, width: self.width, height: self.height, fps: self.fps }
    }
}
