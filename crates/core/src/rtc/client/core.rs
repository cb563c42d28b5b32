//! A device connection's sans-IO core: the peer connection of one published or played
//! stream, its silence watch and counters. Time and input come in (`handle_answer`,
//! `handle_datagram`, `send_rtp`, `handle_timeout`); datagrams ([`ClientCore::poll_transmit`]),
//! events ([`ClientCore::poll_event`]), received RTP ([`ClientCore::poll_rtp`]) and the next
//! deadline go out. The task in `mod.rs` owns the socket, the clock and the channels.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::{ClientEvent, LinkStats, Path, SendRate};
use crate::proto::MediaRole;
use crate::proto::ice_servers::TurnTransport;
use crate::rtc::Kind;
use crate::rtc::peer::{self, HostCandidate, PeerOpts, RtcError, Sender, Transmit, Transport};
use crate::rtc::repair::{AudioLossLog, FrameLog, PLAY_WAIT, PLAY_WAIT_REPAIR, RepairCounters};
use crate::rtc::turn::{Relay, TurnServer};

/// Keyframe requests from the server reach the encoder at most this often.
const KEYFRAME_EVENT_INTERVAL: Duration = Duration::from_millis(300);
/// The server's REMB cap counts for this long: it sends one a second while the stream has
/// a player with an estimate, and none once the last such player is gone.
const CAP_TTL: Duration = Duration::from_secs(3);
/// A player asks for a keyframe because of a damaged frame at most this often.
const DAMAGE_KEY_INTERVAL: Duration = Duration::from_millis(500);
/// How often [`ClientEvent::Stats`] is reported.
const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// A connection not up (ICE and DTLS) this long after the answer has failed. Under heavy
/// loss the DTLS handshake can give up (its retransmissions exhausted) while ICE stays
/// connected, and the peer connection then never reports failure: without this limit the
/// stream would wait for ever instead of being renegotiated.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(15);

/// See the module docs.
pub struct ClientCore {
    pc: RTCPeerConnection,
    local: SocketAddr,
    role: MediaRole,
    /// Publish: where each kind is written.
    senders: HashMap<Kind, Sender>,
    /// Play: track id -> kind.
    tracks: HashMap<String, Kind>,
    /// DTLS is up (SRTP keys exist): media may be sent.
    connected: bool,
    answered: bool,
    failed: bool,
    /// Until the connection is up: when it fails for not coming up ([`CONNECT_LIMIT`]).
    connect_by: Option<Instant>,
    watch: SilenceWatch,
    stats: LinkStats,
    next_stats: Instant,
    last_key_request: Option<Instant>,
    /// When the server's last REMB arrived.
    cap_at: Option<Instant>,
    /// What the receiving side repaired (shared with the interceptor that repairs it).
    repair: Option<Arc<RepairCounters>>,
    /// Play: the audio's losses, and what in-band FEC rebuilds.
    audio_loss: AudioLossLog,
    /// Publish: packets lost in all, per kind, as the server's last receiver report said.
    reported_lost: [u64; 2],
    /// Play: which video frames arrived whole, in time.
    frame_log: FrameLog,
    /// Play, with repair: when a keyframe was last asked for because a frame was damaged.
    damage_key_request: Option<Instant>,
    events: VecDeque<ClientEvent>,
    rtp: VecDeque<(Kind, Bytes)>,
    out: VecDeque<Transmit>,
    /// TURN allocations, by the index [`ClientCore::add_relay`] gave.
    relays: Vec<Relay>,
    /// Messages for TURN servers reached over TCP or TLS: (relay index, message).
    relay_out: VecDeque<(usize, BytesMut)>,
}

