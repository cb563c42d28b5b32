//! The room session as a sans-IO state machine: login, resume, re-login, publish/play
//! bookkeeping, heartbeats and the events they produce. Time and connection outcomes are
//! inputs; connects, sends, events and command results come out of [`Session::poll_output`].
//!
//! Reconnect escalates, never the other way: after a drop it first tries to `resume` the
//! server session (the others see nothing); if the server no longer has it, it logs in again
//! and re-announces every published and played stream.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::error::EngineError;
use super::event::{EngineEvent, PlayerState, PublishChannel, PublisherState, RoomState, RoomStateReason};
use super::quality::{PingTracker, worse};
use super::reconnect::{Jitter, ReconnectPolicy};
use crate::auth::{self, Claims};
use crate::proto::{
    CallPhase, ClientMsg, ErrorCode, ExtraInfo, MediaRole, PROTOCOL_VERSION, QualityLevel, RingOrder, RoomSnapshot,
    ServerMsg, StreamInfo, TrackState, UpdateType, UserInfo, ids,
};

/// Identifies an application call waiting for its result.
pub type CmdId = u64;
/// A call's result: the broadcast message ID for broadcasts, 0 otherwise.
pub type Reply = Result<u64, EngineError>;

/// A stream's state as signalling sees it: the server accepted a publish, a played stream
/// became available or went away, the application stopped one. With media, the media
/// supervisor decides what the application hears (a stream is Publishing / Playing only once
/// its media is up too); without, it is the application's event as it stands.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamChange {
    /// A published stream's state.
    Publisher {
        /// The stream.
        stream_id: String,
        /// Its state as signalling sees it.
        state: PublisherState,
        /// Why, when it ended or was refused.
        error_code: ErrorCode,
    },
    /// A played stream's state.
    Player {
        /// The stream.
        stream_id: String,
        /// Its state as signalling sees it.
        state: PlayerState,
        /// Why, when it ended, was refused or is not there (yet).
        error_code: ErrorCode,
    },
}

impl StreamChange {
    /// The application's event, when nothing but signalling decides it.
    pub fn into_event(self) -> EngineEvent {
        match self {
            StreamChange::Publisher { stream_id, state, error_code } => {
                EngineEvent::PublisherStateUpdate { stream_id, state, error_code }
            }
            StreamChange::Player { stream_id, state, error_code } => {
                EngineEvent::PlayerStateUpdate { stream_id, state, error_code }
            }
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Open connection number `epoch` (closing any older one).
    Connect {
        /// Connection generation.
        epoch: u64,
    },
    /// Send a message on connection `epoch`.
    Send {
        /// Connection generation.
        epoch: u64,
        /// The message.
        msg: ClientMsg,
    },
    /// Close connection `epoch` after what was queued.
    Close {
        /// Connection generation.
        epoch: u64,
    },
    /// Tell the application.
    Event(EngineEvent),
    /// A stream in the room has these tracks now (published, or switched on or off): its
    /// player need not decode what is absent or off.
    RemoteTracks {
        /// The stream.
        stream_id: String,
        /// Its video.
        video: TrackState,
        /// Its audio.
        audio: TrackState,
    },
    /// A stream's signalling state changed (see [`StreamChange`]).
    Stream(StreamChange),
    /// Complete an application call.
    Done {
        /// The call.
        cmd: CmdId,
        /// Its result.
        result: Reply,
    },
    /// The server answered (or refused) a media offer.
    MediaAnswer {
        /// The stream.
        stream_id: String,
        /// Publish or play.
        role: MediaRole,
        /// The tag the offer was sent with: an answer to an offer that a newer one replaced
        /// must not be applied to the newer connection.
        tag: u64,
        /// The SDP answer, or why not.
        result: Result<String, ErrorCode>,
    },
    /// In the room again. `fresh`: a new server session (first login or re-login after the
    /// server forgot us), so no media connection of ours exists on the server any more.
    Joined {
        /// A new server session.
        fresh: bool,
        /// The TURN servers (with credentials) the server handed out, if any.
        ice_servers: Vec<crate::proto::ice_servers::IceServer>,
    },
}

/// What a member does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStep {
    /// Take a call that rings here.
    Answer,
    /// Refuse a call that rings here.
    Decline,
    /// Cancel a call we placed, or end an answered one.
    HangUp,
}

/// Session settings derived from the engine profile.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The app.
    pub app_id: u32,
    /// AppSign key: the engine mints its own tokens when set.
    pub app_sign_key: Option<Vec<u8>>,
    /// Reconnect backoff and limit.
    pub policy: ReconnectPolicy,
    /// How long to wait for the answer to login/resume.
    pub login_timeout: Duration,
    /// Seed for the backoff jitter.
    pub seed: u64,
    /// Lifetime of the tokens minted in AppSign mode.
    pub app_sign_ttl: Duration,
}

