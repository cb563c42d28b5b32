//! The engine's media shell: the [`MediaRunner`] owns GStreamer and the media connections
//! and carries out the [`MediaSupervisor`]'s commands (the supervisor, its rules and its
//! vocabulary are sans-IO and live in `callbox_core::engine::media`).

mod rtp_slot;
pub(crate) mod runner;

pub use callbox_core::engine::media::*;
pub(crate) use runner::MediaRunner;

/// The supervisor and its runner for a media configuration; `ca_file`: the room
/// connection's CA, also trusted for TURN over TLS.
pub(crate) fn parts(cfg: EngineMedia, ca_file: Option<std::path::PathBuf>) -> (MediaSupervisor, MediaRunner) {
    let present: Present = Box::new(crate::media::has_element);
    (MediaSupervisor::new(cfg.config.clone(), cfg.bind, present), MediaRunner::new(cfg.config, ca_file))
}
