//! The SFU's sans-IO core: every peer connection of the media port, the routing of
//! datagrams to them, forwarding and keyframe requests. Time and input come in
//! (`handle_offer`, `handle_datagram`, `handle_timeout`, the end_* calls); datagrams to send
//! ([`SfuCore::poll_transmit`]) and the next deadline ([`SfuCore::poll_timeout`]) go out.
//! It owns no socket and reads no clock: the task in `mod.rs` does both, and the unit tests
//! drive it in virtual time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use rtc::rtp_transceiver::RTCRtpReceiverId;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::sansio::Protocol;
use rtc::statistics::StatsSelector;
use rtc::statistics::report::RTCStatsReportEntry;

use super::shard::{ShardMsg, Shards};
use super::{CONSENT_EXPIRY, MediaOffer, SfuStats, StreamKey};
use crate::proto::MediaRole;
use crate::rtc::peer::{self, HostCandidate, PeerOpts, RtcError, Sender, Transmit, Transport};
use crate::rtc::repair::{RedEncoder, RepairCounters};
use crate::rtc::{Kind, stun};

/// A player's PLI/FIR reaches the publisher at most this often.
pub const KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);
/// How often connections are checked for the consent expiry, players' estimates read and
/// publishers told the lowest (REMB).
const EXPIRY_SCAN: Duration = Duration::from_secs(1);
/// The range of the SFU's estimate of each player's downlink (GCC over the player's TWCC
/// feedback), bit/s. It starts at the ceiling: a player limits its publisher only once its
/// own feedback shows a thinner path.
const PLAYER_ESTIMATE: peer::Congestion =
    peer::Congestion { initial_bps: 10_000_000.0, min_bps: 100_000.0, max_bps: 10_000_000.0 };

struct Conn {
    pc: RTCPeerConnection,
    role: MediaRole,
    session: String,
    stream: StreamKey,
    ufrag: String,
    connected: bool,
    /// The last datagram from the peer (or the answer, before any).
    last_rx: Instant,
    addrs: Vec<(Transport, SocketAddr)>,
    /// How media last arrived (for status).
    path: Transport,
    /// Publisher: track id -> kind; the video receiver and its SSRC (for PLI).
    tracks: HashMap<String, Kind>,
    video_receiver: Option<(RTCRtpReceiverId, u32)>,
    last_keyframe_request: Option<Instant>,
    /// Player: where each kind is written.
    senders: HashMap<Kind, Sender>,
    /// Player: the send-side estimate of its downlink, bit/s (read every scan).
    estimate_bps: Option<f64>,
    /// Player that takes audio RED: the packet before rides with each.
    red: RedEncoder,
}

/// See the module docs.
pub struct SfuCore {
    local: SocketAddr,
    candidates: Vec<SocketAddr>,
    /// The TCP port's bound address and the passive candidates announced for it.
    tcp: Option<(SocketAddr, Vec<SocketAddr>)>,
    conns: HashMap<u64, Conn>,
    by_ufrag: HashMap<String, u64>,
    by_addr: HashMap<(Transport, SocketAddr), u64>,
    publisher: HashMap<StreamKey, u64>,
    players: HashMap<StreamKey, Vec<u64>>,
    next: u64,
    stats: SfuStats,
    /// What every connection's receiving side repaired (publishers' retransmissions and
    /// FEC), shared with their interceptors.
    repaired: Arc<RepairCounters>,
    next_expiry_scan: Option<Instant>,
    out: VecDeque<Transmit>,
    /// Each stream's latest keyframe (snapshots).
    keyframes: super::keyframes::Keyframes,
    /// How many shards, and which this is (see [`super::shard`]).
    shards: Shards,
    index: usize,
    /// Addresses whose connection lives on another shard, and which.
    foreign: HashMap<(Transport, SocketAddr), usize>,
    /// Streams whose home this is: the other shards with players of it, and the lowest
    /// estimate among those players as last told.
    remote: HashMap<StreamKey, HashMap<usize, Option<f64>>>,
    to_shards: VecDeque<(usize, ShardMsg)>,
}

