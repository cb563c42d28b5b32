//! A publish connection, the SFU and two play connections on 127.0.0.1, with synthetic
//! RTP: checks negotiation, forwarding, keyframe requests on join, and teardown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::client::{ClientConn, ClientEvent, RtpSink};
use super::sfu::{MediaOffer, Sfu, StreamKey};
use super::{Kind, test_rtp};
use crate::proto::MediaRole;

#[derive(Clone, Default)]
struct Count(Arc<Mutex<[u64; 2]>>);

impl RtpSink for Count {
    fn rtp(&mut self, kind: Kind, packet: &[u8]) {
        assert!(packet.len() >= 12, "an RTP header at least");
        self.0.lock().unwrap()[kind as usize] += 1;
    }
}

fn key() -> StreamKey {
    StreamKey { app_id: 1, room_id: "r".into(), stream_id: "s".into() }
}

fn offer_for(session: &str, role: MediaRole, sdp: String) -> MediaOffer {
    MediaOffer { session: session.into(), stream: key(), role, sdp }
}

async fn connect(
    sfu: &Sfu,
    session: &str,
    role: MediaRole,
    sink: Option<Box<dyn RtpSink>>,
) -> (ClientConn, mpsc::Receiver<ClientEvent>) {
    connect_via(sfu, session, role, sink, |a| a).await
}

/// Like `connect`, with the SFU's answer passed through `edit` first (to point the client
/// at a relay).
async fn connect_via(
    sfu: &Sfu,
    session: &str,
    role: MediaRole,
    sink: Option<Box<dyn RtpSink>>,
    edit: impl Fn(String) -> String,
) -> (ClientConn, mpsc::Receiver<ClientEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let events = move |e| {
        let _ = tx.try_send(e);
    };
    let (conn, offer) =
        ClientConn::start(role, "127.0.0.1:0".parse().unwrap(), Default::default(), sink, events).unwrap();
    let answer = sfu.offer(offer_for(session, role, offer)).await.unwrap();
    assert!(conn.answer(edit(answer)), "the connection takes the answer");
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("connects within 10 s") {
            Some(ClientEvent::Connected) => break,
            Some(ClientEvent::Failed) | None => panic!("connection failed"),
            _ => {}
        }
    }
    (conn, rx)
}

