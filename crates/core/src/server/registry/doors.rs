//! Door requests waiting for the door station's answer. An `open_door` names one station;
//! the server checks the requester's right, forwards a `door_request` to that station alone
//! and answers the requester with what the station says, or DOOR_NO_ANSWER when it says
//! nothing within [`DOOR_ANSWER_WITHIN`] (a request is never queued for later: a door that
//! opens a minute after it was asked is worse than one that does not open).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::HttpId;

/// How long a door station has to answer.
pub const DOOR_ANSWER_WITHIN: Duration = Duration::from_secs(4);

/// The most door requests waiting at once per server; more are refused as rate-limited.
const MAX_WAITING: usize = 1024;

/// Who waits for a door's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Requester {
    /// A member: its session and request number.
    Session { sid: String, req: u64 },
    /// The admin API: the HTTP request to answer.
    Admin(HttpId),
}

/// A door request: who asks, and which station's door.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Request {
    pub(super) requester: Requester,
    pub(super) by: String,
    pub(super) app_id: u32,
    pub(super) room_id: String,
    pub(super) door: String,
    pub(super) door_user: String,
}

/// See the module docs.
#[derive(Debug, Default)]
pub(super) struct Doors {
    waiting: BTreeMap<u64, (Request, Instant)>,
    next_id: u64,
}

impl Doors {
    /// A new request; its ID, or none when too many wait.
    pub(super) fn open(&mut self, now: Instant, r: Request) -> Option<u64> {
        if self.waiting.len() >= MAX_WAITING {
            return None;
        }
        self.next_id += 1;
        self.waiting.insert(self.next_id, (r, now + DOOR_ANSWER_WITHIN));
        Some(self.next_id)
    }

    /// The door `door` answered request `id`: the request, if it was that door's.
    pub(super) fn answered(&mut self, door: &str, id: u64) -> Option<Request> {
        if self.waiting.get(&id).is_some_and(|(r, _)| r.door == door) {
            self.waiting.remove(&id).map(|(r, _)| r)
        } else {
            None
        }
    }

    /// Requests whose door did not answer in time.
    pub(super) fn expired(&mut self, now: Instant) -> Vec<Request> {
        let due: Vec<u64> = self.waiting.iter().filter(|(_, (_, until))| *until <= now).map(|(&id, _)| id).collect();
        due.into_iter().filter_map(|id| self.waiting.remove(&id)).map(|(r, _)| r).collect()
    }

    /// A session ended: its requests go (as requester, nobody waits; as door, they are
    /// answered DOOR_OFFLINE by the caller of this).
    pub(super) fn session_gone(&mut self, sid: &str) -> Vec<Request> {
        self.waiting.retain(|_, (r, _)| !matches!(&r.requester, Requester::Session { sid: s, .. } if s == sid));
        let gone: Vec<u64> = self.waiting.iter().filter(|(_, (r, _))| r.door == sid).map(|(&id, _)| id).collect();
        gone.into_iter().filter_map(|id| self.waiting.remove(&id)).map(|(r, _)| r).collect()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(from: &str, req: u64, door: &str) -> Request {
        Request {
            requester: Requester::Session { sid: from.into(), req },
            by: from.into(),
            app_id: 1,
            room_id: "r".into(),
            door: door.into(),
            door_user: format!("{door}-1"),
        }
    }

    fn number(w: &Request) -> u64 {
        match w.requester {
            Requester::Session { req, .. } => req,
            Requester::Admin(id) => 1000 + id,
        }
    }

    #[test]
    fn a_request_is_answered_once_by_its_door_or_expires() {
        let t = Instant::now();
        let mut d = Doors::default();
        let a = d.open(t, req("desk", 1, "door")).unwrap();
        d.open(t, req("desk", 2, "door")).unwrap();
        assert!(d.answered("other", a).is_none(), "only the door asked may answer");
        assert_eq!(d.answered("door", a).map(|w| number(&w)), Some(1));
        assert!(d.answered("door", a).is_none(), "answered once");
        assert!(d.expired(t + Duration::from_secs(1)).is_empty());
        assert_eq!(d.expired(t + DOOR_ANSWER_WITHIN).iter().map(number).collect::<Vec<_>>(), vec![2]);
        d.open(t, req("desk", 3, "door"));
        d.open(t, req("door", 4, "gate"));
        d.open(t, Request { requester: Requester::Admin(7), ..req("", 0, "door") });
        assert_eq!(d.session_gone("door").iter().map(number).collect::<Vec<_>>(), vec![3, 1007]);
        assert_eq!(d.len(), 0, "the gone session's own request is dropped too");
    }
}
