//! The SFU core with device connections ([`ClientCore`]) on an in-memory network, in
//! virtual time: no socket, no clock, no sleeps. Routing by ICE ufrag then address,
//! fan-out, keyframe requests on join and their throttling, strangers, teardown and the
//! consent expiry; each whole-call case on one shard and on several, where datagrams land
//! on a shard by address as the kernel spreads them over `SO_REUSEPORT` sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::shard::Shards;
use super::{MediaOffer, SfuCore, SfuStats, StreamKey};
use crate::proto::MediaRole;
use crate::rtc::client::{ClientCore, ClientEvent};
use crate::rtc::{Kind, Transport, stun, test_rtp};

const SFU: &str = "10.0.0.1:7882";
const STEP: Duration = Duration::from_millis(5);

struct Client {
    core: ClientCore,
    addr: SocketAddr,
    events: Vec<ClientEvent>,
    received: [u64; 2],
    /// The first video packets received, as the client handed them on (RTP).
    first_video: Vec<bytes::Bytes>,
    /// The network drops everything to and from this client.
    cut: bool,
    /// The network drops this client's UDP (TCP passes).
    udp_blocked: bool,
    /// The network drops the SFU's DTLS records to this client (ICE passes).
    dtls_dropped: bool,
}

impl Client {
    /// The source address of the client's ICE-TCP connection to the SFU.
    fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), 40_000)
    }
}

struct Net {
    now: Instant,
    /// The shards (one: the SFU as it was before sharding).
    shards: Vec<SfuCore>,
    rules: Shards,
    sfu_addr: SocketAddr,
    clients: Vec<Client>,
    /// Datagrams the SFU sent to addresses no client has.
    strays: Vec<(SocketAddr, Vec<u8>)>,
}

fn key(stream: &str) -> StreamKey {
    StreamKey { app_id: 1, room_id: "r".into(), stream_id: stream.into() }
}

impl Net {
    fn new() -> Net {
        Net::sharded(1)
    }

    /// An SFU of `n` shards.
    fn sharded(n: usize) -> Net {
        let sfu_addr: SocketAddr = SFU.parse().unwrap();
        let rules = Shards::new(n);
        Net {
            now: Instant::now(),
            // ICE-TCP on the same port number: UDP and TCP addresses must not be confused.
            shards: (0..n)
                .map(|i| SfuCore::new(sfu_addr, vec![sfu_addr]).with_tcp(sfu_addr, vec![sfu_addr]).on_shard(i, rules))
                .collect(),
            rules,
            sfu_addr,
            clients: vec![],
            strays: vec![],
        }
    }

    /// A device connection for `stream` offered, answered and handed its answer; its index.
    fn join(&mut self, session: &str, stream: &str, role: MediaRole) -> usize {
        let addr: SocketAddr = format!("10.0.1.{}:5000", self.clients.len() + 1).parse().unwrap();
        let (mut core, offer) =
            ClientCore::new(self.now, role, addr, Duration::from_secs(3), None, true, true).unwrap();
        let offer = MediaOffer { session: session.into(), stream: key(stream), role, sdp: offer };
        let answer = self.shards[self.rules.of_offer(&offer)].handle_offer(self.now, offer).unwrap();
        core.handle_answer(self.now, answer);
        self.clients.push(Client {
            core,
            addr,
            events: vec![],
            received: [0; 2],
            first_video: vec![],
            cut: false,
            udp_blocked: false,
            dtls_dropped: false,
        });
        self.clients.len() - 1
    }

