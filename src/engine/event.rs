//! Everything the engine tells the application, as one `#[non_exhaustive]` event enum.

use crate::proto::{ErrorCode, ExtraInfo, QualityLevel, StreamInfo, UpdateType, UserInfo};

/// Connection state of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomState {
    /// Not in the room.
    Disconnected,
    /// Logging in or reconnecting.
    Connecting,
    /// In the room.
    Connected,
}

/// Why the room state changed; each reason implies its [`RoomState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomStateReason {
    /// Logging in (Connecting).
    Logining,
    /// Logged in (Connected).
    Logined,
    /// Login failed for good (Disconnected).
    LoginFailed,
    /// The connection dropped; retrying (Connecting).
    Reconnecting,
    /// Back in the room after a drop (Connected).
    Reconnected,
    /// Gave up reconnecting, or the server refused the re-login (Disconnected).
    ReconnectFailed,
    /// Kicked out by the server (Disconnected). The engine does not reconnect.
    KickOut,
    /// Logged out (Disconnected).
    Logout,
    /// Logout could not be confirmed by the server (Disconnected all the same).
    LogoutFailed,
}

impl RoomStateReason {
    /// The room state this reason implies.
    pub fn state(self) -> RoomState {
        use RoomStateReason::*;
        match self {
            Logining | Reconnecting => RoomState::Connecting,
            Logined | Reconnected => RoomState::Connected,
            LoginFailed | ReconnectFailed | KickOut | Logout | LogoutFailed => RoomState::Disconnected,
        }
    }
}

/// State of one published stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PublisherState {
    /// Not publishing.
    NoPublish,
    /// Asking the server (first time, or again after a network fault).
    PublishRequesting,
    /// Published.
    Publishing,
}

/// State of one played stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlayerState {
    /// Not playing.
    NoPlay,
    /// Asking the server, waiting for the stream to be published, or retrying after a fault.
    PlayRequesting,
    /// Playing.
    Playing,
}

/// Which publishing channel (a user may publish several streams: main camera, aux).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PublishChannel {
    /// The main channel.
    #[default]
    Main,
    /// The auxiliary channel.
    Aux,
}

/// An event from the engine. Every variant names the room or stream it is about.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// The room's connection state changed.
    RoomStateChanged {
        /// The room.
        room_id: String,
        /// The new state.
        state: RoomState,
        /// Why.
        reason: RoomStateReason,
        /// 0, or the error that caused it.
        error_code: ErrorCode,
    },
    /// Other users joined or left (only with `is_user_status_notify`; never about yourself).
    RoomUserUpdate {
        /// The room.
        room_id: String,
        /// Add or Delete.
        update: UpdateType,
        /// The users.
        users: Vec<UserInfo>,
    },
    /// Other users' streams were published or withdrawn: the cue to play or stop playing.
    RoomStreamUpdate {
        /// The room.
        room_id: String,
        /// Add or Delete.
        update: UpdateType,
        /// The streams with their user and extra info.
        streams: Vec<StreamInfo>,
        /// Why a stream was deleted (0 for add or a plain stop).
        reason: ErrorCode,
    },
    /// The room's extra info changed.
    RoomExtraInfoUpdate {
        /// The room.
        room_id: String,
        /// The changed keys.
        infos: Vec<ExtraInfo>,
    },
    /// A broadcast message from another user in the room.
    BroadcastMessage {
        /// The room.
        room_id: String,
        /// Sender.
        from: UserInfo,
        /// Text.
        message: String,
        /// Server-assigned ID.
        message_id: u64,
        /// Server time, Unix ms.
        send_time_ms: u64,
    },
    /// A published stream's state changed.
    PublisherStateUpdate {
        /// The stream.
        stream_id: String,
        /// The new state.
        state: PublisherState,
        /// 0, or the error that caused it.
        error_code: ErrorCode,
    },
    /// A played stream's state changed.
    PlayerStateUpdate {
        /// The stream.
        stream_id: String,
        /// The new state.
        state: PlayerState,
        /// 0, or the error that caused it (1004025: waiting for the stream).
        error_code: ErrorCode,
    },
    /// Network quality of a user, every 2 s (yourself with `is_local`).
    NetworkQuality {
        /// The room.
        room_id: String,
        /// The user.
        user_id: String,
        /// Whether this is the local user.
        is_local: bool,
        /// Upstream quality.
        upstream: QualityLevel,
        /// Downstream quality.
        downstream: QualityLevel,
    },
    /// The token expires soon: call [`Engine::renew_token`](super::Engine::renew_token).
    RoomTokenWillExpire {
        /// The room.
        room_id: String,
        /// Seconds left.
        remaining_secs: u64,
    },
}
