//! The one server-URL type. A device, an engine, doctor and config validation all take the
//! configured `[server] url` through [`ServerUrl::parse`], so the scheme's default port and
//! the signalling path are decided in one place (a port-less `ws://host/` once made the media
//! side resolve nothing and offer a loopback candidate).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A parsed callbox server URL: `ws://`, `wss://`, `http://` or `https://`, a host, a port
/// (the scheme's default when absent) and a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

/// Why a server URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// The scheme is not ws, wss, http or https.
    #[error("{0}: the server URL must start with ws://, wss://, http:// or https://")]
    Scheme(String),
    /// There is no host.
    #[error("{0}: no host in the server URL")]
    NoHost(String),
    /// The port is not a number from 1 to 65535.
    #[error("{0}: the port must be a number from 1 to 65535")]
    Port(String),
}

/// The signalling path when the URL names none.
pub const SIGNALLING_PATH: &str = "/ws/v1";

impl ServerUrl {
    /// Parses `s` (surrounding blanks ignored).
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        let s = s.trim();
        let lower = s.to_ascii_lowercase();
        let (tls, rest) = if let Some(i) =
            ["ws://", "http://"].iter().find_map(|p| lower.starts_with(p).then_some(p.len()))
        {
            (false, &s[i..])
        } else if let Some(i) = ["wss://", "https://"].iter().find_map(|p| lower.starts_with(p).then_some(p.len())) {
            (true, &s[i..])
        } else {
            return Err(UrlError::Scheme(s.to_string()));
        };
        let (authority, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            // Credentials in the URL would be sent nowhere and logged everywhere.
            return Err(UrlError::NoHost(s.to_string()));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| UrlError::NoHost(s.to_string()))?;
            let after = &v6[end + 1..];
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(UrlError::Port(s.to_string())),
            };
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::NoHost(s.to_string()));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| UrlError::Port(s.to_string()))?,
        };
        let path = match path {
            "" | "/" => SIGNALLING_PATH.to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        Ok(ServerUrl { tls, host: host.to_string(), port, path })
    }

    /// Whether the server is reached over TLS (wss/https).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The host name or address literal (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path (the signalling path when the URL names none).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// `host:port`, bracketed for IPv6, for connecting and resolving.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The signalling WebSocket URL (`ws[s]://host:port/path`).
    pub fn signalling(&self) -> String {
        format!("{}://{}{}", if self.tls { "wss" } else { "ws" }, self.authority(), self.path)
    }

    /// The HTTP(S) URL of `path` on the same server (for the token endpoint and health).
    pub fn http(&self, path: &str) -> String {
        format!("{}://{}{}", if self.tls { "https" } else { "http" }, self.authority(), path)
    }

    /// Whether the host is loopback (`localhost` or a loopback address): the only place a
    /// cleartext URL is not a warning.
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost") || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// Whether the host is one of the reserved example domains (RFC 2606: example.com, .net,
    /// .org and their subdomains) that the shipped configs use as placeholders.
    pub fn is_placeholder(&self) -> bool {
        let host = self.host.to_ascii_lowercase();
        ["example.com", "example.net", "example.org"].iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
    }

    /// Resolves the host (blocking DNS: call it off the async threads or where a short
    /// block is fine) to its first address.
    pub fn resolve(&self) -> std::io::Result<SocketAddr> {
        std::net::ToSocketAddrs::to_socket_addrs(&(self.host.as_str(), self.port))?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} has no address", self.host)))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.signalling())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_ports_and_paths() {
        let u = ServerUrl::parse("ws://h:7880").unwrap();
        assert_eq!(u.signalling(), "ws://h:7880/ws/v1");
        assert_eq!(ServerUrl::parse("http://h:7880/").unwrap().signalling(), "ws://h:7880/ws/v1");
        assert_eq!(ServerUrl::parse("ws://h/custom").unwrap().signalling(), "ws://h:80/custom");
        let t = ServerUrl::parse(" WSS://door.example.com ").unwrap();
        assert!(t.is_tls());
        assert_eq!(t.port(), 443);
        assert_eq!(t.signalling(), "wss://door.example.com:443/ws/v1");
        assert_eq!(t.http("/api/v1/token"), "https://door.example.com:443/api/v1/token");
        assert!(!t.is_loopback());
    }

    #[test]
    fn port_less_url_resolves_to_the_default_port() {
        let u = ServerUrl::parse("ws://localhost/").unwrap();
        assert_eq!(u.port(), 80);
        assert!(u.is_loopback());
        let a = u.resolve().unwrap();
        assert!(a.ip().is_loopback());
        assert_eq!(a.port(), 80);
    }

    #[test]
    fn ipv6_literals() {
        let u = ServerUrl::parse("ws://[::1]:7880").unwrap();
        assert_eq!(u.host(), "::1");
        assert_eq!(u.authority(), "[::1]:7880");
        assert!(u.is_loopback());
        assert_eq!(u.resolve().unwrap(), "[::1]:7880".parse::<SocketAddr>().unwrap());
        assert_eq!(ServerUrl::parse("wss://[2001:db8::1]").unwrap().port(), 443);
    }

    #[test]
    fn refusals() {
        assert!(matches!(ServerUrl::parse("ftp://h"), Err(UrlError::Scheme(_))));
        assert!(matches!(ServerUrl::parse("ws://"), Err(UrlError::NoHost(_))));
        assert!(matches!(ServerUrl::parse("ws://:80"), Err(UrlError::NoHost(_))));
        assert!(matches!(ServerUrl::parse("ws://u:p@h"), Err(UrlError::NoHost(_))));
        assert!(matches!(ServerUrl::parse("ws://h:0"), Err(UrlError::Port(_))));
        assert!(matches!(ServerUrl::parse("ws://h:99999"), Err(UrlError::Port(_))));
        assert!(matches!(ServerUrl::parse("ws://h:x/"), Err(UrlError::Port(_))));
        assert!(matches!(ServerUrl::parse("ws://[::1"), Err(UrlError::NoHost(_))));
    }
}
