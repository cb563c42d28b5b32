//! An interceptor that lets keyframe requests (PLI, FIR), bandwidth caps (REMB) and
//! receiver reports through to the application. The interceptor chain ends inbound RTCP at its terminus unless a
//! packet is marked for delivery; callbox acts on keyframe requests (the SFU relays them, a
//! device's encoder makes a keyframe), on the SFU's REMB (a device's encoder follows its
//! players' lowest estimate) and on its receiver reports (a device's Opus FEC is sized for
//! the loss they report), so those, and only those, are marked. (The `rtc` crate's own
//! statistics did not show the reports' loss: read in a test, they stayed at zero.)

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::sansio::Protocol;

/// Marks inbound PLI/FIR and REMB for the application.
#[derive(Default)]
pub struct FeedbackToApplication {
    reads: VecDeque<TaggedPacket>,
    writes: VecDeque<TaggedPacket>,
}

/// The lowest bitrate a REMB in the RTCP compound allows, bit/s.
pub fn remb_bps(packets: &[Box<dyn rtc::rtcp::Packet>]) -> Option<f64> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverEstimatedMaximumBitrate>())
        .map(|r| r.bitrate as f64)
        .reduce(f64::min)
}

/// What a receiver report in the compound says of `ssrc`: the fraction of its packets lost
/// since the report before (0..1), and how many were lost in all.
pub fn reported_loss(packets: &[Box<dyn rtc::rtcp::Packet>], ssrc: u32) -> Option<(f64, u64)> {
    packets
        .iter()
        .filter_map(|p| p.as_any().downcast_ref::<ReceiverReport>())
        .flat_map(|r| r.reports.iter())
        .find(|r| r.ssrc == ssrc)
        .map(|r| (f64::from(r.fraction_lost) / 256.0, u64::from(r.total_lost)))
}

fn has_receiver_report(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| p.as_any().is::<ReceiverReport>())
}

/// True if the RTCP compound asks for a keyframe.
pub fn wants_keyframe(packets: &[Box<dyn rtc::rtcp::Packet>]) -> bool {
    packets.iter().any(|p| p.as_any().is::<PictureLossIndication>() || p.as_any().is::<FullIntraRequest>())
}

impl Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackToApplication {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet
            && (wants_keyframe(packets) || remb_bps(packets).is_some() || has_receiver_report(packets))
        {
            msg.message.add(Attribute::DeliverToApplication);
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

impl Interceptor for FeedbackToApplication {
    fn bind_local_stream(&mut self, _: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _: &StreamInfo) {}
}
