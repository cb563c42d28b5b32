//! Admission: the one way a session comes to be (a signalling login, or a WHIP publisher
//! whose user is not logged in), its resume, its renewed token, and the ways it ends (kicked,
//! logged out, timed out, its app removed).

use super::refusal::{Refusal, RefusalKind as K};
use super::sessions::Session;
use super::*;
use crate::server::webhooks::HookEvent;

/// A session to admit: who, where, with what claims, and on which connection (none for a
/// WHIP publisher).
pub(super) struct Admission {
    pub(super) app_id: u32,
    pub(super) room_id: String,
    pub(super) user: UserInfo,
    pub(super) claims: Claims,
    pub(super) conn: Option<ConnId>,
    /// Told of other users coming and going.
    pub(super) notify: bool,
}

impl Registry {
    /// Admits a session whose credentials checked out: the room must have space (the user's
    /// own earlier session there does not count), an earlier session of the same user is
    /// kicked, and the room's members that asked are told the user joined. The new
    /// session's ID.
    pub(super) fn admit(&mut self, a: Admission, now: Now) -> Result<String, Refusal> {
        self.observe(now);
        if !self.apps.contains(a.app_id) {
            self.inconsistent("admit: the app vanished");
            return Err(Refusal::internal());
        }
        let previous = self.store.user(a.app_id, &a.user.user_id).map(str::to_string);
        let same_room = previous.as_ref().and_then(|p| self.sessions.get(p)).is_some_and(|s| s.room_id == a.room_id);
        let occupied = self.rooms.occupants(a.app_id, &a.room_id).saturating_sub(usize::from(same_room));
        if occupied >= self.limits.max_users_per_room {
            return Err(Refusal::new(K::Forbidden, ErrorCode::ROOM_FULL, "the room is full"));
        }
        if let Some(prev) = previous {
            self.kick_session(&prev, ErrorCode::KICKED_DUPLICATE_LOGIN, "the same user ID logged in elsewhere", now);
        }
        let sid = random_hex(16);
        let broadcasts = match a.conn {
            Some(_) => Bucket::new(self.limits.broadcasts_per_sec, self.limits.broadcast_burst, now.at),
            None => Bucket::new(0.0, 0.0, now.at),
        };
        let Admission { app_id, room_id, user, claims, conn, notify } = a;
        self.store.claim_user(app_id, &user.user_id, &sid);
        let others = self.rooms.join(app_id, &room_id, &sid);
        let session = Session::new(app_id, room_id.clone(), user.clone(), claims, conn, notify, broadcasts, now.at);
        self.sessions.insert(sid.clone(), session);
        if let Some(c) = conn {
            self.conns.bind(c, &sid);
        }
        if others.is_empty() {
            self.hook(app_id, &room_id, HookEvent::RoomStarted);
        }
        self.hook(app_id, &room_id, HookEvent::UserJoined { user: user.clone() });
        for other in others {
            self.send_user_update(&other, &room_id, UpdateType::Add, &user, ErrorCode::OK);
        }
        Ok(sid)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn login(
        &mut self,
        conn: ConnId,
        req: u64,
        version: u32,
        app_id: u32,
        token: &str,
        room_id: String,
        user: UserInfo,
        notify: bool,
        now: Now,
    ) {
        if version != PROTOCOL_VERSION {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::UNSUPPORTED_VERSION,
                format!("protocol version {version} is not supported; use {PROTOCOL_VERSION}"),
            );
        }
        let checked = ids::check_room_id(&room_id)
            .and_then(|_| ids::check_user_id(&user.user_id))
            .and_then(|_| ids::check_user_name(&user.user_name));
        if let Err(code) = checked {
            return self.fail(conn, Some(req), code, "invalid room ID, user ID or user name");
        }
        if !self.apps.contains(app_id) {
            return self.fail(conn, Some(req), ErrorCode::APP_ID_MISMATCH, format!("unknown app_id {app_id}"));
        }
        // Credentials first (one HMAC, cheap): refused logins are limited on their own, so a
        // flood of garbage tokens cannot lock out the devices whose tokens are good.
        let claims = match self.apps.verify_login(app_id, token, &user.user_id, &room_id, now.unix_secs()) {
            Ok(c) => c,
            Err(code) => {
                let peer = self.conns.peer(conn);
                if !self.conns.refused_from(peer, now.at) || !self.apps.take_refused(app_id, now.at) {
                    return self.fail(
                        conn,
                        Some(req),
                        ErrorCode::LOGIN_RATE_LIMITED,
                        "too many refused logins; retry later",
                    );
                }
                // Logged only within the per-address budget above, so a flood cannot fill the journal.
                tracing::info!(callbox_event = "login_refused", error_code = code.0, app_id, room_id = %room_id,
                    user_id = %user.user_id, peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                    "login refused: {}", code.name());
                return self.fail(conn, Some(req), code, "token rejected");
            }
        };
        if let Err(code) = self.apps.check_not_revoked(&claims) {
            return self.fail(conn, Some(req), code, "the device key of this token was revoked");
        }
        if !self.apps.take_login(app_id, now.at) {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::LOGIN_RATE_LIMITED,
                "too many logins for this app; retry later",
            );
        }
        let admission =
            Admission { app_id, room_id: room_id.clone(), user: user.clone(), claims, conn: Some(conn), notify };
        let session_id = match self.admit(admission, now) {
            Ok(sid) => sid,
            Err(r) => return self.refuse(conn, Some(req), r),
        };
        self.metrics.logins += 1;
        let peer = self.conns.peer(conn).map(|p| p.to_string()).unwrap_or_default();
        tracing::info!(callbox_event = "login", app_id, room_id = %room_id, user_id = %user.user_id, session = %short(&session_id), %peer, "user logged in");
        let room = self.snapshot(&session_id);
        let resume_token = self.sessions.get(&session_id).map(|s| s.resume_token.clone()).unwrap_or_default();
        self.send(
            conn,
            ServerMsg::LoginOk {
                req,
                session_id,
                resume_token,
                room,
                heartbeat_ms: self.heartbeat_ms,
                grace_secs: self.grace.as_secs(),
                server_time_ms: now.unix_ms,
                ice_servers: self.turn.ice_servers_for(&user.user_id, now.unix_secs()),
            },
        );
    }

    pub(super) fn resume(&mut self, conn: ConnId, req: u64, version: u32, session_id: &str, token: &str, now: Now) {
        if version != PROTOCOL_VERSION {
            return self.fail(conn, Some(req), ErrorCode::UNSUPPORTED_VERSION, "unsupported protocol version");
        }
        let valid = self.sessions.get(session_id).is_some_and(|s| s.resumes_with(token));
        if !valid {
            if let Some(code) = self.sessions.tombstone_of(session_id) {
                self.send(conn, ServerMsg::Kicked { code, message: "this session was kicked out".into() });
                self.out.push_back(Output::Close(conn));
                return;
            }
            return self.fail(conn, Some(req), ErrorCode::SESSION_EXPIRED, "session not found; log in again");
        }
        if self.sessions.get(session_id).is_some_and(|s| s.claims.exp <= now.unix_secs()) {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::TOKEN_EXPIRED,
                "the session's token expired; log in again with a new token",
            );
        }
        let Some(s) = self.sessions.get_mut(session_id) else {
            return self.internal(conn, Some(req), "resume: the session vanished");
        };
        let old = s.conn.replace(conn);
        s.last_seen = now.at;
        let backlog = s.take_backlog();
        let user_id = s.user.user_id.clone();
        tracing::info!(callbox_event = "resume", user_id = %s.user.user_id, room_id = %s.room_id, session = %short(session_id), "session resumed");
        if let Some(old) = old {
            self.conns.unbind(old);
            self.out.push_back(Output::Close(old));
        }
        self.conns.bind(conn, session_id);
        self.metrics.resumes += 1;
        let room = self.snapshot(session_id);
        let ice_servers = self.turn.ice_servers_for(&user_id, now.unix_secs());
        self.send(conn, ServerMsg::Resumed { req, room, ice_servers });
        for m in backlog {
            self.send(conn, m);
        }
    }

    pub(super) fn renew_token(&mut self, conn: ConnId, req: u64, sid: &str, token: &str, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let checked = self
            .apps
            .verify_login(s.app_id, token, &s.user.user_id, &s.room_id, now.unix_secs())
            .and_then(|c| self.apps.check_not_revoked(&c).map(|_| c))
            .and_then(
                |c| if auth::renewal_within(&s.claims, &c) { Ok(c) } else { Err(ErrorCode::RENEW_TOKEN_ESCALATES) },
            );
        match checked {
            Ok(claims) => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return self.internal(conn, Some(req), "renew: the session vanished");
                };
                s.claims = claims;
                s.warned_expiry = false;
                s.told_expired = false;
                self.send(conn, ServerMsg::Ok { req });
            }
            Err(code) => {
                let code = match code {
                    ErrorCode::TOKEN_USER_MISMATCH | ErrorCode::TOKEN_ROOM_MISMATCH | ErrorCode::APP_ID_MISMATCH => {
                        ErrorCode::RENEW_TOKEN_MISMATCH
                    }
                    c => c,
                };
                self.fail(conn, Some(req), code, "renewed token rejected; the old one stays in force")
            }
        }
    }

    /// A session whose token has expired may keep what it has but start nothing new.
    pub(super) fn token_expired(&self, sid: &str, now: Now) -> bool {
        self.sessions.get(sid).is_some_and(|s| !s.pinned && s.claims.exp <= now.unix_secs())
    }

    pub(super) fn kick_session(&mut self, sid: &str, code: ErrorCode, why: &str, now: Now) {
        if let Some(s) = self.sessions.get(sid) {
            tracing::info!(callbox_event = "kick", user_id = %s.user.user_id, room_id = %s.room_id, error_code = code.0, "{why}");
            if let Some(c) = s.conn {
                self.send(c, ServerMsg::Kicked { code, message: why.to_string() });
                self.out.push_back(Output::Close(c));
                self.conns.unbind(c);
            }
        }
        self.metrics.kicks += 1;
        self.sessions.tombstone(sid, code, now.at);
        self.remove_session(sid, code);
    }

    /// Removes a session: its streams (Delete to the room, PlayStopped to their players), then
    /// its user (Delete to sessions that asked), then the room if it is empty.
    pub(super) fn remove_session(&mut self, sid: &str, reason: ErrorCode) {
        if self.sessions.get(sid).is_none() {
            return;
        }
        self.calls_session_gone(sid, reason);
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let streams: Vec<String> = s.published.keys().cloned().collect();
        for stream in streams {
            self.unpublish(sid, &stream, reason);
        }
        let Some(s) = self.sessions.remove(sid) else {
            return self.inconsistent("remove: the session vanished while its streams ended");
        };
        self.resources.forget_session(sid);
        self.media_out(MediaOut::EndSession(sid.to_string()));
        if let Some(c) = s.conn
            && self.conns.session(c) == Some(sid)
        {
            self.conns.unbind(c);
        }
        self.store.release_user(s.app_id, &s.user.user_id, sid);
        let (others, removed) = self.rooms.leave(s.app_id, &s.room_id, sid);
        self.hook(s.app_id, &s.room_id, HookEvent::UserLeft { user_id: s.user.user_id.clone(), reason });
        if removed {
            tracing::info!(callbox_event = "room_removed", room_id = %s.room_id, "room empty; removed");
            self.hook(s.app_id, &s.room_id, HookEvent::RoomFinished);
        }
        for other in others {
            self.send_user_update(&other, &s.room_id, UpdateType::Delete, &s.user, reason);
        }
    }
}
