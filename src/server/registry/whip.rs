//! WHIP and WHEP in the registry. A WHIP publisher publishes as its token's own user (a `*`
//! token cannot publish): when that user is logged in over signalling in the same room, the
//! stream joins that session; otherwise the user joins as a session without a connection
//! (pinned: no heartbeat), so members see the user and the stream come and go as for any
//! device. Each WHIP publish is a resource, ended by DELETE or by its media going away. A
//! WHEP player needs no session: the registry only checks its token and that the stream is
//! published in the room. Both are checked once, at their POST.

use super::*;
use crate::rtc::sfu::StreamKey;

impl Registry {
    /// Checks a bearer token for `app_id`/`room_id` with `privilege` and `stream_id` allowed.
    fn http_claims(
        &self,
        app_id: u32,
        room_id: &str,
        stream_id: &str,
        token: &str,
        privilege: crate::auth::Privilege,
        now: Now,
    ) -> Result<Claims, Refusal> {
        ids::check_room_id(room_id).map_err(|c| refuse(400, c, "invalid room ID"))?;
        ids::check_stream_id(stream_id).map_err(|c| refuse(400, c, "invalid stream ID"))?;
        let app = self
            .apps
            .get(&app_id)
            .ok_or_else(|| refuse(404, ErrorCode::APP_ID_MISMATCH, format!("unknown app_id {app_id}")))?;
        let claims = auth::verify(&app.key, token, now.unix_secs(), self.limits.max_token_secs).map_err(|c| {
            let why = match c {
                ErrorCode::TOKEN_EXPIRED => "token expired",
                ErrorCode::TOKEN_NOT_YET_VALID => "token not valid yet",
                ErrorCode::TOKEN_LIFETIME_TOO_LONG => "token lifetime longer than the server allows",
                _ => "token invalid",
            };
            refuse(401, c, why)
        })?;
        self.check_not_revoked(&claims).map_err(|c| refuse(401, c, "the device key of this token was revoked"))?;
        if claims.app_id != app_id {
            return Err(refuse(401, ErrorCode::APP_ID_MISMATCH, "token is for another app"));
        }
        if claims.room_id.as_deref().is_some_and(|r| r != room_id) {
            return Err(refuse(403, ErrorCode::TOKEN_ROOM_MISMATCH, "token is for another room"));
        }
        if !claims.has(privilege) {
            let code = if privilege == crate::auth::Privilege::Publish {
                ErrorCode::NO_PUBLISH_PRIVILEGE
            } else {
                ErrorCode::NO_PLAY_PRIVILEGE
            };
            return Err(refuse(403, code, format!("token lacks the {privilege} privilege")));
        }
        if !claims.allows_stream(stream_id) {
            return Err(refuse(403, ErrorCode::STREAM_NOT_ALLOWED, "token does not allow this stream ID"));
        }
        Ok(claims)
    }

