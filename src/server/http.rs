//! HTTP routes: `/ws/v1` (signalling), `/healthz`, `/metrics`, the admin API under
//! `/api/v1/apps/{app_id}/...` (bearer token with the `admin` privilege), and WHIP/WHEP
//! under `/whip/v1/...` and `/whep/v1/...` ([`super::whip`]).

use axum::Json;
use axum::Router;
use axum::extract::{Path, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::json;

use super::http_error::{bearer, error, refused};
use super::hub::Hub;
use super::{whip, ws};
use crate::auth;
use crate::proto::ErrorCode;

/// The browser page (web/index.html), embedded in the binary.
const PAGE: &str = include_str!("../../web/index.html");
/// The page may not be framed: with `?token=..&autojoin=1` it publishes camera and
/// microphone at once, and another site must not be able to do that in a hidden frame.
/// Its script and style are inline (one file, no build step).
const PAGE_CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; \
     connect-src 'self' ws: wss: https:; img-src 'self' data: blob:; media-src 'self' blob:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

async fn page() -> Response {
    (
        [
            (header::CONTENT_SECURITY_POLICY, PAGE_CSP),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        axum::response::Html(PAGE),
    )
        .into_response()
}
/// Lifetime of a token from `/dev/token`.
const DEV_TOKEN_SECS: u64 = 600;

/// Builds the router; `dev` adds `GET /dev/token`; `desks` are the front-desk accounts
/// (`/desk/info`, `/desk/login`, `/desk/renew`).
pub fn router(hub: Hub, dev: bool, desks: std::sync::Arc<super::desk::Desks>) -> Router {
    let desk_routes = Router::new()
        .route("/desk/info", get(super::desk::info))
        .route("/desk/login", post(super::desk::login))
        .route("/desk/renew", post(super::desk::renew))
        .with_state((hub.clone(), desks, dev));
    let r = Router::new()
        .route("/", get(page))
        .route("/ws/v1", get(signalling))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/v1/apps/{app_id}/rooms", get(list_rooms))
        .route("/api/v1/apps/{app_id}/rooms/{room_id}", get(room))
        .route("/api/v1/apps/{app_id}/rooms/{room_id}/users/{user_id}", delete(kick))
        .route("/api/v1/apps/{app_id}/rooms/{room_id}/users/{user_id}/door", post(open_door))
        .route("/api/v1/apps/{app_id}/rooms/{room_id}/streams/{stream_id}/snapshot.jpg", get(snapshot))
        .route("/api/v1/apps/{app_id}/device-keys", post(create_device_key).get(list_device_keys))
        .route("/api/v1/apps/{app_id}/device-keys/{id}", delete(revoke_device_key))
        .route("/api/v1/token", post(device_token))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/whip/v1/{app_id}/{room_id}/{stream_id}", post(whip::whip_post))
        .route("/whip/v1/{app_id}/{room_id}/{stream_id}/{session}", delete(whip::whip_delete))
        .route("/whep/v1/{app_id}/{room_id}/{stream_id}", post(whip::whep_post))
        .route("/whep/v1/{app_id}/{room_id}/{stream_id}/{session}", delete(whip::whep_delete));
    let r = if dev { r.route("/dev/token", get(dev_token)) } else { r };
    r.with_state(hub).merge(desk_routes).layer(axum::middleware::from_fn(cap_body))
}

/// The largest request body of any endpoint: an SDP offer or a JSON request is far
/// smaller, and a body is held in memory whole.
pub const MAX_BODY: usize = 64 * 1024;

/// Answers 413 (BODY_TOO_LARGE) to a request whose `Content-Length` is over [`MAX_BODY`],
/// before its handler runs (even one that reads no body); a chunked body is cut at the cap.
async fn cap_body(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        let why = format!("the body is over {} KiB", MAX_BODY / 1024);
        let mut r = error(StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::BODY_TOO_LARGE, &why);
        // The rest of the body is not read: the connection cannot carry another request.
        r.headers_mut().insert(header::CONNECTION, axum::http::HeaderValue::from_static("close"));
        return r;
    }
    let req = req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, MAX_BODY)));
    next.run(req).await
}

