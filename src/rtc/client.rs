//! A device's connection to the SFU for one stream: a publish connection sends the
//! stream's video and audio, a play connection receives them. Each has its own UDP socket
//! and a small task that pumps the sans-IO peer connection. The task reports through a
//! bounded event channel; RTP to send arrives on its own bounded channel (dropped, and
//! counted, when full), RTP received goes straight to an [`RtpSink`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;
use tokio::sync::mpsc;

use super::peer::{self, PeerOpts, RtcError};
use super::{Kind, peer::codec};

/// Which way media flows on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Device to server.
    Publish,
    /// Server to device.
    Play,
}

/// Where received RTP goes (the play pipeline's sources). Called from the connection task:
/// must not block.
pub trait RtpSink: Send + 'static {
    /// One RTP packet (header and payload, decrypted) of `kind`.
    fn rtp(&mut self, kind: Kind, packet: &[u8]);
}

/// What a connection reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ClientEvent {
    /// The offer to send to the server (`media_offer`).
    Offer(String),
    /// ICE and DTLS are up: media flows. Also sent when a link that was disconnected or
    /// silent works again.
    Connected,
    /// No answer to consent checks for 2 s: the path is cut. The connection is kept and
    /// comes back by itself ([`ClientEvent::Connected`]) when the path does.
    Disconnected,
    /// ICE says connected, but nothing came from the server for the silence limit: no RTP
    /// and no sender report (play), no receiver report (publish).
    Silent,
    /// The connection is over (consent lapsed, DTLS failed, unusable answer): renegotiate.
    Failed,
    /// The server asks for a keyframe (PLI or FIR).
    KeyframeRequested,
    /// The first complete video frame arrived (play).
    FirstVideoFrame,
    /// Counters, every second.
    Stats(LinkStats),
}

/// Cumulative counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LinkStats {
    /// RTP packets sent (publish) or received (play), per kind: video, audio.
    pub packets: [u64; 2],
    /// RTP payload bytes sent or received, per kind.
    pub bytes: [u64; 2],
    /// Video frames sent or received (RTP packets with the marker bit).
    pub frames: u64,
    /// Packets the publisher's pipeline produced that the link could not take.
    pub dropped: u64,
    /// Round-trip time to the server, ms (from ICE checks).
    pub rtt_ms: Option<f64>,
    /// Packets lost, as counted by the receiver (play) or reported back (publish).
    pub lost: u64,
    /// Keyframe requests received (publish).
    pub keyframe_requests: u64,
}

/// Commands to a connection.
#[derive(Debug)]
pub enum ClientCmd {
    /// The server's answer to our offer.
    Answer(String),
}

/// A running connection. Dropping it closes the connection.
pub struct ClientConn {
    cmds: mpsc::Sender<ClientCmd>,
    rtp: mpsc::Sender<(Kind, Bytes)>,
    task: tokio::task::JoinHandle<()>,
    /// The socket's local address.
    pub local: SocketAddr,
}

