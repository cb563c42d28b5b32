//! Calls: who rings whom in a room, who answered, and how each call ended. The server owns
//! a call's state and its ring timer and tells both sides of every step; clients only ask
//! (place, answer, decline, hang up) and follow.
//!
//! A session is in at most one call at a time: as its caller, as a callee it rings, or as the
//! callee that answered. A member already in a call that is rung answers busy
//! (CALL_BUSY): callbox has no call waiting, because an intercom's callee is a person at a
//! door or a desk who can take one call at a time.
//!
//! The part is sans-IO and knows no other part: the registry hands it the parties (session
//! ID and user) and sends what it returns, `(session, message)` pairs, with `send_session`,
//! so a detached session's messages wait in its backlog for its resume.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::proto::{CallPhase, CallSnapshot, ErrorCode, RingOrder, ServerMsg, UserInfo};

/// Messages to sessions: what a step of a call tells whom.
pub(super) type Notes = Vec<(String, ServerMsg)>;

/// One side of a call: a session and the user it logged in as.
#[derive(Debug, Clone)]
pub(super) struct Party {
    pub(super) sid: String,
    pub(super) user: UserInfo,
}

/// A callee as the caller named it: in the room (a party) or not.
#[derive(Debug, Clone)]
pub(super) enum Callee {
    /// In the room.
    Member(Party),
    /// Not in the room: the leg ends at once with CALL_PEER_OFFLINE.
    Absent(UserInfo),
}

#[derive(Debug, Clone, PartialEq)]
enum Leg {
    /// In turn: not rung yet.
    Waiting,
    /// Ringing until then.
    Ringing(Instant),
    /// Took the call.
    Answered,
    /// Done, with why.
    Over(ErrorCode),
}

#[derive(Debug)]
struct CallLeg {
    callee: Callee,
    leg: Leg,
}

impl CallLeg {
    fn user(&self) -> &UserInfo {
        match &self.callee {
            Callee::Member(p) => &p.user,
            Callee::Absent(u) => u,
        }
    }
    fn sid(&self) -> Option<&str> {
        match &self.callee {
            Callee::Member(p) => Some(&p.sid),
            Callee::Absent(_) => None,
        }
    }
}

/// One call.
#[derive(Debug)]
struct Call {
    id: u64,
    app_id: u32,
    room_id: String,
    caller: Party,
    order: RingOrder,
    ring: Duration,
    legs: Vec<CallLeg>,
    /// Why the latest leg ended: the call's reason when no callee is left.
    last: ErrorCode,
}

impl Call {
    fn answered(&self) -> Option<usize> {
        self.legs.iter().position(|l| l.leg == Leg::Answered)
    }
}

/// A call as the invariants see it.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CallView {
    pub(super) room_id: String,
    pub(super) caller: String,
    /// Sessions ringing now, or the one that answered.
    pub(super) active: Vec<String>,
    pub(super) answered: bool,
}

/// Every call of one server. See the module docs.
#[derive(Debug, Default)]
pub(super) struct Calls {
    calls: BTreeMap<u64, Call>,
    /// The call each session is in (caller, ringing or answered callee).
    by_session: HashMap<String, u64>,
    next_id: u64,
    /// What the caller was told, in order, for the webhooks ([`Calls::take_steps`]).
    steps: Vec<CallStep>,
}

/// A step of a call as its caller saw it: one per message to the caller.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct CallStep {
    pub(super) app_id: u32,
    pub(super) room_id: String,
    pub(super) call_id: u64,
    pub(super) caller: String,
    /// The callee of this step (the last one at the end).
    pub(super) peer: String,
    pub(super) phase: CallPhase,
    pub(super) reason: ErrorCode,
}

impl Calls {
    /// The steps since the last call, oldest first.
    pub(super) fn take_steps(&mut self) -> Vec<CallStep> {
        std::mem::take(&mut self.steps)
    }

    /// Whether `sid` is in a call.
    pub(super) fn busy(&self, sid: &str) -> bool {
        self.by_session.contains_key(sid)
    }

    /// The session on the other side of `sid`'s answered call.
    pub(super) fn answered_peer(&self, sid: &str) -> Option<&str> {
        let call = self.calls.get(self.by_session.get(sid)?)?;
        let leg = &call.legs[call.answered()?];
        let callee = leg.sid()?;
        if call.caller.sid == sid {
            Some(callee)
        } else if callee == sid {
            Some(&call.caller.sid)
        } else {
            None
        }
    }

