//! `callbox server`: rooms, users, streams and authentication over WebSocket signalling, with
//! health, metrics and admin HTTP endpoints.
//!
//! Layers: [`registry`] is the sans-IO room logic; [`hub`] is the one task that owns it and
//! turns its outputs into socket writes; [`ws`] reads and writes one WebSocket; [`http`]
//! serves health, metrics and the admin API. [`run`] wires them to a listener.

mod accept;
pub mod config;
mod desk;
mod http;
mod http_error;
mod hub;
pub use callbox_core::server::device_keys;
use callbox_core::server::metrics;
pub use callbox_core::server::registry;
pub use callbox_core::server::webhooks;
mod webhook_task;
mod whip;
mod ws;

use std::net::SocketAddr;

use tokio::net::TcpListener;

pub use config::ServerConfig;

/// The dev app (`callbox server --dev`, `callbox demo`). Its secret is public: never use it
/// on a reachable server.
pub const DEV_APP_ID: u32 = 1234;

/// A desk password's hash for `[[desks]] password` (`callbox desk-password`).
pub fn desk_password_hash(password: &str) -> String {
    desk::hash_password(password)
}
/// The dev app's public secret.
pub const DEV_SECRET: &str = "6b1c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344";
pub use hub::Hub;

/// The device keys' file in the state directory.
pub const DEVICE_KEYS_FILE: &str = "device-keys.json";

/// A running server: its address and a handle to stop it.
pub struct RunningServer {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// The media relay's UDP address, when media is enabled.
    pub media_addr: Option<SocketAddr>,
    /// Whether the listen port speaks TLS (https/wss).
    pub tls: bool,
    hub: Hub,
    cert_files: Option<std::sync::Arc<crate::tls::server::FileCert>>,
    shutdown: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Applies a new configuration's apps, session timing and limits (what SIGHUP does);
    /// returns what changed.
    pub async fn reconfigure(&self, cfg: ServerConfig) -> Vec<String> {
        self.hub.webhooks().reconfigure(&cfg).await;
        self.hub.with(move |reg, now| reg.reconfigure(&cfg.registry(), now)).await.unwrap_or_default()
    }

    /// Reads the certificate files again now (what SIGHUP does); the periodic check does
    /// the same every `[tls] reload_secs`. `Ok(true)` when a new certificate is served.
    pub fn reload_tls(&self) -> Result<bool, crate::tls::server::CertError> {
        match &self.cert_files {
            Some(f) => f.reload(),
            None => Ok(false),
        }
    }

    /// Stops accepting, tells every client the server is going away, and waits for the end.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or(Ok(()))
    }
}

/// Binds `cfg.listen` and serves until [`RunningServer::stop`].
pub async fn start(cfg: ServerConfig) -> std::io::Result<RunningServer> {
    let addr = cfg.listen_addr().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sfu = if cfg.media.enabled {
        let bind =
            cfg.media_bind().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let announce =
            cfg.media_announce().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let tcp = cfg.media_tcp_port();
        let shards = cfg.media.shard_count();
        let sfu = crate::rtc::sfu::Sfu::start(bind, announce.clone(), tcp, shards)
            .map_err(|e| std::io::Error::other(format!("media port {bind} (UDP, TCP {tcp:?}): {e}")))?;
        tracing::info!(addr = %sfu.addr, tcp = ?sfu.tcp_addr, ?announce, shards, "media relay listening (UDP and ICE-TCP)");
        Some(sfu)
    } else {
        None
    };
    let media_addr = sfu.as_ref().map(|s| s.addr);
    let (tls, cert_files) = tls_config(&cfg)?;
    for w in cfg.warnings() {
        tracing::warn!(callbox_event = "config_warning", hint = "docs: README, Deploying on the internet", "{w}");
    }
    let keys_file = cfg.state_path().join(DEVICE_KEYS_FILE);
    let keys = hub::load_device_keys(&keys_file)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("device keys: {e}")))?;
    let hub = Hub::spawn(&cfg, sfu, Some((keys_file, keys)));
    let hub_handle = hub.clone();
    let app = http::router(hub.clone(), cfg.dev, std::sync::Arc::new(desk::Desks::new(&cfg.desks)));
    let gate = accept::Gate::new(cfg.limits.max_pending, cfg.limits.max_pending_per_ip);
    let handshake = std::time::Duration::from_secs(cfg.limits.handshake_secs);
    let (shutdown, mut rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let hub_for_stop = hub.clone();
        let signal = async move {
            let _ = rx.wait_for(|v| *v).await;
            tracing::info!("shutting down: closing every session");
            hub_for_stop.shutdown().await;
        };
        accept::serve(listener, app, gate, handshake, tls, signal).await;
        Ok(())
    });
    tracing::info!(callbox_event = "started", %addr, tls = cfg.tls_enabled(), version = crate::BUILD, "callbox server listening");
    Ok(RunningServer { addr, media_addr, tls: cfg.tls_enabled(), hub: hub_handle, cert_files, shutdown, task })
}

/// The listen port's TLS configuration: certificate files (watched for replacement) or ACME.
type TlsSetup = (Option<std::sync::Arc<rustls::ServerConfig>>, Option<std::sync::Arc<crate::tls::server::FileCert>>);