    /// Moves every queued datagram (links without delay) until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for c in &mut self.clients {
                while let Some(t) = c.core.poll_transmit() {
                    moved = true;
                    let from = match t.transport {
                        Transport::Udp if c.udp_blocked => continue,
                        Transport::Udp => c.addr,
                        Transport::Tcp => c.tcp_addr(),
                    };
                    if !c.cut && t.to == self.sfu_addr {
                        let land = super::shard::landing(self.shards.len(), from, t.transport);
                        self.shards[land].handle_datagram(self.now, from, t.transport, &t.data);
                    }
                }
            }
            moved |= super::shard::exchange(&mut self.shards, self.now);
            let out: Vec<_> = self.shards.iter_mut().flat_map(|s| std::iter::from_fn(|| s.poll_transmit())).collect();
            for t in out {
                moved = true;
                let to = |c: &Client| match t.transport {
                    Transport::Udp => c.addr == t.to,
                    Transport::Tcp => c.tcp_addr() == t.to,
                };
                match self.clients.iter_mut().find(|c| to(c)) {
                    Some(c) if c.cut || (c.udp_blocked && t.transport == Transport::Udp) => {}
                    Some(c) if c.dtls_dropped && t.data.first().is_some_and(|b| (20..=63).contains(b)) => {}
                    Some(c) => c.core.handle_datagram(self.now, self.sfu_addr, t.transport, &t.data),
                    None => self.strays.push((t.to, t.data.to_vec())),
                }
            }
            for c in &mut self.clients {
                while let Some(e) = c.core.poll_event() {
                    c.events.push(e);
                }
                while let Some((kind, rtp)) = c.core.poll_rtp() {
                    c.received[kind as usize] += 1;
                    if kind == Kind::Video && c.first_video.len() < 8 {
                        c.first_video.push(rtp);
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Advances virtual time in steps, running what is due, until `done` or `limit`.
    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Net) -> bool) -> bool {
        let end = self.now + limit;
        self.pump();
        while !done(self) {
            if self.now >= end {
                return false;
            }
            self.now += STEP;
            for s in &mut self.shards {
                if s.poll_timeout().is_some_and(|t| t <= self.now) {
                    s.handle_timeout(self.now);
                }
            }
            for c in &mut self.clients {
                if c.core.poll_timeout() <= self.now {
                    c.core.handle_timeout(self.now);
                }
            }
            self.pump();
        }
        true
    }

    /// The shards' counters summed, as the server reports them.
    fn stats(&self) -> SfuStats {
        let mut sum = SfuStats::default();
        for s in &self.shards {
            sum += s.stats();
        }
        sum
    }

    /// Players on each shard.
    fn players_per_shard(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.stats().players).collect()
    }

    fn end_play(&mut self, session: &str, stream: &str) {
        let shard = self.rules.player(session, &key(stream));
        self.shards[shard].end_play(session, &key(stream));
    }

    fn end_stream(&mut self, stream: &str) {
        self.shards.iter_mut().for_each(|s| s.end_stream(&key(stream)));
    }

    fn end_session(&mut self, session: &str) {
        self.shards.iter_mut().for_each(|s| s.end_session(session));
    }

    fn session_alive(&self, session: &str) -> bool {
        self.shards.iter().any(|s| s.session_alive(session))
    }

    fn knows(&self, transport: Transport, from: SocketAddr) -> bool {
        self.shards.iter().any(|s| s.knows(transport, from))
    }

    fn connected(&self, i: usize) -> bool {
        self.clients[i].events.iter().any(|e| matches!(e, ClientEvent::Connected))
    }

    fn count(&self, i: usize, f: impl Fn(&ClientEvent) -> bool) -> usize {
        self.clients[i].events.iter().filter(|e| f(e)).count()
    }

    fn publish(&mut self, i: usize, from_seq: u16, n: u16) {
        for seq in from_seq..from_seq + n {
            self.clients[i].core.send_rtp(self.now, Kind::Video, &test_rtp(Kind::Video, seq));
            self.clients[i].core.send_rtp(self.now, Kind::Audio, &test_rtp(Kind::Audio, seq));
        }
        self.pump();
    }
}

fn keyframe_requested(e: &ClientEvent) -> bool {
    matches!(e, ClientEvent::KeyframeRequested)
}

