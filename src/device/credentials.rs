//! How a device proves who it is, from `[server]`: exactly one of
//! - `device_key` / `device_key_file`: a key from the server's admin API, exchanged for a
//!   short-lived token at `POST /api/v1/token` (over the same verified TLS as signalling);
//! - `token_url` + `token_url_secret`: the integrator's own endpoint, same exchange;
//! - `token_file`: a file a provisioning agent keeps current, read again each time;
//! - `token`: a fixed token (never renewed);
//! - `app_sign`: the app secret (development; the engine mints and renews by itself).
//!
//! [`Credentials::fetch`] gets a token now; the daemon calls it before every login and
//! before the current token expires ([`renew_in`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::dial::Dialer;
use crate::engine::Auth;
use crate::proto::ErrorCode;
use crate::url::ServerUrl;

/// How long one token request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Where tokens come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// The engine mints its own (app secret on the device).
    AppSign(String),
    /// A fixed token.
    Fixed(String),
    /// Read from this file each time.
    File(PathBuf),
    /// Exchanged at the server's token endpoint.
    DeviceKey {
        /// The server.
        url: ServerUrl,
        /// A private CA for it.
        ca_file: Option<PathBuf>,
        /// The key (`cbk_...`).
        key: String,
    },
    /// Exchanged at the integrator's endpoint.
    TokenUrl {
        /// The endpoint.
        url: ServerUrl,
        /// A private CA for it.
        ca_file: Option<PathBuf>,
        /// The per-device bearer secret.
        secret: String,
    },
}

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    /// TOKEN_RENEWAL_FAILED, DEVICE_KEY_INVALID, or a TLS code.
    pub code: ErrorCode,
    /// What happened.
    pub message: String,
}

impl Credentials {
    /// What the engine is created with: AppSign, a fixed token, or a placeholder for tokens
    /// the daemon fetches before each login.
    pub fn engine_auth(&self) -> Auth {
        match self {
            Credentials::AppSign(s) => Auth::AppSign(s.clone()),
            Credentials::Fixed(t) => Auth::Token(t.clone()),
            _ => Auth::Token(String::new()),
        }
    }

    /// Whether the daemon fetches (and renews) tokens itself.
    pub fn fetches(&self) -> bool {
        matches!(self, Credentials::File(_) | Credentials::DeviceKey { .. } | Credentials::TokenUrl { .. })
    }

    /// The source's name, for status and the journal.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::AppSign(_) => "app_sign",
            Credentials::Fixed(_) => "token",
            Credentials::File(_) => "token_file",
            Credentials::DeviceKey { .. } => "device_key",
            Credentials::TokenUrl { .. } => "token_url",
        }
    }

    /// A token now (for the fetching kinds).
    pub async fn fetch(&self) -> Result<String, FetchError> {
        let fail = |code: ErrorCode, message: String| FetchError { code, message };
        match self {
            Credentials::AppSign(_) => Err(fail(ErrorCode::TOKEN_RENEWAL_FAILED, "AppSign mints in the engine".into())),
            Credentials::Fixed(t) => Ok(t.clone()),
            Credentials::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| fail(ErrorCode::TOKEN_RENEWAL_FAILED, format!("{}: {e}", path.display())))?;
                let t = text.trim();
                if t.is_empty() {
                    return Err(fail(ErrorCode::TOKEN_RENEWAL_FAILED, format!("{} is empty", path.display())));
                }
                Ok(t.to_string())
            }
            Credentials::DeviceKey { url, ca_file, key } => exchange(url, ca_file, "/api/v1/token", key).await,
            Credentials::TokenUrl { url, ca_file, secret } => exchange(url, ca_file, url.path(), secret).await,
        }
    }
}