fn tls_config(cfg: &ServerConfig) -> std::io::Result<TlsSetup> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if let Some(a) = &cfg.tls.acme {
        let cache_dir =
            if a.cache_dir.is_empty() { cfg.state_path().join("acme") } else { std::path::PathBuf::from(&a.cache_dir) };
        let resolver = crate::tls::acme::start(crate::tls::acme::AcmeSettings {
            domains: a.domains.clone(),
            contact: a.contact.clone(),
            directory: a.directory.clone(),
            cache_dir,
            directory_ca: (!a.directory_ca.is_empty()).then(|| a.directory_ca.clone().into()),
        })
        .map_err(|e| invalid(format!("tls.acme: {e}")))?;
        return Ok((Some(crate::tls::server::config(resolver, &[crate::tls::acme::ACME_ALPN])), None));
    }
    if cfg.tls.cert.is_empty() {
        return Ok((None, None));
    }
    let files = crate::tls::server::FileCert::load(cfg.tls.cert.as_ref(), cfg.tls.key.as_ref())
        .map_err(|e| invalid(format!("tls: {e}")))?;
    files.watch(std::time::Duration::from_secs(cfg.tls.reload_secs));
    Ok((Some(crate::tls::server::config(files.clone(), &[])), Some(files)))
}

/// Loads the configuration again for SIGHUP: the same file, environment and flags as at start.
pub type Reload = Box<dyn Fn() -> Result<ServerConfig, crate::config_file::ConfigError> + Send + Sync>;

/// What differs between two configurations that only a restart applies.
pub fn needs_restart(old: &ServerConfig, new: &ServerConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen != new.listen {
        out.push("listen");
    }
    if format!("{:?}", old.media) != format!("{:?}", new.media) {
        out.push("[media]");
    }
    if old.tls.cert != new.tls.cert
        || old.tls.key != new.tls.key
        || format!("{:?}", old.tls.acme) != format!("{:?}", new.tls.acme)
    {
        out.push("[tls] (the files themselves are reloaded; other files or ACME need a restart)");
    }
    if old.state_dir != new.state_dir {
        out.push("state_dir");
    }
    let (a, b) = (&old.limits, &new.limits);
    if a.max_pending != b.max_pending
        || a.max_pending_per_ip != b.max_pending_per_ip
        || a.whip_per_sec != b.whip_per_sec
        || a.whip_burst != b.whip_burst
    {
        out.push("limits.max_pending, max_pending_per_ip, whip_per_sec, whip_burst");
    }
    out
}

/// Runs the server until SIGTERM or SIGINT; SIGHUP reloads the certificate files and, with
/// `reload`, the configuration (apps, session timing, limits; the rest is logged as needing
/// a restart).
pub async fn run(cfg: ServerConfig, reload: Option<Reload>) -> anyhow::Result<()> {
    let apps = cfg.apps.len();
    let running = cfg.clone();
    let server = start(cfg).await?;
    // One plain line on stdout so scripts and tests can find the address.
    let scheme = if server.tls { "https" } else { "http" };
    println!("callbox server listening on {scheme}://{} ({apps} apps)", server.addr);
    if let Some(m) = server.media_addr {
        println!("callbox media relay on udp://{m}");
    }
    let server = std::sync::Arc::new(server);
    let hup = {
        let server = server.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            let mut running = running;
            while hup.recv().await.is_some() {
                match server.reload_tls() {
                    Ok(true) => tracing::info!(callbox_event = "reload", "SIGHUP: TLS certificate replaced"),
                    Ok(false) if server.cert_files.is_some() => {
                        tracing::info!(callbox_event = "reload", "SIGHUP: TLS certificate unchanged")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(callbox_event = "reload", error = %e, "SIGHUP: TLS certificate not reloaded; the previous one is still served")
                    }
                }
                let Some(reload) = &reload else { continue };
                match reload() {
                    Ok(new) => {
                        for what in needs_restart(&running, &new) {
                            tracing::warn!(
                                callbox_event = "reload",
                                "SIGHUP: {what} changed; it applies after a restart"
                            );
                        }
                        if running.log != new.log {
                            new.log.apply();
                            tracing::info!(callbox_event = "reload", "SIGHUP: log level {}", new.log.level);
                        }
                        let changed = server.reconfigure(new.clone()).await;
                        if changed.is_empty() {
                            tracing::info!(
                                callbox_event = "reload",
                                "SIGHUP: configuration reloaded; apps, session and limits unchanged"
                            );
                        }
                        for c in changed {
                            tracing::info!(callbox_event = "reload", "SIGHUP: {c}");
                        }
                        running = new;
                    }
                    Err(e) => {
                        tracing::warn!(callbox_event = "reload", error = %e, "SIGHUP: the configuration was not reloaded (fix it and send SIGHUP again); the running one stays")
                    }
                }
            }
        })
    };
    wait_for_signal().await;
    hup.abort();
    let _ = hup.await;
    let server = std::sync::Arc::try_unwrap(server).map_err(|_| anyhow::anyhow!("server still shared at stop"))?;
    server.stop().await?;
    tracing::info!(callbox_event = "stopped", "stopped");
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