#[test]
fn a_publisher_is_forwarded_to_every_player_of_its_stream_only() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "door-main", MediaRole::Publish);
        let players = [net.join("desk", "door-main", MediaRole::Play), net.join("kiosk", "door-main", MediaRole::Play)];
        let other = net.join("lobby", "lobby-main", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| (0..4).all(|i| n.connected(i))), "all connect");
        net.publish(publisher, 1, 20);
        assert!(net.run_until(Duration::from_secs(1), |n| players.iter().all(|&p| n.clients[p].received[0] >= 20)));
        for p in players {
            assert_eq!(net.clients[p].received, [20, 20], "video and audio, each packet once");
            assert_eq!(net.count(p, |e| matches!(e, ClientEvent::FirstVideoFrame)), 1);
        }
        assert_eq!(net.clients[other].received, [0, 0], "another stream's player gets nothing");
        let stats = net.stats();
        assert_eq!((stats.publishers, stats.players), (1, 3));
        assert_eq!((stats.packets_in, stats.packets_out), (40, 80));
    }
}

#[test]
fn players_joining_ask_for_a_keyframe_and_their_own_requests_are_throttled() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher)));
        let player = net.join("desk", "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| n.count(publisher, keyframe_requested) == 1), "join asks");
        let after_join = net.stats().keyframe_requests;
        assert_eq!(after_join, 1);
        // A burst of PLIs from the player within 500 ms reaches the publisher once.
        net.publish(publisher, 1, 3);
        net.run_until(Duration::from_millis(600), |_| false);
        for _ in 0..5 {
            net.clients[player].core.request_keyframe(net.now);
            net.run_until(Duration::from_millis(50), |_| false);
        }
        assert_eq!(net.stats().keyframe_requests, after_join + 1, "throttled to one per 500 ms");
        net.run_until(Duration::from_millis(500), |_| false);
        net.clients[player].core.request_keyframe(net.now);
        net.run_until(Duration::from_millis(50), |_| false);
        assert_eq!(net.stats().keyframe_requests, after_join + 2, "the next interval passes one again");
    }
}

#[test]
fn strangers_get_nothing_but_a_plain_binding_answer() {
    let mut net = Net::new();
    let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let now = net.now;
    // Noise, RTP, and an ICE check naming no connection of ours: no answer at all.
    net.shards[0].handle_datagram(now, stranger, Transport::Udp, &[0u8; 40]);
    net.shards[0].handle_datagram(now, stranger, Transport::Udp, &test_rtp(Kind::Video, 1));
    let mut check = stun::binding_request([3; 12]);
    check.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]); // USERNAME, 8 bytes
    check.extend_from_slice(b"nobody:x");
    check[3] = 12;
    assert_eq!(stun::Received::parse(&check).and_then(|m| m.local_ufrag()).as_deref(), Some("nobody"));
    net.shards[0].handle_datagram(now, stranger, Transport::Udp, &check);
    assert!(net.shards[0].poll_transmit().is_none());
    // `callbox doctor`'s plain binding request learns the address it came from.
    net.shards[0].handle_datagram(now, stranger, Transport::Udp, &stun::binding_request([7; 12]));
    let t = net.shards[0].poll_transmit().expect("an answer");
    assert_eq!(t.to, stranger);
    assert_eq!(stun::mapped_address(&t.data, [7; 12]), Some(stranger));
    assert!(net.shards[0].poll_transmit().is_none());
    assert_eq!(net.shards[0].poll_timeout(), None, "no connection, no deadline");
    // None of it made the stranger known (its TCP connection is closed by the task).
    assert!(!net.shards[0].knows(Transport::Udp, stranger) && !net.shards[0].knows(Transport::Tcp, stranger));
}

