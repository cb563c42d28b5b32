//! callbox: room-based real-time calls for Linux single-board computers.
//!
//! One package, three parts:
//! - the **engine** ([`engine`]): the Express call model (rooms, users, streams; login,
//!   publish, play; state, user, stream and network events; automatic reconnect) as an async
//!   Rust API with one event stream;
//! - the **room server** ([`server`]): rooms, authentication and the signalling that enforces
//!   the call model's rules;
//! - the **device daemon** (`callbox device`, later issues): the board's persistent login,
//!   capture, GPIO and systemd integration.
//!
//! Map: [`proto`] is the wire protocol and error codes (pure data); [`auth`] mints and verifies
//! tokens; [`engine`] and [`server::registry`] hold their logic as sans-IO state machines
//! driven by thin tokio tasks.
#![deny(missing_docs)]

/// The build identity: the package version and the git commit (`0.1.0 (3f2a9c1b7e10)`).
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_COMMIT_ID"), ")");

pub mod auth;
pub mod config_file;
pub mod device;
pub mod dial;
pub mod engine;
pub mod faultnet;
pub mod media;
pub mod proto;
pub mod rtc;
pub mod server;
pub mod tls;
pub mod url;