impl SfuCore {
    /// A core for the socket bound at `local`; `candidates` are the addresses put in answers.
    pub fn new(local: SocketAddr, candidates: Vec<SocketAddr>) -> SfuCore {
        SfuCore {
            local,
            candidates,
            tcp: None,
            conns: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            publisher: HashMap::new(),
            players: HashMap::new(),
            next: 1,
            stats: SfuStats::default(),
            repaired: Arc::default(),
            next_expiry_scan: None,
            keyframes: Default::default(),
            out: VecDeque::new(),
            shards: Shards::new(1),
            index: 0,
            foreign: HashMap::new(),
            remote: HashMap::new(),
            to_shards: VecDeque::new(),
        }
    }

    /// Makes this core shard `index` of `shards` (see [`super::shard`]).
    pub fn on_shard(mut self, index: usize, shards: Shards) -> SfuCore {
        self.shards = shards;
        self.index = index.min(shards.count() - 1);
        self
    }

    /// The next message for another shard, and which.
    pub fn poll_shard_msg(&mut self) -> Option<(usize, ShardMsg)> {
        self.to_shards.pop_front()
    }

    /// A message from another shard (see [`ShardMsg`]).
    pub fn handle_shard_msg(&mut self, now: Instant, msg: ShardMsg) {
        match msg {
            ShardMsg::Datagram { from, transport, data, shard } => {
                self.receive(now, from, transport, &data, true);
                if !self.by_addr.contains_key(&(transport, from)) {
                    // Not ours after all (a stale check, a closed connection): the sender
                    // stops handing that address over.
                    self.to_shards.push_back((shard, ShardMsg::Forget(vec![(transport, from)])));
                }
            }
            ShardMsg::Media { stream, packets } => self.forward_local(now, &stream, &packets),
            ShardMsg::Gop { stream, packets } => self.keyframes.observe_all(&stream, &packets),
            ShardMsg::Players { stream, shard, any } => {
                if any {
                    if let Some(gop) = self.keyframes.gop(&stream) {
                        let msg = ShardMsg::Gop { stream: stream.clone(), packets: gop.to_vec() };
                        self.to_shards.push_back((shard, msg));
                    }
                    self.remote.entry(stream).or_default().entry(shard).or_insert(None);
                } else if let Some(m) = self.remote.get_mut(&stream) {
                    m.remove(&shard);
                    if m.is_empty() {
                        self.remote.remove(&stream);
                    }
                }
            }
            ShardMsg::KeyframeWanted { stream, force } => self.request_keyframe(now, &stream, force),
            ShardMsg::Estimate { stream, shard, bps } => {
                if let Some(e) = self.remote.get_mut(&stream).and_then(|m| m.get_mut(&shard)) {
                    *e = Some(bps);
                }
            }
            ShardMsg::Forget(addrs) => {
                for a in addrs {
                    self.foreign.remove(&a);
                }
            }
        }
    }

    /// Also accepts ICE-TCP on the TCP port bound at `local`: answers carry a passive TCP
    /// candidate for each of `candidates`.
    pub fn with_tcp(mut self, local: SocketAddr, candidates: Vec<SocketAddr>) -> SfuCore {
        self.tcp = Some((local, candidates));
        self
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    /// When [`SfuCore::handle_timeout`] is due next (none while there is no connection).
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let pcs = self.conns.values_mut().filter_map(|c| c.pc.poll_timeout()).min();
        let scan = self.next_expiry_scan.filter(|_| !self.conns.is_empty());
        pcs.into_iter().chain(scan).min()
    }

    /// Counters, with the connections now.
    pub fn stats(&self) -> SfuStats {
        let mut s = self.stats;
        s.shards = 1;
        s.publishers = self.publisher.len();
        s.players = self.players.values().map(Vec::len).sum();
        s.over_tcp = self.conns.values().filter(|c| c.connected && c.path == Transport::Tcp).count();
        (s.rtx_received, s.fec_rebuilt) = self.repaired.read();
        s
    }

    /// Whether `session` still has a media connection.
    pub fn session_alive(&self, session: &str) -> bool {
        self.conns.values().any(|c| c.session == session)
    }

    /// The stream's latest complete keyframe as RTP datagrams; none yet: the publisher is
    /// asked for one (at most every [`KEYFRAME_INTERVAL`]) and `None` is returned.
    pub fn keyframe(&mut self, now: Instant, stream: &StreamKey) -> Option<Vec<Vec<u8>>> {
        match self.keyframes.latest(stream) {
            Some(k) => Some(k.rtp()),
            None => {
                self.request_keyframe(now, stream, false);
                None
            }
        }
    }

