//! The room registry: every app, room, user, session, stream and subscription of one server,
//! as a sans-IO state machine. The hub feeds it signalling messages, WHIP/WHEP requests,
//! the media relay's answers, connects, disconnects and ticks with the time, and carries out
//! what [`Registry::poll_output`] returns.
//!
//! The registry composes parts that each own one kind of state, with its own rules and unit
//! tests: [`conns`] (connections and their budgets), [`sessions`] (sessions, their backlog and
//! tombstones), [`rooms`] (membership and extra info), [`apps`] (apps, secrets, device keys
//! and every token check), [`resources`] (WHIP/WHEP resources and their budgets) and the
//! [`SharedStore`] (app-wide unique user and stream IDs: what a cluster shares). What crosses
//! parts lives in the registry's own files: [`admission`] (the one way a session comes to
//! be, and the ways it ends), [`streams`], [`messages`], [`media`], [`whip`], [`keys`],
//! [`admin`] and [`reload`]; [`invariants`] states the arrows between the parts.
//!
//! A session outlives its connection: when the connection drops, the session is detached and
//! kept for the grace period, so a client that comes back with `resume` continues with no
//! change seen by the others. Silence for longer than the grace period deletes its user and
//! streams with the reason HEARTBEAT_TIMEOUT.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::Rng;

mod admin;
mod admission;
mod apps;
mod calling;
mod calls;
mod conns;
mod doors;
mod hooks;
#[cfg(test)]
mod invariants;
mod keys;
mod media;
mod messages;
mod refusal;
mod reload;
mod resources;
mod rooms;
mod sessions;
mod store;
mod streams;
mod whip;

pub use admin::{RoomView, UserView};
pub use calling::MAX_CALLEES;
pub use doors::DOOR_ANSWER_WITHIN;
pub use keys::{IssuedToken, NewDeviceKey};
pub use media::{MediaOut, OfferFailure, Reply};
pub use refusal::{Refusal, RefusalKind};
pub use resources::{REAP_AFTER, media_session};
pub use store::{MemoryStore, SharedStore};
pub use whip::{HttpAnswer, HttpMedia};

use super::config::{Limits, RegistryConfig};
use super::limits::Bucket;
use super::metrics::Metrics;
use crate::auth::{self, Claims};
use crate::proto::{
    ClientMsg, ErrorCode, ExtraInfo, PROTOCOL_VERSION, QualityLevel, RoomSnapshot, ServerMsg, StreamInfo, TrackState,
    UpdateType, UserInfo, UserQuality, ids,
};
use sessions::Published;

/// Identifies one WebSocket connection, chosen by the driver.
pub type ConnId = u64;

/// Identifies one WHIP/WHEP HTTP request waiting for its answer, chosen by the driver.
pub type HttpId = u64;

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
    /// The answer to a WHIP/WHEP request.
    Http(HttpId, Result<HttpAnswer, Refusal>),
    /// Something an app's webhook is told (only for apps that have one).
    Hook(crate::server::webhooks::Hook),
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

/// The registry. See the module docs.
pub struct Registry {
    grace: Duration,
    heartbeat_ms: u64,
    limits: Limits,
    media_enabled: bool,
    /// The TURN part of the configuration (URLs, secret, lifetime of credentials).
    turn: crate::server::config::MediaConfig,
    conns: conns::Conns,
    sessions: sessions::Sessions,
    rooms: rooms::Rooms,
    apps: apps::Apps,
    /// App-wide unique user and stream IDs: the state a cluster shares ([`SharedStore`]).
    store: Box<dyn SharedStore>,
    resources: resources::Resources,
    calls: calls::Calls,
    doors: doors::Doors,
    /// The default ring time of a call, seconds.
    ring_secs: u32,
    /// The latest time the registry was given, for the steps no input carries a time to
    /// (a session removed when its WHIP media went away).
    clock: Instant,
    /// The wall clock of the latest input, unix milliseconds (webhook timestamps).
    unix_ms: u64,
    /// The apps with a webhook.
    hooked: std::collections::BTreeSet<u32>,
    out: VecDeque<Output>,
    next_quality: Option<Instant>,
    next_message_id: u64,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
}

