//! A publisher's RTP on its way to the current publish connection.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use crate::rtc::Kind;

/// Where a publisher's RTP goes, with sequence numbers and timestamps kept continuous
/// across pipeline rebuilds (a new pipeline starts both at random values; players' jitter
/// buffers would take the jump for a new stream and wait).
#[derive(Default)]
pub(super) struct RtpSlot {
    pub(super) tx: Option<mpsc::Sender<(Kind, Bytes)>>,
    kinds: [Continuity; 2],
}

#[derive(Default)]
struct Continuity {
    epoch: u64,
    seq_offset: u16,
    ts_offset: u32,
    last: Option<(u16, u32, Instant)>,
}

impl RtpSlot {
    /// Rewrites sequence number and timestamp in place and hands the packet on.
    pub(super) fn send(&mut self, epoch: u64, kind: Kind, mut bytes: BytesMut) {
        let Some(tx) = &self.tx else { return };
        if bytes.len() < 12 {
            return;
        }
        let c = &mut self.kinds[kind as usize];
        let seq = u16::from_be_bytes([bytes[2], bytes[3]]);
        let ts = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if c.epoch != epoch {
            c.epoch = epoch;
            if let Some((last_seq, last_ts, at)) = c.last {
                let clock = if kind == Kind::Video { 90_000.0 } else { 48_000.0 };
                let gap = (at.elapsed().as_secs_f64() * clock) as u32;
                c.seq_offset = last_seq.wrapping_add(1).wrapping_sub(seq);
                c.ts_offset = last_ts.wrapping_add(gap.max(1)).wrapping_sub(ts);
            }
        }
        let (seq, ts) = (seq.wrapping_add(c.seq_offset), ts.wrapping_add(c.ts_offset));
        c.last = Some((seq, ts, Instant::now()));
        bytes[2..4].copy_from_slice(&seq.to_be_bytes());
        bytes[4..8].copy_from_slice(&ts.to_be_bytes());
        let _ = tx.try_send((kind, bytes.freeze()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16, ts: u32) -> BytesMut {
        let mut b = vec![0x80, 102];
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        BytesMut::from(&b[..])
    }

    #[test]
    fn rtp_stays_continuous_across_pipeline_rebuilds() {
        let (tx, mut rx) = mpsc::channel(8);
        let mut slot = RtpSlot { tx: Some(tx), ..Default::default() };
        slot.send(1, Kind::Video, rtp(100, 5000));
        slot.send(1, Kind::Video, rtp(101, 8000));
        slot.send(2, Kind::Video, rtp(40000, 777)); // a rebuilt pipeline starts elsewhere
        slot.send(2, Kind::Video, rtp(40001, 3777));
        let mut got = Vec::new();
        while let Ok((_, b)) = rx.try_recv() {
            got.push((u16::from_be_bytes([b[2], b[3]]), u32::from_be_bytes([b[4], b[5], b[6], b[7]])));
        }
        assert_eq!(got[0], (100, 5000));
        assert_eq!(got[1], (101, 8000));
        assert_eq!(got[2].0, 102);
        assert!(got[2].1 > 8000 && got[2].1 < 8000 + 90_000, "{got:?}");
        assert_eq!((got[3].0, got[3].1 - got[2].1), (103, 3000));
    }
}
