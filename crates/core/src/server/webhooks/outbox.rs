//! Each app's webhook queue: events in order per room, at least once, retried with the one
//! back-off policy, bounded per app. Sans-IO: events and results in, deliveries and a
//! deadline out.
//!
//! A room's events form a lane: the next one is sent only after the one before was
//! accepted (a 2xx), so a receiver sees them in order. Lanes of different rooms go out side
//! by side (at most [`OutboxConfig::in_flight`] at once per app), and apps are independent:
//! a slow or dead receiver delays only its own app's lanes, never a room, a login or
//! another app. When an app's queue is full the oldest event that is not being sent is
//! dropped (and counted): after a long outage the latest rings matter more than the first.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::event::Hook;
use super::sign;
use crate::engine::reconnect::ReconnectPolicy;

/// How the outbox retries and how much it keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxConfig {
    /// The first retry's delay; it doubles per failure of the same event.
    pub retry: Duration,
    /// The longest delay between two tries.
    pub retry_max: Duration,
    /// Events kept per app (sent and waiting).
    pub queue: usize,
    /// Deliveries under way at once per app (one per room at most).
    pub in_flight: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { retry: Duration::from_secs(1), retry_max: Duration::from_secs(60), queue: 10_000, in_flight: 4 }
    }
}

/// One request to make: POST `body` to `url` with the signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The app.
    pub app_id: u32,
    /// The room (the lane to report the result for).
    pub room_id: String,
    /// The event ID (the body's `id`).
    pub id: String,
    /// The receiver.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// The `Callbox-Signature` value, made for this try.
    pub signature: String,
    /// 0 for the first try.
    pub attempt: u32,
}

/// What became of a pushed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for delivery.
    Queued,
    /// The app has no webhook: nothing to do.
    NoHook,
    /// Queued, and the app's oldest waiting event (this ID) was dropped to make room.
    DroppedOldest(String),
    /// Dropped: the queue is full of events being sent.
    Dropped,
}

/// Counters of one app's deliveries, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppStats {
    /// Events the receiver accepted.
    pub delivered: u64,
    /// Tries that failed (refused, timed out, unreachable); each is retried.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events waiting now (including those being sent).
    pub queued: usize,
}

#[derive(Debug)]
struct Item {
    seq: u64,
    id: String,
    body: String,
}

#[derive(Debug, Default)]
struct Lane {
    items: VecDeque<Item>,
    busy: bool,
    failures: u32,
    retry_at: Option<Instant>,
}

impl Lane {
    /// The oldest item that may be dropped (not the one being sent).
    fn droppable(&self) -> Option<u64> {
        self.items.get(usize::from(self.busy)).map(|i| i.seq)
    }
}

#[derive(Debug)]
struct AppBox {
    url: String,
    secret: Vec<u8>,
    lanes: BTreeMap<String, Lane>,
    in_flight: usize,
    stats: AppStats,
    /// The room served last, so lanes take turns.
    cursor: String,
}

/// See the module docs.
#[derive(Debug)]
pub struct Outbox {
    cfg: OutboxConfig,
    policy: ReconnectPolicy,
    prefix: String,
    seq: u64,
    apps: BTreeMap<u32, AppBox>,
}

impl Outbox {
    /// An outbox whose event IDs start with `prefix` (random per server start, so IDs stay
    /// unique across restarts).
    pub fn new(cfg: OutboxConfig, prefix: impl Into<String>) -> Self {
        let policy = ReconnectPolicy::doubling(cfg.retry, cfg.retry_max.max(cfg.retry));
        Outbox { cfg, policy, prefix: prefix.into(), seq: 0, apps: BTreeMap::new() }
    }

    /// Sets (or changes) the receiver of `app_id`; what waits stays queued for it.
    pub fn set_app(&mut self, app_id: u32, url: String, secret: Vec<u8>) {
        match self.apps.get_mut(&app_id) {
            Some(a) => {
                a.url = url;
                a.secret = secret;
            }
            None => {
                let a = AppBox {
                    url,
                    secret,
                    lanes: BTreeMap::new(),
                    in_flight: 0,
                    stats: AppStats::default(),
                    cursor: String::new(),
                };
                self.apps.insert(app_id, a);
            }
        }
    }

    /// The app has no webhook any more: what waits for it is dropped.
    pub fn remove_app(&mut self, app_id: u32) {
        self.apps.remove(&app_id);
    }