/// `GET /dev/token?app_id=1234&room=R&user=U` (dev mode only): a 10-minute token for the dev
/// app with login, publish, play and door, bound to the room and user.
async fn dev_token(
    State(hub): State<Hub>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let (room, user) = (q.get("room").cloned().unwrap_or_default(), q.get("user").cloned().unwrap_or_default());
    if q.get("app_id").is_some_and(|a| a != &super::DEV_APP_ID.to_string()) {
        return error(StatusCode::NOT_FOUND, ErrorCode::APP_ID_MISMATCH, "dev tokens are only for app 1234");
    }
    if let Err(code) = crate::proto::ids::check_room_id(&room).and_then(|_| crate::proto::ids::check_user_id(&user)) {
        return error(StatusCode::BAD_REQUEST, code, "room and user must be valid IDs");
    }
    let Some(key) = hub.with(|reg, _| reg.app_key(super::DEV_APP_ID).map(<[u8]>::to_vec)).await.flatten() else {
        return error(StatusCode::NOT_FOUND, ErrorCode::APP_ID_MISMATCH, "the dev app is not configured");
    };
    let now = auth::unix_now();
    let claims = auth::Claims {
        app_id: super::DEV_APP_ID,
        user_id: user.clone(),
        room_id: Some(room.clone()),
        privileges: ["login", "publish", "play", "door"].map(String::from).to_vec(),
        streams: None,
        nbf: None,
        dk: None,
        iat: now,
        exp: now + DEV_TOKEN_SECS,
    };
    match auth::mint(&key, &claims) {
        Ok(token) => Json(json!({"app_id": super::DEV_APP_ID, "room_id": room, "user_id": user, "token": token,
            "expires_in": DEV_TOKEN_SECS}))
        .into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::SERVER_INTERNAL, &e.to_string()),
    }
}

/// `{"status":"ok","version":"0.1.0 (commit)","media_port":7882,"media_tcp_port":7882}`
/// (`media_port` absent when media is off, `media_tcp_port` when ICE-TCP is).
async fn healthz(State(hub): State<Hub>) -> Json<serde_json::Value> {
    match hub.sfu() {
        Some(sfu) => {
            let mut v = json!({"status": "ok", "version": crate::BUILD, "media_port": sfu.addr.port()});
            if let Some(tcp) = sfu.tcp_addr {
                v["media_tcp_port"] = json!(tcp.port());
            }
            Json(v)
        }
        None => Json(json!({"status": "ok", "version": crate::BUILD})),
    }
}

