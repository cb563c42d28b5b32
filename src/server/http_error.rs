//! The HTTP edge's shared helpers: the JSON error body, the bearer token, and a registry
//! refusal mapped to its response. The admin API (`http.rs`) and WHIP/WHEP (`whip.rs`) both
//! answer with these, so neither imports the other.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::registry::{Refusal, RefusalKind};
use crate::proto::ErrorCode;

/// A JSON error body `{"code", "name", "message"}` with `status`.
pub(super) fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    (status, Json(json!({"code": code.0, "name": code.name(), "message": message}))).into_response()
}

/// The bearer token of `Authorization: Bearer <token>` (the scheme in any case, RFC 7235).
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The HTTP status of a kind of refusal: the one place the registry's refusals meet HTTP.
pub(super) fn status(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::Invalid => StatusCode::BAD_REQUEST,
        RefusalKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        RefusalKind::UnsupportedType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        RefusalKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        RefusalKind::Forbidden => StatusCode::FORBIDDEN,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::Conflict => StatusCode::CONFLICT,
        RefusalKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        RefusalKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        RefusalKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
    }
}

/// A registry refusal as its HTTP response.
pub(super) fn refused(r: Refusal) -> Response {
    error(status(r.kind), r.code, &r.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_refusal_has_its_status() {
        let all = [
            (RefusalKind::Invalid, 400),
            (RefusalKind::Unauthenticated, 401),
            (RefusalKind::Forbidden, 403),
            (RefusalKind::NotFound, 404),
            (RefusalKind::Conflict, 409),
            (RefusalKind::TooLarge, 413),
            (RefusalKind::UnsupportedType, 415),
            (RefusalKind::RateLimited, 429),
            (RefusalKind::Internal, 500),
            (RefusalKind::Unavailable, 503),
            (RefusalKind::Timeout, 504),
        ];
        for (kind, code) in all {
            assert_eq!(status(kind).as_u16(), code, "{kind:?}");
        }
    }
}
