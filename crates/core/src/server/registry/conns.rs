//! Connections: one per WebSocket, each with its message budget, its source address and the
//! session it speaks for (none until it logs in or resumes). Refused logins are budgeted per
//! source address here too, because that budget belongs to where a connection comes from,
//! not to any session.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::ConnId;
use crate::server::config::Limits;
use crate::server::limits::Bucket;

/// Refused logins (bad, expired or foreign tokens) one source address may make per second,
/// and in a burst; then 1002005. A device with a good token never draws on it.
const REFUSED_PER_IP_PER_SEC: f64 = 2.0;
const REFUSED_PER_IP_BURST: f64 = 20.0;
/// Source addresses remembered for that at most (then refilled ones are forgotten).
pub(super) const REFUSED_TABLE_MAX: usize = 10_000;

struct Conn {
    session: Option<String>,
    bucket: Bucket,
    /// Connected at; a connection without a session after the handshake deadline is closed.
    since: Instant,
    /// The source address, when the transport knows it.
    peer: Option<IpAddr>,
}

/// The connections of one server. See the module docs.
pub(super) struct Conns {
    map: HashMap<ConnId, Conn>,
    refused_by_ip: HashMap<IpAddr, Bucket>,
    messages_per_sec: f64,
    message_burst: f64,
    handshake: Duration,
}

impl Conns {
    pub(super) fn new(limits: &Limits) -> Self {
        let mut c = Conns {
            map: HashMap::new(),
            refused_by_ip: HashMap::new(),
            messages_per_sec: 0.0,
            message_burst: 0.0,
            handshake: Duration::ZERO,
        };
        c.configure(limits);
        c
    }

    /// New limits apply to connections opened from now on (and the handshake deadline to all).
    pub(super) fn configure(&mut self, limits: &Limits) {
        self.messages_per_sec = limits.messages_per_sec;
        self.message_burst = limits.message_burst;
        self.handshake = Duration::from_secs(limits.handshake_secs);
    }

    pub(super) fn open(&mut self, conn: ConnId, peer: Option<IpAddr>, now: Instant) {
        let bucket = Bucket::new(self.messages_per_sec, self.message_burst, now);
        self.map.insert(conn, Conn { session: None, bucket, since: now, peer });
    }

    /// Forgets a connection; the session it spoke for, if any.
    pub(super) fn close(&mut self, conn: ConnId) -> Option<Option<String>> {
        self.map.remove(&conn).map(|c| c.session)
    }

    /// Takes one message from the connection's budget: `None` for an unknown connection,
    /// `Some(false)` when the budget is spent.
    pub(super) fn take_message(&mut self, conn: ConnId, now: Instant) -> Option<bool> {
        self.map.get_mut(&conn).map(|c| c.bucket.take(now))
    }

    /// The session a connection speaks for.
    pub(super) fn session(&self, conn: ConnId) -> Option<&str> {
        self.map.get(&conn)?.session.as_deref()
    }

    /// The connection's source address, when known.
    pub(super) fn peer(&self, conn: ConnId) -> Option<IpAddr> {
        self.map.get(&conn)?.peer
    }

    /// From now on `conn` speaks for `session` (after a login or resume).
    pub(super) fn bind(&mut self, conn: ConnId, session: &str) {
        if let Some(c) = self.map.get_mut(&conn) {
            c.session = Some(session.to_string());
        }
    }

    /// `conn` no longer speaks for a session (it was kicked, logged out or replaced).
    pub(super) fn unbind(&mut self, conn: ConnId) {
        if let Some(c) = self.map.get_mut(&conn) {
            c.session = None;
        }
    }

    /// Takes one refused login from `peer`'s budget; false once it is spent. The table is
    /// bounded: when it is full, buckets that have refilled are forgotten.
    pub(super) fn refused_from(&mut self, peer: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = peer else { return true };
        if self.refused_by_ip.len() >= REFUSED_TABLE_MAX {
            self.refused_by_ip.retain(|_, b| !b.is_full(now));
        }
        self.refused_by_ip
            .entry(ip)
            .or_insert_with(|| Bucket::new(REFUSED_PER_IP_PER_SEC, REFUSED_PER_IP_BURST, now))
            .take(now)
    }

    /// Removes and returns the connections that have not logged in within the handshake
    /// deadline.
    pub(super) fn take_silent(&mut self, now: Instant) -> Vec<ConnId> {
        let handshake = self.handshake;
        let silent: Vec<ConnId> = self
            .map
            .iter()
            .filter(|(_, c)| c.session.is_none() && now.saturating_duration_since(c.since) >= handshake)
            .map(|(id, _)| *id)
            .collect();
        for id in &silent {
            self.map.remove(id);
        }
        silent
    }

    /// Every open connection.
    pub(super) fn ids(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.map.keys().copied()
    }

    /// Source addresses with a refused-login budget remembered.
    #[cfg(test)]
    pub(super) fn refused_table_len(&self) -> usize {
        self.refused_by_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        let mut l: Limits = toml::from_str("").unwrap();
        l.messages_per_sec = 1.0;
        l.message_burst = 2.0;
        l.handshake_secs = 5;
        l
    }

    #[test]
    fn a_connection_that_never_logs_in_is_closed_after_the_handshake_deadline() {
        let t0 = Instant::now();
        let mut c = Conns::new(&limits());
        c.open(1, None, t0);
        c.open(2, None, t0);
        c.bind(2, "s");
        assert!(c.take_silent(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(c.take_silent(t0 + Duration::from_secs(5)), vec![1], "only the one without a session");
        assert_eq!(c.session(2), Some("s"));
        c.unbind(2);
        assert_eq!(c.take_silent(t0 + Duration::from_secs(5)), vec![2], "unbound: counts as silent again");
    }

    #[test]
    fn each_connection_has_its_own_message_budget() {
        let t0 = Instant::now();
        let mut c = Conns::new(&limits());
        c.open(1, None, t0);
        c.open(2, None, t0);
        assert_eq!(
            (c.take_message(1, t0), c.take_message(1, t0), c.take_message(1, t0)),
            (Some(true), Some(true), Some(false))
        );
        assert_eq!(c.take_message(2, t0), Some(true), "another connection's budget is whole");
        assert_eq!(c.take_message(1, t0 + Duration::from_secs(1)), Some(true), "refilled");
        assert_eq!(c.take_message(9, t0), None, "unknown");
        assert_eq!(c.close(1), Some(None));
        assert_eq!(c.close(1), None);
    }

    #[test]
    fn refused_logins_are_budgeted_per_address_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut c = Conns::new(&limits());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let spent = (0..30).filter(|_| !c.refused_from(Some(a), t0)).count();
        assert_eq!(spent, 10, "a burst of 20, then refused");
        assert!(c.refused_from(Some("192.0.2.2".parse().unwrap()), t0), "another address has its own");
        assert!(c.refused_from(None, t0), "an unknown address is not budgeted here");
        for i in 0..REFUSED_TABLE_MAX as u32 {
            c.refused_from(Some(IpAddr::from(i.to_be_bytes())), t0);
        }
        // An hour on, every bucket has refilled: the next new address finds room.
        c.refused_from(Some("198.51.100.1".parse().unwrap()), t0 + Duration::from_secs(3600));
        assert!(c.refused_table_len() <= 2, "refilled buckets forgotten: {}", c.refused_table_len());
    }
}
