//! The signalling protocol between engines (or browsers) and `callbox server`: messages,
//! ID rules and the numeric error codes. Pure data, no I/O. Documented in `docs/protocol.md`.

mod codes;
pub mod ice_servers;
pub mod ids;
mod messages;

pub use codes::ErrorCode;
pub use messages::*;
