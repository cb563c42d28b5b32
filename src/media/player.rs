//! A running play pipeline: RTP in through jitter buffers, decode, render. Frames decoded
//! and rendered and audio buffers decoded are counted for quality events.

use std::sync::Arc;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSrc;

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
        Ok(Player { pipeline, counters, decoder, bus })
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
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
