//! The client half: a connector verifying the server against the system's roots or a
//! private CA (`[server] ca_file`), and the stable code of each verification failure.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::proto::ErrorCode;

/// Why a TLS client could not be set up or could not connect.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("{path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The system has no usable root certificates (install ca-certificates or set ca_file).
    #[error("no system root certificates found (install ca-certificates, or set [server] ca_file)")]
    NoRoots,
    /// The host is not a valid DNS name or address for TLS.
    #[error("{0}: not a valid TLS server name")]
    ServerName(String),
    /// The handshake failed; `code` says why in the protocol's terms.
    #[error("{message}")]
    Handshake {
        /// The stable code: TLS_UNKNOWN_CA, TLS_CERT_EXPIRED, TLS_NAME_MISMATCH or TLS_HANDSHAKE_FAILED.
        code: ErrorCode,
        /// What happened, for the journal.
        message: String,
    },
    /// This build lacks what the configuration asks for.
    #[error("{0}")]
    Unavailable(String),
    /// The TCP connection failed or broke during the handshake.
    #[error("{0}")]
    Io(std::io::Error),
}

impl TlsError {
    /// The stable code of a certificate failure, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            TlsError::Handshake { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// The roots a client trusts: the CA certificates in `ca_file`, or the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| TlsError::CaFile { path: path.display().to_string(), reason };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| bad(format!("not PEM: {e}")))?;
                store.add(cert).map_err(|e| bad(format!("not a CA certificate: {e}")))?;
            }
            if store.is_empty() {
                return Err(bad("no certificate in the file".into()));
            }
        }
        None => {
            // Reading the system store costs tens of milliseconds: once per process.
            static SYSTEM: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
            let certs = SYSTEM.get_or_init(|| rustls_native_certs::load_native_certs().certs);
            let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
            if added == 0 {
                return Err(TlsError::NoRoots);
            }
        }
    }
    Ok(store)
}

/// A client configuration trusting [`roots`], offering `alpn` (e.g. `http/1.1`).
pub fn config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
    let mut cfg = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Handshake { code: ErrorCode::TLS_HANDSHAKE_FAILED, message: e.to_string() })?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Runs the TLS handshake over `io` toward `host`, classifying a failure.
pub async fn connect<IO>(cfg: Arc<ClientConfig>, host: &str, io: IO) -> Result<TlsStream<IO>, TlsError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string()).map_err(|_| TlsError::ServerName(host.to_string()))?;
    TlsConnector::from(cfg).connect(name, io).await.map_err(|e| classify(host, e))
}

/// The stable code and message of a failed handshake.
pub fn classify(host: &str, e: std::io::Error) -> TlsError {
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return TlsError::Io(e);
    };
    let (code, why) = match err {
        rustls::Error::InvalidCertificate(c) => match c {
            // A CA of the same name but another key (a re-created private CA) shows as a bad
            // signature: to the operator it is the same "not signed by a CA I trust".
            CertificateError::UnknownIssuer | CertificateError::BadSignature => (
                ErrorCode::TLS_UNKNOWN_CA,
                "its certificate is not signed by a trusted CA (private CA? set [server] ca_file)",
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                (ErrorCode::TLS_CERT_EXPIRED, "its certificate has expired (or this device's clock is wrong)")
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                (ErrorCode::TLS_CERT_EXPIRED, "its certificate is not valid yet (is this device's clock set?)")
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                (ErrorCode::TLS_NAME_MISMATCH, "its certificate does not name this host (check [server] url)")
            }
            _ => (ErrorCode::TLS_HANDSHAKE_FAILED, "its certificate was refused"),
        },
        _ => (ErrorCode::TLS_HANDSHAKE_FAILED, "the TLS handshake failed (is it a TLS port?)"),
    };
    TlsError::Handshake { code, message: format!("{host}: {why}: {err}") }
}
