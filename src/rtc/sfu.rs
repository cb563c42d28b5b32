//! The server's selective forwarding unit. One task owns one UDP socket and every peer
//! connection on it: a publisher's RTP is forwarded, unchanged but for SSRC and payload
//! type, to each player of the same stream (same app, same room: the registry decides who
//! may connect, the SFU only knows stream keys). Each player connection keeps its own
//! retransmission buffer (the NACK responder), so a lossy player never costs the publisher
//! or the other players anything. A player that joins, or asks (PLI/FIR), gets the
//! publisher asked for a keyframe, at most every 500 ms per publisher.
//!
//! Datagrams are routed by address once known; the first datagram from a new address is
//! an ICE check whose USERNAME names the server's ufrag, which is unique per connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::client::Role;
use super::peer::{self, PeerOpts, RtcError, codec};
use super::{Kind, stun};

const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// A connection that sent nothing at all (no STUN, no media, no RTCP) for this long is gone
/// (RFC 7675's consent lifetime). Media and RTCP count: agents such as libnice send a
/// consent check only every ~25 s while their media flows.
pub const CONSENT_EXPIRY: Duration = Duration::from_secs(30);
const MAX_BATCH: usize = 64;

/// A stream as the SFU knows it: app, room and stream ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// The AppID.
    pub app_id: u32,
    /// The room.
    pub room_id: String,
    /// The stream.
    pub stream_id: String,
}

/// Counters of the SFU, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Publish connections now.
    pub publishers: usize,
    /// Play connections now.
    pub players: usize,
    /// RTP packets received from publishers.
    pub packets_in: u64,
    /// RTP packets forwarded to players.
    pub packets_out: u64,
    /// Keyframe requests sent to publishers.
    pub keyframe_requests: u64,
}

enum Cmd {
    Offer {
        session: String,
        stream: StreamKey,
        role: Role,
        sdp: String,
        reply: oneshot::Sender<Result<String, RtcError>>,
    },
    EndStream(StreamKey),
    EndPlay(String, StreamKey),
    EndSession(String),
    Stats(oneshot::Sender<SfuStats>),
    Alive(String, oneshot::Sender<bool>),
}

/// A handle to the SFU task. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    tx: mpsc::Sender<Cmd>,
    /// The media socket's address.
    pub addr: SocketAddr,
}

impl Sfu {
    /// Binds the media socket at `bind` and starts the SFU. `announce` are the addresses
    /// put in answers (with the socket's port); empty means the bound address.
    pub fn start(bind: SocketAddr, announce: Vec<IpAddr>) -> Result<Sfu, RtcError> {
        let socket = peer::bind_udp(bind)?;
        let addr = socket.local_addr()?;
        let mut candidates: Vec<SocketAddr> = announce.into_iter().map(|ip| SocketAddr::new(ip, addr.port())).collect();
        if candidates.is_empty() {
            candidates.push(addr);
        }
        let (tx, rx) = mpsc::channel(1024);
        let core = Core::new(socket, addr, candidates);
        tokio::spawn(core.run(rx));
        Ok(Sfu { tx, addr })
    }

    /// Answers a device's or browser's offer for `stream`. Replaces that session's earlier
    /// connection for the same stream and role.
    pub async fn offer(&self, session: &str, stream: StreamKey, role: Role, sdp: String) -> Result<String, RtcError> {
        let (reply, rx) = oneshot::channel();
        let cmd = Cmd::Offer { session: session.to_string(), stream, role, sdp, reply };
        self.tx.send(cmd).await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?;
        rx.await.map_err(|_| RtcError::Webrtc("media relay stopped".into()))?
    }

    /// The stream is gone: close its publisher and players.
    pub fn end_stream(&self, stream: StreamKey) {
        let _ = self.tx.try_send(Cmd::EndStream(stream));
    }

    /// `session` stopped playing `stream`.
    pub fn end_play(&self, session: &str, stream: StreamKey) {
        let _ = self.tx.try_send(Cmd::EndPlay(session.to_string(), stream));
    }

    /// `session` is gone: close all its connections.
    pub fn end_session(&self, session: &str) {
        let _ = self.tx.try_send(Cmd::EndSession(session.to_string()));
    }

    /// The counters.
    /// Whether `session` still has a media connection (one whose ICE failed or that was
    /// closed is gone).
    pub async fn session_alive(&self, session: &str) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Cmd::Alive(session.to_string(), reply)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Relay counters.
    pub async fn stats(&self) -> Option<SfuStats> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Cmd::Stats(tx)).await.ok()?;
        rx.await.ok()
    }
}