impl ClientCore {
    /// A connection for `role` whose socket is bound at `local`; gives the offer to send
    /// to the server. A connection silent for `silence` once media flowed reports
    /// [`ClientEvent::Silent`]. `repair`: offer NACK/RTX and FlexFEC. `video`: offer a video
    /// m-line (false: audio only, so an audio-only player does not even download the
    /// stream's video, and an audio-only publisher offers none).
    pub fn new(
        now: Instant,
        role: MediaRole,
        local: SocketAddr,
        silence: Duration,
        send_rate: Option<SendRate>,
        repair: bool,
        video: bool,
    ) -> Result<(ClientCore, String), RtcError> {
        let congestion = send_rate.filter(|_| role == MediaRole::Publish).map(|r| peer::Congestion {
            initial_bps: r.start_kbps as f64 * 1000.0,
            min_bps: r.min_kbps as f64 * 1000.0,
            max_bps: r.max_kbps as f64 * 1000.0,
        });
        let counters = repair.then(|| Arc::new(RepairCounters::default()));
        let mut pc = peer::build(
            now,
            PeerOpts { lite: false, credentials: None, congestion, repair: counters.clone(), red: false },
        )?;
        for kind in Kind::ALL.into_iter().filter(|k| video || *k != Kind::Video) {
            let init = match role {
                MediaRole::Publish => RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    streams: vec![],
                    send_encodings: peer::send_encodings(kind, repair),
                },
                MediaRole::Play => RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                },
            };
            pc.add_transceiver_from_kind(peer::codec_kind(kind), Some(init))?;
        }
        peer::add_host_candidate(&mut pc, HostCandidate::Udp(local))?;
        // Where UDP does not pass, ICE finds the server's passive TCP candidate: the task
        // connects to it when the agent first sends a check there.
        peer::add_host_candidate(&mut pc, HostCandidate::TcpActive(local.ip()))?;
        let offer = pc.create_offer(None)?;
        pc.set_local_description(now, offer)?;
        let sdp = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        if !peer::sdp_has_candidate(&sdp) {
            return Err(RtcError::Webrtc("the offer has no ICE candidate".into()));
        }
        let core = ClientCore {
            pc,
            local,
            role,
            senders: HashMap::new(),
            tracks: HashMap::new(),
            connected: false,
            answered: false,
            failed: false,
            connect_by: None,
            watch: SilenceWatch::new(silence),
            stats: LinkStats::default(),
            next_stats: now + STATS_INTERVAL,
            last_key_request: None,
            cap_at: None,
            repair: counters,
            audio_loss: AudioLossLog::default(),
            reported_lost: [0; 2],
            frame_log: FrameLog::new(if repair { PLAY_WAIT_REPAIR } else { PLAY_WAIT }),
            damage_key_request: None,
            events: VecDeque::new(),
            rtp: VecDeque::new(),
            out: VecDeque::new(),
            relays: Vec::new(),
            relay_out: VecDeque::new(),
        };
        Ok((core, sdp))
    }

    /// The server's answer. Only the first counts; an unusable one fails the connection.
    pub fn handle_answer(&mut self, now: Instant, sdp: String) {
        if std::mem::replace(&mut self.answered, true) {
            return;
        }
        if let Err(e) = self.set_answer(now, sdp) {
            tracing::warn!(error = %e, "the server's answer is unusable");
            self.fail();
            return;
        }
        self.connect_by = Some(now + CONNECT_LIMIT);
        self.process(now);
    }

    /// One datagram from the server, over UDP or in a frame of an ICE-TCP connection.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, transport: Transport, data: &[u8]) {
        if transport == Transport::Udp
            && let Some(i) =
                self.relays.iter().position(|r| r.server.url.transport == TurnTransport::Udp && r.server.addr == from)
        {
            return self.handle_relay_input(now, i, data);
        }
        self.receive(now, self.local, from, Path::from(transport), data);
    }

    /// A TURN allocation from `server`, made from this connection's UDP socket (`turn:`) or
    /// over a stream the task opens to it (TCP, TLS); its index names the stream.
    pub fn add_relay(&mut self, now: Instant, server: TurnServer) -> Result<usize, RtcError> {
        let relay = Relay::new(now, server, self.local)?;
        self.relays.push(relay);
        let i = self.relays.len() - 1;
        self.flush(now);
        Ok(i)
    }

    /// One message from TURN server `i` (read from its stream, or a datagram from it).
    pub fn handle_relay_input(&mut self, now: Instant, i: usize, data: &[u8]) {
        let Some(r) = self.relays.get_mut(i) else { return };
        r.handle_input(now, data);
        let (transport, relayed, allocated) = (r.server.url.transport, r.relayed(), r.take_allocated());
        let mut got = Vec::new();
        while let Some(d) = r.poll_received() {
            got.push(d);
        }
        if let Some(relayed) = allocated
            && let Err(e) = peer::add_relay_candidate(&mut self.pc, relayed, self.local)
        {
            tracing::warn!(error = %e, "cannot use a TURN allocation");
        }
        if let Some(local) = relayed {
            for (from, data) in got {
                self.receive(now, local, from, Path::Turn(transport), &data);
            }
        }
        self.flush(now);
    }

    /// The stream to TURN server `i` closed: its allocation is gone.
    pub fn relay_closed(&mut self, i: usize) {
        if let Some(r) = self.relays.get_mut(i) {
            r.close();
        }
    }

    /// The connection is being closed: releases its TURN allocations (the messages saying
    /// so come out of [`ClientCore::poll_transmit`] and [`ClientCore::poll_relay_transmit`]).
    pub fn release_relays(&mut self, now: Instant) {
        for r in &mut self.relays {
            r.release(now);
        }
        self.flush(now);
    }

    /// The next message for a TURN server reached over TCP or TLS: (relay index, bytes).
    pub fn poll_relay_transmit(&mut self) -> Option<(usize, BytesMut)> {
        self.relay_out.pop_front()
    }

    fn receive(&mut self, now: Instant, local: SocketAddr, from: SocketAddr, path: Path, data: &[u8]) {
        let transport = if path == Path::Tcp { Transport::Tcp } else { Transport::Udp };
        // SRTP or SRTCP (RFC 7983: first byte 128-191): media, or the server's sender or
        // receiver reports, which the stack keeps to itself.
        if data.first().is_some_and(|b| (128..=191).contains(b)) {
            self.stats.path = path;
            if self.watch.packet(now) == Liveness::Back {
                tracing::info!(role = ?self.role, path = path.as_str(), "media from the server again");
                self.events.push_back(ClientEvent::Connected);
            }
        }
        if let Err(e) = peer::feed(&mut self.pc, now, local, from, transport, data, !self.connected) {
            tracing::trace!(error = %e, "dropping a media datagram");
        }
        self.process(now);
    }

    /// Moves the connection's datagrams out: straight to the socket, or through the TURN
    /// allocation whose relayed address they are sent from; then what the relays send.
    fn flush(&mut self, now: Instant) {
        while let Some(w) = self.pc.poll_write() {
            let from = w.transport.local_addr;
            match self.relays.iter_mut().find(|r| r.relayed() == Some(from)) {
                Some(r) => r.send(now, w.transport.peer_addr, w.message),
                None => {
                    let transport = Transport::of(w.transport.transport_protocol);
                    self.out.push_back(Transmit { from, to: w.transport.peer_addr, transport, data: w.message });
                }
            }
        }
        for (i, r) in self.relays.iter_mut().enumerate() {
            while let Some(data) = r.poll_transmit() {
                match r.server.url.transport {
                    TurnTransport::Udp => self.out.push_back(Transmit {
                        from: self.local,
                        to: r.server.addr,
                        transport: Transport::Udp,
                        data,
                    }),
                    TurnTransport::Tcp | TurnTransport::Tls => self.relay_out.push_back((i, data)),
                }
            }
        }
    }

    /// One RTP packet (header and payload) of `kind` to publish; dropped and counted while
    /// the connection is not up.
    pub fn send_rtp(&mut self, now: Instant, kind: Kind, raw: &[u8]) {
        let Some(sender) = self.senders.get(&kind).filter(|_| self.connected).copied() else {
            self.stats.dropped += 1;
            return;
        };
        let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut &raw[..]) else {
            return;
        };
        let len = packet.payload.len() as u64;
        let end_of_frame = kind == Kind::Video && packet.header.marker;
        if sender.write(&mut self.pc, now, packet) {
            self.stats.packets[kind as usize] += 1;
            self.stats.bytes[kind as usize] += len;
            self.stats.frames += end_of_frame as u64;
        } else {
            self.stats.dropped += 1;
        }
        self.flush(now);
    }

    /// Asks the server for a keyframe of the played stream (a PLI on the video receiver), as
    /// a decoder does when it has lost a picture. The SFU passes it on to the publisher at
    /// most every [`crate::rtc::sfu::KEYFRAME_INTERVAL`]. Nothing for a publish connection.
    pub fn request_keyframe(&mut self, now: Instant) {
        if self.role != MediaRole::Play {
            return;
        }
        let ids: Vec<_> = self.pc.get_receivers().collect();
        for id in ids {
            let Some(mut r) = self.pc.rtp_receiver(id) else { continue };
            if r.track().kind() != rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video {
                continue;
            }
            let Some(ssrc) = r.track().ssrcs().last() else { continue };
            let pli = rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication {
                sender_ssrc: 0,
                media_ssrc: ssrc,
            };
            let _ = r.write_rtcp(now, vec![Box::new(pli)]);
        }
        self.flush(now);
    }

    /// Runs what is due at `now` (the deadline [`ClientCore::poll_timeout`] gave, whichever
    /// timer it was: the peer connection's timers run on every one, as they always have).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = self.pc.handle_timeout(now);
        for r in &mut self.relays {
            if r.poll_timeout().is_some_and(|t| t <= now) {
                r.handle_timeout(now);
            }
        }
        self.process(now);
    }

    /// When [`ClientCore::handle_timeout`] is due next.
    pub fn poll_timeout(&mut self) -> Instant {
        let mut deadline = self.pc.poll_timeout().map_or(self.next_stats, |t| t.min(self.next_stats));
        if let Some(t) = self.watch.deadline() {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.connect_by {
            deadline = deadline.min(t);
        }
        for r in &mut self.relays {
            if let Some(t) = r.poll_timeout() {
                deadline = deadline.min(t);
            }
        }
        deadline
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// The next event for the engine.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// The next RTP packet received (play), for the play pipeline.
    pub fn poll_rtp(&mut self) -> Option<(Kind, Bytes)> {
        self.rtp.pop_front()
    }

    /// Whether the connection is over for good (a [`ClientEvent::Failed`] was given).
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    fn fail(&mut self) {
        if !std::mem::replace(&mut self.failed, true) {
            self.events.push_back(ClientEvent::Failed);
        }
    }

    fn set_answer(&mut self, now: Instant, sdp: String) -> Result<(), RtcError> {
        let desc = RTCSessionDescription::answer(sdp).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        self.pc.set_remote_description(now, desc).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        if self.role == MediaRole::Publish {
            self.senders = peer::senders(&mut self.pc);
        }
        Ok(())
    }

    /// After every input: the connection's events, what it received, the silence watch,
    /// the counters, and its datagrams.
    fn process(&mut self, now: Instant) {
        if self.failed {
            return;
        }
        if !self.drain_events(now) {
            self.fail();
            return;
        }
        while let Some(m) = self.pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(track, packet) => {
                    let Some(kind) = self.tracks.get(&track).copied() else { continue };
                    let i = kind as usize;
                    self.stats.packets[i] += 1;
                    self.stats.bytes[i] += packet.payload.len() as u64;
                    let h = &packet.header;
                    match kind {
                        Kind::Audio => self.audio_loss.packet(h.sequence_number, &packet.payload),
                        Kind::Video => {
                            self.frame_log.packet(now, h.sequence_number, h.timestamp, h.marker, &packet.payload)
                        }
                    }
                    if kind == Kind::Video && packet.header.marker {
                        self.stats.frames += 1;
                        if self.stats.frames == 1 {
                            self.events.push_back(ClientEvent::FirstVideoFrame);
                        }
                    }
                    if let Ok(raw) = packet.marshal() {
                        self.rtp.push_back((kind, raw.freeze()));
                    }
                }
                RTCMessage::RtcpPacket(_, packets) if self.role == MediaRole::Publish => {
                    for (kind, sender) in &self.senders {
                        let Some((fraction, total)) = crate::rtc::keyframe::reported_loss(&packets, sender.ssrc) else {
                            continue;
                        };
                        self.reported_lost[*kind as usize] = total;
                        if *kind == Kind::Audio {
                            // Each report covers a second, about 50 packets: smoothed, so the
                            // FEC follows the loss rather than each report's luck.
                            let smoothed = self.stats.audio_loss.map_or(fraction, |l| 0.7 * l + 0.3 * fraction);
                            self.stats.audio_loss = Some(smoothed);
                        }
                    }
                    if let Some(bps) = crate::rtc::keyframe::remb_bps(&packets) {
                        self.stats.cap_kbps = Some(bps / 1000.0);
                        self.cap_at = Some(now);
                    }
                    if !crate::rtc::keyframe::wants_keyframe(&packets) {
                        continue;
                    }
                    self.stats.keyframe_requests += 1;
                    if self.last_key_request.is_none_or(|t| now.duration_since(t) > KEYFRAME_EVENT_INTERVAL) {
                        self.last_key_request = Some(now);
                        self.events.push_back(ClientEvent::KeyframeRequested);
                    }
                }
                _ => {}
            }
        }
        self.frame_log.tick(now);
        // A frame nothing repaired in time: the pictures after it are damaged until the next
        // keyframe, so ask for one now rather than wait for the encoder's next (with repair;
        // the server passes on one request per 500 ms).
        if std::mem::take(&mut self.frame_log.damaged)
            && self.repair.is_some()
            && self.damage_key_request.is_none_or(|t| now.duration_since(t) >= DAMAGE_KEY_INTERVAL)
        {
            self.damage_key_request = Some(now);
            self.request_keyframe(now);
        }
        if self.connected {
            self.connect_by = None;
        } else if self.connect_by.is_some_and(|t| now >= t) {
            tracing::warn!(role = ?self.role, "not connected within the limit after the answer; failing");
            self.fail();
            return;
        }
        if self.watch.check(now, self.connected) == Liveness::Silent {
            tracing::warn!(role = ?self.role, "nothing from the server for the silence limit");
            self.events.push_back(ClientEvent::Silent);
        }
        if now >= self.next_stats {
            self.next_stats = now + STATS_INTERVAL;
            self.read_stats(now);
            self.events.push_back(ClientEvent::Stats(Box::new(self.stats)));
        }
        self.flush(now);
    }

    /// Handles the connection's events; false once it is closed or failed for good.
    fn drain_events(&mut self, now: Instant) -> bool {
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
                                self.watch.packet(now);
                            }
                            self.events.push_back(ClientEvent::Connected);
                        }
                        RTCPeerConnectionState::Disconnected => {
                            self.connected = false;
                            self.events.push_back(ClientEvent::Disconnected);
                        }
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => return false,
                        _ => {}
                    }
                }
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    let kind = self.pc.rtp_receiver(init.receiver_id).map(|r| peer::kind_of(r.track().kind()));
                    if let Some(kind) = kind {
                        self.tracks.insert(init.track_id, kind);
                    }
                }
                _ => {}
            }
        }
        true
    }

    fn read_stats(&mut self, now: Instant) {
        let report = self.pc.get_stats(now, StatsSelector::None);
        let mut lost = 0u64;
        let r = &mut self.stats.repaired;
        r.rtx_sent = 0;
        for entry in report.iter() {
            match entry {
                RTCStatsReportEntry::IceCandidatePair(p) if p.nominated && p.current_round_trip_time > 0.0 => {
                    self.stats.rtt_ms = Some(p.current_round_trip_time * 1000.0);
                }
                RTCStatsReportEntry::InboundRtp(s) => {
                    let n = s.received_rtp_stream_stats.packets_lost.max(0) as u64;
                    lost += n;
                    if s.received_rtp_stream_stats.rtp_stream_stats.kind
                        == rtc::rtp_transceiver::rtp_sender::RtpCodecKind::Video
                    {
                        r.video_lost = n;
                        r.fec_received = s.fec_packets_received;
                    }
                }
                RTCStatsReportEntry::OutboundRtp(s) => {
                    r.rtx_sent += s.retransmitted_packets_sent;
                    // One estimate for the connection, shown on each of its streams.
                    if s.target_bitrate > 0.0 {
                        self.stats.estimate_kbps = Some(s.target_bitrate / 1000.0);
                    }
                }
                _ => {}
            }
        }
        if let Some(c) = &self.repair {
            (r.rtx_received, r.fec_rebuilt) = c.read();
        }
        r.audio = self.audio_loss.counts;
        r.frames = self.frame_log.counts;
        // Publish: what the server's receiver reports say (see `keyframe::reported_loss`).
        self.stats.lost = lost + self.reported_lost.iter().sum::<u64>();
        if self.cap_at.is_some_and(|t| now.saturating_duration_since(t) > CAP_TTL) {
            self.cap_at = None;
            self.stats.cap_kbps = None;
        }
    }
}