impl ClientConn {
    /// Starts a connection bound to `bind` (an IP with port 0, or a fixed port). The first
    /// event is [`ClientEvent::Offer`].
    pub fn start(
        role: Role,
        bind: SocketAddr,
        silence: Duration,
        sink: Option<Box<dyn RtpSink>>,
        events: mpsc::Sender<ClientEvent>,
    ) -> Result<ClientConn, RtcError> {
        let socket = peer::bind_udp(bind)?;
        let local = socket.local_addr()?;
        let now = Instant::now();
        let mut pc = peer::build(now, PeerOpts { lite: false, credentials: None })?;
        for kind in Kind::ALL {
            let init = match role {
                Role::Publish => RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters {
                            ssrc: Some(rand::random::<u32>() | 1),
                            ..Default::default()
                        },
                        codec: codec(kind),
                        ..Default::default()
                    }],
                },
                Role::Play => RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                },
            };
            pc.add_transceiver_from_kind(peer::codec_kind(kind), Some(init))?;
        }
        peer::add_host_candidate(&mut pc, local)?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let sdp = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        if !peer::sdp_has_candidate(&sdp) {
            return Err(RtcError::Webrtc("the offer has no ICE candidate".into()));
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(8);
        let (rtp_tx, rtp_rx) = mpsc::channel(1024);
        let _ = events.try_send(ClientEvent::Offer(sdp));
        let task = Pump {
            pc,
            socket,
            local,
            role,
            events,
            sink,
            senders: HashMap::new(),
            tracks: HashMap::new(),
            connected: false,
            watch: SilenceWatch::new(silence),
        };
        let task = tokio::spawn(task.run(cmd_rx, rtp_rx));
        Ok(ClientConn { cmds: cmd_tx, rtp: rtp_tx, task, local })
    }

    /// Gives the connection the server's answer.
    pub fn answer(&self, sdp: String) {
        let _ = self.cmds.try_send(ClientCmd::Answer(sdp));
    }

    /// A sender for RTP to publish (from the encoder pipeline's thread: `try_send`).
    pub fn rtp_sender(&self) -> mpsc::Sender<(Kind, Bytes)> {
        self.rtp.clone()
    }
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pump {
    pc: RTCPeerConnection,
    socket: tokio::net::UdpSocket,
    local: SocketAddr,
    role: Role,
    events: mpsc::Sender<ClientEvent>,
    sink: Option<Box<dyn RtpSink>>,
    /// Publish: kind -> (sender id, ssrc, negotiated payload type).
    senders: HashMap<Kind, (rtc::rtp_transceiver::RTCRtpSenderId, u32, u8)>,
    /// Play: track id -> kind.
    tracks: HashMap<String, Kind>,
    /// DTLS is up (SRTP keys exist): media may be sent.
    connected: bool,
    watch: SilenceWatch,
}

/// Whether a connection that ICE calls connected still carries anything from the server.
/// Armed by the first RTP or RTCP packet (a player of a stream nobody sends yet gets
/// nothing, and that is not a fault); once armed, the server's reports arrive every second
/// even when the stream is muted or its camera is off, so silence means the path or the
/// server's side of the connection is gone.
#[derive(Debug, Clone)]
pub(crate) struct SilenceWatch {
    limit: Duration,
    last: Option<Instant>,
    silent: bool,
}

/// What [`SilenceWatch`] tells the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Nothing to report.
    Same,
    /// Silent for the limit.
    Silent,
    /// Media again after silence.
    Back,
}

impl SilenceWatch {
    pub(crate) fn new(limit: Duration) -> Self {
        SilenceWatch { limit, last: None, silent: false }
    }

    /// An RTP or RTCP packet arrived.
    pub(crate) fn packet(&mut self, now: Instant) -> Liveness {
        self.last = Some(now);
        if std::mem::take(&mut self.silent) { Liveness::Back } else { Liveness::Same }
    }

    /// Checked on every turn; `connected`: ICE and DTLS are up.
    pub(crate) fn check(&mut self, now: Instant, connected: bool) -> Liveness {
        match self.last {
            Some(t) if connected && !self.silent && now.saturating_duration_since(t) >= self.limit => {
                self.silent = true;
                Liveness::Silent
            }
            _ => Liveness::Same,
        }
    }

    /// When the next check is due.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.last.filter(|_| !self.silent).map(|t| t + self.limit)
    }
}

fn kind_of(k: RtpCodecKind) -> Kind {
    if k == RtpCodecKind::Audio { Kind::Audio } else { Kind::Video }
}

