//! callbox-core: every sans-IO core of callbox and the pure data they speak.
//!
//! A core is a plain struct: time and input go in, outputs and the next deadline come out.
//! It owns no socket, reads no clock and spawns nothing, so its tests run in virtual time.
//! This crate depends on no async runtime, HTTP stack, GStreamer, GPIO crate or TLS stack
//! (`scripts/check-layers.sh`, run by `make test`, keeps it so); the `callbox` crate holds the
//! tasks that drive these cores and re-exports them under the same paths.
//!
//! - [`proto`]: the wire protocol, ID rules, error codes and ICE server descriptions;
//! - [`auth`]: token mint/verify; [`url`]: the one server-URL type; [`config_file`]: TOML
//!   loading with the key named in errors;
//! - [`engine`]: the signalling session, its events, and the engine's error, quality and
//!   reconnect rules;
//! - [`media`]: the media vocabulary (configuration, encoder chain, video rate, pipeline rules);
//! - [`rtc`]: the media vocabulary and the WebRTC cores (`SfuCore`, `ClientCore`, loss repair,
//!   keyframe pacing, STUN, TURN);
//! - [`device`]: the call controller, the button detector and the device's I/O vocabulary;
//! - [`server`]: the registry and what it runs on (config, rate limits, device keys, metrics).
#![deny(missing_docs)]

pub mod auth;
pub mod config_file;
pub mod device;
pub mod engine;
pub mod media;
pub mod net;
pub mod proto;
pub mod rtc;
pub mod server;
pub mod url;
