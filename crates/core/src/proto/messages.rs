//! The signalling messages: JSON objects with a `"type"` tag, over WebSocket at `/ws/v1`.
//!
//! Unknown fields are ignored (newer peers may add fields within a protocol version); an
//! unknown `type` is an error. Requests carry a client-chosen `req` number echoed by the
//! answer (`ok`, `login_ok`, `resumed`, `broadcast_ok` or `error`).

use serde::{Deserialize, Serialize};

use super::ErrorCode;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// A user as seen by the room.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserInfo {
    /// Unique within the app.
    pub user_id: String,
    /// Display name, free text.
    #[serde(default)]
    pub user_name: String,
    /// A person (a page, an app) or a device; said by the member at login. Absent on the
    /// wire for a person.
    #[serde(default, skip_serializing_if = "MemberKind::is_person")]
    pub kind: MemberKind,
    /// What the member can do, said at login (at most [`MAX_CAPS`]; names this build does
    /// not know are dropped). Absent when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "known_caps")]
    pub caps: Vec<Capability>,
}

impl UserInfo {
    /// A person with no capabilities.
    pub fn new(user_id: String, user_name: String) -> Self {
        UserInfo { user_id, user_name, kind: MemberKind::Person, caps: Vec::new() }
    }

    /// A device with these capabilities.
    pub fn device(user_id: String, user_name: String, caps: Vec<Capability>) -> Self {
        UserInfo { user_id, user_name, kind: MemberKind::Device, caps }
    }

    /// Whether the member said it can do `cap`.
    pub fn can(&self, cap: Capability) -> bool {
        self.caps.contains(&cap)
    }
}

/// The most capabilities a member may list.
pub const MAX_CAPS: usize = 8;

/// What a member is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberKind {
    /// A person: a browser page, an app.
    #[default]
    Person,
    /// A device: a door station, an indoor unit, a kiosk.
    Device,
}

impl MemberKind {
    /// Whether this is a person.
    pub fn is_person(&self) -> bool {
        *self == MemberKind::Person
    }
}

/// What a member can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Takes calls: rung by a call that names no callee ("everyone who can answer").
    Answer,
    /// Has a door relay: `open_door` may name it.
    Door,
    /// Sends video.
    Camera,
    /// Shows video.
    Display,
    /// A name this build does not know (dropped when read).
    #[serde(other)]
    Unknown,
}

fn known_caps<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Capability>, D::Error> {
    let mut caps: Vec<Capability> = Vec::deserialize(d)?;
    caps.retain(|c| *c != Capability::Unknown);
    caps.sort_unstable();
    caps.dedup();
    if caps.len() > MAX_CAPS {
        return Err(serde::de::Error::custom("too many capabilities"));
    }
    Ok(caps)
}

/// How a call to several callees rings them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RingOrder {
    /// All at once; the first to answer takes the call, the others stop ringing.
    #[default]
    Together,
    /// One after another, each for the ring time; a decline, busy or offline callee passes
    /// the call to the next at once.
    InTurn,
}

/// Where a call is, as told to its members by `call_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// To the caller: `peer` is ringing now.
    Ringing,
    /// To the caller: `peer` did not take the call (`reason` says why); the call goes on
    /// with the callees left.
    NotAnswered,
    /// To both: `peer` is the other side of the answered call.
    Answered,
    /// To both: the call is over (`reason` says why).
    Ended,
}

/// A published stream as seen by the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// Unique within the app.
    pub stream_id: String,
    /// The user publishing it.
    pub user: UserInfo,
    /// Free text set by the publisher.
    #[serde(default)]
    pub extra_info: String,
    /// Whether its video is sent now (`off`: the camera is switched off; `absent`: the
    /// stream has no video at all, e.g. a lift intercom without a camera). Absent on the
    /// wire means `on`.
    #[serde(default, skip_serializing_if = "TrackState::is_on")]
    pub video: TrackState,
    /// Whether its audio is sent now (`off`: the microphone is muted; `absent`: no audio).
    #[serde(default, skip_serializing_if = "TrackState::is_on")]
    pub audio: TrackState,
}

