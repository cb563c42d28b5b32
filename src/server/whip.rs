//! WHIP (RFC 9725) and WHEP over HTTP: standard tools (OBS, GStreamer's whipsink/whepsrc,
//! browsers, aiortc) publish into a room or play a room's stream without the signalling
//! protocol.
//!
//! - `POST /whip/v1/{app_id}/{room_id}/{stream_id}` (`Content-Type: application/sdp`,
//!   `Authorization: Bearer <token with publish>`): `201 Created`, `Location` of the
//!   session, the SDP answer. The stream appears in the room as published by user
//!   `whip-<stream_id>`. `DELETE` on the Location ends it; so does the publisher's media
//!   going away (ICE failed) for [`REAP_AFTER`].
//! - `POST /whep/v1/{app_id}/{room_id}/{stream_id}` (bearer token with play): the same for
//!   playback; `DELETE` on the Location ends it.
//!
//! Refusals carry a JSON body `{"code", "name", "message"}`: 400 bad SDP or IDs, 401 missing,
//! invalid or expired token, 403 privilege/room/stream not allowed, 404 unknown app or
//! stream, 409 stream already published, 415 not `application/sdp`, 429 too many offers for
//! the app (`[limits] whip_per_sec`, `whip_burst`), 503 no media relay.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::http_error::{bearer, refused};
use super::hub::Hub;
use super::registry::Refusal;
use crate::proto::ErrorCode;
use crate::proto::MediaRole;
use crate::rtc::sfu::{MediaOffer, Sfu};

/// A WHIP session whose media connection is gone for this long is ended.
pub const REAP_AFTER: Duration = Duration::from_secs(15);
/// Largest SDP offer accepted.
pub const MAX_SDP: usize = 64 * 1024;

fn bad(status: StatusCode, code: ErrorCode, message: &str) -> Refusal {
    Refusal { status: status.as_u16(), code, message: message.to_string() }
}

/// The offer's SDP and the bearer token, or the refusal.
fn offer_and_token(headers: &HeaderMap, body: &Bytes) -> Result<(String, String), Refusal> {
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp")) {
        return Err(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MEDIA_OFFER_REJECTED,
            "Content-Type must be application/sdp",
        ));
    }
    let token = bearer(headers)
        .ok_or_else(|| bad(StatusCode::UNAUTHORIZED, ErrorCode::TOKEN_INVALID, "missing bearer token"))?;
    if body.len() > MAX_SDP {
        return Err(bad(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::MEDIA_OFFER_REJECTED, "SDP offer over 64 KB"));
    }
    let sdp = std::str::from_utf8(body)
        .ok()
        .filter(|s| s.trim_start().starts_with("v=0"))
        .ok_or_else(|| bad(StatusCode::BAD_REQUEST, ErrorCode::MEDIA_OFFER_REJECTED, "the body is not an SDP offer"))?;
    Ok((sdp.to_string(), token))
}

fn created(location: String, answer: String) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    r
}

