//! Rooms and their membership: which sessions are in each room of each app, and the room's
//! extra info. A room exists while it has a member: the last one leaving removes it.

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::ExtraInfo;

#[derive(Default)]
struct Room {
    sessions: BTreeSet<String>,
    extra_info: BTreeMap<String, ExtraInfo>,
}

/// The rooms of every app, by (app, room). See the module docs.
#[derive(Default)]
pub(super) struct Rooms {
    map: BTreeMap<(u32, String), Room>,
}

fn key(app: u32, room: &str) -> (u32, String) {
    (app, room.to_string())
}

impl Rooms {
    /// Members of a room (0 for a room that does not exist).
    pub(super) fn occupants(&self, app: u32, room: &str) -> usize {
        self.map.get(&key(app, room)).map_or(0, |r| r.sessions.len())
    }

    /// `sid` joins the room (made if new); the members it joins.
    pub(super) fn join(&mut self, app: u32, room: &str, sid: &str) -> Vec<String> {
        let r = self.map.entry(key(app, room)).or_default();
        let others = r.sessions.iter().cloned().collect();
        r.sessions.insert(sid.to_string());
        others
    }

    /// `sid` leaves the room: the members left, and whether the room went with it.
    pub(super) fn leave(&mut self, app: u32, room: &str, sid: &str) -> (Vec<String>, bool) {
        let k = key(app, room);
        let Some(r) = self.map.get_mut(&k) else { return (Vec::new(), false) };
        r.sessions.remove(sid);
        let others: Vec<String> = r.sessions.iter().cloned().collect();
        let removed = others.is_empty();
        if removed {
            self.map.remove(&k);
        }
        (others, removed)
    }

    /// Whether the room exists.
    pub(super) fn exists(&self, app: u32, room: &str) -> bool {
        self.map.contains_key(&key(app, room))
    }

    /// The members of a room.
    pub(super) fn members(&self, app: u32, room: &str) -> Vec<String> {
        self.map.get(&key(app, room)).map(|r| r.sessions.iter().cloned().collect()).unwrap_or_default()
    }

    /// The members of a room other than `sid`.
    pub(super) fn others(&self, app: u32, room: &str, sid: &str) -> Vec<String> {
        self.map
            .get(&key(app, room))
            .map(|r| r.sessions.iter().filter(|o| o.as_str() != sid).cloned().collect())
            .unwrap_or_default()
    }

    #[cfg(test)]
    /// Whether `sid` is a member of the room.
    pub(super) fn is_member(&self, app: u32, room: &str, sid: &str) -> bool {
        self.map.get(&key(app, room)).is_some_and(|r| r.sessions.contains(sid))
    }

    /// Sets one extra info key: `Err(())` when the room is gone; `Ok(false)` when it would
    /// exceed `max_keys`.
    pub(super) fn set_extra_info(
        &mut self,
        app: u32,
        room: &str,
        info: ExtraInfo,
        max_keys: usize,
    ) -> Result<bool, ()> {
        let r = self.map.get_mut(&key(app, room)).ok_or(())?;
        if !r.extra_info.contains_key(&info.key) && r.extra_info.len() >= max_keys {
            return Ok(false);
        }
        r.extra_info.insert(info.key.clone(), info);
        Ok(true)
    }

    /// The room's extra info, by key.
    pub(super) fn extra_info(&self, app: u32, room: &str) -> Vec<ExtraInfo> {
        self.map.get(&key(app, room)).map(|r| r.extra_info.values().cloned().collect()).unwrap_or_default()
    }

    /// The rooms of `app` with their members.
    pub(super) fn of_app(&self, app: u32) -> impl Iterator<Item = (&str, &BTreeSet<String>)> {
        self.map
            .range(key(app, "")..)
            .take_while(move |((a, _), _)| *a == app)
            .map(|((_, id), r)| (id.as_str(), &r.sessions))
    }

    /// Every room: (app, room, members).
    pub(super) fn iter(&self) -> impl Iterator<Item = (u32, &str, &BTreeSet<String>)> {
        self.map.iter().map(|((a, id), r)| (*a, id.as_str(), &r.sessions))
    }

    /// Rooms, all apps.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserInfo;

    fn info(k: &str) -> ExtraInfo {
        let user = UserInfo::new("u".into(), "u".into());
        ExtraInfo { key: k.into(), value: "v".into(), update_user: user, update_time_ms: 0 }
    }

    #[test]
    fn a_room_lives_while_it_has_members_and_apps_do_not_share_rooms() {
        let mut r = Rooms::default();
        assert_eq!(r.join(1, "lobby", "a"), Vec::<String>::new());
        assert_eq!(r.join(1, "lobby", "b"), vec!["a".to_string()]);
        assert_eq!(r.join(2, "lobby", "c"), Vec::<String>::new(), "another app's lobby");
        assert_eq!((r.occupants(1, "lobby"), r.occupants(2, "lobby"), r.len()), (2, 1, 2));
        assert_eq!(r.others(1, "lobby", "a"), vec!["b".to_string()]);
        assert!(r.is_member(1, "lobby", "b") && !r.is_member(2, "lobby", "b"));
        assert_eq!(r.of_app(1).map(|(id, m)| (id, m.len())).collect::<Vec<_>>(), vec![("lobby", 2)]);
        assert_eq!(r.leave(1, "lobby", "a"), (vec!["b".to_string()], false));
        assert_eq!(r.leave(1, "lobby", "b"), (vec![], true), "the last member takes the room");
        assert!(!r.exists(1, "lobby") && r.exists(2, "lobby"));
        assert_eq!(r.leave(1, "lobby", "b"), (vec![], false), "leaving a room that is gone is a no-op");
    }

    #[test]
    fn extra_info_is_limited_in_keys_and_goes_with_the_room() {
        let mut r = Rooms::default();
        r.join(1, "lobby", "a");
        assert_eq!(r.set_extra_info(1, "lobby", info("k1"), 2), Ok(true));
        assert_eq!(r.set_extra_info(1, "lobby", info("k2"), 2), Ok(true));
        assert_eq!(r.set_extra_info(1, "lobby", info("k3"), 2), Ok(false), "a third key");
        assert_eq!(r.set_extra_info(1, "lobby", info("k1"), 2), Ok(true), "an existing key may change");
        assert_eq!(r.set_extra_info(1, "hall", info("k1"), 2), Err(()), "no such room");
        assert_eq!(r.extra_info(1, "lobby").len(), 2);
        r.leave(1, "lobby", "a");
        r.join(1, "lobby", "a");
        assert!(r.extra_info(1, "lobby").is_empty(), "a new room starts empty");
    }
}
