//! The media runner: owns what the supervisor only names — GStreamer pipelines, media
//! connections (each a task around a `ClientCore`), the RTP slots between them and the grid —
//! and carries out the supervisor's commands. Connections and pipelines report on one
//! bounded note channel, tagged with the epoch the supervisor gave them.
//!
//! Pipelines are built and torn down on tokio's blocking pool, never on the driver's task:
//! building one loads plugins and opens devices, which takes seconds on a slow board (and
//! tens of seconds the first time after an update, while GStreamer rescans its plugins), and
//! the driver must keep answering the server meanwhile. A finished build comes back on its
//! own channel and is installed only if no later command replaced it (`build`).

use crate::proto::ice_servers::{IceServer, TurnTransport};
use crate::rtc::client::{LinkOpts, Relays};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::rtp_slot::RtpSlot;
use super::{Command, Meters, Note, PlayCounts, PlaySettings, PublishCounts};
use crate::media::{Grid, MediaConfig, Player, Publisher, RtpOut, VideoRate};
use crate::proto::MediaRole;
use crate::rtc::client::ClientConn;

/// Notes waiting for the supervisor; full: a note is dropped and logged (a dropped `Stats`
/// is replaced a second later; the silence watch covers a lost state change).
const NOTES: usize = 1024;
/// Builds finished on the blocking pool, waiting to be installed.
const BUILT: usize = 64;

/// A pipeline (for a player, with its connection and offer) built off the driver's task.
enum Built {
    Publisher { stream: String, build: u64, epoch: u64, result: Result<Publisher, crate::media::MediaError> },
    Player { stream: String, build: u64, epoch: u64, result: Result<(Player, ClientConn, String), String> },
    Grid { build: u64, result: Result<Grid, crate::media::MediaError> },
}

#[derive(Default)]
struct RunPub {
    conn: Option<ClientConn>,
    pipeline: Option<Publisher>,
    rtp: Arc<Mutex<RtpSlot>>,
    /// The latest pipeline command's number: a build that finishes under an older one is
    /// dropped.
    build: u64,
    /// The rate last asked for, applied to a pipeline installed after it.
    rate: Option<VideoRate>,
    /// The audio loss last sized for, the same way.
    audio_loss: Option<u32>,
}

#[derive(Default)]
struct RunPlay {
    conn: Option<ClientConn>,
    player: Option<Player>,
    /// The controls last asked for, applied to a player installed after them.
    settings: Option<PlaySettings>,
    /// As in `RunPub`, for the player and its connection.
    build: u64,
}

/// See the module docs.
pub(crate) struct MediaRunner {
    config: MediaConfig,
    muted: bool,
    camera: bool,
    pubs: HashMap<String, RunPub>,
    plays: HashMap<String, RunPlay>,
    grid: Option<Grid>,
    /// The latest grid command's number, as in `RunPub::build`.
    grid_build: u64,
    tx: mpsc::Sender<Note>,
    rx: mpsc::Receiver<Note>,
    built_tx: mpsc::Sender<Built>,
    built_rx: mpsc::Receiver<Built>,
    /// Numbers pipeline commands (see `RunPub::build`).
    builds: u64,
    /// The room connection's trust, for `turns:` (built on first use).
    ca_file: Option<std::path::PathBuf>,
    turn_tls: Option<Option<std::sync::Arc<rustls::ClientConfig>>>,
}

impl MediaRunner {
    /// A runner with no stream; `ca_file` is the room connection's CA (also trusted for
    /// TURN over TLS), `None`: the system's roots.
    pub(crate) fn new(config: MediaConfig, ca_file: Option<std::path::PathBuf>) -> Self {
        let (tx, rx) = mpsc::channel(NOTES);
        let (built_tx, built_rx) = mpsc::channel(BUILT);
        MediaRunner {
            built_tx,
            built_rx,
            builds: 0,
            config,
            muted: false,
            camera: true,
            pubs: HashMap::new(),
            plays: HashMap::new(),
            grid: None,
            grid_build: 0,
            tx,
            rx,
            ca_file,
            turn_tls: None,
        }
    }

