//! Desk accounts: a front-desk user signs in to the browser page with a name and a password
//! the operator configured (`[[desks]]`), and the server hands the page a token for that
//! desk's app, room and privileges. The page then holds no secret but its token, which it
//! renews with itself (`POST /desk/renew`) while it is valid.
//!
//! Passwords are stored as PBKDF2-HMAC-SHA256 hashes (`callbox desk-password` makes one),
//! checked off the async runtime (a hash costs tens of milliseconds on a board, on purpose),
//! and failures are limited per desk so a password cannot be guessed at line rate.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;

use super::http_error::{bearer, error};
use super::hub::Hub;
use crate::auth;
use crate::proto::ErrorCode;

/// PBKDF2 iterations of a new hash.
pub const ITERATIONS: u32 = 100_000;
/// Failed sign-ins allowed per desk within [`FAILURE_WINDOW`].
const MAX_FAILURES: u32 = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// `[[desks]]`: one front-desk account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskConfig {
    /// The desk's user ID in its room (and its sign-in name).
    pub user_id: String,
    /// Display name (default: the user ID).
    #[serde(default)]
    pub name: String,
    /// The app (one of `[[apps]]`).
    pub app_id: u32,
    /// The room the desk answers for.
    pub room_id: String,
    /// `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64), from `callbox desk-password`.
    pub password: String,
    /// The token's privileges (default login, publish, play, door).
    #[serde(default = "default_privileges")]
    pub privileges: Vec<String>,
    /// Lifetime of a token handed out, seconds (default 8 h; renewed by the page).
    #[serde(default = "default_token_secs")]
    pub token_secs: u64,
}

fn default_privileges() -> Vec<String> {
    ["login", "publish", "play", "door"].map(String::from).to_vec()
}

fn default_token_secs() -> u64 {
    8 * 3600
}

/// Why a desk config is not usable.
pub fn check(d: &DeskConfig) -> Result<(), String> {
    crate::proto::ids::check_user_id(&d.user_id).map_err(|c| format!("user_id: invalid (code {})", c.0))?;
    crate::proto::ids::check_room_id(&d.room_id).map_err(|c| format!("room_id: invalid (code {})", c.0))?;
    parse(&d.password).ok_or("password: not a hash from `callbox desk-password`")?;
    if d.token_secs < 60 {
        return Err("token_secs: at least 60".into());
    }
    Ok(())
}

/// A new hash of `password` with a random salt.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 16] = rand::random();
    let mut out = [0u8; 32];
    let n = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
    ring::pbkdf2::derive(ring::pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, password.as_bytes(), &mut out);
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    format!("pbkdf2-sha256${ITERATIONS}${}${}", b64.encode(salt), b64.encode(out))
}

fn parse(hash: &str) -> Option<(NonZeroU32, Vec<u8>, Vec<u8>)> {
    let mut parts = hash.split('$');
    if parts.next()? != "pbkdf2-sha256" {
        return None;
    }
    let n = NonZeroU32::new(parts.next()?.parse().ok()?)?;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt = b64.decode(parts.next()?).ok()?;
    let key = b64.decode(parts.next()?).ok()?;
    (parts.next().is_none() && key.len() == 32 && n.get() <= 10_000_000).then_some((n, salt, key))
}

/// Whether `password` matches `hash` (in constant time).
pub fn verify(hash: &str, password: &str) -> bool {
    let Some((n, salt, key)) = parse(hash) else { return false };
    ring::pbkdf2::verify(ring::pbkdf2::PBKDF2_HMAC_SHA256, n, &salt, password.as_bytes(), &key).is_ok()
}

/// The desks and their failure counts.
#[derive(Default)]
pub struct Desks {
    desks: HashMap<String, DeskConfig>,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Desks {
    /// The configured desks (validated by the config).
    pub fn new(desks: &[DeskConfig]) -> Self {
        Desks { desks: desks.iter().map(|d| (d.user_id.clone(), d.clone())).collect(), failures: Default::default() }
    }

    /// Whether any desk is configured.
    pub fn any(&self) -> bool {
        !self.desks.is_empty()
    }

    /// The desk named `user_id`.
    pub fn get(&self, user_id: &str) -> Option<&DeskConfig> {
        self.desks.get(user_id)
    }

    /// Whether `user_id` may try to sign in now (under its failure budget).
    pub fn may_try(&self, user_id: &str, now: Instant) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(user_id).is_none_or(|(n, since)| *n < MAX_FAILURES || now.duration_since(*since) >= FAILURE_WINDOW)
    }

    /// Counts a failed sign-in of `user_id`; a success clears its count.
    pub fn record(&self, user_id: &str, ok: bool, now: Instant) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            f.remove(user_id);
            return;
        }
        if f.len() > 10_000 {
            f.retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
        }
        let e = f.entry(user_id.to_string()).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_WINDOW {
            *e = (0, now);
        }
        e.0 += 1;
    }
}

// ---------------------------------------------------------------- HTTP

/// What the page needs to know before it shows a sign-in: whether desks exist here and
/// whether the server is in dev mode (then the developer fields are shown).
pub(super) async fn info(State((_, desks, dev)): State<(Hub, Arc<Desks>, bool)>) -> Json<serde_json::Value> {
    Json(json!({"desks": desks.any(), "dev": dev}))
}

