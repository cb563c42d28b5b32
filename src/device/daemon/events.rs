//! The daemon's reaction to engine events: the status, the call controller's inputs, one
//! log line per change a field engineer can act on, calls, door requests and re-login.

use std::time::Instant;

use super::Daemon;
use crate::device::call::{Action, CallState, Input, LedMode};
use crate::device::gpio::Output;
use crate::device::status::{PlayFigures, PlayStatus, PublishFigures, PublishStatus, Repair, StreamEntry};
use crate::engine::{EngineEvent, ErrorCode, MediaEventKind, PlayerState, PublisherState, RoomState, UpdateType};

/// A hint for the field engineer for codes with a usual cause.
pub fn hint(code: ErrorCode) -> Option<&'static str> {
    Some(match code {
        ErrorCode::TOKEN_EXPIRED => "is the clock right? (timedatectl; a board without RTC boots in the past)",
        ErrorCode::TOKEN_INVALID => "check [server] app_sign/token against the server's app secret",
        ErrorCode::APP_ID_MISMATCH => "check [server] app_id; the server does not know this app",
        ErrorCode::TOKEN_ROOM_MISMATCH | ErrorCode::TOKEN_USER_MISMATCH => {
            "the token was minted for another room or user"
        }
        ErrorCode::KICKED_DUPLICATE_LOGIN => "another device logged in with the same [room] user_id",
        ErrorCode::NETWORK_UNREACHABLE | ErrorCode::NETWORK_INTERRUPTED => "check the network and [server] url",
        ErrorCode::MEDIA_PIPELINE_FAILED => "check the camera/microphone ([video]/[audio] source) and `callbox doctor`",
        ErrorCode::MEDIA_ENCODER_STALLED => "the encoder stopped producing frames; see `callbox doctor`",
        ErrorCode::CALL_NO_CALLEE => {
            "nobody in the room can answer: set [call] callee, or log in an indoor unit or desk that answers"
        }
        ErrorCode::CALL_PEER_OFFLINE => "the callee is not in the room: check [call] callee and that it is logged in",
        ErrorCode::DOOR_RELAY_FAULT => "the door relay output failed: check [gpio.outputs] door and `callbox doctor`",
        ErrorCode::PUBLISH_MEDIA_RECOVERING | ErrorCode::PLAY_MEDIA_RECOVERING => {
            "no media on the network path to the server; recovering by itself (is UDP or TCP to the server's media port allowed?)"
        }
        _ => return None,
    })
}

impl Daemon {
    /// In the room, the online LED is steady while media flows and blinks while a stream
    /// is being recovered, as it does while the room connection is.
    fn show_media_health(&mut self, now: Instant) {
        if self.status.room.state == RoomState::Connected {
            let mode = if self.status.media_stalled() { LedMode::Blink } else { LedMode::On };
            self.outputs.set(now, Output::Online, mode);
        }
    }

