//! The integrator hooks' figures: an event to its webhook received (median, p95; HTTPS on
//! loopback, the receiver checking nothing), webhooks per second delivered for one app while
//! another app's receiver hangs, and a snapshot's time to first byte, with GStreamer's ORC
//! as usual and as under the server unit's `MemoryDenyWriteExecute=yes` (`ORC_CODE=backup`:
//! ORC's C fallbacks, which is what ORC does when it cannot map code), side by side.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use callbox::engine::{Auth, Engine, EngineProfile, PublishChannel, RoomConfig, UserInfo};
use callbox::media::MediaConfig;
use callbox::server::DEV_APP_ID;
use callbox::server::config::{AppConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::media::{ServerProc, engine, user};
use super::secret;
use super::tls::TestPki;

/// What a receiver saw: the event name and user, and when.
type Seen = (String, String, Instant);

/// An HTTPS receiver on loopback: answers 204 at once, or never (`hang`).
async fn receiver(pki: &TestPki, hang: bool) -> anyhow::Result<(u16, mpsc::UnboundedReceiver<Seen>)> {
    use rustls::pki_types::pem::PemObject;
    let certs: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(&pki.cert)?.collect::<Result<_, _>>()?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&pki.key)?;
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                let body = loop {
                    let Ok(n) = tls.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&buf[..at]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse().ok()))
                        .unwrap_or(0);
                    if buf.len() >= at + 4 + len {
                        break buf[at + 4..at + 4 + len].to_vec();
                    }
                };
                if hang {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
                let at = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let name = v["event"].as_str().unwrap_or_default().to_string();
                let who = v["user_id"].as_str().unwrap_or_default().to_string();
                let _ = tx.send((name, who, at));
                let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Ok((port, rx))
}

/// An in-process server whose app [`DEV_APP_ID`] posts to `fast` and app 99 to `slow`.
async fn server(pki: &TestPki, fast: u16, slow: u16) -> anyhow::Result<callbox::server::RunningServer> {
    let mut cfg: ServerConfig = toml::from_str("")?;
    cfg.listen = "127.0.0.1:0".into();
    let hook = |port: u16| Some(format!("https://localhost:{port}/hooks"));
    cfg.apps = vec![
        AppConfig {
            webhook_url: hook(fast),
            webhook_secret: Some("bench-webhook-secret".into()),
            ..AppConfig::new(DEV_APP_ID, secret())
        },
        AppConfig {
            webhook_url: hook(slow),
            webhook_secret: Some("bench-webhook-secret".into()),
            ..AppConfig::new(99, secret())
        },
    ];
    cfg.limits.logins_per_sec = 100_000.0;
    cfg.limits.login_burst = 100_000.0;
    cfg.media.enabled = false;
    cfg.webhooks.ca_file = pki.ca.display().to_string();
    cfg.webhooks.timeout_ms = 60_000;
    cfg.state_dir = pki.dir.display().to_string();
    Ok(callbox::server::start(cfg).await?)
}

fn signalling(url: &str, app: u32) -> anyhow::Result<Engine> {
    let profile = EngineProfile::new(app, Auth::AppSign(secret().into()), url.to_string());
    let (e, _events) = Engine::create(profile)?;
    Ok(e)
}

