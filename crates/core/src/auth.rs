//! Tokens: JWT (HS256) signed with the app secret. The integrator's backend mints them with
//! any JWT library, `callbox token` mints them by hand, and an engine in AppSign mode mints its
//! own short-lived ones. The server verifies them with [`verify_login`] and [`verify_admin`].
//!
//! HS256 is all callbox signs or accepts, so the JWS is done here on `ring`'s HMAC (already
//! in the tree for TLS and SRTP) rather than by a JWT crate whose RSA, ECDSA and EdDSA
//! backends would all be linked into every door station for one algorithm: a token is
//! `base64url(header) . base64url(claims) . base64url(HMAC-SHA256(key, the first two))`
//! (RFC 7515 compact form, RFC 7519 claims), no padding, and a header whose `alg` is not
//! `HS256` is refused (so is `none`).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};

use crate::proto::ErrorCode;

/// Privilege names a token may carry.
pub const PRIVILEGES: &[&str] = &["login", "publish", "play", "admin", "door"];

/// A privilege a token grants. Tokens carry them as names ([`Privilege::as_str`]) so that a
/// token minted elsewhere with a name callbox does not know still verifies (it grants
/// nothing here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Privilege {
    /// Log in to a room.
    Login,
    /// Publish streams.
    Publish,
    /// Play streams.
    Play,
    /// The admin API.
    Admin,
    /// Ask a device to open its door.
    Door,
}

impl Privilege {
    /// The name in a token's `privileges`.
    pub fn as_str(self) -> &'static str {
        match self {
            Privilege::Login => "login",
            Privilege::Publish => "publish",
            Privilege::Play => "play",
            Privilege::Admin => "admin",
            Privilege::Door => "door",
        }
    }
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The claims of a callbox token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The app the token belongs to.
    pub app_id: u32,
    /// The user it was issued to (`*` in an admin token means any).
    pub user_id: String,
    /// Restricts the token to one room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_id: Option<String>,
    /// Granted privileges: `login`, `publish`, `play`, `admin`, `door`.
    pub privileges: Vec<String>,
    /// Restricts publishing and playing to these stream IDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<Vec<String>>,
    /// The device key that obtained this token (`POST /api/v1/token`): revoking the key
    /// ends the sessions that logged in with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dk: Option<String>,
    /// Not valid before, Unix seconds (optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds.
    pub exp: u64,
}

impl Claims {
    /// Whether the token grants `privilege`.
    pub fn has(&self, privilege: Privilege) -> bool {
        self.has_name(privilege.as_str())
    }

    /// Whether the token carries the privilege named `name` (known to callbox or not).
    pub fn has_name(&self, name: &str) -> bool {
        self.privileges.iter().any(|p| p == name)
    }

    /// Whether the token allows publishing or playing `stream_id`.
    pub fn allows_stream(&self, stream_id: &str) -> bool {
        self.streams.as_ref().is_none_or(|s| s.iter().any(|x| x == stream_id))
    }
}

/// Errors of secret parsing and minting.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The secret is not 64 hex characters.
    #[error("app secret must be 64 hex characters (32 bytes)")]
    BadSecret,
    /// A privilege name is unknown.
    #[error("unknown privilege {0:?} (known: login, publish, play, admin, door)")]
    UnknownPrivilege(String),
    /// Signing failed.
    #[error("signing the token failed: {0}")]
    Sign(String),
}

/// Parses a 64-hex-character app secret into its 32 key bytes.
pub fn parse_secret(hex_secret: &str) -> Result<Vec<u8>, AuthError> {
    let bytes = hex::decode(hex_secret.trim()).map_err(|_| AuthError::BadSecret)?;
    if bytes.len() != 32 {
        return Err(AuthError::BadSecret);
    }
    Ok(bytes)
}

/// Checks privilege names.
pub fn check_privileges(privs: &[String]) -> Result<(), AuthError> {
    match privs.iter().find(|p| !PRIVILEGES.contains(&p.as_str())) {
        Some(p) => Err(AuthError::UnknownPrivilege(p.clone())),
        None => Ok(()),
    }
}

/// The JWS header of every token callbox mints.
const HEADER: &str = r#"{"typ":"JWT","alg":"HS256"}"#;

fn hmac_key(key: &[u8]) -> ring::hmac::Key {
    ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key)
}

/// Signs `claims` with the secret's key bytes.
pub fn mint(key: &[u8], claims: &Claims) -> Result<String, AuthError> {
    let body = serde_json::to_vec(claims).map_err(|e| AuthError::Sign(e.to_string()))?;
    let signing_input = format!("{}.{}", B64.encode(HEADER), B64.encode(body));
    let tag = ring::hmac::sign(&hmac_key(key), signing_input.as_bytes());
    Ok(format!("{signing_input}.{}", B64.encode(tag.as_ref())))
}

