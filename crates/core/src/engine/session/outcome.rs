//! What the server's answers and lost connections do to a session: request outcomes,
//! link loss and retry scheduling, giving up, logout completion, reset.

use std::time::Instant;

use super::*;

impl Session {
    pub(super) fn answer(&mut self, now: Instant, req: u64, result: Result<u64, ErrorCode>) {
        let Some(pending) = self.pending.remove(&req) else {
            return;
        };
        match (pending, result) {
            (Pending::Login | Pending::Resume, Ok(_)) => {}
            (Pending::Resume, Err(code @ (ErrorCode::SESSION_EXPIRED | ErrorCode::TOKEN_EXPIRED))) => {
                tracing::info!(error_code = code.0, "the server will not resume our session; logging in again");
                self.resume = None;
                let unix = self.unix_at(now);
                self.handshake(unix);
            }
            (Pending::Login | Pending::Resume, Err(code)) => {
                if retryable(code) {
                    self.drop_link(now, code);
                } else {
                    let reason = if self.phase == Phase::Logining {
                        RoomStateReason::LoginFailed
                    } else {
                        RoomStateReason::ReconnectFailed
                    };
                    self.fail_room(reason, code);
                }
            }
            (Pending::Logout(cmd), _) => self.finish_logout(Some(cmd), true),
            (Pending::Publish(ch, stream_id), result) => {
                let Some(p) = self.publishes.get_mut(&ch).filter(|p| p.stream_id == stream_id) else {
                    return;
                };
                let cmd = p.cmd.take();
                let (sent, now_tracks) = (p.sent_tracks, self.local_tracks);
                match result {
                    Ok(_) => {
                        if sent != now_tracks {
                            // Switched while the publish was under way.
                            let req = self.request(Pending::Simple(0));
                            let (video, audio) = now_tracks;
                            self.send(ClientMsg::SetStreamState { req, stream_id: stream_id.clone(), video, audio });
                        }
                        self.publisher_state(ch, PublisherState::Publishing, ErrorCode::OK);
                        if let Some(c) = cmd {
                            self.done(c, Ok(0));
                        }
                    }
                    Err(code) => {
                        self.publisher_state(ch, PublisherState::NoPublish, code);
                        self.publishes.remove(&ch);
                        if let Some(c) = cmd {
                            self.done(c, Err(EngineError::Rejected(code)));
                        }
                    }
                }
            }
            (Pending::Play(stream_id), result) => {
                let Some(p) = self.plays.get_mut(&stream_id) else {
                    return;
                };
                let cmd = p.cmd.take();
                let outcome = match result {
                    Ok(_) => {
                        self.player_state(&stream_id, PlayerState::Playing, ErrorCode::OK);
                        Ok(0)
                    }
                    Err(ErrorCode::STREAM_NOT_FOUND) => {
                        self.player_state(&stream_id, PlayerState::PlayRequesting, ErrorCode::STREAM_NOT_FOUND);
                        Ok(0)
                    }
                    Err(code) => {
                        self.player_state(&stream_id, PlayerState::NoPlay, code);
                        self.plays.remove(&stream_id);
                        Err(EngineError::Rejected(code))
                    }
                };
                if let Some(c) = cmd {
                    self.done(c, outcome);
                }
            }
            (Pending::Media(stream_id, role, tag), result) => {
                let result = match result {
                    Ok(_) => Err(ErrorCode::MALFORMED_MESSAGE),
                    Err(code) => Err(code),
                };
                self.out.push_back(Output::MediaAnswer { stream_id, role, tag, result });
            }
            (Pending::Simple(cmd), result) => {
                if cmd != 0 {
                    self.done(cmd, result.map_err(EngineError::Rejected));
                }
            }
        }
    }

    pub(super) fn drop_link(&mut self, now: Instant, code: ErrorCode) {
        if self.link != Link::Down {
            self.out.push_back(Output::Close { epoch: self.epoch });
            self.link = Link::Down;
        }
        self.link_lost(now, code);
    }