impl StreamInfo {
    /// A stream with video and audio on.
    pub fn new(stream_id: String, user: UserInfo, extra_info: String) -> Self {
        StreamInfo { stream_id, user, extra_info, video: TrackState::On, audio: TrackState::On }
    }
}

/// Whether one track (video or audio) of a stream is being sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackState {
    /// Sent.
    #[default]
    On,
    /// Switched off by the publisher for now (camera off, microphone muted): nothing or
    /// silence is sent, and it may come back without a new publish.
    Off,
    /// The stream has no such track (an audio-only or video-only stream).
    Absent,
}

impl TrackState {
    /// `On`.
    pub fn is_on(&self) -> bool {
        *self == TrackState::On
    }

    /// The wire name: `on`, `off` or `absent`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackState::On => "on",
            TrackState::Off => "off",
            TrackState::Absent => "absent",
        }
    }

    /// `On` or `Off` (a track that exists).
    pub fn on(on: bool) -> Self {
        if on { TrackState::On } else { TrackState::Off }
    }
}

/// One key of the room's extra info.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraInfo {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// Who set it last.
    pub update_user: UserInfo,
    /// When it was set, Unix milliseconds (server clock).
    pub update_time_ms: u64,
}

/// What a room looks like, sent on login and resume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    /// The room.
    pub room_id: String,
    /// Other users in the room (never yourself). Empty unless the session asked for user
    /// updates (`user_status_notify`).
    pub users: Vec<UserInfo>,
    /// Every stream published in the room, your own included.
    pub streams: Vec<StreamInfo>,
    /// The room's extra info.
    pub extra_info: Vec<ExtraInfo>,
    /// The call this session is in now, if any: on `resumed`, what a client that missed
    /// messages while its connection was down needs to catch up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call: Option<Box<CallSnapshot>>,
    /// The session's most recent call that ended, with why (on `resumed`: a call that ended
    /// while the connection was down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_call: Option<Box<EndedCall>>,
}

/// A call as it stands, for one of its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallSnapshot {
    /// The call.
    pub call_id: u64,
    /// This session placed it.
    pub caller: bool,
    /// It was answered.
    pub answered: bool,
    /// The other side: the caller (to a callee), the callee that answered (to the caller);
    /// absent for a caller whose call still rings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<UserInfo>,
}

/// A call that ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndedCall {
    /// The call.
    pub call_id: u64,
    /// The other side of its end.
    pub peer: UserInfo,
    /// Why it ended.
    pub reason: ErrorCode,
}

/// Add or delete, for user and stream updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateType {
    /// Appeared.
    Add,
    /// Went away.
    Delete,
}

/// Network quality level, from best to worst, plus Unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, Default)]
#[serde(rename_all = "snake_case")]
pub enum QualityLevel {
    /// RTT < 100 ms and no loss.
    Excellent,
    /// RTT < 200 ms and loss < 5 %.
    Good,
    /// RTT < 400 ms and loss < 10 %.
    Medium,
    /// Worse than Medium.
    Bad,
    /// No answer for several heartbeats.
    Die,
    /// Not measured yet.
    #[default]
    Unknown,
}

impl QualityLevel {
    /// The level's wire name: `excellent`, `good`, `medium`, `bad`, `die` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            QualityLevel::Excellent => "excellent",
            QualityLevel::Good => "good",
            QualityLevel::Medium => "medium",
            QualityLevel::Bad => "bad",
            QualityLevel::Die => "die",
            QualityLevel::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for QualityLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user's network quality, as reported by its own engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserQuality {
    /// The user.
    pub user_id: String,
    /// Its quality level: the worse of `upstream` and `downstream` where it measured them,
    /// else its signalling round trip's.
    pub quality: QualityLevel,
    /// Its sending side: its publish links' loss and round trip as its receiver reports
    /// say, and its bandwidth estimate against the target; `unknown` when it publishes
    /// nothing.
    #[serde(default)]
    pub upstream: QualityLevel,
    /// Its receiving side: what its play links lose and their round trip; `unknown` when it
    /// plays nothing.
    #[serde(default)]
    pub downstream: QualityLevel,
}

