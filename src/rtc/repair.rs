//! Loss repair around the `rtc` crate's NACK, RTX and FlexFEC: an interceptor that turns
//! received retransmissions (RFC 4588) back into the packets they repair *before* the NACK
//! generator looks for gaps, and counts what was repaired; and, for audio, which lost Opus
//! frames the receiver's in-band FEC can rebuild (the frame after a loss carries a coarse
//! copy of it, RFC 6716 §2.1.7, when the sender put one in).
//!
//! Why the interceptor: the `rtc` crate undoes RTX only on its way to the application,
//! after the interceptor chain, so its NACK generator never sees the repaired sequence
//! number and asks again for a packet that already arrived (measured: every lost packet
//! retransmitted `MAX_NACKS` times). Here the retransmission becomes the original packet at
//! slot 6 500, between the FEC decoder and the NACK generator, as FEC-rebuilt packets are.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

/// Packets repaired on one connection's receiving side, shared with the core that reads
/// them once a second (the interceptor itself is owned by the peer connection).
#[derive(Debug, Default)]
pub(crate) struct RepairCounters {
    /// Retransmissions (RTX) that arrived and were turned back into media.
    pub rtx: AtomicU64,
    /// Media packets the FlexFEC decoder rebuilt.
    pub fec: AtomicU64,
}

impl RepairCounters {
    /// (retransmitted, rebuilt by FEC) so far.
    pub(crate) fn read(&self) -> (u64, u64) {
        (self.rtx.load(Ordering::Relaxed), self.fec.load(Ordering::Relaxed))
    }
}

/// The interceptor: RTX back to media, and counts.
pub(crate) struct UnwrapRtx {
    /// RTX SSRC -> (media SSRC, media payload type).
    rtx: HashMap<u32, (u32, u8)>,
    counters: Arc<RepairCounters>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl UnwrapRtx {
    pub(crate) fn new(counters: Arc<RepairCounters>) -> Self {
        UnwrapRtx { rtx: HashMap::new(), counters, reads: VecDeque::new(), writes: VecDeque::new() }
    }
}

/// RFC 4588 §4: the RTX payload is the original sequence number, then the original
/// payload. The packet becomes the original (SSRC, payload type, sequence number); None if
/// it has no original in it (padding used as a bandwidth probe).
fn unwrap_rtx(packet: &mut rtc::rtp::Packet, ssrc: u32, pt: u8) -> Option<()> {
    if packet.payload.len() < 2 {
        return None;
    }
    let osn = u16::from_be_bytes([packet.payload[0], packet.payload[1]]);
    packet.payload = Bytes::copy_from_slice(&packet.payload[2..]);
    packet.header.ssrc = ssrc;
    packet.header.payload_type = pt;
    packet.header.sequence_number = osn;
    packet.header.padding = false;
    Some(())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for UnwrapRtx {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if msg.message.has(&Attribute::RecoveredByFec) {
            self.counters.fec.fetch_add(1, Ordering::Relaxed);
        }
        if let Packet::Rtp(p) = &mut msg.message.packet
            && let Some(&(ssrc, pt)) = self.rtx.get(&p.header.ssrc)
        {
            if unwrap_rtx(p, ssrc, pt).is_none() {
                return Ok(());
            }
            self.counters.rtx.fetch_add(1, Ordering::Relaxed);
        }
        self.reads.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<TaggedPacket> {
        self.reads.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.writes.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<TaggedPacket> {
        self.writes.pop_front()
    }
}

impl Interceptor for UnwrapRtx {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, info: &StreamInfo) {
        if let (Some(rtx), Some(_)) = (info.ssrc_rtx, info.payload_type_rtx) {
            self.rtx.insert(rtx, (info.ssrc, info.payload_type));
        }
    }
    fn unbind_remote_stream(&mut self, info: &StreamInfo) {
        self.rtx.retain(|_, (media, _)| *media != info.ssrc);
    }
}

/// True if this Opus packet carries in-band FEC for the frame before it (an LBRR frame):
/// a single-frame packet (code 0, as callbox's 20 ms frames are) in a SILK or hybrid mode
/// whose range-coded header has the LBRR flag set (RFC 6716 §4.2.3: after the VAD flag,
/// both coded with probability one half). CELT-only packets never carry it.
pub(crate) fn opus_has_fec(payload: &[u8]) -> bool {
    let Some(&toc) = payload.first() else { return false };
    let config = toc >> 3;
    // Configs 0-11 are SILK-only, 12-15 hybrid; code 0 is one frame; mono only (a stereo
    // packet has a VAD and LBRR flag per channel, side channel after mid).
    if config > 15 || toc & 0x03 != 0 || toc & 0x04 != 0 {
        return false;
    }
    let mut dec = RangeDecoder::new(&payload[1..]);
    let _vad = dec.bit();
    dec.bit()
}

/// Just enough of Opus's range decoder (RFC 6716 §4.1) to read the first flags.
struct RangeDecoder<'a> {
    data: &'a [u8],
    pos: usize,
    rem: u32,
    rng: u32,
    val: u32,
}

impl<'a> RangeDecoder<'a> {
    fn new(data: &'a [u8]) -> Self {
        let mut d = RangeDecoder { data, pos: 0, rem: 0, rng: 128, val: 0 };
        d.rem = d.byte();
        d.val = d.rng - 1 - (d.rem >> 1);
        d.normalize();
        d
    }