struct Conn {
    pc: RTCPeerConnection,
    role: Role,
    session: String,
    stream: StreamKey,
    ufrag: String,
    connected: bool,
    /// The last datagram from the peer (or the answer, before any).
    last_rx: Instant,
    addrs: Vec<SocketAddr>,
    /// Publisher: track id -> kind; the video receiver and its SSRC (for PLI).
    tracks: HashMap<String, Kind>,
    video_receiver: Option<(RTCRtpReceiverId, u32)>,
    last_keyframe_request: Option<Instant>,
    /// Player: kind -> (sender, ssrc, payload type).
    senders: HashMap<Kind, (RTCRtpSenderId, u32, u8)>,
}

struct Core {
    socket: UdpSocket,
    local: SocketAddr,
    candidates: Vec<SocketAddr>,
    conns: HashMap<u64, Conn>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<SocketAddr, u64>,
    publisher: HashMap<StreamKey, u64>,
    players: HashMap<StreamKey, Vec<u64>>,
    next: u64,
    stats: SfuStats,
    next_expiry_scan: Instant,
}

impl Core {
    fn new(socket: UdpSocket, local: SocketAddr, candidates: Vec<SocketAddr>) -> Core {
        Core {
            socket,
            local,
            candidates,
            conns: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            publisher: HashMap::new(),
            players: HashMap::new(),
            next: 1,
            stats: SfuStats::default(),
            next_expiry_scan: Instant::now(),
        }
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>) {
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let deadline = self.conns.values_mut().filter_map(|c| c.pc.poll_timeout()).min();
            // At least once a second, for the consent expiry.
            let sleep = deadline.map_or(now + Duration::from_secs(1), |d| d.min(now + Duration::from_secs(1)));
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.datagram(from, &buf[..n]);
                    }
                    // Take what else has arrived before looking at timers again.
                    for _ in 0..MAX_BATCH {
                        match self.socket.try_recv_from(&mut buf) {
                            Ok((n, from)) => self.datagram(from, &buf[..n]),
                            Err(_) => break,
                        }
                    }
                }
                cmd = cmds.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                _ = tokio::time::sleep_until(sleep.into()) => self.timers(Instant::now()),
            }
        }
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Offer { session, stream, role, sdp, reply } => {
                let _ = reply.send(self.answer(session, stream, role, sdp));
            }
            Cmd::EndStream(stream) => {
                let mut ids: Vec<u64> = self.players.get(&stream).cloned().unwrap_or_default();
                ids.extend(self.publisher.get(&stream));
                for id in ids {
                    self.remove(id);
                }
            }
            Cmd::EndPlay(session, stream) => {
                let ids: Vec<u64> = self.players.get(&stream).cloned().unwrap_or_default();
                for id in ids {
                    if self.conns.get(&id).is_some_and(|c| c.session == session) {
                        self.remove(id);
                    }
                }
            }
            Cmd::EndSession(session) => {
                let ids: Vec<u64> =
                    self.conns.iter().filter(|(_, c)| c.session == session).map(|(id, _)| *id).collect();
                for id in ids {
                    self.remove(id);
                }
            }
            Cmd::Alive(session, reply) => {
                let _ = reply.send(self.conns.values().any(|c| c.session == session));
            }
            Cmd::Stats(reply) => {
                let mut s = self.stats;
                s.publishers = self.publisher.len();
                s.players = self.players.values().map(Vec::len).sum();
                let _ = reply.send(s);
            }
        }
    }

    fn answer(&mut self, session: String, stream: StreamKey, role: Role, sdp: String) -> Result<String, RtcError> {
        let now = Instant::now();
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        let ufrag = peer::random_token(16);
        let mut pc =
            peer::build(now, PeerOpts { lite: true, credentials: Some((ufrag.clone(), peer::random_token(32))) })?;
        if role == Role::Play {
            for kind in Kind::ALL {
                let encodings = vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters {
                        ssrc: Some(rand::random::<u32>() | 1),
                        ..Default::default()
                    },
                    codec: codec(kind),
                    ..Default::default()
                }];
                let label = format!("{}-{}", stream.stream_id, kind.as_str());
                let track = MediaStreamTrack::new(
                    stream.stream_id.clone(),
                    label.clone(),
                    label,
                    peer::codec_kind(kind),
                    encodings,
                );
                pc.add_track(track)?;
            }
        }
        pc.set_remote_description(now, offer).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        for c in &self.candidates {
            peer::add_host_candidate(&mut pc, *c)?;
        }
        let answer = pc.create_answer(None).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        pc.set_local_description(now, answer)?;
        let sdp = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        let mut senders = HashMap::new();
        let mut video_receiver = None;
        if role == Role::Publish {
            // Known from the offer's SSRCs, so a keyframe can be asked for before media flows.
            let ids: Vec<_> = pc.get_receivers().collect();
            let mut usable = 0;
            for id in ids {
                let Some(mut r) = pc.rtp_receiver(id) else { continue };
                if r.get_parameters().rtp_parameters.codecs.is_empty() {
                    continue;
                }
                usable += 1;
                if r.track().kind() == RtpCodecKind::Video
                    && let Some(ssrc) = r.track().ssrcs().last()
                {
                    video_receiver = Some((id, ssrc));
                }
            }
            if usable == 0 {
                return Err(RtcError::BadSdp("the offer sends neither H.264 video nor Opus audio".into()));
            }
        }
        if role == Role::Play {
            let ids: Vec<_> = pc.get_senders().collect();
            for id in ids {
                let Some(mut s) = pc.rtp_sender(id) else { continue };
                let kind = if s.track().kind() == RtpCodecKind::Audio { Kind::Audio } else { Kind::Video };
                let ssrc = s.track().ssrcs().last().unwrap_or(0);
                if let Some(pt) = s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type) {
                    senders.insert(kind, (id, ssrc, pt));
                }
            }
            if senders.is_empty() {
                return Err(RtcError::BadSdp("the offer receives neither H.264 video nor Opus audio".into()));
            }
        }
        // A new offer from the same session for the same stream replaces the old connection.
        let old: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session == session && c.stream == stream && c.role == role)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.remove(id);
        }
        if role == Role::Publish
            && let Some(prev) = self.publisher.get(&stream).copied()
        {
            self.remove(prev);
        }
        let id = self.next;
        self.next += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        match role {
            Role::Publish => {
                self.publisher.insert(stream.clone(), id);
            }
            Role::Play => self.players.entry(stream.clone()).or_default().push(id),
        }
        tracing::debug!(id, ?role, stream = %stream.stream_id, "media connection answered");
        let conn = Conn {
            pc,
            role,
            session,
            stream,
            ufrag,
            connected: false,
            last_rx: now,
            addrs: Vec::new(),
            tracks: HashMap::new(),
            video_receiver,
            last_keyframe_request: None,
            senders,
        };
        self.conns.insert(id, conn);
        Ok(sdp)
    }

    fn remove(&mut self, id: u64) {
        let Some(mut c) = self.conns.remove(&id) else { return };
        let _ = c.pc.close();
        peer::flush(&mut c.pc, &self.socket);
        self.by_ufrag.remove(&c.ufrag);
        for a in &c.addrs {
            self.by_addr.remove(a);
        }
        match c.role {
            Role::Publish => {
                if self.publisher.get(&c.stream) == Some(&id) {
                    self.publisher.remove(&c.stream);
                }
            }
            Role::Play => {
                if let Some(v) = self.players.get_mut(&c.stream) {
                    v.retain(|p| *p != id);
                    if v.is_empty() {
                        self.players.remove(&c.stream);
                    }
                }
            }
        }
        tracing::debug!(id, role = ?c.role, stream = %c.stream.stream_id, "media connection closed");
    }

    /// The local candidate a datagram from `from` arrived at. With a wildcard bind (0.0.0.0)
    /// the socket cannot tell, and ICE drops checks to an address it never announced: a
    /// loopback peer used the loopback candidate, any other the first routable one.
    fn local_for(&self, from: SocketAddr) -> SocketAddr {
        if !self.local.ip().is_unspecified() {
            return self.local;
        }
        let loopback = from.ip().is_loopback();
        self.candidates
            .iter()
            .find(|c| c.ip().is_loopback() == loopback)
            .or(self.candidates.first())
            .copied()
            .unwrap_or(self.local)
    }

    fn datagram(&mut self, from: SocketAddr, data: &[u8]) {
        let id = match self.by_addr.get(&from) {
            Some(id) => *id,
            None => {
                let Some(id) = stun::local_ufrag(data).and_then(|u| self.by_ufrag.get(u.as_str())).copied() else {
                    // A plain binding request (`callbox doctor`) learns its address; anything
                    // else is not ours: a stale peer after a restart, or noise.
                    if let Some(resp) = stun::binding_success(data, from) {
                        let _ = self.socket.try_send_to(&resp, from);
                    }
                    return;
                };
                self.by_addr.insert(from, id);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.addrs.push(from);
                }
                id
            }
        };
        let local = self.local_for(from);
        let Some(c) = self.conns.get_mut(&id) else { return };
        let now = Instant::now();
        c.last_rx = now;
        if peer::feed(&mut c.pc, now, local, from, data, !c.connected).is_err() {
            return;
        }
        self.after_input(id);
    }

    fn timers(&mut self, now: Instant) {
        // Timers come due many times a second with many connections; a whole-table scan for
        // the 30 s expiry once a second is plenty.
        if now >= self.next_expiry_scan {
            self.next_expiry_scan = now + Duration::from_secs(1);
            let expired: Vec<u64> = self
                .conns
                .iter()
                .filter(|(_, c)| now.saturating_duration_since(c.last_rx) >= CONSENT_EXPIRY)
                .map(|(id, _)| *id)
                .collect();
            for id in expired {
                tracing::debug!(id, "media connection silent for the consent lifetime; closing");
                self.remove(id);
            }
        }
        let due: Vec<u64> = self
            .conns
            .iter_mut()
            .filter_map(|(id, c)| c.pc.poll_timeout().is_some_and(|t| t <= now).then_some(*id))
            .collect();
        for id in due {
            if let Some(c) = self.conns.get_mut(&id) {
                let _ = c.pc.handle_timeout(now);
            }
            self.after_input(id);
        }
    }

    /// Handles what a connection produced after input: its events, the media it received
    /// (forwarded), and its datagrams.
    fn after_input(&mut self, id: u64) {
        let mut closed = false;
        let mut wants_key = false;
        let mut joined = false;
        let mut media: Vec<(Kind, rtc::rtp::Packet)> = Vec::new();
        let Some(c) = self.conns.get_mut(&id) else { return };
        while let Some(e) = c.pc.poll_event() {
            match e {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(state) => match state {
                    RTCPeerConnectionState::Connected => {
                        c.connected = true;
                        joined = c.role == Role::Play;
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => closed = true,
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let Some(r) = c.pc.rtp_receiver(init.receiver_id) {
                        let kind = if r.track().kind() == RtpCodecKind::Audio { Kind::Audio } else { Kind::Video };
                        if kind == Kind::Video {
                            let ssrc = r.track().ssrcs().last().unwrap_or(0);
                            c.video_receiver = Some((init.receiver_id, ssrc));
                        }
                        c.tracks.insert(init.track_id, kind);
                    }
                }
                _ => {}
            }
        }
        while let Some(m) = c.pc.poll_read() {
            match m.message {
                RTCMessage::RtpPacket(track, packet) if c.role == Role::Publish => {
                    if let Some(kind) = c.tracks.get(&track) {
                        media.push((*kind, packet));
                    }
                }
                RTCMessage::RtcpPacket(_, packets) if c.role == Role::Play => {
                    wants_key |= super::keyframe::wants_keyframe(&packets);
                }
                _ => {}
            }
        }
        peer::flush(&mut c.pc, &self.socket);
        // The stream key is cloned only when another connection must be reached (not for
        // every ICE check or RTCP report).
        let role = c.role;
        if role == Role::Publish && !media.is_empty() {
            let stream = c.stream.clone();
            self.forward(&stream, media);
        } else if role == Role::Play && (wants_key || joined) {
            let stream = c.stream.clone();
            self.request_keyframe(&stream, joined);
        }
        if closed {
            self.remove(id);
        }
    }

    fn forward(&mut self, stream: &StreamKey, mut media: Vec<(Kind, rtc::rtp::Packet)>) {
        self.stats.packets_in += media.len() as u64;
        let Some(players) = self.players.get(stream) else { return };
        // Header extension IDs (mid, abs-send-time, transport-cc, ...) are negotiated per
        // connection: the publisher's mean something else, or nothing, to a player (a browser's
        // audio mid would route its packets to our video). Dropped once, before the copies.
        for (_, packet) in &mut media {
            let h = &mut packet.header;
            h.extension = false;
            h.extension_profile = 0;
            h.extensions.clear();
            h.extensions_padding = 0;
        }
        let now = Instant::now();
        for pid in players {
            let Some(p) = self.conns.get_mut(pid) else { continue };
            for (kind, packet) in &media {
                let Some(&(sender, ssrc, pt)) = p.senders.get(kind) else { continue };
                let mut out = packet.clone();
                out.header.ssrc = ssrc;
                out.header.payload_type = pt;
                if let Some(mut s) = p.pc.rtp_sender(sender)
                    && s.write_rtp(now, out).is_ok()
                {
                    self.stats.packets_out += 1;
                }
            }
            peer::flush(&mut p.pc, &self.socket);
        }
    }

    /// Asks the stream's publisher for a keyframe (a joining player always, a player's
    /// PLI/FIR at most every 500 ms).
    fn request_keyframe(&mut self, stream: &StreamKey, force: bool) {
        let Some(id) = self.publisher.get(stream).copied() else { return };
        let Some(c) = self.conns.get_mut(&id) else { return };
        let now = Instant::now();
        if !force && c.last_keyframe_request.is_some_and(|t| now.duration_since(t) < KEYFRAME_INTERVAL) {
            return;
        }
        let Some((receiver, ssrc)) = c.video_receiver else { return };
        c.last_keyframe_request = Some(now);
        if let Some(mut r) = c.pc.rtp_receiver(receiver) {
            let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc: ssrc };
            if r.write_rtcp(now, vec![Box::new(pli)]).is_ok() {
                self.stats.keyframe_requests += 1;
            }
        }
        peer::flush(&mut c.pc, &self.socket);
    }
}
