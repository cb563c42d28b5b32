//! What `callbox status` shows: the daemon's view of the room, the call, its streams, GPIO
//! and recent errors, as JSON over the control socket and as text for a person.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::engine::{PlayerState, PublisherState, RoomState};

/// Errors kept for `last_errors`.
pub const KEPT_ERRORS: usize = 10;

/// The whole status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// callbox version.
    pub version: String,
    /// Seconds since the daemon started.
    pub uptime_secs: u64,
    /// The room login.
    pub room: RoomStatus,
    /// `idle`, `ringing_out`, `ringing` or `in_call`.
    pub call: String,
    /// Who rings us or who we are in a call with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_peer: Option<String>,
    /// The microphone is muted.
    pub muted: bool,
    /// The camera: `on`, `off` (switched off, or privacy outside calls) or `none` (this
    /// station has none: it publishes audio only).
    #[serde(default)]
    pub camera: String,
    /// The speaker is on.
    #[serde(default)]
    pub speaker: bool,
    /// The volume of what is played, percent.
    #[serde(default)]
    pub volume: u32,
    /// This device's network quality, as its engine measures it: `upstream` from its
    /// publish links' receiver reports, `downstream` from what its players receive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStatus>,
    /// The MQTT broker (`[mqtt]`): `connecting`, `connected` or `unreachable`; absent
    /// without `[mqtt]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt: Option<String>,
    /// Other users in the room.
    pub users: Vec<String>,
    /// Other users' streams in the room.
    pub streams: Vec<StreamEntry>,
    /// Our published streams.
    pub publishing: Vec<PublishStatus>,
    /// Streams we play.
    pub playing: Vec<PlayStatus>,
    /// The H.264 encoder in use (or last used), e.g. `v4l2h264enc`.
    pub encoder: Option<String>,
    /// GPIO backend and outputs.
    pub gpio: GpioStatus,
    /// Door relay pulses since start.
    pub door_pulses: u64,
    /// Door requests that failed here (the relay's fault).
    pub door_refused: u64,
    /// Door requests this station sent (its door button during a call, without a relay of
    /// its own).
    pub door_requests: u64,
    /// How the last of them went: `<door>: opened` or `<door>: <code name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub door_last_result: Option<String>,
    /// Why the last call ended (a code name: CALL_DECLINED, CALL_HUNG_UP, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_call_end: Option<String>,
    /// Ring chimes played since start.
    pub chimes: u64,
    /// The most recent errors, oldest first.
    pub last_errors: Vec<ErrorEntry>,
    /// Where the device's tokens come from and how renewal goes.
    #[serde(default)]
    pub credentials: CredentialStatus,
}

/// The credentials part of the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// `device_key`, `token_url`, `token_file`, `token` or `app_sign`.
    pub source: String,
    /// When the current token expires (Unix seconds; 0: unknown or minted by the engine).
    pub expires_at: u64,
    /// The last renewal failure, cleared by the next success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_error: Option<String>,
}

/// The room part of the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomStatus {
    /// The configured room.
    pub room_id: String,
    /// This device's user ID.
    pub user_id: String,
    /// `Disconnected`, `Connecting` or `Connected`.
    pub state: RoomState,
    /// The reason of the last change, e.g. `Logined`, `Reconnecting`, `LoginFailed`.
    pub reason: String,
    /// 0, or the error code of the last change.
    pub error_code: u32,
}

/// Network quality levels (`excellent` ... `die`, `unknown`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// Sending side.
    pub upstream: String,
    /// Receiving side.
    pub downstream: String,
}

/// A stream in the room.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamEntry {
    /// Stream ID.
    pub stream_id: String,
    /// Its user.
    pub user_id: String,
    /// Its video: `on`, `off` (camera switched off) or `absent` (audio only).
    #[serde(default)]
    pub video: String,
    /// Its audio: `on`, `off` (microphone muted) or `absent`.
    #[serde(default)]
    pub audio: String,
}

/// A published stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishStatus {
    /// Stream ID.
    pub stream_id: String,
    /// `NoPublish`, `PublishRequesting` or `Publishing`.
    pub state: PublisherState,
    /// Accepted by the server but no media flows (cut, UDP blocked); being recovered.
    #[serde(default)]
    pub stalled: bool,
    /// Last quality report.
    pub quality: Option<PublishFigures>,
}

