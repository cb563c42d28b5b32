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
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::sansio::Protocol;

/// Packets repaired on one connection's receiving side, shared with the core that reads
/// them once a second (the interceptor itself is owned by the peer connection).
#[derive(Debug, Default)]
pub struct RepairCounters {
    /// Retransmissions (RTX) that arrived and were turned back into media.
    pub rtx: AtomicU64,
    /// Media packets the FlexFEC decoder rebuilt.
    pub fec: AtomicU64,
}

impl RepairCounters {
    /// (retransmitted, rebuilt by FEC) so far.
    pub fn read(&self) -> (u64, u64) {
        (self.rtx.load(Ordering::Relaxed), self.fec.load(Ordering::Relaxed))
    }
}

/// The interceptor: RTX back to media, and counts.
pub struct UnwrapRtx {
    /// RTX SSRC -> (media SSRC, media payload type).
    rtx: HashMap<u32, (u32, u8)>,
    counters: Arc<RepairCounters>,
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

impl UnwrapRtx {
    /// An interceptor that counts what it unwraps into `counters`.
    pub fn new(counters: Arc<RepairCounters>) -> Self {
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
pub fn opus_has_fec(payload: &[u8]) -> bool {
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
        self.lost.saturating_sub(self.fec_rebuilt)
    }
}

/// Follows one audio stream's sequence numbers: [`AudioRepair`].
#[derive(Debug, Default)]
pub struct AudioLossLog {
    last: Option<u16>,
    /// The counts so far.
    pub counts: AudioRepair,
}

/// A jump larger than this is a new sender (a replaced publisher), not loss.
const MAX_GAP: u16 = 250;

impl AudioLossLog {
    /// One audio packet: its sequence number and payload.
    pub fn packet(&mut self, seq: u16, payload: &[u8]) {
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
                // It may be one FEC was counted for: what is rebuilt never exceeds what is lost.
                self.counts.fec_rebuilt = self.counts.fec_rebuilt.min(self.counts.lost);
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

/// What a player counts of the video frames it receives: those whose every packet arrived
/// (first transmission, retransmission or FEC) before the play jitter buffer gave up on
/// them, and of those the ones a decoder can show intact: a complete keyframe, or a
/// complete frame after an intact one (H.264 frames refer to the frame before). A frame
/// that is not intact is one a decoder shows with damage, or freezes on.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VideoFrames {
    /// Frames whose playout time passed.
    pub frames: u64,
    /// ... that were complete.
    pub complete: u64,
    /// ... that were intact.
    pub intact: u64,
    /// Runs of frames not intact that lasted [`FREEZE`] or more of the picture's time.
    pub freezes: u64,
}

/// How long the play pipeline's video jitter buffer waits for a late packet without loss
/// repair, and with it: room for one retransmission (the loss seen at the next packet, up
/// to 40 ms until it is asked for, the round trip) at round trips up to about 80 ms; the
/// 70 ms more of delay is what repair costs.
pub const PLAY_WAIT: Duration = Duration::from_millis(80);
/// See [`PLAY_WAIT`].
pub const PLAY_WAIT_REPAIR: Duration = Duration::from_millis(150);

/// A packet this far (90 kHz ticks: 10 s) behind the frames already judged is from a new
/// sender.
const NEW_SENDER: i64 = 900_000;

/// A run of damaged frames this long (by their timestamps) is a freeze.
pub const FREEZE: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct Frame {
    first_seen: Instant,
    seqs: Vec<u16>,
    marker: Option<u16>,
    key: bool,
}

/// Follows one video stream's packets: [`VideoFrames`]. A frame is judged `wait` after its
/// first packet arrived (the jitter buffer's wait); packets later than that count as lost.
#[derive(Debug)]
pub struct FrameLog {
    wait: Duration,
    frames: std::collections::BTreeMap<i64, Frame>,
    /// The last timestamp seen, unwrapped, and its raw value.
    last_ts: Option<(i64, u32)>,
    /// The last judged frame: its timestamp, the sequence number it ended at, and whether
    /// that was its last packet (its marker arrived).
    judged: Option<(i64, u16, bool)>,
    intact_chain: bool,
    /// Since when (RTP timestamp) frames are damaged, if they are.
    damaged_since: Option<i64>,
    counted_freeze: bool,
    /// The counts so far.
    pub counts: VideoFrames,
    /// A frame was damaged since the last look (the player asks for a keyframe).
    pub damaged: bool,
}

/// True if an H.264 RTP payload (RFC 6184) carries an IDR slice or an SPS.
pub(crate) fn h264_key(payload: &[u8]) -> bool {
    let Some(&b0) = payload.first() else { return false };
    let nal = match b0 & 0x1f {
        // FU-A: the type is in the FU header.
        28 => payload.get(1).map(|b| b & 0x1f),
        // STAP-A: the first aggregated unit's type.
        24 => payload.get(3).map(|b| b & 0x1f),
        t => Some(t),
    };
    matches!(nal, Some(5 | 7))
}

impl FrameLog {
    /// A log that judges a frame `wait` after its last packet could still arrive.
    pub fn new(wait: Duration) -> Self {
        FrameLog {
            wait,
            frames: Default::default(),
            last_ts: None,
            judged: None,
            intact_chain: false,
            damaged_since: None,
            counted_freeze: false,
            counts: VideoFrames::default(),
            damaged: false,
        }
    }