    /// The call `sid` is in, as it stands (for a resume snapshot).
    pub(super) fn snapshot_for(&self, sid: &str) -> Option<CallSnapshot> {
        let &call_id = self.by_session.get(sid)?;
        let call = self.calls.get(&call_id)?;
        let answered = call.answered().map(|i| &call.legs[i]);
        if call.caller.sid == sid {
            let peer = answered.map(|l| l.user().clone());
            return Some(CallSnapshot { call_id, caller: true, answered: answered.is_some(), peer });
        }
        let peer = Some(call.caller.user.clone());
        Some(CallSnapshot { call_id, caller: false, answered: answered.is_some(), peer })
    }

    /// Every call, for the invariants.
    #[cfg(test)]
    pub(super) fn views(&self) -> Vec<CallView> {
        self.calls
            .values()
            .map(|c| CallView {
                room_id: c.room_id.clone(),
                caller: c.caller.sid.clone(),
                active: c
                    .legs
                    .iter()
                    .filter(|l| matches!(l.leg, Leg::Ringing(_) | Leg::Answered))
                    .filter_map(|l| l.sid().map(str::to_string))
                    .collect(),
                answered: c.answered().is_some(),
            })
            .collect()
    }

    /// The call each session is in, for the invariants.
    #[cfg(test)]
    pub(super) fn membership(&self) -> impl Iterator<Item = (&String, &u64)> {
        self.by_session.iter()
    }