    pub(super) fn on_engine_event(&mut self, e: EngineEvent) {
        let now = Instant::now();
        let room_id = self.cfg.room.room_id.clone();
        match e {
            EngineEvent::RoomStateChanged { state, reason, error_code, .. } => {
                let (st, why) = (state.as_str(), format!("{reason:?}"));
                let hint = hint(error_code).map(|h| format!("; {h}")).unwrap_or_default();
                let msg = format!(
                    "room {room_id}: {st} ({why}){}",
                    if error_code.0 != 0 { format!(", error {}{hint}", error_code.0) } else { String::new() }
                );
                if error_code.0 != 0 && state != RoomState::Connected {
                    tracing::warn!(callbox_event = "room_state", room_id = %room_id, user_id = %self.cfg.room.user_id, state = %st, reason = %why, error_code = error_code.0, "{msg}");
                    self.error(error_code.0, msg);
                } else {
                    tracing::info!(callbox_event = "room_state", room_id = %room_id, user_id = %self.cfg.room.user_id, state = %st, reason = %why, error_code = error_code.0, "{msg}");
                }
                self.status.room.state = state;
                self.status.room.reason = why;
                self.status.room.error_code = error_code.0;
                match state {
                    RoomState::Connected => {
                        self.login_failures = 0;
                        self.outputs.set(
                            now,
                            Output::Fault,
                            if self.status.gpio.error.is_some() { LedMode::On } else { LedMode::Off },
                        );
                        self.controller.handle(now, Input::RoomUp);
                        self.reconcile();
                    }
                    RoomState::Connecting => self.controller.handle(now, Input::RoomDown),
                    RoomState::Disconnected => {
                        self.controller.handle(now, Input::RoomDown);
                        self.outputs.set(now, Output::Online, LedMode::Off);
                        use crate::engine::RoomStateReason as R;
                        if matches!(reason, R::LoginFailed | R::ReconnectFailed | R::KickOut) {
                            self.outputs.set(now, Output::Fault, LedMode::On);
                            // Out of the room: nothing of it is current any more.
                            for s in self.remote_streams() {
                                self.controller.handle(now, Input::StreamRemoved(s));
                            }
                            self.status.streams.clear();
                            self.status.users.clear();
                            self.schedule_relogin();
                        }
                    }
                }
            }
            EngineEvent::RoomUserUpdate { update, users, reason, .. } => {
                for u in users {
                    let why = if reason.0 != 0 { format!(" ({})", reason.name()) } else { String::new() };
                    tracing::info!(callbox_event = "user_update", room_id = %room_id, user_id = %u.user_id, update = ?update, error_code = reason.0, "user {} {}{why}", u.user_id, if update == UpdateType::Add { "joined" } else { "left" });
                    self.status.users.retain(|x| *x != u.user_id);
                    if update == UpdateType::Add {
                        self.status.users.push(u.user_id);
                    }
                }
            }
            EngineEvent::RoomStreamUpdate { update, streams, reason, .. } => {
                for s in streams {
                    tracing::info!(callbox_event = "stream_update", room_id = %room_id, stream_id = %s.stream_id, user_id = %s.user.user_id, error_code = reason.0, "stream {} of {} {}", s.stream_id, s.user.user_id, if update == UpdateType::Add { "added" } else { "deleted" });
                    self.status.streams.retain(|x| x.stream_id != s.stream_id);
                    if update == UpdateType::Add {
                        self.status.streams.push(StreamEntry {
                            stream_id: s.stream_id.clone(),
                            user_id: s.user.user_id.clone(),
                            video: s.video.as_str().into(),
                            audio: s.audio.as_str().into(),
                        });
                        self.controller.handle(now, Input::StreamAdded { stream: s.stream_id, user: s.user.user_id });
                    } else {
                        self.controller.handle(now, Input::StreamRemoved(s.stream_id));
                    }
                }
            }
            EngineEvent::PublisherStateUpdate { stream_id, state, error_code } => {
                let st = state.as_str();
                tracing::info!(callbox_event = "publisher_state", room_id = %room_id, stream_id = %stream_id, state = st, error_code = error_code.0, "publish {stream_id}: {st}");
                // Like a player's, a publisher's figures stay across its state changes (a link
                // that recovers under loss flaps Publishing / PublishRequesting; the figures are
                // still the stream's, and the next quality event replaces them).
                let stalled = error_code == ErrorCode::PUBLISH_MEDIA_RECOVERING;
                if state == PublisherState::NoPublish {
                    self.status.publishing.retain(|p| p.stream_id != stream_id);
                } else if let Some(p) = self.status.publishing.iter_mut().find(|p| p.stream_id == stream_id) {
                    p.state = state;
                    p.stalled = stalled;
                } else {
                    self.status.publishing.push(PublishStatus { stream_id, state, stalled, quality: None });
                }
                self.show_media_health(now);
            }
            EngineEvent::PlayerStateUpdate { stream_id, state, error_code } => {
                let st = state.as_str();
                tracing::info!(callbox_event = "player_state", room_id = %room_id, stream_id = %stream_id, state = st, error_code = error_code.0, "play {stream_id}: {st}");
                let stalled = error_code == ErrorCode::PLAY_MEDIA_RECOVERING;
                if state == PlayerState::NoPlay {
                    self.status.playing.retain(|p| p.stream_id != stream_id);
                } else if let Some(p) = self.status.playing.iter_mut().find(|p| p.stream_id == stream_id) {
                    p.state = state;
                    p.stalled = stalled;
                } else {
                    self.status.playing.push(PlayStatus {
                        stream_id,
                        state,
                        stalled,
                        frames_decoded: 0,
                        rendered: false,
                        quality: None,
                    });
                }
                self.show_media_health(now);
            }
            EngineEvent::PublisherQualityUpdate { stream_id, quality: q } => {
                if let Some(p) = self.status.publishing.iter_mut().find(|p| p.stream_id == stream_id) {
                    p.quality = Some(PublishFigures {
                        send_fps: q.send_fps,
                        video_kbps: q.video_kbps,
                        rtt_ms: q.rtt_ms,
                        packet_loss: q.packet_loss,
                        level: q.level,
                        path: q.path,
                        estimate_kbps: q.estimate_kbps,
                        cap_kbps: q.cap_kbps,
                        target_kbps: q.target_kbps,
                        video: format!("{}x{}@{}", q.width, q.height, q.fps),
                        retransmitted: q.retransmitted,
                        audio_fec_percent: q.audio_fec_percent,
                    });
                }
            }
            EngineEvent::PlayerQualityUpdate { stream_id, quality: q } => {
                if let Some(p) = self.status.playing.iter_mut().find(|p| p.stream_id == stream_id) {
                    p.frames_decoded = q.frames_decoded;
                    p.quality = Some(PlayFigures {
                        render_fps: q.render_fps,
                        video_kbps: q.video_kbps,
                        rtt_ms: q.rtt_ms,
                        packet_loss: q.packet_loss,
                        stall_count: q.stall_count,
                        level: q.level,
                        path: q.path,
                        repair: Repair {
                            video_retransmitted: q.video_retransmitted,
                            video_fec_rebuilt: q.video_fec_rebuilt,
                            video_lost: q.video_lost,
                            audio_lost: q.audio_lost,
                            audio_concealed: q.audio_concealed,
                            video_frames_intact: q.video_frames_intact,
                            video_frames: q.video_frames,
                        },
                    });
                }
            }
            EngineEvent::PublisherEncoder { stream_id, encoder, hardware, reason } => {
                tracing::info!(callbox_event = "encoder", stream_id = %stream_id, encoder = %encoder, hardware, "encoder {encoder} ({}): {reason}", if hardware { "hardware" } else { "software" });
                self.status.encoder = Some(encoder);
            }
            EngineEvent::PublisherMediaError { stream_id, error_code, message } => {
                let hint = hint(error_code).map(|h| format!("; {h}")).unwrap_or_default();
                tracing::error!(callbox_event = "media_error", stream_id = %stream_id, error_code = error_code.0, "publish {stream_id} media failed: {message} (code {}){hint}", error_code.0);
                self.error(error_code.0, format!("{stream_id}: {message}{hint}"));
            }
            EngineEvent::MediaEvent { stream_id, event } => {
                if event == MediaEventKind::RenderedFirstFrame
                    && let Some(p) = self.status.playing.iter_mut().find(|p| p.stream_id == stream_id)
                {
                    p.rendered = true;
                }
                let stall = matches!(event, MediaEventKind::VideoStall | MediaEventKind::AudioStall);
                if stall {
                    tracing::warn!(callbox_event = "media", stream_id = %stream_id, "{stream_id}: {event:?}");
                } else {
                    tracing::info!(callbox_event = "media", stream_id = %stream_id, "{stream_id}: {event:?}");
                }
            }
            EngineEvent::CallIncoming { call_id, caller, .. } => {
                tracing::info!(callbox_event = "call_incoming", call_id, room_id = %room_id, peer = %caller.user_id, "call {call_id} from {}", caller.user_id);
                self.controller.handle(now, Input::Incoming { call_id, caller: caller.user_id });
            }
            EngineEvent::CallStateUpdate { call_id, state, peer, reason, .. } => {
                tracing::info!(callbox_event = "call_update", call_id, room_id = %room_id, peer = %peer.user_id, state = ?state, error_code = reason.0,
                    "call {call_id}: {state:?} {}{}", peer.user_id, if reason.0 != 0 { format!(" ({})", reason.name()) } else { String::new() });
                if state == crate::proto::CallPhase::Ended {
                    self.status.last_call_end = Some(reason.name().to_string());
                }
                let peer = peer.user_id;
                self.controller.handle(now, Input::CallUpdate { call_id, state, peer, reason });
            }
            EngineEvent::RemoteCameraStateUpdate { stream_id, state, .. } => {
                tracing::info!(callbox_event = "stream_state", stream_id = %stream_id, video = state.as_str(), "camera of {stream_id} {}", state.as_str());
                if let Some(s) = self.status.streams.iter_mut().find(|s| s.stream_id == stream_id) {
                    s.video = state.as_str().into();
                }
            }
            EngineEvent::RemoteMicStateUpdate { stream_id, state, .. } => {
                tracing::info!(callbox_event = "stream_state", stream_id = %stream_id, audio = state.as_str(), "microphone of {stream_id} {}", state.as_str());
                if let Some(s) = self.status.streams.iter_mut().find(|s| s.stream_id == stream_id) {
                    s.audio = state.as_str().into();
                }
            }
            EngineEvent::NetworkQuality { is_local: true, upstream, downstream, .. } => {
                let n = super::super::status::NetworkStatus {
                    upstream: upstream.as_str().into(),
                    downstream: downstream.as_str().into(),
                };
                self.status.network = Some(n);
            }
            EngineEvent::DoorRequest { request_id, from, in_call, .. } => {
                tracing::info!(callbox_event = "door_request", request_id, from_user = %from.user_id, in_call, "door request from {}", from.user_id);
                self.controller.handle(now, Input::DoorRequest { request_id, from: from.user_id });
            }
            EngineEvent::RoomTokenWillExpire { remaining_secs, .. } => match self.status.credentials.source.as_str() {
                "token" => tracing::warn!(
                    callbox_event = "token_expiring",
                    remaining_secs,
                    "the configured token expires in {remaining_secs} s and a fixed token cannot be renewed; use device_key, token_url or token_file"
                ),
                "app_sign" => tracing::info!(
                    callbox_event = "token_expiring",
                    remaining_secs,
                    "token expires in {remaining_secs} s; the engine renews it"
                ),
                _ => {
                    tracing::info!(
                        callbox_event = "token_expiring",
                        remaining_secs,
                        "token expires in {remaining_secs} s; renewing now"
                    );
                    self.renew_now.notify_one();
                }
            },
            _ => {}
        }
    }

    /// Other users' streams the controller knows about (from the status).
    fn remote_streams(&self) -> Vec<String> {
        self.status.streams.iter().map(|s| s.stream_id.clone()).collect()
    }

    /// After a login, makes the engine do what the call needs: a login after a refused one
    /// or a kick starts from nothing (a plain reconnect restores streams by itself).
    fn reconcile(&mut self) {
        // A kiosk's room call (a call between members ended with the old session).
        if self.controller.state() != CallState::InCall || self.controller.peer().is_some() {
            return;
        }
        let stream = self.cfg.stream_id();
        if !self.status.publishing.iter().any(|p| p.stream_id == stream) {
            self.op(Action::Publish);
        }
        for s in self.remote_streams() {
            if !self.status.playing.iter().any(|p| p.stream_id == s) {
                self.op(Action::Play(s));
            }
        }
    }
}
