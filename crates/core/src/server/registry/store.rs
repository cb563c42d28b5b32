//! The seam where a cluster's shared state goes: which session holds each app-wide unique
//! name (a user ID, a stream ID). On one node it is memory ([`MemoryStore`], the default and
//! the only implementation today); the cluster's Redis store goes behind the same trait,
//! with room placement and device keys, while connections, rate limits, sessions, rooms and
//! media stay node-local in the registry.
//!
//! The trait is synchronous because the registry is sans-IO and answers within one turn: a
//! shared store must keep that shape (claims as outputs, their results as inputs, with the
//! local answer provisional) rather than block the hub.

use std::collections::HashMap;

/// Names held: (app, name, the session holding it).
pub type Held = Vec<(u32, String, String)>;

/// App-wide unique names and the session holding each.
pub trait SharedStore: Send {
    /// The session holding user ID `user` in `app`.
    fn user(&self, app: u32, user: &str) -> Option<&str>;
    /// `session` holds `user` from now on (the caller has kicked any previous holder).
    fn claim_user(&mut self, app: u32, user: &str, session: &str);
    /// `session` lets `user` go; a no-op when another session holds it now.
    fn release_user(&mut self, app: u32, user: &str, session: &str);
    /// The session publishing stream ID `stream` in `app`.
    fn stream(&self, app: u32, stream: &str) -> Option<&str>;
    /// `session` publishes `stream`; false (and nothing changes) when another session does.
    fn claim_stream(&mut self, app: u32, stream: &str, session: &str) -> bool;
    /// `session` stops publishing `stream`; a no-op when another session publishes it.
    fn release_stream(&mut self, app: u32, stream: &str, session: &str);
    /// Streams published, all apps.
    fn stream_count(&self) -> usize;
    /// Every (app, user, session) and (app, stream, session) held, for the invariant checks.
    fn held(&self) -> (Held, Held);
}

/// [`SharedStore`] in this process's memory: one node.
#[derive(Debug, Default)]
pub struct MemoryStore {
    users: HashMap<(u32, String), String>,
    streams: HashMap<(u32, String), String>,
}

impl SharedStore for MemoryStore {
    fn user(&self, app: u32, user: &str) -> Option<&str> {
        self.users.get(&(app, user.to_string())).map(String::as_str)
    }

    fn claim_user(&mut self, app: u32, user: &str, session: &str) {
        self.users.insert((app, user.to_string()), session.to_string());
    }

    fn release_user(&mut self, app: u32, user: &str, session: &str) {
        let key = (app, user.to_string());
        if self.users.get(&key).is_some_and(|s| s == session) {
            self.users.remove(&key);
        }
    }

    fn stream(&self, app: u32, stream: &str) -> Option<&str> {
        self.streams.get(&(app, stream.to_string())).map(String::as_str)
    }

    fn claim_stream(&mut self, app: u32, stream: &str, session: &str) -> bool {
        let key = (app, stream.to_string());
        match self.streams.get(&key) {
            Some(s) if s != session => false,
            _ => {
                self.streams.insert(key, session.to_string());
                true
            }
        }
    }

    fn release_stream(&mut self, app: u32, stream: &str, session: &str) {
        let key = (app, stream.to_string());
        if self.streams.get(&key).is_some_and(|s| s == session) {
            self.streams.remove(&key);
        }
    }

    fn stream_count(&self) -> usize {
        self.streams.len()
    }

    fn held(&self) -> (Held, Held) {
        let list =
            |m: &HashMap<(u32, String), String>| m.iter().map(|((a, n), s)| (*a, n.clone(), s.clone())).collect();
        (list(&self.users), list(&self.streams))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_app_and_released_only_by_their_holder() {
        let mut s = MemoryStore::default();
        s.claim_user(1, "door", "a");
        assert_eq!(s.user(1, "door"), Some("a"));
        assert_eq!(s.user(2, "door"), None, "per app");
        s.claim_user(1, "door", "b"); // a second login took it over
        s.release_user(1, "door", "a");
        assert_eq!(s.user(1, "door"), Some("b"), "the old session's release leaves the new one");
        assert!(s.claim_stream(1, "cam", "a"));
        assert!(!s.claim_stream(1, "cam", "b"), "held by another");
        assert!(s.claim_stream(2, "cam", "b"), "another app");
        s.release_stream(1, "cam", "b");
        assert_eq!(s.stream(1, "cam"), Some("a"));
        s.release_stream(1, "cam", "a");
        assert_eq!((s.stream(1, "cam"), s.stream_count()), (None, 1));
    }
}