    /// The stream is gone: close its publisher and players.
    pub fn end_stream(&mut self, stream: &StreamKey) {
        self.keyframes.forget(stream);
        let mut ids: Vec<u64> = self.players.get(stream).cloned().unwrap_or_default();
        ids.extend(self.publisher.get(stream));
        for id in ids {
            self.remove(id);
        }
    }

    /// `session` stopped playing `stream`.
    pub fn end_play(&mut self, session: &str, stream: &StreamKey) {
        let ids: Vec<u64> = self.players.get(stream).cloned().unwrap_or_default();
        for id in ids {
            if self.conns.get(&id).is_some_and(|c| c.session == session) {
                self.remove(id);
            }
        }
    }

    /// `session` is gone: close all its connections.
    pub fn end_session(&mut self, session: &str) {
        let ids: Vec<u64> = self.conns.iter().filter(|(_, c)| c.session == session).map(|(id, _)| *id).collect();
        for id in ids {
            self.remove(id);
        }
    }

    /// Answers an offer for `stream`. Replaces that session's earlier connection for the
    /// same stream and role (and a publisher replaces the stream's previous publisher).
    pub fn handle_offer(&mut self, now: Instant, offer: MediaOffer) -> Result<String, RtcError> {
        let MediaOffer { session, stream, role, sdp } = offer;
        let offer = RTCSessionDescription::offer(sdp).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        let ufrag = Shards::ufrag(self.index, &peer::random_token(14));
        let mut pc = peer::build(
            now,
            PeerOpts {
                lite: true,
                credentials: Some((ufrag.clone(), peer::random_token(32))),
                congestion: (role == MediaRole::Play).then_some(PLAYER_ESTIMATE),
                // The server repairs for whoever offers it, in both directions.
                repair: Some(self.repaired.clone()),
                red: role == MediaRole::Play,
            },
        )?;
        if role == MediaRole::Play {
            for kind in Kind::ALL {
                let label = format!("{}-{}", stream.stream_id, kind.as_str());
                let track = MediaStreamTrack::new(
                    stream.stream_id.clone(),
                    label.clone(),
                    label,
                    peer::codec_kind(kind),
                    peer::send_encodings(kind, true),
                );
                pc.add_track(track)?;
            }
        }
        pc.set_remote_description(now, offer).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        for c in &self.candidates {
            peer::add_host_candidate(&mut pc, HostCandidate::Udp(*c))?;
        }
        for c in self.tcp.iter().flat_map(|(_, cs)| cs) {
            peer::add_host_candidate(&mut pc, HostCandidate::TcpPassive(*c))?;
        }
        let answer = pc.create_answer(None).map_err(|e| RtcError::BadSdp(e.to_string()))?;
        pc.set_local_description(now, answer)?;
        let sdp = pc.local_description().map(|d| d.sdp).unwrap_or_default();
        let mut senders = HashMap::new();
        let mut video_receiver = None;
        match role {
            MediaRole::Publish => {
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
            MediaRole::Play => {
                senders = peer::senders(&mut pc);
                if senders.is_empty() {
                    return Err(RtcError::BadSdp("the offer receives neither H.264 video nor Opus audio".into()));
                }
            }
        }
        let old: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session == session && c.stream == stream && c.role == role)
            .map(|(id, _)| *id)
            .collect();
        for id in old {
            self.remove(id);
        }
        if role == MediaRole::Publish
            && let Some(prev) = self.publisher.get(&stream).copied()
        {
            self.remove(prev);
        }
        let id = self.next;
        self.next += 1;
        self.by_ufrag.insert(ufrag.clone(), id);
        match role {
            MediaRole::Publish => {
                self.publisher.insert(stream.clone(), id);
            }
            MediaRole::Play => {
                let players = self.players.entry(stream.clone()).or_default();
                players.push(id);
                let home = self.shards.home(&stream);
                if players.len() == 1 && home != self.index {
                    let msg = ShardMsg::Players { stream: stream.clone(), shard: self.index, any: true };
                    self.to_shards.push_back((home, msg));
                }
            }
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
            path: Transport::Udp,
            tracks: HashMap::new(),
            video_receiver,
            last_keyframe_request: None,
            senders,
            estimate_bps: None,
            red: RedEncoder::default(),
        };
        self.conns.insert(id, conn);
        self.next_expiry_scan.get_or_insert(now + EXPIRY_SCAN);
        Ok(sdp)
    }

