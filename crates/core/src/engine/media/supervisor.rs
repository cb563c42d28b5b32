//! The media supervisor: the sans-IO core of the engine's media (see the module docs of
//! `engine::media` for what it keeps alive). Time and input in — the session's stream
//! states, joins and answers, the runner's notes, the pipelines' meters — and out come
//! commands for the runner, offers for signalling, events for the application and the next
//! deadline. It holds no connection, pipeline or clock.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::adapt::Adapter;
use super::controls::{Control, Controls, sound_level};
use super::link::{Link, backoff, per_sec, state_event};
use super::stall::{STALL, StallWatch};
use super::{Bind, Command, MediaOutput, Meters, Note, PlayCounts, PublishCounts};
use crate::engine::event::PlayerState;
use crate::engine::event::{EngineEvent, MediaEventKind, PlayQuality, PublishQuality, PublisherState};
use crate::engine::session::StreamChange;
use crate::media::encoder::{self, Encoder};
use crate::media::{Layout, MediaConfig, MediaError, rules};
use crate::proto::{ErrorCode, MediaRole, QualityLevel, TrackState};
use crate::rtc::client::ClientEvent;

/// A played stream whose link is up but whose video does not render asks for a keyframe
/// this often.
const KEYFRAME_RETRY: Duration = Duration::from_secs(1);
/// How often the pipelines' meters are read (first frames, stalls).
const TICK: Duration = Duration::from_millis(100);
const QUALITY_EVERY: Duration = Duration::from_secs(3);
const HW_FAILURES_BEFORE_FALLBACK: u32 = 3;
/// An offer sent over a working room connection and not answered by then is lost.
const OFFER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a resume, a link still down gets this long to come back by itself (one consent
/// check) before it is renegotiated.
const RESUME_GRACE: Duration = Duration::from_millis(500);

/// Whether a GStreamer element exists (the encoder chain asks); a fake in tests.
pub type Present = Box<dyn Fn(&str) -> bool + Send>;

struct Pub {
    link: Link,
    /// The encoder of the pipeline last started, and its epoch; `None`: none running.
    pipeline: Option<(Encoder, u64)>,
    failures: u32,
    failed_encoders: Vec<Encoder>,
    rebuild_at: Option<Instant>,
    prev: PublishCounts,
    last_encoded: u64,
    encoded_at: Instant,
    first_reported: bool,
    /// The video's rate, following the link (with `adaptive`).
    adapt: Adapter,
    /// What Opus's in-band FEC is sized for, percent (the pipeline starts at the floor).
    audio_fec_percent: u32,
    /// The link's level at the last quality report.
    level: QualityLevel,
}

struct Play {
    link: Link,
    prev: PlayCounts,
    received_first: bool,
    rendered_first: bool,
    video: StallWatch,
    audio_stalled: bool,
    audio_at: Instant,
    /// Since when the link is up but no video renders (none yet, or stalled).
    dark_since: Option<Instant>,
    /// Since when video is expected (switched on here and at the publisher): a stall is
    /// counted from then, not from the last frame before it was switched off.
    video_from: Option<Instant>,
    /// The link's level at the last quality report.
    level: QualityLevel,
    /// The last keyframe asked for because of that.
    key_asked: Option<Instant>,
}

/// See the module docs.
pub struct MediaSupervisor {
    cfg: MediaConfig,
    /// The configured local IP for media sockets.
    bind: Option<IpAddr>,
    present: Present,
    /// The signalling connection's route: media binds to the same local address.
    route: Option<crate::net::Route>,
    pubs: HashMap<String, Pub>,
    plays: HashMap<String, Play>,
    commands: VecDeque<Command>,
    out: VecDeque<MediaOutput>,
    epoch: u64,
    next_tick: Option<Instant>,
    /// The last time the timers ran: a deadline already passed then was held back (it
    /// waits for a working room connection) and is looked at again on the next tick.
    last_timeout: Option<Instant>,
    next_quality: Option<Instant>,
    /// The grid's channels last asked for.
    grid: Vec<String>,
    /// The TURN servers the server handed out at the last login (the configured ones are
    /// in `cfg`).
    server_ice: Vec<crate::proto::ice_servers::IceServer>,
    /// The application's controls.
    ctl: Controls,
    next_sound: Option<Instant>,
}

impl MediaSupervisor {
    /// A supervisor with no stream. `present` says which GStreamer elements exist.
    pub fn new(cfg: MediaConfig, bind: Option<IpAddr>, present: Present) -> Self {
        MediaSupervisor {
            bind,
            present,
            route: None,
            pubs: HashMap::new(),
            plays: HashMap::new(),
            commands: VecDeque::new(),
            out: VecDeque::new(),
            epoch: 0,
            next_tick: None,
            last_timeout: None,
            next_quality: None,
            grid: Vec::new(),
            server_ice: Vec::new(),
            ctl: Controls::new(&cfg),
            next_sound: None,
            cfg,
        }
    }

    /// What published streams carry now, as the room must be told: (video, audio).
    pub fn local_tracks(&self) -> (TrackState, TrackState) {
        self.ctl.local_tracks()
    }

    /// An application's media control.
    pub fn control(&mut self, now: Instant, c: Control) {
        let camera_was = self.ctl.camera;
        let changed = self.ctl.apply(c.clone());
        match c {
            Control::Camera(on) => {
                self.run(Command::Camera(on));
                if on != camera_was {
                    // The stall clock starts again: no frame is encoded while it is off.
                    for p in self.pubs.values_mut() {
                        p.encoded_at = now;
                    }
                }
            }
            Control::Microphone(on) => self.run(Command::Mute(!on)),
            Control::SoundLevel(_) => self.next_sound = self.ctl.sound_every.map(|d| now + d),
            Control::PlayVideo { ref stream, on: true } => self.video_back(now, stream),
            Control::Preview(_) => self.update_grid(),
            _ => {}
        }
        for stream in changed.unwrap_or_default() {
            if self.plays.contains_key(&stream) {
                let settings = self.ctl.settings(&stream);
                self.run(Command::PlayControls { stream, settings });
            }
        }
    }

    /// The room says what a stream sends (published, or switched on or off).
    pub fn handle_remote_tracks(&mut self, now: Instant, stream: &str, video: TrackState, audio: TrackState) {
        let was = self.ctl.remote_video(stream);
        self.ctl.set_remote(stream, video, audio);
        if video == TrackState::On && was != TrackState::On {
            self.video_back(now, stream);
        }
    }

    /// A played stream's video is expected again: stalls count from now, and a keyframe is
    /// asked for at once (the decoder has nothing to start from).
    fn video_back(&mut self, now: Instant, stream: &str) {
        if !self.ctl.expects_video(stream) {
            return;
        }
        if let Some(p) = self.plays.get_mut(stream) {
            p.video_from = Some(now);
            p.video.stalled_since = None;
            p.video.seen = None;
            if p.link.connected {
                self.run(Command::RequestKeyframe { stream: stream.to_string() });
            }
        }
    }

    /// The media links' levels at the last quality report, sending side and receiving side
    /// (`None`: no such link): the worst publish link, the worst play link.
    pub fn link_quality(&self) -> (Option<QualityLevel>, Option<QualityLevel>) {
        use crate::engine::quality::worst;
        (worst(self.pubs.values().map(|p| p.level)), worst(self.plays.values().map(|p| p.level)))
    }

    /// The TURN servers (with fresh credentials) from the server's login reply: the next
    /// connections use them with the configured ones.
    pub fn set_server_ice(&mut self, servers: Vec<crate::proto::ice_servers::IceServer>) {
        if !servers.is_empty() || !self.server_ice.is_empty() {
            tracing::debug!(count = servers.len(), "TURN servers from the server");
        }
        self.server_ice = servers;
    }

    /// The next command for the runner.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// The next output for the driver: an offer, an event, or that the network works again.
    pub fn poll_output(&mut self) -> Option<MediaOutput> {
        self.out.pop_front()
    }

    /// When [`MediaSupervisor::handle_timeout`] is due; `None`: no stream, nothing to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let links = self.pubs.values().map(|p| &p.link).chain(self.plays.values().map(|p| &p.link));
        let link_times = links.flat_map(|l| [l.retry_at, l.offer_sent.map(|t| t + OFFER_TIMEOUT)]);
        let held = |t: &Instant| self.last_timeout.is_some_and(|last| *t <= last);
        let link_times = link_times.flatten().filter(|t| !held(t));
        let rebuilds = self.pubs.values().filter_map(|p| p.rebuild_at);
        let sound = self.next_sound.filter(|_| !self.pubs.is_empty() || !self.plays.is_empty());
        [self.next_tick, self.next_quality, sound].into_iter().flatten().chain(link_times).chain(rebuilds).min()
    }

    /// Reacts to a stream's signalling state and tells the application (as an output) what
    /// it should see: the session's Publishing / Playing (the server accepted) is told as
    /// PublishRequesting / PlayRequesting while the stream's media is down; anything else as
    /// signalling says.
    pub fn handle_stream(&mut self, now: Instant, change: StreamChange) {
        // The stream's event goes ahead of what starting its media says (the encoder chosen),
        // as the application expects: first the state, then its details.
        let mark = self.out.len();
        let e = match change {
            StreamChange::Publisher { stream_id, state, error_code } => {
                match state {
                    PublisherState::Publishing if !self.pubs.contains_key(&stream_id) => {
                        self.start_publish(&stream_id, now)
                    }
                    PublisherState::NoPublish => self.remove(MediaRole::Publish, &stream_id),
                    _ => {}
                }
                let ok = state == PublisherState::Publishing;
                match self.pubs.get_mut(&stream_id).map(|p| p.link.session_says(ok)) {
                    Some(false) if ok => state_event(MediaRole::Publish, stream_id, false),
                    _ => EngineEvent::PublisherStateUpdate { stream_id, state, error_code },
                }
            }
            StreamChange::Player { stream_id, state, error_code } => {
                match state {
                    PlayerState::Playing if !self.plays.contains_key(&stream_id) => self.start_play(&stream_id, now),
                    PlayerState::NoPlay => self.remove(MediaRole::Play, &stream_id),
                    // The stream is gone (or not there yet): nothing to receive until it is back.
                    PlayerState::PlayRequesting if error_code == ErrorCode::STREAM_NOT_FOUND => {
                        self.remove(MediaRole::Play, &stream_id)
                    }
                    _ => {}
                }
                let ok = state == PlayerState::Playing;
                match self.plays.get_mut(&stream_id).map(|p| p.link.session_says(ok)) {
                    Some(false) if ok => state_event(MediaRole::Play, stream_id, false),
                    _ => EngineEvent::PlayerStateUpdate { stream_id, state, error_code },
                }
            }
        };
        self.out.insert(mark, MediaOutput::Event(e));
        self.update_grid();
        if self.pubs.is_empty() && self.plays.is_empty() {
            self.next_tick = None;
            self.next_quality = None;
        } else {
            self.next_tick.get_or_insert(now + TICK);
            self.next_quality.get_or_insert(now + QUALITY_EVERY);
        }
    }

    /// Makes the stream's publish pipeline fail as a hardware encoder would (tests: the
    /// recovery path). False when the stream has no publish pipeline running.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn inject_fault(&mut self, stream: &str) -> bool {
        let running = self.pubs.get(stream).is_some_and(|p| p.pipeline.is_some());
        if running {
            self.commands.push_back(Command::InjectFault { stream: stream.to_string() });
        }
        running
    }

    /// In the room again; `fresh` means the server has none of our media connections.
    pub fn handle_joined(&mut self, now: Instant, fresh: bool) {
        for (role, stream) in self.streams() {
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

    /// An offer could not be sent (signalling down): keep it for the next join.
    pub fn handle_unsent(&mut self, stream: &str, role: MediaRole, tag: u64) {
        if let Some(l) = self.link_mut(role, stream).filter(|l| l.epoch == tag) {
            l.offer_sent = None;
        }
    }

    /// The server's answer to an offer.
    pub fn handle_answer(
        &mut self,
        now: Instant,
        stream: &str,
        role: MediaRole,
        tag: u64,
        result: Result<String, ErrorCode>,
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
                if l.open {
                    self.run(Command::Answer { role, stream: stream.to_string(), sdp });
                }
            }
            Err(ErrorCode::NETWORK_INTERRUPTED) => {
                // Lost with the room connection: the same offer goes again after the resume.
                tracing::info!(stream, ?role, "media offer lost with the room connection; sending it again when back");
                l.offer_sent = None;
            }
            Err(code) => {
                tracing::warn!(stream, ?role, error_code = code.0, "media offer refused; retrying");
                l.offer = None;
                l.offer_sent = None;
                l.failed(now);
                self.close_link(role, stream);
                self.link_down(role, stream, now);
            }
        }
    }

    /// A note from a connection or a pipeline.
    pub fn handle_note(&mut self, now: Instant, note: Note) {
        match note {
            Note::Offer(role, stream, epoch, sdp) => {
                let Some(l) = self.link_mut(role, &stream).filter(|l| l.epoch == epoch) else { return };
                l.offer = Some(sdp);
                l.offer_sent = None;
                self.queue_offer(role, &stream, now);
            }
            Note::Link(role, stream, epoch, ev) => self.link_event(now, role, &stream, epoch, ev),
            Note::OpenFailed(role, stream, epoch, error) => {
                let Some(l) = self.link_mut(role, &stream).filter(|l| l.epoch == epoch) else { return };
                tracing::error!(stream, ?role, %error, "cannot open a media connection");
                l.open = false;
                l.failed(now);
            }
            Note::Rendered(stream, epoch) => {
                if let Some(p) = self.plays.get_mut(&stream).filter(|p| p.link.epoch == epoch && !p.rendered_first) {
                    p.rendered_first = true;
                    self.media_event(&stream, MediaEventKind::RenderedFirstFrame);
                }
            }
            Note::Pipeline(MediaRole::Publish, stream, epoch, err) => {
                if self.pubs.get(&stream).is_some_and(|p| p.pipeline.is_some_and(|(_, e)| e == epoch)) {
                    self.pipeline_failed(&stream, ErrorCode::MEDIA_PIPELINE_FAILED, err.to_string(), now);
                }
            }
            Note::Pipeline(MediaRole::Play, stream, epoch, err) => {
                if self.plays.get(&stream).is_some_and(|p| p.link.epoch == epoch) {
                    tracing::warn!(stream, error = %err, "play pipeline failed; rebuilding");
                    self.relink(MediaRole::Play, &stream, now);
                }
            }
        }
    }

    fn link_event(&mut self, now: Instant, role: MediaRole, stream: &str, epoch: u64, ev: ClientEvent) {
        let silence = self.silence();
        let Some(l) = self.link_mut(role, stream).filter(|l| l.epoch == epoch) else { return };
        match ev {
            ClientEvent::Connected => {
                l.failures = 0;
                l.retry_at = None;
                let was_down = l.down_since.take();
                l.connected = true;
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
                // A player whose path came back (the publisher's did not break) asks for a
                // keyframe: the SFU passes it on (at most every 500 ms), so video decodes
                // again now rather than at the next periodic keyframe.
                if role == MediaRole::Play && was_down.is_some() {
                    self.run(Command::RequestKeyframe { stream: stream.to_string() });
                }
                self.out.push_back(MediaOutput::NetworkBack);
                if tell {
                    self.tell_state(role, stream, true);
                }
                if role == MediaRole::Publish {
                    self.run(Command::ForceKeyframe { stream: stream.to_string() });
                }
            }
            ClientEvent::Disconnected => {
                tracing::warn!(stream, ?role, "media path cut (no answer to consent checks); waiting for it");
                l.retry_at.get_or_insert(now + silence);
                self.link_down(role, stream, now);
            }
            ClientEvent::Silent => {
                tracing::warn!(stream, ?role, "no media or reports from the server; renegotiating");
                l.failed(now);
                self.link_down(role, stream, now);
            }
            ClientEvent::Failed => {
                tracing::warn!(stream, ?role, "media connection failed; renegotiating");
                l.failed(now);
                self.close_link(role, stream);
                self.link_down(role, stream, now);
            }
            ClientEvent::KeyframeRequested => {
                if role == MediaRole::Publish {
                    self.run(Command::ForceKeyframe { stream: stream.to_string() });
                }
            }
            ClientEvent::Stats(s) => {
                let s = *s;
                if s.path != l.stats.path && s.packets != [0, 0] {
                    tracing::info!(stream, ?role, path = s.path.as_str(), "media path changed");
                }
                l.stats = s;
                if role == MediaRole::Publish && self.cfg.adaptive {
                    self.adapt(now, stream, s.estimate_kbps, s.cap_kbps);
                }
                if role == MediaRole::Publish {
                    self.size_audio_fec(stream, s.audio_loss);
                }
            }
            ClientEvent::FirstVideoFrame => {
                if let Some(p) = self.plays.get_mut(stream).filter(|p| !p.received_first) {
                    p.received_first = true;
                    self.media_event(stream, MediaEventKind::ReceivedFirstFrame);
                }
            }
        }
    }

    /// Timers: retries, offer timeouts, rebuilds, stalls, quality. `signalling_fresh`: the
    /// room connection demonstrably works (an offer sent now gets through). `meters`: the
    /// running pipelines' counters.
    pub fn handle_timeout(&mut self, now: Instant, signalling_fresh: bool, meters: &dyn Meters) {
        self.last_timeout = Some(now);
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
                && (!l.open || signalling_fresh);
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
            self.start_pipeline(&s, now);
        }
        if self.next_tick.is_some_and(|t| t <= now) {
            self.next_tick = Some(now + TICK);
            self.watch_publishers(now, meters);
            self.watch_players(now, meters);
        }
        if let Some(due) = self.next_quality.filter(|t| *t <= now) {
            let secs = (now - due + QUALITY_EVERY).as_secs_f64();
            self.next_quality = Some(now + QUALITY_EVERY);
            self.quality(secs, meters);
        }
        if let (Some(t), Some(every)) = (self.next_sound, self.ctl.sound_every)
            && t <= now
        {
            self.next_sound = Some(now + every);
            self.sound_levels(meters);
        }
    }

    /// Sound level reports: the captured level (the first published stream that has
    /// audio), and each played stream's.
    fn sound_levels(&mut self, meters: &dyn Meters) {
        if self.pubs.is_empty() && self.plays.is_empty() {
            return;
        }
        let mut pubs: Vec<&String> = self.pubs.keys().collect();
        pubs.sort();
        let captured = pubs.into_iter().find_map(|s| meters.sound_levels(MediaRole::Publish, s)?[0]);
        if let Some(db) = captured {
            self.out.push_back(MediaOutput::Event(EngineEvent::CapturedSoundLevelUpdate { level: sound_level(db) }));
        }
        let mut levels: Vec<crate::engine::event::StreamSoundLevel> = self
            .plays
            .keys()
            .filter_map(|s| {
                let [level, played] = meters.sound_levels(MediaRole::Play, s)?;
                Some(crate::engine::event::StreamSoundLevel {
                    stream_id: s.clone(),
                    level: sound_level(level?),
                    played: sound_level(played.unwrap_or(crate::media::SILENCE_DB)),
                })
            })
            .collect();
        if !levels.is_empty() {
            levels.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
            self.out.push_back(MediaOutput::Event(EngineEvent::RemoteSoundLevelUpdate { levels }));
        }
    }

    /// The route of the latest signalling connection (every connection tells it, so a
    /// changed network is followed).
    pub fn set_route(&mut self, route: crate::net::Route) {
        self.route = Some(route);
    }

    /// Where media sockets bind: the configured IP, else the local address the signalling
    /// connection to the server uses (no name lookup: the connection has resolved it), else
    /// the address that routes to the server's (the runner asks the kernel); never loopback
    /// by default.
    pub(super) fn bind(&self) -> Bind {
        if let Some(ip) = self.bind {
            return Bind::Ip(ip);
        }
        match self.route {
            Some(r) if !r.local.ip().is_unspecified() => Bind::Ip(r.local.ip()),
            Some(r) => Bind::Towards(r.server),
            None => Bind::Unknown,
        }
    }

    fn streams(&self) -> Vec<(MediaRole, String)> {
        let pubs = self.pubs.keys().map(|s| (MediaRole::Publish, s.clone()));
        pubs.chain(self.plays.keys().map(|s| (MediaRole::Play, s.clone()))).collect()
    }

    fn run(&mut self, c: Command) {
        self.commands.push_back(c);
    }

    fn media_event(&mut self, stream: &str, event: MediaEventKind) {
        self.out.push_back(MediaOutput::Event(EngineEvent::MediaEvent { stream_id: stream.to_string(), event }));
    }

    /// In grid layout, shows the local preview and every played stream; in the single
    /// layout on a real display, the preview while no played stream has the screen. Asks
    /// for a new grid when that set changes.
    fn update_grid(&mut self) {
        let preview = self.ctl.preview && !self.pubs.is_empty() && self.ctl.local_tracks().0 != TrackState::Absent;
        let mut want = Vec::new();
        match self.cfg.layout {
            Layout::Grid => {
                if preview {
                    want.push(rules::PREVIEW_CHANNEL.to_string());
                }
                let mut plays: Vec<&String> = self.plays.keys().collect();
                plays.sort();
                want.extend(plays.into_iter().map(|s| rules::play_channel(s)));
            }
            Layout::Single if self.ctl.one_screen() && preview && self.ctl.on_screen().is_none() => {
                want.push(rules::PREVIEW_CHANNEL.to_string());
            }
            Layout::Single => {}
        }
        if want != self.grid {
            self.grid = want.clone();
            self.run(Command::Grid(want));
        }
    }

    /// The silence limit of media links.
    fn silence(&self) -> Duration {
        Duration::from_millis(self.cfg.silence_ms.max(500))
    }

    /// Queues the link's offer for signalling (the driver calls
    /// [`MediaSupervisor::handle_unsent`] if the room connection is down).
    fn queue_offer(&mut self, role: MediaRole, stream: &str, now: Instant) {
        let Some(l) = self.link_mut(role, stream) else { return };
        let Some(sdp) = l.offer.clone() else { return };
        l.offer_sent = Some(now);
        let tag = l.epoch;
        self.out.push_back(MediaOutput::Offer { stream: stream.to_string(), role, sdp, tag });
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

    fn close_link(&mut self, role: MediaRole, stream: &str) {
        if let Some(l) = self.link_mut(role, stream) {
            l.open = false;
            self.run(Command::CloseLink { role, stream: stream.to_string() });
        }
    }

    fn tell_state(&mut self, role: MediaRole, stream: &str, ok: bool) {
        self.out.push_back(MediaOutput::Event(state_event(role, stream.to_string(), ok)));
    }

    fn link_mut(&mut self, role: MediaRole, stream: &str) -> Option<&mut Link> {
        match role {
            MediaRole::Publish => self.pubs.get_mut(stream).map(|p| &mut p.link),
            MediaRole::Play => self.plays.get_mut(stream).map(|p| &mut p.link),
        }
    }

    fn remove(&mut self, role: MediaRole, stream: &str) {
        let had = match role {
            MediaRole::Publish => self.pubs.remove(stream).is_some(),
            MediaRole::Play => self.plays.remove(stream).is_some(),
        };
        if had {
            self.run(Command::Remove { role, stream: stream.to_string() });
        }
        if role == MediaRole::Play
            && let Some(next) = self.ctl.stopped(stream)
            && self.plays.contains_key(&next)
        {
            // The screen is free: the next stream's player is rebuilt with a decoder.
            tracing::info!(stream = %next, "the screen passes to the next played stream");
            let now = self.last_timeout.unwrap_or_else(Instant::now);
            self.relink(MediaRole::Play, &next, now);
        }
    }

    fn start_publish(&mut self, stream: &str, now: Instant) {
        let p = Pub {
            link: Link::default(),
            pipeline: None,
            failures: 0,
            failed_encoders: Vec::new(),
            rebuild_at: None,
            prev: Default::default(),
            last_encoded: 0,
            encoded_at: now,
            first_reported: false,
            adapt: Adapter::new(&self.cfg),
            audio_fec_percent: rules::opus_loss_percent(self.cfg.repair, 0.0),
            level: QualityLevel::Unknown,
        };
        self.pubs.insert(stream.to_string(), p);
        self.start_pipeline(stream, now);
        self.relink(MediaRole::Publish, stream, now);
    }

    fn start_play(&mut self, stream: &str, now: Instant) {
        let play = Play {
            link: Link::default(),
            prev: Default::default(),
            received_first: false,
            rendered_first: false,
            video: StallWatch::default(),
            audio_stalled: false,
            dark_since: None,
            key_asked: None,
            audio_at: now,
            video_from: None,
            level: QualityLevel::Unknown,
        };
        self.ctl.playing(stream);
        self.plays.insert(stream.to_string(), play);
        self.relink(MediaRole::Play, stream, now);
    }

    /// Replaces a stream's media connection (and, for a player, its pipeline) with a new one.
    fn relink(&mut self, role: MediaRole, stream: &str, now: Instant) {
        self.epoch += 1;
        let epoch = self.epoch;
        let (bind, silence) = (self.bind(), self.silence());
        match role {
            MediaRole::Publish => {
                let Some(p) = self.pubs.get_mut(stream) else { return };
                p.link.reopen(epoch);
            }
            MediaRole::Play => {
                let Some(p) = self.plays.get_mut(stream) else { return };
                p.link.reopen(epoch);
                // A new connection and pipeline: first-frame events report when media is back.
                p.prev = Default::default();
                p.received_first = false;
                p.rendered_first = false;
                p.video.stalled_since = None;
                p.dark_since = None;
                p.video.seen = None;
                p.audio_at = now;
            }
        }
        let ice = self.cfg.ice_servers.iter().chain(&self.server_ice).cloned().collect();
        // Every publish link estimates its path (shown even when adaptation is off).
        let audio = super::adapt::AUDIO_KBPS as u32;
        // The ceiling leaves room for the encoder's headroom: at the ceiling the encoder
        // gets its whole `bitrate_kbps`.
        let max_kbps = ((f64::from(self.cfg.bitrate_kbps + audio)) / super::adapt::HEADROOM).ceil() as u32;
        let min_kbps = self.cfg.min_bitrate_kbps + audio;
        let last = self.pubs.get(stream).and_then(|p| p.adapt.estimate_kbps);
        let send_rate = (role == MediaRole::Publish).then(|| crate::rtc::client::SendRate {
            min_kbps,
            max_kbps,
            start_kbps: last.map_or(max_kbps, |k| (k as u32).clamp(min_kbps, max_kbps)),
        });
        let (decode_video, settings) = (self.ctl.decodes_video(stream), self.ctl.settings(stream));
        self.run(Command::OpenLink {
            role,
            stream: stream.to_string(),
            epoch,
            bind,
            silence,
            ice,
            send_rate,
            decode_video,
            settings,
        });
    }

    fn start_pipeline(&mut self, stream: &str, now: Instant) {
        let configured = Encoder::from_element(&self.cfg.encoder);
        let Some(p) = self.pubs.get_mut(stream) else { return };
        p.rebuild_at = None;
        p.pipeline = None;
        let Some(choice) = encoder::choose(configured, &p.failed_encoders, &self.present) else {
            let message = MediaError::NoEncoder.to_string();
            let stream_id = stream.to_string();
            let error_code = ErrorCode::MEDIA_PIPELINE_FAILED;
            self.out.push_back(MediaOutput::Event(EngineEvent::PublisherMediaError { stream_id, error_code, message }));
            return;
        };
        tracing::info!(stream, encoder = %choice.encoder, reason = %choice.reason, "encoder chosen");
        self.epoch += 1;
        p.pipeline = Some((choice.encoder, self.epoch));
        p.encoded_at = now;
        p.prev = Default::default();
        p.last_encoded = 0;
        self.out.push_back(MediaOutput::Event(EngineEvent::PublisherEncoder {
            stream_id: stream.to_string(),
            encoder: choice.encoder.to_string(),
            hardware: choice.encoder.is_hardware(),
            reason: choice.reason.clone(),
        }));
        let rate = p.adapt.rate();
        self.run(Command::StartPipeline { stream: stream.to_string(), epoch: self.epoch, choice, rate });
    }

    /// The publish pipeline failed (or stalled): rebuilt after the back-off; a hardware
    /// encoder that failed three times in a row gives way to the next one of the chain.
    fn pipeline_failed(&mut self, stream: &str, code: ErrorCode, message: String, now: Instant) {
        let Some(p) = self.pubs.get_mut(stream) else { return };
        let encoder = p.pipeline.take().map(|(e, _)| e);
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
        self.run(Command::StopPipeline { stream: stream.to_string() });
        let stream_id = stream.to_string();
        self.out.push_back(MediaOutput::Event(EngineEvent::PublisherMediaError {
            stream_id,
            error_code: code,
            message,
        }));
    }

    /// The link's estimate moved: the encoder follows, and a step of the picture is told.
    fn adapt(&mut self, now: Instant, stream: &str, own: Option<f64>, cap: Option<f64>) {
        let Some(p) = self.pubs.get_mut(stream) else { return };
        let Some(change) = p.adapt.update(now, own, cap) else { return };
        let rate = change.rate;
        if let Some(reason) = change.step {
            tracing::info!(
                callbox_event = "video_adapted",
                stream,
                width = rate.width,
                height = rate.height,
                fps = rate.fps,
                bitrate_kbps = rate.kbps,
                "video now {rate}: {reason}"
            );
            self.out.push_back(MediaOutput::Event(EngineEvent::PublisherVideoAdapted {
                stream_id: stream.to_string(),
                rate,
                reason,
            }));
        } else {
            tracing::debug!(stream, bitrate_kbps = rate.kbps, own_kbps = ?own, cap_kbps = ?cap, "encoder bitrate follows the estimate");
        }
        if p.pipeline.is_some() {
            self.run(Command::SetRate { stream: stream.to_string(), rate });
        }
    }

    /// The server reported the audio's loss: Opus's in-band FEC is sized for it.
    fn size_audio_fec(&mut self, stream: &str, reported: Option<f64>) {
        let Some(p) = self.pubs.get_mut(stream) else { return };
        let percent = rules::opus_loss_percent(self.cfg.repair, reported.unwrap_or(0.0));
        if percent == p.audio_fec_percent {
            return;
        }
        tracing::debug!(stream, percent, "audio in-band FEC sized for the reported loss");
        p.audio_fec_percent = percent;
        self.run(Command::SetAudioLoss { stream: stream.to_string(), percent });
    }

    fn watch_publishers(&mut self, now: Instant, meters: &dyn Meters) {
        let stall = Duration::from_secs(self.cfg.stall_secs.max(1));
        let mut stalled = Vec::new();
        let mut first = Vec::new();
        // Without a camera, or with it switched off, nothing is encoded and nothing stalls.
        let video = self.ctl.local_tracks().0 == TrackState::On;
        for (stream, p) in &mut self.pubs {
            let Some(c) = p.pipeline.and(meters.publisher(stream)).filter(|_| video) else {
                // Not running yet (being built off the driver's task, which can take
                // seconds): the stall clock starts when it runs.
                p.encoded_at = now;
                continue;
            };
            if !p.first_reported && c.captured > 0 {
                p.first_reported = true;
                first.push(stream.clone());
            }
            if c.encoded != p.last_encoded {
                p.encoded_at = now;
                p.last_encoded = c.encoded;
            } else if now.duration_since(p.encoded_at) > stall {
                stalled.push(stream.clone());
            }
        }
        for s in first {
            self.media_event(&s, MediaEventKind::CapturedFirstFrame);
        }
        for s in stalled {
            let msg = format!("no encoded frame for {} s", stall.as_secs());
            self.pipeline_failed(&s, ErrorCode::MEDIA_ENCODER_STALLED, msg, now);
        }
    }

    fn watch_players(&mut self, now: Instant, meters: &dyn Meters) {
        let mut events = Vec::new();
        let mut want_key = Vec::new();
        for (stream, p) in &mut self.plays {
            let Some((c, last_video)) = meters.player(stream) else { continue };
            let expected = self.ctl.expects_video(stream);
            let mut ev = |e| events.push((stream.clone(), e));
            if !p.rendered_first && c.rendered > 0 {
                p.rendered_first = true;
                ev(MediaEventKind::RenderedFirstFrame);
            }
            if p.rendered_first && expected {
                let last = last_video.unwrap_or(now);
                let last = p.video_from.map_or(last, |from| last.max(from));
                for e in p.video.check(now, last) {
                    ev(e);
                }
            }
            if c.audio != p.prev.audio {
                p.audio_at = now;
                if p.audio_stalled {
                    p.audio_stalled = false;
                    ev(MediaEventKind::AudioResume);
                }
            } else if c.audio > 0 && !p.audio_stalled && now.duration_since(p.audio_at) >= STALL {
                p.audio_stalled = true;
                ev(MediaEventKind::AudioStall);
            }
            p.prev.audio = c.audio;
            // The link is up but no video renders: the keyframe the decoder needs was lost,
            // or the publisher (a browser) sends one only when asked. Ask, every second.
            let dark = expected && p.link.connected && (!p.rendered_first || p.video.stalled_since.is_some());
            match (dark, p.dark_since) {
                (false, _) => p.dark_since = None,
                (true, None) => p.dark_since = Some(now),
                (true, Some(t)) => {
                    if now.duration_since(t) >= KEYFRAME_RETRY
                        && p.key_asked.is_none_or(|k| now.duration_since(k) >= KEYFRAME_RETRY)
                    {
                        p.key_asked = Some(now);
                        want_key.push(stream.clone());
                    }
                }
            }
        }
        for (s, e) in events {
            self.media_event(&s, e);
        }
        for stream in want_key {
            tracing::debug!(stream, "no video renders; asking for a keyframe");
            self.run(Command::RequestKeyframe { stream });
        }
    }

    fn quality(&mut self, secs: f64, meters: &dyn Meters) {
        let secs = secs.max(0.001);
        for (stream, p) in &mut self.pubs {
            let (Some((encoder, _)), Some(c)) = (p.pipeline, meters.publisher(stream)) else { continue };
            let link = p.link.rates(secs);
            // The estimate far under what the stream is meant to send is a weak uplink even
            // when the receiver reports show no loss yet.
            let target = f64::from(self.cfg.bitrate_kbps) + super::adapt::AUDIO_KBPS;
            let starved = p.link.stats.estimate_kbps.is_some_and(|e| e > 0.0 && e < 0.3 * target);
            p.level = if starved { link.level.max(QualityLevel::Medium) } else { link.level };
            let quality = PublishQuality {
                capture_fps: per_sec(c.captured, p.prev.captured, secs),
                encode_fps: per_sec(c.encoded, p.prev.encoded, secs),
                send_fps: link.fps,
                video_kbps: link.video_kbps,
                audio_kbps: link.audio_kbps,
                rtt_ms: link.rtt_ms,
                packet_loss: link.loss,
                level: link.level,
                hardware_encoder: encoder.is_hardware(),
                encoder: encoder.to_string(),
                path: link.path.to_string(),
                estimate_kbps: p.link.stats.estimate_kbps.unwrap_or(0.0),
                cap_kbps: p.link.stats.cap_kbps.unwrap_or(0.0),
                target_kbps: f64::from(meters.encoder_kbps(stream).unwrap_or(p.adapt.rate().kbps)),
                width: p.adapt.rate().width,
                height: p.adapt.rate().height,
                fps: p.adapt.rate().fps,
                retransmitted: p.link.stats.repaired.rtx_sent,
                audio_fec_percent: p.audio_fec_percent,
            };
            p.prev = c;
            let e = EngineEvent::PublisherQualityUpdate { stream_id: stream.clone(), quality };
            self.out.push_back(MediaOutput::Event(e));
        }
        for (stream, p) in &mut self.plays {
            let Some((c, _)) = meters.player(stream) else { continue };
            let link = p.link.rates(secs);
            p.level = link.level;
            let quality = PlayQuality {
                width: c.width,
                height: c.height,
                receive_fps: link.fps,
                decode_fps: per_sec(c.decoded, p.prev.decoded, secs),
                render_fps: per_sec(c.rendered, p.prev.rendered, secs),
                video_kbps: link.video_kbps,
                audio_kbps: link.audio_kbps,
                rtt_ms: link.rtt_ms,
                packet_loss: link.loss,
                jitter_buffer_ms: f64::from(match c.jitter_ms {
                    0 => rules::video_jitter_ms(&self.cfg),
                    ms => ms,
                }),
                stall_count: p.video.count,
                stall_ms: p.video.total_ms,
                frames_decoded: c.decoded,
                audio_decoded: c.audio,
                level: link.level,
                path: link.path.to_string(),
                video_retransmitted: p.link.stats.repaired.rtx_received,
                video_fec_rebuilt: p.link.stats.repaired.fec_rebuilt,
                video_lost: p.link.stats.repaired.video_lost,
                audio_lost: p.link.stats.repaired.audio.lost,
                audio_concealed: p.link.stats.repaired.audio.concealed(),
                video_frames: p.link.stats.repaired.frames.frames,
                video_frames_intact: p.link.stats.repaired.frames.intact,
                video_freezes: p.link.stats.repaired.frames.freezes,
            };
            // The audio count is the audio stall watch's, kept by `watch_players`.
            p.prev = PlayCounts { audio: p.prev.audio, ..c };
            let e = EngineEvent::PlayerQualityUpdate { stream_id: stream.clone(), quality };
            self.out.push_back(MediaOutput::Event(e));
        }
    }
}
