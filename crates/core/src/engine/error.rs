//! The engine's error type.

use crate::proto::ErrorCode;

/// Why an engine call failed. Every variant maps to a numeric [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// An argument was refused before anything was sent (bad ID, not logged in, ...).
    #[error("invalid request: {0}")]
    Invalid(ErrorCode),
    /// The server refused the request.
    #[error("rejected by the server: {0}")]
    Rejected(ErrorCode),
    /// The network failed for longer than the reconnect policy allows.
    #[error("network: {0}")]
    Network(ErrorCode),
    /// The engine was destroyed.
    #[error("the engine was destroyed")]
    Destroyed,
    /// A start call was superseded by the matching stop call before it completed.
    #[error("cancelled by a later stop call")]
    Cancelled,
    /// The profile is unusable.
    #[error("invalid engine profile: {0}")]
    Profile(String),
}

impl EngineError {
    /// The numeric code.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Invalid(c) | EngineError::Rejected(c) | EngineError::Network(c) => *c,
            EngineError::Destroyed => ErrorCode::ENGINE_DESTROYED,
            EngineError::Cancelled => ErrorCode::REQUEST_CANCELLED,
            EngineError::Profile(_) => ErrorCode::PROFILE_INVALID,
        }
    }
}
