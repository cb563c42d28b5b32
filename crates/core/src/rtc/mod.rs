//! The media vocabulary and the sans-IO WebRTC cores (the `rtc` crate's peer connections,
//! driven by time and datagrams): [`sfu::SfuCore`] on the server, [`client::ClientCore`] on a
//! device, loss repair ([`repair`]), keyframe pacing, STUN and the TURN client. The tasks
//! that own their sockets live in the `callbox` crate's `rtc` module.

pub mod client;
pub mod keyframe;
pub mod peer;
pub mod repair;
pub mod sfu;
pub mod stun;
pub mod turn;

pub use peer::{RtcError, Transport, sdp_has_candidate};

/// The two kinds of media a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// H.264 video.
    Video,
    /// Opus audio.
    Audio,
}

impl Kind {
    /// Both kinds, video first (the m-line order in callbox's offers).
    pub const ALL: [Kind; 2] = [Kind::Video, Kind::Audio];

    /// "video" or "audio".
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Video => "video",
            Kind::Audio => "audio",
        }
    }
}

/// The RTP payload type callbox's own pipelines produce for H.264.
pub const H264_PT: u8 = 102;
/// The RTP payload type callbox's own pipelines produce for Opus.
pub const OPUS_PT: u8 = 111;
/// H.264 fmtp: constrained baseline level 3.1, packetization-mode 1.
pub const H264_FMTP: &str = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f";
/// The payload type of H.264 retransmissions (RTX, `apt=102`) in callbox's offers.
pub const RTX_PT: u8 = 103;
/// The payload type of FlexFEC-03 in callbox's offers.
pub const FLEXFEC_PT: u8 = 104;
/// The payload type of audio RED (RFC 2198, Opus in Opus) in the server's answers.
pub const RED_PT: u8 = 63;
/// Opus fmtp: in-band FEC on.
pub const OPUS_FMTP: &str = "minptime=10;useinbandfec=1";

/// A synthetic RTP packet of `kind` (callbox's payload type, SSRC 42, marker set, 200 bytes
/// of payload), for the SFU and connection tests.
#[doc(hidden)]
pub fn test_rtp(kind: Kind, seq: u16) -> bytes::Bytes {
    use rtc::shared::marshal::Marshal;
    let p = rtc::rtp::Packet {
        header: rtc::rtp::header::Header {
            version: 2,
            payload_type: if kind == Kind::Video { H264_PT } else { OPUS_PT },
            sequence_number: seq,
            timestamp: seq as u32 * 3000,
            ssrc: 42,
            marker: true,
            ..Default::default()
        },
        payload: bytes::Bytes::from(vec![0x65u8; 200]),
    };
    p.marshal().unwrap().freeze()
}
