//! TLS end to end with the real server process: a CA and certificates made in the test, the
//! engine and the daemon logging in over wss with `ca_file`, each certificate failure with
//! its own code, a certificate replaced while a call runs, doctor and WHIP over https.

mod common;

use std::path::Path;
use std::time::Duration;

use callbox::engine::{
    Auth, Engine, EngineError, EngineEvent, EngineProfile, PublishChannel, ReconnectPolicy, RoomConfig, RoomStateReason,
};
use callbox::media::MediaConfig;
use callbox::proto::ErrorCode;
use common::*;

fn profile(url: &str, ca: Option<&Path>) -> EngineProfile {
    let mut p = EngineProfile::new(APP, Auth::AppSign(SECRET.into()), url);
    p.ca_file = ca.map(Path::to_path_buf);
    p.reconnect = ReconnectPolicy { give_up_after: Some(Duration::from_secs(5)), ..fast_policy() };
    p
}

/// Logs in once; the error code on failure.
async fn login(url: &str, ca: Option<&Path>, user_id: &str) -> Result<(), ErrorCode> {
    let (e, _rx) = Engine::create(profile(url, ca)).unwrap();
    let r = tokio::time::timeout(WAIT, e.login_room("lobby", user(user_id), RoomConfig::default()))
        .await
        .expect("a certificate failure must end the login, not hang it");
    e.destroy().await;
    r.map_err(|e: EngineError| e.code())
}

