//! Calls and door requests through the registry: every step told to both sides with its
//! reason, ring timers, groups, busy, offline and detached callees, door rights.

use super::*;
use crate::proto::{Capability, RingOrder};

const ROOM: &str = "house";

impl World {
    /// Logs in a member of [`ROOM`] that says what it is, with these privileges.
    fn member(&mut self, conn: ConnId, user: UserInfo, privileges: &[&str]) -> String {
        self.reg.handle_connect(conn, self.now);
        let token = self.token(1, &user.user_id, privileges, 3600);
        let m = ClientMsg::Login {
            req: 1,
            version: 1,
            app_id: 1,
            token,
            room_id: ROOM.into(),
            user,
            user_status_notify: true,
        };
        self.msg(conn, m);
        match self.take(conn).into_iter().next() {
            Some(ServerMsg::LoginOk { session_id, resume_token, .. }) => format!("{session_id} {resume_token}"),
            other => panic!("login failed: {other:?}"),
        }
    }

    fn door(&mut self, conn: ConnId, id: &str) {
        self.member(
            conn,
            UserInfo::device(id.into(), id.into(), vec![Capability::Door, Capability::Camera]),
            &["login", "publish", "play"],
        );
    }

    fn person(&mut self, conn: ConnId, id: &str, privileges: &[&str]) {
        let mut u = UserInfo::new(id.into(), id.into());
        u.caps = vec![Capability::Answer, Capability::Display];
        self.member(conn, u, privileges);
    }

    /// Places a call from `conn`: its ID.
    fn call(&mut self, conn: ConnId, callees: &[&str], order: RingOrder) -> Result<u64, ErrorCode> {
        let callees = callees.iter().map(|s| s.to_string()).collect();
        self.msg(conn, ClientMsg::Call { req: 50, callees, order, ring_secs: Some(10) });
        self.answer_to(conn, 50)
    }

    fn step(&mut self, conn: ConnId, m: ClientMsg) -> Result<(), ErrorCode> {
        self.msg(conn, m);
        self.answer_to(conn, 60).map(|_| ())
    }

    /// Takes the answer to request `req` from `conn`'s messages (the call's ID for
    /// `call_ok`, 0 for `ok`), leaving the others.
    fn answer_to(&mut self, conn: ConnId, req: u64) -> Result<u64, ErrorCode> {
        let msgs = self.outbox.get_mut(&conn).map(std::mem::take).unwrap_or_default();
        let mut result = None;
        let mut rest = Vec::new();
        for m in msgs {
            match m {
                ServerMsg::CallOk { req: r, call_id } if r == req => result = Some(Ok(call_id)),
                ServerMsg::Ok { req: r } if r == req => result = Some(Ok(0)),
                ServerMsg::Error { req: Some(r), code, .. } if r == req => result = Some(Err(code)),
                other => rest.push(other),
            }
        }
        self.outbox.insert(conn, rest);
        result.expect("an answer")
    }

    /// The call messages `conn` got: (phase or "incoming", peer, reason).
    fn call_msgs(&mut self, conn: ConnId) -> Vec<(String, String, ErrorCode)> {
        self.take(conn)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::CallIncoming { caller, .. } => Some(("incoming".into(), caller.user_id, ErrorCode::OK)),
                ServerMsg::CallUpdate { state, peer, reason, .. } => {
                    let phase = serde_json::to_value(state).unwrap().as_str().unwrap().to_string();
                    Some((phase, peer.user_id, reason))
                }
                _ => None,
            })
            .collect()
    }
}

fn c(phase: &str, peer: &str, reason: ErrorCode) -> (String, String, ErrorCode) {
    (phase.into(), peer.into(), reason)
}

fn answer(call_id: u64) -> ClientMsg {
    ClientMsg::CallAnswer { req: 60, call_id }
}
fn decline(call_id: u64) -> ClientMsg {
    ClientMsg::CallDecline { req: 60, call_id }
}
fn hang_up(call_id: u64) -> ClientMsg {
    ClientMsg::CallHangup { req: 60, call_id }
}

