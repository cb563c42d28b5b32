//! Calls and door requests across the parts: who may be rung (members of the caller's room,
//! by user ID or by capability), who may open which door, and the messages each step sends.
//! The call state itself is [`super::calls::Calls`]; the waiting door requests are
//! [`super::doors::Doors`].

use std::time::Duration;

use super::calls::{Callee, Notes, Party};
use super::doors::{Request, Requester};
use super::*;
use crate::proto::{Capability, RingOrder};
use crate::server::config::RING_SECS;
use crate::server::webhooks::HookEvent;

/// The most callees one call may name.
pub const MAX_CALLEES: usize = 16;

/// What a callee or caller does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Answer,
    Decline,
    HangUp,
}

impl Registry {
    fn party(&self, sid: &str) -> Option<Party> {
        self.sessions.get(sid).map(|s| Party { sid: sid.to_string(), user: s.user.clone() })
    }

    /// `call`: rings `callees` (or every other member that can answer) in the caller's room.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn call(
        &mut self,
        conn: ConnId,
        req: u64,
        sid: &str,
        callees: Vec<String>,
        order: RingOrder,
        ring_secs: Option<u32>,
        now: Now,
    ) {
        let ring = ring_secs.unwrap_or(self.ring_secs);
        if !RING_SECS.contains(&ring) || callees.len() > MAX_CALLEES {
            return self.fail(conn, Some(req), ErrorCode::CALL_INVALID, "at most 16 callees and a ring of 5..=120 s");
        }
        let Some(caller) = self.party(sid) else { return self.internal(conn, Some(req), "call: the session vanished") };
        let (app_id, room_id) = match self.sessions.get(sid) {
            Some(s) => (s.app_id, s.room_id.clone()),
            None => return self.internal(conn, Some(req), "call: the session vanished"),
        };
        let mut named: Vec<String> = Vec::new();
        for c in callees {
            if ids::check_user_id(&c).is_err() || c == caller.user.user_id {
                return self.fail(conn, Some(req), ErrorCode::CALL_INVALID, format!("cannot call {c:?}"));
            }
            if !named.contains(&c) {
                named.push(c);
            }
        }
        let callees: Vec<Callee> = if named.is_empty() {
            self.rooms
                .others(app_id, &room_id, sid)
                .into_iter()
                .filter(|o| self.sessions.get(o).is_some_and(|s| !s.pinned && s.user.can(Capability::Answer)))
                .filter_map(|o| self.party(&o))
                .map(Callee::Member)
                .collect()
        } else {
            named
                .into_iter()
                .map(|user_id| {
                    let member = self
                        .store
                        .user(app_id, &user_id)
                        .and_then(|o| self.sessions.get(o).map(|s| (o, s)))
                        .filter(|(_, s)| s.room_id == room_id && !s.pinned)
                        .map(|(o, _)| o.to_string());
                    match member.and_then(|o| self.party(&o)) {
                        Some(p) => Callee::Member(p),
                        None => Callee::Absent(UserInfo::new(user_id, String::new())),
                    }
                })
                .collect()
        };
        if callees.is_empty() {
            return self.fail(conn, Some(req), ErrorCode::CALL_NO_CALLEE, "nobody in the room can answer a call");
        }
        let who: Vec<String> = callees
            .iter()
            .map(|c| match c {
                Callee::Member(p) => p.user.user_id.clone(),
                Callee::Absent(u) => u.user_id.clone(),
            })
            .collect();
        let ring = Duration::from_secs(u64::from(ring));
        match self.calls.place(now.at, (app_id, room_id.clone()), caller, callees, order, ring) {
            Ok((call_id, notes)) => {
                self.metrics.calls += 1;
                tracing::info!(callbox_event = "call_placed", call_id, room_id = %room_id, user_id = %self.user_of(sid),
                    callees = %who.join(","), ?order, ring_secs = ring.as_secs(), "call placed");
                self.send(conn, ServerMsg::CallOk { req, call_id });
                self.send_notes(notes);
            }
            Err(code) => self.fail(conn, Some(req), code, "already in a call; hang up first"),
        }
    }

    /// `call_answer`, `call_decline`, `call_hangup`.
    pub(super) fn call_step(&mut self, conn: ConnId, req: u64, sid: &str, call_id: u64, step: Step, now: Now) {
        let result = match step {
            Step::Answer => self.calls.answer(sid, call_id),
            Step::Decline => self.calls.decline(now.at, sid, call_id),
            Step::HangUp => self.calls.hang_up(now.at, sid, call_id),
        };
        match result {
            Ok(notes) => {
                tracing::info!(callbox_event = "call_step", call_id, user_id = %self.user_of(sid), ?step, "call {step:?}");
                self.send(conn, ServerMsg::Ok { req });
                self.send_notes(notes);
            }
            Err(code) => self.fail(conn, Some(req), code, "no such call rings or runs here"),
        }
    }

    /// `open_door`: checks the right and forwards the request to that door station alone.
    pub(super) fn open_door(&mut self, conn: ConnId, req: u64, sid: &str, user_id: String, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return self.internal(conn, Some(req), "door: the session vanished");
        };
        let (app_id, room_id, from) = (s.app_id, s.room_id.clone(), s.user.clone());
        let privileged = s.claims.privileges.iter().any(|p| p == "door");
        let in_call = self.calls.answered_peer(sid).is_some_and(|peer| self.store.user(app_id, &user_id) == Some(peer));
        let request = Request {
            requester: Requester::Session { sid: sid.to_string(), req },
            by: from.user_id.clone(),
            app_id,
            room_id,
            door: String::new(),
            door_user: user_id,
        };
        if !privileged && !in_call {
            tracing::info!(callbox_event = "door_refused", room_id = %request.room_id, user_id = %from.user_id, door = %request.door_user,
                error_code = ErrorCode::DOOR_FORBIDDEN.0, "door request refused: no door privilege and no call with the door");
            let why = "opening a door needs the door privilege or an answered call with it";
            return self.door_result(&request, Err((ErrorCode::DOOR_FORBIDDEN, why.into())));
        }
        self.forward_door(request, from, in_call, now);
    }

    /// `POST /api/v1/apps/{app}/rooms/{room}/users/{user}/door` (already authorized): the
    /// building's own backend opens one door station's door, with or without a call.
    pub(super) fn admin_open_door(
        &mut self,
        id: HttpId,
        app_id: u32,
        room_id: String,
        user_id: String,
        by: String,
        now: Now,
    ) {
        let in_room =
            self.store.user(app_id, &user_id).and_then(|d| self.sessions.get(d)).is_some_and(|s| s.room_id == room_id);
        if !in_room {
            let r = Refusal::new(
                RefusalKind::NotFound,
                ErrorCode::ADMIN_NOT_FOUND,
                format!("{user_id} is not in the room"),
            );
            return self.out.push_back(Output::Http(id, Err(r)));
        }
        let request = Request {
            requester: Requester::Admin(id),
            by: by.clone(),
            app_id,
            room_id,
            door: String::new(),
            door_user: user_id,
        };
        self.forward_door(request, UserInfo::new(by.clone(), by), false, now);
    }

    /// Forwards a checked request to its door station (or answers why it cannot be).
    fn forward_door(&mut self, mut request: Request, from: UserInfo, in_call: bool, now: Now) {
        let (app_id, user_id) = (request.app_id, request.door_user.clone());
        let door = self
            .store
            .user(app_id, &user_id)
            .map(str::to_string)
            .filter(|d| self.sessions.get(d).is_some_and(|s| s.room_id == request.room_id));
        let Some(door) = door else {
            return self.door_result(&request, Err((ErrorCode::DOOR_OFFLINE, format!("{user_id} is not in the room"))));
        };
        let Some(d) = self.sessions.get(&door) else {
            return self.door_result(&request, Err((ErrorCode::SERVER_INTERNAL, "door: the door vanished".into())));
        };
        if !d.user.can(Capability::Door) {
            return self
                .door_result(&request, Err((ErrorCode::DOOR_NOT_A_DOOR, format!("{user_id} has no door relay"))));
        }
        let Some(door_conn) = d.conn else {
            return self.door_result(&request, Err((ErrorCode::DOOR_OFFLINE, format!("{user_id} is not connected"))));
        };
        request.door = door;
        let room_id = request.room_id.clone();
        let Some(request_id) = self.doors.open(now.at, request.clone()) else {
            return self.door_result(&request, Err((ErrorCode::RATE_LIMITED, "too many door requests waiting".into())));
        };
        self.metrics.door_requests += 1;
        tracing::info!(callbox_event = "door_request", room_id = %room_id, user_id = %from.user_id, door = %user_id, request_id, in_call,
            "door request forwarded");
        self.send(door_conn, ServerMsg::DoorRequest { room_id, request_id, from, in_call });
    }

    /// Tells the requester how its door request ended (and the webhooks).
    fn door_result(&mut self, r: &Request, result: Result<(), (ErrorCode, String)>) {
        let event = match &result {
            Ok(()) => HookEvent::DoorOpened { door: r.door_user.clone(), by: r.by.clone() },
            Err((code, _)) => HookEvent::DoorRefused { door: r.door_user.clone(), by: r.by.clone(), reason: *code },
        };
        self.hook(r.app_id, &r.room_id, event);
        match &r.requester {
            Requester::Session { sid, req } => {
                let msg = match result {
                    Ok(()) => ServerMsg::Ok { req: *req },
                    Err((code, message)) => {
                        self.metrics.error(code);
                        ServerMsg::error(Some(*req), code, message)
                    }
                };
                self.send_session(&sid.clone(), msg);
            }
            Requester::Admin(id) => {
                let answer = result.map(|()| HttpAnswer::DoorOpened).map_err(|(code, message)| {
                    let kind = match code {
                        ErrorCode::DOOR_NO_ANSWER | ErrorCode::DOOR_OFFLINE => RefusalKind::Timeout,
                        ErrorCode::RATE_LIMITED => RefusalKind::RateLimited,
                        ErrorCode::SERVER_INTERNAL => RefusalKind::Internal,
                        _ => RefusalKind::Conflict,
                    };
                    Refusal::new(kind, code, message)
                });
                self.out.push_back(Output::Http(*id, answer));
            }
        }
    }

    /// `door_answer` from a door station.
    pub(super) fn door_answer(&mut self, sid: &str, request_id: u64, code: ErrorCode, message: String) {
        let Some(w) = self.doors.answered(sid, request_id) else {
            tracing::debug!(request_id, "door answer for no waiting request (late or not ours); ignored");
            return;
        };
        tracing::info!(callbox_event = "door_answer", door = %w.door_user, request_id, error_code = code.0,
            "door answered: {}", if code == ErrorCode::OK { "opened" } else { code.name() });
        let result = if code == ErrorCode::OK {
            Ok(())
        } else {
            let code = if ErrorCode::ALL.iter().any(|(c, n, _)| *c == code && n.starts_with("DOOR_")) {
                code
            } else {
                ErrorCode::DOOR_REFUSED
            };
            let message = if message.is_empty() { code.name().to_string() } else { truncate(message, 256) };
            Err((code, message))
        };
        self.door_result(&w, result);
    }

    /// Ring timers and door requests that got no answer.
    pub(super) fn tick_calls(&mut self, now: Now) {
        let notes = self.calls.tick(now.at);
        self.send_notes(notes);
        for w in self.doors.expired(now.at) {
            tracing::warn!(callbox_event = "door_no_answer", door = %w.door_user, error_code = ErrorCode::DOOR_NO_ANSWER.0,
                "the door station did not answer the door request in time");
            let why = format!("{} did not answer", w.door_user);
            self.door_result(&w, Err((ErrorCode::DOOR_NO_ANSWER, why)));
        }
    }

    /// A session is ending with `reason`: its call goes on without it or ends, and door
    /// requests waiting for it are answered DOOR_OFFLINE.
    pub(super) fn calls_session_gone(&mut self, sid: &str, reason: ErrorCode) {
        let notes = self.calls.session_gone(self.clock, sid, reason == ErrorCode::USER_LOGGED_OUT);
        self.send_notes(notes);
        for w in self.doors.session_gone(sid) {
            let why = format!("{} left", w.door_user);
            self.door_result(&w, Err((ErrorCode::DOOR_OFFLINE, why)));
        }
    }

    /// Sends what a call step tells; an end is also kept in the session for its resume
    /// snapshot. Call messages are not kept for a detached session: its resume snapshot
    /// says where its call stands, including what was sent on a connection that died
    /// before it arrived.
    fn send_notes(&mut self, notes: Notes) {
        self.hook_call_steps();
        for (to, msg) in notes {
            if let ServerMsg::CallUpdate { call_id, state: crate::proto::CallPhase::Ended, peer, reason, .. } = &msg
                && let Some(s) = self.sessions.get_mut(&to)
            {
                s.last_call = Some(crate::proto::EndedCall { call_id: *call_id, peer: peer.clone(), reason: *reason });
            }
            self.send_session(&to, msg);
        }
    }

    fn user_of(&self, sid: &str) -> String {
        self.sessions.get(sid).map(|s| s.user.user_id.clone()).unwrap_or_default()
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}
