//! `callbox device`: the supervisor that runs on the board. It owns the call controller,
//! GPIO, the chime, the control socket and systemd notifications, and drives the engine
//! through the [`worker`]. One task, one `select!` loop; everything it waits for arrives on
//! a bounded channel or is a deadline.
//!
//! Start-up order: config (exit 78 when invalid), engine and media, GPIO (a failure is
//! logged and shown, the daemon runs on), control socket, then READY=1, before the network
//! is up. The room login runs in the background and is retried for ever.

mod events;
pub mod worker;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};
use tokio::time::sleep_until;

use super::buttons::ButtonDetector;
use super::call::{Action, Button, CallController, CallState, Input, LedMode, Press};
use super::config::DeviceConfig;
use super::control::{self, CallAction, Pending, Request, Response};
use super::gpio::{self, Edge, Output};
use super::outputs::Outputs;
use super::status::{GpioStatus, RoomStatus, Status};
use super::systemd::{Notifier, watchdog_interval};
use crate::engine::{Engine, EngineEvent, EngineProfile, ReconnectPolicy};
use crate::media::AudioSink;
use worker::{Done, Op, Target};

/// A ring chime is repeated this often while ringing.
pub const CHIME_EVERY: Duration = Duration::from_secs(3);
/// Re-login back-off after a refused login or a kick: 5 s, 10 s, 20 s, 40 s, then every 60 s.
const RELOGIN: ReconnectPolicy = ReconnectPolicy::doubling(Duration::from_secs(5), Duration::from_secs(60));
/// How long shutdown may take before the process exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(4);

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is unusable (exit code 78).
    #[error("{0}")]
    Config(String),
    /// The control socket could not be bound.
    #[error("{0}")]
    Control(#[from] control::ControlError),
    /// The engine refused the profile.
    #[error("engine: {0}")]
    Engine(#[from] crate::engine::EngineError),
    /// GStreamer did not start.
    #[error("media: {0}")]
    Media(#[from] crate::media::MediaError),
}

/// Things the daemon's helpers report back.
enum Note {
    /// A chime finished (or failed).
    Chimed(Result<(), String>),
    /// A token renewal: the new expiry, or why it failed.
    Token(Result<u64, super::credentials::FetchError>),
}

/// See the module docs.
pub struct Daemon {
    cfg: DeviceConfig,
    config_path: Option<PathBuf>,
    /// `gpio press` requests answered once their press has been handled.
    press_replies: Vec<(Instant, oneshot::Sender<Response>)>,
    started: Instant,
    engine: Arc<Engine>,
    events: mpsc::Receiver<EngineEvent>,
    ops: mpsc::Sender<Op>,
    done: mpsc::Receiver<Done>,
    worker: tokio::task::JoinHandle<()>,
    controller: CallController,
    detectors: HashMap<Button, ButtonDetector>,
    edges_tx: mpsc::Sender<Edge>,
    edges: mpsc::Receiver<Edge>,
    outputs: Outputs,
    control: mpsc::Receiver<Pending>,
    notes_tx: mpsc::Sender<Note>,
    notes: mpsc::Receiver<Note>,
    /// Asks the renewal task for a new token now (the server says the current one ends soon).
    renew_now: Arc<tokio::sync::Notify>,
    notifier: Notifier,
    watchdog: Option<(Duration, Instant)>,
    status: Status,
    last_summary: String,
    audio_sink: AudioSink,
    chime_at: Option<Instant>,
    login_pending: bool,
    login_failures: u32,
    relogin_at: Option<Instant>,
    socket: PathBuf,
    /// Home Assistant over MQTT (`[mqtt]`), and the commands it sends.
    mqtt: Option<(super::mqtt::Mqtt, mpsc::Receiver<super::mqtt::Command>)>,
}

/// What `auto` sources resolve to on this board (GStreamer's device monitor), logged: the
/// journal says which camera and microphone the daemon took, or that it found none: no
/// camera publishes audio only, no microphone sends a test tone.
async fn auto_devices(cfg: &DeviceConfig) -> crate::media::devices::AutoDevices {
    use crate::media::devices::{AutoDevices, probe};
    let (video, audio) = (cfg.video_source() == "auto", cfg.audio.source == "auto");
    if !video && !audio {
        return AutoDevices::none();
    }
    let found = tokio::task::spawn_blocking(probe).await.unwrap_or_default();
    let auto = AutoDevices::choose(&found);
    for (wanted, what, chosen, fallback) in
        [(video, "camera", &auto.camera, "audio only"), (audio, "microphone", &auto.microphone, "a test tone")]
    {
        match chosen {
            Some(f) if wanted => tracing::info!(
                callbox_event = "device_chosen",
                "{what}: auto chose {} ({}) of {} capture device(s)",
                f.device,
                f.name,
                found.len()
            ),
            None if wanted => tracing::warn!(
                callbox_event = "device_chosen",
                "{what}: auto found none (GStreamer lists {} capture device(s)); sending {fallback}",
                found.len()
            ),
            _ => {}
        }
    }
    auto
}

impl Daemon {
    /// Starts everything up to READY=1 (see the module docs).
    pub async fn start(cfg: DeviceConfig, notifier: Notifier) -> Result<Daemon, StartError> {
        // Load GStreamer's plugin registry now (seconds on a first boot), not at the first call.
        crate::media::init()?;
        let auto = auto_devices(&cfg).await;
        let media = cfg.media_config(&auto).map_err(|e| StartError::Config(e.to_string()))?;
        let mode = cfg.call_mode().map_err(|e| StartError::Config(e.to_string()))?;
        let callees = cfg.callees().map_err(|e| StartError::Config(e.to_string()))?;
        let configured = crate::media::encoder::Encoder::from_element(&media.encoder);
        match crate::media::encoder::choose(configured, &[], crate::media::has_element) {
            Some(c) => tracing::info!(
                callbox_event = "encoder",
                encoder = %c.encoder,
                hardware = c.encoder.is_hardware(),
                "H.264 encoder will be {} ({})",
                c.encoder,
                c.reason
            ),
            None => tracing::error!(
                callbox_event = "encoder",
                "no H.264 encoder element: calls will fail; run `callbox doctor`"
            ),
        }
        for w in cfg.warnings() {
            tracing::warn!(callbox_event = "config_warning", "{w}");
        }
        let credentials = Arc::new(cfg.credentials().map_err(|e| StartError::Config(e.to_string()))?);
        let auth = credentials.engine_auth();
        let mut profile = EngineProfile::new(cfg.server.app_id, auth, cfg.server.url.clone()).with_media(media.clone());
        profile.ca_file = cfg.server.ca_file.clone().map(Into::into);
        profile.reconnect = ReconnectPolicy::forever();
        if let Some(m) = &mut profile.media
            && !cfg.media.bind.is_empty()
        {
            m.bind = cfg.media.bind.parse().ok();
        }
        let (engine, events) = Engine::create(profile)?;
        let engine = Arc::new(engine);
        let (ops, ops_rx) = mpsc::channel(64);
        let (done_tx, done) = mpsc::channel(64);
        let (token_exp, token_exp_rx) = tokio::sync::watch::channel(0u64);
        let target = Target {
            room_id: cfg.room.room_id.clone(),
            user: cfg.member(),
            stream_id: cfg.stream_id(),
            credentials: credentials.fetches().then(|| credentials.clone()),
            token_exp,
        };
        let worker = tokio::spawn(worker::run(engine.clone(), target, ops_rx, done_tx));
        let (notes_tx, notes) = mpsc::channel(16);
        let renew_now = Arc::new(tokio::sync::Notify::new());
        if credentials.fetches() {
            let (told_tx, mut told) = mpsc::channel(4);
            tokio::spawn(worker::renew(engine.clone(), credentials.clone(), token_exp_rx, renew_now.clone(), told_tx));
            let notes_tx = notes_tx.clone();
            tokio::spawn(async move {
                while let Some(r) = told.recv().await {
                    if notes_tx.send(Note::Token(r)).await.is_err() {
                        return;
                    }
                }
            });
        }

        let (edges_tx, edges) = mpsc::channel(64);
        let mut gpio_error = None;
        let backend = match gpio::open(&cfg.gpio, edges_tx.clone()) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!(callbox_event = "gpio_error", error = %e, "GPIO unavailable; buttons and LEDs will not work (calls still do)");
                gpio_error = Some(e.to_string());
                None
            }
        };
        let mut outputs = Outputs::new(backend, Duration::from_millis(cfg.gpio.door_pulse_ms));
        if gpio_error.is_some() {
            outputs.set(Instant::now(), Output::Fault, LedMode::On);
        }
        let debounce = Duration::from_millis(cfg.gpio.debounce_ms);
        let long = Duration::from_millis(cfg.gpio.long_press_ms);
        let detectors = Button::ALL.into_iter().map(|b| (b, ButtonDetector::new(debounce, long))).collect();

        let socket = cfg.control.socket_path();
        let listener = control::bind(&socket).await?;
        let (control_tx, control) = mpsc::channel(16);
        tokio::spawn(control::serve(listener, control_tx));

        let status = Status {
            version: crate::BUILD.into(),
            room: RoomStatus {
                room_id: cfg.room.room_id.clone(),
                user_id: cfg.room.user_id.clone(),
                state: crate::engine::RoomState::Disconnected,
                reason: "Logining".into(),
                error_code: 0,
            },
            call: "idle".into(),
            camera: if media.video == crate::media::VideoSource::None { "none" } else { "on" }.into(),
            speaker: true,
            volume: cfg.audio.volume,
            gpio: GpioStatus { backend: outputs.backend().into(), outputs: outputs.modes(), error: gpio_error },
            credentials: super::status::CredentialStatus { source: credentials.kind().into(), ..Default::default() },
            ..Default::default()
        };
        let mqtt = match &cfg.mqtt {
            None => None,
            Some(m) => {
                let device = super::mqtt::HaDevice {
                    discovery_prefix: m.discovery_prefix.clone(),
                    topic_prefix: if m.topic_prefix.is_empty() {
                        format!("callbox/{}", cfg.room.user_id)
                    } else {
                        m.topic_prefix.clone()
                    },
                    user_id: cfg.room.user_id.clone(),
                    name: if cfg.room.user_name.is_empty() {
                        cfg.room.user_id.clone()
                    } else {
                        cfg.room.user_name.clone()
                    },
                    door: cfg.has_door(),
                    version: crate::BUILD.into(),
                };
                Some(super::mqtt::Mqtt::spawn(m, device).map_err(StartError::Config)?)
            }
        };
        let now = Instant::now();
        let d = Daemon {
            mqtt,
            controller: CallController::new(mode, callees)
                .with_own_door(cfg.has_door())
                .with_privacy(cfg.camera_in_calls_only()),
            started: now,
            engine,
            events,
            ops,
            done,
            worker,
            detectors,
            edges_tx,
            edges,
            outputs,
            control,
            notes_tx,
            notes,
            renew_now,
            watchdog: watchdog_interval().map(|i| (i, now)),
            notifier,
            status,
            last_summary: String::new(),
            audio_sink: media.audio_sink.clone(),
            chime_at: None,
            login_pending: false,
            login_failures: 0,
            relogin_at: None,
            socket,
            config_path: None,
            press_replies: Vec::new(),
            cfg,
        };
        Ok(d)
    }

    /// Sends READY=1, logs in and runs until SIGTERM or SIGINT; then leaves the call, logs
    /// out and returns.
    pub async fn run(mut self) {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        self.notifier.ready();
        tracing::info!(
            callbox_event = "started",
            version = crate::BUILD,
            room_id = %self.cfg.room.room_id,
            user_id = %self.cfg.room.user_id,
            server = %self.cfg.server.url,
            gpio = self.outputs.backend(),
            control = %self.socket.display(),
            "callbox device started; logging in to room {} as {}",
            self.cfg.room.room_id,
            self.cfg.room.user_id
        );
        if self.status.camera == "none" {
            tracing::info!(callbox_event = "audio_only", "no camera: this station publishes audio only");
        }
        self.login();
        if self.cfg.audio.volume != 100 {
            let _ = self.ops.try_send(Op::Volume(self.cfg.audio.volume));
        }
        // The privacy rule's first word (the camera off outside calls).
        self.apply_actions();
        self.publish_status();
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                Some(e) = self.events.recv() => self.on_engine_event(e),
                Some(d) = self.done.recv() => self.on_done(d),
                Some(edge) = self.edges.recv() => self.on_edge(edge),
                Some((req, reply)) = self.control.recv() => self.on_request(req, reply),
                Some(n) = self.notes.recv() => self.on_note(n),
                Some(c) = async { match &mut self.mqtt { Some((_, rx)) => rx.recv().await, None => std::future::pending().await } } => self.on_mqtt(c),
                _ = sleep_until(deadline.into()) => self.on_timeout(Instant::now()),
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => self.on_reload(),
            }
            self.apply_actions();
            self.publish_status();
        }
        self.shutdown().await;
    }

    /// SIGHUP: the file is read and checked again. The live keys are applied (see
    /// [`DeviceConfig::reload_plan`]), what needs a restart is named, and a bad file changes
    /// nothing.
    fn on_reload(&mut self) {
        let Some(path) = self.config_path.clone() else {
            tracing::info!(callbox_event = "reload", "SIGHUP: started without a config file; nothing to re-read");
            return;
        };
        match DeviceConfig::load(Some(&path), &crate::config_file::callbox_env()) {
            Err(e) => tracing::warn!(
                callbox_event = "reload",
                "SIGHUP: {}: {e}; the running configuration stays",
                path.display()
            ),
            Ok(new) => {
                for w in new.warnings() {
                    tracing::warn!(callbox_event = "config_warning", "{w}");
                }
                let plan = self.cfg.reload_plan(&new);
                if plan.live.is_empty() && plan.restart.is_empty() {
                    tracing::info!(callbox_event = "reload", "SIGHUP: {} unchanged", path.display());
                }
                if !plan.live.is_empty() {
                    self.apply_live(&new);
                    tracing::info!(callbox_event = "reload", "SIGHUP: applied {}", plan.live.join(", "));
                }
                if !plan.restart.is_empty() {
                    tracing::warn!(
                        callbox_event = "reload",
                        "SIGHUP: {} changed in {}; it applies after a restart (systemctl restart callbox)",
                        plan.restart.join(", "),
                        path.display()
                    );
                }
            }
        }
    }

    /// Applies a reloaded file's live keys: the call mode and ring-out from the next call,
    /// button timing from the next press, the door pulse from the next opening, the level
    /// of the next log line.
    fn apply_live(&mut self, new: &DeviceConfig) {
        let _ = self.cfg.take_live(new);
        if let (Ok(mode), Ok(callees)) = (self.cfg.call_mode(), self.cfg.callees()) {
            self.controller.reconfigure(mode, callees);
        }
        let (debounce, long) =
            (Duration::from_millis(self.cfg.gpio.debounce_ms), Duration::from_millis(self.cfg.gpio.long_press_ms));
        for d in self.detectors.values_mut() {
            *d = ButtonDetector::new(debounce, long);
        }
        self.outputs.set_door_pulse_length(Duration::from_millis(self.cfg.gpio.door_pulse_ms));
        self.cfg.log.apply();
    }

    /// The file the configuration came from, re-read on SIGHUP.
    pub fn with_config_path(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        [
            self.controller.poll_timeout(),
            self.outputs.poll_timeout(),
            self.chime_at,
            self.relogin_at,
            self.watchdog.map(|(i, last)| last + i),
            self.press_replies.iter().map(|(at, _)| *at).min(),
        ]
        .into_iter()
        .flatten()
        .chain(self.detectors.values().filter_map(|d| d.poll_timeout()))
        .min()
        .unwrap_or(far)
    }

    fn on_timeout(&mut self, now: Instant) {
        if self.press_replies.iter().any(|(at, _)| *at <= now) {
            self.apply_actions();
            let snapshot = self.snapshot();
            let (due, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.press_replies).into_iter().partition(|(at, _)| *at <= now);
            self.press_replies = later;
            for (_, reply) in due {
                let _ = reply.send(Response::ok(snapshot.clone()));
            }
        }
        self.controller.handle_timeout(now);
        self.outputs.handle_timeout(now);
        let held: Vec<(Button, Press)> =
            self.detectors.iter_mut().filter_map(|(b, d)| d.handle_timeout(now).map(|p| (*b, p))).collect();
        for (b, p) in held {
            self.button(b, p);
        }
        if self.chime_at.is_some_and(|t| t <= now) {
            self.chime_at = Some(now + CHIME_EVERY);
            let (sink, tx) = (self.audio_sink.clone(), self.notes_tx.clone());
            tokio::spawn(async move {
                let r = crate::media::chime::play(&sink).await.map_err(|e| e.to_string());
                let _ = tx.send(Note::Chimed(r)).await;
            });
        }
        if self.relogin_at.is_some_and(|t| t <= now) {
            self.relogin_at = None;
            self.login();
        }
        if let Some((i, last)) = self.watchdog
            && last + i <= now
        {
            self.notifier.watchdog();
            self.watchdog = Some((i, now));
        }
    }

    fn on_edge(&mut self, edge: Edge) {
        let press = self.detectors.get_mut(&edge.button).and_then(|d| d.handle_level(edge.at, edge.pressed));
        if let Some(p) = press {
            self.button(edge.button, p);
        }
    }

    fn button(&mut self, b: Button, p: Press) {
        tracing::info!(callbox_event = "button", button = gpio::button_key(b), press = ?p, "button {} ({p:?} press)", gpio::button_key(b));
        self.controller.handle(Instant::now(), Input::Button(b, p));
    }

    /// A command from Home Assistant: the same inputs as the buttons (and `callbox call`).
    fn on_mqtt(&mut self, c: super::mqtt::Command) {
        use super::mqtt::Command;
        let input = match c {
            Command::OpenDoor => Input::Button(Button::Door, Press::Short),
            Command::Call => Input::Join,
            Command::HangUp => Input::Leave,
        };
        self.controller.handle(Instant::now(), input);
    }

    fn mqtt(&self, u: super::mqtt::Update) {
        if let Some((m, _)) = &self.mqtt {
            m.update(u);
        }
    }

    fn on_note(&mut self, n: Note) {
        match n {
            Note::Chimed(Ok(())) => self.status.chimes += 1,
            Note::Chimed(Err(e)) => {
                tracing::warn!(callbox_event = "chime_failed", error = %e, "ring chime failed: check [audio] sink");
                self.error(0, format!("ring chime failed: {e}"));
            }
            Note::Token(Ok(exp)) => {
                self.status.credentials.expires_at = exp;
                self.status.credentials.renewal_error = None;
            }
            Note::Token(Err(e)) => {
                self.status.credentials.renewal_error = Some(format!("{e} (code {})", e.code.0));
                self.error(e.code.0, format!("token renewal failed: {e}"));
            }
        }
    }

    fn on_request(&mut self, req: Request, reply: oneshot::Sender<Response>) {
        let now = Instant::now();
        let resp = match req {
            Request::Status => None,
            Request::Call { action } => {
                tracing::info!(callbox_event = "control", action = ?action, "control: call {action:?}");
                let input = match action {
                    CallAction::Join => Input::Join,
                    CallAction::Leave => Input::Leave,
                    CallAction::Mute => Input::SetMute(true),
                    CallAction::Unmute => Input::SetMute(false),
                    CallAction::Camera | CallAction::Speaker | CallAction::Volume => {
                        let _ = reply.send(Response::fail("bad_request", "camera, speaker and volume take a value"));
                        return;
                    }
                };
                self.controller.handle(now, input);
                None
            }
            Request::Camera { on } => {
                tracing::info!(callbox_event = "control", "control: camera {}", if on { "on" } else { "off" });
                self.controller.handle(now, Input::SetCamera(on));
                None
            }
            Request::Speaker { on } => {
                tracing::info!(callbox_event = "control", "control: speaker {}", if on { "on" } else { "off" });
                self.controller.handle(now, Input::SetSpeaker(on));
                None
            }
            Request::Volume { percent } if percent > crate::engine::MAX_VOLUME => {
                Some(Response::fail("bad_request", "volume: 0..=200 (percent)"))
            }
            Request::Volume { percent } => {
                tracing::info!(callbox_event = "control", percent, "control: volume {percent}%");
                self.status.volume = percent;
                let _ = self.ops.try_send(Op::Volume(percent));
                None
            }
            Request::GpioPress { button, long } => match self.sim_press(&button, long) {
                Ok(done_at) => {
                    // Answer with the status after the press went through the debouncer and
                    // the call controller, not the one before it.
                    self.press_replies.push((done_at, reply));
                    return;
                }
                Err(r) => Some(*r),
            },
        };
        self.apply_actions();
        let _ = reply.send(resp.unwrap_or_else(|| Response::ok(self.snapshot())));
    }

    /// Presses a simulated button: a press edge now and a release after the hold time, through
    /// the same debouncer as real buttons. Returns when the press will have been handled.
    fn sim_press(&mut self, key: &str, long: bool) -> Result<Instant, Box<Response>> {
        if self.outputs.backend() != gpio::GpioKind::Sim.as_str() {
            return Err(Box::new(Response::fail("gpio_not_simulated", "gpio press needs [gpio] backend = \"sim\"")));
        }
        let Some(button) = gpio::button_by_key(key) else {
            return Err(Box::new(Response::fail(
                "unknown_button",
                format!("{key:?}: buttons are call, leave, mute, door"),
            )));
        };
        let hold = if long {
            Duration::from_millis(self.cfg.gpio.long_press_ms + 100)
        } else {
            Duration::from_millis(self.cfg.gpio.debounce_ms + 50)
        };
        let tx = self.edges_tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(Edge { button, pressed: true, at: Instant::now() }).await;
            tokio::time::sleep(hold).await;
            let _ = tx.send(Edge { button, pressed: false, at: Instant::now() }).await;
        });
        Ok(Instant::now() + hold + Duration::from_millis(self.cfg.gpio.debounce_ms + 100))
    }

    /// Carries out what the call controller decided.
    fn apply_actions(&mut self) {
        let now = Instant::now();
        while let Some(a) = self.controller.poll_action() {
            match a {
                a @ (Action::Login
                | Action::Publish
                | Action::StopPublish
                | Action::Play(_)
                | Action::StopPlay(_)
                | Action::Call(_)
                | Action::Answer(_)
                | Action::Decline(_)
                | Action::HangUp(_)
                | Action::OpenDoor(_)) => self.op(a),
                Action::OpenDoorFor { request_id, from } => {
                    let result = self.pulse_door(now, &format!("on request of {from}"));
                    if result.is_err() {
                        self.status.door_refused += 1;
                    }
                    self.op_door(request_id, result);
                }
                Action::Mute(m) => {
                    tracing::info!(
                        callbox_event = "mute",
                        muted = m,
                        "microphone {}",
                        if m { "muted" } else { "unmuted" }
                    );
                    self.op(Action::Mute(m));
                }
                Action::Camera(on) => {
                    tracing::info!(callbox_event = "camera", on, "camera {}", if on { "on" } else { "off" });
                    if self.status.camera != "none" {
                        self.status.camera = if on { "on" } else { "off" }.into();
                    }
                    self.op(Action::Camera(on));
                }
                Action::Speaker(on) => {
                    tracing::info!(callbox_event = "speaker", on, "speaker {}", if on { "on" } else { "off" });
                    self.status.speaker = on;
                    self.op(Action::Speaker(on));
                }
                Action::Chime(on) => self.chime_at = on.then_some(now),
                Action::Led(Output::Online, LedMode::Off)
                    if self.status.room.state == crate::engine::RoomState::Connecting =>
                {
                    self.outputs.set(now, Output::Online, LedMode::Blink)
                }
                Action::Led(led, mode) => self.outputs.set(now, led, mode),
                Action::DoorPulse => {
                    let _ = self.pulse_door(now, "by the door button");
                }
                Action::State(s) => {
                    self.mqtt(super::mqtt::Update::State(s));
                    if s == CallState::RingingOut {
                        self.mqtt(super::mqtt::Update::Ring);
                    }
                    self.status.call = s.as_str().into();
                    self.status.call_peer = self.controller.peer().map(str::to_string);
                    let peer = self.status.call_peer.clone().unwrap_or_default();
                    tracing::info!(
                        callbox_event = "call_state",
                        state = s.as_str(),
                        peer = %peer,
                        room_id = %self.cfg.room.room_id,
                        "call {}{}",
                        s.as_str(),
                        if peer.is_empty() { String::new() } else { format!(" with {peer}") }
                    );
                }
            }
        }
    }

    /// Pulses the door relay (`why`: who asked): Ok, or the relay's fault.
    fn pulse_door(&mut self, now: Instant, why: &str) -> Result<(), String> {
        let r = self.pulse_door_relay(now, why);
        self.mqtt(super::mqtt::Update::Door(r.clone()));
        r
    }

    fn pulse_door_relay(&mut self, now: Instant, why: &str) -> Result<(), String> {
        match self.outputs.door_pulse(now) {
            Ok(()) => {
                self.status.door_pulses += 1;
                tracing::info!(
                    callbox_event = "door_open",
                    pulse_ms = self.cfg.gpio.door_pulse_ms,
                    "door relay pulsed {why}"
                );
                Ok(())
            }
            Err(e) => {
                let msg = format!("door relay failed {why}: {e}");
                tracing::error!(
                    callbox_event = "door_fault",
                    error_code = crate::proto::ErrorCode::DOOR_RELAY_FAULT.0,
                    "{msg}"
                );
                self.error(crate::proto::ErrorCode::DOOR_RELAY_FAULT.0, msg.clone());
                Err(msg)
            }
        }
    }

    /// Tells the server how door request `request_id` went.
    fn op_door(&mut self, request_id: u64, result: Result<(), String>) {
        let result = result.map_err(|m| (crate::proto::ErrorCode::DOOR_RELAY_FAULT, m));
        if let Err(e) = self.ops.try_send(Op::AnswerDoor(request_id, result)) {
            tracing::error!(callbox_event = "engine_busy", error = %e, "engine call queue full; door answer dropped");
        }
    }

    fn op(&mut self, op: Action) {
        if let Err(e) = self.ops.try_send(Op::Engine(op)) {
            tracing::error!(callbox_event = "engine_busy", error = %e, "engine call queue full; call dropped");
        }
    }

    fn login(&mut self) {
        if !self.login_pending {
            self.login_pending = true;
            self.op(Action::Login);
        }
    }

    fn schedule_relogin(&mut self) {
        if self.login_pending || self.relogin_at.is_some() {
            return;
        }
        self.login_failures += 1;
        let wait = RELOGIN.ceiling(self.login_failures - 1);
        tracing::warn!(callbox_event = "relogin", in_secs = wait.as_secs(), "logging in again in {} s", wait.as_secs());
        self.relogin_at = Some(Instant::now() + wait);
    }

    fn on_done(&mut self, d: Done) {
        if d.op == Action::Login {
            self.login_pending = false;
        }
        if let Action::OpenDoor(door) = &d.op {
            self.status.door_requests += 1;
            let result = d.result.as_ref().map(|_| ()).map_err(|e| e.code());
            self.status.door_last_result = Some(match result {
                Ok(()) => format!("{door}: opened"),
                Err(code) => format!("{door}: {}", code.name()),
            });
            self.controller.handle(Instant::now(), Input::DoorOpened(result));
            if result.is_err() {
                return;
            }
        }
        if let Action::Call(_) = &d.op {
            let placed = d.result.as_ref().map(|id| *id).map_err(|e| e.code());
            if let Ok(id) = placed {
                tracing::info!(callbox_event = "call_placed", call_id = id, "call placed");
            }
            self.controller.handle(Instant::now(), Input::Placed(placed));
            self.apply_actions();
        }
        let Err(e) = d.result else {
            if d.op == Action::Login {
                self.login_failures = 0;
            }
            return;
        };
        let code = e.code();
        let what = match &d.op {
            Action::Login => "login",
            Action::Publish => "publish",
            Action::StopPublish => "stop publish",
            Action::Play(_) => "play",
            Action::StopPlay(_) => "stop play",
            Action::Mute(_) => "mute",
            Action::Call(_) => "call",
            Action::Answer(_) => "answer",
            Action::Decline(_) => "decline",
            Action::HangUp(_) => "hang up",
            Action::OpenDoor(_) => "open door",
            _ => "action",
        };
        let hint = events::hint(code).map(|h| format!("; {h}")).unwrap_or_default();
        tracing::error!(
            callbox_event = "engine_call_failed",
            error_code = code.0,
            room_id = %self.cfg.room.room_id,
            "{what} failed: {e} (code {}){hint}",
            code.0
        );
        self.error(code.0, format!("{what} failed: {e}{hint}"));
        if d.op == Action::Login {
            self.schedule_relogin();
        }
    }

    fn error(&mut self, code: u32, message: String) {
        self.status.push_error(crate::auth::unix_now(), code, message);
    }

    /// The full status for a control request.
    fn snapshot(&mut self) -> Status {
        self.status.uptime_secs = self.started.elapsed().as_secs();
        self.status.muted = self.controller.muted();
        self.status.call = self.controller.state().as_str().into();
        self.status.call_peer = self.controller.peer().map(str::to_string);
        self.status.gpio.backend = self.outputs.backend().into();
        self.status.gpio.outputs = self.outputs.modes();
        self.status.mqtt = self.mqtt.as_ref().map(|(m, _)| m.state().into());
        if let Some(e) = &self.outputs.last_error {
            self.status.gpio.error = Some(e.to_string());
        }
        self.status.clone()
    }

    /// STATUS= after every loop turn, so only when the summary changed and without building
    /// the whole status (that is for control requests).
    fn publish_status(&mut self) {
        self.status.muted = self.controller.muted();
        self.status.call = self.controller.state().as_str().into();
        let s = self.status.summary();
        if s != self.last_summary {
            self.notifier.status(&s);
            self.last_summary = s;
        }
    }

    async fn shutdown(mut self) {
        tracing::info!(callbox_event = "stopping", room_id = %self.cfg.room.room_id, "stopping: leaving the room");
        self.notifier.stopping();
        self.notifier.status("stopping");
        let in_call = self.controller.state() != CallState::Idle;
        if let Some((m, _)) = &self.mqtt {
            m.stop(Duration::from_secs(2)).await;
        }
        self.worker.abort();
        let _ = (&mut self.worker).await;
        let now = Instant::now();
        self.outputs.all_off(now);
        match Arc::try_unwrap(self.engine) {
            Ok(engine) => {
                // Logging out withdraws our stream and tells the others at once.
                let _ = tokio::time::timeout(SHUTDOWN_LIMIT, engine.destroy()).await;
            }
            Err(_) => tracing::warn!("engine still in use at shutdown; not logged out cleanly"),
        }
        let _ = std::fs::remove_file(&self.socket);
        tracing::info!(callbox_event = "stopped", was_in_call = in_call, "stopped");
    }
}

/// A field engineer's hint for a callbox error code with a usual cause.
pub fn hint_for(code: u32) -> Option<&'static str> {
    events::hint(crate::proto::ErrorCode(code))
}