#[tokio::test]
async fn publish_forwards_to_every_player() {
    let sfu = Sfu::start("127.0.0.1:0".parse().unwrap(), vec![], Some(0), 2).unwrap();
    let (publisher, _pub_events) = connect(&sfu, "p", MediaRole::Publish, None).await;
    let tx = publisher.rtp_sender();
    // Media flows continuously, as from an encoder.
    let feeder = tokio::spawn(async move {
        for seq in 0u16.. {
            let _ = tx.send((Kind::Video, test_rtp(Kind::Video, seq))).await;
            let _ = tx.send((Kind::Audio, test_rtp(Kind::Audio, seq))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (a, b) = (Count::default(), Count::default());
    let (_pa, _) = connect(&sfu, "a", MediaRole::Play, Some(Box::new(a.clone()))).await;
    let (_pb, _) = connect(&sfu, "b", MediaRole::Play, Some(Box::new(b.clone()))).await;

    let all = async {
        loop {
            let (va, vb) = (*a.0.lock().unwrap(), *b.0.lock().unwrap());
            if va[0] >= 90 && va[1] >= 90 && vb[0] >= 90 && vb[1] >= 90 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all).await.expect("both players receive >= 90% of both kinds");
    feeder.abort();
    let stats = sfu.stats().await.unwrap();
    assert_eq!((stats.publishers, stats.players, stats.shards), (1, 2, 2), "two shards, one socket each");
    // Each joining player was sent the kept GOP or made the SFU ask the publisher.
    assert!(stats.keyframe_requests + stats.gops_sent >= 2, "{stats:?}");
    assert!(stats.packets_out >= stats.packets_in, "{stats:?}");

    sfu.end_stream(key());
    let stats = sfu.stats().await.unwrap();
    assert_eq!((stats.publishers, stats.players), (0, 0));
}

#[tokio::test]
async fn garbage_offer_is_refused_and_the_sfu_lives_on() {
    let sfu = Sfu::start("127.0.0.1:0".parse().unwrap(), vec![], Some(0), 2).unwrap();
    assert!(sfu.offer(offer_for("x", MediaRole::Publish, "not sdp".into())).await.is_err());
    assert!(sfu.offer(offer_for("x", MediaRole::Play, "v=0\r\n".into())).await.is_err());
    // A well-formed offer that only sends VP8: nothing the SFU could forward.
    let vp8 = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n\
               m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\n\
               a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
               a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
               a=setup:actpass\r\na=rtcp-mux\r\na=rtpmap:96 VP8/90000\r\na=ssrc:1 cname:x\r\n";
    let err = sfu.offer(offer_for("x", MediaRole::Publish, vp8.into())).await.unwrap_err();
    assert!(matches!(err, super::RtcError::BadSdp(_)), "{err}");
    let (_p, _) = connect(&sfu, "p", MediaRole::Publish, None).await;
    assert_eq!(sfu.stats().await.unwrap().publishers, 1);
}

/// Unique video sequence numbers a player received.
#[derive(Clone, Default)]
struct Seqs(Arc<Mutex<std::collections::HashSet<u16>>>);

impl RtpSink for Seqs {
    fn rtp(&mut self, kind: Kind, packet: &[u8]) {
        if kind == Kind::Video {
            self.0.lock().unwrap().insert(u16::from_be_bytes([packet[2], packet[3]]));
        }
    }
}

/// A UDP relay between one player and the SFU that drops `percent` % of the RTP/RTCP the
/// SFU sends (never STUN or DTLS, so the connection itself comes up).
async fn lossy_relay(sfu: std::net::SocketAddr, percent: u32) -> std::net::SocketAddr {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut player = None;
        let mut buf = vec![0u8; 2048];
        let mut n_seen = 0u32;
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if from == sfu {
                let media = (128..=191).contains(&buf[0]);
                n_seen = n_seen.wrapping_add(1);
                // Deterministic: drop `percent` of every 100 media datagrams.
                if media && n_seen % 100 < percent {
                    continue;
                }
                if let Some(p) = player {
                    let _ = sock.send_to(&buf[..n], p).await;
                }
            } else {
                player = Some(from);
                let _ = sock.send_to(&buf[..n], sfu).await;
            }
        }
    });
    addr
}

#[tokio::test]
async fn nack_repairs_loss_between_the_sfu_and_a_player() {
    let sfu = Sfu::start("127.0.0.1:0".parse().unwrap(), vec![], Some(0), 2).unwrap();
    let (publisher, _) = connect(&sfu, "p", MediaRole::Publish, None).await;
    let tx = publisher.rtp_sender();
    let feeder = tokio::spawn(async move {
        for seq in 0u16.. {
            let _ = tx.send((Kind::Video, test_rtp(Kind::Video, seq))).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // The player reaches the SFU through a relay that drops 15 % of the media.
    let relay = lossy_relay(sfu.addr, 15).await;
    let seqs = Seqs::default();
    let sfu_port = format!(" {} typ host", sfu.addr.port());
    let via_relay = |answer: String| answer.replace(&sfu_port, &format!(" {} typ host", relay.port()));
    let (_player, _) = connect_via(&sfu, "v", MediaRole::Play, Some(Box::new(seqs.clone())), via_relay).await;
    // Watch a window of 400 sequence numbers that started after the player was connected.
    let start = loop {
        if let Some(m) = seqs.0.lock().unwrap().iter().max() {
            break m.wrapping_add(20);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let window: Vec<u16> = (0..400).map(|i| start.wrapping_add(i)).collect();
    let got = || window.iter().filter(|s| seqs.0.lock().unwrap().contains(s)).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while got() < 396 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    feeder.abort();
    // Without retransmission about 85 % would arrive.
    assert!(got() >= 396, "{} of 400 packets arrived despite 15 % loss", got());
}

/// An ICE-TCP listener whose every accept fails at once, as when the server is out of
/// descriptors.
struct FailingAccept(Arc<std::sync::atomic::AtomicU64>);

impl super::sfu::accept::Acceptor for FailingAccept {
    async fn accept(&mut self) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Err(std::io::Error::from_raw_os_error(24)) // EMFILE
    }
}

/// Arrival times of a player's video packets.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<std::time::Instant>>>);

impl RtpSink for Arrivals {
    fn rtp(&mut self, kind: Kind, _packet: &[u8]) {
        if kind == Kind::Video {
            self.0.lock().unwrap().push(std::time::Instant::now());
        }
    }
}

#[tokio::test]
async fn failing_ice_tcp_accepts_do_not_hold_up_forwarding() {
    let attempts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let a = attempts.clone();
    let sfu = Sfu::start_with("127.0.0.1:0".parse().unwrap(), vec![], Some(0), 2, move |_| FailingAccept(a)).unwrap();
    let (publisher, _) = connect(&sfu, "p", MediaRole::Publish, None).await;
    let tx = publisher.rtp_sender();
    let feeder = tokio::spawn(async move {
        for seq in 0u16.. {
            let _ = tx.send((Kind::Video, test_rtp(Kind::Video, seq))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let arrivals = Arrivals::default();
    let (_player, _) = connect(&sfu, "v", MediaRole::Play, Some(Box::new(arrivals.clone()))).await;
    // Watch 3 s of forwarding once the first packets are through.
    let first = loop {
        if let Some(t) = arrivals.0.lock().unwrap().first() {
            break *t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    while first.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    feeder.abort();
    let times = arrivals.0.lock().unwrap().clone();
    let window: Vec<_> = times.iter().filter(|t| t.duration_since(first) < Duration::from_secs(3)).collect();
    // A pause on each failed accept in the SFU's loop (what this guards against) shows as a
    // gap of ~200 ms every few packets; a busy machine may make one or two.
    let gaps = window.windows(2).filter(|w| w[1].duration_since(*w[0]) >= Duration::from_millis(150)).count();
    assert!(window.len() >= 150, "{} of ~300 packets forwarded in 3 s", window.len());
    assert!(gaps <= 2, "{gaps} gaps of 150 ms or more in the forwarded video");
    assert!(attempts.load(std::sync::atomic::Ordering::Relaxed) >= 5, "the accepts were tried and failed");
}