/// A played stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayStatus {
    /// Stream ID.
    pub stream_id: String,
    /// `NoPlay`, `PlayRequesting` or `Playing`.
    pub state: PlayerState,
    /// Requested but no media arrives (cut, UDP blocked); being recovered.
    #[serde(default)]
    pub stalled: bool,
    /// Video frames decoded so far (from the quality report every 3 s).
    pub frames_decoded: u64,
    /// Its first video frame was rendered (at once, not at the next quality report).
    #[serde(default)]
    pub rendered: bool,
    /// Last quality report.
    pub quality: Option<PlayFigures>,
}

/// Publishing figures from the last quality report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishFigures {
    /// Frames sent per second.
    pub send_fps: f64,
    /// Video kbit/s.
    pub video_kbps: f64,
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Loss fraction 0..1.
    pub packet_loss: f64,
    /// `excellent` .. `die`.
    pub level: crate::proto::QualityLevel,
    /// `udp`, or `tcp` (ICE-TCP, where UDP does not pass).
    #[serde(default)]
    pub path: String,
    /// The device's estimate of its uplink to the server, kbit/s (0: none yet).
    #[serde(default)]
    pub estimate_kbps: f64,
    /// The lowest estimate among the stream's players, kbit/s (0: none known).
    #[serde(default)]
    pub cap_kbps: f64,
    /// The encoder's bitrate now, kbit/s.
    #[serde(default)]
    pub target_kbps: f64,
    /// The encoded picture now: `640x480@30`.
    #[serde(default)]
    pub video: String,
    /// Video packets sent again on the server's request, since publishing started.
    #[serde(default)]
    pub retransmitted: u64,
    /// The loss Opus's in-band FEC is sized for, percent (0: off).
    #[serde(default)]
    pub audio_fec_percent: u32,
}

/// Playing figures from the last quality report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PlayFigures {
    /// Frames rendered per second.
    pub render_fps: f64,
    /// Video kbit/s.
    pub video_kbps: f64,
    /// Round-trip time, ms.
    pub rtt_ms: f64,
    /// Loss fraction 0..1.
    pub packet_loss: f64,
    /// Stalls so far.
    pub stall_count: u64,
    /// `excellent` .. `die`.
    pub level: crate::proto::QualityLevel,
    /// `udp`, or `tcp` (ICE-TCP, where UDP does not pass).
    #[serde(default)]
    pub path: String,
    /// Loss repair since playing started (see [`Repair`]).
    #[serde(default)]
    pub repair: Repair,
}

/// What loss repair did for a played stream, since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    /// Video packets that arrived as retransmissions.
    pub video_retransmitted: u64,
    /// Video packets rebuilt from FlexFEC.
    pub video_fec_rebuilt: u64,
    /// Video packets lost for good.
    pub video_lost: u64,
    /// Audio frames lost on the way.
    pub audio_lost: u64,
    /// Of those, frames concealed (the rest Opus's in-band FEC rebuilt).
    pub audio_concealed: u64,
    /// Video frames shown intact, and all frames, since playing started.
    #[serde(default)]
    pub video_frames_intact: u64,
    /// See `video_frames_intact`.
    #[serde(default)]
    pub video_frames: u64,
}

/// GPIO in the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpioStatus {
    /// `rppal`, `cdev`, `sim`, or `none` when it failed to open.
    pub backend: String,
    /// Output key -> `on`, `off` or `blink`.
    pub outputs: BTreeMap<String, String>,
    /// Why GPIO is not working, if it is not.
    pub error: Option<String>,
}

/// One recorded error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// Unix time, seconds.
    pub at_unix: u64,
    /// callbox error code (see docs/protocol.md), or 0.
    pub code: u32,
    /// What happened.
    pub message: String,
}

impl Status {
    /// Records an error, keeping the last [`KEPT_ERRORS`].
    pub fn push_error(&mut self, at_unix: u64, code: u32, message: String) {
        self.last_errors.push(ErrorEntry { at_unix, code, message });
        let extra = self.last_errors.len().saturating_sub(KEPT_ERRORS);
        self.last_errors.drain(..extra);
    }

