//! Buttons as a sans-IO state machine: raw line levels in (from any GPIO backend, with
//! their time), debounced short and long presses out. A long press is reported as soon as
//! the button has been held long enough, so the user gets feedback while still holding it;
//! the release after it reports nothing more.

use std::time::{Duration, Instant};

use super::call::Press;

/// One button's debouncer and press detector.
#[derive(Debug, Clone)]
pub struct ButtonDetector {
    debounce: Duration,
    long_press: Duration,
    pressed: bool,
    last_change: Option<Instant>,
    down_since: Option<Instant>,
    long_sent: bool,
}

impl ButtonDetector {
    /// A detector with the configured debounce and long-press times.
    pub fn new(debounce: Duration, long_press: Duration) -> Self {
        ButtonDetector { debounce, long_press, pressed: false, last_change: None, down_since: None, long_sent: false }
    }

    /// A level change seen at `now` (`pressed` after any active-low inversion). Changes
    /// within the debounce time of the last accepted one are contact bounce and ignored.
    pub fn handle_level(&mut self, now: Instant, pressed: bool) -> Option<Press> {
        if pressed == self.pressed {
            return None;
        }
        if self.last_change.is_some_and(|t| now.saturating_duration_since(t) < self.debounce) {
            return None;
        }
        self.last_change = Some(now);
        self.pressed = pressed;
        if pressed {
            self.down_since = Some(now);
            self.long_sent = false;
            return None;
        }
        let since = self.down_since.take()?;
        if self.long_sent {
            return None;
        }
        Some(if now.duration_since(since) >= self.long_press { Press::Long } else { Press::Short })
    }

    /// When a held button becomes a long press.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.down_since.filter(|_| !self.long_sent).map(|t| t + self.long_press)
    }

    /// Reports a long press once the button has been held long enough.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Press> {
        let t = self.poll_timeout()?;
        if now < t {
            return None;
        }
        self.long_sent = true;
        Some(Press::Long)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> ButtonDetector {
        ButtonDetector::new(Duration::from_millis(30), Duration::from_millis(1500))
    }

    #[test]
    fn bounces_are_ignored_and_a_short_press_is_reported_on_release() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut d = det();
        assert_eq!(d.handle_level(ms(0), true), None);
        assert_eq!(d.handle_level(ms(5), false), None, "bounce");
        assert_eq!(d.handle_level(ms(8), true), None, "bounce");
        assert_eq!(d.handle_level(ms(200), false), Some(Press::Short));
        assert_eq!(d.poll_timeout(), None);
    }

    #[test]
    fn a_long_press_is_reported_while_held_and_only_once() {
        let t = Instant::now();
        let ms = |n| t + Duration::from_millis(n);
        let mut d = det();
        d.handle_level(ms(0), true);
        assert_eq!(d.poll_timeout(), Some(ms(1500)));
        assert_eq!(d.handle_timeout(ms(1000)), None);
        assert_eq!(d.handle_timeout(ms(1500)), Some(Press::Long));
        assert_eq!(d.handle_timeout(ms(1600)), None);
        assert_eq!(d.handle_level(ms(2500), false), None, "the release after a long press");
        // Without timer calls, a long hold is still long on release.
        d.handle_level(ms(3000), true);
        assert_eq!(d.handle_level(ms(5000), false), Some(Press::Long));
    }
}