/// Lifetime of the tokens an AppSign engine mints for itself.
pub const APP_SIGN_TTL: Duration = Duration::from_secs(3600);
/// How long logout waits for the server's confirmation.
const LOGOUT_WAIT: Duration = Duration::from_secs(2);
/// Network quality events interval.
const QUALITY_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Logining,
    Connected,
    Reconnecting,
    LoggingOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Down,
    Connecting,
    Up,
}

#[derive(Debug)]
enum Pending {
    Login,
    Resume,
    Logout(CmdId),
    Publish(PublishChannel, String),
    Play(String),
    Simple(CmdId),
    Media(String, MediaRole, u64),
}

struct Room {
    room_id: String,
    user: UserInfo,
    token: Option<String>,
    notify: bool,
}

struct Publish {
    stream_id: String,
    extra_info: String,
    state: PublisherState,
    cmd: Option<CmdId>,
    /// The tracks the last `publish` of it said (a switch while it was under way is sent
    /// once it is accepted).
    sent_tracks: (TrackState, TrackState),
}

struct Play {
    state: PlayerState,
    cmd: Option<CmdId>,
}

/// The session core. See the module docs.
pub struct Session {
    cfg: SessionConfig,
    phase: Phase,
    room: Option<Room>,
    resume: Option<(String, String)>,
    epoch: u64,
    link: Link,
    heartbeat: Duration,
    next_req: u64,
    pending: HashMap<u64, Pending>,
    publishes: BTreeMap<PublishChannel, Publish>,
    plays: BTreeMap<String, Play>,
    users: BTreeMap<String, UserInfo>,
    streams: BTreeMap<String, StreamInfo>,
    extra: BTreeMap<String, ExtraInfo>,
    /// The calls this session is in, with the other side: ended with an event of our own
    /// when the server can no longer tell us (logout, a lost room, a new server session).
    calls: BTreeMap<u64, UserInfo>,
    login_cmd: Option<CmdId>,
    attempt: u32,
    retry_since: Option<Instant>,
    retry_at: Option<Instant>,
    handshake_deadline: Option<Instant>,
    last_rx: Instant,
    next_ping: Option<Instant>,
    next_quality: Option<Instant>,
    logout_deadline: Option<Instant>,
    /// See [`Session::set_media_quality`].
    media_quality: (Option<QualityLevel>, Option<QualityLevel>),
    /// See [`Session::set_local_tracks`]: (video, audio).
    local_tracks: (TrackState, TrackState),
    pings: PingTracker,
    jitter: Jitter,
    unix_base: (Instant, u64),
    default_token: Option<String>,
    out: VecDeque<Output>,
}

