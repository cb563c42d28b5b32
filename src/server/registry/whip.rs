//! WHIP and WHEP in the registry. A WHIP publisher becomes a session without a connection
//! (user `whip-<stream_id>`, pinned: no heartbeat) that publishes one stream, so members see
//! the user and the stream come and go as for any device. A WHEP player needs no session:
//! the registry only checks its token and that the stream is published in the room.

use super::*;
use crate::rtc::sfu::StreamKey;

/// Why an HTTP publish or play is refused: the HTTP status, the callbox code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401, 403, 404 or 409.
    pub status: u16,
    /// The callbox error code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

fn refuse(status: u16, code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

impl Registry {
    /// Checks a bearer token for `app_id`/`room_id` with `privilege` and `stream_id` allowed.
    fn http_claims(
        &self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        privilege: &str,
        now: Now,
    ) -> Result<Claims, Refusal> {
        ids::check_room_id(room_id).map_err(|c| refuse(400, c, "invalid room ID"))?;
        ids::check_stream_id(stream_id).map_err(|c| refuse(400, c, "invalid stream ID"))?;
        let app = self
            .apps
            .get(&app_id)
            .ok_or_else(|| refuse(404, ErrorCode::APP_ID_MISMATCH, format!("unknown app_id {app_id}")))?;
        let claims = auth::verify(&app.key, token, now.unix_secs()).map_err(|c| {
            let why = if c == ErrorCode::TOKEN_EXPIRED { "token expired" } else { "token invalid" };
            refuse(401, c, why)
        })?;
        if claims.app_id != app_id {
            return Err(refuse(401, ErrorCode::APP_ID_MISMATCH, "token is for another app"));
        }
        if claims.room_id.as_deref().is_some_and(|r| r != room_id) {
            return Err(refuse(403, ErrorCode::TOKEN_ROOM_MISMATCH, "token is for another room"));
        }
        if !claims.has(privilege) {
            let code =
                if privilege == "publish" { ErrorCode::NO_PUBLISH_PRIVILEGE } else { ErrorCode::NO_PLAY_PRIVILEGE };
            return Err(refuse(403, code, format!("token lacks the {privilege} privilege")));
        }
        if !claims.allows_stream(stream_id) {
            return Err(refuse(403, ErrorCode::STREAM_NOT_ALLOWED, "token does not allow this stream ID"));
        }
        Ok(claims)
    }

    /// WHIP: a publisher of `stream_id` in `room_id` joins as user `whip-<stream_id>`.
    /// Returns its session ID (the resource) and the stream's key for the media relay.
    pub fn whip_start(
        &mut self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        now: Now,
    ) -> Result<(String, StreamKey), Refusal> {
        if !self.media_enabled {
            return Err(refuse(503, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media"));
        }
        let claims = self.http_claims(app_id, room_id, stream_id, token, "publish", now)?;
        let user = UserInfo { user_id: format!("whip-{stream_id}"), user_name: format!("WHIP {stream_id}") };
        ids::check_user_id(&user.user_id).map_err(|c| refuse(400, c, "stream ID too long for a WHIP user"))?;
        let app = self.apps.get_mut(&app_id).expect("checked");
        if app.streams.contains_key(stream_id) || app.users.contains_key(&user.user_id) {
            return Err(refuse(409, ErrorCode::STREAM_ID_IN_USE, "stream ID already published"));
        }
        let occupied = app.rooms.get(room_id).map(|r| r.sessions.len()).unwrap_or(0);
        if occupied >= self.limits.max_users_per_room {
            return Err(refuse(403, ErrorCode::ROOM_FULL, "the room is full"));
        }
        let sid = random_hex(16);
        app.users.insert(user.user_id.clone(), sid.clone());
        let room = app
            .rooms
            .entry(room_id.to_string())
            .or_insert_with(|| Room { sessions: BTreeSet::new(), extra_info: BTreeMap::new() });
        let others: Vec<String> = room.sessions.iter().cloned().collect();
        room.sessions.insert(sid.clone());
        self.sessions.insert(
            sid.clone(),
            Session {
                resume_token: random_hex(16),
                app_id,
                room_id: room_id.to_string(),
                user: user.clone(),
                claims,
                notify: false,
                conn: None,
                last_seen: now.at,
                quality: QualityLevel::Unknown,
                published: BTreeMap::new(),
                subscriptions: BTreeSet::new(),
                warned_expiry: true,
                broadcasts: Bucket::new(0.0, 0.0, now.at),
                backlog: VecDeque::new(),
                pinned: true,
            },
        );
        tracing::info!(app_id, room_id, user_id = %user.user_id, "WHIP publisher joined");
        for other in others {
            self.send_user_update(&other, room_id, UpdateType::Add, &user, ErrorCode::OK);
        }
        self.announce_stream(&sid, stream_id.to_string(), String::new());
        let key = StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() };
        Ok((sid, key))
    }

    /// WHIP DELETE (or its media gone): the stream and the user leave the room. False if
    /// `sid` is not a WHIP session.
    pub fn whip_end(&mut self, sid: &str) -> bool {
        if !self.sessions.get(sid).is_some_and(|s| s.pinned) {
            return false;
        }
        tracing::info!(session = %short(sid), "WHIP publisher left");
        self.remove_session(sid, ErrorCode::USER_LOGGED_OUT);
        true
    }

    /// WHEP: may this token play `stream_id`, published in `room_id`?
    pub fn whep_check(
        &self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        now: Now,
    ) -> Result<StreamKey, Refusal> {
        if !self.media_enabled {
            return Err(refuse(503, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media"));
        }
        self.http_claims(app_id, room_id, stream_id, token, "play", now)?;
        let publisher = self.apps.get(&app_id).and_then(|a| a.streams.get(stream_id));
        if publisher.and_then(|sid| self.sessions.get(sid)).is_none_or(|s| s.room_id != room_id) {
            return Err(refuse(404, ErrorCode::STREAM_NOT_FOUND, "stream not published in this room"));
        }
        Ok(StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() })
    }
}

impl Registry {
    /// Every WHIP session with its age.
    pub fn whip_sessions(&self, now: Instant) -> Vec<(String, Duration)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.pinned)
            .map(|(sid, s)| (sid.clone(), now.saturating_duration_since(s.last_seen)))
            .collect()
    }
}