/// `POST /desk/login` {`user_id`, `password`}: the desk's token and where it belongs.
pub(super) async fn login(
    State((hub, desks, _)): State<(Hub, Arc<Desks>, bool)>,
    body: Result<Json<serde_json::Value>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(body)) = body else {
        return error(StatusCode::BAD_REQUEST, ErrorCode::ADMIN_BAD_REQUEST, "a JSON body {user_id, password}");
    };
    let (user, password) = (body["user_id"].as_str().unwrap_or(""), body["password"].as_str().unwrap_or(""));
    let now = Instant::now();
    if !desks.may_try(user, now) {
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::DESK_SIGN_IN_LIMITED,
            "too many failed sign-ins; wait a minute",
        );
    }
    let Some(desk) = desks.get(user).cloned() else {
        desks.record(user, false, now);
        tracing::info!(callbox_event = "desk_sign_in_refused", user_id = %user, "desk sign-in refused: no such desk");
        return error(StatusCode::UNAUTHORIZED, ErrorCode::DESK_SIGN_IN_FAILED, "unknown desk or wrong password");
    };
    let (hash, pw) = (desk.password.clone(), password.to_string());
    let ok = tokio::task::spawn_blocking(move || verify(&hash, &pw)).await.unwrap_or(false);
    desks.record(user, ok, now);
    if !ok {
        tracing::info!(callbox_event = "desk_sign_in_refused", user_id = %user, "desk sign-in refused: wrong password");
        return error(StatusCode::UNAUTHORIZED, ErrorCode::DESK_SIGN_IN_FAILED, "unknown desk or wrong password");
    }
    tracing::info!(callbox_event = "desk_sign_in", user_id = %user, room_id = %desk.room_id, "desk signed in");
    issue(&hub, &desk).await
}

/// `POST /desk/renew` with `Authorization: Bearer <a desk token still valid>`: a fresh one.
pub(super) async fn renew(State((hub, desks, _)): State<(Hub, Arc<Desks>, bool)>, headers: HeaderMap) -> Response {
    let Some(token) = bearer(&headers) else {
        return error(StatusCode::UNAUTHORIZED, ErrorCode::DESK_SIGN_IN_FAILED, "a bearer token is required");
    };
    let Some(desk) = auth::peek(&token).and_then(|c| desks.get(&c.user_id).cloned()) else {
        return error(StatusCode::UNAUTHORIZED, ErrorCode::DESK_SIGN_IN_FAILED, "not a desk token");
    };
    let Some(key) = app_key(&hub, desk.app_id).await else {
        return error(StatusCode::NOT_FOUND, ErrorCode::APP_ID_MISMATCH, "the desk's app is not configured");
    };
    match auth::verify(&key, &token, auth::unix_now(), u64::MAX) {
        Ok(c) if c.user_id == desk.user_id && c.room_id.as_deref() == Some(&desk.room_id) => issue(&hub, &desk).await,
        Ok(_) => error(StatusCode::UNAUTHORIZED, ErrorCode::DESK_SIGN_IN_FAILED, "not this desk's token"),
        Err(code) => error(StatusCode::UNAUTHORIZED, code, "the token is not valid; sign in again"),
    }
}

/// The signing key of app `app_id`, if the server hosts it.
async fn app_key(hub: &Hub, app_id: u32) -> Option<Vec<u8>> {
    hub.with(move |reg, _| reg.app_key(app_id).map(<[u8]>::to_vec)).await.flatten()
}

async fn issue(hub: &Hub, desk: &DeskConfig) -> Response {
    let Some(key) = app_key(hub, desk.app_id).await else {
        return error(StatusCode::NOT_FOUND, ErrorCode::APP_ID_MISMATCH, "the desk's app is not configured");
    };
    let now = auth::unix_now();
    let claims = auth::Claims {
        app_id: desk.app_id,
        user_id: desk.user_id.clone(),
        room_id: Some(desk.room_id.clone()),
        privileges: desk.privileges.clone(),
        streams: None,
        nbf: None,
        dk: None,
        iat: now,
        exp: now + desk.token_secs,
    };
    match auth::mint(&key, &claims) {
        Ok(token) => {
            let name = if desk.name.is_empty() { desk.user_id.clone() } else { desk.name.clone() };
            Json(json!({"app_id": desk.app_id, "room_id": desk.room_id, "user_id": desk.user_id, "user_name": name,
                "token": token, "expires_in": desk.token_secs}))
            .into_response()
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::SERVER_INTERNAL, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_failures_are_limited() {
        let h = hash_password("front desk 1");
        assert!(h.starts_with("pbkdf2-sha256$100000$"), "{h}");
        assert!(verify(&h, "front desk 1"));
        assert!(!verify(&h, "front desk 2"));
        assert!(!verify("plain text", "plain text"), "only hashes are accepted");
        assert_ne!(h, hash_password("front desk 1"), "salted");
        let desks = Desks::default();
        let t = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(desks.may_try("desk", t));
            desks.record("desk", false, t);
        }
        assert!(!desks.may_try("desk", t), "locked after {MAX_FAILURES} failures");
        assert!(desks.may_try("other", t), "per desk");
        assert!(desks.may_try("desk", t + FAILURE_WINDOW), "for a minute");
    }
}
