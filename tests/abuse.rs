//! Bad clients and operators: garbage, oversized and out-of-order messages get codes while
//! another session keeps working; the admin API, health and metrics.

mod common;

use callbox::engine::{EngineEvent, ErrorCode, RoomStateReason, UpdateType};
use callbox::proto::{ClientMsg, ServerMsg};
use common::*;

fn code_of(m: &ServerMsg) -> Option<ErrorCode> {
    match m {
        ServerMsg::Error { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn garbage_oversized_and_out_of_order_get_codes_and_disturb_nobody() {
    let server = Server::start("");
    let (a, _ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    let mut raw = Raw::connect(&server).await;
    raw.send_text("this is not json").await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MALFORMED_MESSAGE));
    raw.send_text(r#"{"type":"teleport","req":1}"#).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MALFORMED_MESSAGE));
    raw.send_text(r#"{"type":"login","req":"one"}"#).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MALFORMED_MESSAGE));
    raw.send_text(format!(r#"{{"type":"broadcast","req":1,"message":"{}"}}"#, "x".repeat(20_000))).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MESSAGE_TOO_LARGE));
    raw.send_binary(vec![0, 159, 146, 150]).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MALFORMED_MESSAGE));
    raw.send(&ClientMsg::publish(7, "s", String::new())).await;
    let m = raw.recv().await;
    assert_eq!(code_of(&m), Some(ErrorCode::NOT_LOGGED_IN));
    assert!(matches!(m, ServerMsg::Error { req: Some(7), .. }), "the request number is echoed");
    raw.send(&ClientMsg::Login {
        req: 8,
        version: 99,
        app_id: APP,
        token: String::new(),
        room_id: "lobby".into(),
        user: user("x"),
        user_status_notify: false,
    })
    .await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::UNSUPPORTED_VERSION));
    assert!(matches!(raw.login("intruder", "lobby").await, ServerMsg::LoginOk { .. }));
    raw.send(&ClientMsg::Resume { req: 9, version: 1, session_id: "x".into(), resume_token: "y".into() }).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::ALREADY_LOGGED_IN));
    // A flood is rate-limited for the flooder only.
    for i in 0..300 {
        raw.send(&ClientMsg::ping(i, callbox::proto::QualityLevel::Good)).await;
    }
    let mut limited = false;
    for _ in 0..300 {
        if code_of(&raw.recv().await) == Some(ErrorCode::RATE_LIMITED) {
            limited = true;
            break;
        }
    }
    assert!(limited);
    // Meanwhile the others carry on.
    a.send_broadcast_message("still fine").await.unwrap();
    eb.wait("broadcast", |e| matches!(e, EngineEvent::BroadcastMessage { message, .. } if message == "still fine"))
        .await;
    assert!(
        !eb.seen
            .iter()
            .any(|e| matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::Reconnecting, .. }))
    );
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn admin_api_lists_and_kicks_with_an_admin_token() {
    let server = Server::start("");
    let (a, mut ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    a.start_publishing_stream("door-main", Default::default()).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    let admin = token(APP, SECRET, "*", None, &["admin"], 60);
    let h = server.http();
    let (s, body) = http(&h, "GET", "/api/v1/apps/1234/rooms", Some(&admin)).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["rooms"][0]["room_id"], "lobby");
    assert_eq!(v["rooms"][0]["user_count"], 2);
    assert_eq!(v["rooms"][0]["stream_count"], 1);
    let (s, body) = http(&h, "GET", "/api/v1/apps/1234/rooms/lobby", Some(&admin)).await;
    assert_eq!(s, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let users: Vec<&str> = v["users"].as_array().unwrap().iter().map(|u| u["user_id"].as_str().unwrap()).collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"door") && users.contains(&"flat"));
    // Unauthorized (401): none, another app's admin token. Forbidden (403): a valid token
    // without admin.
    let plain = token(APP, SECRET, "door", None, &["login"], 60);
    let foreign = token(OTHER_APP, OTHER_SECRET, "*", None, &["admin"], 60);
    for t in [None, Some(foreign.as_str())] {
        let (s, body) = http(&h, "GET", "/api/v1/apps/1234/rooms", t).await;
        assert_eq!(s, 401, "{body}");
        assert!(body.contains("1005001"), "{body}");
    }
    let (s, body) = http(&h, "GET", "/api/v1/apps/1234/rooms", Some(&plain)).await;
    assert_eq!((s, body.contains("1005003")), (403, true), "{body}");
    let (s, _) = http(&h, "GET", "/api/v1/apps/1234/rooms/nowhere", Some(&admin)).await;
    assert_eq!(s, 404);
    let (s, _) = http(&h, "GET", "/api/v1/apps/notanumber/rooms", Some(&admin)).await;
    assert_eq!(s, 404);
    let (s, body) = http(&h, "DELETE", "/api/v1/apps/1234/rooms/lobby/users/door", Some(&admin)).await;
    assert_eq!(s, 200, "{body}");
    let k = ea
        .wait("KickOut", |e| matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::KickOut, .. }))
        .await;
    assert!(matches!(k, EngineEvent::RoomStateChanged { error_code: ErrorCode::KICKED_BY_ADMIN, .. }));
    eb.wait("door deleted", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, .. })).await;
    let (s, _) = http(&h, "DELETE", "/api/v1/apps/1234/rooms/lobby/users/door", Some(&admin)).await;
    assert_eq!(s, 404);
    let (s, body) = http(&h, "GET", "/healthz", None).await;
    assert_eq!((s, body.contains("ok")), (200, true));
    let (s, metrics) = http(&h, "GET", "/metrics", None).await;
    assert_eq!(s, 200);
    for needle in [
        "callbox_rooms 1",
        "callbox_sessions_connected 1",
        "callbox_logins_total 2",
        "callbox_kicks_total 1",
        "callbox_streams 0",
        "callbox_registry_inconsistencies_total 0",
        "callbox_dropped_total{what=\"slow_client\"} 0",
        "callbox_dropped_total{what=\"media_command\"} 0",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_media_offers_get_codes_and_the_call_goes_on() {
    let server = Server::start("");
    // A real call in the same room keeps flowing throughout.
    let ((a, _ea), (b, mut eb)) = door_and_flat_media(&server.url()).await;

    let mut raw = Raw::connect(&server).await;
    assert!(matches!(raw.login("mallory", "lobby").await, ServerMsg::LoginOk { .. }));
    let offer = |req, stream: &str, role, sdp: &str| ClientMsg::MediaOffer {
        req,
        stream_id: stream.into(),
        role,
        sdp: sdp.into(),
    };
    use callbox::proto::MediaRole::{Play, Publish};
    // Someone else's stream, and a stream never published.
    raw.send(&offer(2, "door-main", Publish, "v=0")).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MEDIA_NOT_PUBLISHING));
    raw.send(&offer(3, "door-main", Play, "v=0")).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MEDIA_NOT_PLAYING));
    // Garbage SDP for a stream it may play, and for one it publishes.
    raw.send(&ClientMsg::Play { req: 4, stream_id: "door-main".into() }).await;
    assert!(matches!(raw.recv().await, ServerMsg::Ok { req: 4 }));
    for (req, sdp) in [
        (5, "not sdp at all"),
        (6, "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 120\r\n"),
    ] {
        raw.send(&offer(req, "door-main", Play, sdp)).await;
        let m = raw.recv().await;
        assert_eq!(code_of(&m), Some(ErrorCode::MEDIA_OFFER_REJECTED), "{m:?}");
    }
    raw.send(&ClientMsg::publish(7, "mallory-main", String::new())).await;
    assert!(matches!(raw.recv().await, ServerMsg::Ok { req: 7 }));
    raw.send(&offer(8, "mallory-main", Publish, "v=0\r\n\r\n\u{0}\u{1}")).await;
    assert_eq!(code_of(&raw.recv().await), Some(ErrorCode::MEDIA_OFFER_REJECTED));
    // The session still answers, and the real call still decodes.
    raw.send(&ClientMsg::Broadcast { req: 9, message: "still here".into() }).await;
    assert!(matches!(raw.recv().await, ServerMsg::BroadcastOk { req: 9, .. }));
    let frames = |e: &EngineEvent| match e {
        EngineEvent::PlayerQualityUpdate { quality, .. } => Some(quality.frames_decoded),
        _ => None,
    };
    let f0 = frames(&eb.wait("quality", |e| frames(e).is_some()).await).unwrap();
    let f1 = frames(&eb.wait("quality", |e| frames(e).is_some()).await).unwrap();
    assert!(f1 >= f0 + 20, "the call kept decoding: {f0} -> {f1}");
    a.destroy().await;
    b.destroy().await;
}