impl Pump {
    async fn run(mut self, mut cmds: mpsc::Receiver<ClientCmd>, mut rtp: mpsc::Receiver<(Kind, Bytes)>) {
        let mut stats = LinkStats::default();
        let mut next_stats = Instant::now() + Duration::from_secs(1);
        let mut last_key_request = None::<Instant>;
        let mut buf = vec![0u8; 2048];
        let mut answered = false;
        loop {
            peer::flush(&mut self.pc, &self.socket);
            if !self.drain_events() {
                let _ = self.events.try_send(ClientEvent::Failed);
                return;
            }
            while let Some(m) = self.pc.poll_read() {
                match m.message {
                    RTCMessage::RtpPacket(track, packet) => {
                        let Some(kind) = self.tracks.get(&track).copied() else { continue };
                        let i = kind as usize;
                        stats.packets[i] += 1;
                        stats.bytes[i] += packet.payload.len() as u64;
                        if kind == Kind::Video && packet.header.marker {
                            stats.frames += 1;
                            if stats.frames == 1 {
                                let _ = self.events.try_send(ClientEvent::FirstVideoFrame);
                            }
                        }
                        if let (Some(sink), Ok(raw)) = (self.sink.as_mut(), packet.marshal()) {
                            sink.rtp(kind, &raw);
                        }
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        let wants_key = super::keyframe::wants_keyframe(&packets);
                        let now = Instant::now();
                        if wants_key && self.role == Role::Publish {
                            stats.keyframe_requests += 1;
                            if last_key_request.is_none_or(|t| now.duration_since(t) > Duration::from_millis(300)) {
                                last_key_request = Some(now);
                                let _ = self.events.try_send(ClientEvent::KeyframeRequested);
                            }
                        }
                    }
                    _ => {}
                }
            }
            let now = Instant::now();
            if self.watch.check(now, self.connected) == Liveness::Silent {
                tracing::warn!(role = ?self.role, "nothing from the server for the silence limit");
                let _ = self.events.try_send(ClientEvent::Silent);
            }
            if now >= next_stats {
                next_stats = now + Duration::from_secs(1);
                self.read_stats(now, &mut stats);
                let _ = self.events.try_send(ClientEvent::Stats(stats));
            }
            let mut deadline = self.pc.poll_timeout().map_or(next_stats, |t| t.min(next_stats));
            if let Some(t) = self.watch.deadline() {
                deadline = deadline.min(t);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        // SRTP or SRTCP (RFC 7983: first byte 128-191): media, or the
                        // server's sender/receiver reports, which the stack keeps to itself.
                        if n > 0 && (128..=191).contains(&buf[0])
                            && self.watch.packet(Instant::now()) == Liveness::Back
                        {
                            tracing::info!(role = ?self.role, "media from the server again");
                            let _ = self.events.try_send(ClientEvent::Connected);
                        }
                        if let Err(e) = peer::feed(&mut self.pc, Instant::now(), self.local, from, &buf[..n], !self.connected) {
                            tracing::trace!(error = %e, "dropping a media datagram");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "media socket error"),
                },
                cmd = cmds.recv() => match cmd {
                    Some(ClientCmd::Answer(sdp)) if !answered => {
                        answered = true;
                        if let Err(e) = self.set_answer(sdp) {
                            tracing::warn!(error = %e, "the server's answer is unusable");
                            let _ = self.events.try_send(ClientEvent::Failed);
                            return;
                        }
                    }
                    Some(ClientCmd::Answer(_)) => {}
                    None => return,
                },
                Some((kind, raw)) = rtp.recv() => {
                    self.send_rtp(kind, &raw, &mut stats);
                    // Take what else is queued in one go, then flush once.
                    while let Ok((kind, raw)) = rtp.try_recv() {
                        self.send_rtp(kind, &raw, &mut stats);
                    }
                }
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let _ = self.pc.handle_timeout(Instant::now());
                }
            }
        }
    }

    fn set_answer(&mut self, sdp: String) -> Result<(), RtcError> {
        let desc = RTCSessionDescription::answer(sdp).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        self.pc.set_remote_description(Instant::now(), desc).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        if self.role == Role::Publish {
            let ids: Vec<_> = self.pc.get_senders().collect();
            for id in ids {
                let Some(mut s) = self.pc.rtp_sender(id) else { continue };
                let kind = kind_of(s.track().kind());
                let ssrc = s.track().ssrcs().last().unwrap_or(0);
                let pt = s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type);
                if let Some(pt) = pt {
                    self.senders.insert(kind, (id, ssrc, pt));
                }
            }
        }
        Ok(())
    }

    fn send_rtp(&mut self, kind: Kind, raw: &[u8], stats: &mut LinkStats) {
        let Some(&(id, ssrc, pt)) = self.senders.get(&kind).filter(|_| self.connected) else {
            stats.dropped += 1;
            return;
        };
        let Ok(mut packet) = rtc::rtp::Packet::unmarshal(&mut &raw[..]) else {
            return;
        };
        packet.header.ssrc = ssrc;
        packet.header.payload_type = pt;
        let len = packet.payload.len() as u64;
        let end_of_frame = kind == Kind::Video && packet.header.marker;
        if let Some(mut s) = self.pc.rtp_sender(id)
            && s.write_rtp(Instant::now(), packet).is_ok()
        {
            stats.packets[kind as usize] += 1;
            stats.bytes[kind as usize] += len;
            stats.frames += end_of_frame as u64;
        } else {
            stats.dropped += 1;
        }
    }

    /// Handles the connection's events; false once it is closed or failed for good.
    fn drain_events(&mut self) -> bool {
        while let Some(e) = self.pc.poll_event() {
            match e {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => {
                    tracing::debug!(role = ?self.role, %state, "media connection state");
                    match state {
                        RTCPeerConnectionState::Connected => {
                            self.connected = true;
                            // Back from Disconnected: media is due at once; give it the
                            // whole limit before calling it silent.
                            if self.watch.last.is_some() {
                                self.watch.packet(Instant::now());
                            }
                            let _ = self.events.try_send(ClientEvent::Connected);
                        }
                        RTCPeerConnectionState::Disconnected => {
                            self.connected = false;
                            let _ = self.events.try_send(ClientEvent::Disconnected);
                        }
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return false,
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = self.pc.rtp_receiver(init.receiver_id).map(|r| kind_of(r.track().kind()));
                    if let Some(kind) = kind {
                        self.tracks.insert(init.track_id, kind);
                    }
                }
                _ => {}
            }
        }
        true
    }

    fn read_stats(&mut self, now: Instant, stats: &mut LinkStats) {
        let report = self.pc.get_stats(now, StatsSelector::None);
        let mut lost = 0u64;
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::IceCandidatePair(p) if p.nominated && p.current_round_trip_time > 0.0 => {
                    stats.rtt_ms = Some(p.current_round_trip_time * 1000.0);
                }
                RTCStatsReportEntry::InboundRtp(s) => lost += s.received_rtp_stream_stats.packets_lost.max(0) as u64,
                RTCStatsReportEntry::RemoteInboundRtp(s) => {
                    lost += s.received_rtp_stream_stats.packets_lost.max(0) as u64
                }
                _ => {}
            }
        }
        stats.lost = lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_noticed_once_and_only_after_media() {
        let t0 = Instant::now();
        let s = Duration::from_secs(3);
        let mut w = SilenceWatch::new(s);
        // Nothing ever arrived: a player of a stream nobody sends yet is not a fault.
        assert_eq!(w.check(t0 + Duration::from_secs(60), true), Liveness::Same);
        assert_eq!(w.deadline(), None);
        assert_eq!(w.packet(t0), Liveness::Same);
        assert_eq!(w.deadline(), Some(t0 + s));
        assert_eq!(w.check(t0 + Duration::from_secs(2), true), Liveness::Same);
        // ICE down: that is reported as Disconnected, not as silence.
        assert_eq!(w.check(t0 + Duration::from_secs(4), false), Liveness::Same);
        assert_eq!(w.check(t0 + Duration::from_secs(4), true), Liveness::Silent);
        assert_eq!(w.check(t0 + Duration::from_secs(9), true), Liveness::Same);
        assert_eq!(w.deadline(), None);
        assert_eq!(w.packet(t0 + Duration::from_secs(10)), Liveness::Back);
        assert_eq!(w.packet(t0 + Duration::from_secs(11)), Liveness::Same);
    }
}