/// Whether a connection that ICE calls connected still carries anything from the server.
/// Armed by the first RTP or RTCP packet (a player of a stream nobody sends yet gets
/// nothing, and that is not a fault); once armed, the server's reports arrive every second
/// even when the stream is muted or its camera is off, so silence means the path or the
/// server's side of the connection is gone.
#[derive(Debug, Clone)]
pub struct SilenceWatch {
    limit: Duration,
    last: Option<Instant>,
    silent: bool,
}

/// What [`SilenceWatch`] tells the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing to report.
    Same,
    /// Silent for the limit.
    Silent,
    /// Media again after silence.
    Back,
}

impl SilenceWatch {
    pub fn new(limit: Duration) -> Self {
        SilenceWatch { limit, last: None, silent: false }
    }

    /// An RTP or RTCP packet arrived.
    pub fn packet(&mut self, now: Instant) -> Liveness {
        self.last = Some(now);
        if std::mem::take(&mut self.silent) { Liveness::Back } else { Liveness::Same }
    }

    /// Checked on every turn; `connected`: ICE and DTLS are up.
    pub fn check(&mut self, now: Instant, connected: bool) -> Liveness {
        match self.last {
            Some(t) if connected && !self.silent && now.saturating_duration_since(t) >= self.limit => {
                self.silent = true;
                Liveness::Silent
            }
            _ => Liveness::Same,
        }
    }

    /// When the next check is due.
    pub fn deadline(&self) -> Option<Instant> {
        self.last.filter(|_| !self.silent).map(|t| t + self.limit)
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