/// A TCP connection from `from` (any 127/8 address is loopback) to the server.
async fn connect_from(from: [u8; 4], server: &Server) -> tokio::net::TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    s.connect(server.addr).await.unwrap()
}

/// Whether the server closed `s` (EOF or reset) within `d`.
async fn closed_within(s: &mut tokio::net::TcpStream, d: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_authenticate_are_capped_and_time_out() {
    use std::time::Duration;
    use tokio::io::AsyncWriteExt;
    let server = Server::start("[limits]\nhandshake_secs = 2\nmax_pending = 30\nmax_pending_per_ip = 10\n");
    // An attacker on 127.0.0.2 opens 25 connections that trickle a request and never end it.
    let mut held = Vec::new();
    for _ in 0..25 {
        let mut s = connect_from([127, 0, 0, 2], &server).await;
        let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
        held.push(s);
    }
    // Over the per-source cap, the server closes them at once: 15 of the 25 (which ones
    // depends on the order the kernel hands them to the server), all watched together for
    // 1 s, well inside the 2 s handshake deadline that ends the other 10.
    let closed =
        futures_util::future::join_all(held.iter_mut().map(|s| closed_within(s, Duration::from_secs(1)))).await;
    assert_eq!(closed.iter().filter(|c| **c).count(), 15, "connections over the per-source cap are closed at once");
    let mut held: Vec<_> = held.into_iter().zip(closed).filter(|(_, c)| !c).map(|(s, _)| s).collect();
    // Meanwhile a device logs in from elsewhere and health answers.
    let (e, _events) = engine(&server.url());
    tokio::time::timeout(Duration::from_secs(5), e.login_room("lobby", user("door"), notify())).await.unwrap().unwrap();
    let (status, _) = http(&server.http(), "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    // The trickling ones are closed once the header deadline passes.
    for s in held.iter_mut() {
        assert!(closed_within(s, Duration::from_secs(5)).await, "a connection that never sent its headers is closed");
    }
    // A WebSocket that is upgraded but never logs in is closed after the same deadline.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/v1", server.addr)).await.unwrap();
    use futures_util::StreamExt;
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an upgraded WebSocket without a login is closed");
    e.destroy().await;
}

#[tokio::test]
async fn whip_offers_are_rate_limited_after_the_token_check() {
    let server = Server::start("[limits]\nwhip_per_sec = 1\nwhip_burst = 3\n");
    let t = token(APP, SECRET, "cam", None, &["login", "publish", "play"], 600);
    let post = |path: String, token: Option<String>| {
        let addr = server.http();
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let body = "v=0\r\n";
            let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
            let req = format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/sdp\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut buf = Vec::new();
            s.read_to_end(&mut buf).await.unwrap();
            String::from_utf8_lossy(&buf).split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0)
        }
    };
    // Garbage tokens do not spend the app's budget.
    for _ in 0..10 {
        assert_eq!(post(format!("/whip/v1/{APP}/lobby/cam-1"), Some("garbage".into())).await, 401);
    }
    let mut statuses = Vec::new();
    for i in 0..8 {
        // Each passes the token check; "v=0" alone is then refused by the relay (400)
        // unless the budget is spent first (429). WHEP offers share the same budget.
        statuses.push(post(format!("/whip/v1/{APP}/lobby/cam-{i}"), Some(t.clone())).await);
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(statuses[..3].iter().all(|s| *s != 429), "the burst passes: {statuses:?}");
    assert!(limited >= 4, "then offers are refused with 429: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_logins_from_one_address_lock_out_nobody_else() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start("");
    // The attacker on 127.0.0.2: 60 logins with only the app ID and a garbage token.
    let stream = connect_from([127, 0, 0, 2], &server).await;
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws/v1", server.addr), stream).await.unwrap();
    let mut limited = 0;
    for i in 0..60 {
        let login = ClientMsg::Login {
            req: i,
            version: 1,
            app_id: APP,
            token: "garbage".into(),
            room_id: "lobby".into(),
            user: user("mallory"),
            user_status_notify: false,
        };
        ws.send(Message::Text(serde_json::to_string(&login).unwrap().into())).await.unwrap();
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed") };
            if let Ok(ServerMsg::Error { code, .. }) = serde_json::from_str::<ServerMsg>(t.as_str()) {
                limited += usize::from(code == ErrorCode::LOGIN_RATE_LIMITED);
                break;
            }
        }
    }
    assert!(limited >= 30, "the attacker gets the rate-limit code ({limited} of 60)");
    // Twenty devices log in from 127.0.0.1 meanwhile, every one of them.
    for i in 0..20 {
        let (e, _events) = engine(&server.url());
        e.login_room("lobby", user(&format!("door-{i}")), notify()).await.unwrap();
        e.destroy().await;
    }
}

/// Every endpoint caps its body: 413 BODY_TOO_LARGE above 64 KiB, whether or not its
/// handler reads a body, declared or chunked; the server serves the next request.
#[tokio::test]
async fn oversized_http_bodies_are_refused_with_413() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Server::start("");
    // A 5 MB body declared: answered before it is sent (a client reads the answer as curl
    // does, before it has written everything).
    for path in ["/api/v1/token", &format!("/api/v1/apps/{APP}/device-keys"), "/desk/login"] {
        let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer cbk_whatever\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            5 * 1024 * 1024
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.starts_with("HTTP/1.1 413"), "{path}: {text}");
        assert!(text.contains("BODY_TOO_LARGE"), "{path}: {text}");
    }
    // Chunked, with no length declared: cut at the cap.
    let mut s = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let admin = token(APP, SECRET, "*", None, &["admin"], 600);
    let head = format!(
        "POST /api/v1/apps/{APP}/device-keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "y".repeat(16 * 1024));
    for _ in 0..8 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let (status, _) = http(&server.http(), "GET", "/healthz", None).await;
    assert_eq!(status, 200);
}