/// POSTs with `bearer` and reads `{"token": ...}`. The dialer is made each time: the CA file
/// may have been replaced since (and the system's roots are read once per process).
async fn exchange(url: &ServerUrl, ca_file: &Option<PathBuf>, path: &str, bearer: &str) -> Result<String, FetchError> {
    let dialer = Dialer::new(url.clone(), ca_file.as_deref()).map_err(|e| FetchError {
        code: e.code().unwrap_or(ErrorCode::TOKEN_RENEWAL_FAILED),
        message: format!("TLS for {}: {e}", url.http(path)),
    })?;
    let dialer = &dialer;
    let auth = format!("Bearer {bearer}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let answer =
        dialer.request("POST", path, &headers, b"{}".to_vec(), FETCH_TIMEOUT).await.map_err(|e| FetchError {
            code: e.code().unwrap_or(ErrorCode::TOKEN_RENEWAL_FAILED),
            message: format!("{}: {e}", dialer.url().http(path)),
        })?;
    let v: serde_json::Value = serde_json::from_slice(&answer.body).unwrap_or_default();
    if answer.status != 200 {
        let code = v["code"].as_u64().and_then(|c| u32::try_from(c).ok()).map(ErrorCode);
        let code = match code {
            Some(c @ (ErrorCode::DEVICE_KEY_INVALID | ErrorCode::DEVICE_KEY_REVOKED)) => c,
            _ => ErrorCode::TOKEN_RENEWAL_FAILED,
        };
        let why = v["message"].as_str().unwrap_or("no reason given");
        return Err(FetchError {
            code,
            message: format!("{} answered {}: {why}", dialer.url().http(path), answer.status),
        });
    }
    v["token"].as_str().filter(|t| !t.is_empty()).map(str::to_string).ok_or_else(|| FetchError {
        code: ErrorCode::TOKEN_RENEWAL_FAILED,
        message: format!("{} answered without a token", dialer.url().http(path)),
    })
}

/// When to renew a token that expires at `exp` (Unix seconds), seen at `now`: at four
/// fifths of its remaining life, and at least 30 s before it ends (at once if that passed).
pub fn renew_in(exp: u64, now: u64) -> Duration {
    let left = exp.saturating_sub(now);
    let margin = (left / 5).max(30.min(left / 2));
    Duration::from_secs(left.saturating_sub(margin))
}

/// Back-off between failed renewals (the one reconnect policy, with its jitter, so devices
/// that lost their token server together do not come back together): up to 2 s doubling
/// to 60 s, never giving up.
pub fn renewal_retry() -> crate::engine::ReconnectPolicy {
    crate::engine::ReconnectPolicy::doubling(Duration::from_secs(2), Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::config::DeviceConfig;

    fn device(server: &str) -> DeviceConfig {
        let text = format!(
            "[server]\nurl = \"{server}\"\napp_id = 7\n{}\n[room]\nroom_id = \"r\"\nuser_id = \"door\"\nuser_name = \"d\"\n",
            "app_sign = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\""
        );
        toml::from_str(&text).unwrap()
    }

    #[tokio::test]
    async fn a_token_file_is_read_each_time_and_token_url_is_the_same_exchange_as_a_device_key() {
        use crate::server::config::AppConfig;
        let dir = std::env::temp_dir().join(format!("callbox-creds-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let mut cfg: crate::server::ServerConfig = toml::from_str("").unwrap();
        cfg.listen = "127.0.0.1:0".into();
        cfg.apps = vec![AppConfig::new(7, secret)];
        cfg.state_dir = dir.display().to_string();
        cfg.media.enabled = false;
        let server = crate::server::start(cfg).await.unwrap();
        let url = format!("ws://{}", server.addr);

        // token_file: read again before every use.
        let file = dir.join("token");
        let mut d = device(&url);
        d.server.app_sign = None;
        d.server.token_file = Some(file.display().to_string());
        let c = d.credentials().unwrap();
        assert!(c.fetches());
        assert_eq!(c.fetch().await.unwrap_err().code, ErrorCode::TOKEN_RENEWAL_FAILED, "missing file");
        std::fs::write(&file, "first\n").unwrap();
        assert_eq!(c.fetch().await.unwrap(), "first");
        std::fs::write(&file, "second").unwrap();
        assert_eq!(c.fetch().await.unwrap(), "second");

        // A device key, then the same key as the bearer secret of a token_url.
        let now = crate::auth::unix_now();
        let admin = crate::auth::Claims {
            app_id: 7,
            user_id: "*".into(),
            room_id: None,
            privileges: vec!["admin".into()],
            streams: None,
            dk: None,
            nbf: None,
            iat: now,
            exp: now + 60,
        };
        let admin = crate::auth::mint(&crate::auth::parse_secret(secret).unwrap(), &admin).unwrap();
        let dialer = Dialer::new(ServerUrl::parse(&url).unwrap(), None).unwrap();
        let bearer = format!("Bearer {admin}");
        let a = dialer
            .request(
                "POST",
                "/api/v1/apps/7/device-keys",
                &[("authorization", &bearer)],
                br#"{"user_id":"door"}"#.to_vec(),
                FETCH_TIMEOUT,
            )
            .await
            .unwrap();
        assert_eq!(a.status, 201);
        let key = serde_json::from_slice::<serde_json::Value>(&a.body).unwrap()["key"].as_str().unwrap().to_string();
        let mut d = device(&url);
        d.server.app_sign = None;
        d.server.device_key = Some(key.clone());
        let t = d.credentials().unwrap().fetch().await.unwrap();
        assert_eq!(crate::auth::peek(&t).unwrap().user_id, "door");
        let mut d = device(&url);
        d.server.app_sign = None;
        d.server.token_url = Some(format!("http://{}/api/v1/token", server.addr));
        d.server.token_url_secret = Some(key);
        let t = d.credentials().unwrap().fetch().await.unwrap();
        assert_eq!(crate::auth::peek(&t).unwrap().user_id, "door");
        d.server.token_url_secret = Some("cbk_wrong_00".into());
        let e = d.credentials().unwrap().fetch().await.unwrap_err();
        assert_eq!(e.code, ErrorCode::DEVICE_KEY_INVALID, "{e}");
        server.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn exactly_one_source_and_https_for_token_urls() {
        let mut d = device("wss://h");
        assert_eq!(d.credentials().unwrap().kind(), "app_sign");
        d.server.token = Some("t".into());
        assert!(d.credentials().unwrap_err().to_string().contains("only one"));
        d.server.app_sign = None;
        d.server.token = None;
        assert!(d.credentials().is_err(), "none set");
        d.server.token_url = Some("http://backend.example.net/token".into());
        d.server.token_url_secret = Some("s".into());
        assert!(d.credentials().unwrap_err().to_string().contains("https"));
        d.server.token_url = Some("https://backend.example.net".into());
        assert!(d.credentials().unwrap_err().to_string().contains("path"));
        d.server.token_url = None;
        d.server.token_url_secret = None;
        d.server.device_key = Some("not-a-key".into());
        assert!(d.credentials().unwrap_err().to_string().contains("cbk_"));
    }

    #[test]
    fn renewal_timing() {
        assert_eq!(renew_in(3600 + 100, 100), Duration::from_secs(2880));
        assert_eq!(renew_in(100 + 60, 100), Duration::from_secs(30), "at least 30 s before the end");
        assert_eq!(renew_in(100 + 4, 100), Duration::from_secs(2), "half of a very short life");
        assert_eq!(renew_in(50, 100), Duration::ZERO, "expired: at once");
        assert_eq!(renewal_retry().delay(0, 0.999).as_secs(), 1, "under 2 s at first");
        assert_eq!(renewal_retry().delay(9, 0.999).as_secs(), 59, "at most a minute");
    }
}
