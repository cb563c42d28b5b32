//! Counters for Prometheus `/metrics`, owned by the registry (one owner, no atomics needed).

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::proto::ErrorCode;

/// Monotonic counters since start.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    /// Successful logins.
    pub logins: u64,
    /// Successful resumes.
    pub resumes: u64,
    /// Sessions kicked (duplicate login or admin).
    pub kicks: u64,
    /// Sessions removed after the grace period.
    pub heartbeat_timeouts: u64,
    /// Messages received.
    pub messages: u64,
    /// Calls placed.
    pub calls: u64,
    /// Door requests forwarded to a door station.
    pub door_requests: u64,
    /// Error answers by code.
    pub errors: BTreeMap<u32, u64>,
    /// Registry lookups that failed where they should not (answered `SERVER_INTERNAL`).
    pub inconsistencies: u64,
    /// What the hub dropped instead of waiting, by what (see [`Dropped`]).
    pub dropped: BTreeMap<Dropped, u64>,
}

/// What the server drops instead of waiting on a full queue: each counted in
/// `callbox_dropped_total{what=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dropped {
    /// A connection that does not read its messages: closed (its session keeps its grace).
    SlowClient,
    /// A command to the media relay (end a stream, a play, a session) while its queue was full.
    MediaCommand,
    /// A device keys write while the state writer was behind (the next change writes them all).
    DeviceKeysWrite,
    /// A webhook event while the delivery task's queue was full.
    Webhook,
}

impl Dropped {
    /// The `what` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::SlowClient => "slow_client",
            Dropped::MediaCommand => "media_command",
            Dropped::DeviceKeysWrite => "device_keys_write",
            Dropped::Webhook => "webhook",
        }
    }
}

impl Metrics {
    /// Counts one error answer.
    pub fn error(&mut self, code: ErrorCode) {
        *self.errors.entry(code.0).or_default() += 1;
    }

    /// Counts one drop.
    pub fn dropped(&mut self, what: Dropped) {
        *self.dropped.entry(what).or_default() += 1;
    }

    /// Renders the Prometheus text format with the given gauges; `media_dropped`: the media
    /// relay's own count of commands it could not queue (it is called from outside the hub too).
    pub fn render(
        &self,
        rooms: usize,
        connected: usize,
        detached: usize,
        streams: usize,
        media_dropped: u64,
    ) -> String {
        let mut s = String::new();
        let mut gauge = |name: &str, help: &str, v: usize| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge("callbox_rooms", "Rooms with at least one user.", rooms);
        gauge("callbox_sessions_connected", "Sessions with a live connection.", connected);
        gauge("callbox_sessions_detached", "Sessions in their grace period.", detached);
        gauge("callbox_streams", "Published streams.", streams);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter("callbox_logins_total", "Successful room logins.", self.logins);
        counter("callbox_resumes_total", "Sessions resumed after a dropped connection.", self.resumes);
        counter("callbox_kicks_total", "Sessions kicked out.", self.kicks);
        counter(
            "callbox_heartbeat_timeouts_total",
            "Sessions removed after the grace period.",
            self.heartbeat_timeouts,
        );
        counter("callbox_messages_total", "Signalling messages received.", self.messages);
        counter("callbox_calls_total", "Calls placed between members.", self.calls);
        counter("callbox_door_requests_total", "Door requests forwarded to a door station.", self.door_requests);
        counter(
            "callbox_registry_inconsistencies_total",
            "Registry lookups that failed where they should not (answered SERVER_INTERNAL; a bug).",
            self.inconsistencies,
        );
        let _ = writeln!(s, "# HELP callbox_errors_total Error answers by code.\n# TYPE callbox_errors_total counter");
        for (code, n) in &self.errors {
            let _ = writeln!(s, "callbox_errors_total{{code=\"{code}\",name=\"{}\"}} {n}", ErrorCode(*code).name());
        }
        let _ = writeln!(
            s,
            "# HELP callbox_dropped_total Messages and commands dropped on a full queue instead of waiting, by what.\n\
             # TYPE callbox_dropped_total counter"
        );
        for what in [Dropped::SlowClient, Dropped::MediaCommand, Dropped::DeviceKeysWrite] {
            let mut n = self.dropped.get(&what).copied().unwrap_or(0);
            if what == Dropped::MediaCommand {
                n += media_dropped;
            }
            let _ = writeln!(s, "callbox_dropped_total{{what=\"{}\"}} {n}", what.as_str());
        }
        s
    }
}

/// The media relay's gauges and counters in the Prometheus text format.
pub fn render_media(m: &crate::rtc::sfu::SfuStats) -> String {
    let mut s = String::new();
    let mut one = |name: &str, kind: &str, help: &str, v: u64| {
        let _ = writeln!(s, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    one("callbox_media_publishers", "gauge", "Publish connections on the media relay.", m.publishers as u64);
    one("callbox_media_players", "gauge", "Play connections on the media relay.", m.players as u64);
    one(
        "callbox_media_connections_tcp",
        "gauge",
        "Media connections whose media arrives over ICE-TCP (their client's UDP does not pass).",
        m.over_tcp as u64,
    );
    one("callbox_media_packets_in_total", "counter", "RTP packets received from publishers.", m.packets_in);
    one("callbox_media_packets_out_total", "counter", "RTP packets forwarded to players.", m.packets_out);
    one(
        "callbox_media_keyframe_requests_total",
        "counter",
        "Keyframe requests sent to publishers.",
        m.keyframe_requests,
    );
    one(
        "callbox_media_gops_sent_total",
        "counter",
        "Joining players sent the pictures since the stream's last keyframe (no keyframe request needed).",
        m.gops_sent,
    );
    one(
        "callbox_media_shards",
        "gauge",
        "Shards forwarding media, each with its own core and socket.",
        m.shards as u64,
    );
    one(
        "callbox_media_shard_hops_total",
        "counter",
        "Datagrams that arrived at another shard's socket and were handed to their connection's shard.",
        m.shard_hops,
    );
    one(
        "callbox_media_shard_drops_total",
        "counter",
        "Messages between shards dropped because the receiving shard was behind.",
        m.shard_drops,
    );
    let name = "callbox_media_repaired_total";
    let _ = writeln!(
        s,
        "# HELP {name} Publishers' lost video packets repaired, by how: a retransmission (rtx) or FlexFEC (fec).\n\
         # TYPE {name} counter\n{name}{{how=\"rtx\"}} {}\n{name}{{how=\"fec\"}} {}",
        m.rtx_received, m.fec_rebuilt
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_one_counter_family_by_what() {
        let mut m = Metrics::default();
        m.dropped(Dropped::SlowClient);
        m.dropped(Dropped::SlowClient);
        let text = m.render(0, 0, 0, 0, 3);
        assert!(text.contains("callbox_dropped_total{what=\"slow_client\"} 2"), "{text}");
        assert!(text.contains("callbox_dropped_total{what=\"media_command\"} 3"), "{text}");
        assert!(text.contains("callbox_dropped_total{what=\"device_keys_write\"} 0"), "{text}");
        assert_eq!(text.matches("# TYPE callbox_dropped_total counter").count(), 1);
    }
}
