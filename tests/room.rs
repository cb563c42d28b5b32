//! The call model against the real server process: login/logout, user and stream updates,
//! duplicate stream IDs, KickOut, tokens, ID limits, extra info and broadcast.

mod common;

use callbox::engine::{
    Auth, Engine, EngineError, EngineEvent, EngineProfile, ErrorCode, PlayerState, PublishChannel, PublisherState,
    RoomConfig, RoomState, RoomStateReason, UpdateType,
};
use common::*;

#[tokio::test]
async fn login_logout_and_user_updates_only_with_the_flag() {
    let server = Server::start("");
    let (a, mut ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    let (c, mut ec) = engine(&server.url());
    a.login_room("lobby", user("alice"), notify()).await.unwrap();
    let ev = ea.wait("Logined", is_reason(RoomStateReason::Logined)).await;
    assert!(
        matches!(ev, EngineEvent::RoomStateChanged { state: RoomState::Connected, ref room_id, .. } if room_id == "lobby")
    );
    b.login_room("lobby", user("bob"), RoomConfig::default()).await.unwrap();
    c.login_room("lobby", user("carol"), notify()).await.unwrap();
    let add = ea.wait("bob added", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, users, .. } if users[0].user_id == "bob")).await;
    assert!(matches!(add, EngineEvent::RoomUserUpdate { ref users, .. } if users[0].user_name == "bob name"));
    // carol sees alice and bob from the snapshot, never herself
    ec.wait(
        "alice in snapshot",
        |e| matches!(e, EngineEvent::RoomUserUpdate { users, .. } if users.iter().any(|u| u.user_id == "alice")),
    )
    .await;
    b.logout_room().await.unwrap();
    let gone = ea.wait("bob deleted", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users[0].user_id == "bob")).await;
    // A logout is told apart from a power cut (HEARTBEAT_TIMEOUT, tests/resilience.rs).
    assert!(matches!(gone, EngineEvent::RoomUserUpdate { reason: ErrorCode::USER_LOGGED_OUT, .. }), "{gone:?}");
    ec.wait("bob deleted (carol)", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users[0].user_id == "bob")).await;
    eb.wait("Logout", is_reason(RoomStateReason::Logout)).await;
    let b_saw_users = eb.seen.iter().any(|e| matches!(e, EngineEvent::RoomUserUpdate { .. }));
    assert!(!b_saw_users, "bob did not ask for user updates");
    let about_self = |seen: &[EngineEvent], me: &str| {
        seen.iter()
            .any(|e| matches!(e, EngineEvent::RoomUserUpdate { users, .. } if users.iter().any(|u| u.user_id == me)))
    };
    assert!(!about_self(&ea.seen, "alice"), "never about yourself");
    assert!(!about_self(&ec.seen, "carol"));
    a.destroy().await;
    c.destroy().await;
}

