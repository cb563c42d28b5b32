//! `callbox server` configuration: what the operator set (see `configs/server.toml`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::config_file::{self, ConfigError};
pub use callbox_core::server::config::{
    AppConfig, CallsConfig, DEFAULT_MEDIA_PORT, Limits, MediaConfig, RING_SECS, RegistryConfig, SessionConfig,
};

/// Default listen address for HTTP and WebSocket.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";

/// `[webhooks]`: how deliveries are retried and bounded, and whom the TLS client trusts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// The first retry's delay, milliseconds; it doubles per failure of the same event.
    pub retry_ms: u64,
    /// The longest delay between tries, milliseconds.
    pub retry_max_ms: u64,
    /// How long one delivery may take (connect, TLS, answer), milliseconds.
    pub timeout_ms: u64,
    /// Events kept per app; when full, the oldest waiting one is dropped (counted).
    pub queue: usize,
    /// Deliveries under way at once per app (one per room).
    pub in_flight: usize,
    /// CA certificates (PEM) the receivers' certificates must chain to; empty: the system's.
    pub ca_file: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            retry_ms: 1000,
            retry_max_ms: 60_000,
            timeout_ms: 5000,
            queue: 10_000,
            in_flight: 4,
            ca_file: String::new(),
        }
    }
}

impl WebhooksConfig {
    /// The outbox's part.
    pub fn outbox(&self) -> callbox_core::server::webhooks::OutboxConfig {
        callbox_core::server::webhooks::OutboxConfig {
            retry: Duration::from_millis(self.retry_ms.max(10)),
            retry_max: Duration::from_millis(self.retry_max_ms.max(self.retry_ms).max(10)),
            queue: self.queue.max(1),
            in_flight: self.in_flight.clamp(1, 64),
        }
    }
}

/// The server configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP + WebSocket listen address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The apps this server hosts.
    #[serde(default)]
    pub apps: Vec<AppConfig>,
    /// Session timing.
    #[serde(default)]
    pub session: SessionConfig,
    /// Abuse limits.
    #[serde(default)]
    pub limits: Limits,
    /// The media relay (SFU).
    #[serde(default)]
    pub media: MediaConfig,
    /// Calls between members (ring time).
    #[serde(default)]
    pub calls: CallsConfig,
    /// How webhooks are delivered (each app's receiver is in `[[apps]]`).
    #[serde(default)]
    pub webhooks: WebhooksConfig,
    /// Front-desk accounts that sign in to the browser page with a password.
    #[serde(default)]
    pub desks: Vec<super::desk::DeskConfig>,
    /// TLS on the listen port (https and wss for everything on it).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Where the server keeps what it creates: device keys, the ACME cache. Empty: systemd's
    /// `$STATE_DIRECTORY`, else `$HOME/.local/state/callbox-server`.
    #[serde(default)]
    pub state_dir: String,
    /// callbox's log level (applied on SIGHUP too).
    #[serde(default)]
    pub log: crate::logging::LogSection,
    /// Development mode (`callbox server --dev`, never from the file): the dev app is added
    /// and `GET /dev/token` hands out its tokens to anyone.
    #[serde(skip)]
    pub dev: bool,
    /// `--dev-public`: development mode on a non-loopback address, on purpose.
    #[serde(skip)]
    pub dev_public: bool,
}

/// TLS on the listen port: a certificate from PEM files, or from an ACME CA. Neither: plain
/// http/ws (a warning at start unless the listen address is loopback).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first).
    pub cert: String,
    /// PEM private key.
    pub key: String,
    /// How often the files are checked for a new certificate (also on SIGHUP), seconds.
    pub reload_secs: u64,
    /// Obtain and renew the certificate from an ACME CA instead of files.
    pub acme: Option<AcmeToml>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig { cert: String::new(), key: String::new(), reload_secs: 10, acme: None }
    }
}

