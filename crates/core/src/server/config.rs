//! The parts of the server's configuration the registry runs on: the apps, session timing,
//! abuse limits and the media relay's TURN hand-out. `callbox server`'s own configuration
//! (`ServerConfig`, in the product crate) holds these sections as they are and checks them
//! along with what only a running server needs (listen address, TLS files).

use std::time::Duration;

use serde::Deserialize;

/// What the registry is configured with: the sections of the server's file it runs on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RegistryConfig {
    /// The apps this server hosts.
    pub apps: Vec<AppConfig>,
    /// Session timing.
    pub session: SessionConfig,
    /// Abuse limits.
    pub limits: Limits,
    /// The media relay (whether there is one; the TURN servers handed out at login).
    pub media: MediaConfig,
    /// Calls between members.
    pub calls: CallsConfig,
}

/// `[calls]`: calls between members of a room.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallsConfig {
    /// How long a callee rings when the call does not say, seconds (5..=120).
    pub ring_secs: u32,
}

impl Default for CallsConfig {
    fn default() -> Self {
        CallsConfig { ring_secs: 30 }
    }
}

/// The shortest and longest ring a call may ask for, seconds.
pub const RING_SECS: std::ops::RangeInclusive<u32> = 5..=120;

impl SessionConfig {
    /// Grace period as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

/// The media relay: every WebRTC connection on one UDP port.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Relay media at all (off: signalling only; media offers get 1003035).
    pub enabled: bool,
    /// IP to bind the media socket to.
    pub bind: String,
    /// The one UDP port for all media (0: any free port).
    pub port: u16,
    /// Addresses clients reach the media port at (put in every answer). Empty: the bind
    /// address, or, when that is 0.0.0.0, this host's address on its default route and
    /// 127.0.0.1 (for a device or browser on the server's own machine).
    pub announce: Vec<String>,
    /// Accept ICE-TCP (RFC 6544): clients whose UDP does not pass (corporate, hotel and some
    /// LTE networks) carry media over TCP to `tcp_port`.
    pub tcp: bool,
    /// The TCP port for ICE-TCP; absent: the same number as `port`.
    pub tcp_port: Option<u16>,
    /// TURN servers handed to every client at login (`turn:`, `turns:` and `stun:` URLs),
    /// for networks where neither UDP nor ICE-TCP reaches the media port.
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (coturn `static-auth-secret`): each login gets
    /// credentials made from it, valid for `turn_ttl_secs`.
    pub turn_secret: String,
    /// How long handed-out TURN credentials are valid, seconds.
    pub turn_ttl_secs: u64,
    /// How many shards forward media, each on its own core with its own socket on the one
    /// port (`SO_REUSEPORT`); 0: one per core the server may run on (`taskset` and cgroup
    /// limits count), 1 to 64: that many.
    pub shards: usize,
}

impl MediaConfig {
    /// The number of shards `shards` asks for on this machine.
    pub fn shard_count(&self) -> usize {
        match self.shards {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
        .clamp(1, crate::rtc::sfu::shard::MAX_SHARDS)
    }
}

impl MediaConfig {
    /// The TURN servers with credentials for `user_id`, valid until `now_unix` plus
    /// `turn_ttl_secs`; none unless `turn_urls` are set.
    pub fn ice_servers_for(&self, user_id: &str, now_unix: u64) -> Vec<crate::proto::ice_servers::IceServer> {
        if self.turn_urls.is_empty() {
            return vec![];
        }
        let expires = now_unix + self.turn_ttl_secs;
        let (username, credential) = crate::proto::ice_servers::rest_credentials(&self.turn_secret, user_id, expires);
        vec![crate::proto::ice_servers::IceServer { urls: self.turn_urls.clone(), username, credential }]
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            enabled: true,
            bind: "0.0.0.0".into(),
            port: DEFAULT_MEDIA_PORT,
            announce: vec![],
            tcp: true,
            tcp_port: None,
            turn_urls: vec![],
            turn_secret: String::new(),
            turn_ttl_secs: 86_400,
            shards: 0,
        }
    }
}

/// Default UDP port for media.
pub const DEFAULT_MEDIA_PORT: u16 = 7882;

/// One app: its ID and secret, and where its events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The AppID.
    pub app_id: u32,
    /// 64 hex characters; signs the app's tokens.
    pub secret: String,
    /// The app's webhook receiver (`https://...`, or `http://` on a trusted network).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// Signs each webhook delivery (HMAC-SHA256); required with `webhook_url`, at least 16
    /// characters.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

impl AppConfig {
    /// An app without a webhook.
    pub fn new(app_id: u32, secret: impl Into<String>) -> Self {
        AppConfig { app_id, secret: secret.into(), webhook_url: None, webhook_secret: None }
    }
}

/// Session timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// How long a silent session is kept before its user and streams are deleted.
    pub grace_secs: u64,
    /// How often clients are asked to send a heartbeat.
    pub heartbeat_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig { grace_secs: 90, heartbeat_ms: 2000 }
    }
}

/// Limits that keep one client from disturbing the others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest signalling message accepted, bytes.
    pub max_message_bytes: usize,
    /// Sustained messages per second per session.
    pub messages_per_sec: f64,
    /// Burst of messages per session.
    pub message_burst: f64,
    /// Sustained logins per second per app.
    pub logins_per_sec: f64,
    /// Burst of logins per app.
    pub login_burst: f64,
    /// Users per room.
    pub max_users_per_room: usize,
    /// Streams per user.
    pub max_streams_per_user: usize,
    /// Sustained broadcast messages per second per session.
    pub broadcasts_per_sec: f64,
    /// Burst of broadcast messages per session.
    pub broadcast_burst: f64,
    /// Room extra info keys per room.
    pub max_extra_info_keys: usize,
    /// Seconds a new connection has to send its request headers, and a new WebSocket to log
    /// in, before it is closed.
    pub handshake_secs: u64,
    /// Connections not logged in (yet), in all; more are closed at once.
    pub max_pending: usize,
    /// Connections not logged in (yet) from one source address.
    pub max_pending_per_ip: usize,
    /// Longest token lifetime accepted (`exp - iat`, and `exp - now`), seconds.
    pub max_token_secs: u64,
    /// Lifetime of the tokens a device key obtains from `POST /api/v1/token`, seconds.
    pub device_token_secs: u64,
    /// Sustained WHIP/WHEP offers per second per app.
    pub whip_per_sec: f64,
    /// Burst of WHIP/WHEP offers per app.
    pub whip_burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 16 * 1024,
            messages_per_sec: 50.0,
            message_burst: 100.0,
            logins_per_sec: 50.0,
            login_burst: 100.0,
            max_users_per_room: 64,
            max_streams_per_user: 4,
            broadcasts_per_sec: 5.0,
            broadcast_burst: 10.0,
            max_extra_info_keys: 16,
            handshake_secs: 10,
            max_pending: 512,
            max_pending_per_ip: 32,
            whip_per_sec: 5.0,
            whip_burst: 20.0,
            max_token_secs: 30 * 86_400,
            device_token_secs: 3600,
        }
    }
}