    /// WHIP: a publisher of `stream_id` in `room_id`, as the token's user. Returns the
    /// resource ID and the stream's key for the media relay.
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
        let claims = self.http_claims(app_id, room_id, stream_id, token, crate::auth::Privilege::Publish, now)?;
        if !claims.has(crate::auth::Privilege::Login) {
            return Err(refuse(403, ErrorCode::NO_LOGIN_PRIVILEGE, "WHIP joins the room: the token needs login"));
        }
        if claims.user_id == "*" {
            return Err(refuse(
                403,
                ErrorCode::TOKEN_USER_MISMATCH,
                "WHIP publishes as the token's user; * is not one",
            ));
        }
        ids::check_user_id(&claims.user_id).map_err(|c| refuse(400, c, "the token's user ID is not valid"))?;
        if !self.apps.contains_key(&app_id) {
            self.inconsistent("whip: the app vanished");
            return Err(refuse(500, ErrorCode::SERVER_INTERNAL, "internal error; retry"));
        }
        if self.store.stream(app_id, stream_id).is_some() {
            return Err(refuse(409, ErrorCode::STREAM_ID_IN_USE, "stream ID already published"));
        }
        let user = UserInfo { user_id: claims.user_id.clone(), user_name: claims.user_id.clone() };
        let resource = random_hex(16);
        let existing = self.store.user(app_id, &user.user_id).map(str::to_string);
        let (sid, attached) = match existing {
            Some(sid) => {
                let Some(s) = self.sessions.get(&sid) else {
                    self.inconsistent("whip: the user's session vanished");
                    return Err(refuse(500, ErrorCode::SERVER_INTERNAL, "internal error; retry"));
                };
                if s.room_id != room_id {
                    return Err(refuse(409, ErrorCode::TOKEN_ROOM_MISMATCH, "the user is in another room"));
                }
                if s.published.len() >= self.limits.max_streams_per_user {
                    return Err(refuse(403, ErrorCode::TOO_MANY_STREAMS, "too many streams for one user"));
                }
                tracing::info!(callbox_event = "whip", app_id, room_id, user_id = %user.user_id, stream_id, "WHIP stream joins the user's session");
                (sid, true)
            }
            None => (self.whip_session(app_id, room_id, user, claims, now)?, false),
        };
        self.announce_stream(&sid, stream_id.to_string(), String::new());
        self.whip.insert(
            resource.clone(),
            WhipResource { session: sid, stream_id: stream_id.to_string(), attached, since: now.at },
        );
        let key = StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() };
        Ok((resource, key))
    }

    /// A session without a connection for a WHIP publisher whose user is not logged in.
    fn whip_session(
        &mut self,
        app_id: u32,
        room_id: &str,
        user: UserInfo,
        claims: Claims,
        now: Now,
    ) -> Result<String, Refusal> {
        let Some(app) = self.apps.get_mut(&app_id) else {
            self.inconsistent("whip: the app vanished");
            return Err(refuse(500, ErrorCode::SERVER_INTERNAL, "internal error; retry"));
        };
        let occupied = app.rooms.get(room_id).map(|r| r.sessions.len()).unwrap_or(0);
        if occupied >= self.limits.max_users_per_room {
            return Err(refuse(403, ErrorCode::ROOM_FULL, "the room is full"));
        }
        let sid = random_hex(16);
        self.store.claim_user(app_id, &user.user_id, &sid);
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
                told_expired: true,
                broadcasts: Bucket::new(0.0, 0.0, now.at),
                backlog: VecDeque::new(),
                pinned: true,
            },
        );
        tracing::info!(callbox_event = "whip", app_id, room_id, user_id = %user.user_id, "WHIP publisher joined");
        for other in others {
            self.send_user_update(&other, room_id, UpdateType::Add, &user, ErrorCode::OK);
        }
        Ok(sid)
    }

    /// WHIP DELETE (or its media gone): the stream leaves the room, and the user too when it
    /// joined for this stream. False if `resource` is not a WHIP resource.
    pub fn whip_end(&mut self, resource: &str) -> bool {
        let Some(r) = self.whip.remove(resource) else {
            return false;
        };
        tracing::info!(callbox_event = "whip", resource = %short(resource), stream_id = %r.stream_id, "WHIP publisher left");
        if r.attached {
            self.unpublish(&r.session, &r.stream_id, ErrorCode::OK);
        } else {
            self.remove_session(&r.session, ErrorCode::USER_LOGGED_OUT);
        }
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
        self.http_claims(app_id, room_id, stream_id, token, crate::auth::Privilege::Play, now)?;
        let publisher = self.store.stream(app_id, stream_id);
        if publisher.and_then(|sid| self.sessions.get(sid)).is_none_or(|s| s.room_id != room_id) {
            return Err(refuse(404, ErrorCode::STREAM_NOT_FOUND, "stream not published in this room"));
        }
        Ok(StreamKey { app_id, room_id: room_id.to_string(), stream_id: stream_id.to_string() })
    }
}

/// One WHIP publish.
pub(crate) struct WhipResource {
    /// The session publishing the stream.
    session: String,
    stream_id: String,
    /// The stream joined a signalling session (the user stays when it ends).
    attached: bool,
    since: Instant,
}

/// The media relay's session name of a WHIP resource.
pub fn whip_media_session(resource: &str) -> String {
    format!("whip-{resource}")
}

impl Registry {
    /// Every WHIP resource with its age.
    pub fn whip_sessions(&self, now: Instant) -> Vec<(String, Duration)> {
        self.whip.iter().map(|(id, r)| (id.clone(), now.saturating_duration_since(r.since))).collect()
    }

    /// Forgets the WHIP resources of a session that is gone.
    pub(super) fn forget_whip_of(&mut self, sid: &str) {
        self.whip.retain(|_, r| r.session != sid);
    }
}
