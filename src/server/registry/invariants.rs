//! The cross-map invariants of the registry, checked by the property test after every step.
//!
//! Sessions, rooms, the per-app user and stream maps and connections point at one another;
//! each arrow must have its way back, or a later lookup fails (answered `SERVER_INTERNAL`
//! now, where it used to panic the hub).

use super::Registry;

impl Registry {
    /// Every cross-map arrow has its way back; the first one that does not, named.
    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        for (sid, s) in &self.sessions {
            let app = self.apps.get(&s.app_id).ok_or(format!("session {sid}: no app {}", s.app_id))?;
            let room = app.rooms.get(&s.room_id).ok_or(format!("session {sid}: no room {}", s.room_id))?;
            if !room.sessions.contains(sid) {
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
            if let Some(c) = s.conn
                && self.conns.get(&c).and_then(|c| c.session.as_ref()) != Some(sid)
            {
                return Err(format!("session {sid}: its connection {c} does not point back"));
            }
        }
        for (app_id, app) in &self.apps {
            for (room_id, room) in &app.rooms {
                if room.sessions.is_empty() {
                    return Err(format!("app {app_id}: room {room_id} is empty but kept"));
                }
                for sid in &room.sessions {
                    let s = self.sessions.get(sid).ok_or(format!("room {room_id}: member {sid} has no session"))?;
                    if s.app_id != *app_id || s.room_id != *room_id {
                        return Err(format!("room {room_id}: member {sid} belongs elsewhere"));
                    }
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
        Ok(())
    }
}