#[test]
fn ending_a_play_a_stream_or_a_session_closes_exactly_those_connections() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        let desk = net.join("desk", "s", MediaRole::Play);
        let kiosk = net.join("kiosk", "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| (0..3).all(|i| n.connected(i))));
        // A closed connection's device notices by itself (DTLS close, else consent lapsing).
        let failed = |e: &ClientEvent| matches!(e, ClientEvent::Failed);
        net.end_play("desk", "s");
        assert!(net.run_until(Duration::from_secs(30), |n| n.count(desk, failed) == 1));
        assert!(!net.session_alive("desk") && net.session_alive("kiosk"));
        assert_eq!(net.stats().players, 1);
        net.publish(publisher, 1, 5);
        net.run_until(Duration::from_millis(100), |_| false);
        assert_eq!(net.clients[kiosk].received[0], 5, "the other player still plays");
        // A second offer from the same session for the same stream replaces the first.
        let again = net.join("kiosk", "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| n.connected(again)));
        assert_eq!(net.stats().players, 1);
        assert!(net.run_until(Duration::from_secs(30), |n| n.count(kiosk, failed) == 1), "the replaced one is closed");
        net.end_stream("s");
        assert!(net.run_until(Duration::from_secs(30), |n| n.count(publisher, failed) == 1));
        assert_eq!((net.stats().publishers, net.stats().players), (0, 0));
        net.end_session("door");
        assert!(!net.session_alive("door"));
    }
}

#[test]
fn a_connection_silent_for_the_consent_lifetime_is_closed() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        let player = net.join("desk", "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher) && n.connected(player)));
        net.clients[player].cut = true;
        net.run_until(super::CONSENT_EXPIRY - Duration::from_secs(2), |_| false);
        assert_eq!(net.stats().players, 1, "kept within the consent lifetime");
        assert!(net.run_until(Duration::from_secs(4), |n| n.stats().players == 0), "closed after it");
        assert!(net.session_alive("door"), "the publisher, which kept talking, stays");
    }
}

#[test]
fn a_device_whose_udp_is_blocked_connects_over_ice_tcp_and_media_flows() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        net.clients[publisher].udp_blocked = true;
        let player = net.join("desk", "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(10), |n| n.connected(publisher) && n.connected(player)));
        net.publish(publisher, 1, 10);
        assert!(net.run_until(Duration::from_secs(1), |n| n.clients[player].received[0] >= 10));
        assert_eq!(net.clients[player].received, [10, 10]);
        assert_eq!(net.stats().over_tcp, 1, "the publisher's media arrives over TCP");
        assert!(net.knows(Transport::Tcp, net.clients[publisher].tcp_addr()));
        // The player, whose UDP passes, stays on UDP (preferred).
        let stats = |n: &mut Net, i: usize| {
            n.run_until(Duration::from_millis(1100), |_| false);
            n.clients[i].events.iter().rev().find_map(|e| if let ClientEvent::Stats(s) = e { Some(**s) } else { None })
        };
        assert_eq!(stats(&mut net, player).map(|s| s.path), Some(crate::rtc::client::Path::Udp));
        assert_eq!(stats(&mut net, publisher).map(|s| s.path), Some(crate::rtc::client::Path::Tcp));
    }
}

#[test]
fn the_server_reports_a_publishers_audio_loss_back_to_it() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        assert!(net.run_until(Duration::from_secs(10), |n| n.connected(publisher)));
        // 3 s of audio, 50 packets a second, every fifth lost on the way.
        for seq in 0..150u16 {
            if seq % 5 != 4 {
                net.clients[publisher].core.send_rtp(net.now, Kind::Audio, &test_rtp(Kind::Audio, seq));
            }
            net.run_until(Duration::from_millis(20), |_| false);
        }
        let stats = net.clients[publisher]
            .events
            .iter()
            .rev()
            .find_map(|e| if let ClientEvent::Stats(s) = e { Some(**s) } else { None })
            .expect("stats");
        let loss = stats.audio_loss.expect("no receiver report reached the publisher");
        assert!((0.1..=0.3).contains(&loss), "reported audio loss {loss}");
        // 30 were not sent; the last report, a second or less before, counted most of them.
        assert!((15..=30).contains(&stats.lost), "reported lost {}", stats.lost);
    }
}

