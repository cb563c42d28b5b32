//! The engine: the Express call model as an async Rust API.
//!
//! [`Engine::create`] returns the engine and its event receiver; calls are async and return
//! when the server answered. Inside, [`session::Session`] is the sans-IO state machine and
//! [`driver`] the tokio task that connects it to the WebSocket.

mod backlog;
mod driver;
mod media;
use callbox_core::engine::core;
pub use callbox_core::engine::{event, session};

pub use crate::proto::{
    CallPhase, Capability, ErrorCode, ExtraInfo, MemberKind, QualityLevel, RingOrder, StreamInfo, TrackState,
    UpdateType, UserInfo,
};
pub use backlog::BACKLOG;
pub use callbox_core::engine::media::{MAX_VOLUME, PlayCounts, sound_level};
pub(crate) use callbox_core::engine::{error, reconnect};
pub use driver::{Auth, CallOptions, EVENT_CHANNEL, Engine, EngineProfile, RoomConfig};
pub use error::EngineError;
pub use event::{
    EngineEvent, MediaEventKind, PlayQuality, PlayerState, PublishChannel, PublishQuality, PublisherState, RoomState,
    RoomStateReason, StreamSoundLevel,
};
pub use reconnect::ReconnectPolicy;
