//! ICE servers (TURN relays) as devices, the page and the server's login reply name them,
//! and the time-limited TURN credentials the server hands out (coturn's shared-secret
//! scheme, `use-auth-secret`): username `<expiry unix seconds>:<user id>`, password
//! base64(HMAC-SHA1(secret, username)). A device therefore carries no static TURN password.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// One ICE server entry, in the shape of the browser's `RTCIceServer`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `turn:host[:port][?transport=udp|tcp]`, `turns:host[:port][?transport=tcp]` (TLS),
    /// or `stun:host[:port]` (the page uses those; a device has no use for them: the
    /// server answers its checks from whatever address they come).
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default)]
    pub username: String,
    /// TURN password.
    #[serde(default)]
    pub credential: String,
}

impl IceServer {
    /// Checks every URL; the error names the bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.urls.is_empty() {
            return Err("an ICE server needs at least one URL".into());
        }
        for u in &self.urls {
            IceUrl::parse(u)?;
        }
        Ok(())
    }

    /// The TURN URLs of this entry (STUN ones left out).
    pub fn turn_urls(&self) -> impl Iterator<Item = TurnUrl> + '_ {
        self.urls.iter().filter_map(|u| match IceUrl::parse(u) {
            Ok(IceUrl::Turn(t)) => Some(t),
            _ => None,
        })
    }
}

/// How a device reaches a TURN server. The relay itself is always UDP toward the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TurnTransport {
    /// `turn:` over UDP (port 3478 by default).
    Udp,
    /// `turn:...?transport=tcp` (3478).
    Tcp,
    /// `turns:` over TLS on TCP (5349 by default; 443 gets through most firewalls).
    Tls,
}

impl TurnTransport {
    /// `turn-udp`, `turn-tcp` or `turn-tls`, as status and quality events name the path.
    pub fn path_name(self) -> &'static str {
        match self {
            TurnTransport::Udp => "turn-udp",
            TurnTransport::Tcp => "turn-tcp",
            TurnTransport::Tls => "turn-tls",
        }
    }
}

/// A parsed `turn:` or `turns:` URL (RFC 7065).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TurnUrl {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
    /// UDP, TCP or TLS.
    pub transport: TurnTransport,
}

impl fmt::Display for TurnUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        match self.transport {
            TurnTransport::Udp => write!(f, "turn:{host}:{}", self.port),
            TurnTransport::Tcp => write!(f, "turn:{host}:{}?transport=tcp", self.port),
            TurnTransport::Tls => write!(f, "turns:{host}:{}?transport=tcp", self.port),
        }
    }
}

/// A parsed ICE-server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IceUrl {
    /// `stun:`: accepted, used by browsers only.
    Stun,
    /// `turn:` / `turns:`.
    Turn(TurnUrl),
}

impl IceUrl {
    /// Parses one URL; the error says what is wrong with it.
    pub fn parse(url: &str) -> Result<IceUrl, String> {
        let bad = |why: &str| format!("ICE server URL {url:?}: {why}");
        let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme (turn:, turns: or stun:)"))?;
        let (hostport, query) = match rest.split_once('?') {
            Some((h, q)) => (h, Some(q)),
            None => (rest, None),
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("expected host[:port]"))?;
        if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c)) {
            return Err(bad("bad host"));
        }
        let transport = match query {
            None => None,
            Some("transport=udp") => Some(TurnTransport::Udp),
            Some("transport=tcp") => Some(TurnTransport::Tcp),
            Some(_) => return Err(bad("the only query is transport=udp or transport=tcp")),
        };
        match scheme {
            "stun" | "stuns" => Ok(IceUrl::Stun),
            "turn" => {
                let transport = transport.unwrap_or(TurnTransport::Udp);
                Ok(IceUrl::Turn(TurnUrl { host: host.into(), port: port.unwrap_or(3478), transport }))
            }
            "turns" => {
                if transport == Some(TurnTransport::Udp) {
                    return Err(bad("turns: runs over TLS, not UDP (DTLS is not supported)"));
                }
                Ok(IceUrl::Turn(TurnUrl {
                    host: host.into(),
                    port: port.unwrap_or(5349),
                    transport: TurnTransport::Tls,
                }))
            }
            _ => Err(bad("the scheme is not turn:, turns: or stun:")),
        }
    }
}

fn split_host_port(s: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = s.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        return match rest.strip_prefix(':') {
            Some(p) => Some((host, Some(p.parse().ok()?))),
            None if rest.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h, Some(p.parse().ok()?))),
        None => Some((s, None)),
    }
}

/// Time-limited TURN credentials for `user_id`, valid until `expires_unix` (seconds), in
/// coturn's `use-auth-secret` scheme (also what most managed TURN services accept).
pub fn rest_credentials(secret: &str, user_id: &str, expires_unix: u64) -> (String, String) {
    let username = format!("{expires_unix}:{user_id}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    let tag = ring::hmac::sign(&key, username.as_bytes());
    (username, base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_their_default_ports_and_transports() {
        let t = |u: &str| match IceUrl::parse(u).unwrap() {
            IceUrl::Turn(t) => t,
            IceUrl::Stun => panic!("{u} is TURN"),
        };
        assert_eq!(
            t("turn:relay.example.com"),
            TurnUrl { host: "relay.example.com".into(), port: 3478, transport: TurnTransport::Udp }
        );
        assert_eq!(t("turn:10.0.0.1:3479?transport=tcp").transport, TurnTransport::Tcp);
        assert_eq!(
            t("turns:relay.example.com:443?transport=tcp"),
            TurnUrl { host: "relay.example.com".into(), port: 443, transport: TurnTransport::Tls }
        );
        assert_eq!(t("turns:relay.example.com").port, 5349);
        assert_eq!(t("turn:[2001:db8::1]:3478").host, "2001:db8::1");
        assert_eq!(IceUrl::parse("stun:stun.example.com:19302").unwrap(), IceUrl::Stun);
        assert_eq!(t("turns:a.b:443?transport=tcp").to_string(), "turns:a.b:443?transport=tcp");
        for bad in [
            "relay.example.com",
            "turn:",
            "turn:host:99999",
            "turn:host?transport=sctp",
            "http://x",
            "turns:h?transport=udp",
            "turn:a b",
        ] {
            let e = IceUrl::parse(bad).unwrap_err();
            assert!(e.contains("ICE server URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn credentials_follow_the_coturn_shared_secret_scheme() {
        // HMAC-SHA1("north", "1700000000:door") computed independently (openssl dgst -sha1
        // -hmac north -binary | base64).
        let (user, pass) = rest_credentials("north", "door", 1_700_000_000);
        assert_eq!(user, "1700000000:door");
        assert_eq!(pass, "nUJ5U8y/THqDMahJE5cLi8ZxhbU=");
        assert_ne!(rest_credentials("south", "door", 1_700_000_000).1, pass);
    }

    #[test]
    fn an_ice_server_needs_urls_and_only_good_ones() {
        assert!(IceServer::default().validate().is_err());
        let s = IceServer { urls: vec!["stun:a".into(), "turns:b:443".into()], ..Default::default() };
        assert!(s.validate().is_ok());
        assert_eq!(s.turn_urls().count(), 1);
    }
}