impl Registry {
    /// A registry for the apps and limits of `cfg`. Secrets must have been validated.
    pub fn new(cfg: &RegistryConfig, now: Instant) -> Self {
        Registry {
            grace: cfg.session.grace(),
            heartbeat_ms: cfg.session.heartbeat_ms,
            limits: cfg.limits.clone(),
            media_enabled: cfg.media.enabled,
            turn: cfg.media.clone(),
            conns: conns::Conns::new(&cfg.limits),
            sessions: sessions::Sessions::default(),
            rooms: rooms::Rooms::default(),
            apps: apps::Apps::new(cfg, now),
            store: Box::new(MemoryStore::default()),
            resources: resources::Resources::new(&cfg.limits),
            calls: calls::Calls::default(),
            doors: doors::Doors::default(),
            ring_secs: cfg.calls.ring_secs,
            clock: now,
            unix_ms: 0,
            hooked: hooked(cfg),
            out: VecDeque::new(),
            next_quality: None,
            next_message_id: 1,
            metrics: Metrics::default(),
        }
    }

    /// Takes the time of an input.
    fn observe(&mut self, now: Now) {
        self.clock = self.clock.max(now.at);
        self.unix_ms = self.unix_ms.max(now.unix_ms);
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
        self.observe(now);
        self.conns.open(conn, peer, now.at);
    }

    /// A connection closed (by either side). Its session, if any, is kept for the grace period.
    pub fn handle_disconnect(&mut self, conn: ConnId, _now: Now) {
        if let Some(Some(sid)) = self.conns.close(conn)
            && let Some(s) = self.sessions.get_mut(&sid)
            && s.conn == Some(conn)
        {
            s.conn = None;
            tracing::info!(callbox_event = "connection_lost", session = %short(&sid), user_id = %s.user.user_id, room_id = %s.room_id,
                grace_secs = self.grace.as_secs(), "connection lost; session kept for the grace period");
        }
    }

    /// A message the driver could not decode (too large, not JSON, unknown type).
    pub fn handle_invalid(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        self.metrics.error(code);
        self.send(conn, ServerMsg::error(None, code, message));
    }

