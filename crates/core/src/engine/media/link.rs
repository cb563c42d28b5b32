//! One stream's media link as the supervisor sees it: offer, connection state, what the
//! application was told, retries and figures. Plain data, no connection handle.

use std::time::{Duration, Instant};

use crate::engine::event::PlayerState;
use crate::engine::event::{EngineEvent, PublisherState};
use crate::engine::reconnect::ReconnectPolicy;
use crate::proto::QualityLevel;
use crate::proto::{ErrorCode, MediaRole};
use crate::rtc::client::LinkStats;

/// After a link or pipeline failure: 0.5 s, 1 s, 2 s ... at most 10 s.
const RELINK: ReconnectPolicy = ReconnectPolicy::doubling(Duration::from_millis(500), Duration::from_secs(10));

/// The wait before the next attempt after `failures` failures in a row (at least one).
pub(super) fn backoff(failures: u32) -> Duration {
    RELINK.ceiling(failures.saturating_sub(1))
}

#[derive(Debug, Default)]
pub(super) struct Link {
    /// The runner has a connection for this link (opened and not closed since).
    pub(super) open: bool,
    /// Tags the connection's events and its offer: older ones are ignored.
    pub(super) epoch: u64,
    /// The connection's offer until it is answered.
    pub(super) offer: Option<String>,
    /// When the offer went out; `None`: not sent (the room connection was down) or lost.
    pub(super) offer_sent: Option<Instant>,
    pub(super) connected: bool,
    /// Not carrying media since then (cut, silent, failed, being renegotiated).
    pub(super) down_since: Option<Instant>,
    /// The session's state for the stream is Publishing / Playing.
    pub(super) session_ok: bool,
    /// The application was last told Publishing / Playing.
    pub(super) shown_ok: bool,
    pub(super) retry_at: Option<Instant>,
    pub(super) failures: u32,
    pub(super) stats: LinkStats,
    prev: LinkStats,
}

/// A media connection's figures over one quality interval.
pub(super) struct LinkRates {
    pub(super) fps: f64,
    pub(super) video_kbps: f64,
    pub(super) audio_kbps: f64,
    pub(super) rtt_ms: f64,
    pub(super) loss: f64,
    pub(super) level: QualityLevel,
    pub(super) path: &'static str,
}

impl Link {
    /// The session reports Publishing / Playing (`ok`) or not. Returns whether the
    /// application may be told so: not while the link is down.
    pub(super) fn session_says(&mut self, ok: bool) -> bool {
        self.session_ok = ok;
        self.shown_ok = ok && self.down_since.is_none();
        !ok || self.shown_ok
    }

    /// A new connection with this epoch replaces the old one; nothing negotiated yet.
    pub(super) fn reopen(&mut self, epoch: u64) {
        self.open = true;
        self.epoch = epoch;
        self.connected = false;
        self.offer = None;
        self.offer_sent = None;
        self.retry_at = None;
        self.prev = LinkStats::default();
        self.stats = LinkStats::default();
    }

    /// One more failure: the next attempt after the back-off.
    pub(super) fn failed(&mut self, now: Instant) {
        self.failures += 1;
        self.retry_at = Some(now + backoff(self.failures));
    }

    /// The figures since the last call, which starts the next interval.
    pub(super) fn rates(&mut self, secs: f64) -> LinkRates {
        let (s, q) = (self.stats, std::mem::replace(&mut self.prev, self.stats));
        let sent = (s.packets[0] + s.packets[1]).saturating_sub(q.packets[0] + q.packets[1]);
        let loss = loss(s.lost.saturating_sub(q.lost), sent);
        let rtt_ms = s.rtt_ms.unwrap_or(0.0);
        let kbps = |now: u64, before: u64| per_sec(now, before, secs) * 8.0 / 1000.0;
        LinkRates {
            fps: per_sec(s.frames, q.frames, secs),
            video_kbps: kbps(s.bytes[0], q.bytes[0]),
            audio_kbps: kbps(s.bytes[1], q.bytes[1]),
            rtt_ms,
            loss,
            level: level(rtt_ms, loss, self.connected),
            path: s.path.as_str(),
        }
    }
}

/// Publishing / Playing (`ok`), or PublishRequesting / PlayRequesting with the media
/// recovery code: what the application is told about a stream's media.
pub(super) fn state_event(role: MediaRole, stream_id: String, ok: bool) -> EngineEvent {
    match (role, ok) {
        (MediaRole::Publish, true) => EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::Publishing,
            error_code: ErrorCode::OK,
        },
        (MediaRole::Publish, false) => EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::PublishRequesting,
            error_code: ErrorCode::PUBLISH_MEDIA_RECOVERING,
        },
        (MediaRole::Play, true) => {
            EngineEvent::PlayerStateUpdate { stream_id, state: PlayerState::Playing, error_code: ErrorCode::OK }
        }
        (MediaRole::Play, false) => EngineEvent::PlayerStateUpdate {
            stream_id,
            state: PlayerState::PlayRequesting,
            error_code: ErrorCode::PLAY_MEDIA_RECOVERING,
        },
    }
}

/// A counter's rate over `secs`.
pub(super) fn per_sec(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn loss(lost: u64, sent: u64) -> f64 {
    if lost + sent == 0 { 0.0 } else { lost as f64 / (lost + sent) as f64 }
}

/// The signalling levels (`quality::level`), and Die while the media connection is down.
fn level(rtt_ms: f64, loss: f64, connected: bool) -> QualityLevel {
    if connected {
        crate::engine::quality::level(Duration::from_secs_f64(rtt_ms.max(0.0) / 1000.0), loss)
    } else {
        QualityLevel::Die
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_and_levels() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(30), Duration::from_secs(10));
        assert_eq!(level(20.0, 0.0, true), QualityLevel::Excellent);
        assert_eq!(level(150.0, 0.02, true), QualityLevel::Good);
        assert_eq!(level(20.0, 0.0, false), QualityLevel::Die);
        assert_eq!(loss(1, 99), 0.01);
    }
}