    /// The TURN servers a new connection may use, with the trust for `turns:`.
    fn relays(&mut self, servers: Vec<IceServer>) -> Relays {
        let wants_tls = servers.iter().flat_map(|s| s.turn_urls()).any(|u| u.transport == TurnTransport::Tls);
        if wants_tls && self.turn_tls.is_none() {
            let cfg = crate::tls::client::config(self.ca_file.as_deref(), &[]);
            if let Err(e) = &cfg {
                tracing::warn!(error = %e, "no TLS trust for TURN over TLS; turns: servers are skipped");
            }
            self.turn_tls = Some(cfg.ok());
        }
        Relays { servers, tls: self.turn_tls.clone().flatten() }
    }

    /// The next note from a connection or a pipeline.
    pub(crate) async fn next_note(&mut self) -> Option<Note> {
        loop {
            tokio::select! {
                n = self.rx.recv() => return n,
                Some(b) = self.built_rx.recv() => {
                    if let Some(n) = self.install(b) {
                        return Some(n);
                    }
                }
            }
        }
    }

    /// Installs a finished build unless a later command replaced it; what the supervisor
    /// must hear of it comes back as a note.
    fn install(&mut self, built: Built) -> Option<Note> {
        match built {
            Built::Publisher { stream, build, epoch, result } => {
                let p = self.pubs.get_mut(&stream).filter(|p| p.build == build);
                match (p, result) {
                    (Some(p), Ok(pl)) => {
                        pl.set_muted(self.muted);
                        pl.set_camera(self.camera);
                        if let Some(r) = p.rate {
                            pl.set_rate(r);
                        }
                        if let Some(l) = p.audio_loss {
                            pl.set_audio_loss(l);
                        }
                        p.pipeline = Some(pl);
                        None
                    }
                    (Some(_), Err(e)) => Some(Note::Pipeline(MediaRole::Publish, stream, epoch, e)),
                    (None, r) => {
                        retire(r.ok());
                        None
                    }
                }
            }
            Built::Player { stream, build, epoch, result } => {
                let p = self.plays.get_mut(&stream).filter(|p| p.build == build);
                match (p, result) {
                    (Some(p), Ok((player, conn, offer))) => {
                        if let Some(s) = p.settings {
                            player.set_controls(s.video, s.gain);
                        }
                        p.player = Some(player);
                        p.conn = Some(conn);
                        Some(Note::Offer(MediaRole::Play, stream, epoch, offer))
                    }
                    (Some(_), Err(e)) => Some(Note::OpenFailed(MediaRole::Play, stream, epoch, e)),
                    (None, r) => {
                        retire(r.ok());
                        None
                    }
                }
            }
            Built::Grid { build, result } => {
                match result {
                    Ok(g) if build == self.grid_build => self.grid = Some(g),
                    Ok(g) => retire(g),
                    Err(e) => tracing::error!(error = %e, "cannot build the grid"),
                }
                None
            }
        }
    }

    fn next_build(&mut self) -> u64 {
        self.builds += 1;
        self.builds
    }

