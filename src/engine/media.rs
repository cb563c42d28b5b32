//! The engine's media: for every stream the session publishes, a publish pipeline and a
//! publish connection; for every stream it plays, a play connection and a play pipeline.
//! Driven by the session's state (Publishing / Playing start media, NoPublish / NoPlay
//! stop it), kept alive without the application acting:
//!
//! - a media connection whose path is cut (no answer to consent checks) is kept: it comes
//!   back by itself when the path does, which is the fastest recovery from a Wi-Fi roam or
//!   an LTE handover. While the room connection is demonstrably working
//!   ([`Session::signalling_fresh`]) a link that stays down, goes silent (no RTP or report
//!   from the server for `silence_ms`) or failed is replaced by a new one, offered over
//!   signalling, with back-off. An offer lost with the room connection is sent again once
//!   in the room; an offer left unanswered times out and is renegotiated. After a re-login
//!   (the server forgot us) every connection is renegotiated at once;
//! - while a stream's media does not flow, the application sees PublishRequesting /
//!   PlayRequesting with 1003038 / 1004029, and Publishing / Playing again when it does;
//! - a link that comes back tells the session (`network_back`), which replaces a silent
//!   room connection at once;
//! - a publish pipeline that fails (element error, encoder stall) is rebuilt with back-off;
//!   after three failures of a hardware encoder the next encoder of the chain is used;
//! - quality every 3 s, first-frame and stall/resume events.
//!
//! It runs inside the driver task: notes from connections and pipelines arrive on one
//! bounded channel, and the driver polls [`MediaManager::poll_timeout`].

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::event::{EngineEvent, MediaEventKind, PlayQuality, PublishQuality, PublisherState};
use super::reconnect::ReconnectPolicy;
#[cfg(doc)]
use super::session::Session;
use super::{PlayerState, QualityLevel};
use crate::media::encoder::{self, Encoder};
use crate::media::{Grid, Layout, MediaConfig, MediaError, Player, Publisher, RtpOut, has_element, pipeline};
use crate::proto::{ErrorCode, MediaRole};
use crate::rtc::client::{ClientConn, ClientEvent, LinkStats};

mod rtp_slot;
mod stall;

use rtp_slot::RtpSlot;
use stall::{STALL, StallWatch};

const TICK: Duration = Duration::from_millis(100);
const QUALITY_EVERY: Duration = Duration::from_secs(3);
const HW_FAILURES_BEFORE_FALLBACK: u32 = 3;
/// An offer sent over a working room connection and not answered by then is lost.
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a resume, a link still down gets this long to come back by itself (one consent
/// check) before it is renegotiated.
const RESUME_GRACE: Duration = Duration::from_millis(500);

/// Media settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineMedia {
    /// Capture, encoding and playback.
    pub config: MediaConfig,
    /// Local IP for media sockets; `None`: the address that routes to the server.
    pub bind: Option<IpAddr>,
}

enum Note {
    Link(MediaRole, String, u64, ClientEvent),
    Pipeline(MediaRole, String, u64, MediaError),
}

#[derive(Default)]
struct Link {
    conn: Option<ClientConn>,
    epoch: u64,
    /// The connection's offer until it is answered.
    offer: Option<String>,
    /// When the offer went out; `None`: not sent (the room connection was down) or lost.
    offer_sent: Option<Instant>,
    connected: bool,
    /// Not carrying media since then (cut, silent, failed, being renegotiated).
    down_since: Option<Instant>,
    /// The session's state for the stream is Publishing / Playing.
    session_ok: bool,
    /// The application was last told Publishing / Playing.
    shown_ok: bool,
    retry_at: Option<Instant>,
    failures: u32,
    stats: LinkStats,
    prev: LinkStats,
    since: Option<Instant>,
}

struct Pub {
    link: Link,
    pipeline: Option<Publisher>,
    pipeline_epoch: u64,
    rtp: Arc<Mutex<RtpSlot>>,
    failures: u32,
    failed_encoders: Vec<Encoder>,
    rebuild_at: Option<Instant>,
    prev: [u64; 3],
    last_encoded: u64,
    encoded_at: Instant,
    first_reported: bool,
}

struct Play {
    link: Link,
    player: Option<Player>,
    prev: [u64; 3],
    received_first: bool,
    rendered_first: bool,
    video: StallWatch,
    audio_stalled: bool,
    audio_at: Instant,
}

impl Play {
    /// A stream to play over `link`, nothing received yet.
    fn new(link: Link, now: Instant) -> Play {
        Play {
            link,
            player: None,
            prev: [0; 3],
            received_first: false,
            rendered_first: false,
            video: StallWatch::default(),
            audio_stalled: false,
            audio_at: now,
        }
    }
}

