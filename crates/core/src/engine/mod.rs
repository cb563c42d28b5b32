//! The engine's pure parts: the signalling [`session::Session`] (login, rooms, streams,
//! resume, back-off) as a sans-IO core, the events it tells the application, its error
//! type, quality grading, the reconnect policy and the video rate a stream is held to.

pub mod error;
pub mod event;
pub mod quality;
pub mod reconnect;
pub mod session;
pub mod video_rate;
