//! Faults against the real server process: a vanished client removed after the grace period,
//! a cut TCP connection resumed without churn, the server killed and restarted, and destroy()
//! flushing the logout.

mod common;

use std::time::{Duration, Instant};

use callbox::engine::{EngineEvent, ErrorCode, PlayerState, RoomStateReason, UpdateType};
use callbox::proto::{ClientMsg, ServerMsg};
use common::*;

#[tokio::test]
async fn vanished_client_is_removed_after_grace_with_reason() {
    let server = Server::start("[session]\ngrace_secs = 2\nheartbeat_ms = 500\n");
    let (watch, mut ew) = engine(&server.url());
    watch.login_room("lobby", user("watch"), notify()).await.unwrap();
    let mut raw = Raw::connect(&server).await;
    assert!(matches!(raw.login("door", "lobby").await, ServerMsg::LoginOk { .. }));
    // The server last hears from this client no earlier than now.
    let last_message = Instant::now();
    raw.send(&ClientMsg::publish(2, "door-main", String::new())).await;
    assert_eq!(raw.recv().await, ServerMsg::Ok { req: 2 });
    ew.wait("stream add", |e| matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Add, .. })).await;
    drop(raw); // power cut: no logout
    let del = ew
        .wait("stream delete", |e| matches!(e, EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, .. }))
        .await;
    assert!(matches!(del, EngineEvent::RoomStreamUpdate { reason: ErrorCode::HEARTBEAT_TIMEOUT, .. }), "{del:?}");
    let gone =
        ew.wait("user delete", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, .. })).await;
    assert!(matches!(gone, EngineEvent::RoomUserUpdate { ref users, .. } if users[0].user_id == "door"));
    assert!(matches!(gone, EngineEvent::RoomUserUpdate { reason: ErrorCode::HEARTBEAT_TIMEOUT, .. }), "{gone:?}");
    let waited = last_message.elapsed();
    assert!(waited >= Duration::from_secs(2), "kept for the grace period, removed after {waited:?}");
    watch.destroy().await;
}

#[tokio::test]
async fn cut_connection_restored_within_grace_resumes_without_churn() {
    let server = Server::start("");
    let proxy = Proxy::start(server.addr).await;
    let ((a, mut ea), (b, mut eb)) = door_and_flat(&proxy.url(), &server.url()).await;
    let before = eb.seen.len();
    proxy.cut();
    ea.wait("Reconnecting", is_reason(RoomStateReason::Reconnecting)).await;
    // Stay cut through a few refused retries.
    let during = ea.drain_for(Duration::from_secs(2)).await;
    assert!(!during.iter().any(is_reason(RoomStateReason::Reconnected)));
    proxy.restore();
    ea.wait("Reconnected", is_reason(RoomStateReason::Reconnected)).await;
    ea.wait("Publishing again", |e| {
        matches!(e, EngineEvent::PublisherStateUpdate { state: callbox::engine::PublisherState::Publishing, .. })
    })
    .await;
    // The peer's view is proven current by a broadcast sent after the resume.
    a.send_broadcast_message("after resume").await.unwrap();
    eb.wait("broadcast", |e| matches!(e, EngineEvent::BroadcastMessage { .. })).await;
    let churn: Vec<_> = eb.seen[before..]
        .iter()
        .filter(|e| {
            matches!(
                e,
                EngineEvent::RoomUserUpdate { .. }
                    | EngineEvent::RoomStreamUpdate { .. }
                    | EngineEvent::PlayerStateUpdate { .. }
            )
        })
        .collect();
    assert!(churn.is_empty(), "peer saw churn: {churn:?}");
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn server_killed_and_restarted_clients_come_back_by_themselves() {
    let mut server = Server::start("");
    let ((a, mut ea), (b, mut eb)) = door_and_flat(&server.url(), &server.url()).await;
    let killed = Instant::now();
    server.restart();
    ea.wait("a Reconnected", is_reason(RoomStateReason::Reconnected)).await;
    eb.wait("b Reconnected", is_reason(RoomStateReason::Reconnected)).await;
    eb.wait("Playing again", |e| matches!(e, EngineEvent::PlayerStateUpdate { state: PlayerState::Playing, .. })).await;
    println!("both engines back in the room and playing {:?} after the kill", killed.elapsed());
    let admin = token(APP, SECRET, "*", None, &["admin"], 60);
    let (status, body) = http(&server.http(), "GET", "/api/v1/apps/1234/rooms/lobby", Some(&admin)).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["users"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(v["streams"][0]["stream_id"], "door-main", "{body}");
    a.destroy().await;
    b.destroy().await;
}

#[tokio::test]
async fn destroy_flushes_logout_so_peers_see_the_user_leave_at_once() {
    let server = Server::start("[session]\ngrace_secs = 60\n");
    let (a, _ea) = engine(&server.url());
    let (b, mut eb) = engine(&server.url());
    b.login_room("lobby", user("flat"), notify()).await.unwrap();
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    eb.wait("door added", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, .. })).await;
    a.destroy().await;
    // With a 60 s grace period, a Delete within the wait proves it was a logout, not a timeout.
    let ev =
        eb.wait("door deleted", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, .. })).await;
    assert!(matches!(ev, EngineEvent::RoomUserUpdate { ref users, .. } if users[0].user_id == "door"));
    b.destroy().await;
}

/// A logout the server cannot be told of (the network is cut) is LogoutFailed, not Logout:
/// the others see the user leave only when its grace period ends.
#[tokio::test]
async fn a_logout_into_a_cut_is_logout_failed() {
    let server = Server::start("[session]\ngrace_secs = 2\nheartbeat_ms = 500\n");
    let proxy = Proxy::start(server.addr).await;
    let (a, mut ea) = engine(&proxy.url());
    let (watch, mut ew) = engine(&server.url());
    watch.login_room("lobby", user("watch"), notify()).await.unwrap();
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    ew.wait("door in", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Add, .. })).await;
    proxy.cut();
    ea.wait("Reconnecting", is_reason(RoomStateReason::Reconnecting)).await;
    a.logout_room().await.unwrap();
    let failed = ea.wait("LogoutFailed", is_reason(RoomStateReason::LogoutFailed)).await;
    assert!(
        matches!(failed, EngineEvent::RoomStateChanged { error_code: ErrorCode::NETWORK_INTERRUPTED, .. }),
        "{failed:?}"
    );
    assert!(!ea.seen.iter().any(is_reason(RoomStateReason::Logout)), "not confirmed, so not Logout");
    let gone =
        ew.wait("door gone", |e| matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, .. })).await;
    assert!(matches!(gone, EngineEvent::RoomUserUpdate { reason: ErrorCode::HEARTBEAT_TIMEOUT, .. }), "{gone:?}");
    // A confirmed logout is Logout.
    proxy.restore();
    a.login_room("lobby", user("door"), notify()).await.unwrap();
    a.logout_room().await.unwrap();
    ea.wait("Logout", is_reason(RoomStateReason::Logout)).await;
    watch.destroy().await;
    a.destroy().await;
}
