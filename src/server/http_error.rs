//! The HTTP edge's shared helpers: the JSON error body, the bearer token, and a registry
//! refusal mapped to its response. The admin API (`http.rs`) and WHIP/WHEP (`whip.rs`) both
//! answer with these, so neither imports the other.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::registry::Refusal;
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

/// A registry refusal as its HTTP response.
pub(super) fn refused(r: Refusal) -> Response {
    error(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.code, &r.message)
}