    fn byte(&mut self) -> u32 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        u32::from(b)
    }

    fn normalize(&mut self) {
        while self.rng <= 1 << 23 {
            self.rng <<= 8;
            let sym = self.rem;
            self.rem = self.byte();
            let sym = ((sym << 8) | self.rem) >> 1;
            self.val = ((self.val << 8) + (255 & !sym)) & ((1 << 31) - 1);
        }
    }

    /// One symbol of probability one half.
    fn bit(&mut self) -> bool {
        let s = self.rng >> 1;
        let one = self.val < s;
        if one {
            self.rng = s;
        } else {
            self.val -= s;
            self.rng -= s;
        }
        self.normalize();
        one
    }
}

/// What a player counts of the audio it receives (after retransmission and FEC at the
/// packet level): frames that never came, and of those, the ones nothing could rebuild and
/// the decoder had to conceal (invent). A lost frame is rebuilt by Opus in-band FEC when the
/// next packet arrived and carries it; every other lost frame is concealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AudioRepair {
    /// Audio frames (packets) received.
    pub received: u64,
    /// Audio frames lost on the way.
    pub lost: u64,
    /// Lost frames the next packet's in-band FEC rebuilds.
    pub fec_rebuilt: u64,
}

impl AudioRepair {
    /// Lost frames the decoder conceals.
    pub fn concealed(&self) -> u64 {
        self.lost - self.fec_rebuilt
    }
}

/// Follows one audio stream's sequence numbers: [`AudioRepair`].
#[derive(Debug, Default)]
pub(crate) struct AudioLossLog {
    last: Option<u16>,
    pub counts: AudioRepair,
}

/// A jump larger than this is a new sender (a replaced publisher), not loss.
const MAX_GAP: u16 = 250;

impl AudioLossLog {
    /// One audio packet: its sequence number and payload.
    pub(crate) fn packet(&mut self, seq: u16, payload: &[u8]) {
        let Some(last) = self.last else {
            self.last = Some(seq);
            self.counts.received += 1;
            return;
        };
        let ahead = seq.wrapping_sub(last);
        if ahead == 0 || ahead > u16::MAX / 2 {
            // A duplicate or a late packet: counted lost when skipped, it came after all
            // (the jitter buffer takes it if still in time).
            if ahead != 0 && self.counts.lost > 0 {
                self.counts.lost -= 1;
                self.counts.received += 1;
            }
            return;
        }
        self.counts.received += 1;
        self.last = Some(seq);
        if ahead > MAX_GAP {
            return;
        }
        let missing = u64::from(ahead - 1);
        if missing > 0 {
            self.counts.lost += missing;
            if opus_has_fec(payload) {
                self.counts.fec_rebuilt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, pt: u8, seq: u16, payload: &[u8]) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header { version: 2, ssrc, payload_type: pt, sequence_number: seq, ..Default::default() },
            payload: Bytes::copy_from_slice(payload),
        }
    }