/// door (1), flat (2), desk (3) in one room; their messages so far discarded.
fn house() -> World {
    let mut w = World::new(90);
    w.door(1, "door");
    w.person(2, "flat", &["login", "publish", "play"]);
    w.person(3, "desk", &["login", "publish", "play", "door"]);
    w.outbox.clear();
    w
}

#[test]
fn a_ring_is_answered_and_hung_up_with_both_sides_told() {
    let mut w = house();
    let id = w.call(1, &["flat"], RingOrder::Together).unwrap();
    assert_eq!(w.call_msgs(1), vec![c("ringing", "flat", ErrorCode::OK)]);
    assert_eq!(w.call_msgs(2), vec![c("incoming", "door", ErrorCode::OK)]);
    assert!(w.call_msgs(3).is_empty(), "only the callee rings");
    assert_eq!(w.call(1, &["desk"], RingOrder::Together), Err(ErrorCode::CALL_SELF_BUSY));
    assert_eq!(w.step(3, answer(id)), Err(ErrorCode::CALL_NOT_FOUND), "the desk is not rung");
    assert_eq!(w.step(2, answer(id)), Ok(()));
    assert_eq!(w.call_msgs(1), vec![c("answered", "flat", ErrorCode::OK)]);
    assert_eq!(w.call_msgs(2), vec![c("answered", "door", ErrorCode::OK)]);
    w.advance(Duration::from_secs(60));
    assert!(w.call_msgs(1).is_empty(), "an answered call does not time out");
    assert_eq!(w.step(2, hang_up(id)), Ok(()));
    assert_eq!(w.call_msgs(1), vec![c("ended", "flat", ErrorCode::CALL_HUNG_UP)]);
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_HUNG_UP)]);
    assert_eq!(w.step(2, hang_up(id)), Err(ErrorCode::CALL_NOT_FOUND));
    assert!(w.call(1, &["flat"], RingOrder::Together).is_ok(), "both are free again");
    w.reg.check_invariants().unwrap();
}

#[test]
fn declined_cancelled_and_timed_out_rings_end_with_their_reasons() {
    let mut w = house();
    let id = w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.call_msgs(1);
    w.call_msgs(2);
    w.step(2, decline(id)).unwrap();
    assert_eq!(
        w.call_msgs(1),
        vec![c("not_answered", "flat", ErrorCode::CALL_DECLINED), c("ended", "flat", ErrorCode::CALL_DECLINED)]
    );
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_DECLINED)]);

    let id = w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.call_msgs(2);
    w.step(1, hang_up(id)).unwrap();
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_CANCELLED)]);
    assert_eq!(w.call_msgs(1).last(), Some(&c("ended", "flat", ErrorCode::CALL_CANCELLED)));

    w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.call_msgs(1);
    w.call_msgs(2);
    w.advance(Duration::from_secs(9));
    assert!(w.call_msgs(2).is_empty(), "still ringing after 9 of 10 s");
    w.advance(Duration::from_secs(1));
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_TIMED_OUT)]);
    assert_eq!(w.call_msgs(1).last(), Some(&c("ended", "flat", ErrorCode::CALL_TIMED_OUT)));
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_group_rung_together_stops_ringing_when_one_answers() {
    let mut w = house();
    // No callee named: every other member that can answer (the flat and the desk, not
    // another door).
    w.door(4, "gate");
    w.outbox.clear();
    let id = w.call(1, &[], RingOrder::Together).unwrap();
    let mut ringing: Vec<_> = w.call_msgs(1).into_iter().map(|(_, peer, _)| peer).collect();
    ringing.sort();
    assert_eq!(ringing, vec!["desk", "flat"]);
    assert!(w.call_msgs(4).is_empty(), "a door cannot answer");
    w.call_msgs(2);
    w.call_msgs(3);
    w.step(3, answer(id)).unwrap();
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_ANSWERED_ELSEWHERE)]);
    assert_eq!(w.call_msgs(1), vec![c("answered", "desk", ErrorCode::OK)]);
    assert_eq!(w.step(2, answer(id)), Err(ErrorCode::CALL_NOT_FOUND), "too late");
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_group_rung_in_turn_passes_on_decline_and_timeout() {
    let mut w = house();
    let id = w.call(1, &["flat", "desk"], RingOrder::InTurn).unwrap();
    assert_eq!(w.call_msgs(1), vec![c("ringing", "flat", ErrorCode::OK)]);
    assert!(w.call_msgs(3).is_empty(), "the desk waits its turn");
    w.step(2, decline(id)).unwrap();
    assert_eq!(
        w.call_msgs(1),
        vec![c("not_answered", "flat", ErrorCode::CALL_DECLINED), c("ringing", "desk", ErrorCode::OK)]
    );
    assert_eq!(w.call_msgs(3), vec![c("incoming", "door", ErrorCode::OK)]);
    w.advance(Duration::from_secs(10));
    assert_eq!(
        w.call_msgs(1),
        vec![c("not_answered", "desk", ErrorCode::CALL_TIMED_OUT), c("ended", "desk", ErrorCode::CALL_TIMED_OUT)]
    );
}