#[tokio::test]
async fn streams_added_deleted_and_ids_unique_per_app() {
    let server = Server::start("");
    let (a, mut ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    a.start_publishing_stream_with_extra_info("door-main", PublishChannel::Main, "front door").await.unwrap();
    ea.wait("Publishing", |e| matches!(e, EngineEvent::PublisherStateUpdate { state: PublisherState::Publishing, .. }))
        .await;
    let add =
        eb.wait("stream add", |e| matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Add, .. })).await;
    let EngineEvent::RoomStreamUpdate { streams, .. } = add else { unreachable!() };
    assert_eq!(
        (streams[0].stream_id.as_str(), streams[0].user.user_id.as_str(), streams[0].extra_info.as_str()),
        ("door-main", "door", "front door")
    );
    b.start_playing_stream("door-main").await.unwrap();
    eb.wait("Playing", |e| matches!(e, EngineEvent::PlayerStateUpdate { state: PlayerState::Playing, .. })).await;
    let dup = b.start_publishing_stream("door-main", PublishChannel::Main).await;
    assert_eq!(dup, Err(EngineError::Rejected(ErrorCode::STREAM_ID_IN_USE)));
    assert_eq!(ErrorCode::STREAM_ID_IN_USE.0, 1003028);
    // Another app may use the same stream ID.
    let mut p = EngineProfile::new(OTHER_APP, Auth::AppSign(OTHER_SECRET.into()), server.url());
    p.reconnect = fast_policy();
    let (o, _eo) = Engine::create(p).unwrap();
    o.login_room("lobby", user("door"), notify()).await.unwrap();
    o.start_publishing_stream("door-main", PublishChannel::Main).await.unwrap();
    a.stop_publishing_stream(PublishChannel::Main).await.unwrap();
    eb.wait("stream delete", |e| matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, .. })).await;
    let stopped =
        eb.wait("NoPlay", |e| matches!(e, EngineEvent::PlayerStateUpdate { state: PlayerState::NoPlay, .. })).await;
    assert!(matches!(stopped, EngineEvent::PlayerStateUpdate { error_code: ErrorCode::STREAM_DELETED, .. }));
    // The other app's room was never visible here.
    assert!(
        eb.seen.iter().filter(|e| matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Add, .. })).count()
            == 1
    );
    for e in [a, b, o] {
        e.destroy().await;
    }
}

#[tokio::test]
async fn same_user_elsewhere_kicks_out_without_kick_back() {
    let server = Server::start("");
    let (old, mut eold) = engine(&server.url());
    let (new, mut enew) = engine(&server.url());
    let (watch, mut ew) = engine(&server.url());
    watch.login_room("lobby", user("watch"), notify()).await.unwrap();
    old.login_room("lobby", user("door"), notify()).await.unwrap();
    new.login_room("lobby", user("door"), notify()).await.unwrap();
    let kicked = eold.wait("KickOut", is_reason(RoomStateReason::KickOut)).await;
    assert!(matches!(
        kicked,
        EngineEvent::RoomStateChanged {
            error_code: ErrorCode::KICKED_DUPLICATE_LOGIN,
            state: RoomState::Disconnected,
            ..
        }
    ));
    assert_eq!(ErrorCode::KICKED_DUPLICATE_LOGIN.0, 1002050);
    // The kicked engine must not come back and kick the new one out: prove the new session is
    // still there by a broadcast round trip well after any retry would have happened.
    let extra = eold.drain_for(std::time::Duration::from_secs(2)).await;
    assert!(
        !extra.iter().any(|e| matches!(e, EngineEvent::RoomStateChanged { state: RoomState::Connecting, .. })),
        "{extra:?}"
    );
    new.send_broadcast_message("still here").await.unwrap();
    ew.wait(
        "broadcast from new",
        |e| matches!(e, EngineEvent::BroadcastMessage { message, .. } if message == "still here"),
    )
    .await;
    assert!(
        !enew.seen.iter().any(|e| matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::KickOut, .. }))
    );
    assert!(
        enew.drain_for(std::time::Duration::from_millis(200))
            .await
            .iter()
            .all(|e| !matches!(e, EngineEvent::RoomStateChanged { reason: RoomStateReason::KickOut, .. }))
    );
    for e in [old, new, watch] {
        e.destroy().await;
    }
}

async fn login_with(server: &Server, app_id: u32, room: &str, user_id: &str, token: String) -> Result<(), EngineError> {
    let mut p = EngineProfile::new(app_id, Auth::Token(token), server.url());
    p.reconnect = fast_policy();
    let (e, _ev) = Engine::create(p).unwrap();
    let r = e.login_room(room, user(user_id), RoomConfig::default()).await;
    e.destroy().await;
    r
}

