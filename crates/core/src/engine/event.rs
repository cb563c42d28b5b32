//! Everything the engine tells the application, as one `#[non_exhaustive]` event enum.

use crate::proto::{CallPhase, ErrorCode, ExtraInfo, QualityLevel, StreamInfo, TrackState, UpdateType, UserInfo};

/// One played stream's sound level.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSoundLevel {
    /// The stream.
    pub stream_id: String,
    /// As received, 0..=100 (the publisher's voice: a speaking indicator).
    pub level: f32,
    /// As played here, after the speaker switch and the volume, 0..=100.
    pub played: f32,
}

/// Connection state of the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum RoomState {
    /// Not in the room.
    #[default]
    Disconnected,
    /// Logging in or reconnecting.
    Connecting,
    /// In the room.
    Connected,
}

/// Why the room state changed; each reason implies its [`RoomState`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum PublisherState {
    /// Not publishing.
    #[default]
    NoPublish,
    /// Asking the server (first time, or again after a network fault).
    PublishRequesting,
    /// Published.
    Publishing,
}

/// State of one played stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub enum PlayerState {
    /// Not playing.
    #[default]
    NoPlay,
    /// Asking the server, waiting for the stream to be published, or retrying after a fault.
    PlayRequesting,
    /// Playing.
    Playing,
}

