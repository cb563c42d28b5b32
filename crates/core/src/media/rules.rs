//! The pipelines' rules that need no pipeline: the jitter buffer's wait, how much Opus FEC a
//! reported loss asks for, and the grid's channel names. The media supervisor decides with
//! them; the GStreamer pipelines are built with them.

use super::MediaConfig;

/// The most the play pipeline's video jitter buffer waits for a missing packet, ms: see
/// [`crate::rtc::repair::PLAY_WAIT`]. It starts shorter and grows to this on loss
/// ([`super::jitter::JitterWait`]).
pub fn video_jitter_ms(cfg: &MediaConfig) -> u32 {
    let wait = if cfg.repair { crate::rtc::repair::PLAY_WAIT_REPAIR } else { crate::rtc::repair::PLAY_WAIT };
    wait.as_millis() as u32
}

/// The share of packets Opus's in-band FEC is sized for, percent, when the loss the server
/// reports is `reported` (0..1): at least 10, because the copy a packet carries of the one
/// before also protects the server's hop to each player, which the publisher cannot see,
/// and because below 10 the encoder makes almost none (measured with GStreamer's opusenc:
/// at 5, about one packet in ten carried FEC; at 10, all of them); at most 30. Zero without
/// repair: no FEC is sent.
pub fn opus_loss_percent(repair: bool, reported: f64) -> u32 {
    if !repair {
        return 0;
    }
    ((reported * 100.0).ceil() as u32).clamp(10, 30)
}

/// The grid's channel for the local preview.
pub const PREVIEW_CHANNEL: &str = "callbox-preview";

/// The grid's channel for a played stream.
pub fn play_channel(stream_id: &str) -> String {
    format!("callbox-play-{stream_id}")
}
