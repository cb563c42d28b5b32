//! Each published stream's latest complete H.264 keyframe, as the RTP packets it came in:
//! what a snapshot decodes (`GET .../snapshot.jpg`), with no need to ask the publisher or
//! to decode anything per packet. And the picture so far since it (the group of pictures,
//! GOP): what a player that joins is sent at once, so its first frame needs no round trip
//! to the publisher's encoder (and no other player gets a keyframe it did not need).
//!
//! A keyframe starts at a packet carrying an SPS or an IDR slice with a new RTP timestamp,
//! takes every packet of that timestamp, and is complete at the marker bit when its
//! sequence numbers have no gap; only then does it replace the kept one. Its parameter sets
//! (SPS/PPS) are put first: a packetizer may send the IDR's first slice before them
//! (GStreamer's rtph264pay with x264's sliced threads does), and a decoder that starts
//! there drops that slice and waits for the next keyframe (measured: a late joiner's first
//! frame ~1.1 s instead of ~25 ms). In the GOP they are copies sent just before the
//! keyframe, under the sequence numbers just before its own, which that player never saw.
//! A keyframe without parameter sets (x264 sends some) gets the last ones the stream sent. Bounded: a frame
//! of more than [`MAX_PACKETS`] packets is not kept.

use std::collections::HashMap;

use super::StreamKey;

/// The most packets one kept keyframe may have (a 1080p keyframe is ~100-300).
pub const MAX_PACKETS: usize = 1024;
/// The most packets a kept GOP may have: 2 s of 720p at 1.5 Mbit/s is ~300. A longer GOP
/// is not kept (a joining player then asks the publisher, as without one).
pub const MAX_GOP: usize = 1024;

#[derive(Debug, Default)]
struct Building {
    ts: u32,
    packets: Vec<rtc::rtp::Packet>,
}

#[derive(Debug, Default)]
struct Slot {
    building: Option<Building>,
    done: Option<Keyframe>,
    /// The latest complete keyframe's packets, then every video packet since, as received.
    gop: Option<Vec<rtc::rtp::Packet>>,
    /// The latest parameter sets (SPS/PPS packets) a keyframe carried: not every IDR
    /// repeats them (x264 sends some without).
    params: Vec<rtc::rtp::Packet>,
}

/// A complete keyframe: its RTP timestamp and its packets' payloads in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyframe {
    /// The RTP timestamp (90 kHz).
    pub ts: u32,
    /// The payloads (RFC 6184), in sequence order.
    pub payloads: Vec<bytes::Bytes>,
}

impl Keyframe {
    /// The packets as RTP datagrams (payload type 96, a fixed SSRC, sequence numbers from
    /// 0, the marker on the last), for a depayloader.
    pub fn rtp(&self) -> Vec<Vec<u8>> {
        let n = self.payloads.len();
        self.payloads
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut b = Vec::with_capacity(12 + p.len());
                b.push(0x80);
                b.push(96 | if i + 1 == n { 0x80 } else { 0 });
                b.extend_from_slice(&(i as u16).to_be_bytes());
                b.extend_from_slice(&self.ts.to_be_bytes());
                b.extend_from_slice(&0x5eed_u32.to_be_bytes());
                b.extend_from_slice(p);
                b
            })
            .collect()
    }
}

impl Slot {
    fn observe(&mut self, packet: &rtc::rtp::Packet, starts: bool) {
        let h = &packet.header;
        if let Some(g) = &mut self.gop {
            if g.len() < MAX_GOP {
                g.push(packet.clone());
            } else {
                self.gop = None;
            }
        }
        match &mut self.building {
            Some(b) if b.ts == h.timestamp => {
                if b.packets.len() >= MAX_PACKETS {
                    self.building = None;
                    return;
                }
                b.packets.push(packet.clone());
            }
            _ if starts => self.building = Some(Building { ts: h.timestamp, packets: vec![packet.clone()] }),
            _ => {
                self.building = None;
                return;
            }
        }
        if h.marker
            && let Some(mut b) = self.building.take()
        {
            // Order by sequence from the first one seen (wrapping), and require no gap.
            let seq = |p: &rtc::rtp::Packet| p.header.sequence_number;
            let first = b.packets.iter().map(seq).min_by_key(|s| s.wrapping_sub(seq(&b.packets[0])) as i16);
            let Some(first) = first else { return };
            b.packets.sort_by_key(|p| seq(p).wrapping_sub(first));
            b.packets.dedup_by_key(|p| seq(p));
            let whole = b.packets.iter().enumerate().all(|(i, p)| seq(p).wrapping_sub(first) as usize == i);
            if whole {
                let here: Vec<rtc::rtp::Packet> =
                    b.packets.iter().filter(|p| parameter_sets(&p.payload)).cloned().collect();
                if !here.is_empty() {
                    self.params = here;
                }
                let params: Vec<rtc::rtp::Packet> = self
                    .params
                    .iter()
                    .cloned()
                    .map(|mut p| {
                        p.header.timestamp = b.ts;
                        p
                    })
                    .collect();
                let mut gop = Vec::with_capacity(params.len() + b.packets.len());
                if !b.packets.first().is_some_and(|p| parameter_sets(&p.payload)) {
                    let n = params.len() as u16;
                    gop.extend(params.iter().cloned().zip(1..).map(|(mut p, i)| {
                        p.header.sequence_number = first.wrapping_sub(n + 1 - i);
                        p.header.marker = false;
                        p
                    }));
                }
                let rest = b.packets.iter().filter(|p| !parameter_sets(&p.payload));
                let payloads = params.iter().chain(rest).map(|p| p.payload.clone()).collect();
                self.done = Some(Keyframe { ts: b.ts, payloads });
                gop.extend(b.packets);
                self.gop = Some(gop);
            }
        }
    }
}

