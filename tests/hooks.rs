//! The integrator's hooks against the real server process: signed webhooks received by an
//! HTTPS receiver in the test (every event, in order per room, after the receiver was down
//! for a while; a receiver that hangs delays no login and no other app), `callbox webhook
//! verify`, and the admin API's door (200, 409 with the station's reason, 404, 403, 504).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callbox::engine::{EngineEvent, ErrorCode, RoomConfig, UserInfo};
use callbox::proto::{Capability, ClientMsg, ServerMsg};
use callbox::server::webhooks::sign;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOOK_SECRET: &str = "whsec-test-0123456789";

/// How the receiver answers.
const OK: u8 = 0;
/// Closes each connection at once (a receiver that is down behind its proxy).
const DOWN: u8 = 1;
/// Reads the request and never answers.
const HANG: u8 = 2;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
struct Got {
    body: String,
    signature: String,
    json: serde_json::Value,
}

/// An HTTPS webhook receiver with a certificate of the test CA.
struct Receiver {
    port: u16,
    mode: Arc<AtomicU8>,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Receiver {
    async fn start(pki: &Pki, name: &str) -> Receiver {
        let (cert, key) = pki.leaf(name, &["localhost"], false);
        use rustls::pki_types::pem::PemObject;
        let certs: Vec<_> =
            rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap().map(|c| c.unwrap()).collect();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mode, got) = (Arc::new(AtomicU8::new(OK)), Arc::new(Mutex::new(Vec::new())));
        let (m, g) = (mode.clone(), got.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                if m.load(Ordering::SeqCst) == DOWN {
                    drop(tcp);
                    continue;
                }
                let (acceptor, m, g) = (acceptor.clone(), m.clone(), g.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Some((head, body)) = read_request(&mut tls).await else { return };
                    if m.load(Ordering::SeqCst) == HANG {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        return;
                    }
                    let signature = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("callbox-signature").then(|| v.trim().to_string())
                        })
                        .unwrap_or_default();
                    let json = serde_json::from_str(&body).unwrap_or_default();
                    g.lock().unwrap().push(Got { body, signature, json });
                    let _ = tls.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n").await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        Receiver { port, mode, got }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/in", self.port)
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `pred` holds over what arrived.
    async fn wait(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got();
            if pred(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: got {:#?}", got.iter().map(|g| &g.json).collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads one HTTP/1.1 request: its head and body (by Content-Length).
async fn read_request(s: &mut (impl tokio::io::AsyncRead + Unpin)) -> Option<(String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            while buf.len() < i + 4 + len {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some((head, String::from_utf8_lossy(&buf[i + 4..i + 4 + len]).to_string()));
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The server config's apps: APP with its webhook at `app_url`, OTHER_APP at `other_url`.
fn apps(app_url: &str, other_url: Option<&str>, pki: &Pki, timeout_ms: u64) -> String {
    let other =
        other_url.map(|u| format!("webhook_url = \"{u}\"\nwebhook_secret = \"{HOOK_SECRET}\"\n")).unwrap_or_default();
    format!(
        "[[apps]]\napp_id = {APP}\nsecret = \"{SECRET}\"\nwebhook_url = \"{app_url}\"\nwebhook_secret = \"{HOOK_SECRET}\"\n\
         [[apps]]\napp_id = {OTHER_APP}\nsecret = \"{OTHER_SECRET}\"\n{other}\
         [webhooks]\nretry_ms = 200\nretry_max_ms = 1000\ntimeout_ms = {timeout_ms}\nca_file = \"{}\"\n",
        pki.ca_file().display()
    )
}

fn event_of(g: &Got) -> String {
    let j = &g.json;
    let who = j["user_id"].as_str().map(|u| format!(" {u}")).unwrap_or_default();
    format!("{}{who}", j["event"].as_str().unwrap_or("?"))
}

/// The distinct events of `room`, in the order first received.
fn room_events(got: &[Got], room: &str) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    got.iter()
        .filter(|g| g.json["room_id"] == room && seen.insert(g.json["id"].as_str().unwrap_or_default().to_string()))
        .map(event_of)
        .collect()
}

async fn metric(server: &Server, name: &str) -> u64 {
    let (_, text) = http(&server.http(), "GET", "/metrics", None).await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every event reaches the receiver signed, in order per room, each ID once (or again only
/// as the same delivery), including those that happened while it was down.
#[tokio::test]
async fn webhooks_arrive_signed_in_order_per_room_also_after_the_receiver_was_down() {
    let pki = Pki::new();
    let rx = Receiver::start(&pki, "hooks").await;
    let server = Server::start(&apps(&rx.url(), None, &pki, 5000));
    let (a, _ea) = engine(&server.url());
    let (b, _eb) = engine(&server.url());
    let (c, _ec) = engine(&server.url());
    a.login_room("lobby", user("alice"), RoomConfig::default()).await.unwrap();
    b.login_room("lobby", user("bob"), RoomConfig::default()).await.unwrap();
    c.login_room("hall", user("carol"), RoomConfig::default()).await.unwrap();
    rx.wait("the joins", |g| room_events(g, "lobby").len() == 3 && room_events(g, "hall").len() == 2).await;

    // The receiver goes down; the room goes on, and what happens meanwhile waits.
    rx.mode.store(DOWN, Ordering::SeqCst);
    b.logout_room().await.unwrap();
    c.logout_room().await.unwrap();
    a.logout_room().await.unwrap();
    let failed = |s| async move { metric(s, "callbox_webhooks_failed_total{app_id=\"1234\"}").await };
    let deadline = Instant::now() + WAIT;
    while failed(&server).await < 2 {
        assert!(Instant::now() < deadline, "no failed delivery counted while the receiver was down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = rx.got().len();
    rx.mode.store(OK, Ordering::SeqCst);
    let got = rx
        .wait("everything after the receiver came back", |g| {
            room_events(g, "lobby").len() == 6 && room_events(g, "hall").len() == 4
        })
        .await;
    assert!(got.len() > before, "the waiting events were delivered");
    assert_eq!(
        room_events(&got, "lobby"),
        ["room_started", "user_joined alice", "user_joined bob", "user_left bob", "user_left alice", "room_finished"]
    );
    assert_eq!(room_events(&got, "hall"), ["room_started", "user_joined carol", "user_left carol", "room_finished"]);
    let now = callbox::auth::unix_now();
    let mut by_id: BTreeMap<String, String> = BTreeMap::new();
    for g in &got {
        assert_eq!(sign::verify(HOOK_SECRET.as_bytes(), &g.signature, &g.body, now, 300), Ok(()), "{}", g.body);
        assert_eq!(g.json["app_id"], APP);
        assert!(g.json["ts"].as_u64().is_some_and(|t| t > 1_700_000_000_000), "{}", g.body);
        let id = g.json["id"].as_str().unwrap().to_string();
        // A duplicate is only ever the same event again (the same ID, the same body).
        let event = g.json.to_string();
        assert_eq!(by_id.entry(id).or_insert_with(|| event.clone()), &event);
    }
    assert_eq!(by_id.len(), 10);
    let left = got.iter().find(|g| g.json["event"] == "user_left").unwrap();
    assert_eq!(left.json["reason"]["name"], "USER_LOGGED_OUT");
    let delivered = metric(&server, "callbox_webhooks_delivered_total{app_id=\"1234\"}").await;
    assert_eq!(delivered, 10);

    // `callbox webhook verify` is what a receiver's shell script can run.
    let verify = |sig: &str, body: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_callbox"))
            .args(["webhook", "verify", "--secret", HOOK_SECRET, "--signature", sig])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
        child.wait().unwrap().code()
    };
    // A lobby event: the first delivered may be the hall's, which a tampering of "lobby"
    // would leave unchanged.
    let g = got.iter().find(|g| g.json["room_id"] == "lobby").expect("a lobby event");
    assert_eq!(verify(&g.signature, &g.body), Some(0));
    assert_eq!(verify(&g.signature, &g.body.replace("lobby", "l0bby")), Some(1));
}

/// A receiver that takes a request and never answers holds up no login, and another app's
/// receiver hears its events meanwhile.
#[tokio::test]
async fn a_receiver_that_hangs_delays_no_login_and_no_other_app() {
    let pki = Pki::new();
    let slow = Receiver::start(&pki, "slow").await;
    let fast = Receiver::start(&pki, "fast").await;
    slow.mode.store(HANG, Ordering::SeqCst);
    let server = Server::start(&apps(&slow.url(), Some(&fast.url()), &pki, 30_000));
    let mut engines = Vec::new();
    for i in 0..6 {
        let (e, ev) = engine(&server.url());
        let t = Instant::now();
        e.login_room(&format!("room-{i}"), user(&format!("user-{i}")), RoomConfig::default()).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "login {i} took {:?} while the receiver hangs", t.elapsed());
        engines.push((e, ev));
    }
    let mut raw = Raw::connect(&server).await;
    let t = token(OTHER_APP, OTHER_SECRET, "other", None, &["login"], 600);
    raw.send(&ClientMsg::Login {
        req: 1,
        version: 1,
        app_id: OTHER_APP,
        token: t,
        room_id: "elsewhere".into(),
        user: user("other"),
        user_status_notify: false,
    })
    .await;
    assert!(matches!(raw.recv().await, ServerMsg::LoginOk { .. }));
    let got = fast.wait("the other app's events", |g| room_events(g, "elsewhere").len() == 2).await;
    assert_eq!(room_events(&got, "elsewhere"), ["room_started", "user_joined other"]);
    assert!(slow.got().is_empty(), "the hanging receiver answered nothing, so recorded nothing");
    let queued = metric(&server, "callbox_webhooks_queued{app_id=\"1234\"}").await;
    assert_eq!(queued, 12, "the slow app's events wait, none lost");
}

/// A door station as an engine: the device capability Door; answers door requests with
/// `answer` (or not at all).
async fn door_engine(server: &Server, id: &str) -> (callbox::engine::Engine, Events) {
    let (e, ev) = engine(&server.url());
    let u = UserInfo::device(id.into(), id.into(), vec![Capability::Door]);
    e.login_room("lobby", u, RoomConfig::default()).await.unwrap();
    (e, ev)
}

/// The admin API's door: 200 when the station confirms, 409 with its reason when it refuses,
/// 404 for a user not in the room, 403 for a token of another room, 504 when it says nothing;
/// only the named station is asked, and the webhooks hear each.
#[tokio::test]
async fn the_admin_api_opens_the_named_door_and_reports_its_answer() {
    let pki = Pki::new();
    let rx = Receiver::start(&pki, "hooks").await;
    let server = Server::start(&apps(&rx.url(), None, &pki, 5000));
    let (door, mut door_ev) = door_engine(&server, "door").await;
    let (gate, mut gate_ev) = door_engine(&server, "gate").await;
    let admin = token(APP, SECRET, "backend", Some("lobby"), &["admin"], 600);
    let path = |user: &str| format!("/api/v1/apps/{APP}/rooms/lobby/users/{user}/door");
    let is_request = |e: &EngineEvent| matches!(e, EngineEvent::DoorRequest { .. });

    // 200: the station confirms.
    let (addr, p, t) = (server.http(), path("door"), admin.clone());
    let asked = tokio::spawn(async move { http_json(&addr, "POST", &p, Some(&t), "").await });
    let EngineEvent::DoorRequest { request_id, from, in_call, .. } = door_ev.wait("door request", is_request).await
    else {
        unreachable!()
    };
    assert_eq!((from.user_id.as_str(), in_call), ("backend", false));
    door.answer_door(request_id, Ok(())).await.unwrap();
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"opened\":true"), "{body}");

    // 409: the station refuses, with its reason.
    let (addr, p, t) = (server.http(), path("gate"), admin.clone());
    let asked = tokio::spawn(async move { http_json(&addr, "POST", &p, Some(&t), "").await });
    let EngineEvent::DoorRequest { request_id, .. } = gate_ev.wait("gate request", is_request).await else {
        unreachable!()
    };
    gate.answer_door(request_id, Err((ErrorCode::DOOR_RELAY_FAULT, "relay: EIO".into()))).await.unwrap();
    let (status, body) = asked.await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("DOOR_RELAY_FAULT") && body.contains("relay: EIO"), "{body}");
    assert_eq!(door_ev.seen.iter().filter(|e| is_request(e)).count(), 1, "the door was not asked for the gate");

    // 404 and 403.
    let (status, body) = http_json(&server.http(), "POST", &path("nobody"), Some(&admin), "").await;
    assert_eq!(status, 404, "{body}");
    let other_room = token(APP, SECRET, "backend", Some("hall"), &["admin"], 600);
    let (status, _) = http_json(&server.http(), "POST", &path("door"), Some(&other_room), "").await;
    assert_eq!(status, 403);
    let member = token(APP, SECRET, "backend", Some("lobby"), &["login", "door"], 600);
    let (status, _) = http_json(&server.http(), "POST", &path("door"), Some(&member), "").await;
    assert_eq!(status, 403, "a member's door privilege is not the admin API's");

    // 504: the station says nothing.
    let t = Instant::now();
    let (status, body) = http_json(&server.http(), "POST", &path("door"), Some(&admin), "").await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("DOOR_NO_ANSWER"), "{body}");
    assert!(t.elapsed() >= Duration::from_secs(3) && t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    // The door heard this one request only (the gate's went to the gate alone).
    let EngineEvent::DoorRequest { request_id: silent, .. } = door_ev.wait("the unanswered request", is_request).await
    else {
        unreachable!()
    };
    assert!(silent > request_id);
    let late = door.answer_door(silent, Ok(())).await;
    assert!(late.is_ok(), "a late answer is ignored by the server, not an error: {late:?}");

    let got = rx
        .wait("the door events", |g| {
            g.iter().filter(|g| g.json["event"].as_str().is_some_and(|e| e.starts_with("door_"))).count() >= 3
        })
        .await;
    let doors: Vec<String> = got
        .iter()
        .filter(|g| g.json["event"].as_str().is_some_and(|e| e.starts_with("door_")))
        .map(|g| {
            format!(
                "{} {} {}",
                g.json["event"].as_str().unwrap(),
                g.json["door"].as_str().unwrap(),
                g.json["reason"]["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(doors, ["door_opened door ", "door_refused gate DOOR_RELAY_FAULT", "door_refused door DOOR_NO_ANSWER"]);
}

/// One raw HTTP GET: status, headers and body bytes (a JPEG is not text).
async fn get_bytes(addr: &str, path: &str, bearer: &str) -> (u16, String, Vec<u8>) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {bearer}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&buf[..at]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head, buf[at + 4..].to_vec())
}

/// Decodes a JPEG to RGB with GStreamer: (width, height, pixels).
fn decode_jpeg(jpeg: &[u8]) -> (usize, usize, Vec<u8>) {
    use gstreamer as gst;
    use gstreamer::prelude::*;
    gst::init().unwrap();
    let p = gst::parse::launch(
        "appsrc name=src caps=image/jpeg ! jpegdec ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = p.by_name("src").unwrap().downcast::<gstreamer_app::AppSrc>().unwrap();
    let sink = p.by_name("sink").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
    p.set_state(gst::State::Playing).unwrap();
    src.push_buffer(gst::Buffer::from_slice(jpeg.to_vec())).unwrap();
    src.end_of_stream().unwrap();
    let sample = sink.try_pull_sample(gst::ClockTime::from_seconds(10)).expect("the snapshot is a decodable JPEG");
    let s = sample.caps().unwrap().structure(0).unwrap().to_owned();
    let (w, h) = (s.get::<i32>("width").unwrap() as usize, s.get::<i32>("height").unwrap() as usize);
    let map = sample.buffer().unwrap().map_readable().unwrap();
    // RGB rows are padded to 4 bytes.
    let stride = (w * 3).div_ceil(4) * 4;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for row in 0..h {
        rgb.extend_from_slice(&map.as_slice()[row * stride..row * stride + w * 3]);
    }
    drop(map);
    p.set_state(gst::State::Null).unwrap();
    (w, h, rgb)
}

/// The snapshot of a stream publishing SMPTE colour bars is a JPEG of its size whose top
/// bars have the bars' colours; an admin token or a play token may fetch it, a login-only
/// token may not; an unknown stream is 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_a_jpeg_of_the_stream_s_latest_picture() {
    let server = Server::start("");
    let media = callbox::media::MediaConfig { test_pattern: "smpte".into(), ..callbox::media::MediaConfig::small() };
    let (cam, mut ev) = media_engine_with(&server.url(), media);
    cam.login_room("lobby", user("door"), RoomConfig::default()).await.unwrap();
    cam.start_publishing_stream("door-main", callbox::engine::PublishChannel::Main).await.unwrap();
    ev.wait("publishing", |e| {
        matches!(e, EngineEvent::PublisherStateUpdate { state: callbox::engine::PublisherState::Publishing, .. })
    })
    .await;
    let path = format!("/api/v1/apps/{APP}/rooms/lobby/streams/door-main/snapshot.jpg");
    let admin = token(APP, SECRET, "backend", Some("lobby"), &["admin"], 600);
    // The first keyframe may still be on its way: 503 until the SFU has one.
    let deadline = Instant::now() + WAIT;
    let (head, jpeg) = loop {
        let (status, head, body) = get_bytes(&server.http(), &path, &admin).await;
        if status == 200 {
            break (head, body);
        }
        assert_eq!(status, 503, "{head}");
        assert!(Instant::now() < deadline, "no snapshot: {head}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(head.to_ascii_lowercase().contains("content-type: image/jpeg"), "{head}");
    assert!(head.contains("320x240"), "{head}");
    assert_eq!(&jpeg[..2], &[0xff, 0xd8], "a JPEG");
    let (w, h, rgb) = decode_jpeg(&jpeg);
    assert_eq!((w, h), (320, 240));
    // The top bars: grey, yellow, cyan, green, magenta, red, blue (75 %).
    let bars: [[u8; 3]; 7] =
        [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191]];
    for (i, want) in bars.iter().enumerate() {
        let x = (2 * i + 1) * w / 14;
        let at = (60 * w + x) * 3;
        let got = &rgb[at..at + 3];
        for c in 0..3 {
            assert!(got[c].abs_diff(want[c]) < 48, "bar {i} at x={x}: {got:?}, want {want:?}");
        }
    }

    let player = token(APP, SECRET, "desk", Some("lobby"), &["login", "play"], 600);
    assert_eq!(get_bytes(&server.http(), &path, &player).await.0, 200);
    let login_only = token(APP, SECRET, "desk", Some("lobby"), &["login"], 600);
    assert_eq!(get_bytes(&server.http(), &path, &login_only).await.0, 403);
    let other = format!("/api/v1/apps/{APP}/rooms/lobby/streams/nothing/snapshot.jpg");
    assert_eq!(get_bytes(&server.http(), &other, &admin).await.0, 404);
    // The description integrators generate clients from names this endpoint.
    let (status, body) = http(&server.http(), "GET", "/api/v1/openapi.json", None).await;
    assert_eq!(status, 200);
    let spec: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(spec["paths"]["/api/v1/apps/{app_id}/rooms/{room_id}/streams/{stream_id}/snapshot.jpg"]["get"].is_object());
    cam.destroy().await;
}
