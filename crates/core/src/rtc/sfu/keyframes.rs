//! Each published stream's latest complete H.264 keyframe, as the RTP packets it came in:
//! what a snapshot decodes (`GET .../snapshot.jpg`), with no need to ask the publisher or
//! to decode anything per packet.
//!
//! A keyframe starts at a packet carrying an SPS or an IDR slice with a new RTP timestamp,
//! takes every packet of that timestamp, and is complete at the marker bit when its
//! sequence numbers have no gap; only then does it replace the kept one. Bounded: a frame
//! of more than [`MAX_PACKETS`] packets is not kept.

use std::collections::HashMap;

use super::StreamKey;

/// The most packets one kept keyframe may have (a 1080p keyframe is ~100-300).
pub const MAX_PACKETS: usize = 1024;

#[derive(Debug, Default)]
struct Building {
    ts: u32,
    packets: Vec<(u16, bytes::Bytes)>,
}

#[derive(Debug, Default)]
struct Slot {
    building: Option<Building>,
    done: Option<Keyframe>,
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
    fn observe(&mut self, seq: u16, ts: u32, marker: bool, payload: &bytes::Bytes, starts: bool) {
        match &mut self.building {
            Some(b) if b.ts == ts => {
                if b.packets.len() >= MAX_PACKETS {
                    self.building = None;
                    return;
                }
                b.packets.push((seq, payload.clone()));
            }
            _ if starts => self.building = Some(Building { ts, packets: vec![(seq, payload.clone())] }),
            _ => {
                self.building = None;
                return;
            }
        }
        if marker && let Some(mut b) = self.building.take() {
            // Order by sequence from the first one seen (wrapping), and require no gap.
            let first = b.packets.iter().map(|(s, _)| *s).min_by_key(|s| s.wrapping_sub(b.packets[0].0) as i16);
            let Some(first) = first else { return };
            b.packets.sort_by_key(|(s, _)| s.wrapping_sub(first));
            b.packets.dedup_by_key(|(s, _)| *s);
            let whole = b.packets.iter().enumerate().all(|(i, (s, _))| s.wrapping_sub(first) as usize == i);
            if whole {
                self.done = Some(Keyframe { ts, payloads: b.packets.into_iter().map(|(_, p)| p).collect() });
            }
        }
    }
}

/// See the module docs.
#[derive(Debug, Default)]
pub struct Keyframes {
    streams: HashMap<StreamKey, Slot>,
}

impl Keyframes {
    /// A video packet of `stream` was received.
    pub fn observe(&mut self, stream: &StreamKey, seq: u16, ts: u32, marker: bool, payload: &bytes::Bytes) {
        self.observe_all(stream, [(seq, ts, marker, payload)]);
    }

    /// Video packets of `stream`, as they came: the stream is looked up once for all of
    /// them (this runs for every forwarded batch).
    pub fn observe_all<'a>(
        &mut self,
        stream: &StreamKey,
        packets: impl IntoIterator<Item = (u16, u32, bool, &'a bytes::Bytes)>,
    ) {
        let mut slot = self.streams.get_mut(stream);
        for (seq, ts, marker, payload) in packets {
            let starts = crate::rtc::repair::h264_key(payload);
            if slot.is_none() && starts {
                slot = Some(self.streams.entry(stream.clone()).or_default());
            }
            if let Some(s) = slot.as_deref_mut() {
                s.observe(seq, ts, marker, payload, starts);
            }
        }
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

    /// FU-A fragments of an IDR (type 5): start, middle, end.
    fn fu(start: bool, end: bool) -> bytes::Bytes {
        let header = (0x80 * u8::from(start)) | (0x40 * u8::from(end)) | 5;
        bytes::Bytes::from(vec![0x7c, header, 1, 2, 3])
    }

    #[test]
    fn a_whole_keyframe_is_kept_and_a_broken_one_is_not() {
        let mut k = Keyframes::default();
        let sps = bytes::Bytes::from_static(&[0x67, 0x42, 0, 0x1f]);
        let delta = bytes::Bytes::from_static(&[0x41, 1, 2]);
        k.observe(&key(), 9, 100, true, &delta);
        assert!(k.latest(&key()).is_none(), "no keyframe seen");
        k.observe(&key(), 10, 200, false, &sps);
        k.observe(&key(), 12, 200, false, &fu(false, false)); // reordered
        k.observe(&key(), 11, 200, false, &fu(true, false));
        k.observe(&key(), 13, 200, true, &fu(false, true));
        let f = k.latest(&key()).unwrap().clone();
        assert_eq!((f.ts, f.payloads.len()), (200, 4));
        assert_eq!(f.payloads[0], sps);
        assert_eq!(f.payloads[1], fu(true, false), "put back in sequence order");
        let rtp = f.rtp();
        assert_eq!(rtp[0][..2], [0x80, 96]);
        assert_eq!(rtp[3][1], 96 | 0x80, "the marker on the last");
        // Deltas do not replace it; a keyframe with a gap does not either.
        k.observe(&key(), 14, 300, true, &delta);
        k.observe(&key(), 20, 400, false, &fu(true, false));
        k.observe(&key(), 22, 400, true, &fu(false, true));
        assert_eq!(k.latest(&key()).unwrap().ts, 200);
        // Sequence numbers that wrap are in order too.
        k.observe(&key(), 65535, 500, false, &fu(true, false));
        k.observe(&key(), 0, 500, true, &fu(false, true));
        assert_eq!(k.latest(&key()).unwrap().ts, 500);
        k.forget(&key());
        assert!(k.latest(&key()).is_none());
    }
}