/// `[tls.acme]`: TLS-ALPN-01 on the listen port (which must be reachable on 443 by the
/// names in `domains`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeToml {
    /// The names the certificate is for.
    pub domains: Vec<String>,
    /// Contact e-mail addresses.
    #[serde(default)]
    pub contact: Vec<String>,
    /// The CA's directory URL (default: Let's Encrypt production).
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// Cache for the account key and certificate (default: `<state_dir>/acme`).
    #[serde(default)]
    pub cache_dir: String,
    /// A private CA for the directory's own TLS (a test CA); system roots when empty.
    #[serde(default)]
    pub directory_ca: String,
}

fn default_acme_directory() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".into()
}

/// This host's address on its default route (no packet is sent), if it has one.
pub fn default_route_ip() -> Option<IpAddr> {
    crate::rtc::local_ip_towards(SocketAddr::from(([192, 0, 2, 1], 9)))
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}

impl ServerConfig {
    /// Loads and validates: file (optional), then `CALLBOX_...` environment overrides.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let cfg: ServerConfig = config_file::load(path, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values the types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        self.log.validate()?;
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            crate::auth::parse_secret(&app.secret)
                .map_err(|e| ConfigError::value(&format!("apps[{i}].secret"), e.to_string()))?;
            match (&app.webhook_url, &app.webhook_secret) {
                (Some(url), Some(secret)) => {
                    if !url.trim().to_ascii_lowercase().starts_with("http") {
                        return Err(ConfigError::value(
                            &format!("apps[{i}].webhook_url"),
                            "must be https:// or http://",
                        ));
                    }
                    callbox_core::url::ServerUrl::parse(url)
                        .map_err(|e| ConfigError::value(&format!("apps[{i}].webhook_url"), e.to_string()))?;
                    if secret.len() < 16 {
                        return Err(ConfigError::value(
                            &format!("apps[{i}].webhook_secret"),
                            "at least 16 characters (e.g. `openssl rand -hex 32`)",
                        ));
                    }
                }
                (Some(_), None) => {
                    return Err(ConfigError::value(
                        &format!("apps[{i}].webhook_secret"),
                        "required with webhook_url: receivers check each delivery's signature with it",
                    ));
                }
                (None, Some(_)) => {
                    return Err(ConfigError::value(
                        &format!("apps[{i}].webhook_url"),
                        "webhook_secret is set without it",
                    ));
                }
                (None, None) => {}
            }
            if !seen.insert(app.app_id) {
                return Err(ConfigError::value(
                    &format!("apps[{i}].app_id"),
                    format!("app_id {} appears twice", app.app_id),
                ));
            }
        }
        for (i, d) in self.desks.iter().enumerate() {
            super::desk::check(d).map_err(|e| ConfigError::value(&format!("desks[{i}]"), e))?;
            if d.token_secs > self.limits.max_token_secs {
                return Err(ConfigError::value(
                    &format!("desks[{i}].token_secs"),
                    "longer than [limits] max_token_secs",
                ));
            }
        }
        if !RING_SECS.contains(&self.calls.ring_secs) {
            return Err(ConfigError::value("calls.ring_secs", "must be 5..=120"));
        }
        if self.session.grace_secs == 0 {
            return Err(ConfigError::value("session.grace_secs", "must be at least 1"));
        }
        if !(100..=60_000).contains(&self.session.heartbeat_ms) {
            return Err(ConfigError::value("session.heartbeat_ms", "must be between 100 and 60000"));
        }
        let l = &self.limits;
        let positive = [
            ("limits.messages_per_sec", l.messages_per_sec),
            ("limits.message_burst", l.message_burst),
            ("limits.logins_per_sec", l.logins_per_sec),
            ("limits.login_burst", l.login_burst),
            ("limits.broadcasts_per_sec", l.broadcasts_per_sec),
            ("limits.broadcast_burst", l.broadcast_burst),
            ("limits.whip_per_sec", l.whip_per_sec),
            ("limits.whip_burst", l.whip_burst),
        ];
        if !(1..=300).contains(&l.handshake_secs) {
            return Err(ConfigError::value("limits.handshake_secs", "must be 1 to 300"));
        }
        if l.max_pending == 0 || l.max_pending_per_ip == 0 {
            return Err(ConfigError::value(
                "limits.max_pending",
                "max_pending and max_pending_per_ip must be at least 1",
            ));
        }
        for (key, v) in positive {
            if !(v.is_finite() && v >= 1.0) {
                return Err(ConfigError::value(key, "must be a number >= 1"));
            }
        }
        if l.max_message_bytes < 1024 {
            return Err(ConfigError::value("limits.max_message_bytes", "must be at least 1024"));
        }
        if l.max_users_per_room == 0 || l.max_streams_per_user == 0 {
            return Err(ConfigError::value("limits.max_users_per_room", "limits must be at least 1"));
        }
        if l.max_token_secs < 60 {
            return Err(ConfigError::value("limits.max_token_secs", "must be at least 60"));
        }
        if !(10..=l.max_token_secs).contains(&l.device_token_secs) {
            return Err(ConfigError::value("limits.device_token_secs", "must be 10 to limits.max_token_secs"));
        }
        self.media_bind()?;
        self.media_announce()?;
        self.validate_turn()?;
        self.validate_tls()?;
        Ok(())
    }

    fn validate_turn(&self) -> Result<(), ConfigError> {
        let m = &self.media;
        for (i, u) in m.turn_urls.iter().enumerate() {
            crate::proto::ice_servers::IceUrl::parse(u)
                .map_err(|e| ConfigError::value(&format!("media.turn_urls[{i}]"), e))?;
        }
        if m.turn_urls.is_empty() != m.turn_secret.is_empty() {
            return Err(ConfigError::value(
                "media.turn_secret",
                "media.turn_urls and media.turn_secret go together: set both or neither",
            ));
        }
        if !(60..=7 * 86_400).contains(&m.turn_ttl_secs) {
            return Err(ConfigError::value("media.turn_ttl_secs", "must be 60 to 604800"));
        }
        if m.shards > callbox_core::rtc::sfu::shard::MAX_SHARDS {
            return Err(ConfigError::value("media.shards", "must be 0 (one per core) to 64"));
        }
        Ok(())
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let t = &self.tls;
        if t.cert.is_empty() != t.key.is_empty() {
            return Err(ConfigError::value("tls.cert", "tls.cert and tls.key go together: set both or neither"));
        }
        if !t.cert.is_empty() {
            // A missing or mismatched pair is the file's fault: exit 78, not a restart loop.
            crate::tls::server::FileCert::load(t.cert.as_ref(), t.key.as_ref()).map_err(|e| {
                let key = if e.path == t.key { "tls.key" } else { "tls.cert" };
                ConfigError::value(key, e.to_string())
            })?;
        }
        if !(1..=86_400).contains(&t.reload_secs) {
            return Err(ConfigError::value("tls.reload_secs", "must be 1 to 86400"));
        }
        if let Some(a) = &t.acme {
            if !t.cert.is_empty() {
                return Err(ConfigError::value("tls.acme", "use either tls.cert/tls.key or tls.acme, not both"));
            }
            if a.domains.is_empty() || a.domains.iter().any(|d| d.is_empty() || d.contains(['/', ':', ' '])) {
                return Err(ConfigError::value("tls.acme.domains", "list the DNS names the certificate is for"));
            }
            if crate::url::ServerUrl::parse(&a.directory).map(|u| u.is_tls()) != Ok(true) {
                return Err(ConfigError::value("tls.acme.directory", "must be an https:// URL"));
            }
        }
        Ok(())
    }

    /// What is valid but unsafe in the field (check-config WARNs, the server logs at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.tls_enabled() && self.listen_addr().is_ok_and(|a| !a.ip().is_loopback()) {
            out.push(format!(
                "listen: {} serves plain http/ws to other hosts: tokens travel in cleartext and browsers elsewhere cannot use the camera; set [tls] cert/key or [tls.acme]",
                self.listen
            ));
        }
        out
    }

    /// Whether the listen port speaks TLS.
    pub fn tls_enabled(&self) -> bool {
        !self.tls.cert.is_empty() || self.tls.acme.is_some()
    }

    /// The state directory (see [`ServerConfig::state_dir`]).
    pub fn state_path(&self) -> std::path::PathBuf {
        if !self.state_dir.is_empty() {
            return self.state_dir.clone().into();
        }
        if let Some(d) = std::env::var_os("STATE_DIRECTORY") {
            // systemd may list several, separated by ':'; the first is ours.
            let d = d.to_string_lossy().split(':').next().unwrap_or_default().to_string();
            return d.into();
        }
        let home = std::env::var_os("HOME").map(std::path::PathBuf::from).unwrap_or_else(|| "/var/lib".into());
        home.join(".local/state/callbox-server")
    }

    /// The media socket address.
    pub fn media_bind(&self) -> Result<SocketAddr, ConfigError> {
        let ip: IpAddr = self
            .media
            .bind
            .parse()
            .map_err(|_| ConfigError::value("media.bind", format!("{:?} is not an IP address", self.media.bind)))?;
        Ok(SocketAddr::new(ip, self.media.port))
    }

    /// The ICE-TCP port to listen on, if ICE-TCP is on (0: any free port).
    pub fn media_tcp_port(&self) -> Option<u16> {
        self.media.tcp.then_some(self.media.tcp_port.unwrap_or(self.media.port))
    }

    /// The addresses announced to clients (see [`MediaConfig::announce`]).
    pub fn media_announce(&self) -> Result<Vec<IpAddr>, ConfigError> {
        let mut out = Vec::new();
        for (i, a) in self.media.announce.iter().enumerate() {
            out.push(
                a.parse()
                    .map_err(|_| ConfigError::value(&format!("media.announce[{i}]"), format!("{a:?} is not an IP")))?,
            );
        }
        let bind = self.media_bind()?.ip();
        if out.is_empty() {
            let loopback = IpAddr::from([127, 0, 0, 1]);
            if bind.is_unspecified() {
                // The routed address for the network, then loopback for a device or browser
                // on the server's own machine (a dev setup); remote peers skip the latter.
                out.extend(default_route_ip().filter(|ip| !ip.is_loopback()));
                out.push(loopback);
            } else {
                out.push(bind);
            }
        }
        Ok(out)
    }

    /// The parsed listen address.
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|_| ConfigError::value("listen", format!("{:?} is not an IP:port address", self.listen)))
    }

    /// What only an operator's intent can make acceptable: the public demo secret in an app
    /// (anyone could mint any token for it, `door` and `admin` included) outside dev mode,
    /// and dev mode (`/dev/token` hands out `door` tokens to anyone) on an address others
    /// can reach without `--dev-public`.
    pub fn check_exposure(&self) -> Result<(), ConfigError> {
        if !self.dev
            && let Some(i) = self.apps.iter().position(|a| a.secret.eq_ignore_ascii_case(crate::server::DEV_SECRET))
        {
            return Err(ConfigError::value(
                &format!("apps[{i}].secret"),
                "is the public demo secret: anyone could mint tokens for this app; make your own with \
                 `openssl rand -hex 32` (or run with --dev on a loopback address to try callbox)",
            ));
        }
        if self.dev && !self.dev_public && !self.listen_addr()?.ip().is_loopback() {
            return Err(ConfigError::value(
                "listen",
                format!(
                    "{} is reachable from other hosts and --dev gives anyone who asks a door token; \
                     listen on 127.0.0.1, or add --dev-public if that is really meant",
                    self.listen
                ),
            ));
        }
        Ok(())
    }

    /// Grace period as a duration.
    pub fn grace(&self) -> Duration {
        self.session.grace()
    }

    /// The sections the registry runs on.
    pub fn registry(&self) -> RegistryConfig {
        RegistryConfig {
            apps: self.apps.clone(),
            session: self.session.clone(),
            limits: self.limits.clone(),
            media: self.media.clone(),
            calls: self.calls.clone(),
        }
    }
}