    fn tagged(p: rtc::rtp::Packet) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: Default::default(),
            message: rtc::interceptor::AttributedPacket::new(Packet::Rtp(p)),
        }
    }

    #[test]
    fn a_retransmission_becomes_the_packet_it_repairs_and_is_counted() {
        let counters = Arc::new(RepairCounters::default());
        let mut i = UnwrapRtx::new(counters.clone());
        let info = StreamInfo { ssrc: 10, ssrc_rtx: Some(11), payload_type: 102, payload_type_rtx: Some(103), ..Default::default() };
        i.bind_remote_stream(&info);
        i.handle_read(tagged(rtp(11, 103, 7, &[0x12, 0x34, 0xaa, 0xbb]))).unwrap();
        i.handle_read(tagged(rtp(10, 102, 0x1235, &[0xcc]))).unwrap();
        // Padding only (a probe): nothing to repair, dropped.
        i.handle_read(tagged(rtp(11, 103, 8, &[]))).unwrap();
        let out: Vec<_> = std::iter::from_fn(|| i.poll_read()).collect();
        assert_eq!(out.len(), 2);
        let Packet::Rtp(p) = &out[0].message.packet else { panic!("not rtp") };
        assert_eq!((p.header.ssrc, p.header.payload_type, p.header.sequence_number), (10, 102, 0x1234));
        assert_eq!(&p.payload[..], &[0xaa, 0xbb]);
        assert_eq!(counters.read(), (1, 0));
        let mut fec = tagged(rtp(10, 102, 9, &[1]));
        fec.message.add(Attribute::RecoveredByFec);
        i.handle_read(fec).unwrap();
        assert_eq!(counters.read(), (1, 1));
        i.unbind_remote_stream(&info);
        i.handle_read(tagged(rtp(11, 103, 9, &[0, 1, 2]))).unwrap();
        assert_eq!(counters.read(), (1, 1), "unbound: passed through untouched");
    }

    /// Packets of GStreamer's Opus encoder, as the publish pipeline makes them.
    /// (A steady tone: the encoder's voice detector calls every frame active, and Opus
    /// makes FEC only for active frames; noise is called inactive after a few frames.)
    fn opus_packets(fec: bool, loss: u32) -> Vec<Vec<u8>> {
        let wave = "sine";
        use gstreamer as gst;
        use gstreamer::prelude::*;
        crate::media::init().unwrap();
        let desc = format!(
            "audiotestsrc num-buffers=150 wave={wave} ! audio/x-raw,rate=48000,channels=1 ! \
             opusenc audio-type=voice bitrate=32000 frame-size=20 inband-fec={fec} packet-loss-percentage={loss} ! \
             appsink name=out sync=false"
        );
        let pipeline = gst::parse::launch(&desc).unwrap().downcast::<gst::Pipeline>().unwrap();
        let sink = pipeline.by_name("out").unwrap().downcast::<gstreamer_app::AppSink>().unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut out = Vec::new();
        while let Ok(sample) = sink.pull_sample() {
            let buf = sample.buffer().unwrap().map_readable().unwrap();
            out.push(buf.as_slice().to_vec());
        }
        pipeline.set_state(gst::State::Null).unwrap();
        out
    }

    #[test]
    fn fec_is_seen_in_the_encoders_packets_exactly_when_it_is_made() {
        // 10 %, the least the publish pipeline sizes FEC for.
        let with = opus_packets(true, 10);
        let without = opus_packets(false, 10);
        assert!(with.len() >= 100 && without.len() >= 100, "{} / {} packets", with.len(), without.len());
        let n = |ps: &[Vec<u8>]| ps.iter().filter(|p| opus_has_fec(p)).count();
        // The first packet has nothing before it to carry.
        assert!(n(&with) * 10 >= with.len() * 9, "{} of {} packets carry FEC", n(&with), with.len());
        assert_eq!(n(&without), 0);
        assert_eq!(n(&opus_packets(true, 0)), 0, "no FEC is made while no loss is expected");
    }

    #[test]
    fn celt_and_stereo_and_multi_frame_packets_carry_no_fec() {
        // CELT-only (config 16+), whatever follows.
        assert!(!opus_has_fec(&[16 << 3, 0x00, 0x00, 0x00]));
        // Stereo flag, code 1 (two frames).
        assert!(!opus_has_fec(&[(1 << 3) | 0x04, 0x00]));
        assert!(!opus_has_fec(&[(1 << 3) | 0x01, 0x00]));
        assert!(!opus_has_fec(&[]));
    }

    #[test]
    fn the_audio_log_counts_loss_and_what_fec_rebuilds() {
        let mut log = AudioLossLog::default();
        let silk_no_fec = [1u8 << 3, 0x00, 0x00, 0x00, 0x00];
        for seq in [100u16, 101, 104, 105] {
            log.packet(seq, &silk_no_fec);
        }
        assert_eq!(log.counts, AudioRepair { received: 4, lost: 2, fec_rebuilt: 0 });
        assert_eq!(log.counts.concealed(), 2);
        // 102 arrives late after all.
        log.packet(102, &silk_no_fec);
        assert_eq!(log.counts.lost, 1);
        // Wraps around; a jump of thousands is a new sender, not loss.
        let mut log = AudioLossLog::default();
        log.packet(65535, &silk_no_fec);
        log.packet(1, &silk_no_fec);
        assert_eq!(log.counts.lost, 1);
        log.packet(9000, &silk_no_fec);
        assert_eq!(log.counts.lost, 1);
    }
}