/// See the module docs.
pub(crate) struct MediaManager {
    cfg: EngineMedia,
    /// The signalling connection's route: media binds to the same local address.
    route: Option<crate::dial::Route>,
    pubs: HashMap<String, Pub>,
    plays: HashMap<String, Play>,
    tx: mpsc::Sender<Note>,
    rx: mpsc::Receiver<Note>,
    /// Offers to send: stream, role, SDP and the link epoch as the tag.
    offers: Vec<(String, MediaRole, String, u64)>,
    events: Vec<EngineEvent>,
    epoch: u64,
    next_quality: Instant,
    grid: Option<Grid>,
    muted: bool,
    /// A link came back: the network works again (see [`MediaManager::take_network_back`]).
    network_back: bool,
}

impl MediaManager {
    pub(crate) fn new(cfg: EngineMedia) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        MediaManager {
            cfg,
            route: None,
            pubs: HashMap::new(),
            plays: HashMap::new(),
            tx,
            rx,
            offers: Vec::new(),
            events: Vec::new(),
            epoch: 0,
            next_quality: Instant::now() + QUALITY_EVERY,
            grid: None,
            muted: false,
            network_back: false,
        }
    }

    /// Reacts to the session's publisher and player states, and returns the event the
    /// application should see: the session's Publishing / Playing (the server accepted) is
    /// told as PublishRequesting / PlayRequesting while the stream's media is down.
    pub(crate) fn observe(&mut self, e: EngineEvent, now: Instant) -> EngineEvent {
        let e = match e {
            EngineEvent::PublisherStateUpdate { stream_id, state, error_code } => {
                match state {
                    PublisherState::Publishing if !self.pubs.contains_key(&stream_id) => {
                        self.start_publish(&stream_id, now)
                    }
                    PublisherState::NoPublish => {
                        self.pubs.remove(&stream_id);
                    }
                    _ => {}
                }
                let ok = state == PublisherState::Publishing;
                match self.pubs.get_mut(&stream_id).map(|p| p.link.session_says(ok)) {
                    Some(false) if ok => state_event(MediaRole::Publish, stream_id, false),
                    _ => EngineEvent::PublisherStateUpdate { stream_id, state, error_code },
                }
            }
            EngineEvent::PlayerStateUpdate { stream_id, state, error_code } => {
                match state {
                    PlayerState::Playing if !self.plays.contains_key(&stream_id) => self.start_play(&stream_id, now),
                    PlayerState::NoPlay => {
                        self.plays.remove(&stream_id);
                    }
                    // The stream is gone (or not there yet): nothing to receive until it is back.
                    PlayerState::PlayRequesting if error_code == ErrorCode::STREAM_NOT_FOUND => {
                        self.plays.remove(&stream_id);
                    }
                    _ => {}
                }
                let ok = state == PlayerState::Playing;
                match self.plays.get_mut(&stream_id).map(|p| p.link.session_says(ok)) {
                    Some(false) if ok => state_event(MediaRole::Play, stream_id, false),
                    _ => EngineEvent::PlayerStateUpdate { stream_id, state, error_code },
                }
            }
            other => other,
        };
        self.update_grid();
        e
    }

    /// In grid layout, shows the local preview and every played stream, rebuilding the grid
    /// when that set changes.
    fn update_grid(&mut self) {
        if self.cfg.config.layout != Layout::Grid {
            return;
        }
        let mut want = Vec::new();
        if self.cfg.config.preview && !self.pubs.is_empty() {
            want.push(pipeline::PREVIEW_CHANNEL.to_string());
        }
        let mut plays: Vec<&String> = self.plays.keys().collect();
        plays.sort();
        want.extend(plays.into_iter().map(|s| pipeline::play_channel(s)));
        if self.grid.as_ref().map(|g| &g.channels) == Some(&want) || (want.is_empty() && self.grid.is_none()) {
            return;
        }
        self.grid = None;
        if want.is_empty() {
            return;
        }
        match Grid::start(&self.cfg.config, want) {
            Ok(g) => self.grid = Some(g),
            Err(e) => tracing::error!(error = %e, "cannot build the grid"),
        }
    }

    /// Composed grid frames so far (grid layout), for status and tests.
    pub(crate) fn grid_frames(&self) -> Option<u64> {
        self.grid.as_ref().map(|g| g.counters.snapshot()[1])
    }

    /// In the room again; `fresh` means the server has none of our media connections.
    pub(crate) fn joined(&mut self, fresh: bool, now: Instant) {
        let all: Vec<(MediaRole, String)> = self
            .pubs
            .keys()
            .map(|s| (MediaRole::Publish, s.clone()))
            .chain(self.plays.keys().map(|s| (MediaRole::Play, s.clone())))
            .collect();
        for (role, stream) in all {
            if fresh {
                self.relink(role, &stream, now);
                continue;
            }
            let Some(l) = self.link_mut(role, &stream) else { continue };
            if l.offer.is_some() && l.offer_sent.is_none() {
                // Never sent, or lost with the old room connection.
                self.queue_offer(role, &stream, now);
            } else if l.offer.is_none() && l.down_since.is_some() {
                // Cut while the room connection was down: one more consent check to come
                // back by itself, then a new connection.
                let at = now + RESUME_GRACE;
                l.retry_at = Some(l.retry_at.map_or(at, |t| t.min(at)));
            }
        }
    }

    /// Offers to send over signalling.
    pub(crate) fn take_offers(&mut self) -> Vec<(String, MediaRole, String, u64)> {
        std::mem::take(&mut self.offers)
    }

    /// An offer could not be sent (signalling down): keep it for the next join.
    pub(crate) fn unsent(&mut self, stream: String, role: MediaRole, tag: u64) {
        if let Some(l) = self.link_mut(role, &stream).filter(|l| l.epoch == tag) {
            l.offer_sent = None;
        }
    }

    /// True once after a media link came back: the network works again.
    pub(crate) fn take_network_back(&mut self) -> bool {
        std::mem::take(&mut self.network_back)
    }

    /// Events for the application.
    pub(crate) fn take_events(&mut self) -> Vec<EngineEvent> {
        std::mem::take(&mut self.events)
    }

    /// The server's answer to an offer.
    pub(crate) fn answer(
        &mut self,
        stream: &str,
        role: MediaRole,
        tag: u64,
        result: Result<String, ErrorCode>,
        now: Instant,
    ) {
        // An answer to an offer a newer connection replaced (it was slow, or lost and sent
        // again) carries another connection's ICE credentials: applying it would leave the
        // new connection checking against nothing until ICE gives up.
        let Some(l) = self.link_mut(role, stream).filter(|l| l.epoch == tag) else {
            tracing::debug!(stream, ?role, tag, "answer to a replaced offer; ignored");
            return;
        };
        match result {
            Ok(sdp) => {
                l.offer = None;
                l.offer_sent = None;
                if let Some(c) = &l.conn {
                    c.answer(sdp);
                }
            }
            Err(ErrorCode::NETWORK_INTERRUPTED) => {
                // Lost with the room connection: the same offer goes again after the resume.
                tracing::info!(stream, ?role, "media offer lost with the room connection; sending it again when back");
                l.offer_sent = None;
            }
            Err(code) => {
                tracing::warn!(stream, ?role, error_code = code.0, "media offer refused; retrying");
                l.conn = None;
                l.offer = None;
                l.offer_sent = None;
                l.failures += 1;
                l.retry_at = Some(now + backoff(l.failures));
                self.link_down(role, stream, now);
            }
        }
    }

    /// Mutes or unmutes the microphone on every publish pipeline, and on those built later.
    pub(crate) fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        for p in self.pubs.values() {
            if let Some(pl) = &p.pipeline {
                pl.set_muted(muted);
            }
        }
    }

    /// Simulates an encoder failure on a published stream (tests and diagnosis).
    pub(crate) fn inject_fault(&self, stream: &str) -> bool {
        self.pubs.get(stream).and_then(|p| p.pipeline.as_ref()).map(|p| p.simulate_failure()).is_some()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        (!self.pubs.is_empty() || !self.plays.is_empty()).then(|| Instant::now() + TICK)
    }

    pub(crate) async fn next_note(&mut self) -> Option<()> {
        let note = self.rx.recv().await?;
        self.note(note, Instant::now());
        Some(())
    }

    fn note(&mut self, note: Note, now: Instant) {
        match note {
            Note::Link(role, stream, epoch, ev) => {
                let Some(l) = self.link_mut(role, &stream).filter(|l| l.epoch == epoch) else { return };
                match ev {
                    ClientEvent::Offer(sdp) => {
                        l.offer = Some(sdp);
                        l.offer_sent = None;
                        self.queue_offer(role, &stream, now);
                    }
                    ClientEvent::Connected => {
                        l.failures = 0;
                        l.retry_at = None;
                        let was_down = l.down_since.take();
                        l.connected = true;
                        // A player whose path came back (the publisher's did not break) asks
                        // for a keyframe: the SFU passes it on (at most every 500 ms), so
                        // video decodes again now rather than at the next periodic keyframe.
                        if role == MediaRole::Play
                            && was_down.is_some()
                            && let Some(c) = &l.conn
                        {
                            c.request_keyframe();
                        }
                        let tell = l.session_ok && !std::mem::replace(&mut l.shown_ok, l.session_ok);
                        match was_down {
                            Some(t) => tracing::info!(
                                stream,
                                ?role,
                                down_ms = now.saturating_duration_since(t).as_millis() as u64,
                                "media flows again"
                            ),
                            None => tracing::info!(stream, ?role, "media connected"),
                        }
                        self.network_back = true;
                        if tell {
                            self.tell_state(role, &stream, true);
                        }
                        if let Some(p) = self.pubs.get(&stream).and_then(|p| p.pipeline.as_ref()) {
                            p.force_keyframe();
                        }
                    }
                    ClientEvent::Disconnected => {
                        tracing::warn!(stream, ?role, "media path cut (no answer to consent checks); waiting for it");
                        let silence = self.silence();
                        let Some(l) = self.link_mut(role, &stream) else { return };
                        l.retry_at.get_or_insert(now + silence);
                        self.link_down(role, &stream, now);
                    }
                    ClientEvent::Silent => {
                        tracing::warn!(stream, ?role, "no media or reports from the server; renegotiating");
                        l.failures += 1;
                        l.retry_at = Some(now + backoff(l.failures));
                        self.link_down(role, &stream, now);
                    }
                    ClientEvent::Failed => {
                        tracing::warn!(stream, ?role, "media connection failed; renegotiating");
                        l.conn = None;
                        l.failures += 1;
                        l.retry_at = Some(now + backoff(l.failures));
                        self.link_down(role, &stream, now);
                    }
                    ClientEvent::KeyframeRequested => {
                        if let Some(p) = self.pubs.get(&stream).and_then(|p| p.pipeline.as_ref()) {
                            p.force_keyframe();
                        }
                    }
                    ClientEvent::Stats(s) => l.stats = s,
                    ClientEvent::FirstVideoFrame => {
                        if let Some(p) = self.plays.get_mut(&stream).filter(|p| !p.received_first) {
                            p.received_first = true;
                            self.events.push(EngineEvent::MediaEvent {
                                stream_id: stream,
                                event: MediaEventKind::ReceivedFirstFrame,
                            });
                        }
                    }
                }
            }
            Note::Pipeline(MediaRole::Publish, stream, epoch, err) => {
                if self.pubs.get(&stream).is_some_and(|p| p.pipeline_epoch == epoch) {
                    self.pipeline_failed(&stream, ErrorCode::MEDIA_PIPELINE_FAILED, err.to_string(), now);
                }
            }
            Note::Pipeline(MediaRole::Play, stream, _, err) => {
                tracing::warn!(stream, error = %err, "play pipeline failed; rebuilding");
                if self.plays.remove(&stream).is_some() {
                    self.start_play(&stream, now);
                }
            }
        }
    }

    /// Timers: retries, offer timeouts, rebuilds, stalls, quality. `signalling_fresh`: the
    /// room connection demonstrably works (an offer sent now gets through).
    pub(crate) fn tick(&mut self, now: Instant, signalling_fresh: bool) {
        let links = self
            .pubs
            .iter()
            .map(|(s, p)| (MediaRole::Publish, s, &p.link))
            .chain(self.plays.iter().map(|(s, p)| (MediaRole::Play, s, &p.link)));
        let mut due = Vec::new();
        for (role, stream, l) in links {
            let retry = l.retry_at.is_some_and(|t| t <= now)
                // A connection that may still come back is only replaced when the new offer
                // can reach the server; a failed one is replaced at once (its offer waits).
                && (l.conn.is_none() || signalling_fresh);
            let lost_offer =
                signalling_fresh && l.offer_sent.is_some_and(|t| now.saturating_duration_since(t) >= OFFER_TIMEOUT);
            if lost_offer {
                tracing::warn!(stream, ?role, "media offer unanswered; renegotiating");
            }
            if retry || lost_offer {
                due.push((role, stream.clone(), lost_offer));
            }
        }
        for (role, s, lost_offer) in due {
            if lost_offer && let Some(l) = self.link_mut(role, &s) {
                l.failures += 1;
            }
            self.relink(role, &s, now);
        }
        let rebuild: Vec<String> =
            self.pubs.iter().filter(|(_, p)| p.rebuild_at.is_some_and(|t| t <= now)).map(|(s, _)| s.clone()).collect();
        for s in rebuild {
            self.build_pipeline(&s, now);
        }
        self.watch_publishers(now);
        self.watch_players(now);
        if now >= self.next_quality {
            let secs = (now - self.next_quality + QUALITY_EVERY).as_secs_f64();
            self.next_quality = now + QUALITY_EVERY;
            self.quality(secs);
        }
    }

    /// The silence limit of media links.
    fn silence(&self) -> Duration {
        Duration::from_millis(self.cfg.config.silence_ms.max(500))
    }

    /// Queues the link's offer for signalling (the driver calls [`MediaManager::unsent`] if
    /// the room connection is down).
    fn queue_offer(&mut self, role: MediaRole, stream: &str, now: Instant) {
        let Some(l) = self.link_mut(role, stream) else { return };
        let Some(sdp) = l.offer.clone() else { return };
        l.offer_sent = Some(now);
        let tag = l.epoch;
        self.offers.push((stream.to_string(), role, sdp, tag));
    }

    /// The stream's media stopped flowing: the application is told once.
    fn link_down(&mut self, role: MediaRole, stream: &str, now: Instant) {
        let Some(l) = self.link_mut(role, stream) else { return };
        l.connected = false;
        l.down_since.get_or_insert(now);
        if std::mem::take(&mut l.shown_ok) {
            self.tell_state(role, stream, false);
        }
    }

    fn tell_state(&mut self, role: MediaRole, stream: &str, ok: bool) {
        self.events.push(state_event(role, stream.to_string(), ok));
    }

    fn link_mut(&mut self, role: MediaRole, stream: &str) -> Option<&mut Link> {
        match role {
            MediaRole::Publish => self.pubs.get_mut(stream).map(|p| &mut p.link),
            MediaRole::Play => self.plays.get_mut(stream).map(|p| &mut p.link),
        }
    }

    /// The route of the latest signalling connection (every connection tells it, so a
    /// changed network is followed).
    pub(crate) fn set_route(&mut self, route: crate::dial::Route) {
        self.route = Some(route);
    }

    /// Where media sockets bind: the configured IP, else the local address the signalling
    /// connection to the server uses (no name lookup here: the connection has resolved it),
    /// else the address that routes to the server's.
    fn bind_addr(&mut self) -> SocketAddr {
        if let Some(ip) = self.cfg.bind {
            return SocketAddr::new(ip, 0);
        }
        let ip = match self.route {
            Some(r) if !r.local.ip().is_unspecified() => r.local.ip(),
            Some(r) => crate::rtc::local_ip_towards(r.server).unwrap_or(IpAddr::from([127, 0, 0, 1])),
            None => IpAddr::from([127, 0, 0, 1]),
        };
        SocketAddr::new(ip, 0)
    }

    fn start_publish(&mut self, stream: &str, now: Instant) {
        let p = Pub {
            link: Link::default(),
            pipeline: None,
            pipeline_epoch: 0,
            rtp: Arc::new(Mutex::new(RtpSlot::default())),
            failures: 0,
            failed_encoders: Vec::new(),
            rebuild_at: None,
            prev: [0; 3],
            last_encoded: 0,
            encoded_at: now,
            first_reported: false,
        };
        self.pubs.insert(stream.to_string(), p);
        self.build_pipeline(stream, now);
        self.relink(MediaRole::Publish, stream, now);
    }

    fn build_pipeline(&mut self, stream: &str, now: Instant) {
        let configured = Encoder::from_element(&self.cfg.config.encoder);
        let Some(p) = self.pubs.get_mut(stream) else { return };
        p.rebuild_at = None;
        p.pipeline = None;
        let Some(choice) = encoder::choose(configured, &p.failed_encoders, has_element) else {
            let msg = MediaError::NoEncoder.to_string();
            self.events.push(EngineEvent::PublisherMediaError {
                stream_id: stream.to_string(),
                error_code: ErrorCode::MEDIA_PIPELINE_FAILED,
                message: msg,
            });
            return;
        };
        tracing::info!(stream, encoder = %choice.encoder, reason = %choice.reason, "encoder chosen");
        self.events.push(EngineEvent::PublisherEncoder {
            stream_id: stream.to_string(),
            encoder: choice.encoder.to_string(),
            hardware: choice.encoder.is_hardware(),
            reason: choice.reason.clone(),
        });
        self.epoch += 1;
        let epoch = self.epoch;
        let slot = p.rtp.clone();
        let out: RtpOut = Arc::new(move |kind, bytes| {
            if let Ok(mut g) = slot.lock() {
                g.send(epoch, kind, bytes);
            }
        });
        let errors = self.pipeline_errors(MediaRole::Publish, stream, epoch);
        let Some(p) = self.pubs.get_mut(stream) else { return };
        match Publisher::start(&self.cfg.config, choice, self.muted, out, errors) {
            Ok(pl) => {
                p.pipeline = Some(pl);
                p.pipeline_epoch = epoch;
                p.encoded_at = now;
                p.prev = [0; 3];
                p.last_encoded = 0;
            }
            Err(e) => self.pipeline_failed(stream, ErrorCode::MEDIA_PIPELINE_FAILED, e.to_string(), now),
        }
    }

    fn pipeline_failed(&mut self, stream: &str, code: ErrorCode, message: String, now: Instant) {
        let Some(p) = self.pubs.get_mut(stream) else { return };
        let encoder = p.pipeline.take().map(|pl| pl.encoder.encoder);
        p.failures += 1;
        if let Some(e) = encoder
            && e.is_hardware()
            && p.failures >= HW_FAILURES_BEFORE_FALLBACK
        {
            tracing::warn!(stream, encoder = %e, "hardware encoder keeps failing; trying the next encoder");
            p.failed_encoders.push(e);
            p.failures = 0;
        }
        let delay = backoff(p.failures);
        p.rebuild_at = Some(now + delay);
        tracing::warn!(stream, error_code = code.0, %message, delay_ms = delay.as_millis() as u64, "publish pipeline failed");
        self.events.push(EngineEvent::PublisherMediaError { stream_id: stream.to_string(), error_code: code, message });
    }

    /// A pipeline's failure comes straight to the note channel, tagged.
    fn pipeline_errors(&self, role: MediaRole, stream: &str, epoch: u64) -> crate::media::ErrorSink {
        let notes = self.tx.clone();
        let stream = stream.to_string();
        Box::new(move |e| {
            if notes.try_send(Note::Pipeline(role, stream, epoch, e)).is_err() {
                tracing::warn!("media notes full; a pipeline failure was dropped");
            }
        })
    }

    fn start_play(&mut self, stream: &str, now: Instant) {
        self.plays.insert(stream.to_string(), Play::new(Link::default(), now));
        self.relink(MediaRole::Play, stream, now);
    }

    /// Replaces a stream's media connection (and, for a player, its pipeline) with a new one.
    fn relink(&mut self, role: MediaRole, stream: &str, now: Instant) {
        self.epoch += 1;
        let epoch = self.epoch;
        let bind = self.bind_addr();
        let silence = self.silence();
        // The connection's events come straight to the manager's note channel, tagged.
        let notes = self.tx.clone();
        let s = stream.to_string();
        let tx = move |ev| {
            if notes.try_send(Note::Link(role, s.clone(), epoch, ev)).is_err() {
                tracing::debug!("media notes full; a connection event was dropped");
            }
        };
        let result = match role {
            MediaRole::Publish => {
                let Some(p) = self.pubs.get_mut(stream) else { return };
                p.link.conn = None;
                ClientConn::start(MediaRole::Publish, bind, silence, None, tx).inspect(|c| {
                    if let Ok(mut g) = p.rtp.lock() {
                        g.tx = Some(c.rtp_sender());
                    }
                })
            }
            MediaRole::Play => {
                let errors = self.pipeline_errors(MediaRole::Play, stream, epoch);
                let Some(p) = self.plays.get_mut(stream) else { return };
                p.link.conn = None;
                p.player = None;
                match Player::start(&self.cfg.config, stream, errors).and_then(|pl| pl.sink().map(|s| (pl, s))) {
                    Ok((player, sink)) => {
                        p.player = Some(player);
                        p.prev = [0; 3];
                        // A new connection and pipeline: first-frame events report when media is back.
                        p.received_first = false;
                        p.rendered_first = false;
                        p.video.stalled_since = None;
                        p.video.seen = None;
                        ClientConn::start(MediaRole::Play, bind, silence, Some(Box::new(sink)), tx)
                    }
                    Err(e) => {
                        tracing::error!(stream, error = %e, "cannot build the play pipeline");
                        p.link.failures += 1;
                        p.link.retry_at = Some(now + backoff(p.link.failures));
                        return;
                    }
                }
            }
        };
        let Some(l) = self.link_mut(role, stream) else { return };
        l.epoch = epoch;
        l.connected = false;
        l.offer = None;
        l.offer_sent = None;
        l.retry_at = None;
        l.prev = LinkStats::default();
        l.stats = LinkStats::default();
        l.since = Some(now);
        match result {
            Ok(c) => l.conn = Some(c),
            Err(e) => {
                tracing::error!(stream, ?role, error = %e, "cannot open a media connection");
                l.failures += 1;
                l.retry_at = Some(now + backoff(l.failures));
            }
        }
    }

    fn watch_publishers(&mut self, now: Instant) {
        let stall = Duration::from_secs(self.cfg.config.stall_secs.max(1));
        let mut stalled = Vec::new();
        for (stream, p) in &mut self.pubs {
            let Some(pl) = &p.pipeline else { continue };
            let c = pl.counters.snapshot();
            if !p.first_reported && c[0] > 0 {
                p.first_reported = true;
                self.events.push(EngineEvent::MediaEvent {
                    stream_id: stream.clone(),
                    event: MediaEventKind::CapturedFirstFrame,
                });
            }
            if c[1] != p.last_encoded {
                p.encoded_at = now;
                p.last_encoded = c[1];
            } else if now.duration_since(p.encoded_at) > stall {
                stalled.push(stream.clone());
            }
        }
        for s in stalled {
            let msg = format!("no encoded frame for {} s", stall.as_secs());
            self.pipeline_failed(&s, ErrorCode::MEDIA_ENCODER_STALLED, msg, now);
        }
    }

    fn watch_players(&mut self, now: Instant) {
        for (stream, p) in &mut self.plays {
            let Some(pl) = &p.player else { continue };
            let c = pl.counters.snapshot();
            let mut ev = |e| self.events.push(EngineEvent::MediaEvent { stream_id: stream.clone(), event: e });
            if !p.rendered_first && c[1] > 0 {
                p.rendered_first = true;
                ev(MediaEventKind::RenderedFirstFrame);
            }
            if p.rendered_first {
                let last = pl.counters.last_video().unwrap_or(now);
                for e in p.video.check(now, last) {
                    ev(e);
                }
            }
            if c[2] != p.prev[2] {
                p.audio_at = now;
                if p.audio_stalled {
                    p.audio_stalled = false;
                    ev(MediaEventKind::AudioResume);
                }
            } else if c[2] > 0 && !p.audio_stalled && now.duration_since(p.audio_at) >= STALL {
                p.audio_stalled = true;
                ev(MediaEventKind::AudioStall);
            }
            p.prev[2] = c[2];
        }
    }

    fn quality(&mut self, secs: f64) {
        let secs = secs.max(0.001);
        for (stream, p) in &mut self.pubs {
            let Some(pl) = &p.pipeline else { continue };
            let c = pl.counters.snapshot();
            let link = p.link.rates(secs);
            let quality = PublishQuality {
                capture_fps: per_sec(c[0], p.prev[0], secs),
                encode_fps: per_sec(c[1], p.prev[1], secs),
                send_fps: link.fps,
                video_kbps: link.video_kbps,
                audio_kbps: link.audio_kbps,
                rtt_ms: link.rtt_ms,
                packet_loss: link.loss,
                level: link.level,
                hardware_encoder: pl.encoder.encoder.is_hardware(),
                encoder: pl.encoder.encoder.to_string(),
            };
            p.prev = c;
            self.events.push(EngineEvent::PublisherQualityUpdate { stream_id: stream.clone(), quality });
        }
        for (stream, p) in &mut self.plays {
            let Some(pl) = &p.player else { continue };
            let c = pl.counters.snapshot();
            let link = p.link.rates(secs);
            let quality = PlayQuality {
                receive_fps: link.fps,
                decode_fps: per_sec(c[0], p.prev[0], secs),
                render_fps: per_sec(c[1], p.prev[1], secs),
                video_kbps: link.video_kbps,
                audio_kbps: link.audio_kbps,
                rtt_ms: link.rtt_ms,
                packet_loss: link.loss,
                jitter_buffer_ms: f64::from(pipeline::VIDEO_JITTER_MS),
                stall_count: p.video.count,
                stall_ms: p.video.total_ms,
                frames_decoded: c[0],
                audio_decoded: c[2],
                level: link.level,
            };
            // prev[2] is the audio stall watch's, kept by `watch_players`.
            p.prev = [c[0], c[1], p.prev[2]];
            self.events.push(EngineEvent::PlayerQualityUpdate { stream_id: stream.clone(), quality });
        }
    }
}

