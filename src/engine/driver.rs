//! The engine's tokio side: the public [`Engine`] handle and the one task that drives the
//! sans-IO [`Session`] with a WebSocket, timers and the application's calls.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use super::backlog::{BACKLOG, Backlog};
use super::core::{Call, CoreOutput, EngineCore, Input};
use super::error::EngineError;
use super::event::{EngineEvent, PublishChannel};
pub use super::media::EngineMedia;
use super::media::{Control, MediaRunner, Note};
use super::reconnect::ReconnectPolicy;
use super::session::{CallStep, CmdId, Reply, Session, SessionConfig};
use crate::deadline::sleep_until;
use crate::dial::Dialer;
use crate::proto::{ClientMsg, ErrorCode, RingOrder, ServerMsg, UserInfo};
use crate::url::ServerUrl;

/// Events waiting in the channel before the engine holds them back in its own bounded
/// backlog (`engine/backlog.rs`).
pub const EVENT_CHANNEL: usize = 256;
/// A connect that has not completed by then is abandoned and retried: one lost SYN costs
/// 1 s, two cost 3 s, and the next attempt (a new SYN at once) is better than waiting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const DESTROY_CMD: CmdId = u64::MAX;

/// How the engine proves who it is.
#[derive(Debug, Clone)]
pub enum Auth {
    /// AppSign: the device holds the app secret (64 hex) and signs its own short-lived tokens.
    AppSign(String),
    /// A token from the integrator's backend (renew it with [`Engine::renew_token`]).
    Token(String),
}

/// What [`Engine::create`] needs.
#[derive(Debug, Clone)]
pub struct EngineProfile {
    /// The AppID.
    pub app_id: u32,
    /// AppSign or token.
    pub auth: Auth,
    /// The server's base URL: `wss://host[:port]` or, on a LAN or loopback, `ws://host:port`
    /// (`https://` and `http://` are accepted as the same); the signalling path `/ws/v1` is
    /// added when the URL has no path.
    pub server: String,
    /// A private CA (PEM) that signs the server's certificate; `None`: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// AppSign: the lifetime of the tokens the engine mints (and renews before they expire).
    pub app_sign_ttl: Duration,
    /// Reconnect backoff and limit (library default: give up after 20 minutes).
    pub reconnect: ReconnectPolicy,
    /// Media (capture, encoding, WebRTC, playback). `None`: signalling only, no GStreamer.
    pub media: Option<EngineMedia>,
}

impl EngineProfile {
    /// A profile with the default reconnect policy.
    pub fn new(app_id: u32, auth: Auth, server: impl Into<String>) -> Self {
        EngineProfile {
            app_id,
            auth,
            server: server.into(),
            ca_file: None,
            app_sign_ttl: super::session::APP_SIGN_TTL,
            reconnect: ReconnectPolicy::default(),
            media: None,
        }
    }

    /// Trusts the CA in this PEM file for the server's certificate (instead of the system's).
    pub fn with_ca_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// With media: published streams carry video and audio, played streams are decoded.
    pub fn with_media(mut self, config: crate::media::MediaConfig) -> Self {
        self.media = Some(EngineMedia { config, bind: None });
        self
    }

    /// With media set up for a kind of call ([`Scenario::config`](crate::media::Scenario::config));
    /// change `media.config` afterwards to override single values.
    pub fn with_scenario(self, scenario: crate::media::Scenario) -> Self {
        self.with_media(scenario.config())
    }
}

/// Per-login options.
#[derive(Debug, Clone, Default)]
pub struct RoomConfig {
    /// A token for this login (overrides the profile's).
    pub token: Option<String>,
    /// Receive [`EngineEvent::RoomUserUpdate`].
    pub is_user_status_notify: bool,
}

/// How a call rings its callees.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOptions {
    /// All together (the first answer takes it) or one after another.
    pub order: RingOrder,
    /// Seconds each callee rings (5..=120); `None`: the server's `[calls] ring_secs`.
    pub ring_secs: Option<u32>,
}

