//! The WebRTC helpers both sides share: building a sans-IO peer connection (the codecs, the
//! interceptors: NACK, RTCP reports, keyframe requests; ICE settings), host candidates,
//! send encodings and negotiated senders, and moving datagrams in ([`feed`]) and out
//! ([`drain`] to [`Transmit`]s that the socket's task sends).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rand::Rng;
use rtc::interceptor::{
    CongestionControlBuilder, FlexFec03ReceiveBuilder, FlexFec03SendBuilder, Gcc, NackGeneratorBuilder,
    NackResponderBuilder, Registry, Slot, TwccSenderBuilder,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::{
    configure_rtcp_reports, configure_simulcast_extension_headers, configure_twcc_receiver_only,
};
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_FLEX_FEC03, MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, CandidateRelayConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters,
    RTCRtpFecParameters, RTCRtpRtxParameters, RtpCodecKind, TYPE_RTCP_FB_GOOG_REMB, TYPE_RTCP_FB_NACK,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use super::repair::{RepairCounters, UnwrapRtx};
use super::{FLEXFEC_PT, H264_FMTP, H264_PT, Kind, OPUS_FMTP, OPUS_PT, RED_PT, RTX_PT};

/// What can go wrong in the WebRTC layer.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    /// The WebRTC stack refused an operation (bad state, bad parameters).
    #[error("webrtc: {0}")]
    Webrtc(String),
    /// The remote SDP could not be used.
    #[error("unusable SDP: {0}")]
    BadSdp(String),
    /// A socket could not be bound or used.
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
}

impl From<rtc::shared::error::Error> for RtcError {
    fn from(e: rtc::shared::error::Error) -> Self {
        RtcError::Webrtc(e.to_string())
    }
}

/// How a connection is set up.
pub struct PeerOpts {
    /// ICE-lite (the server: it only answers checks, which makes it connect sooner).
    pub lite: bool,
    /// Fixed local ICE credentials (the server routes datagrams by its ufrag).
    pub credentials: Option<(String, String)>,
    /// Send-side congestion control on what this connection sends (see [`Congestion`]).
    pub congestion: Option<Congestion>,
    /// Loss repair (see [`build`]), counted into these counters; none: no repair at all
    /// (no NACK either), which is what `[media] repair = false` compares against.
    pub repair: Option<Arc<RepairCounters>>,
    /// Offer audio RED (RFC 2198) to whoever takes it: the server's play connections, whose
    /// browsers rebuild a lost Opus frame from the copy the next packet carries
    /// ([`crate::rtc::repair::RedEncoder`]). Never for what a connection receives: devices
    /// play plain Opus.
    pub red: bool,
}

/// Send-side bandwidth estimation for a connection that sends media: transport-wide
/// sequence numbers on every packet it sends, the remote's TWCC feedback resolved against
/// them, and the `rtc` crate's GCC estimator on the result. The estimate shows in the
/// connection's outbound stats (`target_bitrate`), which the cores read once a second.
///
/// No pacer: the `rtc` pacer releases at exactly the estimate, so every keyframe (several
/// times the average frame) would wait in its queue, which is the delay a new player must
/// not see; the encoder is held to the estimate instead, and the estimator counts each
/// packet from the instant it is written, which is when it leaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Congestion {
    /// Where the estimate starts, bit/s: the configured maximum, so a call starts at full
    /// quality and comes down within a second or two where the path is thinner.
    pub initial_bps: f64,
    /// The estimate's floor, bit/s.
    pub min_bps: f64,
    /// The estimate's ceiling, bit/s.
    pub max_bps: f64,
}

/// The engine's ICE liveness: it sends a consent check every 500 ms and calls the link
/// disconnected after 2 s without an answer (recovery starts, the old connection is kept
/// and comes back by itself when the path does), failed after 25 s more (RFC 7675 lets
/// consent lapse after 30 s).
const CLIENT_DISCONNECTED: Duration = Duration::from_secs(2);
const CLIENT_FAILED: Duration = Duration::from_secs(25);
const CLIENT_KEEPALIVE: Duration = Duration::from_millis(500);