    /// A decoded message from a connection.
    pub fn handle_message(&mut self, conn: ConnId, msg: ClientMsg, now: Now) {
        let Some(within_budget) = self.conns.take_message(conn, now.at) else {
            return;
        };
        self.metrics.messages += 1;
        self.observe(now);
        if !within_budget {
            let req = request_number(&msg);
            self.fail(conn, req, ErrorCode::RATE_LIMITED, "too many messages per second; slow down");
            return;
        }
        let session = self.conns.session(conn).map(str::to_string);
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
            (ClientMsg::Ping { seq, quality, upstream, downstream }, sid) => {
                if let Some(s) = sid.and_then(|sid| self.sessions.get_mut(&sid)) {
                    s.quality = [quality, upstream, downstream];
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
            (ClientMsg::Publish { req, stream_id, extra_info, video, audio }, Some(sid)) => {
                self.publish(conn, req, &sid, stream_id, Published { extra_info, video, audio })
            }
            (ClientMsg::SetStreamState { req, stream_id, video, audio }, Some(sid)) => {
                self.set_stream_state(conn, req, &sid, &stream_id, video, audio)
            }
            (ClientMsg::Unpublish { req, stream_id }, Some(sid)) => {
                self.unpublish(&sid, &stream_id, ErrorCode::OK);
                self.send(conn, ServerMsg::Ok { req });
            }
            (ClientMsg::Play { req, stream_id }, Some(sid)) => self.play(conn, req, &sid, stream_id),
            (ClientMsg::StopPlay { req, stream_id }, Some(sid)) => self.stop_play(conn, req, &sid, stream_id),
            (ClientMsg::SetRoomExtraInfo { req, key, value }, Some(sid)) => {
                self.set_extra_info(conn, req, &sid, key, value, now)
            }
            (ClientMsg::Broadcast { req, message }, Some(sid)) => self.broadcast(conn, req, &sid, message, now),
            (ClientMsg::RenewToken { req, token }, Some(sid)) => self.renew_token(conn, req, &sid, &token, now),
            (ClientMsg::MediaOffer { req, stream_id, role, sdp }, Some(sid)) => {
                self.media_offer(conn, req, &sid, stream_id, role, sdp)
            }
            (ClientMsg::Call { req, callees, order, ring_secs }, Some(sid)) => {
                self.call(conn, req, &sid, callees, order, ring_secs, now)
            }
            (ClientMsg::CallAnswer { req, call_id }, Some(sid)) => {
                self.call_step(conn, req, &sid, call_id, calling::Step::Answer, now)
            }
            (ClientMsg::CallDecline { req, call_id }, Some(sid)) => {
                self.call_step(conn, req, &sid, call_id, calling::Step::Decline, now)
            }
            (ClientMsg::CallHangup { req, call_id }, Some(sid)) => {
                self.call_step(conn, req, &sid, call_id, calling::Step::HangUp, now)
            }
            (ClientMsg::OpenDoor { req, user_id }, Some(sid)) => self.open_door(conn, req, &sid, user_id, now),
            (ClientMsg::DoorAnswer { request_id, code, message }, Some(sid)) => {
                self.door_answer(&sid, request_id, code, message)
            }
        }
    }

    /// Timers: handshake deadlines, grace expiry, token expiry warnings, network quality,
    /// probes of WHIP/WHEP media. Call every ~250 ms.
    pub fn handle_tick(&mut self, now: Now) {
        self.observe(now);
        // Connections that never logged in (nor resumed) are not kept.
        for id in self.conns.take_silent(now.at) {
            tracing::debug!(conn = id, "no login within the handshake deadline; closing");
            self.out.push_back(Output::Close(id));
        }
        for sid in self.sessions.expired(now.at, self.grace) {
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
        self.sessions.prune(now.at);
        if self.next_quality.is_none_or(|t| now.at >= t) {
            self.next_quality = Some(now.at + QUALITY_INTERVAL);
            self.push_network_quality(now);
        }
        for session in self.resources.due_probes(now.at) {
            self.media_out(MediaOut::Probe(session));
        }
        self.tick_calls(now);
    }

    // ---------------------------------------------------------------- helpers

    /// The members of session `sid`'s room other than itself.
    fn room_others(&self, sid: &str) -> Vec<String> {
        let Some(s) = self.sessions.get(sid) else {
            return Vec::new();
        };
        self.rooms.others(s.app_id, &s.room_id, sid)
    }

    fn send_user_update(&mut self, to: &str, room_id: &str, update: UpdateType, user: &UserInfo, reason: ErrorCode) {
        if self.sessions.get(to).is_some_and(|s| s.notify) {
            let msg = ServerMsg::UserUpdate { room_id: room_id.to_string(), update, users: vec![user.clone()], reason };
            self.send_session(to, msg);
        }
    }

    /// Sends to a session's connection; a detached session keeps what its resume needs.
    fn send_session(&mut self, sid: &str, msg: ServerMsg) {
        if let Some((conn, msg)) = self.sessions.get_mut(sid).and_then(|s| s.deliver(msg)) {
            self.out.push_back(Output::Send(conn, msg));
        }
    }

    fn send(&mut self, conn: ConnId, msg: ServerMsg) {
        self.out.push_back(Output::Send(conn, msg));
    }

    fn fail(&mut self, conn: ConnId, req: Option<u64>, code: ErrorCode, message: impl Into<String>) {
        self.metrics.error(code);
        self.send(conn, ServerMsg::error(req, code, message));
    }

    /// A refusal, told over signalling.
    fn refuse(&mut self, conn: ConnId, req: Option<u64>, r: Refusal) {
        self.fail(conn, req, r.code, r.message);
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
        | ClientMsg::SetStreamState { req, .. }
        | ClientMsg::Play { req, .. }
        | ClientMsg::StopPlay { req, .. }
        | ClientMsg::SetRoomExtraInfo { req, .. }
        | ClientMsg::Broadcast { req, .. }
        | ClientMsg::RenewToken { req, .. }
        | ClientMsg::MediaOffer { req, .. }
        | ClientMsg::Call { req, .. }
        | ClientMsg::CallAnswer { req, .. }
        | ClientMsg::CallDecline { req, .. }
        | ClientMsg::CallHangup { req, .. }
        | ClientMsg::OpenDoor { req, .. } => Some(*req),
        ClientMsg::Ping { .. } | ClientMsg::DoorAnswer { .. } => None,
    }
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
}

fn short(sid: &str) -> &str {
    &sid[..sid.len().min(8)]
}

#[cfg(test)]
mod tests;

/// The apps of `cfg` that have a webhook.
fn hooked(cfg: &RegistryConfig) -> std::collections::BTreeSet<u32> {
    cfg.apps.iter().filter(|a| a.webhook_url.is_some()).map(|a| a.app_id).collect()
}