enum DriverCmd {
    Call(Call, oneshot::Sender<Reply>),
    #[cfg(feature = "test-hooks")]
    Fault(String, oneshot::Sender<bool>),
    #[cfg(feature = "test-hooks")]
    GridFrames(oneshot::Sender<Option<u64>>),
    PlayCounts(String, oneshot::Sender<Option<super::media::PlayCounts>>),
    Control(Control),
    Destroy(oneshot::Sender<()>),
}

/// The engine handle. Cheap to share behind an `Arc`; every call is async.
pub struct Engine {
    tx: mpsc::Sender<DriverCmd>,
    dropped: Arc<AtomicU64>,
}

impl Engine {
    /// Creates the engine and its event receiver. Nothing is missed: events are queued from
    /// this moment. Must be called inside a tokio runtime.
    pub fn create(profile: EngineProfile) -> Result<(Engine, mpsc::Receiver<EngineEvent>), EngineError> {
        let url = ServerUrl::parse(&profile.server).map_err(|e| EngineError::Profile(e.to_string()))?;
        let dialer = Dialer::new(url.clone(), profile.ca_file.as_deref())
            .map_err(|e| EngineError::Profile(format!("TLS: {e}")))?;
        if !url.is_tls() && !url.is_loopback() {
            tracing::warn!(server = %url, hint = "use wss:// (docs: README, Deploying on the internet)",
                "the server URL is cleartext ws:// to another host: the token and signalling can be read on the way");
        }
        let (app_sign_key, token) = match &profile.auth {
            Auth::AppSign(secret) => {
                (Some(crate::auth::parse_secret(secret).map_err(|e| EngineError::Profile(e.to_string()))?), None)
            }
            Auth::Token(t) => (None, Some(t.clone())),
        };
        let cfg = SessionConfig {
            app_sign_ttl: profile.app_sign_ttl,
            app_id: profile.app_id,
            app_sign_key,
            policy: profile.reconnect.clone(),
            login_timeout: Duration::from_secs(10),
            seed: rand::random(),
        };
        let session = Session::new(cfg, Instant::now());
        let (tx, rx) = mpsc::channel(64);
        let (ev_tx, ev_rx) = mpsc::channel(EVENT_CHANNEL);
        if let Some(m) = &profile.media {
            m.config.validate().map_err(EngineError::Profile)?;
        }
        let (sup, run) = match profile.media.clone().map(|m| super::media::parts(m, profile.ca_file.clone())) {
            Some((sup, run)) => (Some(sup), Some(run)),
            None => (None, None),
        };
        let core = EngineCore::new(session, sup);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(Driver::new(core, run, Arc::new(dialer), token, ev_tx, dropped.clone()).run(rx));
        Ok((Engine { tx, dropped }, ev_rx))
    }

