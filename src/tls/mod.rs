//! TLS for callbox, with rustls and ring only (aws-lc needs CMake and bindgen on armv7).
//!
//! - [`client`]: how a device, an engine and doctor verify the server (system roots or a
//!   private CA file), and which stable code each certificate failure gets;
//! - [`server`]: the server's certificate from PEM files, reloaded without a restart;
//! - [`acme`]: the server's certificate from an ACME CA (TLS-ALPN-01 on the listen port).

pub mod acme;
pub mod client;
pub mod server;

use std::sync::Arc;

/// The one crypto provider of the process.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
