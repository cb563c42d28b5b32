//! What the admin API, metrics and shutdown see of the registry: room and user views,
//! gauges, kicking a user, telling everyone the server is going away.

use super::*;

/// A room as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoomView {
    /// The room.
    pub room_id: String,
    /// Users with their connection state.
    pub users: Vec<UserView>,
    /// Published streams.
    pub streams: Vec<StreamInfo>,
}

/// A user as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserView {
    /// The user.
    pub user_id: String,
    /// Display name.
    pub user_name: String,
    /// Whether its connection is up (false during the grace period).
    pub connected: bool,
    /// Last reported network quality.
    pub quality: QualityLevel,
}

impl Registry {
    /// Whether nothing is connected or kept (for tests and shutdown).
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Connections currently open.
    pub fn connections(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.conns.ids()
    }

    // ---------------------------------------------------------------- admin

    /// The app's key bytes, when the app exists.
    pub fn app_key(&self, app_id: u32) -> Option<&[u8]> {
        self.apps.key(app_id)
    }

    /// Room IDs with user and stream counts; `None` if the app is unknown.
    pub fn list_rooms(&self, app_id: u32) -> Option<Vec<(String, usize, usize)>> {
        if !self.apps.contains(app_id) {
            return None;
        }
        let rooms = self.rooms.of_app(app_id).map(|(id, members)| {
            let streams = members.iter().filter_map(|s| self.sessions.get(s)).map(|s| s.published.len()).sum();
            (id.to_string(), members.len(), streams)
        });
        Some(rooms.collect())
    }

    /// One room's users and streams.
    pub fn room_view(&self, app_id: u32, room_id: &str) -> Option<RoomView> {
        if !self.apps.contains(app_id) || !self.rooms.exists(app_id, room_id) {
            return None;
        }
        let mut users = Vec::new();
        let mut streams = Vec::new();
        for s in self.rooms.members(app_id, room_id).iter().filter_map(|sid| self.sessions.get(sid)) {
            users.push(UserView {
                user_id: s.user.user_id.clone(),
                user_name: s.user.user_name.clone(),
                connected: s.conn.is_some(),
                quality: s.quality[0],
            });
            streams.extend(s.streams());
        }
        Some(RoomView { room_id: room_id.to_string(), users, streams })
    }

    /// Kicks a user out of a room (admin API). Returns false if there is no such user there.
    pub fn kick(&mut self, app_id: u32, room_id: &str, user_id: &str, now: Now) -> bool {
        let Some(sid) = self.store.user(app_id, user_id).map(str::to_string) else {
            return false;
        };
        if self.sessions.get(&sid).is_none_or(|s| s.room_id != room_id) {
            return false;
        }
        self.kick_session(&sid, ErrorCode::KICKED_BY_ADMIN, "kicked out by an administrator", now);
        true
    }

    /// Gauges for `/metrics`: (rooms, sessions connected, sessions detached, streams).
    pub fn gauges(&self) -> (usize, usize, usize, usize) {
        let rooms = self.rooms.len();
        let connected = self.sessions.iter().filter(|(_, s)| s.conn.is_some()).count();
        let streams = self.store.stream_count();
        (rooms, connected, self.sessions.len() - connected, streams)
    }

    /// Tells every connection the server is going away and closes it.
    pub fn shutdown(&mut self) {
        let conns: Vec<ConnId> = self.conns.ids().collect();
        for c in conns {
            self.send(c, ServerMsg::error(None, ErrorCode::SERVER_SHUTTING_DOWN, "server shutting down"));
            self.out.push_back(Output::Close(c));
        }
    }
}
