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
    raw.send(&ClientMsg::Publish { req: 7, stream_id: "s".into(), extra_info: String::new() }).await;
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
        raw.send(&ClientMsg::Ping { seq: i, quality: callbox::proto::QualityLevel::Good }).await;
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
    // Unauthorized: none, a non-admin token, another app's admin token.
    let plain = token(APP, SECRET, "door", None, &["login"], 60);
    let foreign = token(OTHER_APP, OTHER_SECRET, "*", None, &["admin"], 60);
    for t in [None, Some(plain.as_str()), Some(foreign.as_str())] {
        let (s, body) = http(&h, "GET", "/api/v1/apps/1234/rooms", t).await;
        assert_eq!(s, 401, "{body}");
        assert!(body.contains("1005001"), "{body}");
    }
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
    raw.send(&ClientMsg::Publish { req: 7, stream_id: "mallory-main".into(), extra_info: String::new() }).await;
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