impl Session {
    /// A session that is not in any room.
    pub fn new(cfg: SessionConfig, now: Instant) -> Self {
        let jitter = Jitter::new(cfg.seed);
        Session {
            cfg,
            phase: Phase::Idle,
            room: None,
            resume: None,
            epoch: 0,
            link: Link::Down,
            heartbeat: Duration::from_secs(2),
            next_req: 1,
            pending: HashMap::new(),
            publishes: BTreeMap::new(),
            plays: BTreeMap::new(),
            users: BTreeMap::new(),
            streams: BTreeMap::new(),
            extra: BTreeMap::new(),
            calls: BTreeMap::new(),
            login_cmd: None,
            attempt: 0,
            retry_since: None,
            retry_at: None,
            handshake_deadline: None,
            last_rx: now,
            next_ping: None,
            next_quality: None,
            logout_deadline: None,
            media_quality: (None, None),
            local_tracks: (TrackState::On, TrackState::On),
            pings: PingTracker::default(),
            jitter,
            unix_base: (now, 0),
            default_token: None,
            out: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`Session::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let liveness =
            (self.link == Link::Up && self.phase == Phase::Connected).then(|| self.last_rx + self.dead_after());
        [self.retry_at, self.handshake_deadline, self.next_ping, self.next_quality, self.logout_deadline, liveness]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether the session is in no room and has nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Idle
    }

    // ------------------------------------------------------------ application calls

    /// The token used when a login gives none (the profile's token mode).
    pub fn set_default_token(&mut self, token: Option<String>) {
        self.default_token = token;
    }

    /// `login_room`: completes when logged in, or with the reason it never will be.
    pub fn login(
        &mut self,
        now: Instant,
        cmd: CmdId,
        room_id: String,
        user: UserInfo,
        token: Option<String>,
        notify: bool,
    ) {
        if self.phase != Phase::Idle {
            return self.done(cmd, Err(EngineError::Invalid(ErrorCode::ALREADY_LOGGED_IN)));
        }
        let checked = ids::check_room_id(&room_id)
            .and_then(|_| ids::check_user_id(&user.user_id))
            .and_then(|_| ids::check_user_name(&user.user_name));
        if let Err(code) = checked {
            return self.done(cmd, Err(EngineError::Invalid(code)));
        }
        // As in the Express model: a user without a name is shown by its ID.
        let mut user = user;
        if user.user_name.is_empty() {
            user.user_name = user.user_id.clone();
        }
        let token = token.or_else(|| self.default_token.clone());
        if token.is_none() && self.cfg.app_sign_key.is_none() {
            return self.done(cmd, Err(EngineError::Profile("no token given and no app_sign in the profile".into())));
        }
        self.room = Some(Room { room_id, user, token, notify });
        self.login_cmd = Some(cmd);
        self.phase = Phase::Logining;
        self.attempt = 0;
        self.retry_since = None;
        self.room_state(RoomStateReason::Logining, ErrorCode::OK);
        self.connect(now);
    }

    /// `logout_room`: completes once the server confirmed (or after a short wait).
    pub fn logout(&mut self, now: Instant, cmd: CmdId) {
        if matches!(self.phase, Phase::Idle) {
            return self.done(cmd, Ok(0));
        }
        if self.phase == Phase::LoggingOut {
            return self.done(cmd, Ok(0));
        }
        let was_connected = self.phase == Phase::Connected && self.link == Link::Up;
        self.stop_all(ErrorCode::OK);
        if let Some(c) = self.login_cmd.take() {
            self.done(c, Err(EngineError::Invalid(ErrorCode::USER_LOGGED_OUT)));
        }
        if was_connected {
            // Logout is told when the server confirms it (LogoutFailed if it never does).
            let req = self.request(Pending::Logout(cmd));
            self.send(ClientMsg::Logout { req });
            self.phase = Phase::LoggingOut;
            self.logout_deadline = Some(now + LOGOUT_WAIT);
        } else {
            // The server still holds a session it cannot be told about: the others see the
            // user leave when its grace period ends.
            match self.resume.is_some() {
                true => self.room_state(RoomStateReason::LogoutFailed, ErrorCode::NETWORK_INTERRUPTED),
                false => self.room_state(RoomStateReason::Logout, ErrorCode::OK),
            }
            self.reset_to_idle();
            self.done(cmd, Ok(0));
        }
    }

    /// Sends a media offer if the room connection is up; false if it is not (try again
    /// after the next [`Output::Joined`]). `tag` comes back with the answer.
    pub fn media_offer(&mut self, stream_id: String, role: MediaRole, sdp: String, tag: u64) -> bool {
        if self.phase != Phase::Connected || self.link != Link::Up {
            return false;
        }
        let req = self.request(Pending::Media(stream_id.clone(), role, tag));
        self.send(ClientMsg::MediaOffer { req, stream_id, role, sdp });
        true
    }

    /// True while the room connection is up and the server was heard from within a heartbeat
    /// and a half: an offer sent now will get through. During a cut the connection still
    /// looks up for a few seconds (TCP keeps retrying); media must not renegotiate into it.
    pub fn signalling_fresh(&self, now: Instant) -> bool {
        self.phase == Phase::Connected
            && self.link == Link::Up
            && now.saturating_duration_since(self.last_rx) <= self.heartbeat + self.heartbeat / 2
    }

    /// Something else (a media connection) just got through to the server: the network is
    /// back. A room connection gone silent is replaced at once instead of waiting for TCP's
    /// retransmission back-off or the dead-link timer; a reconnect waiting in back-off is
    /// tried now.
    pub fn network_back(&mut self, now: Instant) {
        match (self.phase, self.link) {
            (Phase::Connected, Link::Up) if !self.signalling_fresh(now) => {
                tracing::info!("network is back but the server is silent; reconnecting now");
                self.drop_link(now, ErrorCode::NETWORK_INTERRUPTED);
                self.retry_at = Some(now);
            }
            (Phase::Reconnecting | Phase::Logining, Link::Down) if self.retry_at.is_some_and(|t| t > now) => {
                self.retry_at = Some(now);
            }
            _ => {}
        }
    }

    /// `start_publishing_stream`: completes when Publishing or refused.
    pub fn publish(&mut self, cmd: CmdId, channel: PublishChannel, stream_id: String, extra_info: String) {
        if let Err(e) =
            self.check_in_room().and_then(|_| ids::check_stream_id(&stream_id).map_err(EngineError::Invalid))
        {
            return self.done(cmd, Err(e));
        }
        if let Some(p) = self.publishes.get(&channel) {
            let r = if p.stream_id == stream_id { Ok(0) } else { Err(EngineError::Invalid(ErrorCode::CHANNEL_BUSY)) };
            return self.done(cmd, r);
        }
        if self.publishes.values().any(|p| p.stream_id == stream_id) {
            return self.done(cmd, Err(EngineError::Invalid(ErrorCode::STREAM_ID_IN_USE)));
        }
        let entry = Publish {
            stream_id: stream_id.clone(),
            extra_info,
            state: PublisherState::NoPublish,
            cmd: Some(cmd),
            sent_tracks: self.local_tracks,
        };
        self.publishes.insert(channel, entry);
        self.publisher_state(channel, PublisherState::PublishRequesting, ErrorCode::OK);
        if self.phase == Phase::Connected {
            self.send_publish(channel);
        }
    }

    /// `stop_publishing_stream`.
    pub fn stop_publish(&mut self, cmd: CmdId, channel: PublishChannel) {
        if let Some(p) = self.publishes.remove(&channel) {
            self.stream_change(StreamChange::Publisher {
                stream_id: p.stream_id.clone(),
                state: PublisherState::NoPublish,
                error_code: ErrorCode::OK,
            });
            if let Some(c) = p.cmd {
                self.done(c, Err(EngineError::Cancelled));
            }
            if self.phase == Phase::Connected {
                let req = self.request(Pending::Simple(0));
                self.send(ClientMsg::Unpublish { req, stream_id: p.stream_id });
            }
        }
        self.done(cmd, Ok(0));
    }

    /// `start_playing_stream`: completes when Playing, when waiting for the stream to be
    /// published (PlayRequesting with 1004025), or refused.
    pub fn play(&mut self, cmd: CmdId, stream_id: String) {
        if let Err(e) =
            self.check_in_room().and_then(|_| ids::check_stream_id(&stream_id).map_err(EngineError::Invalid))
        {
            return self.done(cmd, Err(e));
        }
        if self.plays.contains_key(&stream_id) {
            return self.done(cmd, Ok(0));
        }
        self.plays.insert(stream_id.clone(), Play { state: PlayerState::NoPlay, cmd: Some(cmd) });
        self.player_state(&stream_id, PlayerState::PlayRequesting, ErrorCode::OK);
        if self.phase == Phase::Connected {
            self.send_play(&stream_id);
        }
    }

    /// `stop_playing_stream`.
    pub fn stop_play(&mut self, cmd: CmdId, stream_id: &str) {
        if let Some(p) = self.plays.remove(stream_id) {
            self.stream_change(StreamChange::Player {
                stream_id: stream_id.to_string(),
                state: PlayerState::NoPlay,
                error_code: ErrorCode::OK,
            });
            if let Some(c) = p.cmd {
                self.done(c, Err(EngineError::Cancelled));
            }
            if self.phase == Phase::Connected {
                let req = self.request(Pending::Simple(0));
                self.send(ClientMsg::StopPlay { req, stream_id: stream_id.to_string() });
            }
        }
        self.done(cmd, Ok(0));
    }

    /// `set_room_extra_info`.
    pub fn set_extra_info(&mut self, cmd: CmdId, key: String, value: String) {
        if let Err(e) = self.check_connected() {
            return self.done(cmd, Err(e));
        }
        let req = self.request(Pending::Simple(cmd));
        self.send(ClientMsg::SetRoomExtraInfo { req, key, value });
    }

    /// `send_broadcast_message`: completes with the message ID.
    pub fn broadcast(&mut self, cmd: CmdId, message: String) {
        if let Err(e) = self.check_connected() {
            return self.done(cmd, Err(e));
        }
        let req = self.request(Pending::Simple(cmd));
        self.send(ClientMsg::Broadcast { req, message });
    }

    /// Rings `callees` (empty: every other member that can answer); completes with the
    /// call's ID. Its course follows as [`EngineEvent::CallStateUpdate`].
    pub fn call(&mut self, cmd: CmdId, callees: Vec<String>, order: RingOrder, ring_secs: Option<u32>) {
        if let Err(e) = self.check_connected() {
            return self.done(cmd, Err(e));
        }
        let req = self.request(Pending::Simple(cmd));
        self.send(ClientMsg::Call { req, callees, order, ring_secs });
    }

    /// Answers, declines or hangs up call `call_id`.
    pub fn call_step(&mut self, cmd: CmdId, call_id: u64, step: CallStep) {
        if let Err(e) = self.check_connected() {
            return self.done(cmd, Err(e));
        }
        let req = self.request(Pending::Simple(cmd));
        self.send(match step {
            CallStep::Answer => ClientMsg::CallAnswer { req, call_id },
            CallStep::Decline => ClientMsg::CallDecline { req, call_id },
            CallStep::HangUp => ClientMsg::CallHangup { req, call_id },
        });
    }

    /// Asks door station `user_id` to open; completes once it confirmed, or with its refusal.
    pub fn open_door(&mut self, cmd: CmdId, user_id: String) {
        if let Err(e) = self.check_connected() {
            return self.done(cmd, Err(e));
        }
        let req = self.request(Pending::Simple(cmd));
        self.send(ClientMsg::OpenDoor { req, user_id });
    }

    /// This door station's answer to a [`EngineEvent::DoorRequest`]: `Ok` opened, or why not.
    /// Fails (and the requester is told DOOR_NO_ANSWER) if the room connection is down.
    pub fn answer_door(&mut self, cmd: CmdId, request_id: u64, result: Result<(), (ErrorCode, String)>) {
        if self.phase != Phase::Connected || self.link != Link::Up {
            tracing::warn!(request_id, "door answer not sent: not connected to the room");
            return self.done(cmd, Err(EngineError::Network(ErrorCode::NETWORK_INTERRUPTED)));
        }
        let (code, message) = result.err().unwrap_or((ErrorCode::OK, String::new()));
        self.send(ClientMsg::DoorAnswer { request_id, code, message });
        self.done(cmd, Ok(0));
    }

    /// `renew_token`: kept for later logins, and sent to the server when connected.
    pub fn renew_token(&mut self, cmd: CmdId, token: String) {
        let Some(room) = self.room.as_mut() else {
            return self.done(cmd, Err(EngineError::Invalid(ErrorCode::NOT_LOGGED_IN)));
        };
        room.token = Some(token.clone());
        if self.phase == Phase::Connected {
            let req = self.request(Pending::Simple(cmd));
            self.send(ClientMsg::RenewToken { req, token });
        } else {
            self.done(cmd, Ok(0));
        }
    }

    // ------------------------------------------------------------ connection events

    /// Connection `epoch` is open. `unix_secs` is the wall clock, for AppSign tokens.
    pub fn handle_connected(&mut self, now: Instant, epoch: u64, unix_secs: u64) {
        if epoch != self.epoch || self.link != Link::Connecting {
            return;
        }
        self.link = Link::Up;
        self.last_rx = now;
        self.unix_base = (now, unix_secs);
        self.pings.reset();
        self.handshake_deadline = Some(now + self.cfg.login_timeout);
        self.handshake(unix_secs);
    }

    /// Connection `epoch` could not be opened or was lost.
    pub fn handle_disconnected(&mut self, now: Instant, epoch: u64) {
        if epoch != self.epoch || self.link == Link::Down {
            return;
        }
        self.link = Link::Down;
        self.link_lost(now, ErrorCode::NETWORK_INTERRUPTED);
    }

    /// Connection `epoch` could not be opened because the server's certificate was refused
    /// (`code`: TLS_UNKNOWN_CA, TLS_CERT_EXPIRED, TLS_NAME_MISMATCH, TLS_HANDSHAKE_FAILED).
    /// A first login fails with the code: retrying cannot help until someone fixes the
    /// certificate, the CA file or the clock, and the application must be told why. A
    /// session already in the room keeps retrying (its resume may still succeed once fixed).
    pub fn handle_connect_refused(&mut self, now: Instant, epoch: u64, code: ErrorCode) {
        if epoch != self.epoch || self.link == Link::Down {
            return;
        }
        self.link = Link::Down;
        if self.phase == Phase::Logining {
            tracing::warn!(error_code = code.0, "login failed: the server's certificate was refused");
            self.fail_room(RoomStateReason::LoginFailed, code);
        } else {
            self.link_lost(now, code);
        }
    }

    /// A message arrived on connection `epoch`.
    pub fn handle_message(&mut self, now: Instant, epoch: u64, msg: ServerMsg) {
        if epoch != self.epoch || self.link != Link::Up {
            return;
        }
        self.last_rx = now;
        match msg {
            ServerMsg::LoginOk { req, session_id, resume_token, room, heartbeat_ms, ice_servers, .. } => {
                if matches!(self.pending.remove(&req), Some(Pending::Login)) {
                    // A new server session: the calls of the old one ended there.
                    self.end_calls(ErrorCode::SESSION_EXPIRED);
                    self.resume = Some((session_id, resume_token));
                    self.heartbeat = Duration::from_millis(heartbeat_ms.clamp(100, 60_000));
                    self.out.push_back(Output::Joined { fresh: true, ice_servers });
                    self.joined(now, room);
                }
            }
            ServerMsg::Resumed { req, room, ice_servers } => {
                if matches!(self.pending.remove(&req), Some(Pending::Resume)) {
                    self.reconcile_calls(&room);
                    self.out.push_back(Output::Joined { fresh: false, ice_servers });
                    self.joined(now, room);
                }
            }
            ServerMsg::Ok { req } => self.answer(now, req, Ok(0)),
            ServerMsg::BroadcastOk { req, message_id } => self.answer(now, req, Ok(message_id)),
            ServerMsg::CallOk { req, call_id } => self.answer(now, req, Ok(call_id)),
            ServerMsg::CallIncoming { room_id, call_id, caller, ring_secs } => {
                if self.calls.insert(call_id, caller.clone()).is_none() {
                    self.emit(EngineEvent::CallIncoming { room_id, call_id, caller, ring_secs });
                }
            }
            ServerMsg::CallUpdate { room_id, call_id, state, peer, reason } => {
                match state {
                    CallPhase::Ended => {
                        // Already ended here (this engine logged out or lost its session).
                        if self.calls.remove(&call_id).is_none() {
                            return;
                        }
                    }
                    CallPhase::Answered => {
                        self.calls.insert(call_id, peer.clone());
                    }
                    CallPhase::Ringing | CallPhase::NotAnswered => {
                        self.calls.entry(call_id).or_insert_with(|| peer.clone());
                    }
                }
                self.emit(EngineEvent::CallStateUpdate { room_id, call_id, state, peer, reason });
            }
            ServerMsg::DoorRequest { room_id, request_id, from, in_call } => {
                self.emit(EngineEvent::DoorRequest { room_id, request_id, from, in_call });
            }
            ServerMsg::Error { req: Some(req), code, message } => {
                tracing::debug!(req, error_code = code.0, %message, "request refused");
                self.answer(now, req, Err(code))
            }
            ServerMsg::Error { req: None, code, message } => {
                tracing::warn!(error_code = code.0, %message, "server reported an error");
            }
            ServerMsg::Pong { seq, .. } => self.pings.pong(seq, now),
            ServerMsg::UserUpdate { update, users, reason, .. } => self.apply_users(update, users, reason),
            ServerMsg::StreamUpdate { update, streams, reason, .. } => self.apply_streams(update, streams, reason),
            ServerMsg::PlayAvailable { stream_id } => {
                if self.plays.contains_key(&stream_id) {
                    self.player_state(&stream_id, PlayerState::Playing, ErrorCode::OK);
                }
            }
            ServerMsg::PlayStopped { stream_id, code } => {
                if let Some(p) = self.plays.remove(&stream_id) {
                    self.stream_change(StreamChange::Player {
                        stream_id,
                        state: PlayerState::NoPlay,
                        error_code: code,
                    });
                    if let Some(c) = p.cmd {
                        self.done(c, Err(EngineError::Rejected(code)));
                    }
                }
            }
            ServerMsg::ExtraInfoUpdate { room_id, info } => {
                self.extra.insert(info.key.clone(), info.clone());
                self.emit(EngineEvent::RoomExtraInfoUpdate { room_id, infos: vec![info] });
            }
            ServerMsg::BroadcastMessage { room_id, message_id, from, message, send_time_ms, from_privileges } => {
                self.emit(EngineEvent::BroadcastMessage {
                    room_id,
                    from,
                    message,
                    message_id,
                    send_time_ms,
                    from_privileges,
                });
            }
            ServerMsg::NetworkQuality { room_id, users } => {
                // A peer that measured no media side (or an older one) gives its overall level.
                let side = |l: QualityLevel, overall| if l == QualityLevel::Unknown { overall } else { l };
                for u in users {
                    self.emit(EngineEvent::NetworkQuality {
                        room_id: room_id.clone(),
                        user_id: u.user_id,
                        is_local: false,
                        upstream: side(u.upstream, u.quality),
                        downstream: side(u.downstream, u.quality),
                    });
                }
            }
            ServerMsg::StreamStateUpdate { stream_id, video, audio, .. } => {
                self.apply_stream_state(&stream_id, video, audio)
            }
            ServerMsg::TokenWillExpire { room_id, remaining_secs } => {
                // AppSign: the engine holds the secret and renews by itself; the event is
                // still told, for applications that watch it.
                if let Some(token) = self.self_signed_token(now) {
                    tracing::info!(remaining_secs, "token expires soon; renewing it (AppSign)");
                    let req = self.request(Pending::Simple(0));
                    self.send(ClientMsg::RenewToken { req, token });
                }
                self.emit(EngineEvent::RoomTokenWillExpire { room_id, remaining_secs });
            }
            ServerMsg::MediaAnswer { req, stream_id, sdp } => {
                if let Some(Pending::Media(_, role, tag)) = self.pending.remove(&req) {
                    self.out.push_back(Output::MediaAnswer { stream_id, role, tag, result: Ok(sdp) });
                }
            }
            ServerMsg::Kicked { code, message } => {
                tracing::debug!(error_code = code.0, %message, "kicked out of the room; not reconnecting");
                self.fail_room(RoomStateReason::KickOut, code);
            }
        }
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.connect(now);
        }
        if self.handshake_deadline.is_some_and(|t| t <= now) {
            self.handshake_deadline = None;
            tracing::warn!("no answer to login in time; reconnecting");
            self.drop_link(now, ErrorCode::LOGIN_TIMEOUT);
        }
        if self.link == Link::Up && self.phase == Phase::Connected && self.last_rx + self.dead_after() <= now {
            tracing::warn!(
                silent_ms = now.saturating_duration_since(self.last_rx).as_millis() as u64,
                "server silent; reconnecting"
            );
            self.drop_link(now, ErrorCode::NETWORK_INTERRUPTED);
        }
        if self.next_ping.is_some_and(|t| t <= now) {
            self.next_ping = Some(now + self.heartbeat);
            if self.link == Link::Up {
                let [quality, upstream, downstream] = self.local_quality(now);
                let (upstream, downstream) = (
                    self.media_quality.0.map_or(QualityLevel::Unknown, |_| upstream),
                    self.media_quality.1.map_or(QualityLevel::Unknown, |_| downstream),
                );
                let seq = self.pings.sent(now);
                self.send(ClientMsg::Ping { seq, quality, upstream, downstream });
            }
        }
        if self.next_quality.is_some_and(|t| t <= now) {
            self.next_quality = Some(now + QUALITY_INTERVAL);
            if let Some(room) = &self.room {
                let (room_id, user_id) = (room.room_id.clone(), room.user.user_id.clone());
                let [_, upstream, downstream] = self.local_quality(now);
                self.emit(EngineEvent::NetworkQuality { room_id, user_id, is_local: true, upstream, downstream });
            }
        }
        if self.logout_deadline.is_some_and(|t| t <= now) {
            self.finish_logout(None, false);
        }
    }

    // ------------------------------------------------------------ internals

    fn unix_at(&self, now: Instant) -> u64 {
        self.unix_base.1 + now.saturating_duration_since(self.unix_base.0).as_secs()
    }

    fn dead_after(&self) -> Duration {
        self.heartbeat * 3 + Duration::from_secs(1)
    }

    /// Overall, upstream and downstream: each side is its media links' level where they
    /// exist (what the receiver reports and the player measure), else the signalling round
    /// trip's; overall is the worse side.
    fn local_quality(&self, now: Instant) -> [QualityLevel; 3] {
        if self.link != Link::Up || self.phase != Phase::Connected {
            return [QualityLevel::Die; 3];
        }
        let signalling = self.pings.level(now, self.heartbeat);
        let up = self.media_quality.0.unwrap_or(signalling);
        let down = self.media_quality.1.unwrap_or(signalling);
        [worse(up, down), up, down]
    }

    /// The media links' levels, sending and receiving side (`None`: no such link), as the
    /// media supervisor last measured them.
    pub fn set_media_quality(&mut self, upstream: Option<QualityLevel>, downstream: Option<QualityLevel>) {
        self.media_quality = (upstream, downstream);
    }

    /// The camera and microphone of every stream this session publishes, now and later
    /// (`Absent`: this engine has none). Streams already published tell the room.
    pub fn set_local_tracks(&mut self, video: TrackState, audio: TrackState) {
        if self.local_tracks == (video, audio) {
            return;
        }
        self.local_tracks = (video, audio);
        if self.phase != Phase::Connected || self.link != Link::Up {
            // Sent with the publish (or again after a resume, see `joined`).
            return;
        }
        let streams: Vec<String> = self
            .publishes
            .values()
            .filter(|p| p.state == PublisherState::Publishing)
            .map(|p| p.stream_id.clone())
            .collect();
        for stream_id in streams {
            let req = self.request(Pending::Simple(0));
            self.send(ClientMsg::SetStreamState { req, stream_id, video, audio });
        }
    }

    fn connect(&mut self, _now: Instant) {
        if self.link != Link::Down {
            self.out.push_back(Output::Close { epoch: self.epoch });
        }
        self.epoch += 1;
        self.link = Link::Connecting;
        self.out.push_back(Output::Connect { epoch: self.epoch });
    }

    fn handshake(&mut self, unix_secs: u64) {
        if let Some((session_id, resume_token)) = self.resume.clone() {
            let req = self.request(Pending::Resume);
            return self.send(ClientMsg::Resume { req, version: PROTOCOL_VERSION, session_id, resume_token });
        }
        let Some(room) = &self.room else { return };
        let (room_id, user, user_status_notify) = (room.room_id.clone(), room.user.clone(), room.notify);
        let token = match &room.token {
            Some(t) => t.clone(),
            None => self.mint(unix_secs).unwrap_or_default(),
        };
        let req = self.request(Pending::Login);
        let app_id = self.cfg.app_id;
        self.send(ClientMsg::Login {
            req,
            version: PROTOCOL_VERSION,
            app_id,
            token,
            room_id,
            user,
            user_status_notify,
        });
    }

    /// A fresh AppSign token for the room's user and room, when the engine holds the secret
    /// and the application gave no token of its own.
    fn mint(&self, unix_secs: u64) -> Option<String> {
        let room = self.room.as_ref()?;
        let key = self.cfg.app_sign_key.as_ref()?;
        if room.token.is_some() {
            return None;
        }
        let claims = Claims {
            app_id: self.cfg.app_id,
            user_id: room.user.user_id.clone(),
            room_id: Some(room.room_id.clone()),
            privileges: vec!["login".into(), "publish".into(), "play".into()],
            streams: None,
            dk: None,
            nbf: None,
            iat: unix_secs,
            exp: unix_secs + self.cfg.app_sign_ttl.as_secs(),
        };
        auth::mint(key, &claims).ok()
    }

    fn self_signed_token(&self, now: Instant) -> Option<String> {
        self.mint(self.unix_at(now))
    }

    /// Login or resume answered: we are in the room.
    fn joined(&mut self, now: Instant, room: RoomSnapshot) {
        self.handshake_deadline = None;
        self.retry_since = None;
        self.attempt = 0;
        self.next_ping = Some(now + self.heartbeat);
        self.next_quality.get_or_insert(now + QUALITY_INTERVAL);
        let reason =
            if self.phase == Phase::Logining { RoomStateReason::Logined } else { RoomStateReason::Reconnected };
        self.phase = Phase::Connected;
        self.room_state(reason, ErrorCode::OK);
        if let Some(c) = self.login_cmd.take() {
            self.done(c, Ok(0));
        }
        self.apply_snapshot(room);
        let channels: Vec<PublishChannel> = self.publishes.keys().copied().collect();
        for ch in channels {
            self.send_publish(ch);
        }
        let streams: Vec<String> = self.plays.keys().cloned().collect();
        for s in streams {
            self.send_play(&s);
        }
    }
}

mod outcome;
mod view;

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
