//! A running publish pipeline: capture, encode, payload to RTP, hand packets to the
//! publish connection. Errors from any element arrive on the error channel; the engine's
//! supervisor decides to rebuild (see `engine::media`).

use std::sync::Arc;

use bytes::BytesMut;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app::AppSink;

use super::encoder::{BitrateControl, Choice, Encoder};
use super::running::{counters, launch, set_playing, watch_bus};
use super::{Counters, MediaConfig, MediaError, VideoRate, has_element, pipeline};
use crate::rtc::Kind;

/// Where a publish pipeline's RTP packets go (called on GStreamer's streaming threads).
pub type RtpOut = Arc<dyn Fn(Kind, BytesMut) + Send + Sync>;

/// A running publish pipeline. Dropping it stops the pipeline.
pub struct Publisher {
    pipeline: gst::Pipeline,
    /// Captured (0), encoded (1) video frames and encoded audio buffers (2).
    pub counters: Arc<Counters>,
    /// The encoder in use and why.
    pub encoder: Choice,
    bus: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Builds and starts the pipeline, with the microphone muted if `muted`. RTP packets go
    /// to `rtp`; runtime errors go to `errors`.
    pub fn start(
        cfg: &MediaConfig,
        encoder: Choice,
        rate: VideoRate,
        muted: bool,
        rtp: RtpOut,
        errors: super::ErrorSink,
    ) -> Result<Publisher, MediaError> {
        super::init()?;
        let desc = pipeline::publish(cfg, rate, encoder.encoder, has_element("timeoverlay"));
        tracing::debug!(pipeline = %desc, "publish pipeline");
        let pipeline = launch(&desc)?;
        for (name, kind) in [("vsink", Kind::Video), ("asink", Kind::Audio)] {
            // A stream without video (or audio) has no such sink.
            let Some(sink) = pipeline.by_name(name) else { continue };
            let sink =
                sink.downcast::<AppSink>().map_err(|_| MediaError::Build(format!("{name} is not an appsink")))?;
            let out = rtp.clone();
            sink.set_callbacks(
                gstreamer_app::AppSinkCallbacks::builder()
                    .new_sample(move |s| {
                        let sample = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(buf) = sample.buffer()
                            && let Ok(map) = buf.map_readable()
                        {
                            out(kind, BytesMut::from(map.as_slice()));
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
        }
        if let Some(v) = pipeline.by_name("micvol") {
            v.set_property("mute", muted);
        }
        let counters = counters(&pipeline, [Some(("vcaps", "src")), Some(("venc", "src")), Some(("aenc", "src"))]);
        let bus = watch_bus(&pipeline, errors, counters.clone(), &[("mlevel", 0)]);
        set_playing(&pipeline, "the publish pipeline")?;
        Ok(Publisher { pipeline, counters, encoder, bus })
    }

    /// Asks the encoder for a keyframe (with SPS/PPS) now.
    pub fn force_keyframe(&self) {
        if let Some(sink) = self.pipeline.by_name("vsink") {
            let ev = gstreamer_video::UpstreamForceKeyUnitEvent::builder().all_headers(true).build();
            sink.send_event(ev);
        }
    }

    /// Holds the running video to `rate`: the encoder's bitrate (in its own unit, see
    /// [`crate::media::encoder::Encoder::bitrate_control`]) and the picture's size and rate
    /// (the encoder is renegotiated when those change, and starts with a keyframe).
    pub fn set_rate(&self, rate: VideoRate) {
        if let Some(enc) = self.pipeline.by_name("venc") {
            match self.encoder.encoder.bitrate_control(rate.kbps) {
                BitrateControl::Property(name, value) => {
                    if enc.find_property(name).is_some() {
                        enc.set_property(name, value);
                    }
                }
                BitrateControl::ExtraControls(s) => match s.parse::<gst::Structure>() {
                    Ok(st) => enc.set_property("extra-controls", st),
                    Err(e) => tracing::warn!(error = %e, "cannot set the encoder's bitrate control"),
                },
            }
        }
        if let Some(f) = self.pipeline.by_name("vadapt")
            && let Ok(caps) = rate.caps().parse::<gst::Caps>()
            && f.property::<Option<gst::Caps>>("caps").as_ref() != Some(&caps)
        {
            f.set_property("caps", caps);
        }
    }

    /// The encoder's bitrate as it runs now, kbit/s (tests, status).
    pub fn bitrate_kbps(&self) -> Option<u32> {
        let enc = self.pipeline.by_name("venc")?;
        match self.encoder.encoder {
            Encoder::X264 | Encoder::Vaapi => Some(enc.property::<u32>("bitrate")),
            Encoder::OpenH264 | Encoder::Nvidia => Some(enc.property::<u32>("bitrate") / 1000),
            Encoder::V4l2 => {
                let st = enc.property::<Option<gst::Structure>>("extra-controls")?;
                st.get::<i32>("video_bitrate").ok().map(|b| b as u32 / 1000)
            }
        }
    }

    /// Sizes Opus's in-band FEC for `percent` lost packets (0: none is made).
    pub fn set_audio_loss(&self, percent: u32) {
        if let Some(enc) = self.pipeline.by_name("aenc") {
            enc.set_property("packet-loss-percentage", percent.min(100) as i32);
        }
    }

    /// What Opus's in-band FEC is sized for now, percent (tests, status).
    pub fn audio_loss(&self) -> Option<u32> {
        let enc = self.pipeline.by_name("aenc")?;
        Some(enc.property::<i32>("packet-loss-percentage").max(0) as u32)
    }

    /// Mutes (silence is still sent) or unmutes the microphone.
    pub fn set_muted(&self, muted: bool) {
        if let Some(v) = self.pipeline.by_name("micvol") {
            v.set_property("mute", muted);
        }
    }

    /// Switches the camera: off, no frame reaches the encoder (nothing is sent); on again,
    /// the encoder is asked for a keyframe so players see a picture at once.
    pub fn set_camera(&self, on: bool) {
        let Some(gate) = self.pipeline.by_name("camgate") else { return };
        let was_on = !gate.property::<bool>("drop");
        gate.set_property("drop", !on);
        if on && !was_on {
            self.force_keyframe();
        }
    }

    /// Whether the microphone is muted.
    pub fn muted(&self) -> bool {
        self.pipeline.by_name("micvol").is_some_and(|v| v.property::<bool>("mute"))
    }

    /// Makes the encoder post an error, as a failing hardware encoder would (tests, doctor).
    pub fn simulate_failure(&self) {
        if let Some(enc) = self.pipeline.by_name("venc") {
            let msg =
                gst::message::Error::builder(gst::CoreError::Failed, "simulated encoder failure").src(&enc).build();
            let _ = enc.post_message(msg);
        }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.bus.abort();
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
