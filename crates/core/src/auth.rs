//! Tokens: JWT (HS256) signed with the app secret. The integrator's backend mints them with
//! any JWT library, `callbox token` mints them by hand, and an engine in AppSign mode mints its
//! own short-lived ones. The server verifies them with [`verify_login`] and [`verify_admin`].

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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

/// Signs `claims` with the secret's key bytes.
pub fn mint(key: &[u8], claims: &Claims) -> Result<String, AuthError> {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(key))
        .map_err(|e| AuthError::Sign(e.to_string()))
}

/// Reads the claims without checking the signature: only to find the app and expiry of a
/// token the caller holds itself, never to trust it.
pub fn peek(token: &str) -> Option<Claims> {
    jsonwebtoken::dangerous::insecure_decode_claims::<Claims>(token).ok()
}

/// Clock difference tolerated for `iat` and `nbf` (a device's clock a little ahead).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Verifies the signature and times; returns the claims. `now` is Unix seconds;
/// `max_lifetime` is the longest life a token may have (`exp - iat`, and `exp - now`).
pub fn verify(key: &[u8], token: &str, now: u64, max_lifetime: u64) -> Result<Claims, ErrorCode> {
    let mut validation = Validation::new(Algorithm::HS256);
    // Expiry is checked below against the caller's clock, to give it its own code.
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &validation)
        .map_err(|_| ErrorCode::TOKEN_INVALID)?;
    let c = data.claims;
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
