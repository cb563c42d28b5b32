//! The server's pure parts: the registry (rooms, sessions, streams, WHIP/WHEP resources, as a
//! sans-IO state machine) and what it runs on: its configuration, rate limits, device keys
//! the counters of `/metrics` and the webhooks' outbox.

pub mod config;
pub mod device_keys;
pub mod limits;
pub mod metrics;
pub mod registry;
pub mod webhooks;