/// A compact JWS's three parts, decoded (header, claims, signature), and its signing input
/// (the first two as they came).
type Parts<'a> = (Vec<u8>, Vec<u8>, Vec<u8>, &'a str);

/// The parts of a compact JWS, or `None` when it is not one.
fn split(token: &str) -> Option<Parts<'_>> {
    let mut parts = token.split('.');
    let (h, c, sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let signing_input = &token[..h.len() + 1 + c.len()];
    Some((B64.decode(h).ok()?, B64.decode(c).ok()?, B64.decode(sig).ok()?, signing_input))
}

/// The claims of a compact JWS whose header says HS256 and whose claims name no audience
/// (callbox tokens have none; one meant for another service is not for us).
fn claims_of(header: &[u8], claims: &[u8]) -> Option<Claims> {
    #[derive(Deserialize)]
    struct Header {
        alg: String,
    }
    #[derive(Deserialize)]
    struct Audience {
        #[serde(default)]
        aud: Option<serde_json::Value>,
    }
    let h: Header = serde_json::from_slice(header).ok()?;
    let a: Audience = serde_json::from_slice(claims).ok()?;
    if h.alg != "HS256" || a.aud.is_some() {
        return None;
    }
    serde_json::from_slice(claims).ok()
}

/// Reads the claims without checking the signature: only to find the app and expiry of a
/// token the caller holds itself, never to trust it.
pub fn peek(token: &str) -> Option<Claims> {
    let (_, claims, _, _) = split(token)?;
    serde_json::from_slice(&claims).ok()
}

/// Clock difference tolerated for `iat` and `nbf` (a device's clock a little ahead).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Verifies the signature and times; returns the claims. `now` is Unix seconds;
/// `max_lifetime` is the longest life a token may have (`exp - iat`, and `exp - now`).
pub fn verify(key: &[u8], token: &str, now: u64, max_lifetime: u64) -> Result<Claims, ErrorCode> {
    let (header, claims, sig, signing_input) = split(token).ok_or(ErrorCode::TOKEN_INVALID)?;
    // The signature first (in constant time), so nothing of an unsigned token is trusted;
    // expiry is checked below against the caller's clock, to give it its own code.
    ring::hmac::verify(&hmac_key(key), signing_input.as_bytes(), &sig).map_err(|_| ErrorCode::TOKEN_INVALID)?;
    let c = claims_of(&header, &claims).ok_or(ErrorCode::TOKEN_INVALID)?;
    if c.exp <= now {
        return Err(ErrorCode::TOKEN_EXPIRED);
    }
    if c.iat > now + CLOCK_SKEW_SECS || c.nbf.is_some_and(|nbf| nbf > now + CLOCK_SKEW_SECS) {
        return Err(ErrorCode::TOKEN_NOT_YET_VALID);
    }
    if c.exp.saturating_sub(c.iat) > max_lifetime || c.exp.saturating_sub(now) > max_lifetime {
        return Err(ErrorCode::TOKEN_LIFETIME_TOO_LONG);
    }
    Ok(c)
}

/// Full login check: the token is for `app_id`, signed by its secret, unexpired, for this
/// user and (if it names one) this room, with the `login` privilege. `secret` is `None` when
/// the server does not know the app.
pub fn verify_login(
    secret: Option<&[u8]>,
    app_id: u32,
    token: &str,
    user_id: &str,
    room_id: &str,
    now: u64,
    max_lifetime: u64,
) -> Result<Claims, ErrorCode> {
    let peeked = peek(token).ok_or(ErrorCode::TOKEN_INVALID)?;
    if peeked.app_id != app_id {
        return Err(ErrorCode::APP_ID_MISMATCH);
    }
    let key = secret.ok_or(ErrorCode::APP_ID_MISMATCH)?;
    let claims = verify(key, token, now, max_lifetime)?;
    if claims.user_id != user_id {
        return Err(ErrorCode::TOKEN_USER_MISMATCH);
    }
    if claims.room_id.as_deref().is_some_and(|r| r != room_id) {
        return Err(ErrorCode::TOKEN_ROOM_MISMATCH);
    }
    if !claims.has(Privilege::Login) {
        return Err(ErrorCode::NO_LOGIN_PRIVILEGE);
    }
    Ok(claims)
}