/// The codec callbox sends and accepts for `kind`.
pub fn codec(kind: Kind) -> RTCRtpCodec {
    match kind {
        Kind::Video => RTCRtpCodec {
            mime_type: MIME_TYPE_H264.to_owned(),
            clock_rate: 90000,
            channels: 0,
            sdp_fmtp_line: H264_FMTP.to_owned(),
            rtcp_feedback: vec![],
        },
        Kind::Audio => RTCRtpCodec {
            mime_type: MIME_TYPE_OPUS.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: OPUS_FMTP.to_owned(),
            rtcp_feedback: vec![],
        },
    }
}

/// The `rtc` crate's codec kind of `kind`.
pub fn codec_kind(kind: Kind) -> RtpCodecKind {
    match kind {
        Kind::Video => RtpCodecKind::Video,
        Kind::Audio => RtpCodecKind::Audio,
    }
}

/// Audio RED's MIME type.
const MIME_TYPE_RED: &str = "audio/red";

/// How many times one lost packet is asked for (NACK), [`NACK_INTERVAL`] apart.
const MAX_NACKS: u16 = 3;
/// How often missing packets are asked for: a retransmission arrives about this plus the
/// round trip after the loss is seen (the `rtc` default is 100 ms, which the play side's
/// jitter buffer would have to wait out on every loss).
const NACK_INTERVAL: Duration = Duration::from_millis(40);
/// FlexFEC's block: 2 repair packets for every 10 media packets (20% more video on the wire;
/// any 2 losses in the block are rebuilt without a round trip).
const FEC_MEDIA: u32 = 10;
const FEC_REPAIR: u32 = 2;

/// Loss repair: NACK with retransmission on its own SSRC (RTX, RFC 4588), FlexFEC-03 for
/// video, both in the `rtc` crate, negotiated with whoever offers them (browsers offer RTX;
/// Chrome receives FlexFEC-03 when its field trial is on). Opus's in-band FEC is the
/// pipelines' part. What was repaired is counted into `counters`.
fn repair(media: &mut MediaEngine, registry: Registry, counters: Arc<RepairCounters>) -> Result<Registry, RtcError> {
    // A lost packet is asked for at most MAX_NACKS times: the default asks every interval
    // for as long as it stays in the window, and on a link that drops because it is full,
    // every retransmission dropped is asked for again, until the retransmissions alone fill
    // it (measured: 2400 packets a second offered to a 500 kbit/s uplink carrying 200
    // kbit/s of media).
    for parameter in ["", "pli"] {
        media.register_feedback(
            RTCPFeedback { typ: TYPE_RTCP_FB_NACK.to_owned(), parameter: parameter.to_owned() },
            RtpCodecKind::Video,
        );
    }
    let repair_codec = |mime: &str, fmtp: String| RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: vec![],
    };
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: repair_codec(MIME_TYPE_RTX, format!("apt={H264_PT}")),
            payload_type: RTX_PT,
        },
        RtpCodecKind::Video,
    )?;
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: repair_codec(MIME_TYPE_FLEX_FEC03, "repair-window=10000000".to_owned()),
            payload_type: FLEXFEC_PT,
        },
        RtpCodecKind::Video,
    )?;
    let nacks = NackGeneratorBuilder::new().with_max_nacks_per_packet(MAX_NACKS).with_interval(NACK_INTERVAL);
    let fec = FlexFec03SendBuilder::new().with_num_media_packets(FEC_MEDIA).with_num_fec_packets(FEC_REPAIR);
    Ok(registry
        .with(Slot::NackResponder, NackResponderBuilder::new().build())
        .with(Slot::FecEncoder, fec.build())
        .with(Slot::FecDecoder, FlexFec03ReceiveBuilder::new().build())
        // Between the FEC decoder and the NACK generator (see `repair`).
        .with(Slot::Custom(6_500), UnwrapRtx::new(counters))
        .with(Slot::NackGenerator, nacks.build()))
}

/// A new peer connection with callbox's codecs and interceptors.
/// How long a device's agent waits for a direct pair before it takes a relayed one.
const RELAY_WAIT: Duration = Duration::from_secs(1);