#[tokio::test]
async fn every_token_failure_has_its_code() {
    let server = Server::start("");
    let all = ["login", "publish", "play"];
    let cases = [
        ("expired", APP, token(APP, SECRET, "u", None, &all, -10), ErrorCode::TOKEN_EXPIRED),
        ("malformed", APP, "abc.def.ghi".to_string(), ErrorCode::TOKEN_INVALID),
        ("bad signature", APP, token(APP, OTHER_SECRET, "u", None, &all, 600), ErrorCode::TOKEN_INVALID),
        ("wrong app", APP, token(OTHER_APP, OTHER_SECRET, "u", None, &all, 600), ErrorCode::APP_ID_MISMATCH),
        ("unknown app", 4242, token(4242, SECRET, "u", None, &all, 600), ErrorCode::APP_ID_MISMATCH),
        ("wrong room", APP, token(APP, SECRET, "u", Some("other"), &all, 600), ErrorCode::TOKEN_ROOM_MISMATCH),
        ("wrong user", APP, token(APP, SECRET, "someone", None, &all, 600), ErrorCode::TOKEN_USER_MISMATCH),
        ("no login", APP, token(APP, SECRET, "u", None, &["play"], 600), ErrorCode::NO_LOGIN_PRIVILEGE),
    ];
    for (name, app, tok, code) in cases {
        let r = login_with(&server, app, "lobby", "u", tok).await;
        assert_eq!(r, Err(EngineError::Rejected(code)), "{name}");
    }
    assert_eq!(ErrorCode::TOKEN_INVALID.0, 1002033);
    // Privileges past login.
    let mut p =
        EngineProfile::new(APP, Auth::Token(token(APP, SECRET, "viewer", None, &["login", "play"], 600)), server.url());
    p.reconnect = fast_policy();
    let (e, _ev) = Engine::create(p).unwrap();
    e.login_room("lobby", user("viewer"), RoomConfig::default()).await.unwrap();
    assert_eq!(
        e.start_publishing_stream("v", PublishChannel::Main).await,
        Err(EngineError::Rejected(ErrorCode::NO_PUBLISH_PRIVILEGE))
    );
    e.destroy().await;
}

#[tokio::test]
async fn id_limits_are_enforced_by_engine_and_server() {
    let server = Server::start("");
    let (e, _ev) = engine(&server.url());
    let long_user = "u".repeat(64);
    let cases = [
        ("lobby", "", ErrorCode::USER_ID_EMPTY),
        ("lobby", long_user.as_str(), ErrorCode::USER_ID_TOO_LONG),
        ("lobby", "has space", ErrorCode::USER_ID_INVALID),
        ("", "u", ErrorCode::ROOM_ID_EMPTY),
        ("lobby\u{e9}", "u", ErrorCode::ROOM_ID_INVALID),
    ];
    for (room, u, code) in cases {
        assert_eq!(
            e.login_room(room, user(u), RoomConfig::default()).await,
            Err(EngineError::Invalid(code)),
            "{room:?} {u:?}"
        );
    }
    let long_room = "r".repeat(128);
    assert_eq!(
        e.login_room(&long_room, user("u"), RoomConfig::default()).await,
        Err(EngineError::Invalid(ErrorCode::ROOM_ID_TOO_LONG))
    );
    e.login_room(&"r".repeat(127), user(&"u".repeat(63)), RoomConfig::default()).await.unwrap();
    let long_stream = "s".repeat(256);
    assert_eq!(
        e.start_publishing_stream(&long_stream, PublishChannel::Main).await,
        Err(EngineError::Invalid(ErrorCode::STREAM_ID_TOO_LONG))
    );
    e.start_publishing_stream(&"s".repeat(255), PublishChannel::Main).await.unwrap();
    // The server checks too (a client that skips the engine's checks).
    let mut raw = Raw::connect(&server).await;
    let reply = raw.login("bad user", "lobby").await;
    assert!(matches!(reply, callbox::proto::ServerMsg::Error { code: ErrorCode::USER_ID_INVALID, .. }), "{reply:?}");
    e.destroy().await;
}