/// Messages from a client (engine, browser) to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Log in to a room. Answer: `login_ok` or `error`.
    Login {
        /// Request number.
        req: u64,
        /// Protocol version, must be [`PROTOCOL_VERSION`].
        version: u32,
        /// The app.
        app_id: u32,
        /// A JWT signed with the app secret.
        token: String,
        /// The room to join (created if absent).
        room_id: String,
        /// Who is logging in.
        user: UserInfo,
        /// Whether this session wants `user_update` messages.
        #[serde(default)]
        user_status_notify: bool,
    },
    /// Re-attach to a session after a dropped connection. Answer: `resumed` or `error`.
    Resume {
        /// Request number.
        req: u64,
        /// Protocol version.
        version: u32,
        /// From `login_ok`.
        session_id: String,
        /// From `login_ok`.
        resume_token: String,
    },
    /// Leave the room. Answer: `ok`, then the server closes the connection.
    Logout {
        /// Request number.
        req: u64,
    },
    /// Heartbeat; answered by `pong`. Carries the sender's own network quality.
    Ping {
        /// Sequence number, echoed.
        seq: u64,
        /// The client's measured quality level.
        #[serde(default = "unknown_quality")]
        quality: QualityLevel,
        /// Its sending side's level (see [`UserQuality::upstream`]).
        #[serde(default)]
        upstream: QualityLevel,
        /// Its receiving side's level (see [`UserQuality::downstream`]).
        #[serde(default)]
        downstream: QualityLevel,
    },
    /// Announce a stream. Answer: `ok` or `error`.
    Publish {
        /// Request number.
        req: u64,
        /// The stream.
        stream_id: String,
        /// Free text for players.
        #[serde(default)]
        extra_info: String,
        /// The video's state from the start (`absent`: an audio-only stream).
        #[serde(default, skip_serializing_if = "TrackState::is_on")]
        video: TrackState,
        /// The audio's state from the start (`absent`: a video-only stream).
        #[serde(default, skip_serializing_if = "TrackState::is_on")]
        audio: TrackState,
    },
    /// A published stream's camera or microphone was switched on or off (a track that is
    /// absent stays absent). Answer: `ok`; the others in the room get `stream_state_update`.
    SetStreamState {
        /// Request number.
        req: u64,
        /// The stream (published by this session).
        stream_id: String,
        /// The video's state now.
        video: TrackState,
        /// The audio's state now.
        audio: TrackState,
    },
    /// Withdraw a stream. Answer: `ok`.
    Unpublish {
        /// Request number.
        req: u64,
        /// The stream.
        stream_id: String,
    },
    /// Subscribe to a stream. Answer: `ok` (it is published) or `error` 1004025 (not yet; the
    /// subscription is kept and `play_available` follows when it is published).
    Play {
        /// Request number.
        req: u64,
        /// The stream.
        stream_id: String,
    },
    /// Unsubscribe. Answer: `ok`.
    StopPlay {
        /// Request number.
        req: u64,
        /// The stream.
        stream_id: String,
    },
    /// Set one key of the room's extra info. Answer: `ok`; others get `extra_info_update`.
    SetRoomExtraInfo {
        /// Request number.
        req: u64,
        /// Key, < 128 bytes.
        key: String,
        /// Value, < 1024 bytes.
        value: String,
    },
    /// Send a text to everyone else in the room. Answer: `broadcast_ok`.
    Broadcast {
        /// Request number.
        req: u64,
        /// Text, 1..=1024 bytes.
        message: String,
    },
    /// Replace the session's token before it expires. Answer: `ok` or `error`.
    RenewToken {
        /// Request number.
        req: u64,
        /// The new token (same app, user and room).
        token: String,
    },
    /// A WebRTC offer for one stream: to send it (`publish`, after `publish` was accepted)
    /// or to receive it (`play`, after `play` was accepted). Candidates are in the SDP.
    /// Answer: `media_answer` or `error`. A new offer replaces the session's earlier media
    /// connection for the same stream and role.
    MediaOffer {
        /// Request number.
        req: u64,
        /// The stream.
        stream_id: String,
        /// Which way media flows.
        role: MediaRole,
        /// The SDP offer.
        sdp: String,
    },
    /// Ring members of the room. Answer: `call_ok` with the call's ID, or `error`; the call's
    /// course follows as `call_update` messages.
    Call {
        /// Request number.
        req: u64,
        /// User IDs to ring (at most 16); empty rings every other member that can `answer`.
        #[serde(default)]
        callees: Vec<String>,
        /// All together or one after another.
        #[serde(default)]
        order: RingOrder,
        /// How long each callee rings, seconds (5..=120); absent: the server's `[calls]
        /// ring_secs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ring_secs: Option<u32>,
    },
    /// Take a call that rings here. Answer: `ok` or `error`.
    CallAnswer {
        /// Request number.
        req: u64,
        /// From `call_incoming`.
        call_id: u64,
    },
    /// Refuse a call that rings here. Answer: `ok` or `error`.
    CallDecline {
        /// Request number.
        req: u64,
        /// From `call_incoming`.
        call_id: u64,
    },
    /// End a call: the caller cancels one still ringing; either side hangs up one answered.
    /// Answer: `ok` or `error`.
    CallHangup {
        /// Request number.
        req: u64,
        /// The call.
        call_id: u64,
    },
    /// Ask one door station to open its door. Answer: `ok` once the door confirmed, or
    /// `error` with the door's refusal, the server's (no right, not a door, offline) or
    /// DOOR_NO_ANSWER after a few seconds.
    OpenDoor {
        /// Request number.
        req: u64,
        /// The door station's user ID.
        user_id: String,
    },
    /// A door station's answer to `door_request`: code 0 opened, otherwise why not.
    DoorAnswer {
        /// From `door_request`.
        request_id: u64,
        /// 0, or DOOR_RELAY_FAULT and the like.
        #[serde(default)]
        code: ErrorCode,
        /// Why not, for the requester.
        #[serde(default)]
        message: String,
    },
}