    /// One video packet.
    pub fn packet(&mut self, now: Instant, seq: u16, raw: u32, marker: bool, payload: &[u8]) {
        let ts = raw;
        let ts = match self.last_ts {
            None => i64::from(ts),
            Some((u, raw)) => u + i64::from(ts.wrapping_sub(raw) as i32),
        };
        if self.last_ts.is_none_or(|(u, _)| ts > u) {
            self.last_ts = Some((ts, (ts & 0xffff_ffff) as u32));
        }
        if let Some((j, _, _)) = self.judged
            && ts <= j
        {
            if j - ts < NEW_SENDER {
                return; // too late for its frame
            }
            // Far behind what was judged: a new sender (a replaced publisher), not a late
            // packet. Start over.
            *self = FrameLog { counts: self.counts, ..FrameLog::new(self.wait) };
            self.last_ts = Some((i64::from(raw), raw));
            return self.packet(now, seq, raw, marker, payload);
        }
        let f = self.frames.entry(ts).or_insert(Frame { first_seen: now, seqs: Vec::new(), marker: None, key: false });
        f.seqs.push(seq);
        f.key |= h264_key(payload);
        if marker {
            f.marker = Some(seq);
        }
    }

    /// Judges the frames whose wait is over.
    pub fn tick(&mut self, now: Instant) {
        while let Some(entry) = self.frames.first_entry() {
            if now.saturating_duration_since(entry.get().first_seen) < self.wait {
                break;
            }
            let (ts, f) = entry.remove_entry();
            let first = f.seqs.iter().copied().min_by_key(|s| s.wrapping_sub(f.seqs[0]) as i16).unwrap_or(f.seqs[0]);
            let end = f.marker.unwrap_or_else(|| {
                *f.seqs.iter().max_by_key(|s| s.wrapping_sub(f.seqs[0]) as i16).unwrap_or(&f.seqs[0])
            });
            let start = match self.judged {
                // After a frame whose end was lost, what is missing before this frame's
                // first packet is counted against that one.
                Some((_, prev_end, true)) => prev_end.wrapping_add(1),
                _ => first,
            };
            let n = end.wrapping_sub(start);
            let contiguous = n < 1024 && (0..=n).all(|i| f.seqs.contains(&start.wrapping_add(i)));
            // The first frame seen: where it started is unknown; a keyframe is taken whole.
            let complete = f.marker.is_some() && contiguous && (self.judged.is_some() || f.key);
            self.judged = Some((ts, end, f.marker.is_some()));
            self.counts.frames += 1;
            self.counts.complete += complete as u64;
            self.intact_chain = complete && (f.key || self.intact_chain);
            if self.intact_chain {
                self.counts.intact += 1;
                self.damaged_since = None;
                self.counted_freeze = false;
            } else {
                self.damaged = true;
                let since = *self.damaged_since.get_or_insert(ts);
                // 90 kHz video clock.
                if !self.counted_freeze && ts - since >= FREEZE.as_millis() as i64 * 90 {
                    self.counted_freeze = true;
                    self.counts.freezes += 1;
                }
            }
        }
    }
}

/// Audio RED (RFC 2198) as the server sends it to a player that takes it: each Opus packet
/// also carries the one before it, so a player that lost a packet (and whose Opus in-band
/// FEC is only a coarse copy) gets the frame itself from the next one. About double the
/// audio's bitrate (32 kbit/s more), on the hop to that player only.
#[derive(Debug, Default)]
pub struct RedEncoder {
    /// The previous packet: sequence number, timestamp, payload.
    prev: Option<(u16, u32, Bytes)>,
}

impl RedEncoder {
    /// The RED payload for `packet` (Opus, payload type `pt`): the previous packet as a
    /// redundant block when it came just before and fits the header's fields (a 14-bit
    /// timestamp offset, a 10-bit length), then the packet itself.
    pub fn encode(&mut self, packet: &rtc::rtp::Packet, pt: u8) -> Bytes {
        let (seq, ts) = (packet.header.sequence_number, packet.header.timestamp);
        let pt = pt & 0x7f;
        let mut out = Vec::with_capacity(5 + 2 * packet.payload.len());
        let previous = self.prev.take().filter(|(s, t, p)| {
            s.wrapping_add(1) == seq && ts.wrapping_sub(*t) < 1 << 14 && !p.is_empty() && p.len() < 1 << 10
        });
        if let Some((_, t, p)) = &previous {
            let offset = ts.wrapping_sub(*t);
            let len = p.len() as u32;
            out.push(0x80 | pt);
            out.extend_from_slice(&((offset << 10) | len).to_be_bytes()[1..]);
        }
        out.push(pt);
        if let Some((_, _, p)) = &previous {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&packet.payload);
        self.prev = Some((seq, ts, packet.payload.clone()));
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(ssrc: u32, pt: u8, seq: u16, payload: &[u8]) -> rtc::rtp::Packet {
        rtc::rtp::Packet {
            header: rtc::rtp::header::Header {
                version: 2,
                ssrc,
                payload_type: pt,
                sequence_number: seq,
                ..Default::default()
            },
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
        let info = StreamInfo {
            ssrc: 10,
            ssrc_rtx: Some(11),
            payload_type: 102,
            payload_type_rtx: Some(103),
            ..Default::default()
        };
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
        gst::init().unwrap();
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

    /// A frame of `n` packets from `seq`, key or not, at timestamp `ts`.
    fn frame(log: &mut FrameLog, now: Instant, seq: u16, n: u16, ts: u32, key: bool, drop: &[u16]) {
        for i in 0..n {
            let s = seq.wrapping_add(i);
            if drop.contains(&s) {
                continue;
            }
            let payload: &[u8] = if key && i == 0 { &[0x7c, 0x85] } else { &[0x7c, 0x01] };
            log.packet(now, s, ts, i == n - 1, payload);
        }
    }

    #[test]
    fn frames_are_judged_complete_and_intact_after_the_wait() {
        let t0 = Instant::now();
        let wait = Duration::from_millis(150);
        let mut log = FrameLog::new(wait);
        // Keyframe (3 packets), then P-frames of 2 packets, 66 ms apart (6000 ticks).
        frame(&mut log, t0, 100, 3, 0, true, &[]);
        frame(&mut log, t0, 103, 2, 6000, false, &[]);
        frame(&mut log, t0, 105, 2, 12000, false, &[106]);
        frame(&mut log, t0, 107, 2, 18000, false, &[]);
        log.tick(t0 + Duration::from_millis(100));
        assert_eq!(log.counts.frames, 0, "judged before the wait");
        // 106 is repaired late, but in time.
        log.packet(t0 + Duration::from_millis(120), 106, 12000, true, &[0x7c, 0x01]);
        log.tick(t0 + wait);
        assert_eq!(log.counts, VideoFrames { frames: 4, complete: 4, intact: 4, freezes: 0 });
        // A packet lost for good: that frame is damaged and so is every frame after it until
        // a keyframe; 4 damaged frames span 200 ms: a freeze.
        let t1 = t0 + Duration::from_secs(1);
        frame(&mut log, t1, 109, 2, 24000, false, &[110]);
        for k in 0..4u16 {
            frame(&mut log, t1, 111 + 2 * k, 2, 30000 + 6000 * u32::from(k), false, &[]);
        }
        frame(&mut log, t1, 119, 2, 54000, true, &[]);
        log.tick(t1 + wait);
        // The late packet of a judged frame changes nothing.
        log.packet(t1 + wait, 110, 24000, true, &[0x7c, 0x01]);
        log.tick(t1 + wait * 2);
        assert_eq!(log.counts, VideoFrames { frames: 10, complete: 9, intact: 5, freezes: 1 });
        assert!(log.damaged);
        // A replaced publisher starts at a timestamp far behind: counted from there.
        let t2 = t1 + Duration::from_secs(1);
        frame(&mut log, t2, 5000, 2, 4_000_000_000, true, &[]);
        frame(&mut log, t2, 5002, 2, 4_000_006_000, false, &[]);
        log.tick(t2 + wait);
        assert_eq!(log.counts.frames, 12);
        assert_eq!(log.counts.intact, 7);
        assert!(h264_key(&[0x67]) && h264_key(&[0x78, 0, 0, 0x67]) && !h264_key(&[0x41]));
    }

    #[test]
    fn red_carries_the_packet_before_when_it_came_just_before() {
        let mut red = RedEncoder::default();
        let p = |seq: u16, ts: u32, payload: &[u8]| rtp(1, 111, seq, payload).with_ts(ts);
        // The first packet: only itself, behind a one-byte header.
        assert_eq!(&red.encode(&p(10, 960, &[1, 2, 3]), 111)[..], &[111, 1, 2, 3]);
        // The next: the previous as a redundant block (offset 960, length 3), then itself.
        let b = red.encode(&p(11, 1920, &[4, 5]), 111);
        let offset_len = (960u32 << 10) | 3;
        let mut want = vec![0x80 | 111];
        want.extend_from_slice(&offset_len.to_be_bytes()[1..]);
        want.extend_from_slice(&[111, 1, 2, 3, 4, 5]);
        assert_eq!(&b[..], &want[..]);
        // After a gap the previous one is not the one before: only itself.
        assert_eq!(&red.encode(&p(13, 3840, &[6]), 111)[..], &[111, 6]);
    }

    trait WithTs {
        fn with_ts(self, ts: u32) -> Self;
    }
    impl WithTs for rtc::rtp::Packet {
        fn with_ts(mut self, ts: u32) -> Self {
            self.header.timestamp = ts;
            self
        }
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
        // Reordered: 7 comes after 8, which carried FEC for it; nothing is lost after all.
        let mut log = AudioLossLog::default();
        let silk_fec = [1u8 << 3, 0xff, 0xff, 0xff, 0xff];
        assert!(opus_has_fec(&silk_fec));
        for seq in [6u16, 8, 7] {
            log.packet(seq, &silk_fec);
        }
        assert_eq!(log.counts, AudioRepair { received: 3, lost: 0, fec_rebuilt: 0 });
        assert_eq!(log.counts.concealed(), 0);
        // Wraps around; a jump of thousands is a new sender, not loss.
        let mut log = AudioLossLog::default();
        log.packet(65535, &silk_no_fec);
        log.packet(1, &silk_no_fec);
        assert_eq!(log.counts.lost, 1);
        log.packet(9000, &silk_no_fec);
        assert_eq!(log.counts.lost, 1);
    }
}
