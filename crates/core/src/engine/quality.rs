//! Heartbeat bookkeeping: RTT and loss from ping/pong, and the quality level they give.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::proto::QualityLevel;

const WINDOW: usize = 10;

/// Maps RTT and loss to a level.
pub fn level(rtt: Duration, loss: f64) -> QualityLevel {
    let ms = rtt.as_millis();
    if ms < 100 && loss == 0.0 {
        QualityLevel::Excellent
    } else if ms < 200 && loss < 0.05 {
        QualityLevel::Good
    } else if ms < 400 && loss < 0.10 {
        QualityLevel::Medium
    } else {
        QualityLevel::Bad
    }
}

/// The worse of two levels, where `Unknown` counts as no measure (the other wins).
pub fn worse(a: QualityLevel, b: QualityLevel) -> QualityLevel {
    match (a, b) {
        (QualityLevel::Unknown, x) | (x, QualityLevel::Unknown) => x,
        (a, b) => a.max(b),
    }
}

/// The worst of several levels (`None`: none measured).
pub fn worst(levels: impl IntoIterator<Item = QualityLevel>) -> Option<QualityLevel> {
    levels.into_iter().filter(|l| *l != QualityLevel::Unknown).max()
}

/// The last pings and whether they were answered.
#[derive(Debug, Default)]
pub struct PingTracker {
    next_seq: u64,
    sent: VecDeque<(u64, Instant, Option<Duration>)>,
}

impl PingTracker {
    /// Records a ping being sent; returns its sequence number.
    pub fn sent(&mut self, now: Instant) -> u64 {
        self.next_seq += 1;
        if self.sent.len() == WINDOW {
            self.sent.pop_front();
        }
        self.sent.push_back((self.next_seq, now, None));
        self.next_seq
    }

    /// Records a pong.
    pub fn pong(&mut self, seq: u64, now: Instant) {
        if let Some(e) = self.sent.iter_mut().find(|e| e.0 == seq) {
            e.2 = Some(now.saturating_duration_since(e.1));
        }
    }

    /// Forgets everything (new connection).
    pub fn reset(&mut self) {
        self.sent.clear();
    }

    /// The level now: pings younger than `patience` are not counted as lost yet.
    pub fn level(&self, now: Instant, patience: Duration) -> QualityLevel {
        let judged: Vec<_> =
            self.sent.iter().filter(|e| e.2.is_some() || now.saturating_duration_since(e.1) > patience).collect();
        if judged.is_empty() {
            return QualityLevel::Unknown;
        }
        let answered: Vec<Duration> = judged.iter().filter_map(|e| e.2).collect();
        if answered.is_empty() {
            return QualityLevel::Die;
        }
        let loss = 1.0 - answered.len() as f64 / judged.len() as f64;
        let recent = &answered[answered.len().saturating_sub(3)..];
        let rtt = recent.iter().sum::<Duration>() / recent.len() as u32;
        level(rtt, loss)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_rtt_and_loss() {
        assert_eq!(level(Duration::from_millis(20), 0.0), QualityLevel::Excellent);
        assert_eq!(level(Duration::from_millis(150), 0.0), QualityLevel::Good);
        assert_eq!(level(Duration::from_millis(20), 0.08), QualityLevel::Medium);
        assert_eq!(level(Duration::from_millis(500), 0.0), QualityLevel::Bad);
        let t0 = Instant::now();
        let mut p = PingTracker::default();
        assert_eq!(p.level(t0, Duration::from_secs(1)), QualityLevel::Unknown);
        let s = p.sent(t0);
        p.pong(s, t0 + Duration::from_millis(10));
        assert_eq!(p.level(t0, Duration::from_secs(1)), QualityLevel::Excellent);
        for i in 1..5 {
            p.sent(t0 + Duration::from_secs(i));
        }
        assert_eq!(p.level(t0 + Duration::from_secs(10), Duration::from_secs(1)), QualityLevel::Bad);
    }
}