    /// Events dropped because the application did not read them: the channel
    /// ([`EVENT_CHANNEL`]) and the engine's backlog behind it ([`BACKLOG`], quality reports
    /// dropped first) were full. 0 in an application that keeps reading.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    async fn call(&self, f: impl FnOnce(&mut Session, Instant, CmdId) + Send + 'static) -> Reply {
        let (tx, rx) = oneshot::channel();
        self.tx.send(DriverCmd::Call(Box::new(f), tx)).await.map_err(|_| EngineError::Destroyed)?;
        rx.await.map_err(|_| EngineError::Destroyed)?
    }

    /// Logs in to `room_id` (created if it does not exist). Returns once logged in, or with
    /// the reason it never will be (bad IDs, token refused, network gone for longer than the
    /// reconnect policy allows). While the server is unreachable it keeps trying; wrap it in
    /// a timeout if you want to stop waiting (the login carries on in the background).
    pub async fn login_room(&self, room_id: &str, user: UserInfo, config: RoomConfig) -> Result<(), EngineError> {
        let room_id = room_id.to_string();
        self.call(move |s, now, cmd| s.login(now, cmd, room_id, user, config.token, config.is_user_status_notify))
            .await?;
        Ok(())
    }

    /// Leaves the room; the others see the user leave at once.
    pub async fn logout_room(&self) -> Result<(), EngineError> {
        self.call(|s, now, cmd| s.logout(now, cmd)).await.map(|_| ())
    }

    /// Publishes `stream_id` on `channel`. Returns once the server accepted it (Publishing).
    pub async fn start_publishing_stream(&self, stream_id: &str, channel: PublishChannel) -> Result<(), EngineError> {
        self.start_publishing_stream_with_extra_info(stream_id, channel, "").await
    }

    /// Like [`Engine::start_publishing_stream`], with extra info the players see.
    pub async fn start_publishing_stream_with_extra_info(
        &self,
        stream_id: &str,
        channel: PublishChannel,
        extra_info: &str,
    ) -> Result<(), EngineError> {
        let (id, extra) = (stream_id.to_string(), extra_info.to_string());
        self.call(move |s, _, cmd| s.publish(cmd, channel, id, extra)).await.map(|_| ())
    }

    /// Stops publishing on `channel`.
    pub async fn stop_publishing_stream(&self, channel: PublishChannel) -> Result<(), EngineError> {
        self.call(move |s, _, cmd| s.stop_publish(cmd, channel)).await.map(|_| ())
    }

    /// Plays `stream_id`. Returns once Playing, or once the server is waiting for the stream to
    /// be published (PlayRequesting with 1004025; Playing follows when it appears).
    pub async fn start_playing_stream(&self, stream_id: &str) -> Result<(), EngineError> {
        let id = stream_id.to_string();
        self.call(move |s, _, cmd| s.play(cmd, id)).await.map(|_| ())
    }

    /// Stops playing `stream_id`.
    pub async fn stop_playing_stream(&self, stream_id: &str) -> Result<(), EngineError> {
        let id = stream_id.to_string();
        self.call(move |s, _, cmd| s.stop_play(cmd, &id)).await.map(|_| ())
    }

    /// Sets one key of the room's extra info; the others get [`EngineEvent::RoomExtraInfoUpdate`].
    pub async fn set_room_extra_info(&self, key: &str, value: &str) -> Result<(), EngineError> {
        let (k, v) = (key.to_string(), value.to_string());
        self.call(move |s, _, cmd| s.set_extra_info(cmd, k, v)).await.map(|_| ())
    }

    /// Sends a text (<= 1 KB, rate-limited) to everyone else in the room; returns its ID.
    pub async fn send_broadcast_message(&self, message: &str) -> Result<u64, EngineError> {
        let m = message.to_string();
        self.call(move |s, _, cmd| s.broadcast(cmd, m)).await
    }

    /// Rings members of the room: `callees` by user ID (empty: every other member that can
    /// answer), together or in turn. Returns the call's ID once the server placed it; its
    /// course follows as [`EngineEvent::CallStateUpdate`] (ringing, not answered, answered,
    /// ended with the reason).
    pub async fn start_call(&self, callees: &[&str], options: CallOptions) -> Result<u64, EngineError> {
        let callees: Vec<String> = callees.iter().map(|c| c.to_string()).collect();
        self.call(move |s, _, cmd| s.call(cmd, callees, options.order, options.ring_secs)).await
    }

    /// Answers a call that rings here ([`EngineEvent::CallIncoming`]).
    pub async fn answer_call(&self, call_id: u64) -> Result<(), EngineError> {
        self.call(move |s, _, cmd| s.call_step(cmd, call_id, CallStep::Answer)).await.map(|_| ())
    }

    /// Declines a call that rings here.
    pub async fn decline_call(&self, call_id: u64) -> Result<(), EngineError> {
        self.call(move |s, _, cmd| s.call_step(cmd, call_id, CallStep::Decline)).await.map(|_| ())
    }

    /// Hangs up: cancels a call this engine placed that still rings, or ends an answered one.
    pub async fn hang_up_call(&self, call_id: u64) -> Result<(), EngineError> {
        self.call(move |s, _, cmd| s.call_step(cmd, call_id, CallStep::HangUp)).await.map(|_| ())
    }

    /// Asks door station `user_id` to open its door. Returns once it confirmed; otherwise
    /// [`EngineError::Rejected`] with DOOR_FORBIDDEN, DOOR_NOT_A_DOOR, DOOR_OFFLINE,
    /// DOOR_RELAY_FAULT, DOOR_REFUSED or DOOR_NO_ANSWER.
    pub async fn open_door(&self, user_id: &str) -> Result<(), EngineError> {
        let u = user_id.to_string();
        self.call(move |s, _, cmd| s.open_door(cmd, u)).await.map(|_| ())
    }

    /// A door station answers [`EngineEvent::DoorRequest`] `request_id`: opened, or the code
    /// and reason it did not.
    pub async fn answer_door(
        &self,
        request_id: u64,
        result: Result<(), (ErrorCode, String)>,
    ) -> Result<(), EngineError> {
        self.call(move |s, _, cmd| s.answer_door(cmd, request_id, result)).await.map(|_| ())
    }

    /// Replaces the token (after [`EngineEvent::RoomTokenWillExpire`]).
    pub async fn renew_token(&self, token: &str) -> Result<(), EngineError> {
        let t = token.to_string();
        self.call(move |s, _, cmd| s.renew_token(cmd, t)).await.map(|_| ())
    }

    /// Makes the encoder of published stream `stream_id` post an error, as a failing
    /// hardware encoder would, to exercise recovery. False if the stream has no running
    /// publish pipeline. A test hook (feature `test-hooks`): it goes through the engine core
    /// and the media runner like every media command.
    #[cfg(feature = "test-hooks")]
    pub async fn inject_media_fault(&self, stream_id: &str) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(DriverCmd::Fault(stream_id.to_string(), tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    async fn control(&self, c: Control) -> Result<(), EngineError> {
        self.tx.send(DriverCmd::Control(c)).await.map_err(|_| EngineError::Destroyed)
    }

    /// Mutes (true) or unmutes the microphone of every published stream, now and for
    /// streams published later. Muted audio keeps flowing as silence, so players see no
    /// stall and the stream's timing is kept; the room is told
    /// ([`EngineEvent::RemoteMicStateUpdate`] `Off` at the players).
    pub async fn mute_microphone(&self, mute: bool) -> Result<(), EngineError> {
        self.control(Control::Microphone(!mute)).await
    }

    /// Switches the camera of every published stream on or off, now and for streams
    /// published later, without renegotiating: off, no frame is encoded or sent (the
    /// players get [`EngineEvent::RemoteCameraStateUpdate`] `Off`); on, the encoder starts
    /// with a keyframe. A stream published without a camera (`VideoSource::None`) stays
    /// audio only.
    pub async fn enable_camera(&self, on: bool) -> Result<(), EngineError> {
        self.control(Control::Camera(on)).await
    }

    /// Mutes (true) or unmutes the speaker: every played stream's audio, now and later.
    pub async fn mute_speaker(&self, mute: bool) -> Result<(), EngineError> {
        self.control(Control::Speaker(!mute)).await
    }

    /// The volume of every played stream, percent (0..=200, 100 as received); a stream's
    /// own volume ([`Engine::set_play_volume`]) wins.
    pub async fn set_all_play_stream_volume(&self, volume: u32) -> Result<(), EngineError> {
        self.control(Control::Volume(volume)).await
    }

    /// The volume of one played stream, percent (0..=200); kept for a later play of it.
    pub async fn set_play_volume(&self, stream_id: &str, volume: u32) -> Result<(), EngineError> {
        self.control(Control::PlayVolume { stream: stream_id.to_string(), volume }).await
    }

    /// Stops (true) or resumes playing one stream's audio, without stopping the stream.
    pub async fn mute_play_stream_audio(&self, stream_id: &str, mute: bool) -> Result<(), EngineError> {
        self.control(Control::PlayAudio { stream: stream_id.to_string(), on: !mute }).await
    }

    /// Stops (true) or resumes decoding one played stream's video: muted, its packets are
    /// dropped before the decoder (no CPU spent on it); resumed, a keyframe is asked for.
    pub async fn mute_play_stream_video(&self, stream_id: &str, mute: bool) -> Result<(), EngineError> {
        self.control(Control::PlayVideo { stream: stream_id.to_string(), on: !mute }).await
    }

    /// Shows the local camera's preview: a tile of the grid (`Layout::Grid`), or the single
    /// layout's display while it plays nothing (a real display sink). The picture is the one
    /// the encoder gets (`rotate`, `flip` applied).
    pub async fn start_preview(&self) -> Result<(), EngineError> {
        self.control(Control::Preview(true)).await
    }

    /// Hides the local preview.
    pub async fn stop_preview(&self) -> Result<(), EngineError> {
        self.control(Control::Preview(false)).await
    }

    /// Starts [`EngineEvent::CapturedSoundLevelUpdate`] and
    /// [`EngineEvent::RemoteSoundLevelUpdate`] every `interval_ms` (at least 100).
    pub async fn start_sound_level_monitor(&self, interval_ms: u64) -> Result<(), EngineError> {
        self.control(Control::SoundLevel(Some(Duration::from_millis(interval_ms)))).await
    }

    /// Stops the sound level events.
    pub async fn stop_sound_level_monitor(&self) -> Result<(), EngineError> {
        self.control(Control::SoundLevel(None)).await
    }

    /// Frames the kiosk grid has composed so far (`Layout::Grid` with something to show),
    /// or `None` when there is no grid. A test hook (feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    pub async fn grid_frames(&self) -> Option<u64> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(DriverCmd::GridFrames(tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// What the play pipeline of `stream` counted so far (frames decoded and rendered,
    /// audio buffers decoded, the picture's size), or `None` when it has none: for timing
    /// what the quality events report only every 3 s (tests, benchmarks, diagnostics).
    pub async fn play_counts(&self, stream_id: &str) -> Option<super::media::PlayCounts> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(DriverCmd::PlayCounts(stream_id.to_string(), tx)).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Logs out (waiting for the server's confirmation, at most ~2 s) and stops the engine,
    /// so a process that exits right after leaves no ghost user behind.
    pub async fn destroy(self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(DriverCmd::Destroy(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

enum Incoming {
    /// Connected, by this route.
    Up(Option<crate::dial::Route>),
    Msg(ServerMsg),
    /// The connection ended or never opened; with the code of a certificate failure.
    Down(Option<crate::proto::ErrorCode>),
}

struct Driver {
    core: EngineCore,
    /// Carries out the core's media commands (GStreamer, connections); `None`: signalling only.
    run: Option<MediaRunner>,
    dialer: std::sync::Arc<Dialer>,
    profile_token: Option<String>,
    events: mpsc::Sender<EngineEvent>,
    queue: Backlog,
    replies: HashMap<CmdId, oneshot::Sender<Reply>>,
    next_cmd: CmdId,
    conn: Option<(u64, mpsc::Sender<ClientMsg>, tokio::task::JoinHandle<()>)>,
    in_tx: mpsc::Sender<(u64, Incoming)>,
    in_rx: mpsc::Receiver<(u64, Incoming)>,
    destroying: Option<oneshot::Sender<()>>,
}

/// The meters of no pipeline (an engine without media).
struct NoMeters;

impl super::media::Meters for NoMeters {
    fn publisher(&self, _: &str) -> Option<super::media::PublishCounts> {
        None
    }
    fn encoder_kbps(&self, _: &str) -> Option<u32> {
        None
    }
    fn player(&self, _: &str) -> Option<(super::media::PlayCounts, Option<Instant>)> {
        None
    }
}

impl Driver {
    fn new(
        core: EngineCore,
        run: Option<MediaRunner>,
        dialer: std::sync::Arc<Dialer>,
        profile_token: Option<String>,
        events: mpsc::Sender<EngineEvent>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        let (in_tx, in_rx) = mpsc::channel(1024);
        Driver {
            core,
            run,
            dialer,
            profile_token,
            events,
            queue: Backlog::new(BACKLOG, dropped),
            replies: HashMap::new(),
            next_cmd: 1,
            conn: None,
            in_tx,
            in_rx,
            destroying: None,
        }
    }

    /// The task: moves inputs into the core (calls, frames, notes, time) and carries out
    /// what comes out. Nothing here decides anything.
    async fn run(mut self, mut calls: mpsc::Receiver<DriverCmd>) {
        let mut calls_open = true;
        loop {
            if self.drain() {
                break;
            }
            let deadline = self.core.poll_timeout();
            let events = self.events.clone();
            tokio::select! {
                cmd = calls.recv(), if calls_open && self.destroying.is_none() => match cmd {
                    Some(DriverCmd::Call(f, reply)) => {
                        let cmd = self.next_cmd;
                        self.next_cmd += 1;
                        self.replies.insert(cmd, reply);
                        let token = self.profile_token.clone();
                        // The profile's token applies unless the call carries its own.
                        let f: Call = Box::new(move |s, now, cmd| {
                            s.set_default_token(token);
                            f(s, now, cmd)
                        });
                        self.core.handle(Instant::now(), Input::Call(f, cmd));
                    }
                    #[cfg(feature = "test-hooks")]
                    Some(DriverCmd::Fault(stream, reply)) => {
                        let _ = reply.send(self.core.inject_fault(&stream));
                    }
                    Some(DriverCmd::PlayCounts(stream, reply)) => {
                        use super::media::Meters;
                        let _ = reply.send(self.run.as_ref().and_then(|r| r.player(&stream)).map(|(c, _)| c));
                    }
                    #[cfg(feature = "test-hooks")]
                    Some(DriverCmd::GridFrames(reply)) => {
                        let _ = reply.send(self.run.as_ref().and_then(|r| r.grid_frames()));
                    }
                    Some(DriverCmd::Control(c)) => self.core.handle(Instant::now(), Input::Control(c)),
                    Some(DriverCmd::Destroy(reply)) => self.destroy(reply),
                    None => {
                        // The Engine was dropped without destroy(): log out all the same.
                        calls_open = false;
                        let (tx, _rx) = oneshot::channel();
                        self.destroy(tx);
                    }
                },
                Some((epoch, inc)) = self.in_rx.recv() => {
                    let input = match inc {
                        Incoming::Up(route) => Input::Connected { epoch, route, unix_secs: crate::auth::unix_now() },
                        Incoming::Msg(msg) => Input::Message { epoch, msg },
                        Incoming::Down(refused) => {
                            if self.conn.as_ref().is_some_and(|c| c.0 == epoch) {
                                self.conn = None;
                            }
                            Input::Disconnected { epoch, refused }
                        }
                    };
                    self.core.handle(Instant::now(), input);
                }
                _ = sleep_until(deadline) => match &self.run {
                    Some(run) => self.core.handle_timeout(Instant::now(), run),
                    None => self.core.handle_timeout(Instant::now(), &NoMeters),
                },
                Some(note) = next_note(&mut self.run) => self.core.handle(Instant::now(), Input::Note(note)),
                permit = events.reserve(), if !self.queue.is_empty() => match permit {
                    Ok(p) => {
                        if let Some(e) = self.queue.pop_front() {
                            p.send(e);
                        }
                    }
                    Err(_) => self.queue.clear(), // nobody listens any more
                },
            }
        }
    }

    fn destroy(&mut self, reply: oneshot::Sender<()>) {
        self.destroying = Some(reply);
        self.core.handle(Instant::now(), Input::Destroy(DESTROY_CMD));
    }

    /// Carries out the core's outputs. Returns true when the engine is finished.
    fn drain(&mut self) -> bool {
        let now = Instant::now();
        while let Some(o) = self.core.poll_output(now) {
            match o {
                CoreOutput::Connect { epoch } => self.open(epoch),
                CoreOutput::Send { epoch, msg } => {
                    if let Some((g, tx, _)) = &self.conn
                        && *g == epoch
                        && tx.try_send(msg).is_err()
                    {
                        tracing::warn!("signalling write queue full; reconnecting");
                        self.conn = None;
                        self.core.handle(Instant::now(), Input::Disconnected { epoch, refused: None });
                    }
                }
                CoreOutput::Close { epoch } => {
                    if self.conn.as_ref().is_some_and(|c| c.0 == epoch) {
                        // Dropping the sender lets the writer flush what is queued, then close.
                        self.conn = None;
                    }
                }
                CoreOutput::Event(e) => self.emit(e),
                CoreOutput::Done { cmd, result } => {
                    if let Some(r) = self.replies.remove(&cmd) {
                        let _ = r.send(result);
                    }
                }
                CoreOutput::Media(cmd) => {
                    if let Some(note) = self.run.as_mut().and_then(|r| r.execute(cmd)) {
                        self.core.handle(now, Input::Note(note));
                    }
                }
                CoreOutput::Finished => {
                    self.finish();
                    return true;
                }
            }
        }
        false
    }

    /// Lets the connection flush its logout, then answers `destroy`.
    fn finish(&mut self) {
        let conn = self.conn.take();
        let reply = self.destroying.take();
        tokio::spawn(async move {
            if let Some((_, tx, task)) = conn {
                drop(tx);
                let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
            }
            if let Some(r) = reply {
                let _ = r.send(());
            }
        });
    }

    fn emit(&mut self, e: EngineEvent) {
        if !self.queue.is_empty() {
            self.queue.push(e);
        } else if let Err(mpsc::error::TrySendError::Full(e)) = self.events.try_send(e) {
            self.queue.push(e);
        }
    }

    fn open(&mut self, epoch: u64) {
        let (tx, rx) = mpsc::channel(256);
        let task = tokio::spawn(connection(self.dialer.clone(), epoch, rx, self.in_tx.clone()));
        self.conn = Some((epoch, tx, task));
    }
}

async fn next_note(run: &mut Option<MediaRunner>) -> Option<Note> {
    match run {
        Some(r) => r.next_note().await,
        None => std::future::pending().await,
    }
}

/// One WebSocket connection: connects, then pumps messages both ways until either side ends.
async fn connection(
    dialer: std::sync::Arc<Dialer>,
    epoch: u64,
    mut out: mpsc::Receiver<ClientMsg>,
    into: mpsc::Sender<(u64, Incoming)>,
) {
    let (ws, route) = match dialer.websocket(CONNECT_TIMEOUT).await {
        Ok(connected) => connected,
        Err(e) => {
            match e.code() {
                Some(code) => {
                    tracing::warn!(url = %dialer.url(), error_code = code.0, error = %e, "the server's certificate was refused")
                }
                None => tracing::debug!(url = %dialer.url(), error = %e, "cannot connect to the server"),
            }
            let _ = into.send((epoch, Incoming::Down(e.code()))).await;
            return;
        }
    };
    if into.send((epoch, Incoming::Up(route))).await.is_err() {
        return;
    }
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            m = out.recv() => match m {
                Some(msg) => {
                    let text = serde_json::to_string(&msg).unwrap_or_default();
                    if sink.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                None => {
                    let _ = sink.send(Message::Close(None)).await;
                    break;
                }
            },
            f = stream.next() => match f {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ServerMsg>(t.as_str()) {
                    Ok(m) => {
                        if into.send((epoch, Incoming::Msg(m))).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "ignoring a server message this version does not know"),
                },
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = into.send((epoch, Incoming::Down(None))).await;
}