#[tokio::test]
async fn engine_logs_in_over_wss_and_each_certificate_failure_has_its_code() {
    let pki = Pki::new();
    pki.leaf("good", &["localhost"], false);
    let server = Server::start(&pki.tls_section("good"));
    let ca = pki.ca_file();

    login(&server.wss("localhost"), Some(&ca), "door").await.expect("wss with the private CA");

    let stranger = Pki::new();
    assert_eq!(
        login(&server.wss("localhost"), Some(&stranger.ca_file()), "door").await,
        Err(ErrorCode::TLS_UNKNOWN_CA)
    );
    assert_eq!(login(&server.wss("127.0.0.1"), Some(&ca), "door").await, Err(ErrorCode::TLS_NAME_MISMATCH));
    // The system's roots do not know the test CA either.
    assert_eq!(login(&server.wss("localhost"), None, "door").await, Err(ErrorCode::TLS_UNKNOWN_CA));

    pki.leaf("old", &["localhost"], true);
    let expired = Server::start(&pki.tls_section("old"));
    assert_eq!(login(&expired.wss("localhost"), Some(&ca), "door").await, Err(ErrorCode::TLS_CERT_EXPIRED));

    // http:// to the TLS port: an answer that names TLS, not a silent close.
    let (status, body) = http(&server.http(), "GET", "/healthz", None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("TLS_REQUIRED") && body.contains("https://"), "{body}");
    login(&server.wss("localhost"), Some(&ca), "gate").await.expect("the TLS port still serves TLS");

    // wss:// to a plain port: not a TLS server.
    let plain = Server::start("");
    let url = format!("wss://localhost:{}", plain.addr.port());
    assert_eq!(login(&url, Some(&ca), "door").await, Err(ErrorCode::TLS_HANDSHAKE_FAILED));
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_while_the_call_goes_on() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("live", &["localhost"], false);
    let server = Server::start(&pki.tls_section("live"));
    let ca = pki.ca_file();
    let url = server.wss("localhost");
    let media = |p: EngineProfile| {
        let mut p = p.with_media(MediaConfig::small());
        if let Some(m) = &mut p.media {
            m.bind = Some([127, 0, 0, 1].into());
        }
        p.reconnect = fast_policy();
        p
    };
    let (door, _door_events) = Engine::create(media(profile(&url, Some(&ca)))).unwrap();
    let (flat, flat_rx) = Engine::create(media(profile(&url, Some(&ca)))).unwrap();
    let mut flat_events = Events { rx: flat_rx, seen: Vec::new() };
    door.login_room("lobby", user("door"), notify()).await.unwrap();
    door.start_publishing_stream("door-main", PublishChannel::Main).await.unwrap();
    flat.login_room("lobby", user("flat"), notify()).await.unwrap();
    flat.start_playing_stream("door-main").await.unwrap();
    flat_events.wait("first frame", rendered("door-main")).await;

    let before = presented_cert(server.addr, "localhost", &ca).await;
    // Renew the way certbot and ACME clients do: write new files, rename them over the old.
    let (new_cert, new_key) = pki.leaf("renewed", &["localhost"], false);
    std::fs::rename(&new_key, &key).unwrap();
    std::fs::rename(&new_cert, &cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = presented_cert(server.addr, "localhost", &ca).await;
        if now != before {
            assert_eq!(now, pem_der(&cert), "the served certificate is the new file");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the new certificate was not served within 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // The call carried on: frames keep being decoded after the switch, and nobody left.
    let decoded = |e: &EngineEvent| match e {
        EngineEvent::PlayerQualityUpdate { quality, .. } => Some(quality.frames_decoded),
        _ => None,
    };
    let first = decoded(&flat_events.wait("a quality report", |e| decoded(e).is_some()).await).unwrap();
    let later = loop {
        let n = decoded(&flat_events.wait("a quality report", |e| decoded(e).is_some()).await).unwrap();
        if n >= first + 15 {
            break n;
        }
    };
    assert!(later > first);
    assert_only_the_login(&flat_events);
    door.destroy().await;
    flat.destroy().await;
}

/// The room connection was never disturbed: no room state but the first login's.
fn assert_only_the_login(ev: &Events) {
    assert!(
        !ev.seen.iter().any(|e| matches!(e, EngineEvent::RoomStateChanged { reason, .. }
            if !matches!(reason, RoomStateReason::Logining | RoomStateReason::Logined))),
        "{:?}",
        ev.seen
    );
}

fn pem_der(path: &Path) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_file(path).unwrap().to_vec()
}

#[tokio::test]
async fn an_appsign_engine_stays_logged_in_across_several_token_expiries() {
    let pki = Pki::new();
    pki.leaf("srv", &["localhost"], false);
    let server = Server::start(&pki.tls_section("srv"));
    let mut p = profile(&server.wss("localhost"), Some(&pki.ca_file()));
    // 4 s tokens: the server warns at half-life, the engine mints and sends a new one.
    p.app_sign_ttl = Duration::from_secs(4);
    let (e, rx) = Engine::create(p).unwrap();
    let mut ev = Events { rx, seen: Vec::new() };
    e.login_room("lobby", user("door"), notify()).await.unwrap();
    for _ in 0..3 {
        ev.wait("a renewal", |e| matches!(e, EngineEvent::RoomTokenWillExpire { .. })).await;
    }
    // Three lifetimes later the session is the same one and may still publish.
    e.start_publishing_stream("door-main", PublishChannel::Main).await.expect("the token was renewed");
    assert_only_the_login(&ev);
    e.destroy().await;
}

/// ring is the only crypto provider: aws-lc needs CMake and bindgen on armv7, and several
/// rustls-based crates pull it by default (their defaults are turned off in Cargo.toml).
#[test]
fn aws_lc_is_not_in_the_build() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    for name in ["aws-lc-rs", "aws-lc-sys", "aws-lc-fips-sys"] {
        assert!(!lock.contains(&format!("name = \"{name}\"")), "{name} is in Cargo.lock: see `cargo tree -i {name}`");
    }
    assert!(lock.contains("name = \"ring\""));
}

/// A certificate pair that cannot be served, or a CA file that cannot be read, is the file's
/// fault: exit 78 with the key named (systemd does not restart on 78).
#[test]
fn unusable_certificate_files_are_config_errors() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("a", &["localhost"], false);
    let (_, other_key) = pki.leaf("b", &["localhost"], false);
    let dir = tempfile::tempdir().unwrap();
    let check = |name: &str, text: String| {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
            .args(["check-config", f.to_str().unwrap()])
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, err) = check("missing.toml", "[tls]\ncert = \"/nonexistent.pem\"\nkey = \"/nonexistent.key\"\n".into());
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("tls.cert"), "{err}");
    let (code, err) =
        check("mismatch.toml", format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), other_key.display()));
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("does not fit"), "{err}");
    let device = device_config("wss://localhost", "kiosk", &dir.path().join("c.sock"), "")
        .replace("[room]", "ca_file = \"/nonexistent-ca.pem\"\n[room]");
    let (code, err) = check("device.toml", device);
    assert_eq!(code, Some(78), "{err}");
    assert!(err.contains("server.ca_file"), "{err}");
}
