//! callbox: room-based real-time calls for Linux single-board computers.
//!
//! One package, one binary, three parts:
//! - the **engine** ([`engine`]): the Express call model (rooms, users, streams; login,
//!   publish, play; state, user, stream and network events; automatic reconnect) as an async
//!   Rust API with one event stream;
//! - the **room server** ([`server`]): rooms, authentication, the signalling that enforces
//!   the call model's rules, the SFU, WHIP/WHEP, the admin API and metrics;
//! - the **device daemon** ([`device`], `callbox device`): the board's persistent login,
//!   capture and playback, GPIO, the control socket, systemd and journald.
//!
//! Map: the sans-IO cores and the pure data they speak live in the `callbox-core` crate and
//! are re-exported here under their old paths ([`proto`], [`auth`], [`url`], [`config_file`],
//! and inside [`engine`], [`rtc`], [`server`], [`device`]); this crate holds the shells that
//! drive them: tokio tasks, sockets ([`dial`], [`rtc`]), TLS ([`tls`]), GStreamer ([`media`]),
//! GPIO backends, the daemon and the CLI (docs/architecture.md).
#![deny(missing_docs)]

/// The build identity: the package version and the git commit (`0.1.0 (3f2a9c1b7e10)`).
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BUILD_COMMIT_ID"), ")");

pub(crate) mod deadline;
pub mod device;
pub mod dial;
pub mod engine;
pub mod logging;
pub mod media;
pub mod rtc;
pub mod server;
pub mod tls;
pub use callbox_core::{auth, config_file, proto, url};