/// Which way media flows on a media connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MediaRole {
    /// Client to server.
    Publish,
    /// Server to client.
    Play,
}

fn unknown_quality() -> QualityLevel {
    QualityLevel::Unknown
}

/// Messages from the server to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Login accepted.
    LoginOk {
        /// Echo of the request number.
        req: u64,
        /// Identifies the session for `resume`.
        session_id: String,
        /// Secret needed to resume.
        resume_token: String,
        /// The room as it is now.
        room: RoomSnapshot,
        /// Send a `ping` this often.
        heartbeat_ms: u64,
        /// The session survives this long without messages.
        grace_secs: u64,
        /// Server clock, Unix milliseconds.
        server_time_ms: u64,
        /// TURN servers with credentials for this user, valid for a while (`[media]
        /// turn_urls`); absent when the server names none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<crate::proto::ice_servers::IceServer>,
    },
    /// Resume accepted: the session, its streams and subscriptions are as they were.
    Resumed {
        /// Echo of the request number.
        req: u64,
        /// The room as it is now.
        room: RoomSnapshot,
        /// Fresh TURN credentials, as in `login_ok`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        ice_servers: Vec<crate::proto::ice_servers::IceServer>,
    },
    /// A request succeeded.
    Ok {
        /// Echo of the request number.
        req: u64,
    },
    /// A broadcast was delivered to the room.
    BroadcastOk {
        /// Echo of the request number.
        req: u64,
        /// Server-assigned message number.
        message_id: u64,
    },
    /// A request failed, or a message could not be understood (then `req` is absent).
    Error {
        /// Echo of the request number, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<u64>,
        /// Numeric code (see docs/protocol.md).
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
    /// Heartbeat answer.
    Pong {
        /// Echo of `ping.seq`.
        seq: u64,
        /// Server clock, Unix milliseconds.
        server_time_ms: u64,
    },
    /// Users joined or left (only to sessions with `user_status_notify`).
    UserUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update: UpdateType,
        /// Who.
        users: Vec<UserInfo>,
        /// Why (delete only): USER_LOGGED_OUT, HEARTBEAT_TIMEOUT, KICKED_*; 0 for add.
        reason: ErrorCode,
    },
    /// Streams were published or withdrawn.
    StreamUpdate {
        /// The room.
        room_id: String,
        /// Add or delete.
        update: UpdateType,
        /// Which streams.
        streams: Vec<StreamInfo>,
        /// Why (delete only); 0 for add and for a plain unpublish.
        reason: ErrorCode,
    },
    /// A stream's camera or microphone was switched on or off by its publisher.
    StreamStateUpdate {
        /// The room.
        room_id: String,
        /// The stream.
        stream_id: String,
        /// Its video's state now.
        video: TrackState,
        /// Its audio's state now.
        audio: TrackState,
    },
    /// A subscribed stream that was not published is now published.
    PlayAvailable {
        /// The stream.
        stream_id: String,
    },
    /// A subscribed stream went away; the subscription is dropped.
    PlayStopped {
        /// The stream.
        stream_id: String,
        /// Why (STREAM_DELETED).
        code: ErrorCode,
    },
    /// A key of the room extra info changed (not sent to the user who set it).
    ExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The new value.
        info: ExtraInfo,
    },
    /// A broadcast from another user in the room.
    BroadcastMessage {
        /// The room.
        room_id: String,
        /// Server-assigned message number.
        message_id: u64,
        /// The sender.
        from: UserInfo,
        /// The text.
        message: String,
        /// Server clock, Unix milliseconds.
        send_time_ms: u64,
        /// Privileges of the sender's token that devices act on: `door` (a door station opens
        /// its door for an `open_door` message only when this lists `door`). Set by the
        /// server, never by the sender; absent when empty.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        from_privileges: Vec<String>,
    },
    /// Network quality of the other users in the room, every 2 s.
    NetworkQuality {
        /// The room.
        room_id: String,
        /// One entry per other user.
        users: Vec<UserQuality>,
    },
    /// The session's token expires soon; send `renew_token`.
    TokenWillExpire {
        /// The room.
        room_id: String,
        /// Seconds left.
        remaining_secs: u64,
    },
    /// The server's WebRTC answer to a `media_offer`.
    MediaAnswer {
        /// Echo of the request number.
        req: u64,
        /// The stream.
        stream_id: String,
        /// The SDP answer (ICE-lite, host candidates on the server's one media port).
        sdp: String,
    },
    /// A call was placed.
    CallOk {
        /// Echo of the request number.
        req: u64,
        /// The call, named by every later `call_update`.
        call_id: u64,
    },
    /// A call rings here: answer with `call_answer` or `call_decline`. The caller's stream,
    /// if it publishes one, may be played while ringing (early video).
    CallIncoming {
        /// The room.
        room_id: String,
        /// The call.
        call_id: u64,
        /// Who calls.
        caller: UserInfo,
        /// How long it rings here before it times out, seconds.
        ring_secs: u32,
    },
    /// A step of a call this session is in. See [`CallPhase`].
    CallUpdate {
        /// The room.
        room_id: String,
        /// The call.
        call_id: u64,
        /// What happened.
        state: CallPhase,
        /// The other side of this step.
        peer: UserInfo,
        /// Why (`not_answered` and `ended`): CALL_DECLINED, CALL_CANCELLED, CALL_TIMED_OUT,
        /// CALL_HUNG_UP, CALL_BUSY, CALL_PEER_OFFLINE, CALL_ANSWERED_ELSEWHERE; 0 otherwise.
        reason: ErrorCode,
    },
    /// Someone asks this door station to open its door (the server checked their right);
    /// answer with `door_answer`.
    DoorRequest {
        /// The room.
        room_id: String,
        /// Echo it in `door_answer`.
        request_id: u64,
        /// Who asks.
        from: UserInfo,
        /// Whether they are in an answered call with this station.
        in_call: bool,
    },
    /// The session was ended by the server; the connection closes next. Do not reconnect.
    Kicked {
        /// KICKED_DUPLICATE_LOGIN or KICKED_BY_ADMIN.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl ClientMsg {
    /// A publish with video and audio on.
    pub fn publish(req: u64, stream_id: impl Into<String>, extra_info: impl Into<String>) -> Self {
        let (stream_id, extra_info) = (stream_id.into(), extra_info.into());
        ClientMsg::Publish { req, stream_id, extra_info, video: TrackState::On, audio: TrackState::On }
    }

    /// A heartbeat with the overall quality only (sides not measured).
    pub fn ping(seq: u64, quality: QualityLevel) -> Self {
        ClientMsg::Ping { seq, quality, upstream: QualityLevel::Unknown, downstream: QualityLevel::Unknown }
    }
}