async fn signalling(
    upgrade: WebSocketUpgrade,
    State(hub): State<Hub>,
    slot: Option<axum::Extension<super::accept::PendingSlot>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> Response {
    let pending = slot.and_then(|s| s.take());
    let peer = peer.map(|p| p.0.0.ip());
    upgrade
        .max_message_size(ws::MAX_FRAME_BYTES)
        .max_frame_size(ws::MAX_FRAME_BYTES)
        // Signalling messages are small: tungstenite's 128 KiB read buffer per idle session
        // is memory an attacker could make the server hold by the thousand.
        .read_buffer_size(ws::BUFFER_BYTES)
        .write_buffer_size(ws::BUFFER_BYTES)
        .on_upgrade(move |socket| ws::serve(socket, hub, pending, peer))
}

async fn metrics(State(hub): State<Hub>) -> Response {
    let media_dropped = hub.sfu().map_or(0, |s| s.commands_dropped());
    let text = hub
        .with(move |reg, _| {
            let (rooms, connected, detached, streams) = reg.gauges();
            reg.metrics.render(rooms, connected, detached, streams, media_dropped)
        })
        .await
        .unwrap_or_default();
    let mut text = text;
    if let Some(stats) = match hub.sfu() {
        Some(sfu) => sfu.stats().await,
        None => None,
    } {
        text.push_str(&super::metrics::render_media(&stats));
    }
    text.push_str(&hub.webhooks().render());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Checks the bearer token against the app (and the room the request is about); returns
/// the app ID and the token's claims. 401 for a missing, malformed or expired token, 403
/// for a valid one without `admin` or limited to another room.
async fn authorize(
    hub: &Hub,
    app_id: &str,
    room_id: Option<&str>,
    headers: &HeaderMap,
) -> Result<(u32, auth::Claims), Response> {
    let not_found = || error(StatusCode::NOT_FOUND, ErrorCode::ADMIN_NOT_FOUND, "no such app");
    let app_id: u32 = app_id.parse().map_err(|_| not_found())?;
    let token = bearer(headers)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, ErrorCode::ADMIN_UNAUTHORIZED, "missing bearer token"))?;
    let room = room_id.map(str::to_string);
    let claims = hub
        .with(move |reg, now| reg.admin_claims(app_id, &token, room.as_deref(), now))
        .await
        .ok_or_else(|| error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down"))?
        .map_err(refused)?;
    Ok((app_id, claims))
}

async fn list_rooms(State(hub): State<Hub>, Path(app_id): Path<String>, headers: HeaderMap) -> Response {
    let (app_id, claims) = match authorize(&hub, &app_id, None, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let rooms = hub.with(move |reg, _| reg.list_rooms(app_id)).await.flatten().unwrap_or_default();
    let rooms: Vec<_> = rooms
        .into_iter()
        .filter(|(room_id, _, _)| claims.room_id.as_ref().is_none_or(|r| r == room_id))
        .map(|(room_id, users, streams)| json!({"room_id": room_id, "user_count": users, "stream_count": streams}))
        .collect();
    Json(json!({"app_id": app_id, "rooms": rooms})).into_response()
}

async fn room(State(hub): State<Hub>, Path((app_id, room_id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let app_id = match authorize(&hub, &app_id, Some(&room_id), &headers).await {
        Ok((a, _)) => a,
        Err(r) => return r,
    };
    match hub.with(move |reg, _| reg.room_view(app_id, &room_id)).await.flatten() {
        Some(view) => Json(view).into_response(),
        None => error(StatusCode::NOT_FOUND, ErrorCode::ADMIN_NOT_FOUND, "no such room"),
    }
}

async fn kick(
    State(hub): State<Hub>,
    Path((app_id, room_id, user_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let app_id = match authorize(&hub, &app_id, Some(&room_id), &headers).await {
        Ok((a, _)) => a,
        Err(r) => return r,
    };
    let (r, u) = (room_id.clone(), user_id.clone());
    if hub.with(move |reg, now| reg.kick(app_id, &r, &u, now)).await.unwrap_or(false) {
        Json(json!({"kicked": true, "room_id": room_id, "user_id": user_id})).into_response()
    } else {
        error(StatusCode::NOT_FOUND, ErrorCode::ADMIN_NOT_FOUND, "no such user in this room")
    }
}

/// `POST /api/v1/apps/{app_id}/rooms/{room_id}/users/{user_id}/door`: opens that door
/// station's door (no call needed: the building's backend asks). 200 once the station
/// confirms, 409 with its reason when it refuses, 404 when the user is not in the room, 504
/// when it does not answer within 4 s (or is not connected).
async fn open_door(
    State(hub): State<Hub>,
    Path((app_id, room_id, user_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let (app_id, claims) = match authorize(&hub, &app_id, Some(&room_id), &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let req = super::registry::HttpMedia::Door {
        app_id,
        room_id: room_id.clone(),
        user_id: user_id.clone(),
        by: claims.user_id.clone(),
    };
    match hub.http(req).await {
        Ok(_) => Json(json!({"opened": true, "room_id": room_id, "user_id": user_id})).into_response(),
        Err(r) => refused(r),
    }
}

/// The admin API's OpenAPI 3.1 description (docs/openapi.json, from scripts/openapi.py).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// How long a snapshot may wait for the stream's first keyframe (its publisher is asked for
/// one when the SFU has none yet).
const SNAPSHOT_KEYFRAME_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Snapshots decoded at once; more are answered 429 (each costs a decoder's CPU).
const SNAPSHOTS_AT_ONCE: usize = 2;

/// `GET /api/v1/apps/{app_id}/rooms/{room_id}/streams/{stream_id}/snapshot.jpg` (an admin
/// token for the room, or a token with `play` for the stream): a JPEG of the stream's latest
/// keyframe, decoded here (nothing is asked of the publishing device).
async fn snapshot(
    State(hub): State<Hub>,
    Path((app_id, room_id, stream_id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    static BUSY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(SNAPSHOTS_AT_ONCE);
    let Ok(app_id) = app_id.parse::<u32>() else {
        return error(StatusCode::NOT_FOUND, ErrorCode::ADMIN_NOT_FOUND, "no such app");
    };
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, ErrorCode::ADMIN_UNAUTHORIZED, "missing bearer token");
    };
    let access = hub.with(move |reg, now| reg.snapshot_access(app_id, &room_id, &stream_id, &token, now)).await;
    let key = match access {
        Some(Ok(k)) => k,
        Some(Err(r)) => return refused(r),
        None => return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down"),
    };
    let Some(sfu) = hub.sfu() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::MEDIA_UNAVAILABLE, "this server relays no media");
    };
    let Ok(_permit) = BUSY.try_acquire() else {
        return error(StatusCode::TOO_MANY_REQUESTS, ErrorCode::RATE_LIMITED, "snapshots are being decoded; retry");
    };
    let until = tokio::time::Instant::now() + SNAPSHOT_KEYFRAME_WAIT;
    let packets = loop {
        if let Some(p) = sfu.keyframe(key.clone()).await {
            break p;
        }
        if tokio::time::Instant::now() >= until {
            let why = "no keyframe of the stream yet (its publisher was asked for one); retry";
            return error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::STREAM_NOT_FOUND, why);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let decoded = tokio::task::spawn_blocking(move || {
        crate::media::snapshot::jpeg(packets, 85, std::time::Duration::from_secs(3))
    })
    .await;
    match decoded {
        Ok(Ok(s)) => (
            [
                (header::CONTENT_TYPE, "image/jpeg".to_string()),
                (header::CACHE_CONTROL, "no-store".to_string()),
                (header::HeaderName::from_static("x-callbox-size"), format!("{}x{}", s.width, s.height)),
            ],
            s.jpeg,
        )
            .into_response(),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::MEDIA_PIPELINE_FAILED, &e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::SERVER_INTERNAL, &e.to_string()),
    }
}

/// `POST /api/v1/apps/{app_id}/device-keys` `{"user_id", "room_id"?, "privileges"?}`: the
/// new key, shown this once.
async fn create_device_key(
    State(hub): State<Hub>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (app_id, claims) = match authorize(&hub, &app_id, None, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let req: super::registry::NewDeviceKey = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, ErrorCode::ADMIN_BAD_REQUEST, &format!("body: {e}")),
    };
    let made = hub.with(move |reg, now| reg.create_device_key(app_id, &claims, req, now)).await;
    hub.state_synced().await;
    match made {
        Some(Ok((rec, key))) => (
            StatusCode::CREATED,
            Json(json!({"id": rec.id, "key": key, "app_id": rec.app_id, "user_id": rec.user_id,
                "room_id": rec.room_id, "privileges": rec.privileges, "created": rec.created})),
        )
            .into_response(),
        Some(Err(r)) => refused(r),
        None => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down"),
    }
}

/// `GET /api/v1/apps/{app_id}/device-keys`: the keys, without secrets.
async fn list_device_keys(State(hub): State<Hub>, Path(app_id): Path<String>, headers: HeaderMap) -> Response {
    let (app_id, claims) = match authorize(&hub, &app_id, None, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let keys = hub.with(move |reg, _| reg.list_device_keys(app_id, &claims)).await.unwrap_or_default();
    Json(json!({"app_id": app_id, "device_keys": keys})).into_response()
}

/// `DELETE /api/v1/apps/{app_id}/device-keys/{id}`: revokes the key and ends its sessions.
async fn revoke_device_key(
    State(hub): State<Hub>,
    Path((app_id, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let (app_id, claims) = match authorize(&hub, &app_id, None, &headers).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let key = id.clone();
    let revoked = hub.with(move |reg, now| reg.revoke_device_key(app_id, &claims, &key, now)).await.flatten();
    hub.state_synced().await;
    match revoked {
        Some(n) => Json(json!({"revoked": true, "id": id, "sessions_ended": n})).into_response(),
        None => error(StatusCode::NOT_FOUND, ErrorCode::ADMIN_NOT_FOUND, "no such device key"),
    }
}

/// `POST /api/v1/token` with a device key as the bearer: a short-lived token for the key's
/// user, room and privileges.
async fn device_token(
    State(hub): State<Hub>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Response {
    let Some(key) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, ErrorCode::DEVICE_KEY_INVALID, "send the device key as a bearer token");
    };
    let peer = peer.map(|p| p.0.0.ip());
    match hub.with(move |reg, now| reg.device_token(&key, peer, now)).await {
        Some(Ok(t)) => Json(t).into_response(),
        Some(Err(r)) => refused(r),
        None => error(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::SERVER_SHUTTING_DOWN, "shutting down"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `/api/v1` route of the router, with each of its methods, is in the OpenAPI
    /// description integrators generate clients from.
    #[test]
    fn every_admin_route_is_in_the_openapi_description() {
        let spec: serde_json::Value = serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON");
        assert_eq!(spec["openapi"], "3.1.0");
        let source = include_str!("http.rs");
        let mut seen = 0;
        for line in source.lines().map(str::trim).filter(|l| l.starts_with(".route(\"/api/v1")) {
            let path = line.split('"').nth(1).unwrap();
            let methods = line.split_once(", ").unwrap().1;
            for m in ["get", "post", "delete"] {
                if methods.contains(&format!("{m}(")) {
                    assert!(spec["paths"][path][m].is_object(), "{m} {path} is not in docs/openapi.json");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 10, "routes found: {seen}");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, v.parse().unwrap());
            bearer(&m)
        };
        assert_eq!(h("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(h("bearer abc").as_deref(), Some("abc"));
        assert_eq!(h("BEARER  abc ").as_deref(), Some("abc"));
        assert_eq!(h("Basic abc"), None);
        assert_eq!(h("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