    /// The one-line summary for systemd's STATUS= and the journal.
    pub fn summary(&self) -> String {
        let mut s =
            format!("room {} {} ({}), call {}", self.room.room_id, self.room.state, self.room.reason, self.call);
        if let Some(p) = &self.call_peer {
            s.push_str(&format!(" with {p}"));
        }
        if !self.playing.is_empty() {
            let _ = write!(s, ", playing {}", self.playing.len());
        }
        if self.media_stalled() {
            s.push_str(", media stalled (recovering)");
        }
        if self.muted {
            s.push_str(", muted");
        }
        s
    }

    /// Some stream is accepted by the server but carries no media.
    pub fn media_stalled(&self) -> bool {
        self.publishing.iter().any(|p| p.stalled) || self.playing.iter().any(|p| p.stalled)
    }

    /// Text for a person at a terminal.
    pub fn to_text(&self) -> String {
        let mut t = String::new();
        let r = &self.room;
        let _ = writeln!(t, "callbox device {}  up {}", self.version, uptime(self.uptime_secs));
        let code = if r.error_code != 0 { format!(" error {}", r.error_code) } else { String::new() };
        let _ = writeln!(t, "room     {} as {}: {} ({}){code}", r.room_id, r.user_id, r.state, r.reason);
        let peer = self.call_peer.as_ref().map(|p| format!(" with {p}")).unwrap_or_default();
        let last = self.last_call_end.as_ref().map(|r| format!(" (last call ended: {r})")).unwrap_or_default();
        let muted = if self.muted { ", microphone muted" } else { "" };
        let _ = writeln!(t, "call     {}{peer}{muted}{last}", self.call);
        let speaker = if self.speaker { format!("on, volume {}%", self.volume) } else { "off".into() };
        let net = self
            .network
            .as_ref()
            .map(|n| format!("  network up {} down {}", n.upstream, n.downstream))
            .unwrap_or_default();
        let _ = writeln!(t, "media    camera {}, speaker {speaker}{net}", self.camera);
        if let Some(m) = &self.mqtt {
            let _ = writeln!(t, "mqtt     {m}");
        }
        let _ = writeln!(t, "users    {}", if self.users.is_empty() { "-".into() } else { self.users.join(", ") });
        for p in &self.publishing {
            let q = p.quality.as_ref().map(|q| {
                // The players' cap only where it is what holds the stream down.
                let limited = q.cap_kbps > 0.0 && (q.estimate_kbps == 0.0 || q.cap_kbps < q.estimate_kbps);
                let cap = if limited { format!(", players {:.0}", q.cap_kbps) } else { String::new() };
                format!(
                    "  {} {:.0} fps {:.0} kbps (target {:.0}, estimate {:.0}{cap}) rtt {:.0} ms loss {:.1}% {} over {}",
                    q.video,
                    q.send_fps,
                    q.video_kbps,
                    q.target_kbps,
                    q.estimate_kbps,
                    q.rtt_ms,
                    q.packet_loss * 100.0,
                    q.level,
                    q.path
                )
            });
            let stalled = if p.stalled { " stalled" } else { "" };
            let _ = writeln!(t, "publish  {} {}{stalled}{}", p.stream_id, p.state, q.unwrap_or_default());
        }
        for p in &self.playing {
            let q = p.quality.as_ref().map(|q| {
                let r = &q.repair;
                let repaired = r.video_retransmitted + r.video_fec_rebuilt;
                let repair = if repaired + r.video_lost + r.audio_lost > 0 {
                    format!(
                        " repaired {repaired} (rtx {}, fec {}) lost {}, intact {}/{} frames, audio lost {} concealed {}",
                        r.video_retransmitted,
                        r.video_fec_rebuilt,
                        r.video_lost,
                        r.video_frames_intact,
                        r.video_frames,
                        r.audio_lost,
                        r.audio_concealed
                    )
                } else {
                    String::new()
                };
                format!(
                    "  {:.0} fps {:.0} kbps loss {:.1}% stalls {}{repair} {} over {}",
                    q.render_fps,
                    q.video_kbps,
                    q.packet_loss * 100.0,
                    q.stall_count,
                    q.level,
                    q.path
                )
            });
            let _ = writeln!(
                t,
                "play     {} {}{} frames {}{}",
                p.stream_id,
                p.state,
                if p.stalled { " stalled" } else { "" },
                p.frames_decoded,
                q.unwrap_or_default()
            );
        }
        let _ = writeln!(t, "encoder  {}", self.encoder.as_deref().unwrap_or("- (not publishing yet)"));
        let outs: Vec<String> = self.gpio.outputs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(t, "gpio     {} {}", self.gpio.backend, outs.join(" "));
        if let Some(e) = &self.gpio.error {
            let _ = writeln!(t, "         {e}");
        }
        let _ = writeln!(
            t,
            "door     {} pulses, {} failed; {} requests sent{}; chimes {}",
            self.door_pulses,
            self.door_refused,
            self.door_requests,
            self.door_last_result.as_ref().map(|r| format!(" (last: {r})")).unwrap_or_default(),
            self.chimes
        );
        for e in &self.last_errors {
            let _ = writeln!(t, "error    at {} code {}: {}", e.at_unix, e.code, e.message);
        }
        t
    }
}

