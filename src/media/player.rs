//! A running play pipeline: RTP in through jitter buffers, decode, render. Frames decoded
//! and rendered and audio buffers decoded are counted for quality events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbox_core::media::jitter::JitterStats;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSrc;

use super::pipeline::{JitterWait, video_jitter_ms};
use super::running::{counters, launch, set_playing, watch_bus, watch_size};
use super::{Counters, MediaConfig, MediaError, has_element, pipeline};
use crate::rtc::Kind;
use crate::rtc::client::RtpSink;

/// A running play pipeline. Dropping it stops the pipeline.
pub struct Player {
    pipeline: gst::Pipeline,
    /// Decoded (0) and rendered (1) video frames, decoded audio buffers (2).
    pub counters: Arc<Counters>,
    /// The H.264 decoder in use.
    pub decoder: &'static str,
    bus: tokio::task::JoinHandle<()>,
    /// Adapts the video jitter buffer's wait (none without decoded video).
    jitter: Option<tokio::task::JoinHandle<()>>,
}

/// Feeds received RTP into a [`Player`]'s sources.
pub struct PlayerSink {
    video: AppSrc,
    audio: AppSrc,
}

impl RtpSink for PlayerSink {
    fn rtp(&mut self, kind: Kind, packet: &[u8]) {
        let src = if kind == Kind::Video { &self.video } else { &self.audio };
        let _ = src.push_buffer(gst::Buffer::from_slice(packet.to_vec()));
    }
}

impl Player {
    /// Builds and starts the pipeline for `stream_id`, with its video decoded if `video`
    /// (false: an audio-only stream, or no display); runtime errors go to `errors`.
    pub fn start(
        cfg: &MediaConfig,
        stream_id: &str,
        video: bool,
        errors: super::ErrorSink,
    ) -> Result<Player, MediaError> {
        super::init()?;
        let decoder = pipeline::decoder(has_element);
        let pipeline = launch(&pipeline::play(cfg, decoder, stream_id, video))?;
        let counters = counters(&pipeline, [Some(("vdec", "src")), Some(("vout", "sink")), Some(("adec", "src"))]);
        watch_size(&pipeline, "vout", "sink", &counters);
        let bus = watch_bus(&pipeline, errors, counters.clone(), &[("alevel", 0), ("olevel", 1)]);
        set_playing(&pipeline, "the play pipeline")?;
        let jitter = adapt_jitter(&pipeline, &counters, video_jitter_ms(cfg));
        Ok(Player { pipeline, counters, decoder, bus, jitter })
    }

    /// Applies the play controls: video decoded or dropped before the decoder, and the
    /// played audio's gain (0.0 silent, 1.0 as received, up to 2.0).
    pub fn set_controls(&self, video: bool, gain: f64) {
        if let Some(v) = self.pipeline.by_name("vgate") {
            v.set_property("drop", !video);
        }
        if let Some(v) = self.pipeline.by_name("pvol") {
            v.set_property("volume", gain.clamp(0.0, 2.0));
            v.set_property("mute", gain <= 0.0);
        }
    }

    /// The RTP entry points, for the play connection.
    pub fn sink(&self) -> Result<PlayerSink, MediaError> {
        let get = |name: &str| {
            self.pipeline
                .by_name(name)
                .and_then(|e| e.downcast::<AppSrc>().ok())
                .ok_or_else(|| MediaError::Build(format!("no appsrc {name}")))
        };
        Ok(PlayerSink { video: get("vsrc")?, audio: get("asrc")? })
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.bus.abort();
        if let Some(j) = &self.jitter {
            j.abort();
        }
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// How often the video jitter buffer's counters are read.
const JITTER_EVERY: Duration = Duration::from_millis(250);

/// Reads the video jitter buffer's counters every [`JITTER_EVERY`] and sets its wait as
/// [`JitterWait`] says, up to `ceiling_ms`.
fn adapt_jitter(
    pipeline: &gst::Pipeline,
    counters: &Arc<Counters>,
    ceiling_ms: u32,
) -> Option<tokio::task::JoinHandle<()>> {
    let jit = pipeline.by_name("vjit")?;
    let counters = counters.clone();
    let mut wait = JitterWait::new(Duration::from_millis(u64::from(ceiling_ms)));
    counters.set_jitter(wait.current());
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(JITTER_EVERY);
        loop {
            tick.tick().await;
            let st = jit.property::<gst::Structure>("stats");
            let get = |f: &str| st.get::<u64>(f).unwrap_or(0);
            let stats = JitterStats {
                pushed: get("num-pushed"),
                lost: get("num-lost"),
                late: get("num-late"),
                jitter: Duration::from_nanos(get("avg-jitter")),
            };
            if let Some(w) = wait.observe(Instant::now(), stats) {
                jit.set_property("latency", w.as_millis() as u32);
                counters.set_jitter(w);
                tracing::debug!(
                    wait_ms = w.as_millis() as u64,
                    lost = stats.lost,
                    late = stats.late,
                    "video jitter buffer wait"
                );
            }
        }
    }))
}