    /// One datagram that arrived at the media port from `from`, over UDP or in a frame of
    /// an ICE-TCP connection. Routed by address once known; the first one from a new
    /// address must be an ICE check whose USERNAME names a connection's ufrag. A plain
    /// binding request (`callbox doctor`) is answered with the address it came from;
    /// anything else is dropped (a stale peer after a restart, noise).
    ///
    /// With shards, a datagram for another shard's connection (its address known to be, or
    /// its ICE check naming, another shard) is handed over ([`SfuCore::poll_shard_msg`]).
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, transport: Transport, data: &[u8]) {
        self.receive(now, from, transport, data, false);
    }

    /// [`SfuCore::handle_datagram`]; `hopped`: it came from another shard, and is never
    /// handed on again.
    fn receive(&mut self, now: Instant, from: SocketAddr, transport: Transport, data: &[u8], hopped: bool) {
        let id = match self.by_addr.get(&(transport, from)) {
            Some(id) => *id,
            None => {
                if !hopped && let Some(&owner) = self.foreign.get(&(transport, from)) {
                    self.hop(owner, from, transport, data);
                    return;
                }
                // Decoded once: an ICE check names a connection, a plain request is answered.
                let stun = stun::Received::parse(data);
                let ufrag = stun.as_ref().and_then(|m| m.local_ufrag());
                let owner = ufrag.as_deref().and_then(|u| self.shards.owner_of_ufrag(u));
                if !hopped && let Some(owner) = owner.filter(|o| *o != self.index) {
                    self.foreign.insert((transport, from), owner);
                    self.hop(owner, from, transport, data);
                    return;
                }
                let known = ufrag.and_then(|u| self.by_ufrag.get(u.as_str()));
                let Some(id) = known.copied() else {
                    if let Some(resp) = stun.and_then(|m| m.binding_success(from)) {
                        self.out.push_back(Transmit {
                            from: self.local,
                            to: from,
                            transport,
                            data: resp.as_slice().into(),
                        });
                    }
                    return;
                };
                self.by_addr.insert((transport, from), id);
                if let Some(c) = self.conns.get_mut(&id) {
                    c.addrs.push((transport, from));
                }
                id
            }
        };
        let local = self.local_for(from, transport);
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.last_rx = now;
        if data.first().is_some_and(|b| (128..=191).contains(b)) {
            c.path = transport;
        }
        if peer::feed(&mut c.pc, now, local, from, transport, data, !c.connected).is_err() {
            return;
        }
        self.after_input(now, id);
    }

    /// Whether datagrams from `from` reach a media connection (an ICE check named one, of
    /// this shard or another).
    pub fn knows(&self, transport: Transport, from: SocketAddr) -> bool {
        self.by_addr.contains_key(&(transport, from)) || self.foreign.contains_key(&(transport, from))
    }

    /// Hands a datagram to the shard that owns its connection.
    fn hop(&mut self, owner: usize, from: SocketAddr, transport: Transport, data: &[u8]) {
        self.stats.shard_hops += 1;
        let msg = ShardMsg::Datagram { from, transport, data: data.to_vec(), shard: self.index };
        self.to_shards.push_back((owner, msg));
    }

    /// Runs what is due at `now`: the connections' timers and the consent expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_expiry_scan.is_some_and(|t| now >= t) {
            self.next_expiry_scan = Some(now + EXPIRY_SCAN);
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
            self.tell_publishers(now);
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
            self.after_input(now, id);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(mut c) = self.conns.remove(&id) else { return };
        let _ = c.pc.close();
        peer::drain(&mut c.pc, &mut self.out);
        self.by_ufrag.remove(&c.ufrag);
        for a in &c.addrs {
            self.by_addr.remove(a);
        }
        if self.shards.count() > 1 && !c.addrs.is_empty() {
            for shard in (0..self.shards.count()).filter(|s| *s != self.index) {
                self.to_shards.push_back((shard, ShardMsg::Forget(c.addrs.clone())));
            }
        }
        match c.role {
            MediaRole::Publish => {
                if self.publisher.get(&c.stream) == Some(&id) {
                    self.publisher.remove(&c.stream);
                }
            }
            MediaRole::Play => {
                if let Some(v) = self.players.get_mut(&c.stream) {
                    v.retain(|p| *p != id);
                    if v.is_empty() {
                        self.players.remove(&c.stream);
                        let home = self.shards.home(&c.stream);
                        if home != self.index {
                            let msg = ShardMsg::Players { stream: c.stream.clone(), shard: self.index, any: false };
                            self.to_shards.push_back((home, msg));
                        }
                    }
                }
            }
        }
        tracing::debug!(id, role = ?c.role, stream = %c.stream.stream_id, "media connection closed");
    }

    /// The local candidate a datagram from `from` arrived at. With a wildcard bind (0.0.0.0)
    /// the socket cannot tell, and ICE drops checks to an address it never announced: a
    /// loopback peer used the loopback candidate, any other the first routable one.
    fn local_for(&self, from: SocketAddr, transport: Transport) -> SocketAddr {
        let (local, candidates) = match (transport, &self.tcp) {
            (Transport::Tcp, Some((local, candidates))) => (*local, candidates),
            _ => (self.local, &self.candidates),
        };
        if !local.ip().is_unspecified() {
            return local;
        }
        let loopback = from.ip().is_loopback();
        candidates.iter().find(|c| c.ip().is_loopback() == loopback).or(candidates.first()).copied().unwrap_or(local)
    }

    /// Handles what a connection produced after input: its events, the media it received
    /// (forwarded), and its datagrams.
    fn after_input(&mut self, now: Instant, id: u64) {
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
                        joined = c.role == MediaRole::Play;
                    }
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => closed = true,
                    _ => {}
                },
                RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                    if let Some(r) = c.pc.rtp_receiver(init.receiver_id) {
                        let kind = peer::kind_of(r.track().kind());
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
                RTCMessage::RtpPacket(track, packet) if c.role == MediaRole::Publish => {
                    if let Some(kind) = c.tracks.get(&track) {
                        media.push((*kind, packet));
                    }
                }
                RTCMessage::RtcpPacket(_, packets) if c.role == MediaRole::Play => {
                    wants_key |= crate::rtc::keyframe::wants_keyframe(&packets);
                }
                _ => {}
            }
        }
        peer::drain(&mut c.pc, &mut self.out);
        // The stream key is cloned only when another connection must be reached (not for
        // every ICE check or RTCP report).
        let role = c.role;
        if role == MediaRole::Publish && !media.is_empty() {
            let stream = c.stream.clone();
            self.forward(now, &stream, media);
        } else if role == MediaRole::Play && joined {
            let stream = c.stream.clone();
            if !self.send_gop(now, id, &stream) {
                self.request_keyframe(now, &stream, true);
            }
        } else if role == MediaRole::Play && wants_key {
            let stream = c.stream.clone();
            self.request_keyframe(now, &stream, false);
        }
        if closed {
            self.remove(id);
        }
    }

    fn forward(&mut self, now: Instant, stream: &StreamKey, mut media: Vec<(Kind, rtc::rtp::Packet)>) {
        self.stats.packets_in += media.len() as u64;
        // Header extension IDs (mid, abs-send-time, transport-cc, ...) are negotiated per
        // connection: the publisher's mean something else, or nothing, to a player (a browser's
        // audio mid would route its packets to our video). Dropped once, before the copies
        // (and before the GOP keeps them).
        for (_, packet) in &mut media {
            let h = &mut packet.header;
            h.extension = false;
            h.extension_profile = 0;
            h.extensions.clear();
            h.extensions_padding = 0;
        }
        match self.remote.get(stream) {
            Some(shards) => {
                // Shared with the other shards' players, not copied per player.
                let packets: Arc<[(Kind, rtc::rtp::Packet)]> = media.into();
                for shard in shards.keys() {
                    let msg = ShardMsg::Media { stream: stream.clone(), packets: packets.clone() };
                    self.to_shards.push_back((*shard, msg));
                }
                self.forward_local(now, stream, &packets);
            }
            None => self.forward_local(now, stream, &media),
        }
    }

    /// Writes a publisher's packets to this shard's players of `stream` (and keeps its GOP).
    fn forward_local(&mut self, now: Instant, stream: &StreamKey, media: &[(Kind, rtc::rtp::Packet)]) {
        let video = media.iter().filter(|(k, _)| *k == Kind::Video).map(|(_, p)| p);
        self.keyframes.observe_all(stream, video);
        let Some(players) = self.players.get(stream) else { return };
        for pid in players {
            let Some(p) = self.conns.get_mut(pid) else { continue };
            for (kind, packet) in media {
                let Some(sender) = p.senders.get(kind) else { continue };
                let sent = match sender.red.filter(|_| *kind == Kind::Audio) {
                    Some(red_pt) => {
                        let payload = p.red.encode(packet, sender.pt);
                        let red = rtc::rtp::Packet { header: packet.header.clone(), payload };
                        sender.write_as(&mut p.pc, now, red, red_pt)
                    }
                    None => sender.write(&mut p.pc, now, packet.clone()),
                };
                self.stats.packets_out += sent as u64;
            }
            peer::drain(&mut p.pc, &mut self.out);
        }
    }

    /// Sends a player that just connected the stream's pictures since its latest keyframe
    /// (kept by [`super::keyframes::Keyframes`]), so it starts decoding at once; false when
    /// none is kept (the publisher is asked instead).
    fn send_gop(&mut self, now: Instant, id: u64, stream: &StreamKey) -> bool {
        let Some(gop) = self.keyframes.gop(stream) else { return false };
        let Some(p) = self.conns.get_mut(&id) else { return false };
        let Some(sender) = p.senders.get(&Kind::Video) else { return false };
        let mut sent = 0;
        for packet in gop {
            sent += u64::from(sender.write(&mut p.pc, now, packet.clone()));
        }
        self.stats.packets_out += sent;
        self.stats.gops_sent += u64::from(sent > 0);
        peer::drain(&mut p.pc, &mut self.out);
        tracing::debug!(id, stream = %stream.stream_id, packets = gop.len(), "joining player sent the GOP so far");
        sent > 0
    }

    /// Reads each player's estimate and tells each publisher the lowest among its stream's
    /// players (REMB): a browser publisher caps its own estimate with it, an engine's
    /// encoder follows it. Nothing while no player's estimate is known.
    fn tell_publishers(&mut self, now: Instant) {
        let mut lowest: HashMap<StreamKey, f64> = HashMap::new();
        for c in self.conns.values_mut().filter(|c| c.role == MediaRole::Play && c.connected) {
            c.estimate_bps = c.pc.get_stats(now, StatsSelector::None).iter().find_map(|e| match e {
                RTCStatsReportEntry::OutboundRtp(s) if s.target_bitrate > 0.0 => Some(s.target_bitrate),
                _ => None,
            });
            if let Some(bps) = c.estimate_bps {
                let l = lowest.entry(c.stream.clone()).or_insert(bps);
                *l = l.min(bps);
            }
        }
        for (stream, m) in &self.remote {
            for bps in m.values().flatten() {
                let l = lowest.entry(stream.clone()).or_insert(*bps);
                *l = l.min(*bps);
            }
        }
        for (stream, bps) in lowest {
            let home = self.shards.home(&stream);
            if home != self.index {
                self.to_shards.push_back((home, ShardMsg::Estimate { stream, shard: self.index, bps }));
                continue;
            }
            let Some(c) = self.publisher.get(&stream).and_then(|id| self.conns.get_mut(id)) else { continue };
            let Some((receiver, ssrc)) = c.video_receiver else { continue };
            if let Some(mut r) = c.pc.rtp_receiver(receiver) {
                let remb = ReceiverEstimatedMaximumBitrate { sender_ssrc: 0, bitrate: bps as f32, ssrcs: vec![ssrc] };
                if r.write_rtcp(now, vec![Box::new(remb)]).is_ok() {
                    self.stats.bitrate_caps += 1;
                }
            }
            peer::drain(&mut c.pc, &mut self.out);
        }
    }

    /// The lowest estimate among `stream`'s players, bit/s, as last read.
    pub fn players_estimate(&self, stream: &StreamKey) -> Option<f64> {
        let ids = self.players.get(stream).into_iter().flatten();
        let local = ids.filter_map(|id| self.conns.get(id)?.estimate_bps);
        let remote = self.remote.get(stream).into_iter().flat_map(|m| m.values().flatten().copied());
        local.chain(remote).reduce(f64::min)
    }

    /// Asks the stream's publisher for a keyframe (a joining player always, a player's
    /// PLI/FIR at most every [`KEYFRAME_INTERVAL`]).
    fn request_keyframe(&mut self, now: Instant, stream: &StreamKey, force: bool) {
        let home = self.shards.home(stream);
        if home != self.index {
            self.to_shards.push_back((home, ShardMsg::KeyframeWanted { stream: stream.clone(), force }));
            return;
        }
        let Some(id) = self.publisher.get(stream).copied() else { return };
        let Some(c) = self.conns.get_mut(&id) else { return };
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
        peer::drain(&mut c.pc, &mut self.out);
    }
}
