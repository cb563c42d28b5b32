//! WHIP and WHEP resources: each POST that was accepted is a resource with its own ID (the
//! last part of its `Location`), named to the media relay as `whip-<id>` or `whep-<id>`. A
//! resource ends by DELETE, by its stream ending, or by its media going away for
//! [`REAP_AFTER`] (the relay is probed; see [`Resources::due_probes`]). Offers are budgeted
//! per app, because each costs a DTLS certificate and a relay connection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::proto::MediaRole;
use crate::rtc::sfu::StreamKey;
use crate::server::config::Limits;
use crate::server::limits::Bucket;

/// A resource whose media connection is gone for this long is ended.
pub const REAP_AFTER: Duration = Duration::from_secs(15);
/// Resources old enough are probed this often.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// One accepted WHIP publish or WHEP play.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Resource {
    pub(super) role: MediaRole,
    /// The stream published or played.
    pub(super) stream: StreamKey,
    /// WHIP: the session publishing the stream.
    pub(super) session: Option<String>,
    pub(super) since: Instant,
}

/// The media relay's session name of a resource.
pub fn media_session(role: MediaRole, resource: &str) -> String {
    match role {
        MediaRole::Publish => format!("whip-{resource}"),
        MediaRole::Play => format!("whep-{resource}"),
    }
}

/// The resource a media session name belongs to, if it is one.
pub(super) fn resource_of(media_session: &str) -> Option<(MediaRole, &str)> {
    if let Some(id) = media_session.strip_prefix("whip-") {
        Some((MediaRole::Publish, id))
    } else {
        media_session.strip_prefix("whep-").map(|id| (MediaRole::Play, id))
    }
}

/// The WHIP and WHEP resources of one server. See the module docs.
pub(super) struct Resources {
    map: HashMap<String, Resource>,
    budgets: HashMap<u32, Bucket>,
    rate: f64,
    burst: f64,
    next_probe: Option<Instant>,
}

impl Resources {
    pub(super) fn new(limits: &Limits) -> Self {
        Resources {
            map: HashMap::new(),
            budgets: HashMap::new(),
            rate: limits.whip_per_sec,
            burst: limits.whip_burst,
            next_probe: None,
        }
    }

    /// New budgets apply to apps from their next offer on.
    pub(super) fn configure(&mut self, limits: &Limits) {
        if (self.rate, self.burst) != (limits.whip_per_sec, limits.whip_burst) {
            self.rate = limits.whip_per_sec;
            self.burst = limits.whip_burst;
            self.budgets.clear();
        }
    }

    /// Takes one offer from `app_id`'s budget; false when it is spent.
    pub(super) fn take_offer(&mut self, app_id: u32, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.burst);
        self.budgets.entry(app_id).or_insert_with(|| Bucket::new(rate, burst, now)).take(now)
    }

    pub(super) fn insert(&mut self, id: String, r: Resource) {
        self.map.insert(id, r);
    }

    pub(super) fn get(&self, id: &str) -> Option<&Resource> {
        self.map.get(id)
    }

    /// Ends a resource of `role`: what it was, or `None` if there is no such one.
    pub(super) fn remove(&mut self, role: MediaRole, id: &str) -> Option<Resource> {
        if self.map.get(id).is_some_and(|r| r.role == role) { self.map.remove(id) } else { None }
    }

    /// Whether a resource other than `except` publishes for session `sid`.
    pub(super) fn publishes_for(&self, sid: &str, except: &str) -> bool {
        self.map.iter().any(|(id, r)| id != except && r.session.as_deref() == Some(sid))
    }

    /// Forgets the WHIP resources of a session that is gone.
    pub(super) fn forget_session(&mut self, sid: &str) {
        self.map.retain(|_, r| r.session.as_deref() != Some(sid));
    }

    /// Forgets the resources of a stream that ended (the relay closed their media): its
    /// WHEP players, and its WHIP publisher when a signalling session unpublished it.
    pub(super) fn forget_stream(&mut self, stream: &StreamKey) {
        self.map.retain(|_, r| &r.stream != stream);
    }

    /// The media sessions to ask the relay about now: resources older than [`REAP_AFTER`],
    /// at most every [`PROBE_EVERY`].
    pub(super) fn due_probes(&mut self, now: Instant) -> Vec<String> {
        if self.next_probe.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.next_probe = Some(now + PROBE_EVERY);
        let mut due: Vec<String> = self
            .map
            .iter()
            .filter(|(_, r)| now.saturating_duration_since(r.since) >= REAP_AFTER)
            .map(|(id, r)| media_session(r.role, id))
            .collect();
        due.sort();
        due
    }

    #[cfg(test)]
    /// Every resource.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&String, &Resource)> {
        self.map.iter()
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(stream: &str) -> StreamKey {
        StreamKey { app_id: 1, room_id: "lobby".into(), stream_id: stream.into() }
    }

    fn limits() -> Limits {
        let mut l: Limits = toml::from_str("").unwrap();
        l.whip_per_sec = 1.0;
        l.whip_burst = 2.0;
        l
    }

    #[test]
    fn resources_end_by_role_session_and_stream() {
        let now = Instant::now();
        let mut r = Resources::new(&limits());
        let whip = Resource { role: MediaRole::Publish, stream: key("cam"), session: Some("s".into()), since: now };
        let whep = Resource { role: MediaRole::Play, stream: key("cam"), session: None, since: now };
        r.insert("a".into(), whip.clone());
        r.insert("b".into(), whep.clone());
        r.insert("c".into(), Resource { stream: key("other"), ..whep.clone() });
        assert_eq!(r.remove(MediaRole::Play, "a"), None, "a WHEP DELETE cannot end a WHIP resource");
        r.forget_session("s");
        assert!(r.get("a").is_none() && r.get("b").is_some());
        r.insert("a".into(), whip.clone());
        r.forget_stream(&key("cam"));
        assert!(r.get("a").is_none() && r.get("b").is_none() && r.get("c").is_some());
        assert_eq!(r.remove(MediaRole::Play, "c"), Some(Resource { stream: key("other"), ..whep }));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn old_resources_are_probed_every_two_seconds_and_offers_are_budgeted_per_app() {
        let t0 = Instant::now();
        let mut r = Resources::new(&limits());
        r.insert("a".into(), Resource { role: MediaRole::Play, stream: key("cam"), session: None, since: t0 });
        let at = |s| t0 + Duration::from_secs(s);
        assert!(r.due_probes(at(14)).is_empty(), "too young");
        assert!(r.due_probes(at(15)).is_empty(), "old enough, but the last probe was a second ago");
        assert_eq!(r.due_probes(at(16)), vec!["whep-a".to_string()]);
        assert!(r.due_probes(at(17)).is_empty());
        assert_eq!(r.due_probes(at(18)).len(), 1);
        assert_eq!(resource_of("whep-a"), Some((MediaRole::Play, "a")));
        assert_eq!(resource_of("0123abcd"), None, "a signalling session");
        assert!(r.take_offer(1, t0) && r.take_offer(1, t0) && !r.take_offer(1, t0));
        assert!(r.take_offer(2, t0), "another app's budget");
        assert!(r.take_offer(1, t0 + Duration::from_secs(1)), "refilled");
    }
}
