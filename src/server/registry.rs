//! The room registry: every app, room, user, session, stream and subscription of one server,
//! as a sans-IO state machine. The WebSocket driver feeds it messages, connects, disconnects
//! and ticks with the time, and carries out what [`Registry::poll_output`] returns.
//!
//! A session outlives its connection: when the connection drops, the session is detached and
//! kept for the grace period, so a client that comes back with `resume` continues with no
//! change seen by the others. Silence for longer than the grace period deletes its user and
//! streams with the reason HEARTBEAT_TIMEOUT.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;

mod admin;
#[cfg(test)]
mod invariants;
mod keys;
mod media;
mod reload;
mod room;
mod store;
mod whip;

pub use admin::{RoomView, UserView};
pub use keys::{IssuedToken, NewDeviceKey};
pub use media::MediaOut;
pub use store::{MemoryStore, SharedStore};
pub use whip::whip_media_session;

use super::config::{Limits, ServerConfig};
use super::limits::Bucket;
use super::metrics::Metrics;
use crate::auth::{self, Claims};
use crate::proto::{
    ClientMsg, ErrorCode, ExtraInfo, PROTOCOL_VERSION, QualityLevel, RoomSnapshot, ServerMsg, StreamInfo, UpdateType,
    UserInfo, UserQuality, ids,
};

/// Identifies one WebSocket connection, chosen by the driver.
pub type ConnId = u64;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a message on a connection.
    Send(ConnId, ServerMsg),
    /// Close a connection after what was queued for it.
    Close(ConnId),
    /// Work for the media relay.
    Media(MediaOut),
    /// The device keys changed: store this (the state file's new content).
    SaveDeviceKeys(String),
}

/// The time, as the registry sees it: monotonic for timers, wall clock for tokens.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic instant.
    pub at: Instant,
    /// Unix time in milliseconds.
    pub unix_ms: u64,
}

impl Now {
    /// The system's current time.
    pub fn system() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Now { at: Instant::now(), unix_ms }
    }
    fn unix_secs(&self) -> u64 {
        self.unix_ms / 1000
    }
}

/// Extra info key limit, bytes.
const EXTRA_KEY_MAX: usize = 128;
/// Extra info value limit, bytes.
const EXTRA_VALUE_MAX: usize = 1024;
/// Broadcast message limit, bytes.
const BROADCAST_MAX: usize = 1024;
/// Warn this long before a token expires.
const TOKEN_WARN_SECS: u64 = 30;
/// Network quality is pushed to rooms this often.
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);
/// A kicked session is remembered this long, so it is told "kicked" if it tries to resume.
const TOMBSTONE_TTL: Duration = Duration::from_secs(600);
/// Messages kept for a detached session and replayed on resume.
const DETACHED_BACKLOG: usize = 64;
/// Refused logins (bad, expired or foreign tokens) one source address may make per second,
/// and in a burst; then 1002005. A device with a good token never draws on it.
const REFUSED_PER_IP_PER_SEC: f64 = 2.0;
const REFUSED_PER_IP_BURST: f64 = 20.0;
/// Source addresses remembered for that at most (then refilled ones are forgotten).
const REFUSED_TABLE_MAX: usize = 10_000;

/// Why an HTTP request (WHIP/WHEP, admin, token) is refused: the HTTP status, the callbox code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 400, 401, 403, 404, 409, 429, or 500 for an internal error.
    pub status: u16,
    /// The callbox error code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

pub(crate) fn refuse(status: u16, code: ErrorCode, message: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.into() }
}

struct Conn {
    session: Option<String>,
    bucket: Bucket,
    /// Connected at; a connection without a session after `handshake` is closed.
    since: Instant,
    /// The source address, when the transport knows it.
    peer: Option<IpAddr>,
}

struct Session {
    resume_token: String,
    app_id: u32,
    room_id: String,
    user: UserInfo,
    claims: Claims,
    notify: bool,
    conn: Option<ConnId>,
    last_seen: Instant,
    quality: QualityLevel,
    /// stream_id -> extra info
    published: BTreeMap<String, String>,
    subscriptions: BTreeSet<String>,
    warned_expiry: bool,
    /// Told that its token expired (it can no longer publish, offer media or resume).
    told_expired: bool,
    broadcasts: Bucket,
    backlog: VecDeque<ServerMsg>,
    /// A WHIP publisher: no connection and no heartbeat; ended by DELETE or by its media.
    pinned: bool,
}