fn uptime(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_bounded_and_text_names_everything() {
        let mut s = Status { call: "in_call".into(), ..Default::default() };
        s.room = RoomStatus {
            room_id: "lobby".into(),
            state: RoomState::Connected,
            reason: "Logined".into(),
            ..Default::default()
        };
        for i in 0..15 {
            s.push_error(i, 1003036, format!("e{i}"));
        }
        assert_eq!(s.last_errors.len(), KEPT_ERRORS);
        assert_eq!(s.last_errors[0].message, "e5");
        s.playing.push(PlayStatus {
            stream_id: "flat-main".into(),
            state: PlayerState::Playing,
            stalled: false,
            frames_decoded: 42,
            rendered: true,
            quality: None,
        });
        let t = s.to_text();
        assert!(t.contains("room     lobby") && t.contains("flat-main Playing frames 42") && t.contains("e14"), "{t}");
        assert_eq!(s.summary(), "room lobby Connected (Logined), call in_call, playing 1");
        s.playing[0].state = PlayerState::PlayRequesting;
        s.playing[0].stalled = true;
        assert!(s.to_text().contains("flat-main PlayRequesting stalled frames 42"));
        assert_eq!(s.summary(), "room lobby Connected (Logined), call in_call, playing 1, media stalled (recovering)");
        let back: Status = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_publish_line_shows_the_link_and_names_the_players_only_when_they_hold_it_down() {
        let mut s = Status::default();
        let q = PublishFigures {
            send_fps: 30.0,
            video_kbps: 402.0,
            estimate_kbps: 520.0,
            cap_kbps: 9500.0,
            target_kbps: 418.0,
            video: "320x240@30".into(),
            level: crate::proto::QualityLevel::Good,
            path: "udp".into(),
            ..Default::default()
        };
        s.publishing.push(PublishStatus {
            stream_id: "door-main".into(),
            state: PublisherState::Publishing,
            stalled: false,
            quality: Some(q),
        });
        let t = s.to_text();
        assert!(t.contains("door-main Publishing  320x240@30 30 fps 402 kbps (target 418, estimate 520) rtt"), "{t}");
        s.publishing[0].quality.as_mut().unwrap().cap_kbps = 300.0;
        assert!(s.to_text().contains("(target 418, estimate 520, players 300)"), "{}", s.to_text());
        s.playing.push(PlayStatus {
            stream_id: "flat-main".into(),
            state: PlayerState::Playing,
            quality: Some(PlayFigures { render_fps: 15.0, path: "udp".into(), ..Default::default() }),
            ..Default::default()
        });
        assert!(!s.to_text().contains("repaired"), "{}", s.to_text());
        let r = Repair {
            video_retransmitted: 40,
            video_fec_rebuilt: 7,
            video_lost: 2,
            audio_lost: 30,
            audio_concealed: 6,
            video_frames_intact: 290,
            video_frames: 300,
        };
        s.playing[0].quality.as_mut().unwrap().repair = r;
        let t = s.to_text();
        assert!(
            t.contains("stalls 0 repaired 47 (rtx 40, fec 7) lost 2, intact 290/300 frames, audio lost 30 concealed 6"),
            "{t}"
        );
    }
}
