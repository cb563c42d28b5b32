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
pub mod sfu;
mod tcp;
mod udp;

pub use callbox_core::rtc::{
    FLEXFEC_PT, H264_FMTP, H264_PT, Kind, OPUS_FMTP, OPUS_PT, RED_PT, RTX_PT, RtcError, Transport, keyframe, peer,
    repair, sdp_has_candidate, stun, turn,
};

/// This host's address on the route to `peer` (no packet is sent), for host candidates.
pub fn local_ip_towards(peer: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind(if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    s.connect(peer).ok()?;
    s.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified())
}

#[cfg(test)]
mod loopback_tests;
#[cfg(test)]
use callbox_core::rtc::test_rtp;
