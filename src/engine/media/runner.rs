//! The media runner: owns what the supervisor only names — GStreamer pipelines, media
//! connections (each a task around a `ClientCore`), the RTP slots between them and the grid —
//! and carries out the supervisor's commands. Connections and pipelines report on one
//! bounded note channel, tagged with the epoch the supervisor gave them.

use crate::rtc::client::Relays;
use crate::rtc::ice_servers::{IceServer, TurnTransport};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::rtp_slot::RtpSlot;
use super::{Command, Meters, Note};
use crate::media::{Grid, MediaConfig, Player, Publisher, RtpOut};
use crate::proto::MediaRole;
use crate::rtc::client::ClientConn;

/// Notes waiting for the supervisor; full: a note is dropped and logged (a dropped `Stats`
/// is replaced a second later; the silence watch covers a lost state change).
const NOTES: usize = 1024;

#[derive(Default)]
struct RunPub {
    conn: Option<ClientConn>,
    pipeline: Option<Publisher>,
    rtp: Arc<Mutex<RtpSlot>>,
}

#[derive(Default)]
struct RunPlay {
    conn: Option<ClientConn>,
    player: Option<Player>,
}

/// See the module docs.
pub(crate) struct MediaRunner {
    config: MediaConfig,
    muted: bool,
    pubs: HashMap<String, RunPub>,
    plays: HashMap<String, RunPlay>,
    grid: Option<Grid>,
    tx: mpsc::Sender<Note>,
    rx: mpsc::Receiver<Note>,
    /// The room connection's trust, for `turns:` (built on first use).
    ca_file: Option<std::path::PathBuf>,
    turn_tls: Option<Option<std::sync::Arc<rustls::ClientConfig>>>,
}

impl MediaRunner {
    /// A runner with no stream; `ca_file` is the room connection's CA (also trusted for
    /// TURN over TLS), `None`: the system's roots.
    pub(crate) fn new(config: MediaConfig, ca_file: Option<std::path::PathBuf>) -> Self {
        let (tx, rx) = mpsc::channel(NOTES);
        MediaRunner {
            config,
            muted: false,
            pubs: HashMap::new(),
            plays: HashMap::new(),
            grid: None,
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
        self.rx.recv().await
    }

    /// Carries out one command. What is known at once comes back as a note: a new
    /// connection's offer, or a failure.
    pub(crate) fn execute(&mut self, cmd: Command) -> Option<Note> {
        match cmd {
            Command::OpenLink { role: MediaRole::Publish, stream, epoch, bind, silence, ice } => {
                let bind = bind.resolve(crate::rtc::local_ip_towards);
                let relays = self.relays(ice);
                let events = self.link_events(MediaRole::Publish, &stream, epoch);
                let p = self.pubs.entry(stream.clone()).or_default();
                p.conn = None;
                match ClientConn::start(MediaRole::Publish, bind, silence, relays, None, events) {
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
            Command::OpenLink { role: MediaRole::Play, stream, epoch, bind, silence, ice } => {
                let bind = bind.resolve(crate::rtc::local_ip_towards);
                let relays = self.relays(ice);
                let events = self.link_events(MediaRole::Play, &stream, epoch);
                let errors = self.pipeline_errors(MediaRole::Play, &stream, epoch);
                let p = self.plays.entry(stream.clone()).or_default();
                p.conn = None;
                p.player = None;
                let rendered = self.tx.clone();
                let name = stream.clone();
                let first = Box::new(move |which: usize| {
                    if which == 1 {
                        let _ = rendered.try_send(Note::Rendered(name.clone(), epoch));
                    }
                });
                let started = Player::start(&self.config, &stream, errors)
                    .inspect(|pl| pl.counters.on_first(first))
                    .and_then(|pl| pl.sink().map(|s| (pl, s)))
                    .map_err(|e| format!("cannot build the play pipeline: {e}"))
                    .and_then(|(pl, sink)| {
                        let c = ClientConn::start(MediaRole::Play, bind, silence, relays, Some(Box::new(sink)), events);
                        c.map(|c| (pl, c)).map_err(|e| e.to_string())
                    });
                match started {
                    Ok((player, (conn, offer))) => {
                        p.player = Some(player);
                        p.conn = Some(conn);
                        Some(Note::Offer(MediaRole::Play, stream, epoch, offer))
                    }
                    Err(e) => Some(Note::OpenFailed(MediaRole::Play, stream, epoch, e)),
                }
            }
            Command::CloseLink { role: MediaRole::Publish, stream } => {
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.conn = None;
                }
                None
            }
            Command::CloseLink { role: MediaRole::Play, stream } => {
                // The player stays until the next connection replaces it with its own.
                if let Some(p) = self.plays.get_mut(&stream) {
                    p.conn = None;
                }
                None
            }
            Command::Answer { role, stream, sdp } => {
                if let Some(c) = self.conn(role, &stream) {
                    c.answer(sdp);
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
            Command::StartPipeline { stream, epoch, choice } => {
                let errors = self.pipeline_errors(MediaRole::Publish, &stream, epoch);
                let p = self.pubs.entry(stream.clone()).or_default();
                p.pipeline = None;
                let slot = p.rtp.clone();
                let out: RtpOut = Arc::new(move |kind, bytes| {
                    if let Ok(mut g) = slot.lock() {
                        g.send(epoch, kind, bytes);
                    }
                });
                match Publisher::start(&self.config, choice, self.muted, out, errors) {
                    Ok(pl) => {
                        p.pipeline = Some(pl);
                        None
                    }
                    Err(e) => Some(Note::Pipeline(MediaRole::Publish, stream, epoch, e)),
                }
            }
            Command::StopPipeline { stream } => {
                if let Some(p) = self.pubs.get_mut(&stream) {
                    p.pipeline = None;
                }
                None
            }
            Command::Remove { role: MediaRole::Publish, stream } => {
                self.pubs.remove(&stream);
                None
            }
            Command::Remove { role: MediaRole::Play, stream } => {
                self.plays.remove(&stream);
                None
            }
            Command::Grid(channels) => {
                self.grid = None;
                if !channels.is_empty() {
                    match Grid::start(&self.config, channels) {
                        Ok(g) => self.grid = Some(g),
                        Err(e) => tracing::error!(error = %e, "cannot build the grid"),
                    }
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

    /// Simulates an encoder failure on a published stream (tests and diagnosis).
    pub(crate) fn inject_fault(&self, stream: &str) -> bool {
        self.pubs.get(stream).and_then(|p| p.pipeline.as_ref()).map(|p| p.simulate_failure()).is_some()
    }

    /// Composed grid frames so far (grid layout), for status and tests.
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

impl Meters for MediaRunner {
    fn publisher(&self, stream: &str) -> Option<[u64; 3]> {
        self.pubs.get(stream)?.pipeline.as_ref().map(|p| p.counters.snapshot())
    }

    fn player(&self, stream: &str) -> Option<([u64; 3], Option<Instant>)> {
        let p = self.plays.get(stream)?.player.as_ref()?;
        Some((p.counters.snapshot(), p.counters.last_video()))
    }
}