#[tokio::test]
async fn extra_info_broadcast_and_token_renewal() {
    let server = Server::start("");
    let (a, _ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    a.set_room_extra_info("mode", "night").await.unwrap();
    let ev = eb.wait("extra info", |e| matches!(e, EngineEvent::RoomExtraInfoUpdate { .. })).await;
    assert!(
        matches!(ev, EngineEvent::RoomExtraInfoUpdate { ref infos, .. } if infos[0].key == "mode" && infos[0].value == "night" && infos[0].update_user.user_id == "door")
    );
    let id = a.send_broadcast_message("ring").await.unwrap();
    let ev = eb.wait("broadcast", |e| matches!(e, EngineEvent::BroadcastMessage { .. })).await;
    assert!(
        matches!(ev, EngineEvent::BroadcastMessage { ref message, ref from, message_id, .. } if message == "ring" && from.user_id == "door" && message_id == id)
    );
    let too_big = "x".repeat(1025);
    assert_eq!(a.send_broadcast_message(&too_big).await, Err(EngineError::Rejected(ErrorCode::BROADCAST_TOO_LARGE)));
    // 40 at once against a burst of 10 at 5/s: most must be refused however slow the machine.
    let burst = futures_util::future::join_all((0..40).map(|_| a.send_broadcast_message("spam"))).await;
    let refused = Err(EngineError::Rejected(ErrorCode::BROADCAST_RATE_LIMITED));
    let limited = burst.iter().filter(|r| **r == refused).count();
    assert!(limited >= 20, "broadcasts are rate-limited ({limited} of 40 refused)");
    // Token mode: warned before expiry, renewal accepted.
    let mut p = EngineProfile::new(APP, Auth::Token(token(APP, SECRET, "tmp", None, &["login"], 31)), server.url());
    p.reconnect = fast_policy();
    let (t, rx) = Engine::create(p).unwrap();
    let mut et = Events { rx, seen: Vec::new() };
    t.login_room("lobby", user("tmp"), RoomConfig::default()).await.unwrap();
    let warn = et.wait("token will expire", |e| matches!(e, EngineEvent::RoomTokenWillExpire { .. })).await;
    assert!(matches!(warn, EngineEvent::RoomTokenWillExpire { remaining_secs, .. } if remaining_secs <= 31));
    t.renew_token(&token(APP, SECRET, "tmp", None, &["login"], 3600)).await.unwrap();
    assert_eq!(
        t.renew_token(&token(APP, SECRET, "other", None, &["login"], 3600)).await,
        Err(EngineError::Rejected(ErrorCode::RENEW_TOKEN_MISMATCH))
    );
    for e in [a, b, t] {
        e.destroy().await;
    }
}

/// A desk signs in with its password and gets a token for its room with the door privilege;
/// the token renews itself; wrong passwords are refused with a code and limited per desk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desk_signs_in_with_its_password_renews_and_guessing_is_limited() {
    let hash = callbox::server::desk_password_hash("front desk 42");
    let server = Server::start(&format!(
        "[[desks]]\nuser_id = \"desk\"\nname = \"Front desk\"\napp_id = {APP}\nroom_id = \"lobby\"\npassword = \"{hash}\"\n"
    ));
    let login = |pw: &str| format!(r#"{{"user_id":"desk","password":"{pw}"}}"#);
    let (status, body) = http_json(&server.http(), "POST", "/desk/login", None, &login("wrong")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("1005010"), "{body}");
    let (status, body) =
        http_json(&server.http(), "POST", "/desk/login", None, r#"{"user_id":"nobody","password":"x"}"#).await;
    assert_eq!(status, 401, "an unknown desk answers as a wrong password: {body}");
    let (status, body) = http_json(&server.http(), "POST", "/desk/login", None, &login("front desk 42")).await;
    assert_eq!(status, 200, "{body}");
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((j["room_id"].as_str(), j["user_name"].as_str()), (Some("lobby"), Some("Front desk")));
    let token = j["token"].as_str().unwrap().to_string();

    // The token logs in as the desk and carries the door privilege (a door that is not there
    // is offline, not forbidden).
    let (desk, _ev) = Engine::create(EngineProfile::new(APP, Auth::Token(token.clone()), server.url())).unwrap();
    desk.login_room("lobby", user("desk"), RoomConfig::default()).await.unwrap();
    assert_eq!(desk.open_door("door").await.unwrap_err().code(), ErrorCode::DOOR_OFFLINE);

    let (status, body) = http_json(&server.http(), "POST", "/desk/renew", Some(&token), "").await;
    assert_eq!(status, 200, "{body}");
    let renewed: serde_json::Value = serde_json::from_str(&body).unwrap();
    desk.renew_token(renewed["token"].as_str().unwrap()).await.unwrap();
    let (status, _) = http_json(&server.http(), "POST", "/desk/renew", Some("garbage"), "").await;
    assert_eq!(status, 401);

    // Guessing: after 5 failures in a minute the desk is locked for the rest of it.
    for _ in 0..5 {
        http_json(&server.http(), "POST", "/desk/login", None, &login("guess")).await;
    }
    let (status, body) = http_json(&server.http(), "POST", "/desk/login", None, &login("front desk 42")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("1005011"), "{body}");
    desk.destroy().await;
}

/// The room cap (1002018 ROOM_FULL), the Aux channel beside Main, a user without a name
/// shown by its ID, and an unusable profile with its own code.
#[tokio::test]
async fn the_room_cap_the_aux_channel_a_nameless_user_and_the_profile_code() {
    let server = Server::start("[limits]\nmax_users_per_room = 2\n");
    let (a, mut ea) = engine(&server.url());
    let (b, _eb) = engine(&server.url());
    let (c, _ec) = engine(&server.url());
    a.login_room("lift", user("alice"), notify()).await.unwrap();
    b.login_room("lift", callbox::proto::UserInfo::new("bob".into(), String::new()), notify()).await.unwrap();
    let bob = ea.wait("bob", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, .. })).await;
    assert!(matches!(&bob, EngineEvent::RoomUserUpdate { users, .. } if users[0].user_name == "bob"), "{bob:?}");
    let full = c.login_room("lift", user("carol"), notify()).await.unwrap_err();
    assert_eq!(full.code(), ErrorCode::ROOM_FULL, "{full:?}");
    // Another room has room for carol.
    c.login_room("hall", user("carol"), notify()).await.unwrap();

    // Main and Aux: two streams of one user; a busy channel is refused, Aux stops alone.
    b.start_publishing_stream("bob-main", PublishChannel::Main).await.unwrap();
    b.start_publishing_stream("bob-aux", PublishChannel::Aux).await.unwrap();
    let busy = b.start_publishing_stream("bob-other", PublishChannel::Aux).await.unwrap_err();
    assert_eq!(busy.code(), ErrorCode::CHANNEL_BUSY);
    ea.wait("bob-main", stream_update("bob-main", UpdateType::Add)).await;
    ea.wait("bob-aux", stream_update("bob-aux", UpdateType::Add)).await;
    b.stop_publishing_stream(PublishChannel::Aux).await.unwrap();
    ea.wait("bob-aux gone", stream_update("bob-aux", UpdateType::Delete)).await;
    let main_gone = ea.seen.iter().any(|e| {
        matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, streams, .. }
            if streams.iter().any(|s| s.stream_id == "bob-main"))
    });
    assert!(!main_gone, "stopping Aux leaves Main");

    let bad = Engine::create(EngineProfile::new(APP, Auth::AppSign(SECRET.into()), "ftp://nowhere")).err().unwrap();
    assert_eq!(bad.code(), ErrorCode::PROFILE_INVALID, "{bad}");
    assert_ne!(bad.code(), ErrorCode::TOKEN_INVALID);
    let bad = Engine::create(EngineProfile::new(APP, Auth::AppSign("not hex".into()), server.url())).err().unwrap();
    assert_eq!(bad.code(), ErrorCode::PROFILE_INVALID);
    for e in [a, b, c] {
        e.destroy().await;
    }
}
