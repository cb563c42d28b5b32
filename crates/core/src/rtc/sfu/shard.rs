//! The SFU split over cores: several [`super::SfuCore`]s (shards), each with its own socket
//! on the one media port (`SO_REUSEPORT`), its own connections and its own timers. Which
//! shard owns a connection is decided at the offer, from names alone, so every shard and the
//! task that routes commands agree without asking each other:
//!
//! - a stream's publisher lives on the stream's home shard ([`Shards::home`]);
//! - a player on the shard of its session and stream ([`Shards::player`]): the players of
//!   one stream spread over the shards, and a session's new offer for the same stream lands
//!   where its old connection is, so it replaces it there.
//!
//! The kernel spreads datagrams over the sockets by address, not by owner, so a datagram may
//! arrive at another shard's socket. The server's ufrag starts with the owner's index (two
//! hex digits): the first ICE check from an address names its owner, the receiving shard
//! remembers the address as the owner's, and hands it and what follows over
//! ([`ShardMsg::Datagram`]). Replies leave from the owner's own socket (the same port).
//!
//! The home shard forwards a publisher's packets to its own players and hands them, shared
//! and not copied per player, to each shard that has players of the stream
//! ([`ShardMsg::Media`]); those shards ask the home shard for keyframes and tell it their
//! players' estimates, so a player's PLI and its downlink still reach the publisher. A shard's
//! first player of a stream gets it the home shard's GOP so far ([`ShardMsg::Gop`]), so a
//! late joiner starts on the kept keyframe wherever it lives.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;

use super::StreamKey;
use crate::rtc::{Kind, Transport};

/// At most this many shards (the index is two hex digits of the ufrag; more shards than
/// cores only add hops).
pub const MAX_SHARDS: usize = 64;

/// How many shards there are, and the rules that place a connection on one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shards {
    count: usize,
}

impl Shards {
    /// `count` shards (at least 1, at most [`MAX_SHARDS`]).
    pub fn new(count: usize) -> Shards {
        Shards { count: count.clamp(1, MAX_SHARDS) }
    }

    /// How many.
    pub fn count(self) -> usize {
        self.count
    }

    /// The shard of `stream`'s publisher, which forwards its packets to every player.
    pub fn home(self, stream: &StreamKey) -> usize {
        self.pick(stream)
    }

    /// The shard of `session`'s player of `stream`.
    pub fn player(self, session: &str, stream: &StreamKey) -> usize {
        self.pick(&(session, stream))
    }

    /// The shard an offer goes to.
    pub fn of_offer(self, offer: &super::MediaOffer) -> usize {
        match offer.role {
            crate::proto::MediaRole::Publish => self.home(&offer.stream),
            crate::proto::MediaRole::Play => self.player(&offer.session, &offer.stream),
        }
    }

    fn pick(self, what: &impl Hash) -> usize {
        if self.count == 1 {
            return 0;
        }
        // SipHash with fixed keys: the same answer in every shard and for the whole run.
        let mut h = DefaultHasher::new();
        what.hash(&mut h);
        (h.finish() % self.count as u64) as usize
    }

    /// A server ufrag for a connection on `shard`: its index first, then `random`.
    pub fn ufrag(shard: usize, random: &str) -> String {
        format!("{shard:02x}{random}")
    }

    /// The shard a server ufrag names (none for a ufrag that is not ours).
    pub fn owner_of_ufrag(self, ufrag: &str) -> Option<usize> {
        let index = usize::from_str_radix(ufrag.get(..2)?, 16).ok()?;
        (index < self.count).then_some(index)
    }
}

