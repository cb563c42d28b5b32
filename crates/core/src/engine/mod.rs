//! The engine's pure rules: its error type, quality grading and the reconnect policy.

pub mod error;
pub mod quality;
pub mod reconnect;
