//! The engine's sans-IO cores: [`core::EngineCore`], which composes the signalling
//! [`session::Session`] (login, rooms, streams, resume, back-off) and the
//! [`media::MediaSupervisor`] (links, pipelines, adaptation, stalls), with the events they tell
//! the application, the engine's error type, quality grading and the reconnect policy. The
//! `callbox` crate's driver task and media runner carry out what they decide.

#[cfg(test)]
mod call_tests;
pub mod core;
pub mod error;
pub mod event;
pub mod media;
pub mod quality;
pub mod reconnect;
pub mod session;