/// A media connection's figures over one quality interval.
struct LinkRates {
    fps: f64,
    video_kbps: f64,
    audio_kbps: f64,
    rtt_ms: f64,
    loss: f64,
    level: QualityLevel,
}

impl Link {
    /// The session reports Publishing / Playing (`ok`) or not. Returns whether the
    /// application may be told so: not while the link is down.
    fn session_says(&mut self, ok: bool) -> bool {
        self.session_ok = ok;
        self.shown_ok = ok && self.down_since.is_none();
        !ok || self.shown_ok
    }

    /// The figures since the last call, which starts the next interval.
    fn rates(&mut self, secs: f64) -> LinkRates {
        let (s, q) = (self.stats, std::mem::replace(&mut self.prev, self.stats));
        let sent = (s.packets[0] + s.packets[1]).saturating_sub(q.packets[0] + q.packets[1]);
        let loss = loss(s.lost.saturating_sub(q.lost), sent);
        let rtt_ms = s.rtt_ms.unwrap_or(0.0);
        let kbps = |now: u64, before: u64| per_sec(now, before, secs) * 8.0 / 1000.0;
        LinkRates {
            fps: per_sec(s.frames, q.frames, secs),
            video_kbps: kbps(s.bytes[0], q.bytes[0]),
            audio_kbps: kbps(s.bytes[1], q.bytes[1]),
            rtt_ms,
            loss,
            level: level(rtt_ms, loss, self.connected),
        }
    }
}