/// What one shard hands another (see the module docs).
#[derive(Debug, Clone)]
pub enum ShardMsg {
    /// A datagram that arrived at the sender's socket for a connection of the receiver.
    Datagram {
        /// Where from.
        from: SocketAddr,
        /// Over UDP, or in a frame of the ICE-TCP connection from `from`.
        transport: Transport,
        /// The datagram.
        data: Vec<u8>,
        /// The sender (told when the address is not the receiver's after all).
        shard: usize,
    },
    /// A stream's packets from its publisher (home shard to a shard with players of it).
    Media {
        /// Which stream.
        stream: StreamKey,
        /// The packets, header extensions already removed.
        packets: Arc<[(Kind, rtc::rtp::Packet)]>,
    },
    /// The home shard's GOP so far (see [`super::keyframes::Keyframes`]), to a shard that
    /// has just got its first player of `stream`, so that player starts at once as well.
    Gop {
        /// Which stream.
        stream: StreamKey,
        /// The packets.
        packets: Vec<rtc::rtp::Packet>,
    },
    /// The sender has players of `stream` now (`any`), or none any more (to the home shard).
    Players {
        /// Which stream.
        stream: StreamKey,
        /// The sender.
        shard: usize,
        /// Whether it has any.
        any: bool,
    },
    /// A player of the sender asks for a keyframe (to the home shard); `force` for a joining
    /// player, which is not throttled.
    KeyframeWanted {
        /// Which stream.
        stream: StreamKey,
        /// Not throttled.
        force: bool,
    },
    /// The lowest estimate among the sender's players of `stream`, bit/s (to the home shard).
    Estimate {
        /// Which stream.
        stream: StreamKey,
        /// The sender.
        shard: usize,
        /// bit/s.
        bps: f64,
    },
    /// The sender closed a connection that had these addresses: hand nothing more from them.
    Forget(Vec<(Transport, SocketAddr)>),
}

/// Test support: the shard whose socket a datagram from `from` lands on, UDP spread by
/// address (as the kernel hashes over `SO_REUSEPORT` sockets), ICE-TCP at shard 0, which
/// owns the listener.
#[cfg(test)]
pub(crate) fn landing(shards: usize, from: SocketAddr, transport: Transport) -> usize {
    match (transport, from.ip()) {
        (Transport::Tcp, _) => 0,
        (Transport::Udp, std::net::IpAddr::V4(ip)) => (usize::from(ip.octets()[3]) + usize::from(from.port())) % shards,
        (Transport::Udp, _) => 0,
    }
}

/// Test support: delivers every message between `shards` until none is left; whether any
/// moved.
#[cfg(test)]
pub(crate) fn exchange(shards: &mut [super::SfuCore], now: std::time::Instant) -> bool {
    let mut moved = false;
    loop {
        let mut any = false;
        for i in 0..shards.len() {
            while let Some((to, msg)) = shards[i].poll_shard_msg() {
                any = true;
                shards[to].handle_shard_msg(now, msg);
            }
        }
        if !any {
            return moved;
        }
        moved = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MediaRole;

    fn key(stream: &str) -> StreamKey {
        StreamKey { app_id: 1, room_id: "r".into(), stream_id: stream.into() }
    }

    #[test]
    fn one_shard_takes_everything_and_more_spread_the_players_of_one_stream() {
        let one = Shards::new(1);
        assert_eq!((one.home(&key("s")), one.player("desk", &key("s"))), (0, 0));
        let four = Shards::new(4);
        let mut used = [0usize; 4];
        for i in 0..64 {
            used[four.player(&format!("desk-{i}"), &key("s"))] += 1;
        }
        assert!(used.iter().all(|&n| n >= 4), "64 players over 4 shards: {used:?}");
        // The same names, the same shard; an offer goes where its role says.
        assert_eq!(four.player("desk-1", &key("s")), four.player("desk-1", &key("s")));
        let offer =
            |role| super::super::MediaOffer { session: "desk-1".into(), stream: key("s"), role, sdp: "".into() };
        assert_eq!(four.of_offer(&offer(MediaRole::Publish)), four.home(&key("s")));
        assert_eq!(four.of_offer(&offer(MediaRole::Play)), four.player("desk-1", &key("s")));
        assert_eq!(Shards::new(0).count(), 1);
        assert_eq!(Shards::new(1000).count(), MAX_SHARDS);
    }

    #[test]
    fn a_ufrag_names_its_shard_and_a_foreign_one_names_none() {
        let s = Shards::new(12);
        assert_eq!(s.owner_of_ufrag(&Shards::ufrag(11, "abcdefgh")), Some(11));
        assert_eq!(s.owner_of_ufrag(&Shards::ufrag(0, "abcdefgh")), Some(0));
        assert_eq!(s.owner_of_ufrag("0c-beyond"), None, "index 12 of 12");
        assert_eq!(s.owner_of_ufrag("zz"), None);
        assert_eq!(s.owner_of_ufrag("a"), None);
        assert_eq!(s.owner_of_ufrag("é1"), None, "not at a char boundary");
    }
}