#[test]
fn busy_and_offline_callees_and_nobody_to_ring() {
    let mut w = house();
    let first = w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.step(2, answer(first)).unwrap();
    w.outbox.clear();
    // The desk rings the flat, which is in a call: busy, and the flat hears nothing.
    w.call(3, &["flat"], RingOrder::Together).unwrap();
    assert_eq!(
        w.call_msgs(3),
        vec![c("not_answered", "flat", ErrorCode::CALL_BUSY), c("ended", "flat", ErrorCode::CALL_BUSY)]
    );
    assert!(w.call_msgs(2).is_empty());
    // Someone not in the room: offline.
    w.call(3, &["nobody"], RingOrder::Together).unwrap();
    assert_eq!(w.call_msgs(3).last(), Some(&c("ended", "nobody", ErrorCode::CALL_PEER_OFFLINE)));
    assert_eq!(w.call(3, &["desk"], RingOrder::Together), Err(ErrorCode::CALL_INVALID), "not yourself");
    assert_eq!(w.call(3, &["bad id"], RingOrder::Together), Err(ErrorCode::CALL_INVALID));
    let mut alone = World::new(90);
    alone.door(1, "door");
    alone.door(2, "gate");
    assert_eq!(alone.call(1, &[], RingOrder::Together), Err(ErrorCode::CALL_NO_CALLEE));
}

#[test]
fn a_ring_reaches_a_callee_that_resumes_within_grace_or_ends_offline() {
    let mut w = house();
    let flat = {
        let mut u = UserInfo::new("flat2".into(), "Flat 2".into());
        u.caps = vec![Capability::Answer];
        w.member(5, u, &["login", "publish", "play"])
    };
    let (session_id, resume_token) = flat.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap();
    w.reg.handle_disconnect(5, w.now);
    let id = w.call(1, &["flat2"], RingOrder::Together).unwrap();
    assert_eq!(w.call_msgs(1), vec![c("ringing", "flat2", ErrorCode::OK)], "a detached callee rings");
    w.advance(Duration::from_secs(5));
    w.reg.handle_connect(6, w.now);
    w.msg(6, ClientMsg::Resume { req: 2, version: 1, session_id, resume_token });
    let call = w.take(6).into_iter().find_map(|m| match m {
        ServerMsg::Resumed { room, .. } => room.call,
        _ => None,
    });
    let call = call.expect("the resume snapshot names the call");
    assert_eq!((call.call_id, call.caller, call.answered), (id, false, false));
    assert_eq!(call.peer.map(|p| p.user_id), Some("door".into()), "rung by the door");
    w.step(6, answer(id)).unwrap();
    assert_eq!(w.call_msgs(1), vec![c("answered", "flat2", ErrorCode::OK)]);

    // A callee that never comes back within grace: the caller hears offline.
    let mut w = World::new(5);
    w.door(1, "door");
    w.person(2, "flat", &["login"]);
    w.reg.handle_disconnect(2, w.now);
    w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.call_msgs(1);
    for seq in 0..8 {
        w.msg(1, ClientMsg::ping(seq, crate::proto::QualityLevel::Good));
        w.advance(Duration::from_secs(1));
    }
    assert_eq!(
        w.call_msgs(1),
        vec![c("not_answered", "flat", ErrorCode::CALL_PEER_OFFLINE), c("ended", "flat", ErrorCode::CALL_PEER_OFFLINE)]
    );
    w.reg.check_invariants().unwrap();
}