    /// Places a call from `caller` to `callees` (not empty, not the caller, not busy-checked
    /// yet): the call's ID and what to tell. The caller must not be in a call.
    pub(super) fn place(
        &mut self,
        now: Instant,
        (app_id, room_id): (u32, String),
        caller: Party,
        callees: Vec<Callee>,
        order: RingOrder,
        ring: Duration,
    ) -> Result<(u64, Notes), ErrorCode> {
        if self.busy(&caller.sid) {
            return Err(ErrorCode::CALL_SELF_BUSY);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.by_session.insert(caller.sid.clone(), id);
        let legs = callees.into_iter().map(|callee| CallLeg { callee, leg: Leg::Waiting }).collect();
        self.calls
            .insert(id, Call { id, app_id, room_id, caller, order, ring, legs, last: ErrorCode::CALL_PEER_OFFLINE });
        let mut notes = Notes::new();
        self.advance(id, now, &mut notes);
        Ok((id, notes))
    }

    /// `sid` answers call `id`, which rings there.
    pub(super) fn answer(&mut self, sid: &str, id: u64) -> Result<Notes, ErrorCode> {
        let i = self.ringing_leg(sid, id)?;
        let mut notes = Notes::new();
        let Some(call) = self.calls.get_mut(&id) else { return Err(ErrorCode::CALL_NOT_FOUND) };
        call.legs[i].leg = Leg::Answered;
        let (caller, callee) = (call.caller.clone(), call.legs[i].user().clone());
        let others: Vec<usize> = (0..call.legs.len())
            .filter(|&j| j != i && matches!(call.legs[j].leg, Leg::Ringing(_) | Leg::Waiting))
            .collect();
        for j in others {
            let was_ringing = matches!(call.legs[j].leg, Leg::Ringing(_));
            call.legs[j].leg = Leg::Over(ErrorCode::CALL_ANSWERED_ELSEWHERE);
            if was_ringing && let Some(other) = call.legs[j].sid().map(str::to_string) {
                self.by_session.remove(&other);
                notes.push((other, update(call, CallPhase::Ended, &caller.user, ErrorCode::CALL_ANSWERED_ELSEWHERE)));
            }
        }
        notes.push((caller.sid.clone(), update(call, CallPhase::Answered, &callee, ErrorCode::OK)));
        self.steps.push(step(call, CallPhase::Answered, &callee, ErrorCode::OK));
        notes.push((sid.to_string(), update(call, CallPhase::Answered, &caller.user, ErrorCode::OK)));
        Ok(notes)
    }

    /// `sid` declines call `id`, which rings there: the next callee (in turn) rings, or the
    /// call ends when none is left.
    pub(super) fn decline(&mut self, now: Instant, sid: &str, id: u64) -> Result<Notes, ErrorCode> {
        let i = self.ringing_leg(sid, id)?;
        let mut notes = Notes::new();
        self.end_leg(id, i, ErrorCode::CALL_DECLINED, &mut notes);
        self.advance(id, now, &mut notes);
        Ok(notes)
    }

    /// `sid` hangs up call `id`: the caller cancels a ringing call; either side of an
    /// answered call hangs up; a ringing callee declines.
    pub(super) fn hang_up(&mut self, now: Instant, sid: &str, id: u64) -> Result<Notes, ErrorCode> {
        let call = self.calls.get(&id).ok_or(ErrorCode::CALL_NOT_FOUND)?;
        if call.caller.sid == sid {
            let reason = if call.answered().is_some() { ErrorCode::CALL_HUNG_UP } else { ErrorCode::CALL_CANCELLED };
            return Ok(self.end(id, reason));
        }
        match call.legs.iter().find(|l| l.sid() == Some(sid)).map(|l| &l.leg) {
            Some(Leg::Answered) => Ok(self.end(id, ErrorCode::CALL_HUNG_UP)),
            Some(Leg::Ringing(_)) => self.decline(now, sid, id),
            _ => Err(ErrorCode::CALL_NOT_FOUND),
        }
    }

    /// Session `sid` ended (`hung_up`: it logged out; otherwise it timed out or was kicked):
    /// its call goes on without it, or ends.
    pub(super) fn session_gone(&mut self, now: Instant, sid: &str, hung_up: bool) -> Notes {
        let Some(&id) = self.by_session.get(sid) else { return Notes::new() };
        let Some(call) = self.calls.get(&id) else {
            self.by_session.remove(sid);
            return Notes::new();
        };
        let reason = if hung_up { ErrorCode::CALL_HUNG_UP } else { ErrorCode::CALL_PEER_OFFLINE };
        let mut notes = if call.caller.sid == sid {
            let reason = if call.answered().is_none() && hung_up { ErrorCode::CALL_CANCELLED } else { reason };
            self.end(id, reason)
        } else {
            match call.legs.iter().position(|l| l.sid() == Some(sid)) {
                Some(i) if call.legs[i].leg == Leg::Answered => self.end(id, reason),
                Some(i) => {
                    let mut notes = Notes::new();
                    self.end_leg(id, i, ErrorCode::CALL_PEER_OFFLINE, &mut notes);
                    self.advance(id, now, &mut notes);
                    notes
                }
                None => Notes::new(),
            }
        };
        // The gone session is not told.
        notes.retain(|(to, _)| to != sid);
        notes
    }

    /// Ring timers.
    pub(super) fn tick(&mut self, now: Instant) -> Notes {
        let mut notes = Notes::new();
        let due: Vec<(u64, usize)> = self
            .calls
            .iter()
            .flat_map(|(&id, c)| {
                c.legs.iter().enumerate().filter_map(move |(i, l)| match l.leg {
                    Leg::Ringing(until) if until <= now => Some((id, i)),
                    _ => None,
                })
            })
            .collect();
        for (id, i) in due {
            self.end_leg(id, i, ErrorCode::CALL_TIMED_OUT, &mut notes);
            self.advance(id, now, &mut notes);
        }
        notes
    }

    // ------------------------------------------------------------ internals

    fn ringing_leg(&self, sid: &str, id: u64) -> Result<usize, ErrorCode> {
        let call = self.calls.get(&id).ok_or(ErrorCode::CALL_NOT_FOUND)?;
        call.legs
            .iter()
            .position(|l| l.sid() == Some(sid) && matches!(l.leg, Leg::Ringing(_)))
            .ok_or(ErrorCode::CALL_NOT_FOUND)
    }

    /// Leg `i` of call `id` is over without an answer: the callee stops ringing, the caller
    /// is told it was not answered.
    fn end_leg(&mut self, id: u64, i: usize, reason: ErrorCode, notes: &mut Notes) {
        let Some(call) = self.calls.get_mut(&id) else { return };
        let was_ringing = matches!(call.legs[i].leg, Leg::Ringing(_));
        call.legs[i].leg = Leg::Over(reason);
        call.last = reason;
        let user = call.legs[i].user().clone();
        if was_ringing && let Some(sid) = call.legs[i].sid().map(str::to_string) {
            self.by_session.remove(&sid);
            notes.push((sid, update(call, CallPhase::Ended, &call.caller.user, reason)));
        }
        notes.push((call.caller.sid.clone(), update(call, CallPhase::NotAnswered, &user, reason)));
        self.steps.push(step(call, CallPhase::NotAnswered, &user, reason));
    }

    /// Rings who should ring now (every waiting callee together, or the next one in turn),
    /// and ends the call when nobody rings and nobody is left.
    fn advance(&mut self, id: u64, now: Instant, notes: &mut Notes) {
        loop {
            let Some(call) = self.calls.get_mut(&id) else { return };
            if call.legs.iter().any(|l| matches!(l.leg, Leg::Ringing(_) | Leg::Answered)) {
                return;
            }
            let next: Vec<usize> = match call.order {
                RingOrder::Together => (0..call.legs.len()).filter(|&i| call.legs[i].leg == Leg::Waiting).collect(),
                RingOrder::InTurn => call.legs.iter().position(|l| l.leg == Leg::Waiting).into_iter().collect(),
            };
            if next.is_empty() {
                let reason = call.last;
                notes.extend(self.end(id, reason));
                return;
            }
            for i in next {
                let sid = call.legs[i].sid().map(str::to_string);
                let user = call.legs[i].user().clone();
                let caller = call.caller.sid.clone();
                match sid {
                    Some(sid) if !self.by_session.contains_key(&sid) => {
                        call.legs[i].leg = Leg::Ringing(now + call.ring);
                        self.by_session.insert(sid.clone(), id);
                        let incoming = ServerMsg::CallIncoming {
                            room_id: call.room_id.clone(),
                            call_id: id,
                            caller: call.caller.user.clone(),
                            ring_secs: call.ring.as_secs() as u32,
                        };
                        notes.push((sid, incoming));
                        notes.push((caller, update(call, CallPhase::Ringing, &user, ErrorCode::OK)));
                        self.steps.push(step(call, CallPhase::Ringing, &user, ErrorCode::OK));
                    }
                    other => {
                        let reason = if other.is_some() { ErrorCode::CALL_BUSY } else { ErrorCode::CALL_PEER_OFFLINE };
                        call.legs[i].leg = Leg::Over(reason);
                        call.last = reason;
                        notes.push((caller, update(call, CallPhase::NotAnswered, &user, reason)));
                        self.steps.push(step(call, CallPhase::NotAnswered, &user, reason));
                    }
                }
            }
        }
    }

    /// Ends call `id`: both sides (the caller, and every callee ringing or in the call) are
    /// told `reason`.
    fn end(&mut self, id: u64, reason: ErrorCode) -> Notes {
        let Some(call) = self.calls.remove(&id) else { return Notes::new() };
        let mut notes = Notes::new();
        self.by_session.remove(&call.caller.sid);
        let mut last_peer = None;
        for l in &call.legs {
            if let Some(sid) = l.sid()
                && matches!(l.leg, Leg::Ringing(_) | Leg::Answered)
            {
                self.by_session.remove(sid);
                notes.push((sid.to_string(), update(&call, CallPhase::Ended, &call.caller.user, reason)));
                last_peer = Some(l.user().clone());
            }
        }
        let peer = last_peer
            .or_else(|| call.legs.last().map(|l| l.user().clone()))
            .unwrap_or_else(|| call.caller.user.clone());
        notes.push((call.caller.sid.clone(), update(&call, CallPhase::Ended, &peer, reason)));
        self.steps.push(step(&call, CallPhase::Ended, &peer, reason));
        tracing::info!(callbox_event = "call_ended", call_id = id, room_id = %call.room_id, caller = %call.caller.user.user_id,
            error_code = reason.0, "call ended: {}", reason.name());
        notes
    }
}

fn step(call: &Call, phase: CallPhase, peer: &UserInfo, reason: ErrorCode) -> CallStep {
    CallStep {
        app_id: call.app_id,
        room_id: call.room_id.clone(),
        call_id: call.id,
        caller: call.caller.user.user_id.clone(),
        peer: peer.user_id.clone(),
        phase,
        reason,
    }
}

fn update(call: &Call, state: CallPhase, peer: &UserInfo, reason: ErrorCode) -> ServerMsg {
    ServerMsg::CallUpdate { room_id: call.room_id.clone(), call_id: call.id, state, peer: peer.clone(), reason }
}
