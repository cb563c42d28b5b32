//! Streams: publishing (app-wide unique stream IDs, held in the shared store), playing
//! (subscriptions, which wait for a stream not published yet), and what each tells the room.

use super::*;
use crate::server::webhooks::HookEvent;

impl Registry {
    pub(super) fn publish(&mut self, conn: ConnId, req: u64, sid: &str, stream_id: String, stream: Published) {
        if let Err(code) = ids::check_stream_id(&stream_id) {
            return self.fail(conn, Some(req), code, "invalid stream ID");
        }
        if stream.video == TrackState::Absent && stream.audio == TrackState::Absent {
            return self.fail(conn, Some(req), ErrorCode::STREAM_STATE_INVALID, "a stream needs video or audio");
        }
        if stream.extra_info.len() > EXTRA_VALUE_MAX {
            return self.fail(conn, Some(req), ErrorCode::EXTRA_INFO_TOO_LARGE, "stream extra info over 1024 bytes");
        }
        let Some(s) = self.sessions.get(sid) else {
            return self.internal(conn, Some(req), "publish: no session behind the connection");
        };
        if !s.claims.has(auth::Privilege::Publish) {
            return self.fail(conn, Some(req), ErrorCode::NO_PUBLISH_PRIVILEGE, "token lacks the publish privilege");
        }
        if !s.claims.allows_stream(&stream_id) {
            return self.fail(conn, Some(req), ErrorCode::STREAM_NOT_ALLOWED, "token does not allow this stream ID");
        }
        if s.published.contains_key(&stream_id) {
            // Published again (after a resume): what it carries now counts, told as a switch.
            let _ = self.apply_tracks(sid, &stream_id, stream.video, stream.audio);
            return self.send(conn, ServerMsg::Ok { req });
        }
        if s.published.len() >= self.limits.max_streams_per_user {
            return self.fail(conn, Some(req), ErrorCode::TOO_MANY_STREAMS, "too many streams for one user");
        }
        if self.store.stream(s.app_id, &stream_id).is_some() {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::STREAM_ID_IN_USE,
                "stream ID already published by another user",
            );
        }
        self.send(conn, ServerMsg::Ok { req });
        self.announce_stream(sid, stream_id, stream);
    }

    /// The publisher switched its camera or microphone: recorded (a later snapshot shows
    /// it) and told to the room. A track the stream was published without stays absent.
    pub(super) fn set_stream_state(
        &mut self,
        conn: ConnId,
        req: u64,
        sid: &str,
        stream_id: &str,
        video: TrackState,
        audio: TrackState,
    ) {
        match self.apply_tracks(sid, stream_id, video, audio) {
            Ok(()) => self.send(conn, ServerMsg::Ok { req }),
            Err((code, why)) => self.fail(conn, Some(req), code, why),
        }
    }

    /// Records a published stream's tracks and tells the room when they changed.
    fn apply_tracks(
        &mut self,
        sid: &str,
        stream_id: &str,
        video: TrackState,
        audio: TrackState,
    ) -> Result<(), (ErrorCode, &'static str)> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Err((ErrorCode::SERVER_INTERNAL, "stream state: no session behind the connection"));
        };
        let Some(p) = s.published.get_mut(stream_id) else {
            return Err((ErrorCode::MEDIA_NOT_PUBLISHING, "this session does not publish that stream"));
        };
        let absent = |was: TrackState, now: TrackState| (was == TrackState::Absent) != (now == TrackState::Absent);
        if absent(p.video, video) || absent(p.audio, audio) {
            return Err((ErrorCode::STREAM_STATE_INVALID, "a track's presence is fixed when the stream is published"));
        }
        if (p.video, p.audio) == (video, audio) {
            return Ok(());
        }
        (p.video, p.audio) = (video, audio);
        let room_id = s.room_id.clone();
        tracing::info!(callbox_event = "stream_state", room_id = %room_id, stream_id, user_id = %s.user.user_id,
            video = video.as_str(), audio = audio.as_str(), "stream state");
        let msg = ServerMsg::StreamStateUpdate { room_id, stream_id: stream_id.to_string(), video, audio };
        for other in self.room_others(sid) {
            self.send_session(&other, msg.clone());
        }
        Ok(())
    }

    /// Records an accepted publish and tells the room (StreamUpdate Add, PlayAvailable to
    /// those waiting for it).
    pub(super) fn announce_stream(&mut self, sid: &str, stream_id: String, stream: Published) {
        let Some(s) = self.sessions.get(sid) else {
            return self.inconsistent("announce: the publishing session vanished");
        };
        if !self.store.claim_stream(s.app_id, &stream_id, sid) {
            return self.inconsistent("announce: the stream ID was taken meanwhile");
        }
        let (room_id, info_app) = (s.room_id.clone(), s.app_id);
        let info = s.stream_info(&stream_id, &stream);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.published.insert(stream_id.clone(), stream);
        }
        tracing::info!(callbox_event = "stream_update", room_id = %room_id, stream_id = %stream_id, user_id = %info.user.user_id, "stream published");
        let published = HookEvent::StreamPublished { user_id: info.user.user_id.clone(), stream_id: stream_id.clone() };
        self.hook(info_app, &room_id, published);
        for other in self.room_others(sid) {
            let subscribed = self.sessions.get(&other).is_some_and(|o| o.subscriptions.contains(&stream_id));
            self.send_session(
                &other,
                ServerMsg::StreamUpdate {
                    room_id: room_id.clone(),
                    update: UpdateType::Add,
                    streams: vec![info.clone()],
                    reason: ErrorCode::OK,
                },
            );
            if subscribed {
                self.send_session(&other, ServerMsg::PlayAvailable { stream_id: stream_id.clone() });
            }
        }
    }

    pub(super) fn unpublish(&mut self, sid: &str, stream_id: &str, reason: ErrorCode) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(p) = s.published.remove(stream_id) else {
            return;
        };
        let info = s.stream_info(stream_id, &p);
        let (room_id, app_id) = (s.room_id.clone(), s.app_id);
        self.store.release_stream(app_id, stream_id, sid);
        tracing::info!(callbox_event = "stream_update", room_id = %room_id, stream_id = %stream_id, error_code = reason.0, "stream deleted");
        let user_id = info.user.user_id.clone();
        self.hook(app_id, &room_id, HookEvent::StreamUnpublished { user_id, stream_id: stream_id.to_string(), reason });
        if let Some(key) = self.stream_key(sid, stream_id) {
            // The relay closes the stream's publisher and players, WHIP and WHEP ones included.
            self.resources.forget_stream(&key);
            self.media_out(MediaOut::EndStream(key));
        }
        for other in self.room_others(sid) {
            self.send_session(
                &other,
                ServerMsg::StreamUpdate {
                    room_id: room_id.clone(),
                    update: UpdateType::Delete,
                    streams: vec![info.clone()],
                    reason,
                },
            );
            if self.sessions.get_mut(&other).is_some_and(|o| o.subscriptions.remove(stream_id)) {
                self.send_session(
                    &other,
                    ServerMsg::PlayStopped { stream_id: stream_id.to_string(), code: ErrorCode::STREAM_DELETED },
                );
            }
        }
    }

    pub(super) fn play(&mut self, conn: ConnId, req: u64, sid: &str, stream_id: String) {
        if let Err(code) = ids::check_stream_id(&stream_id) {
            return self.fail(conn, Some(req), code, "invalid stream ID");
        }
        let Some(s) = self.sessions.get(sid) else {
            return self.internal(conn, Some(req), "play: no session behind the connection");
        };
        if !s.claims.has(auth::Privilege::Play) {
            return self.fail(conn, Some(req), ErrorCode::NO_PLAY_PRIVILEGE, "token lacks the play privilege");
        }
        if !s.claims.allows_stream(&stream_id) {
            return self.fail(conn, Some(req), ErrorCode::STREAM_NOT_ALLOWED, "token does not allow this stream ID");
        }
        let published_here = self.published_in_room(sid, &stream_id);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.subscriptions.insert(stream_id);
        }
        if published_here {
            self.send(conn, ServerMsg::Ok { req });
        } else {
            self.fail(
                conn,
                Some(req),
                ErrorCode::STREAM_NOT_FOUND,
                "stream not published in this room (yet); waiting for it",
            );
        }
    }

    pub(super) fn stop_play(&mut self, conn: ConnId, req: u64, sid: &str, stream_id: String) {
        if let Some(s) = self.sessions.get_mut(sid)
            && s.subscriptions.remove(&stream_id)
            && let Some(key) = self.stream_key(sid, &stream_id)
        {
            self.media_out(MediaOut::EndPlay(sid.to_string(), key));
        }
        self.send(conn, ServerMsg::Ok { req });
    }

    /// Whether `stream_id` is published (by anyone) in session `sid`'s room.
    pub(super) fn published_in_room(&self, sid: &str, stream_id: &str) -> bool {
        let Some(s) = self.sessions.get(sid) else { return false };
        self.store
            .stream(s.app_id, stream_id)
            .and_then(|owner| self.sessions.get(owner))
            .is_some_and(|o| o.room_id == s.room_id)
    }
}