#[test]
fn a_caller_or_callee_leaving_ends_the_call_for_the_other() {
    let mut w = house();
    let id = w.call(1, &["flat"], RingOrder::Together).unwrap();
    w.call_msgs(2);
    w.msg(1, ClientMsg::Logout { req: 9 });
    assert_eq!(w.call_msgs(2), vec![c("ended", "door", ErrorCode::CALL_CANCELLED)]);
    w.door(7, "door");
    let id2 = w.call(7, &["flat"], RingOrder::Together).unwrap();
    assert_ne!(id, id2);
    w.step(2, answer(id2)).unwrap();
    w.call_msgs(7);
    w.reg.kick(1, ROOM, "flat", w.now);
    w.pump();
    assert_eq!(w.call_msgs(7), vec![c("ended", "flat", ErrorCode::CALL_PEER_OFFLINE)]);
    w.reg.check_invariants().unwrap();
}

/// The door requests `conn` got: (request ID, from, in call).
fn door_requests(w: &mut World, conn: ConnId) -> Vec<(u64, String, bool)> {
    w.take(conn)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::DoorRequest { request_id, from, in_call, .. } => Some((request_id, from.user_id, in_call)),
            _ => None,
        })
        .collect()
}

fn open(user: &str) -> ClientMsg {
    ClientMsg::OpenDoor { req: 60, user_id: user.into() }
}

#[test]
fn open_door_goes_to_that_door_alone_and_its_answer_comes_back() {
    let mut w = house();
    w.door(4, "gate");
    w.outbox.clear();
    w.msg(3, open("door"));
    let reqs = door_requests(&mut w, 1);
    assert_eq!(reqs.iter().map(|r| (r.1.as_str(), r.2)).collect::<Vec<_>>(), vec![("desk", false)]);
    assert!(door_requests(&mut w, 4).is_empty(), "the other door hears nothing");
    assert!(w.take(2).is_empty(), "nor does anyone else");
    w.msg(1, ClientMsg::DoorAnswer { request_id: reqs[0].0, code: ErrorCode::OK, message: String::new() });
    assert!(w.take(3).contains(&ServerMsg::Ok { req: 60 }));
    // A relay fault is the requester's answer.
    w.msg(3, open("door"));
    let id = door_requests(&mut w, 1)[0].0;
    w.msg(4, ClientMsg::DoorAnswer { request_id: id, code: ErrorCode::OK, message: String::new() });
    assert!(w.take(3).is_empty(), "another door cannot answer for it");
    let fault =
        ClientMsg::DoorAnswer { request_id: id, code: ErrorCode::DOOR_RELAY_FAULT, message: "relay: EIO".into() };
    w.msg(1, fault);
    assert!(
        matches!(&w.take(3)[..], [ServerMsg::Error { req: Some(60), code: ErrorCode::DOOR_RELAY_FAULT, message }] if message == "relay: EIO")
    );
    // No answer within the time: told so.
    w.msg(3, open("door"));
    w.take(1);
    w.advance(DOOR_ANSWER_WITHIN);
    let told = w.take(3);
    assert!(
        told.iter().any(|m| matches!(m, ServerMsg::Error { req: Some(60), code: ErrorCode::DOOR_NO_ANSWER, .. })),
        "{told:?}"
    );
    assert_eq!(w.step(3, open("flat")), Err(ErrorCode::DOOR_NOT_A_DOOR));
    assert_eq!(w.step(3, open("nobody")), Err(ErrorCode::DOOR_OFFLINE));
}

