//! The SFU core with device connections ([`ClientCore`]) on an in-memory network, in
//! virtual time: no socket, no clock, no sleeps. Routing by ICE ufrag then address,
//! fan-out, keyframe requests on join and their throttling, strangers, teardown and the
//! consent expiry.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{MediaOffer, SfuCore, StreamKey};
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
}

impl Client {
    /// The source address of the client's ICE-TCP connection to the SFU.
    fn tcp_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), 40_000)
    }
}

struct Net {
    now: Instant,
    sfu: SfuCore,
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
        let sfu_addr: SocketAddr = SFU.parse().unwrap();
        Net {
            now: Instant::now(),
            // ICE-TCP on the same port number: UDP and TCP addresses must not be confused.
            sfu: SfuCore::new(sfu_addr, vec![sfu_addr]).with_tcp(sfu_addr, vec![sfu_addr]),
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
        let answer = self
            .sfu
            .handle_offer(self.now, MediaOffer { session: session.into(), stream: key(stream), role, sdp: offer })
            .unwrap();
        core.handle_answer(self.now, answer);
        self.clients.push(Client {
            core,
            addr,
            events: vec![],
            received: [0; 2],
            first_video: vec![],
            cut: false,
            udp_blocked: false,
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
                        self.sfu.handle_datagram(self.now, from, t.transport, &t.data);
                    }
                }
            }
            while let Some(t) = self.sfu.poll_transmit() {
                moved = true;
                let to = |c: &Client| match t.transport {
                    Transport::Udp => c.addr == t.to,
                    Transport::Tcp => c.tcp_addr() == t.to,
                };
                match self.clients.iter_mut().find(|c| to(c)) {
                    Some(c) if c.cut || (c.udp_blocked && t.transport == Transport::Udp) => {}
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
            if self.sfu.poll_timeout().is_some_and(|t| t <= self.now) {
                self.sfu.handle_timeout(self.now);
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
    let mut net = Net::new();
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
    let stats = net.sfu.stats();
    assert_eq!((stats.publishers, stats.players), (1, 3));
    assert_eq!((stats.packets_in, stats.packets_out), (40, 80));
}

#[test]
fn players_joining_ask_for_a_keyframe_and_their_own_requests_are_throttled() {
    let mut net = Net::new();
    let publisher = net.join("door", "s", MediaRole::Publish);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher)));
    let player = net.join("desk", "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| n.count(publisher, keyframe_requested) == 1), "join asks");
    let after_join = net.sfu.stats().keyframe_requests;
    assert_eq!(after_join, 1);
    // A burst of PLIs from the player within 500 ms reaches the publisher once.
    net.publish(publisher, 1, 3);
    net.run_until(Duration::from_millis(600), |_| false);
    for _ in 0..5 {
        net.clients[player].core.request_keyframe(net.now);
        net.run_until(Duration::from_millis(50), |_| false);
    }
    assert_eq!(net.sfu.stats().keyframe_requests, after_join + 1, "throttled to one per 500 ms");
    net.run_until(Duration::from_millis(500), |_| false);
    net.clients[player].core.request_keyframe(net.now);
    net.run_until(Duration::from_millis(50), |_| false);
    assert_eq!(net.sfu.stats().keyframe_requests, after_join + 2, "the next interval passes one again");
}

#[test]
fn strangers_get_nothing_but_a_plain_binding_answer() {
    let mut net = Net::new();
    let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
    let now = net.now;
    // Noise, RTP, and an ICE check naming no connection of ours: no answer at all.
    net.sfu.handle_datagram(now, stranger, Transport::Udp, &[0u8; 40]);
    net.sfu.handle_datagram(now, stranger, Transport::Udp, &test_rtp(Kind::Video, 1));
    let mut check = stun::binding_request([3; 12]);
    check.extend_from_slice(&[0x00, 0x06, 0x00, 0x08]); // USERNAME, 8 bytes
    check.extend_from_slice(b"nobody:x");
    check[3] = 12;
    assert_eq!(stun::Received::parse(&check).and_then(|m| m.local_ufrag()).as_deref(), Some("nobody"));
    net.sfu.handle_datagram(now, stranger, Transport::Udp, &check);
    assert!(net.sfu.poll_transmit().is_none());
    // `callbox doctor`'s plain binding request learns the address it came from.
    net.sfu.handle_datagram(now, stranger, Transport::Udp, &stun::binding_request([7; 12]));
    let t = net.sfu.poll_transmit().expect("an answer");
    assert_eq!(t.to, stranger);
    assert_eq!(stun::mapped_address(&t.data, [7; 12]), Some(stranger));
    assert!(net.sfu.poll_transmit().is_none());
    assert_eq!(net.sfu.poll_timeout(), None, "no connection, no deadline");
    // None of it made the stranger known (its TCP connection is closed by the task).
    assert!(!net.sfu.knows(Transport::Udp, stranger) && !net.sfu.knows(Transport::Tcp, stranger));
}

#[test]
fn ending_a_play_a_stream_or_a_session_closes_exactly_those_connections() {
    let mut net = Net::new();
    let publisher = net.join("door", "s", MediaRole::Publish);
    let desk = net.join("desk", "s", MediaRole::Play);
    let kiosk = net.join("kiosk", "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| (0..3).all(|i| n.connected(i))));
    // A closed connection's device notices by itself (DTLS close, else consent lapsing).
    let failed = |e: &ClientEvent| matches!(e, ClientEvent::Failed);
    net.sfu.end_play("desk", &key("s"));
    assert!(net.run_until(Duration::from_secs(30), |n| n.count(desk, failed) == 1));
    assert!(!net.sfu.session_alive("desk") && net.sfu.session_alive("kiosk"));
    assert_eq!(net.sfu.stats().players, 1);
    net.publish(publisher, 1, 5);
    net.run_until(Duration::from_millis(100), |_| false);
    assert_eq!(net.clients[kiosk].received[0], 5, "the other player still plays");
    // A second offer from the same session for the same stream replaces the first.
    let again = net.join("kiosk", "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(again)));
    assert_eq!(net.sfu.stats().players, 1);
    assert!(net.run_until(Duration::from_secs(30), |n| n.count(kiosk, failed) == 1), "the replaced one is closed");
    net.sfu.end_stream(&key("s"));
    assert!(net.run_until(Duration::from_secs(30), |n| n.count(publisher, failed) == 1));
    assert_eq!((net.sfu.stats().publishers, net.sfu.stats().players), (0, 0));
    net.sfu.end_session("door");
    assert!(!net.sfu.session_alive("door"));
}

#[test]
fn a_connection_silent_for_the_consent_lifetime_is_closed() {
    let mut net = Net::new();
    let publisher = net.join("door", "s", MediaRole::Publish);
    let player = net.join("desk", "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(5), |n| n.connected(publisher) && n.connected(player)));
    net.clients[player].cut = true;
    net.run_until(super::CONSENT_EXPIRY - Duration::from_secs(2), |_| false);
    assert_eq!(net.sfu.stats().players, 1, "kept within the consent lifetime");
    assert!(net.run_until(Duration::from_secs(4), |n| n.sfu.stats().players == 0), "closed after it");
    assert!(net.sfu.session_alive("door"), "the publisher, which kept talking, stays");
}

#[test]
fn a_device_whose_udp_is_blocked_connects_over_ice_tcp_and_media_flows() {
    let mut net = Net::new();
    let publisher = net.join("door", "s", MediaRole::Publish);
    net.clients[publisher].udp_blocked = true;
    let player = net.join("desk", "s", MediaRole::Play);
    assert!(net.run_until(Duration::from_secs(10), |n| n.connected(publisher) && n.connected(player)));
    net.publish(publisher, 1, 10);
    assert!(net.run_until(Duration::from_secs(1), |n| n.clients[player].received[0] >= 10));
    assert_eq!(net.clients[player].received, [10, 10]);
    assert_eq!(net.sfu.stats().over_tcp, 1, "the publisher's media arrives over TCP");
    assert!(net.sfu.knows(Transport::Tcp, net.clients[publisher].tcp_addr()));
    // The player, whose UDP passes, stays on UDP (preferred).
    let stats = |n: &mut Net, i: usize| {
        n.run_until(Duration::from_millis(1100), |_| false);
        n.clients[i].events.iter().rev().find_map(|e| if let ClientEvent::Stats(s) = e { Some(**s) } else { None })
    };
    assert_eq!(stats(&mut net, player).map(|s| s.path), Some(crate::rtc::client::Path::Udp));
    assert_eq!(stats(&mut net, publisher).map(|s| s.path), Some(crate::rtc::client::Path::Tcp));
}

#[test]
fn the_server_reports_a_publishers_audio_loss_back_to_it() {
    let mut net = Net::new();
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
    let mut net = Net::new();
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
    let player = net.join("desk", "s", MediaRole::Play);
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
    assert_eq!(got[0], (9, 3000, stap.to_vec()), "first the parameter sets, under the number before the keyframe's");
    let seqs: Vec<u16> = got.iter().map(|g| g.0).collect();
    assert_eq!(seqs, [9, 10, 11, 12, 13, 14], "then the keyframe and the frames since, in order");
    assert_eq!(net.count(publisher, keyframe_requested), 0, "nobody asked the publisher");
    assert_eq!(net.sfu.stats().gops_sent, 1);
}
