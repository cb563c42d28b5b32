//! The server's selective forwarding unit as a sans-IO core ([`SfuCore`]: time and
//! datagrams in, datagrams and a deadline out) and the names it speaks: a stream's key and
//! the SFU's counters. The task that owns the media sockets is the `callbox` crate's
//! `rtc::sfu::Sfu`.

use std::time::Duration;

mod core;
pub mod keyframes;
pub mod shard;
#[cfg(test)]
mod tests;

pub use self::core::*;

/// A connection that sent nothing at all (no STUN, no media, no RTCP) for this long is gone
/// (RFC 7675's consent lifetime). Media and RTCP count: agents such as libnice send a
/// consent check only every ~25 s while their media flows.
pub const CONSENT_EXPIRY: Duration = Duration::from_secs(30);
pub use crate::proto::StreamKey;

/// A media connection's offer on its way to the SFU: who offers, for which stream, which
/// way media flows, and the SDP. The registry decides it may be made; the SFU answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaOffer {
    /// The session offering (a signalling session, or a WHIP/WHEP resource's).
    pub session: String,
    /// The stream (app, room, stream ID).
    pub stream: StreamKey,
    /// Which way media flows.
    pub role: crate::proto::MediaRole,
    /// The SDP offer.
    pub sdp: String,
}

/// Counters of the SFU, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Publish connections now.
    pub publishers: usize,
    /// Play connections now.
    pub players: usize,
    /// Connections whose media arrives over ICE-TCP now.
    pub over_tcp: usize,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP packets forwarded to players.
    pub packets_out: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
    /// Joining players sent the kept pictures since the stream's last keyframe instead.
    pub gops_sent: u64,
    /// Bitrate caps (REMB: the lowest of the stream's players' estimates) sent to publishers.
    pub bitrate_caps: u64,
    /// Publishers' lost video packets that arrived again as retransmissions (RTX).
    pub rtx_received: u64,
    /// Publishers' lost video packets rebuilt from FlexFEC.
    pub fec_rebuilt: u64,
    /// Datagrams that arrived at another shard's socket and were handed to their
    /// connection's shard.
    pub shard_hops: u64,
    /// Shards (1 from each core, summed).
    pub shards: usize,
    /// Messages between shards dropped on a full queue (counted by the task that runs them).
    pub shard_drops: u64,
}

impl std::ops::AddAssign for SfuStats {
    /// Sums two shards' counters.
    fn add_assign(&mut self, o: SfuStats) {
        self.publishers += o.publishers;
        self.players += o.players;
        self.over_tcp += o.over_tcp;
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.keyframe_requests += o.keyframe_requests;
        self.gops_sent += o.gops_sent;
        self.bitrate_caps += o.bitrate_caps;
        self.rtx_received += o.rtx_received;
        self.fec_rebuilt += o.fec_rebuilt;
        self.shard_hops += o.shard_hops;
        self.shards += o.shards;
        self.shard_drops += o.shard_drops;
    }
}