/// A video packet with `payload` (RFC 6184).
fn h264(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> bytes::Bytes {
    use rtc::shared::marshal::Marshal;
    let header = rtc::rtp::header::Header {
        version: 2,
        payload_type: crate::rtc::H264_PT,
        sequence_number: seq,
        timestamp: ts,
        ssrc: 42,
        marker,
        ..Default::default()
    };
    rtc::rtp::Packet { header, payload: bytes::Bytes::copy_from_slice(payload) }.marshal().unwrap().freeze()
}

#[test]
fn a_late_player_starts_on_the_kept_keyframe_with_its_parameter_sets_first() {
    for shards in [1, 3] {
        let mut net = Net::sharded(shards);
        let publisher = net.join("door", "s", MediaRole::Publish);
        assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher)));
        // As rtph264pay sends x264's sliced keyframe: the first slice, the SPS/PPS (STAP-A), the
        // second slice; then two frames that refer to it.
        let slice = [0x65, 0x88, 1, 2];
        let stap = [0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 2, 0x68, 0xce];
        for (seq, ts, marker, payload) in [
            (10, 3000, false, &slice[..]),
            (11, 3000, false, &stap[..]),
            (12, 3000, true, &slice[..]),
            (13, 6000, true, &[0x41, 1][..]),
            (14, 9000, true, &[0x41, 2][..]),
        ] {
            net.clients[publisher].core.send_rtp(net.now, Kind::Video, &h264(seq, ts, marker, payload));
        }
        net.pump();
        // With shards, one away from the stream's home: its shard has no GOP of its own.
        let session = if shards == 1 { "desk".to_string() } else { away_from_home(&net, "s") };
        let player = net.join(&session, "s", MediaRole::Play);
        assert!(net.run_until(Duration::from_secs(5), |n| n.clients[player].first_video.len() >= 6));
        let got: Vec<(u16, u32, Vec<u8>)> = net.clients[player]
            .first_video
            .iter()
            .map(|raw| {
                use rtc::shared::marshal::Unmarshal;
                let p = rtc::rtp::Packet::unmarshal(&mut raw.clone()).unwrap();
                (p.header.sequence_number, p.header.timestamp, p.payload.to_vec())
            })
            .collect();
        assert_eq!(
            got[0],
            (9, 3000, stap.to_vec()),
            "first the parameter sets, under the number before the keyframe's"
        );
        let seqs: Vec<u16> = got.iter().map(|g| g.0).collect();
        assert_eq!(seqs, [9, 10, 11, 12, 13, 14], "then the keyframe and the frames since, in order");
        assert_eq!(net.count(publisher, keyframe_requested), 0, "nobody asked the publisher");
        assert_eq!(net.stats().gops_sent, 1);
    }
}

/// A session whose player of `stream` does not live on the stream's home shard.
fn away_from_home(net: &Net, stream: &str) -> String {
    let home = net.rules.home(&key(stream));
    (0..).map(|i| format!("desk-{i}")).find(|s| net.rules.player(s, &key(stream)) != home).unwrap()
}

#[test]
fn with_shards_every_player_gets_every_packet_whatever_socket_its_datagrams_land_on() {
    let mut net = Net::sharded(3);
    let publisher = net.join("door", "s", MediaRole::Publish);
    let players: Vec<usize> = (0..9).map(|i| net.join(&format!("desk-{i}"), "s", MediaRole::Play)).collect();
    assert!(net.run_until(Duration::from_secs(5), |n| (0..10).all(|i| n.connected(i))), "all connect");
    net.publish(publisher, 1, 20);
    assert!(net.run_until(Duration::from_secs(1), |n| players.iter().all(|&p| n.clients[p].received[0] >= 20)));
    for p in &players {
        assert_eq!(net.clients[*p].received, [20, 20], "video and audio, each packet once");
    }
    let spread = net.players_per_shard();
    assert!(spread.iter().filter(|&&n| n > 0).count() >= 2, "the players spread over the shards: {spread:?}");
    let stats = net.stats();
    assert_eq!((stats.publishers, stats.players), (1, 9));
    assert_eq!((stats.packets_in, stats.packets_out), (40, 360), "counted once in, once per copy out");
    assert!(stats.shard_hops > 0, "some datagrams landed on another shard's socket and were handed over");
}