impl ServerMsg {
    /// Builds an error answer.
    pub fn error(req: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error { req, code, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape() {
        let m: ClientMsg = serde_json::from_str(
            r#"{"type":"login","req":1,"version":1,"app_id":7,"token":"t","room_id":"r",
                "user":{"user_id":"u"},"future_field":true}"#,
        )
        .unwrap();
        assert!(matches!(m, ClientMsg::Login { user_status_notify: false, .. }));
        let s = serde_json::to_string(&ServerMsg::error(Some(3), ErrorCode::STREAM_ID_IN_USE, "x")).unwrap();
        assert_eq!(s, r#"{"type":"error","req":3,"code":1003028,"message":"x"}"#);
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"nope"}"#).is_err());
        let p: ClientMsg = serde_json::from_str(r#"{"type":"ping","seq":4}"#).unwrap();
        assert_eq!(
            p,
            ClientMsg::Ping {
                seq: 4,
                quality: QualityLevel::Unknown,
                upstream: QualityLevel::Unknown,
                downstream: QualityLevel::Unknown
            }
        );
        let s: StreamInfo =
            serde_json::from_str(r#"{"stream_id":"s","user":{"user_id":"u"},"video":"absent"}"#).unwrap();
        assert_eq!((s.video, s.audio), (TrackState::Absent, TrackState::On));
        let plain = StreamInfo::new("s".into(), UserInfo::new("u".into(), "u".into()), String::new());
        assert!(!serde_json::to_string(&plain).unwrap().contains("video"), "on is the default, not sent");
    }

    #[test]
    fn members_say_what_they_are_and_unknown_capabilities_are_dropped() {
        let u: UserInfo =
            serde_json::from_str(r#"{"user_id":"door","kind":"device","caps":["door","teleport","door","camera"]}"#)
                .unwrap();
        assert_eq!((u.kind, u.caps.clone()), (MemberKind::Device, vec![Capability::Door, Capability::Camera]));
        // A person with no capabilities looks as it did before members said what they are.
        let plain = serde_json::to_string(&UserInfo::new("desk".into(), "Desk".into())).unwrap();
        assert_eq!(plain, r#"{"user_id":"desk","user_name":"Desk"}"#);
        let many = r#"{"user_id":"x","caps":["answer","door","camera","display","answer2","a","b","c","d","e"]}"#;
        assert!(serde_json::from_str::<UserInfo>(many).is_ok(), "unknown names do not count");
        let c: ClientMsg = serde_json::from_str(r#"{"type":"call","req":1}"#).unwrap();
        assert_eq!(c, ClientMsg::Call { req: 1, callees: vec![], order: RingOrder::Together, ring_secs: None });
        assert!(serde_json::from_str::<ClientMsg>(r#"{"type":"call","req":1,"order":"random"}"#).is_err());
        let d: ClientMsg = serde_json::from_str(r#"{"type":"door_answer","request_id":3}"#).unwrap();
        assert_eq!(d, ClientMsg::DoorAnswer { request_id: 3, code: ErrorCode::OK, message: String::new() });
    }
}
