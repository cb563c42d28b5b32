//! WHIP and WHEP against a WebRTC stack we did not write (aiortc, from the venv that
//! scripts/install-deps.sh makes), with engines in the room on the other side; and every
//! refusal case over raw HTTP.

mod common;

use std::process::Command;

use callbox::engine::{EngineEvent, PublishChannel, UpdateType};
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The venv's Python with aiortc (`CALLBOX_PYTHON` overrides).
fn python() -> String {
    std::env::var("CALLBOX_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/callbox-venv/bin/python3", std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
    })
}

/// Runs the aiortc client and returns its JSON line.
async fn aiortc(mode: &str, url: String, token: String, seconds: &str) -> serde_json::Value {
    aiortc_trusting(mode, url, token, seconds, None).await
}

/// The same, trusting `ca` for https URLs.
pub async fn aiortc_trusting(
    mode: &str,
    url: String,
    token: String,
    seconds: &str,
    ca: Option<std::path::PathBuf>,
) -> serde_json::Value {
    let seconds = seconds.to_string();
    let mode = mode.to_string();
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new(python());
        if let Some(ca) = &ca {
            cmd.env("SSL_CERT_FILE", ca);
        }
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/whip_client.py"))
            .args([&mode, &url, &token, &seconds])
            .output()
            .expect("python with aiortc (scripts/install-deps.sh makes ~/.cache/callbox-venv)")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "aiortc failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_whip_and_an_engine_decodes_it() {
    let server = Server::start("");
    let (flat, mut ev) = media_engine(&server.url());
    flat.login_room("lobby", user("flat"), notify()).await.unwrap();
    let publish_token = token(APP, SECRET, "obs", Some("lobby"), &["login", "publish"], 600);
    let url = format!("http://{}/whip/v1/{APP}/lobby/cam-1", server.addr);
    let mut client = tokio::spawn(aiortc("publish", url, publish_token.clone(), "6"));

    // A minute for Python to start (as over https, below); a client that ends first says why.
    let e = tokio::select! {
        e = ev.wait_within(std::time::Duration::from_secs(60), "cam-1 added", stream_update("cam-1", UpdateType::Add)) => e,
        r = &mut client => panic!("aiortc ended before cam-1 was added: {r:?}"),
    };
    assert!(matches!(&e, EngineEvent::RoomStreamUpdate { streams, .. } if streams[0].user.user_id == "obs"));
    assert!(ev.seen.iter().any(|e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, users, .. }
        if users.iter().any(|u| u.user_id == "obs"))));
    flat.start_playing_stream("cam-1").await.unwrap();
    ev.wait("aiortc's video rendered", rendered("cam-1")).await;
    let q = ev
        .wait("frames decoded", |e| {
            matches!(e, EngineEvent::PlayerQualityUpdate { stream_id, quality } if stream_id == "cam-1" && quality.frames_decoded > 10)
        })
        .await;
    assert!(matches!(q, EngineEvent::PlayerQualityUpdate { quality, .. } if quality.audio_decoded > 0), "audio too");

    let r = client.await.unwrap();
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["connected"], true, "{r}");
    assert!(r["location"].as_str().unwrap().starts_with(&format!("/whip/v1/{APP}/lobby/cam-1/")), "{r}");
    assert_eq!(r["delete_status"], 200, "{r}");
    // DELETE: the stream and the WHIP user leave the room.
    ev.wait("cam-1 deleted", stream_update("cam-1", UpdateType::Delete)).await;
    ev.wait("whip user left", |e| {
        matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users.iter().any(|u| u.user_id == "obs"))
    })
    .await;

    // The token's user is logged in over signalling: the WHIP stream joins that user, who
    // is not kicked, and stays when the WHIP publish ends.
    let (obs, mut obs_ev) = engine(&server.url());
    obs.login_room("lobby", user("obs"), notify()).await.unwrap();
    ev.wait("obs logged in", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, users, .. } if users.iter().any(|u| u.user_id == "obs"))).await;
    let url = format!("http://{}/whip/v1/{APP}/lobby/cam-2", server.addr);
    let r = aiortc("publish", url, publish_token, "3").await;
    assert_eq!(r["status"], 201, "{r}");
    let e = ev.wait("cam-2 added", stream_update("cam-2", UpdateType::Add)).await;
    assert!(matches!(&e, EngineEvent::RoomStreamUpdate { streams, .. } if streams[0].user.user_id == "obs"));
    ev.wait("cam-2 deleted", stream_update("cam-2", UpdateType::Delete)).await;
    obs.set_room_extra_info("still", "here").await.expect("the signalling user was not kicked");
    assert!(
        !ev.seen.iter().rev().take_while(|e| !matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, .. })).any(|e| matches!(e,
            EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users.iter().any(|u| u.user_id == "obs"))),
        "the user stayed: {:?}",
        ev.seen
    );
    assert!(
        !obs_ev.seen.iter().any(|e| matches!(
            e,
            EngineEvent::RoomStateChanged { reason: callbox::engine::RoomStateReason::KickOut, .. }
        ))
    );
    let _ = obs_ev.drain_for(std::time::Duration::from_millis(10)).await;
    obs.destroy().await;
    flat.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_an_engine_stream_over_whep() {
    let server = Server::start("");
    let (door, _ev) = media_engine(&server.url());
    door.login_room("lobby", user("door"), notify()).await.unwrap();
    door.start_publishing_stream("door-main", PublishChannel::Main).await.unwrap();
    let play_token = token(APP, SECRET, "viewer", None, &["play"], 600);
    let url = format!("http://{}/whep/v1/{APP}/lobby/door-main", server.addr);
    let r = aiortc("play", url, play_token, "4").await;
    assert_eq!(r["status"], 201, "{r}");
    assert_eq!(r["connected"], true, "{r}");
    assert_eq!(r["video_codec"], "H264", "{r}");
    assert!(r["video_frames"].as_u64().unwrap() > 10, "{r}");
    assert!(r["audio_frames"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["delete_status"], 200, "{r}");
    door.destroy().await;
}

/// A raw HTTP request with a body; returns the status, the headers and the body.
async fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// What is refused: name, path, headers, body, expected status, words of the reason.
type Case<'a> = (&'a str, String, Vec<(&'a str, String)>, &'a str, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_refuse_bad_requests_with_the_reason() {
    let server = Server::start("");
    let addr = server.http();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";
    let publish = token(APP, SECRET, "obs", Some("lobby"), &["login", "publish"], 600);
    let no_login = token(APP, SECRET, "obs", Some("lobby"), &["publish"], 600);
    let anyone = token(APP, SECRET, "*", Some("lobby"), &["login", "publish"], 600);
    let play_only = token(APP, SECRET, "obs", Some("lobby"), &["play"], 600);
    let other_room = token(APP, SECRET, "obs", Some("garage"), &["publish", "play"], 600);
    let expired = token(APP, SECRET, "obs", None, &["publish"], -10);
    let bearer = |t: &str| format!("Bearer {t}");
    let whip = format!("/whip/v1/{APP}/lobby/cam-1");
    let cases: Vec<Case> = vec![
        ("no content type", whip.clone(), vec![("Authorization", bearer(&publish))], sdp, 415, "application/sdp"),
        ("no token", whip.clone(), vec![("Content-Type", "application/sdp".into())], sdp, 401, "bearer"),
        (
            "garbage token",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", "Bearer abc".into())],
            sdp,
            401,
            "token invalid",
        ),
        (
            "expired token",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&expired))],
            sdp,
            401,
            "expired",
        ),
        (
            "no publish privilege",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&play_only))],
            sdp,
            403,
            "publish privilege",
        ),
        (
            "publish without login",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&no_login))],
            sdp,
            403,
            "needs login",
        ),
        (
            "a * token",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&anyone))],
            sdp,
            403,
            "token's user",
        ),
        (
            "another room's token",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&other_room))],
            sdp,
            403,
            "another room",
        ),
        (
            "not SDP",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&publish))],
            "hello",
            400,
            "not an SDP offer",
        ),
        (
            "SDP without media",
            whip.clone(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&publish))],
            sdp,
            400,
            "offer rejected",
        ),
        (
            "unknown app",
            "/whip/v1/4242/lobby/cam-1".into(),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&publish))],
            sdp,
            404,
            "unknown app",
        ),
        (
            "WHEP of a stream nobody publishes",
            format!("/whep/v1/{APP}/lobby/nobody"),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&play_only))],
            sdp,
            404,
            "not published",
        ),
        (
            "WHEP without play privilege",
            format!("/whep/v1/{APP}/lobby/nobody"),
            vec![("Content-Type", "application/sdp".into()), ("Authorization", bearer(&publish))],
            sdp,
            403,
            "play privilege",
        ),
    ];
    for (what, path, headers, body, want, says) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, _, body) = request(&addr, "POST", &path, &h, body).await;
        assert_eq!(status, want, "{what}: {body}");
        assert!(body.contains(says), "{what}: {body}");
        assert!(body.contains("\"code\""), "{what}: a code in {body}");
    }
    // After a rejected offer the room has no ghost WHIP user or stream: the same stream can
    // be published by an engine, and then WHIP for it conflicts.
    let (door, _ev) = engine(&server.url());
    door.login_room("lobby", user("door"), notify()).await.unwrap();
    door.start_publishing_stream("cam-1", PublishChannel::Main).await.unwrap();
    let h = [("Content-Type", "application/sdp"), ("Authorization", &bearer(&publish) as &str)];
    let (status, _, body) = request(&addr, "POST", &whip, &h, sdp).await;
    assert_eq!(status, 409, "{body}");
    for path in [format!("/whip/v1/{APP}/lobby/cam-1/nope"), format!("/whep/v1/{APP}/lobby/cam-1/nope")] {
        let (status, _, body) = request(&addr, "DELETE", &path, &[], "").await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    door.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_publishes_over_https_verifying_the_certificate() {
    let pki = Pki::new();
    pki.leaf("srv", &["localhost"], false);
    let server = Server::start(&pki.tls_section("srv"));
    let mut p = callbox::engine::EngineProfile::new(
        APP,
        callbox::engine::Auth::AppSign(SECRET.into()),
        server.wss("localhost"),
    )
    .with_media(callbox::media::MediaConfig::small());
    p.ca_file = Some(pki.ca_file());
    if let Some(m) = &mut p.media {
        m.bind = Some([127, 0, 0, 1].into());
    }
    let (flat, rx) = callbox::engine::Engine::create(p).unwrap();
    let mut ev = Events { rx, seen: Vec::new() };
    flat.login_room("lobby", user("flat"), notify()).await.unwrap();
    let t = token(APP, SECRET, "obs", Some("lobby"), &["login", "publish"], 600);
    let url = format!("https://localhost:{}/whip/v1/{APP}/lobby/cam-1", server.addr.port());
    let mut client = tokio::spawn(aiortc_trusting("publish", url, t, "5", Some(pki.ca_file())));
    // A client that ends first (its request refused, say) says why, instead of a timeout;
    // one that is only slow to start (Python, aiortc and PyAV imported on a loaded CI
    // machine; CI once saw nothing within 20 s) gets a minute.
    tokio::select! {
        _ = ev.wait_within(std::time::Duration::from_secs(60), "cam-1 added", stream_update("cam-1", UpdateType::Add)) => {}
        r = &mut client => panic!("aiortc ended before cam-1 was added: {r:?}"),
    }
    flat.start_playing_stream("cam-1").await.unwrap();
    ev.wait("aiortc's video over https signalling", rendered("cam-1")).await;
    let r = client.await.unwrap();
    assert_eq!((r["status"].as_u64(), r["delete_status"].as_u64()), (Some(201), Some(200)), "{r}");
    flat.destroy().await;
}
