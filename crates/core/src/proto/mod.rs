//! The signalling protocol between engines (or browsers) and `callbox server`: messages,
//! ID rules and the numeric error codes. Pure data, no I/O. Documented in `docs/protocol.md`.

mod codes;
pub mod ice_servers;
pub mod ids;
mod messages;

pub use codes::ErrorCode;
pub use messages::*;

/// A stream as the server names it app-wide: app, room and stream ID. The registry, the
/// SFU and (later) a cluster's shared store all key streams by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The AppID.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The stream.
    pub stream_id: String,
}