/// The variant names, as `callbox status` shows them and its JSON carries them.
macro_rules! state_names {
    ($t:ty { $($v:ident),* }) => {
        impl $t {
            /// The state's name (`Connected`, `Publishing`, ...).
            pub fn as_str(self) -> &'static str {
                match self { $(<$t>::$v => stringify!($v)),* }
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
state_names!(RoomState { Disconnected, Connecting, Connected });
state_names!(PublisherState { NoPublish, PublishRequesting, Publishing });
state_names!(PlayerState { NoPlay, PlayRequesting, Playing });

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
        /// Why they left (Delete): USER_LOGGED_OUT, HEARTBEAT_TIMEOUT (power cut, network
        /// gone past the grace period), KICKED_*; 0 for Add, and for a leave that happened
        /// while this engine's own connection was down.
        reason: ErrorCode,
    },
    /// A played or listed stream's camera was switched on or off by its publisher
    /// (`Absent` when it has no video at all is told with the stream, not here).
    RemoteCameraStateUpdate {
        /// The room.
        room_id: String,
        /// The stream.
        stream_id: String,
        /// Its video now.
        state: TrackState,
    },
    /// A stream's microphone was muted or unmuted by its publisher.
    RemoteMicStateUpdate {
        /// The room.
        room_id: String,
        /// The stream.
        stream_id: String,
        /// Its audio now.
        state: TrackState,
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
        /// The sender's token privileges that devices act on (`door`), vouched for by the
        /// server.
        from_privileges: Vec<String>,
    },
    /// A call rings here: [`Engine::answer_call`](super::Engine) or `decline_call`. The
    /// caller's stream may be played while it rings (early video).
    CallIncoming {
        /// The room.
        room_id: String,
        /// The call.
        call_id: u64,
        /// Who calls.
        caller: UserInfo,
        /// How long it rings before it times out, seconds.
        ring_secs: u32,
    },
    /// A step of a call this engine is in: a callee rings, did not answer, answered, or the
    /// call ended (`reason`: CALL_DECLINED, CALL_CANCELLED, CALL_TIMED_OUT, CALL_HUNG_UP,
    /// CALL_BUSY, CALL_PEER_OFFLINE, CALL_ANSWERED_ELSEWHERE; SESSION_EXPIRED or the room's
    /// error when this engine's own session ended).
    CallStateUpdate {
        /// The room.
        room_id: String,
        /// The call.
        call_id: u64,
        /// What happened.
        state: CallPhase,
        /// The other side of this step.
        peer: UserInfo,
        /// Why, for `NotAnswered` and `Ended`; 0 otherwise.
        reason: ErrorCode,
    },
    /// Someone asks this door station to open its door (the server checked their right):
    /// answer with [`Engine::answer_door`](super::Engine) within a few seconds.
    DoorRequest {
        /// The room.
        room_id: String,
        /// Echo it in the answer.
        request_id: u64,
        /// Who asks.
        from: UserInfo,
        /// Whether they are in an answered call with this station.
        in_call: bool,
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
    /// The captured sound level (after the microphone switch), every interval asked for
    /// with `start_sound_level_monitor`.
    CapturedSoundLevelUpdate {
        /// 0..=100 (see [`sound_level`](crate::engine::media::sound_level)).
        level: f32,
    },
    /// The sound level of each played stream, with the captured one.
    RemoteSoundLevelUpdate {
        /// One per played stream that has audio.
        levels: Vec<StreamSoundLevel>,
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
    /// Publishing quality, every 3 s while a stream is published with media.
    PublisherQualityUpdate {
        /// The stream.
        stream_id: String,
        /// The figures.
        quality: PublishQuality,
    },
    /// Playing quality, every 3 s while a stream is played with media.
    PlayerQualityUpdate {
        /// The stream.
        stream_id: String,
        /// The figures.
        quality: PlayQuality,
    },
    /// A first-frame or stall/resume moment of a stream's media.
    MediaEvent {
        /// The stream.
        stream_id: String,
        /// What happened.
        event: MediaEventKind,
    },
    /// The publish pipeline failed (element error, device gone, encoder stall) and is being
    /// rebuilt; after repeated hardware encoder failures the next encoder is tried.
    PublisherMediaError {
        /// The stream.
        stream_id: String,
        /// MEDIA_PIPELINE_FAILED or MEDIA_ENCODER_STALLED.
        error_code: ErrorCode,
        /// What failed.
        message: String,
    },
    /// The encoder chosen for a published stream, and why.
    PublisherEncoder {
        /// The stream.
        stream_id: String,
        /// GStreamer element name.
        encoder: String,
        /// A hardware encoder.
        hardware: bool,
        /// Why this one.
        reason: String,
    },
    /// A published stream's picture stepped down or up in size or frame rate to follow its
    /// link (`[video] adaptive`); bitrate changes alone show in the quality updates.
    PublisherVideoAdapted {
        /// The stream.
        stream_id: String,
        /// What the video is held to now.
        rate: crate::media::VideoRate,
        /// Why: the target against the step's threshold.
        reason: String,
    },
}

/// Media moments of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MediaEventKind {
    /// Publisher: the first video frame was captured.
    CapturedFirstFrame,
    /// Player: the first video frame arrived.
    ReceivedFirstFrame,
    /// Player: the first video frame was decoded and rendered.
    RenderedFirstFrame,
    /// Player: no video frame for 500 ms.
    VideoStall,
    /// Player: video flows again after a stall.
    VideoResume,
    /// Player: no audio for 500 ms.
    AudioStall,
    /// Player: audio flows again.
    AudioResume,
}

/// Publishing figures over the last interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishQuality {
    /// Frames captured per second.
    pub capture_fps: f64,
    /// Frames encoded per second.
    pub encode_fps: f64,
    /// Frames sent per second.
    pub send_fps: f64,
    /// Video bitrate sent, kbit/s.
    pub video_kbps: f64,
    /// Audio bitrate sent, kbit/s.
    pub audio_kbps: f64,
    /// Round trip to the server, ms.
    pub rtt_ms: f64,
    /// Fraction of packets lost, 0..1.
    pub packet_loss: f64,
    /// Overall level.
    pub level: QualityLevel,
    /// A hardware encoder is in use.
    pub hardware_encoder: bool,
    /// The encoder element.
    pub encoder: String,
    /// How media reaches the server: `udp`, or `tcp` (ICE-TCP, where UDP does not pass).
    pub path: String,
    /// The send-side estimate of the path to the server, kbit/s (0: none yet).
    pub estimate_kbps: f64,
    /// The lowest estimate among the stream's players, as the server reports it, kbit/s
    /// (0: no player's estimate known).
    pub cap_kbps: f64,
    /// The encoder's bitrate now, kbit/s.
    pub target_kbps: f64,
    /// The encoded picture's width now (adaptation may halve it).
    pub width: u32,
    /// The encoded picture's height now.
    pub height: u32,
    /// The encoded frame rate now (adaptation may halve it).
    pub fps: u32,
    /// Video packets sent again because the server asked (NACK), since publishing started.
    pub retransmitted: u64,
    /// The share of lost packets Opus's in-band FEC is sized for now, percent (0: off).
    pub audio_fec_percent: u32,
}

/// Playing figures over the last interval.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PlayQuality {
    /// The decoded picture's width, pixels (0: no video decoded).
    pub width: u32,
    /// The decoded picture's height, pixels.
    pub height: u32,
    /// Frames received per second.
    pub receive_fps: f64,
    /// Frames decoded per second.
    pub decode_fps: f64,
    /// Frames rendered per second.
    pub render_fps: f64,
    /// Video bitrate received, kbit/s.
    pub video_kbps: f64,
    /// Audio bitrate received, kbit/s.
    pub audio_kbps: f64,
    /// Round trip to the server, ms.
    pub rtt_ms: f64,
    /// Fraction of packets lost, 0..1.
    pub packet_loss: f64,
    /// Jitter buffer target delay, ms.
    pub jitter_buffer_ms: f64,
    /// Video stalls (500 ms without a frame) so far.
    pub stall_count: u64,
    /// Time spent stalled so far, ms.
    pub stall_ms: u64,
    /// Frames decoded since playing started.
    pub frames_decoded: u64,
    /// Audio buffers decoded since playing started.
    pub audio_decoded: u64,
    /// Overall level.
    pub level: QualityLevel,
    /// How media arrives from the server: `udp`, or `tcp` (ICE-TCP).
    pub path: String,
    /// Video packets that arrived as retransmissions, since playing started.
    pub video_retransmitted: u64,
    /// Video packets rebuilt from FlexFEC, since playing started.
    pub video_fec_rebuilt: u64,
    /// Video packets lost for good (not repaired), since playing started.
    pub video_lost: u64,
    /// Audio frames lost on the way, since playing started.
    pub audio_lost: u64,
    /// Of those, frames the decoder had to conceal (the rest Opus's in-band FEC rebuilt).
    pub audio_concealed: u64,
    /// Video frames whose playout time came, since playing started.
    pub video_frames: u64,
    /// Of those, frames that arrived whole in time and follow an intact frame (or are a
    /// keyframe): shown without damage.
    pub video_frames_intact: u64,
    /// Runs of damaged frames of 200 ms or more, since playing started.
    pub video_freezes: u64,
}