    /// The apps with a webhook.
    pub fn apps(&self) -> impl Iterator<Item = u32> + '_ {
        self.apps.keys().copied()
    }

    /// Queues `hook` (when its app has a webhook).
    pub fn push(&mut self, hook: &Hook) -> Pushed {
        let Some(app) = self.apps.get_mut(&hook.app_id) else { return Pushed::NoHook };
        let mut outcome = Pushed::Queued;
        if app.stats.queued >= self.cfg.queue.max(1) {
            let oldest = app.lanes.iter().filter_map(|(room, l)| l.droppable().map(|s| (s, room.clone()))).min();
            let Some((_, room)) = oldest else {
                app.stats.dropped += 1;
                return Pushed::Dropped;
            };
            let Some(lane) = app.lanes.get_mut(&room) else { return Pushed::Dropped };
            let at = usize::from(lane.busy);
            if let Some(item) = lane.items.remove(at) {
                outcome = Pushed::DroppedOldest(item.id);
                app.stats.dropped += 1;
                app.stats.queued -= 1;
                if at == 0 {
                    // The dropped event was failing: the next starts afresh.
                    lane.failures = 0;
                    lane.retry_at = None;
                }
            }
            if lane.items.is_empty() {
                app.lanes.remove(&room);
            }
        }
        self.seq += 1;
        let id = format!("{}-{}", self.prefix, self.seq);
        let body = hook.body(&id);
        app.lanes.entry(hook.room_id.clone()).or_default().items.push_back(Item { seq: self.seq, id, body });
        app.stats.queued += 1;
        outcome
    }

    /// The next request to make now, if any; `unix_secs` is the signature's timestamp.
    pub fn poll(&mut self, now: Instant, unix_secs: u64) -> Option<Delivery> {
        let max = self.cfg.in_flight.max(1);
        for (&app_id, app) in self.apps.iter_mut() {
            if app.in_flight >= max {
                continue;
            }
            let ready = |l: &Lane| !l.busy && !l.items.is_empty() && l.retry_at.is_none_or(|t| t <= now);
            // Take turns: the first ready lane after the one served last, else from the start.
            let after = app
                .lanes
                .range::<String, _>((std::ops::Bound::Excluded(&app.cursor), std::ops::Bound::Unbounded))
                .find(|(_, l)| ready(l))
                .map(|(r, _)| r.clone());
            let room = after.or_else(|| app.lanes.iter().find(|(_, l)| ready(l)).map(|(r, _)| r.clone()));
            let Some(room) = room else { continue };
            let lane = app.lanes.get_mut(&room)?;
            let item = lane.items.front()?;
            lane.busy = true;
            app.in_flight += 1;
            app.cursor = room.clone();
            return Some(Delivery {
                app_id,
                room_id: room,
                id: item.id.clone(),
                url: app.url.clone(),
                body: item.body.clone(),
                signature: sign::header(&app.secret, unix_secs, &item.body),
                attempt: lane.failures,
            });
        }
        None
    }

    /// The result of a delivery from [`Outbox::poll`]: accepted (`ok`) or to be retried.
    pub fn done(&mut self, d: &Delivery, ok: bool, now: Instant) {
        let Some(app) = self.apps.get_mut(&d.app_id) else { return };
        let Some(lane) = app.lanes.get_mut(&d.room_id) else { return };
        if !lane.busy {
            return;
        }
        lane.busy = false;
        app.in_flight = app.in_flight.saturating_sub(1);
        // The item may have been dropped meanwhile only if it was not being sent, so the
        // head is this delivery's.
        if lane.items.front().is_none_or(|i| i.id != d.id) {
            return;
        }
        if ok {
            lane.items.pop_front();
            lane.failures = 0;
            lane.retry_at = None;
            app.stats.delivered += 1;
            app.stats.queued -= 1;
            if lane.items.is_empty() {
                app.lanes.remove(&d.room_id);
            }
        } else {
            lane.retry_at = Some(now + self.policy.ceiling(lane.failures));
            lane.failures = lane.failures.saturating_add(1);
            app.stats.failed += 1;
        }
    }

    /// When a waiting retry becomes due (deliveries ready now are had from
    /// [`Outbox::poll`]; a result is an input of its own).
    pub fn next_wake(&self) -> Option<Instant> {
        self.apps.values().flat_map(|a| a.lanes.values()).filter(|l| !l.busy).filter_map(|l| l.retry_at).min()
    }

    /// One app's counters.
    pub fn stats(&self, app_id: u32) -> Option<AppStats> {
        self.apps.get(&app_id).map(|a| a.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::super::HookEvent;
    use super::*;
    use crate::proto::ErrorCode;

    fn hook(app_id: u32, room: &str, n: u64) -> Hook {
        Hook {
            app_id,
            room_id: room.into(),
            ts: n,
            event: HookEvent::UserLeft { user_id: format!("u{n}"), reason: ErrorCode::USER_LOGGED_OUT },
        }
    }

    fn cfg(queue: usize, in_flight: usize) -> OutboxConfig {
        OutboxConfig { retry: Duration::from_secs(1), retry_max: Duration::from_secs(8), queue, in_flight }
    }

    fn user(d: &Delivery) -> String {
        serde_json::from_str::<serde_json::Value>(&d.body).unwrap()["user_id"].as_str().unwrap().to_string()
    }

    #[test]
    fn a_room_s_events_go_in_order_and_a_failure_is_retried_with_back_off() {
        let t = Instant::now();
        let mut o = Outbox::new(cfg(100, 4), "x");
        o.set_app(1, "https://hooks.example/in".into(), b"secret".to_vec());
        assert_eq!(o.push(&hook(2, "r", 0)), Pushed::NoHook);
        for n in 1..=3 {
            assert_eq!(o.push(&hook(1, "r", n)), Pushed::Queued);
        }
        let d = o.poll(t, 100).unwrap();
        assert_eq!((user(&d), d.attempt, d.id.as_str()), ("u1".into(), 0, "x-1"));
        assert_eq!(sign::verify(b"secret", &d.signature, &d.body, 100, 0), Ok(()));
        assert_eq!(o.poll(t, 100), None, "the room's next event waits for this one");
        o.done(&d, false, t);
        assert_eq!(o.poll(t, 100), None, "a failed event waits for its retry");
        assert_eq!(o.next_wake(), Some(t + Duration::from_secs(1)));
        let d = o.poll(t + Duration::from_secs(1), 101).unwrap();
        assert_eq!((user(&d), d.attempt, d.id.as_str()), ("u1".into(), 1, "x-1"), "the same ID on a retry");
        o.done(&d, false, t + Duration::from_secs(1));
        assert_eq!(o.next_wake(), Some(t + Duration::from_secs(3)), "the delay doubles");
        for _ in 0..6 {
            let at = o.next_wake().unwrap();
            let d = o.poll(at, 0).unwrap();
            o.done(&d, false, at);
        }
        let at = o.next_wake().unwrap();
        let d = o.poll(at, 0).unwrap();
        assert_eq!(d.attempt, 8);
        o.done(&d, true, at);
        assert!(at - t < Duration::from_secs(1 + 2 + 4 + 8 * 5 + 1), "capped at retry_max");
        let got: Vec<String> = std::iter::from_fn(|| {
            let d = o.poll(at, 0)?;
            o.done(&d, true, at);
            Some(user(&d))
        })
        .collect();
        assert_eq!(got, ["u2", "u3"]);
        let s = o.stats(1).unwrap();
        assert_eq!((s.delivered, s.failed, s.dropped, s.queued), (3, 8, 0, 0));
        assert_eq!(o.next_wake(), None);
    }

    #[test]
    fn rooms_go_side_by_side_up_to_the_limit_and_apps_do_not_wait_for_each_other() {
        let t = Instant::now();
        let mut o = Outbox::new(cfg(100, 2), "x");
        o.set_app(1, "https://slow.example/".into(), b"a".to_vec());
        o.set_app(2, "https://fast.example/".into(), b"b".to_vec());
        for room in ["a", "b", "c"] {
            o.push(&hook(1, room, 1));
        }
        o.push(&hook(2, "z", 1));
        let first: Vec<(u32, String)> = std::iter::from_fn(|| o.poll(t, 0)).map(|d| (d.app_id, d.room_id)).collect();
        assert_eq!(
            first,
            [(1, "a".into()), (1, "b".into()), (2, "z".into())],
            "two at once per app, the other app too"
        );
    }

    #[test]
    fn a_full_queue_drops_the_oldest_event_not_being_sent() {
        let t = Instant::now();
        let mut o = Outbox::new(cfg(3, 4), "x");
        o.set_app(1, "http://h/".into(), b"s".to_vec());
        for n in 1..=3 {
            o.push(&hook(1, "r", n));
        }
        let sending = o.poll(t, 0).unwrap();
        assert_eq!(o.push(&hook(1, "q", 4)), Pushed::DroppedOldest("x-2".into()), "x-1 is being sent");
        o.done(&sending, true, t);
        let rest: Vec<String> = std::iter::from_fn(|| {
            let d = o.poll(t, 0)?;
            o.done(&d, true, t);
            Some(user(&d))
        })
        .collect();
        assert_eq!(rest.len(), 2);
        assert!(rest.contains(&"u3".to_string()) && rest.contains(&"u4".to_string()));
        assert_eq!(o.stats(1).unwrap().dropped, 1);
        // One event, being sent, in a queue of one: a new one cannot push it out.
        let mut o = Outbox::new(cfg(1, 4), "y");
        o.set_app(1, "http://h/".into(), b"s".to_vec());
        o.push(&hook(1, "r", 1));
        let _busy = o.poll(t, 0).unwrap();
        assert_eq!(o.push(&hook(1, "r", 2)), Pushed::Dropped);
    }
}