/// True if an H.264 RTP payload is an SPS or a PPS, alone or first in a STAP-A.
fn parameter_sets(payload: &[u8]) -> bool {
    let nal = match payload.first().map(|b| b & 0x1f) {
        Some(24) => payload.get(3).map(|b| b & 0x1f),
        t => t,
    };
    matches!(nal, Some(7 | 8))
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Keyframes {
    streams: HashMap<StreamKey, Slot>,
}

impl Keyframes {
    /// A video packet of `stream` was received.
    pub fn observe(&mut self, stream: &StreamKey, packet: &rtc::rtp::Packet) {
        self.observe_all(stream, [packet]);
    }

    /// Video packets of `stream`, as they came: the stream is looked up once for all of
    /// them (this runs for every forwarded batch).
    pub fn observe_all<'a>(&mut self, stream: &StreamKey, packets: impl IntoIterator<Item = &'a rtc::rtp::Packet>) {
        let mut slot = self.streams.get_mut(stream);
        for packet in packets {
            let starts = crate::rtc::repair::h264_key(&packet.payload);
            if slot.is_none() && starts {
                slot = Some(self.streams.entry(stream.clone()).or_default());
            }
            if let Some(s) = slot.as_deref_mut() {
                s.observe(packet, starts);
            }
        }
    }

    /// The stream's pictures since its latest complete keyframe (that keyframe first, with
    /// its SPS/PPS), as received; none when none was complete or the GOP outgrew
    /// [`MAX_GOP`].
    pub fn gop(&self, stream: &StreamKey) -> Option<&[rtc::rtp::Packet]> {
        self.streams.get(stream)?.gop.as_deref()
    }

    /// The stream's latest complete keyframe.
    pub fn latest(&self, stream: &StreamKey) -> Option<&Keyframe> {
        self.streams.get(stream)?.done.as_ref()
    }

    /// The stream ended.
    pub fn forget(&mut self, stream: &StreamKey) {
        self.streams.remove(stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey { app_id: 1, room_id: "r".into(), stream_id: "s".into() }
    }

    /// An SPS alone, and a non-IDR slice.
    const SPS: bytes::Bytes = bytes::Bytes::from_static(&[0x67, 0x42, 0, 0x1f]);
    const DELTA: bytes::Bytes = bytes::Bytes::from_static(&[0x41, 1, 2]);

    /// FU-A fragments of an IDR (type 5): start, middle, end.
    fn fu(start: bool, end: bool) -> bytes::Bytes {
        let header = (0x80 * u8::from(start)) | (0x40 * u8::from(end)) | 5;
        bytes::Bytes::from(vec![0x7c, header, 1, 2, 3])
    }

    fn pkt(seq: u16, ts: u32, marker: bool, payload: &bytes::Bytes) -> rtc::rtp::Packet {
        let header = rtc::rtp::header::Header { sequence_number: seq, timestamp: ts, marker, ..Default::default() };
        rtc::rtp::Packet { header, payload: payload.clone() }
    }

    #[test]
    fn a_whole_keyframe_is_kept_and_a_broken_one_is_not() {
        let mut k = Keyframes::default();
        let (sps, delta) = (SPS, DELTA);
        k.observe(&key(), &pkt(9, 100, true, &delta));
        assert!(k.latest(&key()).is_none(), "no keyframe seen");
        k.observe(&key(), &pkt(10, 200, false, &sps));
        k.observe(&key(), &pkt(12, 200, false, &fu(false, false))); // reordered
        k.observe(&key(), &pkt(11, 200, false, &fu(true, false)));
        k.observe(&key(), &pkt(13, 200, true, &fu(false, true)));
        let f = k.latest(&key()).unwrap().clone();
        assert_eq!((f.ts, f.payloads.len()), (200, 4));
        assert_eq!(f.payloads[0], sps);
        assert_eq!(f.payloads[1], fu(true, false), "put back in sequence order");
        let rtp = f.rtp();
        assert_eq!(rtp[0][..2], [0x80, 96]);
        assert_eq!(rtp[3][1], 96 | 0x80, "the marker on the last");
        // Deltas do not replace it; a keyframe with a gap does not either.
        k.observe(&key(), &pkt(14, 300, true, &delta));
        k.observe(&key(), &pkt(20, 400, false, &fu(true, false)));
        k.observe(&key(), &pkt(22, 400, true, &fu(false, true)));
        assert_eq!(k.latest(&key()).unwrap().ts, 200);
        // Sequence numbers that wrap are in order too.
        k.observe(&key(), &pkt(65535, 500, false, &fu(true, false)));
        k.observe(&key(), &pkt(0, 500, true, &fu(false, true)));
        assert_eq!(k.latest(&key()).unwrap().ts, 500);
        k.forget(&key());
        assert!(k.latest(&key()).is_none());
    }

    #[test]
    fn the_gop_starts_at_the_keyframe_with_its_sps_and_follows_it() {
        let mut k = Keyframes::default();
        let (sps, delta) = (SPS, DELTA);
        k.observe(&key(), &pkt(9, 100, true, &delta));
        assert!(k.gop(&key()).is_none(), "no keyframe yet: nothing a player could start on");
        k.observe(&key(), &pkt(10, 200, false, &sps));
        k.observe(&key(), &pkt(11, 200, false, &fu(true, false)));
        assert!(k.gop(&key()).is_none(), "a keyframe still arriving is no start");
        k.observe(&key(), &pkt(12, 200, true, &fu(false, true)));
        k.observe(&key(), &pkt(13, 300, true, &delta));
        let gop = k.gop(&key()).unwrap();
        let seqs: Vec<u16> = gop.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [10, 11, 12, 13]);
        assert_eq!(gop[0].payload, sps, "the first packet a joining player gets is the SPS");
        // A longer GOP than kept: none, until the next keyframe starts one again.
        for i in 0..MAX_GOP as u16 {
            k.observe(&key(), &pkt(14 + i, 400 + u32::from(i), true, &delta));
        }
        assert!(k.gop(&key()).is_none());
        assert_eq!(k.latest(&key()).unwrap().ts, 200, "the snapshot's keyframe stays");
        let next = 14 + MAX_GOP as u16;
        k.observe(&key(), &pkt(next, 9000, true, &sps));
        assert_eq!(k.gop(&key()).unwrap().len(), 1);
    }

    #[test]
    fn parameter_sets_sent_after_the_first_slice_go_first() {
        // As rtph264pay sends x264's sliced keyframe: a slice, the SPS/PPS in a STAP-A, slices.
        let mut k = Keyframes::default();
        let stap = bytes::Bytes::from_static(&[0x78, 0, 4, 0x67, 0x42, 0, 0x1f, 0, 2, 0x68, 0xce]);
        let delta = DELTA;
        k.observe(&key(), &pkt(100, 7, false, &fu(true, true)));
        k.observe(&key(), &pkt(101, 7, false, &stap));
        k.observe(&key(), &pkt(102, 7, true, &fu(true, true)));
        k.observe(&key(), &pkt(103, 8, true, &delta));
        let gop = k.gop(&key()).unwrap();
        let seqs: Vec<u16> = gop.iter().map(|p| p.header.sequence_number).collect();
        assert_eq!(seqs, [99, 100, 101, 102, 103], "a copy of the STAP-A under the number before the keyframe's");
        assert_eq!(gop[0].payload, stap);
        assert!(!gop[0].header.marker);
        assert_eq!(gop[0].header.timestamp, 7);
        let f = k.latest(&key()).unwrap();
        assert_eq!(
            f.payloads,
            [stap.clone(), fu(true, true), fu(true, true)],
            "the snapshot's keyframe starts with them too"
        );
        // The next keyframe carries none: it gets the last ones, under its own timestamp.
        k.observe(&key(), &pkt(104, 9, true, &fu(true, true)));
        let gop = k.gop(&key()).unwrap();
        let heads: Vec<(u16, u32)> = gop.iter().map(|p| (p.header.sequence_number, p.header.timestamp)).collect();
        assert_eq!(heads, [(103, 9), (104, 9)]);
        assert_eq!(gop[0].payload, stap);
        assert_eq!(k.latest(&key()).unwrap().payloads, [stap, fu(true, true)]);
    }
}