/// A new peer connection with callbox's codecs, interceptors and ICE settings.
pub fn build(now: Instant, opts: PeerOpts) -> Result<RTCPeerConnection, RtcError> {
    let mut media = MediaEngine::default();
    for (kind, pt) in [(Kind::Video, H264_PT), (Kind::Audio, OPUS_PT)] {
        let params = RTCRtpCodecParameters { rtp_codec: codec(kind), payload_type: pt };
        media.register_codec(params, codec_kind(kind))?;
    }
    // Application-most (after the NACK and report interceptors), before the terminus.
    let registry = Registry::new().with(Slot::Custom(9_500), super::keyframe::FeedbackToApplication::default());
    if opts.red {
        let red = RTCRtpCodec {
            mime_type: MIME_TYPE_RED.to_owned(),
            clock_rate: 48000,
            channels: 2,
            sdp_fmtp_line: format!("{OPUS_PT}/{OPUS_PT}"),
            rtcp_feedback: vec![],
        };
        media.register_codec(RTCRtpCodecParameters { rtp_codec: red, payload_type: RED_PT }, RtpCodecKind::Audio)?;
    }
    let registry = match &opts.repair {
        Some(counters) => repair(&mut media, registry, counters.clone())?,
        None => registry,
    };
    configure_simulcast_extension_headers(&mut media)?;
    let registry = configure_twcc_receiver_only(registry, &mut media)?;
    let mut registry = configure_rtcp_reports(registry);
    // REMB is how the SFU tells a publisher its players' lowest estimate: browsers obey it
    // when `goog-remb` is negotiated, engines read it (`keyframe::FeedbackToApplication`).
    media.register_feedback(
        RTCPFeedback { typ: TYPE_RTCP_FB_GOOG_REMB.to_owned(), parameter: String::new() },
        RtpCodecKind::Video,
    );
    if let Some(c) = opts.congestion {
        // The default chain already reports what arrives (TWCC receiver) and negotiates the
        // transport-cc extension; these are the sending half.
        // The crate announces an estimate only when it changes: one that starts at its
        // ceiling on a path that never congests would never be announced at all. Just
        // under it, the first feedback moves it.
        let gcc = Gcc::new(c.initial_bps.min(c.max_bps * 0.95), c.min_bps, c.max_bps);
        registry = registry
            .with(Slot::CongestionControl, CongestionControlBuilder::new(gcc).build())
            .with(Slot::TwccSender, TwccSenderBuilder::new().build());
    }
    // The server (ICE-lite) never times a connection out through ICE: the `rtc` agent counts
    // only STUN as a sign of life, and agents such as libnice send a check every ~25 s
    // while their media flows. The SFU expires connections itself, counting every datagram
    // (`sfu::CONSENT_EXPIRY`). Zero turns the agent's timers off.
    let timeouts = if opts.lite {
        (Duration::ZERO, Duration::ZERO, Duration::ZERO)
    } else {
        (CLIENT_DISCONNECTED, CLIENT_FAILED, CLIENT_KEEPALIVE)
    };
    let mut settings = SettingEngineBuilder::new()
        .with_lite(opts.lite)
        .with_ice_timeouts(Some(timeouts.0), Some(timeouts.1), Some(timeouts.2))
        // Connectivity checks every 25 ms (default 200 ms, which puts a whole check interval
        // into every connection setup), for up to 3 s per candidate pair.
        .with_ice_connection_attempts(Some(Duration::from_millis(25)), Some(120))
        // A relay pair is taken after 1 s (default 2 s) when no direct pair (UDP or
        // ICE-TCP, taken at once) has answered: a path through TURN is up a second sooner,
        // and any direct path answering within that second still wins.
        .with_relay_acceptance_min_wait(Some(RELAY_WAIT))
        .with_include_loopback_candidate(true);
    if let Some((ufrag, pwd)) = opts.credentials {
        settings = settings.with_ice_credentials(ufrag, pwd);
    }
    let pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings.build())
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .build(now)?;
    Ok(pc)
}

/// How a datagram travels: UDP, or over a TCP connection in RFC 4571 frames (ICE-TCP,
/// RFC 6544: the server listens, passive; devices and browsers connect, active).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    #[default]
    Udp,
    /// TCP, framed.
    Tcp,
}