/// Admin API check: signed by the app's secret, valid now, for this app (else
/// ADMIN_UNAUTHORIZED, HTTP 401), with `admin` (else ADMIN_FORBIDDEN, HTTP 403). A token
/// with a `room_id` is limited to that room (the caller checks the room it asks about).
pub fn verify_admin(secret: &[u8], app_id: u32, token: &str, now: u64, max_lifetime: u64) -> Result<Claims, ErrorCode> {
    let claims = verify(secret, token, now, max_lifetime).map_err(|_| ErrorCode::ADMIN_UNAUTHORIZED)?;
    if claims.app_id != app_id {
        return Err(ErrorCode::ADMIN_UNAUTHORIZED);
    }
    if !claims.has(Privilege::Admin) {
        return Err(ErrorCode::ADMIN_FORBIDDEN);
    }
    Ok(claims)
}

/// Whether `renewed` asks for nothing `current` did not grant: the same app and user, no
/// wider room, no privilege or stream it lacked. A renewal may narrow, never widen.
pub fn renewal_within(current: &Claims, renewed: &Claims) -> bool {
    let room_ok = match (&current.room_id, &renewed.room_id) {
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
        (None, _) => true,
    };
    let streams_ok = match (&current.streams, &renewed.streams) {
        (Some(a), Some(b)) => b.iter().all(|s| a.contains(s)),
        (Some(_), None) => false,
        (None, _) => true,
    };
    current.app_id == renewed.app_id
        && current.user_id == renewed.user_id
        && room_ok
        && streams_ok
        && renewed.privileges.iter().all(|p| current.has_name(p))
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The RFC 7519 / jwt.io HS256 example, signed by another implementation: the signature
    /// checks out here, one byte off does not.
    #[test]
    fn hs256_signatures_of_other_implementations_verify() {
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let (_, _, sig, input) = split(token).unwrap();
        assert!(ring::hmac::verify(&hmac_key(b"your-256-bit-secret"), input.as_bytes(), &sig).is_ok());
        assert!(ring::hmac::verify(&hmac_key(b"your-256-bit-secreT"), input.as_bytes(), &sig).is_err());
    }

    #[test]
    fn only_well_formed_hs256_tokens_without_an_audience_pass() {
        let key = parse_secret(SECRET).unwrap();
        let now = 1_700_000_000;
        let c = Claims {
            app_id: 1,
            user_id: "door".into(),
            room_id: None,
            privileges: vec!["login".into()],
            streams: None,
            dk: None,
            nbf: None,
            iat: now,
            exp: now + 60,
        };
        let good = mint(&key, &c).unwrap();
        assert_eq!(verify(&key, &good, now, M), Ok(c.clone()));
        assert!(good.starts_with(&B64.encode(HEADER)), "the header every earlier callbox minted");
        let sign = |header: &str, body: &str| {
            let input = format!("{}.{}", B64.encode(header), B64.encode(body));
            let tag = ring::hmac::sign(&hmac_key(&key), input.as_bytes());
            format!("{input}.{}", B64.encode(tag.as_ref()))
        };
        let body = serde_json::to_string(&c).unwrap();
        assert_eq!(verify(&key, &sign(HEADER, &body), now, M), Ok(c.clone()), "re-signed the same: equal");
        for (bad, why) in [
            (sign(r#"{"alg":"none"}"#, &body), "alg none"),
            (sign(r#"{"alg":"HS512"}"#, &body), "another algorithm"),
            (sign(r#"{"typ":"JWT"}"#, &body), "no algorithm"),
            (sign(HEADER, &body.replace('}', r#","aud":"elsewhere"}"#)), "an audience"),
            (sign(HEADER, "not json"), "claims that are not JSON"),
            (format!("{good}.x"), "four parts"),
            (good.rsplit_once('.').unwrap().0.to_string(), "no signature"),
            (format!("{good}="), "padding"),
            (good.replacen("eyJ", "eyK", 2), "claims changed after signing"),
            (String::new(), "empty"),
        ] {
            assert_eq!(verify(&key, &bad, now, M), Err(ErrorCode::TOKEN_INVALID), "{why}");
        }
        assert_eq!(peek(&good).map(|p| p.user_id), Some("door".into()));
    }

    const SECRET: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    const M: u64 = 86_400;

    fn claims(exp: u64) -> Claims {
        Claims {
            app_id: 7,
            user_id: "door".into(),
            room_id: Some("lobby".into()),
            privileges: vec!["login".into(), "publish".into()],
            streams: None,
            nbf: None,
            dk: None,
            iat: 100,
            exp,
        }
    }

    #[test]
    fn login_checks_have_distinct_codes() {
        let key = parse_secret(SECRET).unwrap();
        let t = mint(&key, &claims(1000)).unwrap();
        assert!(verify_login(Some(&key), 7, &t, "door", "lobby", 500, M).is_ok());
        assert_eq!(verify_login(Some(&key), 7, &t, "door", "lobby", 1000, M), Err(ErrorCode::TOKEN_EXPIRED));
        assert_eq!(verify_login(Some(&key), 8, &t, "door", "lobby", 500, M), Err(ErrorCode::APP_ID_MISMATCH));
        assert_eq!(verify_login(Some(&key), 7, &t, "flat", "lobby", 500, M), Err(ErrorCode::TOKEN_USER_MISMATCH));
        assert_eq!(verify_login(Some(&key), 7, &t, "door", "hall", 500, M), Err(ErrorCode::TOKEN_ROOM_MISMATCH));
        assert_eq!(verify_login(Some(&key), 7, "garbage", "door", "lobby", 500, M), Err(ErrorCode::TOKEN_INVALID));
        let other = parse_secret(&SECRET.replace('0', "1")).unwrap();
        assert_eq!(verify_login(Some(&other), 7, &t, "door", "lobby", 500, M), Err(ErrorCode::TOKEN_INVALID));
        let mut c = claims(1000);
        c.privileges = vec!["play".into()];
        let t2 = mint(&key, &c).unwrap();
        assert_eq!(verify_login(Some(&key), 7, &t2, "door", "lobby", 500, M), Err(ErrorCode::NO_LOGIN_PRIVILEGE));
    }

    #[test]
    fn times_are_checked_with_their_own_codes() {
        let key = parse_secret(SECRET).unwrap();
        let v = |c: &Claims, now: u64| verify(&key, &mint(&key, c).unwrap(), now, 1000);
        assert!(v(&claims(1000), 500).is_ok());
        // Issued in the future beyond the skew; not valid before nbf.
        let mut c = claims(1400);
        c.iat = 500 + CLOCK_SKEW_SECS + 1;
        assert_eq!(v(&c, 500), Err(ErrorCode::TOKEN_NOT_YET_VALID));
        c.iat = 500 + CLOCK_SKEW_SECS;
        assert!(v(&c, 500).is_ok(), "a clock a little ahead is tolerated");
        let mut c = claims(1000);
        c.nbf = Some(700);
        assert_eq!(v(&c, 500), Err(ErrorCode::TOKEN_NOT_YET_VALID));
        assert!(v(&c, 690).is_ok());
        // Longer than the server allows: from iat, or from now (exp = u64::MAX).
        assert_eq!(v(&claims(1101), 500), Err(ErrorCode::TOKEN_LIFETIME_TOO_LONG));
        let mut c = claims(u64::MAX);
        c.iat = 500;
        assert_eq!(v(&c, 500), Err(ErrorCode::TOKEN_LIFETIME_TOO_LONG));
    }

    #[test]
    fn admin_codes_and_renewal_scope() {
        let key = parse_secret(SECRET).unwrap();
        let t = mint(&key, &claims(1000)).unwrap();
        assert_eq!(verify_admin(&key, 7, &t, 500, M), Err(ErrorCode::ADMIN_FORBIDDEN));
        assert_eq!(verify_admin(&key, 8, &t, 500, M), Err(ErrorCode::ADMIN_UNAUTHORIZED));
        assert_eq!(verify_admin(&key, 7, &t, 1000, M), Err(ErrorCode::ADMIN_UNAUTHORIZED));
        let cur = claims(1000);
        let mut r = claims(2000);
        assert!(renewal_within(&cur, &r));
        r.privileges.push("admin".into());
        assert!(!renewal_within(&cur, &r), "no new privilege");
        let mut r = claims(2000);
        r.room_id = None;
        assert!(!renewal_within(&cur, &r), "no wider room");
        let mut r = claims(2000);
        r.streams = Some(vec!["a".into()]);
        assert!(renewal_within(&cur, &r), "narrowing is fine");
        let mut narrow = cur.clone();
        narrow.streams = Some(vec!["a".into()]);
        let mut r = claims(2000);
        r.streams = Some(vec!["a".into(), "b".into()]);
        assert!(!renewal_within(&narrow, &r), "no new stream");
        r.privileges = vec!["login".into()];
        r.streams = Some(vec!["a".into()]);
        assert!(renewal_within(&narrow, &r));
    }

    #[test]
    fn secrets_and_privileges_validated() {
        assert!(parse_secret("abc").is_err());
        assert!(parse_secret(&"zz".repeat(32)).is_err());
        assert!(check_privileges(&["login".into(), "fly".into()]).is_err());
        assert!(claims(1).allows_stream("anything"));
    }
}
