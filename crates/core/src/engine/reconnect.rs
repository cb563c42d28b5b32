//! The one back-off policy: exponential growth to a cap, with full jitter for reconnects
//! (many devices coming back at once must not arrive together) or without it where one
//! client retries one thing (a media relink, the daemon's re-login, a token renewal), as
//! small pure functions.

use std::time::Duration;

/// How the engine retries after a network fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Upper bound of the first delay.
    pub initial: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
    /// Give up (ReconnectFailed) after this long; `None` = never (the device daemon).
    pub give_up_after: Option<Duration>,
    /// Upper bound of any delay during the first [`ReconnectPolicy::early_window`] of an
    /// outage: most cuts (a Wi-Fi roam, an LTE handover, a DSL resync) end within a minute,
    /// and the next attempt should not be far away when the network returns.
    pub early_max: Duration,
    /// How long an outage counts as young (see `early_max`).
    pub early_window: Duration,
}

impl Default for ReconnectPolicy {
    /// The library default: 0.5 s doubling up to 10 s, but at most 1.5 s during the first
    /// minute of an outage; giving up after 20 minutes.
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            give_up_after: Some(Duration::from_secs(20 * 60)),
            early_max: Duration::from_millis(1500),
            early_window: Duration::from_secs(60),
        }
    }
}

impl ReconnectPolicy {
    /// A policy of `initial` doubling to `max` that never gives up and has no early cap
    /// (for [`ReconnectPolicy::ceiling`] and [`ReconnectPolicy::delay`]).
    pub const fn doubling(initial: Duration, max: Duration) -> Self {
        ReconnectPolicy { initial, max, give_up_after: None, early_max: max, early_window: Duration::ZERO }
    }

    /// Never gives up (what a device wants).
    pub fn forever() -> Self {
        ReconnectPolicy { give_up_after: None, ..Default::default() }
    }

    /// The delay before retry number `attempt` (0-based): uniform in
    /// `[0, min(max, initial * 2^attempt)]`, `unit` being a uniform sample in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        self.cap(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay before retry number `attempt` (0-based) without jitter:
    /// `min(max, initial * 2^attempt)`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        self.cap(attempt)
    }

    fn cap(&self, attempt: u32) -> Duration {
        self.initial.saturating_mul(1u32 << attempt.min(20)).min(self.max)
    }

    /// Like [`ReconnectPolicy::delay`], capped at `early_max` while the outage (time since
    /// the connection was lost) is younger than `early_window`.
    pub fn delay_in_outage(&self, attempt: u32, unit: f64, outage: Duration) -> Duration {
        let mut cap = self.cap(attempt);
        if outage < self.early_window {
            cap = cap.min(self.early_max);
        }
        cap.mul_f64(unit.clamp(0.0, 1.0))
    }

    /// Whether retrying for `elapsed` is past the limit.
    pub fn exhausted(&self, elapsed: Duration) -> bool {
        self.give_up_after.is_some_and(|limit| elapsed >= limit)
    }
}

/// A small deterministic generator (xorshift64*), so the session core needs no global RNG
/// and tests can seed it.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// Seeded; a zero seed is replaced.
    pub fn new(seed: u64) -> Self {
        Jitter(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_capped_with_jitter() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(0, 1.0), Duration::from_millis(500));
        assert_eq!(p.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(p.delay(30, 1.0), Duration::from_secs(10));
        assert_eq!(p.delay(5, 0.0), Duration::ZERO);
        let mut j = Jitter::new(7);
        let samples: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(samples.iter().all(|u| (0.0..1.0).contains(u)));
        let mean = samples.iter().sum::<f64>() / 1000.0;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }

    #[test]
    fn young_outages_retry_soon() {
        let p = ReconnectPolicy::default();
        let young = Duration::from_secs(30);
        assert_eq!(p.delay_in_outage(10, 1.0, young), Duration::from_millis(1500));
        assert_eq!(p.delay_in_outage(0, 1.0, young), Duration::from_millis(500));
        assert_eq!(p.delay_in_outage(10, 0.5, young), Duration::from_millis(750));
        assert_eq!(p.delay_in_outage(10, 1.0, Duration::from_secs(61)), Duration::from_secs(10));
    }

    #[test]
    fn without_jitter_it_doubles_to_the_cap() {
        let p = ReconnectPolicy::doubling(Duration::from_secs(5), Duration::from_secs(60));
        let steps: Vec<u64> = (0..7).map(|a| p.ceiling(a).as_secs()).collect();
        assert_eq!(steps, [5, 10, 20, 40, 60, 60, 60]);
        assert!(!p.exhausted(Duration::from_secs(1 << 30)));
    }

    #[test]
    fn gives_up_only_when_limited() {
        let p = ReconnectPolicy::default();
        assert!(!p.exhausted(Duration::from_secs(1199)));
        assert!(p.exhausted(Duration::from_secs(1200)));
        assert!(!ReconnectPolicy::forever().exhausted(Duration::from_secs(1 << 30)));
    }
}
