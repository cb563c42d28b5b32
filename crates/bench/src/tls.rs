//! A test CA and a `localhost` certificate for the wss figures, in a directory removed on drop.

use std::path::PathBuf;

/// The CA file, the server's certificate and key.
pub struct TestPki {
    /// The directory holding them (also the bench server's state directory).
    pub dir: PathBuf,
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// The server certificate (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
}

impl TestPki {
    /// Makes a CA and a certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> anyhow::Result<TestPki> {
        TestPki::for_names("wss", &["localhost", "127.0.0.1"])
    }

    /// Makes a CA and a certificate for `names` (DNS names or IPs), in a directory named
    /// after `tag`.
    pub fn for_names(tag: &str, names: &[&str]) -> anyhow::Result<TestPki> {
        let dir = std::env::temp_dir().join(format!("callbox-bench-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "callbox bench CA");
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate()?)?;
        let leaf_key = rcgen::KeyPair::generate()?;
        let leaf = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?
            .signed_by(&leaf_key, &ca)?;
        let pki = TestPki { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem"), dir };
        std::fs::write(&pki.ca, ca.pem())?;
        std::fs::write(&pki.cert, leaf.pem())?;
        std::fs::write(&pki.key, leaf_key.serialize_pem())?;
        Ok(pki)
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