#[test]
fn with_shards_a_players_keyframe_request_and_estimate_reach_the_publisher_on_its_home_shard() {
    let mut net = Net::sharded(3);
    let publisher = net.join("door", "s", MediaRole::Publish);
    let session = away_from_home(&net, "s");
    let player = net.join(&session, "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher) && n.connected(player)));
    // Joining with no GOP kept yet: the player's shard asks the home shard, which asks.
    assert!(net.run_until(Duration::from_secs(1), |n| n.count(publisher, keyframe_requested) == 1), "join asks");
    net.publish(publisher, 1, 3);
    net.run_until(Duration::from_millis(600), |_| false);
    net.clients[player].core.request_keyframe(net.now);
    assert!(net.run_until(Duration::from_secs(1), |n| n.count(publisher, keyframe_requested) == 2), "PLI passes");
    // The player's downlink estimate, read on its shard, reaches the publisher as REMB.
    let cap = |n: &Net| {
        n.clients[publisher].events.iter().rev().find_map(|e| match e {
            ClientEvent::Stats(s) => s.cap_kbps,
            _ => None,
        })
    };
    let mut seq = 4;
    let capped = net.run_until(Duration::from_secs(5), |n| cap(n).is_some()) || {
        // Media flowing makes the estimate.
        (0..100).any(|_| {
            net.publish(publisher, seq, 1);
            seq += 1;
            net.run_until(Duration::from_millis(30), |n| cap(n).is_some())
        })
    };
    assert!(capped, "no REMB reached the publisher: {:?}", net.stats());
    assert!(net.stats().bitrate_caps > 0);
}

#[test]
fn with_shards_a_connection_whose_address_moves_stays_on_its_shard() {
    let mut net = Net::sharded(3);
    let publisher = net.join("door", "s", MediaRole::Publish);
    let session = away_from_home(&net, "s");
    let player = net.join(&session, "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher) && n.connected(player)));
    let owner = net.rules.player(&session, &key("s"));
    let before = net.players_per_shard();
    assert_eq!(before[owner], 1);
    // A NAT gives the player's datagrams a new source port, landing on each shard in turn:
    // its next consent check names the owner, which takes the address.
    let hops = net.stats().shard_hops;
    for port in 6001..6004 {
        net.clients[player].addr.set_port(port);
        let addr = net.clients[player].addr;
        assert!(
            net.run_until(Duration::from_secs(15), |n| n.shards[owner].knows(Transport::Udp, addr)),
            "the owner takes the new address {addr}"
        );
    }
    assert_eq!(net.players_per_shard(), before, "the connection did not move");
    assert!(net.stats().shard_hops > hops, "a new address landing elsewhere was handed to the owner");
    assert!(net.session_alive(&session));
    assert_eq!(net.count(player, |e| matches!(e, ClientEvent::Failed)), 0);
}

#[test]
fn a_connection_whose_dtls_never_completes_fails_at_the_connect_limit() {
    use crate::rtc::client::CONNECT_LIMIT;
    let mut net = Net::new();
    let publisher = net.join("door", "s", MediaRole::Publish);
    // ICE checks pass, the handshake does not: the device's DTLS gives up while ICE stays up,
    // as under heavy loss. The connection must fail, so the stream is renegotiated.
    net.clients[publisher].dtls_dropped = true;
    let failed = |e: &ClientEvent| matches!(e, ClientEvent::Failed);
    net.run_until(CONNECT_LIMIT - Duration::from_secs(1), |_| false);
    assert_eq!(net.count(publisher, failed), 0, "not before the limit");
    assert!(!net.connected(publisher));
    assert!(net.run_until(Duration::from_secs(2), |n| n.count(publisher, failed) == 1), "failed at the limit");
}