    /// Carries out one command. What is known at once comes back as a note: a new
    /// connection's offer, or a failure.
    pub(crate) fn execute(&mut self, cmd: Command) -> Option<Note> {
        match cmd {
            Command::OpenLink { role: MediaRole::Publish, stream, epoch, bind, silence, ice, send_rate, .. } => {
                let bind = match bind.resolve(crate::rtc::local_ip_towards) {
                    Ok(b) => b,
                    Err(e) => return Some(Note::OpenFailed(MediaRole::Publish, stream, epoch, e)),
                };
                let video = self.config.video != crate::media::VideoSource::None;
                let opts = LinkOpts { silence, relays: self.relays(ice), send_rate, repair: self.config.repair, video };
                let events = self.link_events(MediaRole::Publish, &stream, epoch);
                let p = self.pubs.entry(stream.clone()).or_default();
                p.conn = None;
                match ClientConn::start(MediaRole::Publish, bind, opts, None, events) {
                    Ok((c, offer)) => {
                        if let Ok(mut g) = p.rtp.lock() {
                            g.tx = Some(c.rtp_sender());
                        }
                        p.conn = Some(c);
                        Some(Note::Offer(MediaRole::Publish, stream, epoch, offer))
                    }
                    Err(e) => Some(Note::OpenFailed(MediaRole::Publish, stream, epoch, e.to_string())),
                }
            }
            Command::OpenLink {
                role: MediaRole::Play,
                stream,
                epoch,
                bind,
                silence,
                ice,
                decode_video,
                settings,
                ..
            } => {
                let bind = match bind.resolve(crate::rtc::local_ip_towards) {
                    Ok(b) => b,
                    Err(e) => return Some(Note::OpenFailed(MediaRole::Play, stream, epoch, e)),
                };
                let opts = LinkOpts {
                    silence,
                    relays: self.relays(ice),
                    send_rate: None,
                    repair: self.config.repair,
                    video: decode_video,
                };
                let events = self.link_events(MediaRole::Play, &stream, epoch);
                let errors = self.pipeline_errors(MediaRole::Play, &stream, epoch);
                let build = self.next_build();
                let p = self.plays.entry(stream.clone()).or_default();
                p.build = build;
                p.settings = Some(settings);
                retire((p.conn.take(), p.player.take()));
                let rendered = self.tx.clone();
                let name = stream.clone();
                let first = Box::new(move |which: usize| {
                    if which == 1 {
                        let _ = rendered.try_send(Note::Rendered(name.clone(), epoch));
                    }
                });
                let config = self.config.clone();
                let done = self.built_tx.clone();
                tokio::task::spawn_blocking(move || {
                    let result = Player::start(&config, &stream, decode_video, errors)
                        .inspect(|pl| pl.counters.on_first(first))
                        .and_then(|pl| pl.sink().map(|s| (pl, s)))
                        .map_err(|e| format!("cannot build the play pipeline: {e}"))
                        .and_then(|(pl, sink)| {
                            let c = ClientConn::start(MediaRole::Play, bind, opts, Some(Box::new(sink)), events);
                            c.map(|(c, offer)| (pl, c, offer)).map_err(|e| e.to_string())
                        });
                    // A runner that is gone drops the build here, off its task.
                    let _ = done.blocking_send(Built::Player { stream, build, epoch, result });
                });
                None
            }
            Command::CloseLink { role: MediaRole::Publish, stream } => {
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.conn = None;
                }
                None
            }
            Command::CloseLink { role: MediaRole::Play, stream } => {
                // The player stays until the next connection replaces it with its own; one
                // still being built is dropped.
                let build = self.next_build();
                if let Some(p) = self.plays.get_mut(&stream) {
                    p.build = build;
                    p.conn = None;
                }
                None
            }
            Command::Answer { role, stream, sdp } => {
                if let Some(c) = self.conn(role, &stream)
                    && !c.answer(sdp)
                {
                    tracing::warn!(stream = %stream, ?role, "the media connection did not take the server's answer");
                }
                None
            }
            Command::RequestKeyframe { stream } => {
                if let Some(c) = self.conn(MediaRole::Play, &stream) {
                    c.request_keyframe();
                }
                None
            }
            Command::ForceKeyframe { stream } => {
                if let Some(p) = self.pubs.get(&stream).and_then(|p| p.pipeline.as_ref()) {
                    p.force_keyframe();
                }
                None
            }
            Command::StartPipeline { stream, epoch, choice, rate } => {
                let errors = self.pipeline_errors(MediaRole::Publish, &stream, epoch);
                let build = self.next_build();
                let p = self.pubs.entry(stream.clone()).or_default();
                p.build = build;
                p.rate = None;
                retire(p.pipeline.take());
                let slot = p.rtp.clone();
                let out: RtpOut = Arc::new(move |kind, bytes| {
                    if let Ok(mut g) = slot.lock() {
                        g.send(epoch, kind, bytes);
                    }
                });
                let (config, muted, done) = (self.config.clone(), self.muted, self.built_tx.clone());
                tokio::task::spawn_blocking(move || {
                    let result = Publisher::start(&config, choice, rate, muted, out, errors);
                    let _ = done.blocking_send(Built::Publisher { stream, build, epoch, result });
                });
                None
            }
            Command::SetRate { stream, rate } => {
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.rate = Some(rate);
                    if let Some(pl) = &p.pipeline {
                        pl.set_rate(rate);
                    }
                }
                None
            }
            Command::Mute(muted) => {
                self.set_muted(muted);
                None
            }
            Command::Camera(on) => {
                self.camera = on;
                for p in self.pubs.values().filter_map(|p| p.pipeline.as_ref()) {
                    p.set_camera(on);
                }
                None
            }
            Command::PlayControls { stream, settings } => {
                if let Some(p) = self.plays.get_mut(&stream) {
                    p.settings = Some(settings);
                    if let Some(pl) = &p.player {
                        pl.set_controls(settings.video, settings.gain);
                    }
                }
                None
            }
            Command::SetAudioLoss { stream, percent } => {
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.audio_loss = Some(percent);
                    if let Some(pl) = &p.pipeline {
                        pl.set_audio_loss(percent);
                    }
                }
                None
            }
            Command::StopPipeline { stream } => {
                let build = self.next_build();
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.build = build;
                    retire(p.pipeline.take());
                }
                None
            }
            Command::Remove { role: MediaRole::Publish, stream } => {
                if let Some(p) = self.pubs.remove(&stream) {
                    retire((p.conn, p.pipeline));
                }
                None
            }
            Command::Remove { role: MediaRole::Play, stream } => {
                if let Some(p) = self.plays.remove(&stream) {
                    retire((p.conn, p.player));
                }
                None
            }
            Command::Grid(channels) => {
                // Built on the blocking pool like every pipeline (it opens the display); a
                // build finished under a later grid command is dropped.
                let build = self.next_build();
                self.grid_build = build;
                retire(self.grid.take());
                if !channels.is_empty() {
                    let (config, done) = (self.config.clone(), self.built_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let result = Grid::start(&config, channels);
                        let _ = done.blocking_send(Built::Grid { build, result });
                    });
                }
                None
            }
            #[cfg(feature = "test-hooks")]
            Command::InjectFault { stream } => {
                if let Some(p) = self.pubs.get(&stream).and_then(|p| p.pipeline.as_ref()) {
                    p.simulate_failure();
                }
                None
            }
        }
    }

    /// Mutes or unmutes the microphone on every publish pipeline, and on those built later.
    pub(crate) fn set_muted(&mut self, muted: bool) {
        self.muted = muted;
        for p in self.pubs.values().filter_map(|p| p.pipeline.as_ref()) {
            p.set_muted(muted);
        }
    }

    /// Composed grid frames so far (grid layout), for tests.
    #[cfg(feature = "test-hooks")]
    pub(crate) fn grid_frames(&self) -> Option<u64> {
        self.grid.as_ref().map(|g| g.counters.snapshot()[1])
    }

    fn conn(&self, role: MediaRole, stream: &str) -> Option<&ClientConn> {
        match role {
            MediaRole::Publish => self.pubs.get(stream).and_then(|p| p.conn.as_ref()),
            MediaRole::Play => self.plays.get(stream).and_then(|p| p.conn.as_ref()),
        }
    }

    /// A connection's events go straight to the note channel, tagged.
    fn link_events(
        &self,
        role: MediaRole,
        stream: &str,
        epoch: u64,
    ) -> impl FnMut(crate::rtc::client::ClientEvent) + Send + 'static {
        let notes = self.tx.clone();
        let stream = stream.to_string();
        move |ev| {
            if notes.try_send(Note::Link(role, stream.clone(), epoch, ev)).is_err() {
                tracing::debug!("media notes full; a connection event was dropped");
            }
        }
    }

    /// A pipeline's failure goes straight to the note channel, tagged.
    fn pipeline_errors(&self, role: MediaRole, stream: &str, epoch: u64) -> crate::media::ErrorSink {
        let notes = self.tx.clone();
        let stream = stream.to_string();
        Box::new(move |e| {
            if notes.try_send(Note::Pipeline(role, stream, epoch, e)).is_err() {
                tracing::warn!("media notes full; a pipeline failure was dropped");
            }
        })
    }
}

