//! Why the registry refuses a request, as a domain error: what kind of refusal it is, the
//! callbox code and a message. The HTTP edge maps the kind to a status
//! (`server::http_error`); signalling sends the code and message as an `error`. The registry
//! itself knows nothing of HTTP.

use crate::proto::ErrorCode;

/// What kind of refusal: the part of the answer a transport maps to its own status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// The request is malformed (an ID, a body, an offer).
    Invalid,
    /// The body is larger than accepted.
    TooLarge,
    /// The body is not of the accepted type.
    UnsupportedType,
    /// No credentials, or they do not check out.
    Unauthenticated,
    /// The credentials check out but do not allow this.
    Forbidden,
    /// No such app, room, stream or resource.
    NotFound,
    /// The name is taken, or the user is elsewhere.
    Conflict,
    /// Too many requests; retry later.
    RateLimited,
    /// The server cannot do this now (no media relay, shutting down).
    Unavailable,
    /// What the request waits for did not answer in time (a door station).
    Timeout,
    /// A bug: a lookup failed that should not (counted and logged).
    Internal,
}

/// A refused request. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What kind of refusal.
    pub kind: RefusalKind,
    /// The callbox error code.
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

impl Refusal {
    /// A refusal of `kind` with `code`.
    pub fn new(kind: RefusalKind, code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal { kind, code, message: message.into() }
    }

    /// The answer to a request that hit a registry bug.
    pub fn internal() -> Self {
        Refusal::new(RefusalKind::Internal, ErrorCode::SERVER_INTERNAL, "internal error; retry")
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code.name(), self.code.0, self.message)
    }
}

impl std::error::Error for Refusal {}
