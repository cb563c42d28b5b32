//! WebRTC for callbox: the only module that uses the `rtc` crate (the sans-IO core of
//! webrtc-rs). It owns the peer connections on both sides:
//!
//! - [`client`]: one connection per published or played stream on a device, each with its
//!   own UDP socket (and ICE-TCP connections to the server when UDP does not pass), driven
//!   by a small tokio task;
//! - [`sfu`]: the server's selective forwarding unit, every connection on **one** UDP
//!   socket and one TCP port of the same number (two firewall rules), demultiplexed by the
//!   ICE username and then by address.
//!
//! Both sides use the same codecs: H.264 constrained baseline (packetization-mode 1) and
//! Opus (sent as mono voice) with in-band FEC, with PLI and RTCP reports, and loss repair
//! ([`repair`]: NACK with RTX, FlexFEC-03) unless it is turned off. Candidates are host candidates only (UDP, and TCP per RFC 6544: passive
//! on the server, active on devices), carried in the SDP (no trickle).

pub mod client;
pub mod ice_servers;
mod keyframe;
mod peer;
pub mod repair;
pub mod sfu;
pub(crate) mod stun;
mod tcp;
pub mod turn;

pub use peer::{RtcError, Transport, sdp_has_candidate};

/// This host's address on the route to `peer` (no packet is sent), for host candidates.
pub fn local_ip_towards(peer: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind(if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

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

#[cfg(test)]
mod loopback_tests;

/// A synthetic RTP packet of `kind` (callbox's payload type, SSRC 42, marker set, 200 bytes
/// of payload), for the SFU and connection tests.
#[cfg(test)]
pub(crate) fn test_rtp(kind: Kind, seq: u16) -> bytes::Bytes {
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
