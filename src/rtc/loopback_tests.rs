//! A publish connection, the SFU and two play connections on 127.0.0.1, with synthetic
//! RTP: checks negotiation, forwarding, keyframe requests on join, and teardown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rtc::shared::marshal::Marshal;
use tokio::sync::mpsc;

use super::client::{ClientConn, ClientEvent, Role, RtpSink};
use super::sfu::{Sfu, StreamKey};
use super::{H264_PT, Kind, OPUS_PT};

#[derive(Clone, Default)]
struct Count(Arc<Mutex<[u64; 2]>>);

impl RtpSink for Count {
    fn rtp(&mut self, kind: Kind, packet: &[u8]) {
        assert!(packet.len() >= 12, "an RTP header at least");
        self.0.lock().unwrap()[kind as usize] += 1;
    }
}

fn packet(pt: u8, seq: u16) -> Bytes {
    let p = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: pt,
            sequence_number: seq,
            timestamp: seq as u32 * 3000,
            ssrc: 42,
            marker: true,
            ..Default::default()
        },
        payload: Bytes::from(vec![0x65u8; 200]),
    };
    p.marshal().unwrap().freeze()
}

fn key() -> StreamKey {
    StreamKey { app_id: 1, room_id: "r".into(), stream_id: "s".into() }
}

async fn connect(
    sfu: &Sfu,
    session: &str,
    role: Role,
    sink: Option<Box<dyn RtpSink>>,
) -> (ClientConn, mpsc::Receiver<ClientEvent>) {
    let (tx, mut rx) = mpsc::channel(64);
    let conn = ClientConn::start(role, "127.0.0.1:0".parse().unwrap(), sink, tx).unwrap();
    let Some(ClientEvent::Offer(offer)) = rx.recv().await else { panic!("no offer") };
    let answer = sfu.offer(session, key(), role, offer).await.unwrap();
    conn.answer(answer);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("connects within 10 s") {
            Some(ClientEvent::Connected) => break,
            Some(ClientEvent::Disconnected) | None => panic!("connection failed"),
            _ => {}
        }
    }
    (conn, rx)
}

#[tokio::test]
async fn publish_forwards_to_every_player() {
    let sfu = Sfu::start("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
    let (publisher, mut pub_events) = connect(&sfu, "p", Role::Publish, None).await;
    let tx = publisher.rtp_sender();
    // Media flows continuously, as from an encoder.
    let feeder = tokio::spawn(async move {
        for seq in 0u16.. {
            let _ = tx.send((Kind::Video, packet(H264_PT, seq))).await;
            let _ = tx.send((Kind::Audio, packet(OPUS_PT, seq))).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let (a, b) = (Count::default(), Count::default());
    let (_pa, _) = connect(&sfu, "a", Role::Play, Some(Box::new(a.clone()))).await;
    let (_pb, _) = connect(&sfu, "b", Role::Play, Some(Box::new(b.clone()))).await;

    // Players joining make the SFU ask the publisher for a keyframe.
    let asked = async {
        while let Some(e) = pub_events.recv().await {
            if matches!(e, ClientEvent::KeyframeRequested) {
                return true;
            }
        }
        false
    };
    assert!(tokio::time::timeout(Duration::from_secs(5), asked).await.unwrap_or(false), "no keyframe request");

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
    assert_eq!((stats.publishers, stats.players), (1, 2));
    assert!(stats.keyframe_requests >= 2, "{stats:?}");
    assert!(stats.packets_out >= stats.packets_in, "{stats:?}");

    sfu.end_stream(key());
    let stats = sfu.stats().await.unwrap();
    assert_eq!((stats.publishers, stats.players), (0, 0));
}

#[tokio::test]
async fn garbage_offer_is_refused_and_the_sfu_lives_on() {
    let sfu = Sfu::start("127.0.0.1:0".parse().unwrap(), vec![]).unwrap();
    assert!(sfu.offer("x", key(), Role::Publish, "not sdp".into()).await.is_err());
    assert!(sfu.offer("x", key(), Role::Play, "v=0\r\n".into()).await.is_err());
    let (_p, _) = connect(&sfu, "p", Role::Publish, None).await;
    assert_eq!(sfu.stats().await.unwrap().publishers, 1);
}
