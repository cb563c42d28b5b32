//! Messages within a room: extra info, broadcasts, and the periodic network-quality push.

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
        let Some(room) = self.apps.get_mut(&app_id).and_then(|a| a.rooms.get_mut(&room_id)) else {
            return self.internal(conn, Some(req), "room extra info: the session's room vanished");
        };
        if !room.extra_info.contains_key(&key) && room.extra_info.len() >= max_keys {
            return self.fail(
                conn,
                Some(req),
                ErrorCode::EXTRA_INFO_TOO_LARGE,
                "too many extra info keys in this room",
            );
        }
        let info = ExtraInfo { key: key.clone(), value, update_user: user, update_time_ms: now.unix_ms };
        room.extra_info.insert(key, info.clone());
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
        for app in self.apps.values() {
            for (room_id, room) in &app.rooms {
                if room.sessions.len() < 2 {
                    continue;
                }
                let all: Vec<UserQuality> = room
                    .sessions
                    .iter()
                    .filter_map(|sid| self.sessions.get(sid))
                    .map(|s| UserQuality {
                        user_id: s.user.user_id.clone(),
                        quality: if now.at.saturating_duration_since(s.last_seen) > stale {
                            QualityLevel::Die
                        } else {
                            s.quality
                        },
                    })
                    .collect();
                for sid in &room.sessions {
                    let Some(s) = self.sessions.get(sid) else {
                        continue;
                    };
                    let Some(conn) = s.conn else { continue };
                    let users = all.iter().filter(|q| q.user_id != s.user.user_id).cloned().collect();
                    sends.push((conn, ServerMsg::NetworkQuality { room_id: room_id.clone(), users }));
                }
            }
        }
        for (conn, msg) in sends {
            self.send(conn, msg);
        }
    }
}
