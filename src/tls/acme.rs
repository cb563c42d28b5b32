//! Certificates from an ACME CA (Let's Encrypt, or any RFC 8555 directory), obtained and
//! renewed by the server itself with TLS-ALPN-01 on its own listen port (rustls-acme). The
//! account key and certificate are cached in `[tls.acme] cache_dir`, so a restart does not
//! order a new certificate.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::ResolvesServerCert;

/// The ALPN protocol of TLS-ALPN-01 validation connections.
pub const ACME_ALPN: &[u8] = b"acme-tls/1";

/// What the server needs to run ACME.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The names the certificate is for (each must resolve to this server).
    pub domains: Vec<String>,
    /// Contact addresses (`mailto:...`).
    pub contact: Vec<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// Where the account and certificate are cached.
    pub cache_dir: PathBuf,
    /// A private CA for reaching the directory (a test CA such as pebble's); system roots when `None`.
    pub directory_ca: Option<PathBuf>,
}

/// Starts the ACME state machine on a task; returns the resolver to serve from. Until the
/// first certificate arrives (or is loaded from the cache), TLS handshakes other than the
/// CA's validation fail.
#[cfg(feature = "acme")]
pub fn start(s: AcmeSettings) -> Result<Arc<dyn ResolvesServerCert>, super::client::TlsError> {
    use futures_util::StreamExt;
    use rustls_acme::AcmeConfig;
    use rustls_acme::caches::DirCache;
    let client = super::client::config(s.directory_ca.as_deref(), &[])?;
    let mut state = AcmeConfig::new_with_client_config(&s.domains, client)
        .contact(s.contact.iter().map(|c| if c.contains(':') { c.clone() } else { format!("mailto:{c}") }))
        .directory(&s.directory)
        .cache(DirCache::new(s.cache_dir.clone()))
        .state();
    let resolver = state.resolver();
    let domains = s.domains.join(",");
    tokio::spawn(async move {
        while let Some(event) = state.next().await {
            match event {
                Ok(ok) => tracing::info!(domains = %domains, event = ?ok, "ACME"),
                Err(err) => {
                    tracing::warn!(domains = %domains, error = ?err, hint = "the CA must reach this server's listen port by the names in [tls.acme] domains", "ACME failed; retrying")
                }
            }
        }
    });
    Ok(resolver)
}

/// This build has no ACME client (cargo feature `acme` off).
#[cfg(not(feature = "acme"))]
pub fn start(s: AcmeSettings) -> Result<Arc<dyn ResolvesServerCert>, super::client::TlsError> {
    let _ = s;
    Err(super::client::TlsError::Unavailable(
        "this build has no ACME client (cargo feature acme); use [tls] cert/key".into(),
    ))
}
