//! The events the application has not taken yet, beyond the event channel: bounded.
//!
//! An application that stops reading its events must not grow the engine without limit, and
//! must not lose the events it cannot rebuild (room, publisher and player states) to the ones
//! that come again every few seconds anyway (quality reports). So when the backlog is full a
//! periodic report goes first: the new one if it is periodic, else the oldest waiting one;
//! only when none waits does the oldest event go. Every drop is counted.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::EngineEvent;

/// Events held back once the channel is full, at most.
pub const BACKLOG: usize = 4096;

/// The bounded queue behind the event channel.
pub(crate) struct Backlog {
    queue: VecDeque<EngineEvent>,
    cap: usize,
    dropped: Arc<AtomicU64>,
}

/// Reports sent again every few seconds: the first to go when the backlog is full.
fn periodic(e: &EngineEvent) -> bool {
    matches!(
        e,
        EngineEvent::PublisherQualityUpdate { .. }
            | EngineEvent::PlayerQualityUpdate { .. }
            | EngineEvent::NetworkQuality { .. }
    )
}

impl Backlog {
    pub(crate) fn new(cap: usize, dropped: Arc<AtomicU64>) -> Self {
        Backlog { queue: VecDeque::new(), cap: cap.max(1), dropped }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub(crate) fn pop_front(&mut self) -> Option<EngineEvent> {
        self.queue.pop_front()
    }

    pub(crate) fn clear(&mut self) {
        self.queue.clear();
    }

    /// Queues `e`, dropping one event (counted) when the backlog is full.
    pub(crate) fn push(&mut self, e: EngineEvent) {
        if self.queue.len() < self.cap {
            self.queue.push_back(e);
            return;
        }
        let total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if total.is_power_of_two() {
            tracing::warn!(
                dropped = total,
                backlog = self.cap,
                "the application is not reading engine events; dropping"
            );
        }
        if periodic(&e) {
            return;
        }
        match self.queue.iter().position(periodic) {
            Some(i) => {
                self.queue.remove(i);
            }
            None => {
                self.queue.pop_front();
            }
        }
        self.queue.push_back(e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{RoomState, RoomStateReason};

    fn state(n: i32) -> EngineEvent {
        EngineEvent::RoomStateChanged {
            room_id: format!("r{n}"),
            state: RoomState::Connected,
            reason: RoomStateReason::Logined,
            error_code: crate::proto::ErrorCode(0),
        }
    }

    fn quality() -> EngineEvent {
        EngineEvent::NetworkQuality {
            room_id: String::new(),
            user_id: String::new(),
            is_local: true,
            upstream: crate::proto::QualityLevel::Good,
            downstream: crate::proto::QualityLevel::Good,
        }
    }

    fn rooms(b: &mut Backlog) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = b.pop_front() {
            out.push(match e {
                EngineEvent::RoomStateChanged { room_id, .. } => room_id,
                _ => "q".into(),
            });
        }
        out
    }

    #[test]
    fn a_full_backlog_drops_quality_reports_first_and_counts() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut b = Backlog::new(3, dropped.clone());
        b.push(state(1));
        b.push(quality());
        b.push(state(2));
        b.push(quality()); // full: the new report goes
        assert_eq!(dropped.load(Ordering::Relaxed), 1);
        b.push(state(3)); // full: the waiting report goes
        assert_eq!(dropped.load(Ordering::Relaxed), 2);
        assert_eq!(rooms(&mut b), ["r1", "r2", "r3"]);
    }

    #[test]
    fn with_no_report_waiting_the_oldest_event_goes() {
        let dropped = Arc::new(AtomicU64::new(0));
        let mut b = Backlog::new(2, dropped.clone());
        for n in 1..=5 {
            b.push(state(n));
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rooms(&mut b), ["r4", "r5"], "bounded, and the newest states kept");
    }
}
