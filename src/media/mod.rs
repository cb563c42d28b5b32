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
mod grid;
pub mod pipeline;
mod player;
mod publisher;
mod running;
pub mod snapshot;

pub use grid::Grid;
pub use player::Player;
pub use player::PlayerSink;
pub use publisher::{Publisher, RtpOut};

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

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

pub use callbox_core::media::{
    AudioSink, AudioSource, Flip, Layout, MediaConfig, MediaError, SILENCE_DB, Scenario, VideoRate, VideoSink,
    VideoSource, encoder,
};

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
    /// The last sound levels measured, RMS dBFS as `f32` bits: 0 the stream's (captured,
    /// or as received), 1 what is played (after the speaker's volume). 0 bits: none yet.
    levels: [AtomicU32; 2],
    /// The decoded picture's size, `width << 32 | height` (play; 0: none yet).
    size: AtomicU64,
    /// The video jitter buffer's wait now, ms (play; 0: not set yet).
    jitter_ms: AtomicU32,
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

    /// Records a sound level (`which`: 0 the stream's, 1 what is played), RMS dBFS.
    pub fn set_level(&self, which: usize, db: f32) {
        let db = if db.is_finite() { db.max(SILENCE_DB) } else { SILENCE_DB };
        // Never 0 bits (0.0 dB is stored as the next float down), so 0 means "none yet".
        let bits = if db == 0.0 { (-f32::EPSILON).to_bits() } else { db.to_bits() };
        self.levels[which.min(1)].store(bits, Ordering::Relaxed);
    }

    /// The last sound level measured (`which`: 0 the stream's, 1 what is played), RMS
    /// dBFS; `None` before the first measure.
    pub fn level(&self, which: usize) -> Option<f32> {
        let bits = self.levels[which.min(1)].load(Ordering::Relaxed);
        (bits != 0).then(|| f32::from_bits(bits))
    }

    /// Records the decoded picture's size.
    pub fn set_size(&self, width: u32, height: u32) {
        self.size.store(u64::from(width) << 32 | u64::from(height), Ordering::Relaxed);
    }

    /// The decoded picture's size, if one was decoded.
    pub fn size(&self) -> Option<(u32, u32)> {
        let s = self.size.load(Ordering::Relaxed);
        (s != 0).then_some(((s >> 32) as u32, s as u32))
    }

    /// Records the video jitter buffer's wait.
    pub fn set_jitter(&self, wait: std::time::Duration) {
        self.jitter_ms.store(wait.as_millis() as u32, Ordering::Relaxed);
    }

    /// The video jitter buffer's wait, ms (0: not set yet).
    pub fn jitter_ms(&self) -> u32 {
        self.jitter_ms.load(Ordering::Relaxed)
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
