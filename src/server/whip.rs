//! WHIP (RFC 9725) and WHEP over HTTP: standard tools (OBS, GStreamer's whipsink/whepsrc,
//! browsers, aiortc) publish into a room or play a room's stream without the signalling
//! protocol.
//!
//! - `POST /whip/v1/{app_id}/{room_id}/{stream_id}` (`Content-Type: application/sdp`,
//!   `Authorization: Bearer <token with publish>`): `201 Created`, `Location` of the
//!   session, the SDP answer. The stream appears in the room as published by the token's
//!   user. `DELETE` on the Location ends it; so does the publisher's media going away (ICE
//!   failed) for [`REAP_AFTER`](super::registry::REAP_AFTER).
//! - `POST /whep/v1/{app_id}/{room_id}/{stream_id}` (bearer token with play): the same for
//!   playback; `DELETE` on the Location ends it.
//!
//! This module only parses HTTP: each request goes to the hub like any other client's
//! message ([`Hub::http`]), and the registry decides, talks to the media relay and answers.
//!
//! Refusals carry a JSON body `{"code", "name", "message"}`: 400 bad SDP or IDs, 401 missing,
//! invalid or expired token, 403 privilege/room/stream not allowed, 404 unknown app or
//! stream, 409 stream already published, 415 not `application/sdp`, 429 too many offers for
//! the app (`[limits] whip_per_sec`, `whip_burst`), 503 no media relay.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::http_error::{bearer, refused};
use super::hub::Hub;
use super::registry::{HttpAnswer, HttpMedia, Refusal, RefusalKind as K};
use crate::proto::{ErrorCode, MediaRole};

/// Largest SDP offer accepted.
pub const MAX_SDP: usize = 64 * 1024;

/// The offer's SDP and the bearer token, or the refusal.
fn offer_and_token(headers: &HeaderMap, body: &Bytes) -> Result<(String, String), Refusal> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")) {
        let why = "Content-Type must be application/sdp";
        return Err(Refusal::new(K::UnsupportedType, ErrorCode::MEDIA_OFFER_REJECTED, why));
    }
    let token = bearer(headers)
        .ok_or_else(|| Refusal::new(K::Unauthenticated, ErrorCode::TOKEN_INVALID, "missing bearer token"))?;
    if body.len() > MAX_SDP {
        return Err(Refusal::new(K::TooLarge, ErrorCode::MEDIA_OFFER_REJECTED, "SDP offer over 64 KB"));
    }
    let sdp = std::str::from_utf8(body)
        .ok()
        .filter(|s| s.trim_start().starts_with("v=0"))
        .ok_or_else(|| Refusal::new(K::Invalid, ErrorCode::MEDIA_OFFER_REJECTED, "the body is not an SDP offer"))?;
    Ok((sdp.to_string(), token))
}

fn answer(a: Result<HttpAnswer, Refusal>) -> Response {
    match a {
        Ok(HttpAnswer::Created { location, sdp }) => {
            let mut r = (StatusCode::CREATED, sdp).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
            if let Ok(v) = HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            r
        }
        Ok(HttpAnswer::Ended | HttpAnswer::DoorOpened) => StatusCode::OK.into_response(),
        Err(r) => refused(r),
    }
}

async fn post(
    hub: Hub,
    role: MediaRole,
    app: String,
    room_id: String,
    stream_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = offer_and_token(&headers, &body).and_then(|(sdp, token)| {
        let app_id = app.parse().map_err(|_| Refusal::new(K::NotFound, ErrorCode::APP_ID_MISMATCH, "no such app"))?;
        Ok(HttpMedia::Offer { role, app_id, room_id, stream_id, token, sdp })
    });
    match request {
        Ok(req) => answer(hub.http(req).await),
        Err(r) => refused(r),
    }
}

/// `POST /whip/v1/{app_id}/{room_id}/{stream_id}`.
pub async fn whip_post(
    State(hub): State<Hub>,
    Path((app, room_id, stream_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post(hub, MediaRole::Publish, app, room_id, stream_id, headers, body).await
}

/// `POST /whep/v1/{app_id}/{room_id}/{stream_id}`.
pub async fn whep_post(
    State(hub): State<Hub>,
    Path((app, room_id, stream_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post(hub, MediaRole::Play, app, room_id, stream_id, headers, body).await
}

/// `DELETE /whip/v1/{app_id}/{room_id}/{stream_id}/{session}`.
pub async fn whip_delete(
    State(hub): State<Hub>,
    Path((_app, _room, _stream, resource)): Path<(String, String, String, String)>,
) -> Response {
    answer(hub.http(HttpMedia::End { role: MediaRole::Publish, resource }).await)
}

/// `DELETE /whep/v1/{app_id}/{room_id}/{stream_id}/{session}`.
pub async fn whep_delete(
    State(hub): State<Hub>,
    Path((_app, _room, _stream, resource)): Path<(String, String, String, String)>,
) -> Response {
    answer(hub.http(HttpMedia::End { role: MediaRole::Play, resource }).await)
}