/// Publishing / Playing (`ok`), or PublishRequesting / PlayRequesting with the media
/// recovery code: what the application is told about a stream's media.
fn state_event(role: MediaRole, stream_id: String, ok: bool) -> EngineEvent {
    match (role, ok) {
        (MediaRole::Publish, true) => EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::Publishing,
            error_code: ErrorCode::OK,
        },
        (MediaRole::Publish, false) => EngineEvent::PublisherStateUpdate {
            stream_id,
            state: PublisherState::PublishRequesting,
            error_code: ErrorCode::PUBLISH_MEDIA_RECOVERING,
        },
        (MediaRole::Play, true) => {
            EngineEvent::PlayerStateUpdate { stream_id, state: PlayerState::Playing, error_code: ErrorCode::OK }
        }
        (MediaRole::Play, false) => EngineEvent::PlayerStateUpdate {
            stream_id,
            state: PlayerState::PlayRequesting,
            error_code: ErrorCode::PLAY_MEDIA_RECOVERING,
        },
    }
}

/// A counter's rate over `secs`.
fn per_sec(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn loss(lost: u64, sent: u64) -> f64 {
    if lost + sent == 0 { 0.0 } else { lost as f64 / (lost + sent) as f64 }
}

/// The signalling levels (`quality::level`), and Die while the media connection is down.
fn level(rtt_ms: f64, loss: f64, connected: bool) -> QualityLevel {
    if connected {
        super::quality::level(Duration::from_secs_f64(rtt_ms.max(0.0) / 1000.0), loss)
    } else {
        QualityLevel::Die
    }
}

/// After a link or pipeline failure: 0.5 s, 1 s, 2 s ... at most 10 s.
const RELINK: ReconnectPolicy = ReconnectPolicy::doubling(Duration::from_millis(500), Duration::from_secs(10));

fn backoff(failures: u32) -> Duration {
    RELINK.ceiling(failures.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_and_levels() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(30), Duration::from_secs(10));
        assert_eq!(level(20.0, 0.0, true), QualityLevel::Excellent);
        assert_eq!(level(150.0, 0.02, true), QualityLevel::Good);
        assert_eq!(level(20.0, 0.0, false), QualityLevel::Die);
        assert_eq!(loss(1, 99), 0.01);
    }

    /// Media binds where the signalling connection runs (no lookup of the server's name on
    /// the engine's task), the configured IP first.
    #[test]
    fn media_binds_on_the_signalling_route() {
        let mut m = MediaManager::new(EngineMedia { config: MediaConfig::default(), bind: None });
        assert_eq!(m.bind_addr().ip(), IpAddr::from([127, 0, 0, 1]), "before any connection");
        let server: SocketAddr = "127.0.0.1:7880".parse().unwrap();
        m.set_route(crate::dial::Route { local: "192.0.2.10:40000".parse().unwrap(), server });
        assert_eq!(m.bind_addr(), "192.0.2.10:0".parse::<SocketAddr>().unwrap());
        m.set_route(crate::dial::Route { local: "0.0.0.0:40000".parse().unwrap(), server });
        assert_eq!(m.bind_addr().ip(), IpAddr::from([127, 0, 0, 1]), "unspecified: the route to the server");
        let mut fixed =
            MediaManager::new(EngineMedia { config: MediaConfig::default(), bind: Some([10, 0, 0, 7].into()) });
        fixed.set_route(crate::dial::Route { local: "192.0.2.10:40000".parse().unwrap(), server });
        assert_eq!(fixed.bind_addr(), "10.0.0.7:0".parse::<SocketAddr>().unwrap());
    }

    #[test]
    fn answers_apply_only_to_the_offer_they_answer() {
        let now = Instant::now();
        let cfg = EngineMedia { config: MediaConfig::default(), bind: None };
        let mut m = MediaManager::new(cfg);
        let link = Link { epoch: 5, offer: Some("v=0".into()), offer_sent: Some(now), ..Default::default() };
        m.plays.insert("s".into(), Play::new(link, now));
        // The answer to a replaced offer (epoch 4) is not this connection's.
        m.answer("s", MediaRole::Play, 4, Ok("v=0 stale".into()), now);
        assert!(m.plays["s"].link.offer.is_some() && m.plays["s"].link.offer_sent.is_some());
        m.answer("s", MediaRole::Play, 4, Err(ErrorCode::NETWORK_INTERRUPTED), now);
        assert!(m.plays["s"].link.offer_sent.is_some());
        // Its own offer lost with the room connection: kept, to be sent again after the resume.
        m.answer("s", MediaRole::Play, 5, Err(ErrorCode::NETWORK_INTERRUPTED), now);
        assert!(m.plays["s"].link.offer.is_some() && m.plays["s"].link.offer_sent.is_none());
        m.joined(false, now);
        assert_eq!(m.take_offers(), vec![("s".to_string(), MediaRole::Play, "v=0".to_string(), 5)]);
        m.answer("s", MediaRole::Play, 5, Ok("v=0 answer".into()), now);
        assert!(m.plays["s"].link.offer.is_none());
    }
}
