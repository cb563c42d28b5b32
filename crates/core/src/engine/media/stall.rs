//! Video stall bookkeeping for a played stream.

use std::time::{Duration, Instant};

use crate::engine::event::MediaEventKind;

/// No rendered frame for this long is a stall.
pub(super) const STALL: Duration = Duration::from_millis(500);

/// Video stall bookkeeping of one played stream: a stall is 500 ms without a rendered frame.
#[derive(Debug, Default)]
pub(super) struct StallWatch {
    /// The last frame before the current stall.
    pub(super) stalled_since: Option<Instant>,
    /// The last frame seen at the previous check.
    pub(super) seen: Option<Instant>,
    pub(super) count: u64,
    pub(super) total_ms: u64,
}

impl StallWatch {
    /// Given the time of the latest rendered frame, the events to report now. A gap that
    /// opened and closed between two checks is still reported (stall, then resume).
    pub(super) fn check(&mut self, now: Instant, last: Instant) -> Vec<MediaEventKind> {
        let prev = self.seen.replace(last);
        match self.stalled_since {
            None if now.duration_since(last) >= STALL => {
                self.stalled_since = Some(last);
                self.count += 1;
                vec![MediaEventKind::VideoStall]
            }
            None => match prev {
                Some(p) if last > p && last.duration_since(p) >= STALL => {
                    self.count += 1;
                    self.total_ms += last.duration_since(p).as_millis() as u64;
                    vec![MediaEventKind::VideoStall, MediaEventKind::VideoResume]
                }
                _ => vec![],
            },
            Some(since) if last > since => {
                self.total_ms += last.duration_since(since).as_millis() as u64;
                self.stalled_since = None;
                vec![MediaEventKind::VideoResume]
            }
            Some(_) => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_are_reported_even_between_checks() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut w = StallWatch::default();
        assert!(w.check(ms(100), ms(90)).is_empty());
        assert!(w.check(ms(500), ms(490)).is_empty(), "frames keep coming");
        assert_eq!(w.check(ms(1100), ms(560)), vec![MediaEventKind::VideoStall]);
        assert!(w.check(ms(1200), ms(560)).is_empty());
        assert_eq!(w.check(ms(1300), ms(1290)), vec![MediaEventKind::VideoResume]);
        assert_eq!((w.count, w.total_ms), (1, 730));
        // A 600 ms gap that closed before the next check.
        assert_eq!(w.check(ms(1950), ms(1940)), vec![MediaEventKind::VideoStall, MediaEventKind::VideoResume]);
        assert_eq!(w.count, 2);
    }
}