/// The hooks figures, printed.
pub async fn run(iterations: usize, burst: usize) -> anyhow::Result<()> {
    let pki = TestPki::for_names("hooks", &["localhost"])?;
    let (fast, mut seen) = receiver(&pki, false).await?;
    let (slow, _never) = receiver(&pki, true).await?;
    let srv = server(&pki, fast, slow).await?;
    let url = format!("ws://{}", srv.addr);

    // 1. login_room call -> its user_joined received, one at a time.
    let mut lat = Vec::new();
    for i in 0..iterations.max(1) {
        let e = signalling(&url, DEV_APP_ID)?;
        let who = format!("lat-{i}");
        let t0 = Instant::now();
        e.login_room(&format!("r-{i}"), UserInfo::new(who.clone(), String::new()), RoomConfig::default()).await?;
        loop {
            let (name, u, at) = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                .await
                .context("no webhook within 10 s")?
                .context("receiver gone")?;
            if name == "user_joined" && u == who {
                lat.push(at - t0);
                break;
            }
        }
        e.destroy().await;
    }
    super::print_stats("webhook: login_room call -> user_joined received (HTTPS, loopback)", &mut lat);

    // 2. Throughput for one app while the other app's receiver hangs (its events wait).
    let mut slow_app = Vec::new();
    for i in 0..20 {
        let e = signalling(&url, 99)?;
        e.login_room(&format!("slow-{i}"), UserInfo::new(format!("s{i}"), String::new()), RoomConfig::default())
            .await?;
        slow_app.push(e);
    }
    while tokio::time::timeout(Duration::from_millis(300), seen.recv()).await.is_ok() {}
    let engines: Vec<Engine> = (0..burst.max(1)).map(|_| signalling(&url, DEV_APP_ID)).collect::<Result<_, _>>()?;
    let t0 = Instant::now();
    let rooms: Vec<String> = (0..engines.len()).map(|i| format!("b-{}", i % 20)).collect();
    let joins =
        engines.iter().zip(&rooms).enumerate().map(|(i, (e, room))| {
            e.login_room(room, UserInfo::new(format!("b{i}"), String::new()), RoomConfig::default())
        });
    for r in futures_util::future::join_all(joins).await {
        r?;
    }
    for e in &engines {
        e.logout_room().await?;
    }
    // Each user: joined and left; each of the 20 rooms: started and finished.
    let want = 2 * burst.max(1) + 40;
    let mut got = 0;
    let mut last = t0;
    while got < want {
        match tokio::time::timeout(Duration::from_secs(30), seen.recv()).await {
            Ok(Some((_, _, at))) => {
                got += 1;
                last = at;
            }
            _ => break,
        }
    }
    let secs = (last - t0).as_secs_f64().max(1e-3);
    println!(
        "webhook: {got}/{want} events of one app delivered in {:.2} s = {:.0}/s (4 deliveries at a time, a new TLS \
         connection each), while the other app's receiver hangs",
        secs,
        got as f64 / secs
    );
    for e in engines.into_iter().chain(slow_app) {
        e.destroy().await;
    }
    srv.stop().await?;
    Ok(())
}

/// Snapshot time to first byte, `rounds` each with ORC as usual and with `ORC_CODE=backup`,
/// alternating servers; a 640x480 publisher.
pub async fn snapshot_ttfb(rounds: usize) -> anyhow::Result<()> {
    let mut normal = Vec::new();
    let mut backup = Vec::new();
    for r in 0..rounds.max(1) * 2 {
        let orc_backup = r % 2 == 1;
        let env: &[(&str, &str)] = if orc_backup { &[("ORC_CODE", "backup")] } else { &[] };
        let server = ServerProc::start_with("127.0.0.1:0", 0, env)?;
        let mut m = MediaConfig::small();
        (m.width, m.height, m.fps, m.bitrate_kbps) = (640, 480, 30, 1000);
        let (cam, _ev) = engine(&server.url(), m)?;
        cam.login_room("snap", user("door"), Default::default()).await?;
        cam.start_publishing_stream("door-main", PublishChannel::Main).await?;
        let token = {
            let now = callbox::auth::unix_now();
            let claims = callbox::auth::Claims {
                app_id: DEV_APP_ID,
                user_id: "*".into(),
                room_id: None,
                privileges: vec!["admin".into()],
                streams: None,
                nbf: None,
                dk: None,
                iat: now,
                exp: now + 600,
            };
            callbox::auth::mint(&callbox::auth::parse_secret(secret())?, &claims)?
        };
        let path = format!("/api/v1/apps/{DEV_APP_ID}/rooms/snap/streams/door-main/snapshot.jpg");
        // The first one waits for the first keyframe: not counted.
        let deadline = Instant::now() + Duration::from_secs(20);
        while ttfb(server.addr, &path, &token).await?.0 != 200 {
            anyhow::ensure!(Instant::now() < deadline, "no snapshot within 20 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for _ in 0..5 {
            let (status, t) = ttfb(server.addr, &path, &token).await?;
            anyhow::ensure!(status == 200, "snapshot answered {status}");
            if orc_backup { backup.push(t) } else { normal.push(t) }
        }
        cam.destroy().await;
    }
    super::print_stats("snapshot.jpg time to first byte, 640x480 (ORC as usual)", &mut normal);
    super::print_stats(
        "snapshot.jpg time to first byte, 640x480 (ORC_CODE=backup, as under MemoryDenyWriteExecute)",
        &mut backup,
    );
    Ok(())
}

/// One GET: its status and the time to the first byte of the answer.
async fn ttfb(addr: std::net::SocketAddr, path: &str, token: &str) -> anyhow::Result<(u16, Duration)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let t0 = Instant::now();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut first = [0u8; 1];
    s.read_exact(&mut first).await?;
    let t = t0.elapsed();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await?;
    let head = String::from_utf8_lossy(&rest);
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, t))
}
