//! The play pipeline's video jitter buffer wait, adapted to what the player measures.
//!
//! In-order packets leave the jitter buffer at once; its wait (GStreamer's `latency`) is
//! only how long a missing packet is waited for before the frame goes on without it, and how
//! long the very first packet is held before anything plays (measured: GStreamer's
//! rtpjitterbuffer holds its input behind a serialized query until the first packet has
//! waited out the whole wait, so a fixed 150 ms wait put 150 ms on every first frame).
//! So the wait starts at [`JitterWait::START`], settles at [`JitterWait::FLOOR`] or a
//! multiple of the measured jitter, and grows to the ceiling (room for a retransmission, see
//! [`crate::rtc::repair::PLAY_WAIT_REPAIR`]) the moment packets are lost or arrive after
//! their wait; after [`JitterWait::CALM`] without either it comes back down.

use std::time::{Duration, Instant};

/// What the jitter buffer counted since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    /// Packets it let through.
    pub pushed: u64,
    /// Packets given up on (their wait passed).
    pub lost: u64,
    /// Packets that arrived after their wait had passed.
    pub late: u64,
    /// The interarrival jitter it measures.
    pub jitter: Duration,
}

/// See the module docs. Fed the jitter buffer's counters every so often; says when its
/// wait should change.
#[derive(Debug, Clone)]
pub struct JitterWait {
    ceiling: Duration,
    current: Duration,
    last: JitterStats,
    last_loss: Option<Instant>,
}

impl JitterWait {
    /// The wait the pipeline is built with: the first packet plays after this.
    pub const START: Duration = Duration::from_millis(10);
    /// The least wait once playing: reordering on a quiet path.
    pub const FLOOR: Duration = Duration::from_millis(40);
    /// No loss and no late packet for this long: the wait follows the jitter again.
    pub const CALM: Duration = Duration::from_secs(30);
    /// The wait is this many times the measured jitter (when above the floor).
    const JITTER_FACTOR: u32 = 4;

    /// A wait that grows up to `ceiling` on loss.
    pub fn new(ceiling: Duration) -> JitterWait {
        JitterWait { ceiling, current: Self::START, last: JitterStats::default(), last_loss: None }
    }

    /// The wait now.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// The jitter buffer's counters at `now`; `Some(wait)` when its wait should change.
    pub fn observe(&mut self, now: Instant, stats: JitterStats) -> Option<Duration> {
        // Until the first packet has left, the buffer still holds it for its wait: a longer
        // one now would go onto the first frame.
        if self.current == Self::START && stats.pushed == 0 {
            return None;
        }
        // A restarted buffer counts from zero again: nothing new is lost then.
        let lossy = stats.lost > self.last.lost || stats.late > self.last.late;
        self.last = stats;
        if lossy {
            self.last_loss = Some(now);
        }
        let calm = self.last_loss.is_none_or(|t| now.saturating_duration_since(t) >= Self::CALM);
        let target = if !calm {
            self.ceiling
        } else {
            (stats.jitter * Self::JITTER_FACTOR).clamp(Self::FLOOR, self.ceiling.max(Self::FLOOR))
        };
        // Steps under 5 ms are noise in the jitter estimate, not worth a latency change.
        let step = target.abs_diff(self.current);
        if step.is_zero() || (calm && self.current != Self::START && step < Duration::from_millis(5)) {
            return None;
        }
        self.current = target;
        Some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CEILING: Duration = Duration::from_millis(150);
    const PLAYING: JitterStats = JitterStats { pushed: 1, lost: 0, late: 0, jitter: Duration::ZERO };
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn starts_short_then_settles_at_the_floor() {
        let t = Instant::now();
        let mut w = JitterWait::new(CEILING);
        assert_eq!(w.current(), JitterWait::START);
        // Nothing has left yet: the first packet keeps its short wait, even under loss.
        assert_eq!(w.observe(t, JitterStats { lost: 1, ..Default::default() }), None);
        assert_eq!(w.current(), JitterWait::START);
        assert_eq!(w.observe(t, JitterStats { jitter: ms(1), ..PLAYING }), Some(JitterWait::FLOOR));
        assert_eq!(w.observe(t + ms(250), JitterStats { jitter: ms(2), ..PLAYING }), None);
    }

    #[test]
    fn follows_measured_jitter_up_to_the_ceiling() {
        let t = Instant::now();
        let mut w = JitterWait::new(CEILING);
        assert_eq!(w.observe(t, JitterStats { jitter: ms(20), ..PLAYING }), Some(ms(80)));
        // Noise: 2 ms more jitter is 8 ms more wait, a step worth taking; 1 ms is not.
        assert_eq!(w.observe(t, JitterStats { jitter: ms(21), ..PLAYING }), None);
        assert_eq!(w.observe(t, JitterStats { jitter: ms(500), ..PLAYING }), Some(CEILING));
    }

    #[test]
    fn loss_grows_to_the_ceiling_at_once_and_calm_brings_it_back() {
        let t = Instant::now();
        let mut w = JitterWait::new(CEILING);
        w.observe(t, PLAYING);
        let lost = JitterStats { lost: 3, ..PLAYING };
        assert_eq!(w.observe(t + ms(250), lost), Some(CEILING));
        // The same count later is no new loss, but the calm has not passed.
        assert_eq!(w.observe(t + ms(10_000), lost), None);
        // A late packet is loss too: it restarts the calm.
        let late = JitterStats { late: 1, ..lost };
        assert_eq!(w.observe(t + ms(20_000), late), None);
        assert_eq!(w.observe(t + ms(45_000), late), None);
        assert_eq!(w.observe(t + ms(50_000), late), Some(JitterWait::FLOOR));
    }

    #[test]
    fn a_restarted_buffer_is_not_loss() {
        let t = Instant::now();
        let mut w = JitterWait::new(CEILING);
        w.observe(t, JitterStats { lost: 9, ..PLAYING });
        let mut calm = w.clone();
        assert_eq!(calm.observe(t + ms(31_000), PLAYING), Some(JitterWait::FLOOR));
        assert_eq!(w.observe(t + ms(31_000), JitterStats { lost: 2, ..PLAYING }), Some(JitterWait::FLOOR));
    }
}