    pub(super) fn link_lost(&mut self, now: Instant, code: ErrorCode) {
        self.handshake_deadline = None;
        self.next_ping = None;
        let mut logouts = Vec::new();
        for (_, p) in self.pending.drain() {
            if let Pending::Simple(cmd) = p
                && cmd != 0
            {
                self.out
                    .push_back(Output::Done { cmd, result: Err(EngineError::Network(ErrorCode::NETWORK_INTERRUPTED)) });
            }
            if let Pending::Logout(cmd) = p {
                // Completed by `finish_logout` below, after LogoutFailed is told.
                logouts.push(cmd);
                self.phase = Phase::LoggingOut;
            }
            // A media offer in flight is lost with the connection: the media side keeps its
            // offer and sends it again once in the room.
            if let Pending::Media(stream_id, role, tag) = p {
                let result = Err(ErrorCode::NETWORK_INTERRUPTED);
                self.out.push_back(Output::MediaAnswer { stream_id, role, tag, result });
            }
        }
        match self.phase {
            Phase::Idle => {}
            Phase::LoggingOut => {
                self.finish_logout(None, false);
                for cmd in logouts {
                    self.done(cmd, Ok(0));
                }
            }
            Phase::Connected => {
                tracing::debug!(error_code = code.0, "connection to the server lost; reconnecting");
                self.phase = Phase::Reconnecting;
                self.room_state(RoomStateReason::Reconnecting, code);
                let chans: Vec<PublishChannel> = self.publishes.keys().copied().collect();
                for ch in chans {
                    self.publisher_state(ch, PublisherState::PublishRequesting, code);
                }
                let plays: Vec<String> = self.plays.keys().cloned().collect();
                for s in plays {
                    self.player_state(&s, PlayerState::PlayRequesting, code);
                }
                self.retry_since = Some(now);
                self.attempt = 0;
                self.schedule_retry(now);
            }
            Phase::Logining | Phase::Reconnecting => {
                self.retry_since.get_or_insert(now);
                self.schedule_retry(now);
            }
        }
    }

    pub(super) fn schedule_retry(&mut self, now: Instant) {
        let since = self.retry_since.unwrap_or(now);
        if self.cfg.policy.exhausted(now.saturating_duration_since(since)) {
            let (reason, code) = if self.phase == Phase::Logining {
                (RoomStateReason::LoginFailed, ErrorCode::NETWORK_UNREACHABLE)
            } else {
                (RoomStateReason::ReconnectFailed, ErrorCode::RECONNECT_FAILED)
            };
            tracing::error!(error_code = code.0, "giving up reconnecting after the configured limit");
            return self.fail_room(reason, code);
        }
        let outage = now.saturating_duration_since(since);
        let delay = self.cfg.policy.delay_in_outage(self.attempt, self.jitter.unit(), outage);
        self.attempt = self.attempt.saturating_add(1);
        tracing::debug!(attempt = self.attempt, delay_ms = delay.as_millis() as u64, "retrying");
        self.retry_at = Some(now + delay);
    }

    /// The room is lost for good (login refused, kicked, gave up): report and go idle.
    pub(super) fn fail_room(&mut self, reason: RoomStateReason, code: ErrorCode) {
        self.stop_all(code);
        self.room_state(reason, code);
        if let Some(c) = self.login_cmd.take() {
            let err = if code == ErrorCode::NETWORK_UNREACHABLE {
                EngineError::Network(code)
            } else {
                EngineError::Rejected(code)
            };
            self.done(c, Err(err));
        }
        if self.link != Link::Down {
            self.out.push_back(Output::Close { epoch: self.epoch });
        }
        self.reset_to_idle();
    }

    /// The logout ends: `confirmed` by the server (Logout), or not (LogoutFailed: the
    /// server drops the session when its grace period ends).
    pub(super) fn finish_logout(&mut self, cmd: Option<CmdId>, confirmed: bool) {
        match confirmed {
            true => self.room_state(RoomStateReason::Logout, ErrorCode::OK),
            false => self.room_state(RoomStateReason::LogoutFailed, ErrorCode::NETWORK_INTERRUPTED),
        }
        if let Some(c) = cmd {
            self.done(c, Ok(0));
        }
        // A logout whose answer never came still completes its call.
        let waiting: Vec<CmdId> =
            self.pending.drain().filter_map(|(_, p)| if let Pending::Logout(c) = p { Some(c) } else { None }).collect();
        for c in waiting {
            self.done(c, Ok(0));
        }
        if self.link != Link::Down {
            self.out.push_back(Output::Close { epoch: self.epoch });
        }
        self.reset_to_idle();
    }

    pub(super) fn reset_to_idle(&mut self) {
        self.phase = Phase::Idle;
        self.link = Link::Down;
        self.room = None;
        self.resume = None;
        self.pending.clear();
        self.users.clear();
        self.streams.clear();
        self.extra.clear();
        self.retry_at = None;
        self.retry_since = None;
        self.handshake_deadline = None;
        self.next_ping = None;
        self.next_quality = None;
        self.logout_deadline = None;
    }