impl Transport {
    /// `udp` or `tcp`, as status and quality events name the path.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }

    fn protocol(self) -> TransportProtocol {
        match self {
            Transport::Udp => TransportProtocol::UDP,
            Transport::Tcp => TransportProtocol::TCP,
        }
    }

    /// The transport of an `rtc` transport protocol.
    pub fn of(p: TransportProtocol) -> Transport {
        match p {
            TransportProtocol::TCP => Transport::Tcp,
            _ => Transport::Udp,
        }
    }
}

/// A host candidate.
#[derive(Debug, Clone, Copy)]
pub enum HostCandidate {
    /// The UDP socket at this address.
    Udp(SocketAddr),
    /// A TCP port that accepts ICE-TCP connections (the server).
    TcpPassive(SocketAddr),
    /// Connections to the other side's passive candidates, from this IP (a device).
    TcpActive(std::net::IpAddr),
}

/// Adds a host candidate.
pub fn add_host_candidate(pc: &mut RTCPeerConnection, c: HostCandidate) -> Result<(), RtcError> {
    use rtc::ice::tcp_type::TcpType;
    let (network, addr, tcp_type) = match c {
        HostCandidate::Udp(a) => ("udp", a, TcpType::Unspecified),
        HostCandidate::TcpPassive(a) => ("tcp", a, TcpType::Passive),
        // An active candidate has no port of its own; 9 (discard) by convention (RFC 6544).
        HostCandidate::TcpActive(ip) => ("tcp", SocketAddr::new(ip, 9), TcpType::Active),
    };
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: network.to_owned(),
            address: addr.ip().to_string(),
            port: addr.port(),
            component: 1,
            ..Default::default()
        },
        tcp_type,
    }
    .new_candidate_host()?;
    let init = RTCIceCandidate::from(&candidate).to_json()?;
    pc.add_local_candidate(init)?;
    Ok(())
}

/// Adds the relayed address of a TURN allocation (`base`: the local socket it was made
/// from) as a relay candidate: the agent checks the server's candidates from it too.
pub fn add_relay_candidate(pc: &mut RTCPeerConnection, relayed: SocketAddr, base: SocketAddr) -> Result<(), RtcError> {
    let candidate = CandidateRelayConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: relayed.ip().to_string(),
            port: relayed.port(),
            component: 1,
            ..Default::default()
        },
        rel_addr: base.ip().to_string(),
        rel_port: base.port(),
        ..Default::default()
    }
    .new_candidate_relay()?;
    let init = RTCIceCandidate::from(&candidate).to_json()?;
    pc.add_local_candidate(init)?;
    Ok(())
}

/// Hands one received datagram to the connection. While the connection is being set up,
/// its timers are run at once too: the ICE and DTLS layers queue their next flight on a
/// timer, and waiting for it costs a check interval (~200 ms) per round trip.
pub fn feed(
    pc: &mut RTCPeerConnection,
    now: Instant,
    local: SocketAddr,
    peer: SocketAddr,
    transport: Transport,
    data: &[u8],
    setting_up: bool,
) -> Result<(), RtcError> {
    pc.handle_read(TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: transport.protocol(),
        },
        message: BytesMut::from(data),
    })?;
    if setting_up {
        pc.handle_timeout(now)?;
    }
    Ok(())
}

/// A datagram a sans-IO core wants sent; the task that owns the socket sends it.
#[derive(Debug)]
pub struct Transmit {
    /// From which local candidate (a relayed address goes through its TURN allocation).
    pub from: SocketAddr,
    /// Where to.
    pub to: SocketAddr,
    /// Over UDP, or over the TCP connection with `to`.
    pub transport: Transport,
    /// The datagram.
    pub data: BytesMut,
}

/// Moves everything the connection has queued to `out`.
pub fn drain(pc: &mut RTCPeerConnection, out: &mut VecDeque<Transmit>) {
    while let Some(w) = pc.poll_write() {
        let transport = Transport::of(w.transport.transport_protocol);
        out.push_back(Transmit { from: w.transport.local_addr, to: w.transport.peer_addr, transport, data: w.message });
    }
}

