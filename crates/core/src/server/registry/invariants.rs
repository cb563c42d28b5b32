//! The cross-part invariants of the registry, checked by the property test after every step.
//!
//! Sessions, rooms, the shared store's user and stream names, connections and WHIP/WHEP
//! resources point at one another; each arrow must have its way back, or a later lookup
//! fails (answered `SERVER_INTERNAL` now, where it used to panic the hub).

use super::Registry;
use crate::proto::MediaRole;

impl Registry {
    /// Every cross-part arrow has its way back; the first one that does not, named.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (sid, s) in self.sessions.iter() {
            if !self.apps.contains(s.app_id) {
                return Err(format!("session {sid}: no app {}", s.app_id));
            }
            if !self.rooms.is_member(s.app_id, &s.room_id, sid) {
                return Err(format!("session {sid} is not a member of its room {}", s.room_id));
            }
            if self.store.user(s.app_id, &s.user.user_id) != Some(sid.as_str()) {
                return Err(format!("session {sid}: user {} maps elsewhere", s.user.user_id));
            }
            for stream in s.published.keys() {
                if self.store.stream(s.app_id, stream) != Some(sid.as_str()) {
                    return Err(format!("session {sid}: stream {stream} maps elsewhere"));
                }
            }
            if s.pinned && !self.resources.publishes_for(sid, "") {
                return Err(format!("session {sid}: admitted for WHIP but publishes nothing"));
            }
            if let Some(c) = s.conn
                && self.conns.session(c) != Some(sid.as_str())
            {
                return Err(format!("session {sid}: its connection {c} does not point back"));
            }
        }
        for (app_id, room_id, members) in self.rooms.iter() {
            if members.is_empty() {
                return Err(format!("app {app_id}: room {room_id} is empty but kept"));
            }
            for sid in members {
                let s = self.sessions.get(sid).ok_or(format!("room {room_id}: member {sid} has no session"))?;
                if s.app_id != app_id || s.room_id != room_id {
                    return Err(format!("room {room_id}: member {sid} belongs elsewhere"));
                }
            }
        }
        let (users, streams) = self.store.held();
        for (app_id, user, sid) in users {
            let s = self.sessions.get(&sid).ok_or(format!("user {user}: no session {sid}"))?;
            if s.user.user_id != user || s.app_id != app_id {
                return Err(format!("user {user}: session {sid} is someone else's"));
            }
        }
        for (app_id, stream, sid) in streams {
            let s = self.sessions.get(&sid).ok_or(format!("stream {stream}: no session {sid}"))?;
            if !s.published.contains_key(&stream) || s.app_id != app_id {
                return Err(format!("stream {stream}: session {sid} does not publish it"));
            }
        }
        for (id, r) in self.resources.iter() {
            let publisher =
                self.store.stream(r.stream.app_id, &r.stream.stream_id).and_then(|sid| self.sessions.get(sid));
            if publisher.is_none_or(|s| s.room_id != r.stream.room_id) {
                return Err(format!("resource {id}: its stream {} is not published in its room", r.stream.stream_id));
            }
            match (&r.session, r.role) {
                (Some(sid), MediaRole::Publish) => {
                    let s = self.sessions.get(sid).ok_or(format!("WHIP {id}: no session {sid}"))?;
                    if !s.published.contains_key(&r.stream.stream_id) {
                        return Err(format!("WHIP {id}: session {sid} does not publish it"));
                    }
                }
                (None, MediaRole::Play) => {}
                _ => {
                    return Err(format!(
                        "resource {id}: a session where its role has none, or none where it needs one"
                    ));
                }
            }
        }
        for call in self.calls.views() {
            for sid in std::iter::once(&call.caller).chain(&call.active) {
                let s = self.sessions.get(sid).ok_or(format!("call in {}: no session {sid}", call.room_id))?;
                if s.room_id != call.room_id {
                    return Err(format!("call in {}: member {sid} is in room {}", call.room_id, s.room_id));
                }
                if !self.calls.busy(sid) {
                    return Err(format!("call in {}: member {sid} is not marked busy", call.room_id));
                }
            }
            if call.answered && call.active.len() != 1 {
                return Err(format!("answered call in {} has {} callees", call.room_id, call.active.len()));
            }
            if call.active.is_empty() {
                return Err(format!("call in {} rings nobody and is kept", call.room_id));
            }
        }
        let members: usize = self.calls.views().iter().map(|c| 1 + c.active.len()).sum();
        if members != self.calls.membership().count() {
            return Err(format!("{members} call members but {} sessions marked busy", self.calls.membership().count()));
        }
        Ok(())
    }
}