    /// The calls this session is in end here, with `code` as the reason (logout: hung up),
    /// because the server will not tell this session of them any more.
    pub(super) fn end_calls(&mut self, code: ErrorCode) {
        let reason = if code == ErrorCode::OK { ErrorCode::CALL_HUNG_UP } else { code };
        let room_id = self.room.as_ref().map(|r| r.room_id.clone()).unwrap_or_default();
        for (call_id, peer) in std::mem::take(&mut self.calls) {
            let state = crate::proto::CallPhase::Ended;
            self.emit(EngineEvent::CallStateUpdate { room_id: room_id.clone(), call_id, state, peer, reason });
        }
    }

    /// A resume: the server's word on where this session's call stands replaces ours, for
    /// what was sent on a connection that died before it arrived. A call we knew that the
    /// server no longer has ended: with its reason when it was the last to end, else
    /// CALL_LOST. A call the server has that we did not know is told.
    pub(super) fn reconcile_calls(&mut self, room: &RoomSnapshot) {
        use crate::proto::CallPhase;
        let room_id = room.room_id.clone();
        let current = room.call.as_ref().map(|c| c.call_id);
        for (call_id, peer) in std::mem::take(&mut self.calls) {
            if Some(call_id) == current {
                self.calls.insert(call_id, peer);
                continue;
            }
            let (peer, reason) = match &room.last_call {
                Some(l) if l.call_id == call_id => (l.peer.clone(), l.reason),
                _ => (peer, ErrorCode::CALL_LOST),
            };
            tracing::info!(call_id, error_code = reason.0, "the call ended while the connection was down");
            self.emit(EngineEvent::CallStateUpdate {
                room_id: room_id.clone(),
                call_id,
                state: CallPhase::Ended,
                peer,
                reason,
            });
        }
        let Some(c) = &room.call else { return };
        let known = self.calls.contains_key(&c.call_id);
        let peer = c.peer.clone().unwrap_or_else(|| UserInfo::new(String::new(), String::new()));
        if !known {
            self.calls.insert(c.call_id, peer.clone());
        }
        match (c.caller, c.answered, known) {
            // Rung while away: the ring is told now.
            (false, false, false) => {
                let e = EngineEvent::CallIncoming { room_id, call_id: c.call_id, caller: peer, ring_secs: 0 };
                self.emit(e);
            }
            // Answered while away (by us on another connection, or the callee took ours).
            (_, true, _) => {
                let (call_id, state, reason) = (c.call_id, CallPhase::Answered, ErrorCode::OK);
                self.emit(EngineEvent::CallStateUpdate { room_id, call_id, state, peer, reason });
            }
            // Our call, still ringing: its first update names it, if we missed it.
            (true, false, false) => {
                let (call_id, state, reason) = (c.call_id, CallPhase::Ringing, ErrorCode::OK);
                self.emit(EngineEvent::CallStateUpdate { room_id, call_id, state, peer, reason });
            }
            _ => {}
        }
    }

    /// Every publish and play ends (logout, kick, failure), with its event, and so does
    /// every call.
    pub(super) fn stop_all(&mut self, code: ErrorCode) {
        self.end_calls(code);
        for (_, p) in std::mem::take(&mut self.publishes) {
            if p.state != PublisherState::NoPublish {
                self.stream_change(StreamChange::Publisher {
                    stream_id: p.stream_id,
                    state: PublisherState::NoPublish,
                    error_code: code,
                });
            }
            if let Some(c) = p.cmd {
                self.done(c, Err(EngineError::Rejected(code)));
            }
        }
        for (stream_id, p) in std::mem::take(&mut self.plays) {
            if p.state != PlayerState::NoPlay {
                self.stream_change(StreamChange::Player { stream_id, state: PlayerState::NoPlay, error_code: code });
            }
            if let Some(c) = p.cmd {
                self.done(c, Err(EngineError::Rejected(code)));
            }
        }
    }
}

/// Login/resume refusals worth retrying (the others are final).
pub(super) fn retryable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::LOGIN_RATE_LIMITED
            | ErrorCode::SERVER_SHUTTING_DOWN
            | ErrorCode::SERVER_INTERNAL
            | ErrorCode::RATE_LIMITED
    )
}