/// Which of callbox's two kinds a track of `k` is.
pub fn kind_of(k: RtpCodecKind) -> Kind {
    if k == RtpCodecKind::Audio { Kind::Audio } else { Kind::Video }
}

/// One encoding of `kind` with a fresh random SSRC: what a sending track or transceiver is
/// given (the publish side of a device, the play side of the SFU). Video with `repair` also
/// gets SSRCs for retransmissions and FEC (dropped by the stack if the other side does not
/// take them).
pub fn send_encodings(kind: Kind, repair: bool) -> Vec<RTCRtpEncodingParameters> {
    let ssrc = || rand::random::<u32>() | 1;
    let repair = repair && kind == Kind::Video;
    vec![RTCRtpEncodingParameters {
        rtp_coding_parameters: RTCRtpCodingParameters {
            ssrc: Some(ssrc()),
            rtx: repair.then(|| RTCRtpRtxParameters { ssrc: ssrc() }),
            fec: repair.then(|| RTCRtpFecParameters { ssrc: ssrc() }),
            ..Default::default()
        },
        codec: codec(kind),
        ..Default::default()
    }]
}

/// A sending connection's senders once negotiated: kind -> (sender, SSRC, payload types).
pub fn senders(pc: &mut RTCPeerConnection) -> HashMap<Kind, Sender> {
    let ids: Vec<_> = pc.get_senders().collect();
    let mut out = HashMap::new();
    for id in ids {
        let Some(mut s) = pc.rtp_sender(id) else { continue };
        let kind = kind_of(s.track().kind());
        let ssrc = s.track().ssrcs().last().unwrap_or(0);
        let codecs = s.get_parameters().rtp_parameters.codecs.clone();
        let mime = |c: &RTCRtpCodecParameters| c.rtp_codec.mime_type.to_ascii_lowercase();
        // The media codec, not a repair format that rides along (RTX, FEC, RED).
        let is_repair =
            |m: String| m.ends_with("/rtx") || m.ends_with("/ulpfec") || m.ends_with("/red") || m.contains("flexfec");
        let media = codecs.iter().find(|c| !is_repair(mime(c)));
        let red = codecs.iter().find(|c| mime(c) == MIME_TYPE_RED.to_ascii_lowercase()).map(|c| c.payload_type);
        if let Some(pt) = media.map(|c| c.payload_type) {
            out.insert(kind, Sender { id, ssrc, pt, red });
        }
    }
    out
}

/// A negotiated sender: where RTP of one kind is written, with the SSRC and payload type
/// it must carry.
#[derive(Debug, Clone, Copy)]
pub struct Sender {
    /// The sender in its peer connection.
    pub id: RTCRtpSenderId,
    /// The SSRC its RTP carries.
    pub ssrc: u32,
    /// The negotiated payload type.
    pub pt: u8,
    /// Audio RED's payload type, if the other side takes RED.
    pub red: Option<u8>,
}

impl Sender {
    /// Writes `packet` (any SSRC and payload type: they are set here). False if the
    /// connection refused it (not connected, closed).
    pub fn write(&self, pc: &mut RTCPeerConnection, now: Instant, packet: rtc::rtp::Packet) -> bool {
        self.write_as(pc, now, packet, self.pt)
    }

    /// The same with payload type `pt` (a RED packet).
    pub fn write_as(&self, pc: &mut RTCPeerConnection, now: Instant, mut packet: rtc::rtp::Packet, pt: u8) -> bool {
        packet.header.ssrc = self.ssrc;
        packet.header.payload_type = pt;
        pc.rtp_sender(self.id).is_some_and(|mut s| s.write_rtp(now, packet).is_ok())
    }
}

/// True if the SDP carries at least one ICE candidate.
pub fn sdp_has_candidate(sdp: &str) -> bool {
    sdp.lines().any(|l| l.starts_with("a=candidate:"))
}

/// A random string of ASCII letters and digits (ICE credentials, track IDs).
pub fn random_token(n: usize) -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(n).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_helpers() {
        let sdp = "v=0\r\na=ice-ufrag:abcd\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n";
        assert!(sdp_has_candidate(sdp));
        assert!(!sdp_has_candidate("v=0\r\n"));
        assert_eq!(random_token(16).len(), 16);
    }
}