struct Room {
    sessions: BTreeSet<String>,
    extra_info: BTreeMap<String, ExtraInfo>,
}

struct App {
    key: Vec<u8>,
    rooms: BTreeMap<String, Room>,
    logins: Bucket,
    /// Refused logins (bad or expired tokens): an attacker with only an app ID drains this
    /// one, never the bucket of logins whose credentials check out.
    refused: Bucket,
}

/// The registry. See the module docs.
pub struct Registry {
    grace: Duration,
    handshake: Duration,
    /// Refused logins per source address (see [`REFUSED_PER_IP_PER_SEC`]).
    refused_by_ip: HashMap<IpAddr, Bucket>,
    heartbeat_ms: u64,
    limits: Limits,
    media_enabled: bool,
    /// The TURN part of the configuration (URLs, secret, lifetime of credentials).
    turn: crate::server::config::MediaConfig,
    apps: HashMap<u32, App>,
    sessions: HashMap<String, Session>,
    conns: HashMap<ConnId, Conn>,
    tombstones: HashMap<String, (ErrorCode, Instant)>,
    out: VecDeque<Output>,
    next_quality: Option<Instant>,
    next_message_id: u64,
    device_keys: crate::server::device_keys::DeviceKeys,
    /// App-wide unique user and stream IDs: the state a cluster shares ([`SharedStore`]).
    store: Box<dyn SharedStore>,
    /// WHIP resources by ID.
    whip: HashMap<String, whip::WhipResource>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Registry {
    /// A registry for the apps and limits of `cfg`. Secrets must have been validated.
    pub fn new(cfg: &ServerConfig, now: Instant) -> Self {
        let limits = cfg.limits.clone();
        let apps = cfg
            .apps
            .iter()
            .map(|a| {
                let key = auth::parse_secret(&a.secret).unwrap_or_default();
                let app = App {
                    key,
                    rooms: BTreeMap::new(),
                    logins: Bucket::new(limits.logins_per_sec, limits.login_burst, now),
                    refused: Bucket::new(limits.logins_per_sec, limits.login_burst, now),
                };
                (a.app_id, app)
            })
            .collect();
        Registry {
            grace: cfg.grace(),
            handshake: Duration::from_secs(cfg.limits.handshake_secs),
            refused_by_ip: HashMap::new(),
            heartbeat_ms: cfg.session.heartbeat_ms,
            limits,
            media_enabled: cfg.media.enabled,
            turn: cfg.media.clone(),
            apps,
            sessions: HashMap::new(),
            conns: HashMap::new(),
            tombstones: HashMap::new(),
            out: VecDeque::new(),
            next_quality: None,
            next_message_id: 1,
            device_keys: Default::default(),
            whip: HashMap::new(),
            store: Box::new(MemoryStore::default()),
            metrics: Metrics::default(),
        }
    }

    /// The next thing the driver must do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The largest message accepted, bytes.
    pub fn max_message_bytes(&self) -> usize {
        self.limits.max_message_bytes
    }

    /// A connection opened.
    pub fn handle_connect(&mut self, conn: ConnId, now: Now) {
        self.handle_connect_from(conn, None, now);
    }

    /// A new connection from `peer` (its source address, when the transport knows it).
    pub fn handle_connect_from(&mut self, conn: ConnId, peer: Option<IpAddr>, now: Now) {
        let bucket = Bucket::new(self.limits.messages_per_sec, self.limits.message_burst, now.at);
        self.conns.insert(conn, Conn { session: None, bucket, since: now.at, peer });
    }

    /// Takes one refused login from `peer`'s budget; false once it is spent. The table is
    /// bounded: when it is full, buckets that have refilled are forgotten.
    fn refused_from(&mut self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = peer else { return true };
        if self.refused_by_ip.len() >= REFUSED_TABLE_MAX {
            self.refused_by_ip.retain(|_, b| !b.is_full(now));
        }
        self.refused_by_ip
            .entry(ip)
            .or_insert_with(|| Bucket::new(REFUSED_PER_IP_PER_SEC, REFUSED_PER_IP_BURST, now))
            .take(now)
    }

    /// A connection closed (by either side). Its session, if any, is kept for the grace period.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Now) {
        if let Some(c) = self.conns.remove(&conn)
            && let Some(sid) = c.session
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
            tracing::info!(callbox_event = "connection_lost", session = %short(&sid), user_id = %s.user.user_id, room_id = %s.room_id,
                grace_secs = self.grace.as_secs(), "connection lost; session kept for the grace period");
            let _ = now;
        }
    }

    /// A message the driver could not decode (too large, not JSON, unknown type).
    pub fn handle_invalid(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        self.metrics.error(code);
        self.send(conn, ServerMsg::error(None, code, message));
    }

    /// A decoded message from a connection.
    pub fn handle_message(&mut self, conn: ConnId, msg: ClientMsg, now: Now) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        self.metrics.messages += 1;
        if !c.bucket.take(now.at) {
            let req = request_number(&msg);
            self.fail(conn, req, ErrorCode::RATE_LIMITED, "too many messages per second; slow down");
            return;
        }
        let session = c.session.clone();
        if let Some(sid) = &session
            && let Some(s) = self.sessions.get_mut(sid)
        {
            s.last_seen = now.at;
        }
        match (msg, session) {
            (ClientMsg::Login { req, version, app_id, token, room_id, user, user_status_notify }, None) => {
                self.login(conn, req, version, app_id, &token, room_id, user, user_status_notify, now)
            }
            (ClientMsg::Resume { req, version, session_id, resume_token }, None) => {
                self.resume(conn, req, version, &session_id, &resume_token, now)
            }
            (ClientMsg::Login { req, .. } | ClientMsg::Resume { req, .. }, Some(_)) => {
                self.fail(conn, Some(req), ErrorCode::ALREADY_LOGGED_IN, "this connection is already logged in")
            }
            (ClientMsg::Ping { seq, quality }, sid) => {
                if let Some(s) = sid.and_then(|sid| self.sessions.get_mut(&sid)) {
                    s.quality = quality;
                }
                self.send(conn, ServerMsg::Pong { seq, server_time_ms: now.unix_ms });
            }
            (other, None) => self.fail(conn, request_number(&other), ErrorCode::NOT_LOGGED_IN, "log in first"),
            (ClientMsg::Logout { req }, Some(sid)) => {
                self.send(conn, ServerMsg::Ok { req });
                self.remove_session(&sid, ErrorCode::USER_LOGGED_OUT);
                self.out.push_back(Output::Close(conn));
            }
            (ClientMsg::Publish { req, .. } | ClientMsg::MediaOffer { req, .. }, Some(sid))
                if self.token_expired(&sid, now) =>
            {
                self.fail(conn, Some(req), ErrorCode::TOKEN_EXPIRED, "the session's token expired; renew it first")
            }
            (ClientMsg::Publish { req, stream_id, extra_info }, Some(sid)) => {
                self.publish(conn, req, &sid, stream_id, extra_info)
            }
            (ClientMsg::Unpublish { req, stream_id }, Some(sid)) => {
                self.unpublish(&sid, &stream_id, ErrorCode::OK);
                self.send(conn, ServerMsg::Ok { req });
            }
            (ClientMsg::Play { req, stream_id }, Some(sid)) => self.play(conn, req, &sid, stream_id),
            (ClientMsg::StopPlay { req, stream_id }, Some(sid)) => {
                if let Some(s) = self.sessions.get_mut(&sid)
                    && s.subscriptions.remove(&stream_id)
                    && let Some(key) = self.stream_key(&sid, &stream_id)
                {
                    self.media_out(MediaOut::EndPlay(sid.clone(), key));
                }
                self.send(conn, ServerMsg::Ok { req });
            }
            (ClientMsg::SetRoomExtraInfo { req, key, value }, Some(sid)) => {
                self.set_extra_info(conn, req, &sid, key, value, now)
            }
            (ClientMsg::Broadcast { req, message }, Some(sid)) => self.broadcast(conn, req, &sid, message, now),
            (ClientMsg::RenewToken { req, token }, Some(sid)) => self.renew_token(conn, req, &sid, &token, now),
            (ClientMsg::MediaOffer { req, stream_id, role, sdp }, Some(sid)) => {
                self.media_offer(conn, req, &sid, stream_id, role, sdp)
            }
        }
    }

    /// Timers: grace expiry, token expiry warnings, network quality. Call every ~250 ms.
    pub fn handle_tick(&mut self, now: Now) {
        // Connections that never logged in (nor resumed) are not kept.
        let silent: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.is_none() && now.at.saturating_duration_since(c.since) >= self.handshake)
            .map(|(id, _)| *id)
            .collect();
        for id in silent {
            tracing::debug!(conn = id, "no login within the handshake deadline; closing");
            self.conns.remove(&id);
            self.out.push_back(Output::Close(id));
        }
        let expired: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.pinned && now.at.saturating_duration_since(s.last_seen) > self.grace)
            .map(|(id, _)| id.clone())
            .collect();
        for sid in expired {
            if let Some(s) = self.sessions.get(&sid) {
                tracing::warn!(callbox_event = "heartbeat_timeout", error_code = ErrorCode::HEARTBEAT_TIMEOUT.0, user_id = %s.user.user_id, room_id = %s.room_id, grace_secs = self.grace.as_secs(),
                    "no heartbeat for the grace period; removing the user and its streams");
                if let Some(conn) = s.conn {
                    self.out.push_back(Output::Close(conn));
                }
            }
            self.metrics.heartbeat_timeouts += 1;
            self.remove_session(&sid, ErrorCode::HEARTBEAT_TIMEOUT);
        }
        let unix = now.unix_secs();
        let mut warnings = Vec::new();
        for (sid, s) in self.sessions.iter_mut() {
            // Half the lifetime for tokens shorter than a minute, so they can still be renewed.
            let warn = TOKEN_WARN_SECS.min(s.claims.exp.saturating_sub(s.claims.iat) / 2);
            if !s.warned_expiry && s.claims.exp.saturating_sub(unix) <= warn {
                s.warned_expiry = true;
                let remaining_secs = s.claims.exp.saturating_sub(unix);
                warnings.push((sid.clone(), ServerMsg::TokenWillExpire { room_id: s.room_id.clone(), remaining_secs }));
            }
            if !s.pinned && !s.told_expired && s.claims.exp <= unix {
                s.told_expired = true;
                warnings.push((
                    sid.clone(),
                    ServerMsg::Error {
                        req: None,
                        code: ErrorCode::TOKEN_EXPIRED,
                        message: "the session's token expired: renew it to publish, offer media or resume".into(),
                    },
                ));
            }
        }
        for (sid, msg) in warnings {
            self.send_session(&sid, msg);
        }
        self.tombstones.retain(|_, (_, at)| now.at.saturating_duration_since(*at) < TOMBSTONE_TTL);
        let due = self.next_quality.is_none_or(|t| now.at >= t);
        if due {
            self.next_quality = Some(now.at + QUALITY_INTERVAL);
            self.push_network_quality(now);
        }
    }

    // ---------------------------------------------------------------- login / resume

    #[allow(clippy::too_many_arguments)]
    fn login(
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
        let Some(app) = self.apps.get_mut(&app_id) else {
            return self.fail(conn, Some(req), ErrorCode::APP_ID_MISMATCH, format!("unknown app_id {app_id}"));
        };
        // Credentials first (one HMAC, cheap): refused logins are limited on their own, so a
        // flood of garbage tokens cannot lock out the devices whose tokens are good.
        let claims = match auth::verify_login(
            Some(&app.key),
            app_id,
            token,
            &user.user_id,
            &room_id,
            now.unix_secs(),
            self.limits.max_token_secs,
        ) {
            Ok(c) => c,
            Err(code) => {
                let peer = self.conns.get(&conn).and_then(|c| c.peer);
                if !self.refused_from(peer, now.at) {
                    return self.fail(
                        conn,
                        Some(req),
                        ErrorCode::LOGIN_RATE_LIMITED,
                        "too many refused logins; retry later",
                    );
                }
                let Some(app) = self.apps.get_mut(&app_id) else { return };
                if !app.refused.take(now.at) {
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
        if let Err(code) = self.check_not_revoked(&claims) {
            return self.fail(conn, Some(req), code, "the device key of this token was revoked");
        }
        let Some(app) = self.apps.get_mut(&app_id) else {
            return self.internal(conn, Some(req), "login: the app vanished");
        };
        if !app.logins.take(now.at) {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::LOGIN_RATE_LIMITED,
                "too many logins for this app; retry later",
            );
        }
        let previous = self.store.user(app_id, &user.user_id).map(str::to_string);
        let occupied = app.rooms.get(&room_id).map(|r| r.sessions.len()).unwrap_or(0);
        let same_room_prev = previous.as_ref().and_then(|p| self.sessions.get(p)).is_some_and(|s| s.room_id == room_id);
        if occupied - usize::from(same_room_prev) >= self.limits.max_users_per_room {
            return self.fail(conn, Some(req), ErrorCode::ROOM_FULL, "the room is full");
        }
        if let Some(prev) = previous {
            self.kick_session(&prev, ErrorCode::KICKED_DUPLICATE_LOGIN, "the same user ID logged in elsewhere", now);
        }
        let session_id = random_hex(16);
        let resume_token = random_hex(16);
        let session = Session {
            resume_token: resume_token.clone(),
            app_id,
            room_id: room_id.clone(),
            user: user.clone(),
            claims,
            notify,
            conn: Some(conn),
            last_seen: now.at,
            quality: QualityLevel::Unknown,
            published: BTreeMap::new(),
            subscriptions: BTreeSet::new(),
            warned_expiry: false,
            told_expired: false,
            broadcasts: Bucket::new(self.limits.broadcasts_per_sec, self.limits.broadcast_burst, now.at),
            backlog: VecDeque::new(),
            pinned: false,
        };
        let Some(app) = self.apps.get_mut(&app_id) else {
            return self.internal(conn, Some(req), "login: the app vanished");
        };
        self.store.claim_user(app_id, &user.user_id, &session_id);
        let room = app
            .rooms
            .entry(room_id.clone())
            .or_insert_with(|| Room { sessions: BTreeSet::new(), extra_info: BTreeMap::new() });
        let others: Vec<String> = room.sessions.iter().cloned().collect();
        room.sessions.insert(session_id.clone());
        self.sessions.insert(session_id.clone(), session);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.clone());
        }
        self.metrics.logins += 1;
        let peer = self.conns.get(&conn).and_then(|c| c.peer).map(|p| p.to_string()).unwrap_or_default();
        tracing::info!(callbox_event = "login", app_id, room_id = %room_id, user_id = %user.user_id, session = %short(&session_id), %peer, "user logged in");
        let room_snapshot = self.snapshot(&session_id);
        self.send(
            conn,
            ServerMsg::LoginOk {
                req,
                session_id,
                resume_token,
                room: room_snapshot,
                heartbeat_ms: self.heartbeat_ms,
                grace_secs: self.grace.as_secs(),
                server_time_ms: now.unix_ms,
                ice_servers: self.turn.ice_servers_for(&user.user_id, now.unix_secs()),
            },
        );
        for other in others {
            self.send_user_update(&other, &room_id, UpdateType::Add, &user, ErrorCode::OK);
        }
    }

    fn resume(&mut self, conn: ConnId, req: u64, version: u32, session_id: &str, token: &str, now: Now) {
        if version != PROTOCOL_VERSION {
            return self.fail(conn, Some(req), ErrorCode::UNSUPPORTED_VERSION, "unsupported protocol version");
        }
        let valid = self.sessions.get(session_id).is_some_and(|s| constant_eq(&s.resume_token, token));
        if !valid {
            if let Some((code, _)) = self.tombstones.get(session_id) {
                let code = *code;
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
        let backlog: Vec<ServerMsg> = s.backlog.drain(..).collect();
        tracing::info!(callbox_event = "resume", user_id = %s.user.user_id, room_id = %s.room_id, session = %short(session_id), "session resumed");
        if let Some(old) = old {
            if let Some(c) = self.conns.get_mut(&old) {
                c.session = None;
            }
            self.out.push_back(Output::Close(old));
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(session_id.to_string());
        }
        self.metrics.resumes += 1;
        let room = self.snapshot(session_id);
        let user = self.sessions.get(session_id).map(|s| s.user.user_id.clone()).unwrap_or_default();
        let ice_servers = self.turn.ice_servers_for(&user, now.unix_secs());
        self.send(conn, ServerMsg::Resumed { req, room, ice_servers });
        for m in backlog {
            self.send(conn, m);
        }
    }

    fn renew_token(&mut self, conn: ConnId, req: u64, sid: &str, token: &str, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let key = self.apps.get(&s.app_id).map(|a| a.key.clone());
        let checked = auth::verify_login(
            key.as_deref(),
            s.app_id,
            token,
            &s.user.user_id,
            &s.room_id,
            now.unix_secs(),
            self.limits.max_token_secs,
        )
        .and_then(|c| self.check_not_revoked(&c).map(|_| c))
        .and_then(|c| if auth::renewal_within(&s.claims, &c) { Ok(c) } else { Err(ErrorCode::RENEW_TOKEN_ESCALATES) });
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
    fn token_expired(&self, sid: &str, now: Now) -> bool {
        self.sessions.get(sid).is_some_and(|s| !s.pinned && s.claims.exp <= now.unix_secs())
    }

    fn kick_session(&mut self, sid: &str, code: ErrorCode, why: &str, now: Now) {
        if let Some(s) = self.sessions.get(sid) {
            tracing::info!(callbox_event = "kick", user_id = %s.user.user_id, room_id = %s.room_id, error_code = code.0, "{why}");
            if let Some(c) = s.conn {
                self.send(c, ServerMsg::Kicked { code, message: why.to_string() });
                self.out.push_back(Output::Close(c));
                if let Some(conn) = self.conns.get_mut(&c) {
                    conn.session = None;
                }
            }
        }
        self.metrics.kicks += 1;
        self.tombstones.insert(sid.to_string(), (code, now.at));
        self.remove_session(sid, code);
    }

    /// Removes a session: its streams (Delete to the room, PlayStopped to their players), then
    /// its user (Delete to sessions that asked), then the room if it is empty.
    fn remove_session(&mut self, sid: &str, reason: ErrorCode) {
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
        self.forget_whip_of(sid);
        self.media_out(MediaOut::EndSession(sid.to_string()));
        if let Some(c) = s.conn
            && let Some(conn) = self.conns.get_mut(&c)
        {
            conn.session = None;
        }
        let Some(app) = self.apps.get_mut(&s.app_id) else {
            return;
        };
        self.store.release_user(s.app_id, &s.user.user_id, sid);
        let mut others = Vec::new();
        if let Some(room) = app.rooms.get_mut(&s.room_id) {
            room.sessions.remove(sid);
            others.extend(room.sessions.iter().cloned());
            if room.sessions.is_empty() {
                app.rooms.remove(&s.room_id);
                tracing::info!(callbox_event = "room_removed", room_id = %s.room_id, "room empty; removed");
            }
        }
        for other in others {
            self.send_user_update(&other, &s.room_id, UpdateType::Delete, &s.user, reason);
        }
    }

    // ---------------------------------------------------------------- streams

    fn publish(&mut self, conn: ConnId, req: u64, sid: &str, stream_id: String, extra_info: String) {
        if let Err(code) = ids::check_stream_id(&stream_id) {
            return self.fail(conn, Some(req), code, "invalid stream ID");
        }
        if extra_info.len() > EXTRA_VALUE_MAX {
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
        self.announce_stream(sid, stream_id, extra_info);
    }

    /// Records an accepted publish and tells the room (StreamUpdate Add, PlayAvailable to
    /// those waiting for it).
    fn announce_stream(&mut self, sid: &str, stream_id: String, extra_info: String) {
        let Some(s) = self.sessions.get(sid) else {
            return self.inconsistent("announce: the publishing session vanished");
        };
        if !self.store.claim_stream(s.app_id, &stream_id, sid) {
            return self.inconsistent("announce: the stream ID was taken meanwhile");
        }
        let room_id = s.room_id.clone();
        let info = StreamInfo { stream_id: stream_id.clone(), user: s.user.clone(), extra_info: extra_info.clone() };
        if let Some(s) = self.sessions.get_mut(sid) {
            s.published.insert(stream_id.clone(), extra_info);
        }
        tracing::info!(callbox_event = "stream_update", room_id = %room_id, stream_id = %stream_id, user_id = %info.user.user_id, "stream published");
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

    fn unpublish(&mut self, sid: &str, stream_id: &str, reason: ErrorCode) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some(extra_info) = s.published.remove(stream_id) else {
            return;
        };
        let info = StreamInfo { stream_id: stream_id.to_string(), user: s.user.clone(), extra_info };
        let room_id = s.room_id.clone();
        self.store.release_stream(s.app_id, stream_id, sid);
        tracing::info!(callbox_event = "stream_update", room_id = %room_id, stream_id = %stream_id, error_code = reason.0, "stream deleted");
        if let Some(key) = self.stream_key(sid, stream_id) {
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

    fn play(&mut self, conn: ConnId, req: u64, sid: &str, stream_id: String) {
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

    // ---------------------------------------------------------------- helpers

    /// Whether `stream_id` is published (by anyone) in session `sid`'s room.
    fn published_in_room(&self, sid: &str, stream_id: &str) -> bool {
        let Some(s) = self.sessions.get(sid) else { return false };
        self.store
            .stream(s.app_id, stream_id)
            .and_then(|owner| self.sessions.get(owner))
            .is_some_and(|o| o.room_id == s.room_id)
    }

    fn snapshot(&self, sid: &str) -> RoomSnapshot {
        let s = &self.sessions[sid];
        let room = &self.apps[&s.app_id].rooms[&s.room_id];
        let mut snap = RoomSnapshot { room_id: s.room_id.clone(), ..Default::default() };
        for o in room.sessions.iter().filter(|o| o.as_str() != sid).filter_map(|o| self.sessions.get(o)) {
            if s.notify {
                snap.users.push(o.user.clone());
            }
            snap.streams.extend(o.published.iter().map(|(id, extra)| StreamInfo {
                stream_id: id.clone(),
                user: o.user.clone(),
                extra_info: extra.clone(),
            }));
        }
        snap.extra_info = room.extra_info.values().cloned().collect();
        snap
    }

    fn room_others(&self, sid: &str) -> Vec<String> {
        let Some(s) = self.sessions.get(sid) else {
            return Vec::new();
        };
        self.apps
            .get(&s.app_id)
            .and_then(|a| a.rooms.get(&s.room_id))
            .map(|r| r.sessions.iter().filter(|o| o.as_str() != sid).cloned().collect())
            .unwrap_or_default()
    }

    fn send_user_update(&mut self, to: &str, room_id: &str, update: UpdateType, user: &UserInfo, reason: ErrorCode) {
        if self.sessions.get(to).is_some_and(|s| s.notify) {
            let msg = ServerMsg::UserUpdate { room_id: room_id.to_string(), update, users: vec![user.clone()], reason };
            self.send_session(to, msg);
        }
    }

    /// Sends to a session's connection; a detached session keeps broadcast and token messages
    /// for its resume (room and stream changes reach it through the resume snapshot instead).
    fn send_session(&mut self, sid: &str, msg: ServerMsg) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        match s.conn {
            Some(c) => self.out.push_back(Output::Send(c, msg)),
            None => {
                if matches!(msg, ServerMsg::BroadcastMessage { .. } | ServerMsg::TokenWillExpire { .. }) {
                    if s.backlog.len() >= DETACHED_BACKLOG {
                        s.backlog.pop_front();
                    }
                    s.backlog.push_back(msg);
                }
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.out.push_back(Output::Send(conn, msg));
    }

    fn fail(&mut self, conn: ConnId, req: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.metrics.error(code);
        self.send(conn, ServerMsg::error(req, code, message));
    }

    /// A cross-map lookup that should not fail did: the request is answered
    /// `SERVER_INTERNAL` (1001006), logged and counted, and the hub, every other session and
    /// this one carry on. `what` names the lookup for the journal.
    fn internal(&mut self, conn: ConnId, req: Option<u64>, what: &'static str) {
        self.inconsistent(what);
        self.fail(conn, req, ErrorCode::SERVER_INTERNAL, "internal error; retry");
    }

    /// A cross-map lookup failed where nobody waits for an answer: logged and counted.
    fn inconsistent(&mut self, what: &'static str) {
        self.metrics.inconsistencies += 1;
        tracing::error!(
            callbox_event = "registry_inconsistent",
            what,
            "a registry lookup failed; the request was dropped"
        );
    }
}

fn request_number(msg: &ClientMsg) -> Option<u64> {
    match msg {
        ClientMsg::Login { req, .. }
        | ClientMsg::Resume { req, .. }
        | ClientMsg::Logout { req }
        | ClientMsg::Publish { req, .. }
        | ClientMsg::Unpublish { req, .. }
        | ClientMsg::Play { req, .. }
        | ClientMsg::StopPlay { req, .. }
        | ClientMsg::SetRoomExtraInfo { req, .. }
        | ClientMsg::Broadcast { req, .. }
        | ClientMsg::RenewToken { req, .. }
        | ClientMsg::MediaOffer { req, .. } => Some(*req),
        ClientMsg::Ping { .. } => None,
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn short(sid: &str) -> &str {
    &sid[..sid.len().min(8)]
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