#[test]
fn a_door_opens_for_its_call_peer_without_the_door_privilege() {
    let mut w = house();
    assert_eq!(w.step(2, open("door")), Err(ErrorCode::DOOR_FORBIDDEN), "no privilege, no call");
    let id = w.call(1, &["flat"], RingOrder::Together).unwrap();
    assert_eq!(w.step(2, open("door")), Err(ErrorCode::DOOR_FORBIDDEN), "ringing is not answered");
    w.step(2, answer(id)).unwrap();
    w.take(1);
    w.msg(2, open("door"));
    assert_eq!(door_requests(&mut w, 1).iter().map(|r| r.2).collect::<Vec<_>>(), vec![true], "in the call");
    w.step(2, hang_up(id)).unwrap();
    assert_eq!(w.step(2, open("door")), Err(ErrorCode::DOOR_FORBIDDEN), "the call is over");
}

fn admin_door(w: &mut World, id: HttpId, user: &str) {
    let req = HttpMedia::Door { app_id: 1, room_id: ROOM.into(), user_id: user.into(), by: "backend".into() };
    w.reg.handle_http(id, req, w.now);
    w.pump();
}

/// The admin API opens one door without a call: 200 once the station confirms, 409 with
/// its reason, 404 for a user not in the room, 504 (DOOR_NO_ANSWER) for silence, and the
/// webhooks hear each open and refusal.
#[test]
fn the_admin_api_opens_one_door_and_hears_its_answer() {
    let mut w = house();
    w.door(4, "gate");
    w.outbox.clear();
    admin_door(&mut w, 10, "door");
    let reqs = door_requests(&mut w, 1);
    assert_eq!(reqs.iter().map(|r| (r.1.as_str(), r.2)).collect::<Vec<_>>(), vec![("backend", false)]);
    assert!(door_requests(&mut w, 4).is_empty(), "the other door hears nothing");
    assert!(w.http.is_empty(), "no answer before the station's");
    w.msg(1, ClientMsg::DoorAnswer { request_id: reqs[0].0, code: ErrorCode::OK, message: String::new() });
    assert_eq!(w.http.pop(), Some((10, Ok(HttpAnswer::DoorOpened))));

    admin_door(&mut w, 11, "door");
    let id = door_requests(&mut w, 1)[0].0;
    w.msg(1, ClientMsg::DoorAnswer { request_id: id, code: ErrorCode::DOOR_RELAY_FAULT, message: "relay: EIO".into() });
    let (_, r) = w.http.pop().unwrap();
    let r = r.unwrap_err();
    assert_eq!(
        (r.kind, r.code, r.message.as_str()),
        (RefusalKind::Conflict, ErrorCode::DOOR_RELAY_FAULT, "relay: EIO")
    );

    admin_door(&mut w, 12, "nobody");
    let (_, r) = w.http.pop().unwrap();
    assert_eq!(r.unwrap_err().kind, RefusalKind::NotFound);
    admin_door(&mut w, 13, "flat");
    assert_eq!(w.http.pop().unwrap().1.unwrap_err().code, ErrorCode::DOOR_NOT_A_DOOR);

    admin_door(&mut w, 14, "door");
    w.take(1);
    w.advance(DOOR_ANSWER_WITHIN);
    let (id, r) = w.http.pop().unwrap();
    let r = r.unwrap_err();
    assert_eq!((id, r.kind, r.code), (14, RefusalKind::Timeout, ErrorCode::DOOR_NO_ANSWER));
    let doors: Vec<String> = w
        .hooks
        .iter()
        .filter_map(|h| match &h.event {
            crate::server::webhooks::HookEvent::DoorOpened { door, by } => Some(format!("opened {door} {by}")),
            crate::server::webhooks::HookEvent::DoorRefused { door, reason, .. } => {
                Some(format!("refused {door} {}", reason.name()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        doors,
        [
            "opened door backend",
            "refused door DOOR_RELAY_FAULT",
            "refused flat DOOR_NOT_A_DOOR",
            "refused door DOOR_NO_ANSWER"
        ],
        "a user not in the room is no door event"
    );
    w.reg.check_invariants().unwrap();
}
