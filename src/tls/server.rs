//! The server half: the certificate and key from PEM files, served to every TLS connection of
//! the listen port and replaced while running when the files change.
//!
//! The files are compared by content on every check, not by mtime: a certificate renewed by
//! an ACME client is usually written to a new file and renamed over the old one (a new inode
//! with perhaps the same second), and some tools copy with the old mtime preserved. A check
//! runs every `[tls] reload_secs` and whenever [`FileCert::reload`] is called (SIGHUP).
//! A half-written pair (key and certificate not matching yet) is kept out and the old pair
//! served until both files agree.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// ALPN protocol of HTTP/1.1 (the page, WebSocket upgrades, WHIP/WHEP and the API).
pub const HTTP11: &[u8] = b"http/1.1";

/// Why a certificate pair could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct CertError {
    /// The file at fault.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

fn cert_err(path: &Path, reason: impl Into<String>) -> CertError {
    CertError { path: path.display().to_string(), reason: reason.into() }
}

/// Parses a PEM certificate chain and private key into a served pair.
pub fn certified_key(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(cert_path, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(cert_err(cert_path, "no certificate in the file"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| cert_err(key_path, format!("no PEM private key: {e}")))?;
    CertifiedKey::from_der(chain, key, &super::provider())
        .map_err(|e| cert_err(key_path, format!("the key does not fit the certificate: {e}")))
}

/// A certificate pair read from files, reloadable.
#[derive(Debug)]
pub struct FileCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The file contents that `current` came from.
    seen: Mutex<(Vec<u8>, Vec<u8>)>,
}

impl FileCert {
    /// Loads the pair; an error names the file at fault.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<FileCert>, CertError> {
        let cert = std::fs::read(cert_path).map_err(|e| cert_err(cert_path, e.to_string()))?;
        let key = std::fs::read(key_path).map_err(|e| cert_err(key_path, e.to_string()))?;
        let ck = certified_key(cert_path, &cert, key_path, &key)?;
        Ok(Arc::new(FileCert {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            current: RwLock::new(Arc::new(ck)),
            seen: Mutex::new((cert, key)),
        }))
    }

    /// Reads the files again and serves the new pair if they changed and agree. `Ok(true)`
    /// when a new certificate is now served.
    pub fn reload(&self) -> Result<bool, CertError> {
        let cert = std::fs::read(&self.cert_path).map_err(|e| cert_err(&self.cert_path, e.to_string()))?;
        let key = std::fs::read(&self.key_path).map_err(|e| cert_err(&self.key_path, e.to_string()))?;
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.0 == cert && seen.1 == key {
            return Ok(false);
        }
        let ck = certified_key(&self.cert_path, &cert, &self.key_path, &key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ck);
        *seen = (cert, key);
        Ok(true)
    }

    /// The pair served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks the files every `every` until the process ends, logging what changed.
    pub fn watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_error: Option<CertError> = None;
            loop {
                tick.tick().await;
                let r = {
                    let me = me.clone();
                    tokio::task::spawn_blocking(move || me.reload()).await
                };
                match r {
                    Ok(Ok(true)) => {
                        last_error = None;
                        tracing::info!(callbox_event = "tls", cert = %me.cert_path.display(), "TLS certificate replaced; new connections get the new one");
                    }
                    Ok(Ok(false)) => last_error = None,
                    Ok(Err(e)) => {
                        if last_error.as_ref() != Some(&e) {
                            tracing::warn!(callbox_event = "tls", error = %e, hint = "the previous certificate is still served; fix or finish writing the files", "TLS certificate not reloaded");
                        }
                        last_error = Some(e);
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The server configuration for a certificate source, offering HTTP/1.1 (and `extra` ALPN
/// protocols, e.g. ACME's challenge protocol).
pub fn config(resolver: Arc<dyn ResolvesServerCert>, extra_alpn: &[&[u8]]) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = std::iter::once(HTTP11).chain(extra_alpn.iter().copied()).map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}