/// Drops pipelines (and what goes with them) on the blocking pool: stopping one waits for
/// its streaming threads.
fn retire<T: Send + 'static>(what: T) {
    tokio::task::spawn_blocking(move || drop(what));
}

impl Meters for MediaRunner {
    fn publisher(&self, stream: &str) -> Option<PublishCounts> {
        let [captured, encoded, audio] = self.pubs.get(stream)?.pipeline.as_ref()?.counters.snapshot();
        Some(PublishCounts { captured, encoded, audio })
    }

    fn encoder_kbps(&self, stream: &str) -> Option<u32> {
        self.pubs.get(stream)?.pipeline.as_ref()?.bitrate_kbps()
    }

    fn sound_levels(&self, role: MediaRole, stream: &str) -> Option<[Option<f32>; 2]> {
        let c = match role {
            MediaRole::Publish => &self.pubs.get(stream)?.pipeline.as_ref()?.counters,
            MediaRole::Play => &self.plays.get(stream)?.player.as_ref()?.counters,
        };
        Some([c.level(0), c.level(1)])
    }

    fn player(&self, stream: &str) -> Option<(PlayCounts, Option<Instant>)> {
        let p = self.plays.get(stream)?.player.as_ref()?;
        let [decoded, rendered, audio] = p.counters.snapshot();
        let (width, height) = p.counters.size().unwrap_or((0, 0));
        let jitter_ms = p.counters.jitter_ms();
        Some((PlayCounts { decoded, rendered, audio, width, height, jitter_ms }, p.counters.last_video()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::media::Bind;
    use crate::media::encoder::{Choice, Encoder};
    use std::time::Duration;

    fn runner() -> MediaRunner {
        MediaRunner::new(MediaConfig::small(), None)
    }

    fn x264() -> Choice {
        Choice { encoder: Encoder::X264, reason: "test".into() }
    }

    async fn next_build(r: &mut MediaRunner) -> Built {
        tokio::time::timeout(Duration::from_secs(30), r.built_rx.recv()).await.expect("a build finishes").unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_publish_pipeline_is_built_off_the_drivers_task_and_installed_when_done() {
        let mut r = runner();
        let rate = r.config.full_rate();
        let cmd = Command::StartPipeline { stream: "s".into(), epoch: 1, choice: x264(), rate };
        assert!(r.execute(cmd).is_none());
        // On a current-thread runtime nothing else ran yet: the pipeline is not there.
        assert!(r.publisher("s").is_none(), "execute built the pipeline on the driver's task");
        let b = next_build(&mut r).await;
        assert!(r.install(b).is_none());
        assert!(r.publisher("s").is_some(), "the finished build was not installed");
        // Adaptation reaches the running encoder.
        assert_eq!(r.encoder_kbps("s"), Some(300));
        r.execute(Command::SetRate { stream: "s".into(), rate: VideoRate { kbps: 120, ..rate } });
        assert_eq!(r.encoder_kbps("s"), Some(120));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_build_that_a_later_command_replaced_is_dropped() {
        let mut r = runner();
        let rate = r.config.full_rate();
        r.execute(Command::StartPipeline { stream: "s".into(), epoch: 1, choice: x264(), rate });
        r.execute(Command::StopPipeline { stream: "s".into() });
        let b = next_build(&mut r).await;
        assert!(r.install(b).is_none());
        assert!(r.publisher("s").is_none(), "a stopped pipeline's build was installed");

        // A player whose link closed while it was being built: no offer, nothing installed.
        let open = || Command::OpenLink {
            role: MediaRole::Play,
            stream: "p".into(),
            epoch: 2,
            bind: Bind::Ip([127, 0, 0, 1].into()),
            silence: Duration::from_secs(3),
            ice: Vec::new(),
            send_rate: None,
            decode_video: true,
            settings: PlaySettings { video: true, gain: 1.0 },
        };
        r.execute(open());
        r.execute(Command::CloseLink { role: MediaRole::Play, stream: "p".into() });
        let b = next_build(&mut r).await;
        assert!(r.install(b).is_none(), "a closed link's offer reached the supervisor");
        assert!(r.player("p").is_none());

        // The same link opened again: its offer comes back through next_note.
        r.execute(open());
        let b = next_build(&mut r).await;
        match r.install(b) {
            Some(Note::Offer(MediaRole::Play, s, 2, sdp)) => assert!(s == "p" && sdp.contains("m=video")),
            other => panic!("expected the player's offer, got {other:?}"),
        }
        assert!(r.player("p").is_some());
    }
}
