//! Messages within a room: the snapshot a session gets on login and resume, extra info,
//! broadcasts, and the periodic network-quality push.

use super::*;

/// Privileges a broadcast reports about its sender (see `ServerMsg::BroadcastMessage`).
const DEVICE_PRIVILEGES: [crate::auth::Privilege; 1] = [crate::auth::Privilege::Door];

impl Registry {
    pub(super) fn set_extra_info(&mut self, conn: ConnId, req: u64, sid: &str, key: String, value: String, now: Now) {
        if key.is_empty() || key.len() >= EXTRA_KEY_MAX || value.len() > EXTRA_VALUE_MAX {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::EXTRA_INFO_TOO_LARGE,
                "key must be 1..127 bytes, value <= 1024 bytes",
            );
        }
        let Some(s) = self.sessions.get(sid) else {
            return self.internal(conn, Some(req), "room extra info: no session behind the connection");
        };
        let (app_id, room_id, user) = (s.app_id, s.room_id.clone(), s.user.clone());
        let max_keys = self.limits.max_extra_info_keys;
        let info = ExtraInfo { key, value, update_user: user, update_time_ms: now.unix_ms };
        match self.rooms.set_extra_info(app_id, &room_id, info.clone(), max_keys) {
            Err(()) => return self.internal(conn, Some(req), "room extra info: the session's room vanished"),
            Ok(false) => {
                return self.fail(
                    conn,
                    Some(req),
                    ErrorCode::EXTRA_INFO_TOO_LARGE,
                    "too many extra info keys in this room",
                );
            }
            Ok(true) => {}
        }
        self.send(conn, ServerMsg::Ok { req });
        for other in self.room_others(sid) {
            self.send_session(&other, ServerMsg::ExtraInfoUpdate { room_id: room_id.clone(), info: info.clone() });
        }
    }

    pub(super) fn broadcast(&mut self, conn: ConnId, req: u64, sid: &str, message: String, now: Now) {
        if message.is_empty() || message.len() > BROADCAST_MAX {
            return self.fail(conn, Some(req), ErrorCode::BROADCAST_TOO_LARGE, "broadcast must be 1..=1024 bytes");
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return self.internal(conn, Some(req), "broadcast: no session behind the connection");
        };
        if !s.broadcasts.take(now.at) {
            return self.fail(conn, Some(req), ErrorCode::BROADCAST_RATE_LIMITED, "broadcast messages sent too fast");
        }
        let (room_id, from) = (s.room_id.clone(), s.user.clone());
        let from_privileges: Vec<String> =
            DEVICE_PRIVILEGES.iter().filter(|p| s.claims.has(**p)).map(|p| p.as_str().to_string()).collect();
        let message_id = self.next_message_id;
        self.next_message_id += 1;
        self.send(conn, ServerMsg::BroadcastOk { req, message_id });
        for other in self.room_others(sid) {
            let msg = ServerMsg::BroadcastMessage {
                room_id: room_id.clone(),
                message_id,
                from: from.clone(),
                message: message.clone(),
                send_time_ms: now.unix_ms,
                from_privileges: from_privileges.clone(),
            };
            self.send_session(&other, msg);
        }
    }

    pub(super) fn push_network_quality(&mut self, now: Now) {
        let stale = Duration::from_millis(self.heartbeat_ms * 3);
        let mut sends = Vec::new();
        for (_, room_id, members) in self.rooms.iter() {
            if members.len() < 2 {
                continue;
            }
            let all: Vec<UserQuality> = members
                .iter()
                .filter_map(|sid| self.sessions.get(sid))
                .map(|s| {
                    let [quality, upstream, downstream] = if now.at.saturating_duration_since(s.last_seen) > stale {
                        [QualityLevel::Die; 3]
                    } else {
                        s.quality
                    };
                    UserQuality { user_id: s.user.user_id.clone(), quality, upstream, downstream }
                })
                .collect();
            for s in members.iter().filter_map(|sid| self.sessions.get(sid)) {
                let Some(conn) = s.conn else { continue };
                let users = all.iter().filter(|q| q.user_id != s.user.user_id).cloned().collect();
                sends.push((conn, ServerMsg::NetworkQuality { room_id: room_id.to_string(), users }));
            }
        }
        for (conn, msg) in sends {
            self.send(conn, msg);
        }
    }

    /// What a session sees of its room on login and resume: the others' streams, their
    /// users (when it asked to be told of users) and the room's extra info.
    pub(super) fn snapshot(&self, sid: &str) -> RoomSnapshot {
        let Some(s) = self.sessions.get(sid) else {
            return RoomSnapshot::default();
        };
        let mut snap = RoomSnapshot { room_id: s.room_id.clone(), ..Default::default() };
        for o in self.rooms.others(s.app_id, &s.room_id, sid).iter().filter_map(|o| self.sessions.get(o)) {
            if s.notify {
                snap.users.push(o.user.clone());
            }
            snap.streams.extend(o.streams());
        }
        snap.extra_info = self.rooms.extra_info(s.app_id, &s.room_id);
        snap.call = self.calls.snapshot_for(sid).map(Box::new);
        snap.last_call = s.last_call.clone().map(Box::new);
        snap
    }
}