/// What both POSTs check first: the offer, the token, the app ID and that media is on.
fn request(hub: &Hub, app: &str, headers: &HeaderMap, body: &Bytes) -> Result<(String, String, u32, Sfu), Refusal> {
    let (sdp, token) = offer_and_token(headers, body)?;
    let app_id = app.parse().map_err(|_| bad(StatusCode::NOT_FOUND, ErrorCode::APP_ID_MISMATCH, "no such app"))?;
    let sfu = hub.sfu().cloned().ok_or_else(|| {
        bad(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media")
    })?;
    Ok((sdp, token, app_id, sfu))
}

/// What the registry answered, or that the hub is gone (shutting down).
fn registry<T>(answer: Option<Result<T, Refusal>>) -> Result<T, Refusal> {
    answer
        .unwrap_or_else(|| Err(bad(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down")))
}

fn too_many() -> Refusal {
    bad(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RATE_LIMITED, "too many WHIP/WHEP offers for this app; retry later")
}

fn offer_rejected(e: impl std::fmt::Display) -> Refusal {
    bad(StatusCode::BAD_REQUEST, ErrorCode::MEDIA_OFFER_REJECTED, &format!("offer rejected: {e}"))
}

/// `POST /whip/v1/{app_id}/{room_id}/{stream_id}`.
pub async fn whip_post(
    State(hub): State<Hub>,
    Path((app, room_id, stream_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    whip(hub, app, room_id, stream_id, headers, body).await.unwrap_or_else(refused)
}

async fn whip(
    hub: Hub,
    app: String,
    room_id: String,
    stream_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (sdp, token, app_id, sfu) = request(&hub, &app, &headers, &body)?;
    let (r, s) = (room_id.clone(), stream_id.clone());
    let (sid, key) = registry(hub.with(move |reg, now| reg.whip_start(app_id, &r, &s, &token, now)).await)?;
    // The budget is taken after the token checked out, so garbage cannot spend it.
    if !hub.whip_allowed(app_id) {
        hub.with(move |reg, _| reg.whip_end(&sid)).await;
        return Err(too_many());
    }
    match sfu
        .offer(MediaOffer {
            session: super::registry::whip_media_session(&sid),
            stream: key,
            role: MediaRole::Publish,
            sdp,
        })
        .await
    {
        Ok(answer) => Ok(created(format!("/whip/v1/{app_id}/{room_id}/{stream_id}/{sid}"), answer)),
        Err(e) => {
            hub.with(move |reg, _| reg.whip_end(&sid)).await;
            Err(offer_rejected(e))
        }
    }
}

/// `DELETE /whip/v1/{app_id}/{room_id}/{stream_id}/{session}`.
pub async fn whip_delete(
    State(hub): State<Hub>,
    Path((_app, _room, _stream, sid)): Path<(String, String, String, String)>,
) -> Response {
    let sid_media = sid.clone();
    if hub.with(move |reg, _| reg.whip_end(&sid)).await.unwrap_or(false) {
        if let Some(sfu) = hub.sfu() {
            sfu.end_session(&super::registry::whip_media_session(&sid_media));
        }
        StatusCode::OK.into_response()
    } else {
        refused(bad(StatusCode::NOT_FOUND, ErrorCode::STREAM_NOT_FOUND, "no such WHIP session"))
    }
}

/// `POST /whep/v1/{app_id}/{room_id}/{stream_id}`.
pub async fn whep_post(
    State(hub): State<Hub>,
    Path((app, room_id, stream_id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    whep(hub, app, room_id, stream_id, headers, body).await.unwrap_or_else(refused)
}

async fn whep(
    hub: Hub,
    app: String,
    room_id: String,
    stream_id: String,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let (sdp, token, app_id, sfu) = request(&hub, &app, &headers, &body)?;
    let (r, s) = (room_id.clone(), stream_id.clone());
    let key = registry(hub.with(move |reg, now| reg.whep_check(app_id, &r, &s, &token, now)).await)?;
    if !hub.whip_allowed(app_id) {
        return Err(too_many());
    }
    let id = hex::encode(rand::random::<[u8; 16]>());
    let answer = sfu
        .offer(MediaOffer { session: format!("whep-{id}"), stream: key, role: MediaRole::Play, sdp })
        .await
        .map_err(offer_rejected)?;
    Ok(created(format!("/whep/v1/{app_id}/{room_id}/{stream_id}/{id}"), answer))
}

/// `DELETE /whep/v1/{app_id}/{room_id}/{stream_id}/{session}`.
pub async fn whep_delete(
    State(hub): State<Hub>,
    Path((_app, _room, _stream, id)): Path<(String, String, String, String)>,
) -> Response {
    let Some(sfu) = hub.sfu() else {
        return refused(bad(StatusCode::NOT_FOUND, ErrorCode::STREAM_NOT_FOUND, "no such WHEP session"));
    };
    let session = format!("whep-{id}");
    if sfu.session_alive(&session).await {
        sfu.end_session(&session);
        StatusCode::OK.into_response()
    } else {
        refused(bad(StatusCode::NOT_FOUND, ErrorCode::STREAM_NOT_FOUND, "no such WHEP session"))
    }
}

/// Ends WHIP sessions whose media connection has been gone for [`REAP_AFTER`] (a publisher
/// that vanished without DELETE), so the room does not keep a ghost stream.
pub async fn reap(hub: Hub) {
    let Some(sfu) = hub.sfu().cloned() else { return };
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Some(sessions) = hub.with(|reg, now| reg.whip_sessions(now.at)).await else { return };
        for (sid, age) in sessions {
            if age >= REAP_AFTER && !sfu.session_alive(&super::registry::whip_media_session(&sid)).await {
                tracing::info!("WHIP publisher's media is gone; ending its session");
                hub.with(move |reg, _| reg.whip_end(&sid)).await;
            }
        }
    }
}
