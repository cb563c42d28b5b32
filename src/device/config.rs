//! `callbox device` configuration (`/etc/callbox/device.toml`): what an integrator sets for
//! one board. Loaded with the same `CALLBOX_...` environment overlay as the server; every
//! error names its key, and the daemon exits 78 on one.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::call::{CallMode, Callees};
use super::credentials::Credentials;
use crate::config_file::{self, ConfigError};
use crate::media::devices::AutoDevices;
use crate::media::encoder::Encoder;
use crate::media::{AudioSink, AudioSource, Layout, MediaConfig, Scenario, VideoSink, VideoSource};
use crate::proto::{Capability, RingOrder, UserInfo, ids};
use crate::url::ServerUrl;
use callbox_core::device::io::GpioKind;

/// Default path of the device configuration.
pub const DEFAULT_PATH: &str = "/etc/callbox/device.toml";
/// Default control socket.
pub const DEFAULT_SOCKET: &str = "/run/callbox/control.sock";

/// What a re-read device config changes ([`DeviceConfig::reload_plan`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// Keys applied at once.
    pub live: Vec<&'static str>,
    /// Sections that changed otherwise and apply after a restart.
    pub restart: Vec<&'static str>,
}

/// The device configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// The room server and credentials.
    pub server: ServerSection,
    /// Which room and who we are.
    pub room: RoomSection,
    /// How calls are taken.
    #[serde(default)]
    pub call: CallSection,
    /// Camera and encoding.
    #[serde(default)]
    pub video: VideoSection,
    /// Microphone and speaker.
    #[serde(default)]
    pub audio: AudioSection,
    /// Where played video is shown.
    #[serde(default)]
    pub display: DisplaySection,
    /// Media sockets.
    #[serde(default)]
    pub media: MediaSection,
    /// Buttons, LEDs and the door relay.
    #[serde(default)]
    pub gpio: GpioSection,
    /// The control socket.
    #[serde(default)]
    pub control: ControlSection,
    /// callbox's log level (applied on SIGHUP too).
    #[serde(default)]
    pub log: crate::logging::LogSection,
    /// When the camera may send.
    #[serde(default)]
    pub privacy: PrivacySection,
    /// Home Assistant over MQTT (opt-in).
    #[serde(default)]
    pub mqtt: Option<super::mqtt::MqttSection>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// `wss://host` (or `https://`); on a LAN or loopback `ws://host:7880`.
    pub url: String,
    /// A private CA (PEM) that signs the server's certificate; empty: the system's roots.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The AppID.
    pub app_id: u32,
    /// AppSign: the app secret (64 hex); the device mints its own tokens. For development:
    /// whoever reads the SD card can mint any token of the app.
    #[serde(default)]
    pub app_sign: Option<String>,
    /// A fixed token from the integrator's backend (never renewed).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the current token, rotated by a provisioning agent; read again before
    /// every login and renewal.
    #[serde(default)]
    pub token_file: Option<String>,
    /// A device key (`cbk_...`, from the server's admin API): exchanged for short-lived
    /// tokens at the server's `/api/v1/token`.
    #[serde(default)]
    pub device_key: Option<String>,
    /// A file holding the device key (better than the key in this file).
    #[serde(default)]
    pub device_key_file: Option<String>,
    /// The integrator's token endpoint (https): the device POSTs with `token_url_secret` as
    /// the bearer and expects `{"token": "..."}`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The per-device secret for `token_url`.
    #[serde(default)]
    pub token_url_secret: Option<String>,
}

/// `[room]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomSection {
    /// The room to stay in.
    pub room_id: String,
    /// This device's user ID (unique within the app).
    pub user_id: String,
    /// Display name.
    #[serde(default)]
    pub user_name: String,
}

/// `[call]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallSection {
    /// `kiosk`, `intercom` or `auto_answer`.
    pub mode: String,
    /// The stream this device publishes; default `<user_id>-main`.
    pub stream_id: Option<String>,
    /// Auto-answer delay.
    pub answer_delay_secs: u64,
    /// How long the call button's call rings each callee before it times out (5..=120).
    pub ring_out_secs: u64,
    /// Whom the call button rings: a user ID or a list of them; empty (the default): every
    /// other member of the room that can answer.
    pub callee: CalleeList,
    /// A list of callees rings `together` (the first to answer takes the call) or `in_turn`.
    pub order: String,
    /// Rung by calls that name no callee ("everyone who can answer"). Default: true, except
    /// on a door station (`door`).
    pub answers: Option<bool>,
    /// Has a door relay that others may ask to open. Default: `[gpio.outputs]` names a
    /// `door` line.
    pub door: Option<bool>,
}

/// `[call] callee`: one user ID or a list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CalleeList {
    /// Nobody named: every member that can answer.
    #[default]
    Everyone,
    /// One user.
    One(String),
    /// Several, rung together or in turn.
    Many(Vec<String>),
}

impl CalleeList {
    /// The user IDs named.
    pub fn users(&self) -> Vec<String> {
        match self {
            CalleeList::Everyone => Vec::new(),
            CalleeList::One(u) => vec![u.clone()],
            CalleeList::Many(v) => v.clone(),
        }
    }
}

impl Default for CallSection {
    fn default() -> Self {
        CallSection {
            mode: "intercom".into(),
            stream_id: None,
            answer_delay_secs: 3,
            ring_out_secs: 30,
            callee: CalleeList::Everyone,
            order: "together".into(),
            answers: None,
            door: None,
        }
    }
}

/// `[video]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VideoSection {
    /// `auto`, `v4l2:/dev/videoN`, `libcamera`, `test` or `none` (audio only); unset:
    /// `auto`, or `none` with `[media] scenario = "voice_call"`.
    pub source: Option<String>,
    /// Ask a V4L2 camera for MJPEG.
    pub mjpeg: bool,
    /// Width, pixels (unset: the scenario's).
    pub width: Option<u32>,
    /// Height, pixels (unset: the scenario's).
    pub height: Option<u32>,
    /// Frames per second (unset: the scenario's).
    pub fps: Option<u32>,
    /// kbit/s: the most the encoder is given (unset: the scenario's).
    pub bitrate_kbps: Option<u32>,
    /// Follow the link: the encoder's bitrate tracks the bandwidth estimate, and the
    /// picture steps down in size, then rate, on a thin link (default on).
    pub adaptive: bool,
    /// The least video bitrate adaptation goes down to, kbit/s (default 150, or
    /// `bitrate_kbps` if that is lower).
    pub min_bitrate_kbps: Option<u32>,
    /// `auto` or an encoder element name.
    pub encoder: String,
    /// The `videotestsrc` pattern of the test source: `ball` (default), `smpte`, or `snow`,
    /// which does not compress and fills the bitrate (benchmarks, congestion tests).
    pub test_pattern: String,
    /// The camera's picture turned clockwise: 0, 90, 180 or 270 (a camera mounted sideways).
    pub rotate: u16,
    /// `none`, `horizontal` or `vertical`: the picture mirrored (after `rotate`).
    pub flip: String,
}

impl Default for VideoSection {
    /// The engine's defaults ([`MediaConfig::default`]); the source, picture and bitrate
    /// come from `[media] scenario` unless set, the encoder is `auto` (found on the device).
    fn default() -> Self {
        let m = MediaConfig::default();
        VideoSection {
            source: None,
            mjpeg: false,
            width: None,
            height: None,
            fps: None,
            bitrate_kbps: None,
            adaptive: m.adaptive,
            min_bitrate_kbps: None,
            encoder: "auto".into(),
            test_pattern: m.test_pattern,
            rotate: 0,
            flip: "none".into(),
        }
    }
}

/// `[audio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSection {
    /// `auto`, `alsa:<pcm>`, `test` or `none` (video only).
    pub source: String,
    /// `auto`, `alsa:<pcm>` or `fake`.
    pub sink: String,
    /// The volume of what is played, percent (0..=200; `callbox call volume` changes it
    /// until the next restart).
    pub volume: u32,
    /// Echo cancellation.
    pub echo_cancel: bool,
    /// Opus discontinuous transmission: almost nothing is sent while the microphone hears
    /// silence (a metered uplink; default off).
    pub dtx: bool,
}

impl Default for AudioSection {
    fn default() -> Self {
        let m = MediaConfig::default();
        AudioSection { source: "auto".into(), sink: "auto".into(), volume: 100, echo_cancel: m.echo_cancel, dtx: m.dtx }
    }
}

/// `[display]`: names of the engine's [`VideoSink`] and [`Layout`] (parsed by those types,
/// so the file and the engine spell them one way).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisplaySection {
    /// `auto`, `kms`, `wayland` or `fake`.
    pub sink: String,
    /// `single` or `grid` (all played streams and the preview on one screen).
    pub layout: String,
}

impl Default for DisplaySection {
    fn default() -> Self {
        // A device shows what it plays (GStreamer's choice of sink) unless told otherwise;
        // the engine's own default is no display (tests, headless peers).
        DisplaySection { sink: VideoSink::Auto.name().into(), layout: MediaConfig::default().layout.name().into() }
    }
}

/// `[media]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// Local IP for media sockets; empty: the address that routes to the server.
    pub bind: String,
    /// Milliseconds without anything from the server on a stream's media connection before
    /// it is renegotiated (500 to 60000).
    pub silence_ms: u64,
    /// Loss repair (NACK/RTX and FlexFEC for video, Opus in-band FEC, a play jitter buffer
    /// that waits for a retransmission); default on. Off only to compare.
    pub repair: bool,
    /// This device's own TURN servers (`[[media.ice_servers]]`: `urls`, `username`,
    /// `credential`), used with those the server hands out at login.
    pub ice_servers: Vec<crate::proto::ice_servers::IceServer>,
    /// `voice_call` (audio only), `standard_video_call` (default) or
    /// `high_quality_video_call` (720p): the defaults of `[video]`, which its keys override.
    pub scenario: String,
}

impl Default for MediaSection {
    fn default() -> Self {
        let m = MediaConfig::default();
        MediaSection {
            bind: String::new(),
            silence_ms: m.silence_ms,
            repair: m.repair,
            ice_servers: m.ice_servers,
            scenario: Scenario::default().name().into(),
        }
    }
}

/// `[privacy]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrivacySection {
    /// `always`: the camera is on whenever the switch is (default); `in_calls`: it is off
    /// (and the `camera` LED with it) outside calls, on from the first ring to the hang-up.
    pub camera: String,
}

impl Default for PrivacySection {
    fn default() -> Self {
        PrivacySection { camera: "always".into() }
    }
}

/// `[gpio]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpioSection {
    /// `rppal` (Raspberry Pi), `cdev` (Linux GPIO character device) or `sim`.
    pub backend: String,
    /// The GPIO chip for `cdev`, e.g. `/dev/gpiochip0`.
    pub chip: String,
    /// Button lines: `call`, `leave`, `mute`, `door`.
    pub buttons: std::collections::BTreeMap<String, u32>,
    /// Output lines: `online`, `ringing`, `in_call`, `fault` LEDs and the `door` relay.
    pub outputs: std::collections::BTreeMap<String, u32>,
    /// Buttons are active low (pressed pulls to ground).
    pub active_low: bool,
    /// Debounce time.
    pub debounce_ms: u64,
    /// A press held this long is a long press.
    pub long_press_ms: u64,
    /// How long the door relay is energised.
    pub door_pulse_ms: u64,
}

impl GpioSection {
    /// The backend `backend` names (validated at load; an unknown name, which validation
    /// refuses, would mean the simulated one).
    pub fn kind(&self) -> GpioKind {
        GpioKind::parse(&self.backend).unwrap_or(GpioKind::Sim)
    }
}

impl Default for GpioSection {
    fn default() -> Self {
        GpioSection {
            backend: GpioKind::Sim.as_str().into(),
            chip: "/dev/gpiochip0".into(),
            buttons: Default::default(),
            outputs: Default::default(),
            active_low: true,
            debounce_ms: 30,
            long_press_ms: 1500,
            door_pulse_ms: 3000,
        }
    }
}

/// `[control]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlSection {
    /// Unix socket path for `callbox status` and `callbox call`; empty: `/run/callbox/`
    /// for root (the service), `$XDG_RUNTIME_DIR/callbox/` for anyone else.
    pub socket: String,
}

impl ControlSection {
    /// The socket's path, with the empty setting resolved.
    pub fn socket_path(&self) -> std::path::PathBuf {
        if !self.socket.is_empty() {
            return self.socket.clone().into();
        }
        // SAFETY: geteuid has no preconditions and cannot fail.
        let uid = unsafe { libc::geteuid() };
        if uid == 0 {
            return DEFAULT_SOCKET.into();
        }
        let runtime = std::env::var_os("XDG_RUNTIME_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| format!("/run/user/{uid}").into());
        runtime.join("callbox").join("control.sock")
    }
}

impl Default for ControlSection {
    fn default() -> Self {
        ControlSection { socket: DEFAULT_SOCKET.into() }
    }
}

const BUTTONS: [&str; 6] = ["call", "leave", "mute", "door", "camera", "speaker"];
const OUTPUTS: [&str; 6] = ["online", "ringing", "in_call", "fault", "door", "camera"];

impl DeviceConfig {
    /// The server URL, parsed.
    pub fn server_url(&self) -> Result<crate::url::ServerUrl, ConfigError> {
        crate::url::ServerUrl::parse(&self.server.url).map_err(|e| ConfigError::value("server.url", e.to_string()))
    }

    /// A dialer for the server (TLS verified against `ca_file` or the system's roots).
    pub fn dialer(&self) -> Result<crate::dial::Dialer, ConfigError> {
        crate::dial::Dialer::new(self.server_url()?, self.server.ca_file.as_deref().map(Path::new))
            .map_err(|e| ConfigError::value("server.ca_file", e.to_string()))
    }

    /// Loads and validates: the file, then `CALLBOX_...` environment overrides.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let cfg: DeviceConfig = config_file::load(path, env)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the types cannot; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // A private CA must be readable now; the system's roots are the board's business
        // (doctor checks them by connecting), not the file's.
        self.server_url()?;
        self.log.validate()?;
        if let Some(ca) = &self.server.ca_file {
            crate::tls::client::roots(Some(Path::new(ca)))
                .map_err(|e| ConfigError::value("server.ca_file", e.to_string()))?;
        }
        if let Some(m) = &self.mqtt {
            m.validate().map_err(|(key, e)| ConfigError::value(key, e))?;
        }
        if self.server.app_id == 0 {
            return Err(ConfigError::value("server.app_id", "must be set (non-zero)"));
        }
        self.credentials()?;
        ids::check_room_id(&self.room.room_id)
            .map_err(|c| ConfigError::value("room.room_id", format!("invalid room ID (code {})", c.0)))?;
        ids::check_user_id(&self.room.user_id)
            .map_err(|c| ConfigError::value("room.user_id", format!("invalid user ID (code {})", c.0)))?;
        ids::check_stream_id(&self.stream_id())
            .map_err(|c| ConfigError::value("call.stream_id", format!("invalid stream ID (code {})", c.0)))?;
        self.call_mode()?;
        self.callees()?;
        if !(5..=120).contains(&self.call.ring_out_secs) {
            return Err(ConfigError::value("call.ring_out_secs", "must be 5..=120"));
        }
        for (i, s) in self.media.ice_servers.iter().enumerate() {
            s.validate().map_err(|e| ConfigError::value(&format!("media.ice_servers[{i}]"), e))?;
        }
        self.media_config(&AutoDevices::none())?.validate().map_err(|e| {
            let key = e.split(':').next().unwrap_or("video").replace("media.", "video.");
            ConfigError::value(&key, e)
        })?;
        self.scenario()?;
        if self.video_source() == "none" && self.audio.source == "none" {
            return Err(ConfigError::value("audio.source", "a station needs a camera or a microphone (both are none)"));
        }
        if !matches!(self.privacy.camera.as_str(), "always" | "in_calls") {
            return Err(ConfigError::value("privacy.camera", "must be always or in_calls"));
        }
        if self.audio.volume > crate::engine::MAX_VOLUME {
            return Err(ConfigError::value("audio.volume", "must be 0..=200 (percent)"));
        }
        if !(500..=60_000).contains(&self.media.silence_ms) {
            return Err(ConfigError::value("media.silence_ms", "must be 500 to 60000"));
        }
        if !self.media.bind.is_empty() {
            self.media.bind.parse::<IpAddr>().map_err(|_| ConfigError::value("media.bind", "not an IP address"))?;
        }
        if GpioKind::parse(&self.gpio.backend).is_none() {
            return Err(ConfigError::value("gpio.backend", "must be rppal, cdev or sim"));
        }
        for k in self.gpio.buttons.keys() {
            if !BUTTONS.contains(&k.as_str()) {
                return Err(ConfigError::value(
                    &format!("gpio.buttons.{k}"),
                    "buttons are call, leave, mute, door, camera, speaker",
                ));
            }
        }
        for k in self.gpio.outputs.keys() {
            if !OUTPUTS.contains(&k.as_str()) {
                return Err(ConfigError::value(
                    &format!("gpio.outputs.{k}"),
                    "outputs are online, ringing, in_call, fault, door, camera",
                ));
            }
        }
        if self.gpio.door_pulse_ms == 0 || self.gpio.door_pulse_ms > 60_000 {
            return Err(ConfigError::value("gpio.door_pulse_ms", "must be between 1 and 60000"));
        }
        if !self.control.socket.is_empty() && !self.control.socket.starts_with('/') {
            return Err(ConfigError::value("control.socket", "must be an absolute path"));
        }
        Ok(())
    }

    /// The stream this device publishes.
    pub fn stream_id(&self) -> String {
        self.call.stream_id.clone().unwrap_or_else(|| format!("{}-main", self.room.user_id))
    }

    /// The credentials `[server]` names (exactly one), checked. The credentials module
    /// fetches tokens with them; the config only says which and checks they are usable.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let s = &self.server;
        let set = [
            ("app_sign", s.app_sign.is_some()),
            ("token", s.token.is_some()),
            ("token_file", s.token_file.is_some()),
            ("device_key", s.device_key.is_some()),
            ("device_key_file", s.device_key_file.is_some()),
            ("token_url", s.token_url.is_some()),
        ];
        let named: Vec<&str> = set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect();
        match named.len() {
            0 => {
                return Err(ConfigError::value(
                    "server.device_key",
                    "say how the device logs in: device_key, device_key_file, token_url, token_file, token or app_sign",
                ));
            }
            1 => {}
            _ => {
                return Err(ConfigError::value(
                    &format!("server.{}", named[1]),
                    format!("set only one of {}", named.join(", ")),
                ));
            }
        }
        if s.token_url_secret.is_some() && s.token_url.is_none() {
            return Err(ConfigError::value("server.token_url_secret", "goes with token_url"));
        }
        if let Some(secret) = &s.app_sign {
            crate::auth::parse_secret(secret).map_err(|e| ConfigError::value("server.app_sign", e.to_string()))?;
            return Ok(Credentials::AppSign(secret.clone()));
        }
        if let Some(t) = &s.token {
            if t.trim().is_empty() {
                return Err(ConfigError::value("server.token", "is empty"));
            }
            return Ok(Credentials::Fixed(t.trim().to_string()));
        }
        if let Some(f) = &s.token_file {
            return Ok(Credentials::File(PathBuf::from(f)));
        }
        if let Some(url) = &s.token_url {
            let u = ServerUrl::parse(url).map_err(|e| ConfigError::value("server.token_url", e.to_string()))?;
            if !u.is_tls() && !u.is_loopback() {
                return Err(ConfigError::value(
                    "server.token_url",
                    "must be https:// (it carries the device's secret)",
                ));
            }
            if !url.split("://").nth(1).is_some_and(|r| r.contains('/')) {
                return Err(ConfigError::value("server.token_url", "needs the endpoint's path"));
            }
            let secret =
                s.token_url_secret.clone().filter(|x| !x.trim().is_empty()).ok_or_else(|| {
                    ConfigError::value("server.token_url_secret", "token_url needs the device's secret")
                })?;
            return Ok(Credentials::TokenUrl { url: u, ca_file: s.ca_file.as_ref().map(PathBuf::from), secret });
        }
        let key = match (&s.device_key, &s.device_key_file) {
            (Some(k), _) => k.trim().to_string(),
            (None, Some(f)) => std::fs::read_to_string(f)
                .map_err(|e| ConfigError::value("server.device_key_file", format!("{f}: {e}")))?
                .trim()
                .to_string(),
            (None, None) => unreachable!("one source is set"),
        };
        if !key.starts_with(crate::server::device_keys::KEY_PREFIX) {
            let k = if s.device_key.is_some() { "server.device_key" } else { "server.device_key_file" };
            return Err(ConfigError::value(k, "a device key starts with cbk_ (create one with the admin API)"));
        }
        Ok(Credentials::DeviceKey { url: self.server_url()?, ca_file: s.ca_file.as_ref().map(PathBuf::from), key })
    }

    /// The engine's credentials: AppSign or the configured token.
    /// The sections that differ from `other` (`[server]`, `[call]`, ...).
    pub fn changed_sections(&self, other: &DeviceConfig) -> Vec<&'static str> {
        let pairs: [(&'static str, String, String); 10] = [
            ("[mqtt]", format!("{:?}", self.mqtt), format!("{:?}", other.mqtt)),
            ("[server]", format!("{:?}", self.server), format!("{:?}", other.server)),
            ("[room]", format!("{:?}", self.room), format!("{:?}", other.room)),
            ("[call]", format!("{:?}", self.call), format!("{:?}", other.call)),
            ("[video]", format!("{:?}", self.video), format!("{:?}", other.video)),
            ("[audio]", format!("{:?}", self.audio), format!("{:?}", other.audio)),
            ("[display]", format!("{:?}", self.display), format!("{:?}", other.display)),
            ("[media]", format!("{:?}", self.media), format!("{:?}", other.media)),
            ("[gpio]", format!("{:?}", self.gpio), format!("{:?}", other.gpio)),
            ("[control]", format!("{:?}", self.control), format!("{:?}", other.control)),
        ];
        pairs.into_iter().filter(|(_, a, b)| a != b).map(|(k, _, _)| k).collect()
    }

    /// What a re-read file changes: the keys the running daemon applies at once (call mode
    /// and timing, button and door-relay timing, the log level) and the sections that need a
    /// restart (identity, server and credentials, media, GPIO lines, the control socket).
    pub fn reload_plan(&self, new: &DeviceConfig) -> ReloadPlan {
        let mut applied = self.clone();
        let live = applied.take_live(new);
        ReloadPlan { live, restart: applied.changed_sections(new) }
    }

    /// Takes from `new` the keys a running daemon applies at once; returns those that changed.
    /// The one list of live keys ([`DeviceConfig::reload_plan`] uses it too).
    pub fn take_live(&mut self, new: &DeviceConfig) -> Vec<&'static str> {
        fn take<T: PartialEq + Clone>(key: &'static str, mine: &mut T, theirs: &T, taken: &mut Vec<&'static str>) {
            if mine != theirs {
                mine.clone_from(theirs);
                taken.push(key);
            }
        }
        let mut taken = Vec::new();
        take("call.mode", &mut self.call.mode, &new.call.mode, &mut taken);
        take("call.ring_out_secs", &mut self.call.ring_out_secs, &new.call.ring_out_secs, &mut taken);
        take("call.callee", &mut self.call.callee, &new.call.callee, &mut taken);
        take("call.order", &mut self.call.order, &new.call.order, &mut taken);
        take("call.answer_delay_secs", &mut self.call.answer_delay_secs, &new.call.answer_delay_secs, &mut taken);
        take("gpio.debounce_ms", &mut self.gpio.debounce_ms, &new.gpio.debounce_ms, &mut taken);
        take("gpio.long_press_ms", &mut self.gpio.long_press_ms, &new.gpio.long_press_ms, &mut taken);
        take("gpio.door_pulse_ms", &mut self.gpio.door_pulse_ms, &new.gpio.door_pulse_ms, &mut taken);
        take("log.level", &mut self.log, &new.log, &mut taken);
        taken
    }

    /// What is valid but unsafe in the field (check-config and doctor WARN, the daemon logs
    /// them at start): a cleartext server URL to another host, the app secret on the device,
    /// a token that is never renewed.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(u) = self.server_url()
            && !u.is_tls()
            && !u.is_loopback()
        {
            out.push(format!(
                "server.url: {} is cleartext ws:// to another host: the token and signalling can be read on the way; use wss://",
                self.server.url
            ));
        }
        if let Ok(u) = self.server_url()
            && u.is_placeholder()
        {
            out.push(format!(
                "server.url: {} is the example's placeholder host: put your server's name",
                self.server.url
            ));
        }
        if let Some(u) = &self.server.token_url
            && crate::url::ServerUrl::parse(u).is_ok_and(|u| u.is_placeholder())
        {
            out.push(format!("server.token_url: {u} is the example's placeholder host: put your token endpoint"));
        }
        if self.server.device_key.as_deref().is_some_and(|k| k.contains("replace-with")) {
            out.push("server.device_key: the example's placeholder: put this device's key from the admin API".into());
        }
        if self.server.app_sign.is_some() {
            out.push(
                "server.app_sign: this device holds the app secret: whoever reads its storage can mint any token of the app \
                 (admin and door included); use device_key, token_url or token_file"
                    .into(),
            );
        }
        if self.server.token.is_some() {
            out.push("server.token: a fixed token is never renewed; the device stops at its expiry; use device_key, token_url or token_file".into());
        }
        out
    }

    /// Whom the call button rings.
    pub fn callees(&self) -> Result<Callees, ConfigError> {
        let users = self.call.callee.users();
        if users.len() > 16 {
            return Err(ConfigError::value("call.callee", "at most 16 callees"));
        }
        for u in &users {
            ids::check_user_id(u)
                .map_err(|c| ConfigError::value("call.callee", format!("{u:?}: invalid user ID (code {})", c.0)))?;
            if *u == self.room.user_id {
                return Err(ConfigError::value("call.callee", "a device cannot call itself"));
            }
        }
        let order = match self.call.order.as_str() {
            "together" => RingOrder::Together,
            "in_turn" => RingOrder::InTurn,
            other => return Err(ConfigError::value("call.order", format!("{other:?}: must be together or in_turn"))),
        };
        Ok(Callees { users, order, ring_secs: Some(self.call.ring_out_secs.clamp(5, 120) as u32) })
    }

    /// Whether this device has a door relay others may open.
    pub fn has_door(&self) -> bool {
        self.call.door.unwrap_or_else(|| self.gpio.outputs.contains_key("door"))
    }

    /// Who this device is in the room: a device with a door relay, a camera, a display, and
    /// whether it answers calls that name no callee.
    pub fn member(&self) -> UserInfo {
        let mut caps = Vec::new();
        if self.call.answers.unwrap_or(!self.has_door()) {
            caps.push(Capability::Answer);
        }
        if self.has_door() {
            caps.push(Capability::Door);
        }
        if self.video_source() != "none" {
            caps.push(Capability::Camera);
        }
        if self.display.sink != VideoSink::Fake.name() {
            caps.push(Capability::Display);
        }
        let name = if self.room.user_name.is_empty() { self.room.user_id.clone() } else { self.room.user_name.clone() };
        UserInfo::device(self.room.user_id.clone(), name, caps)
    }

    /// The media scenario (`[media] scenario`).
    pub fn scenario(&self) -> Result<Scenario, ConfigError> {
        self.media.scenario.parse().map_err(|e| ConfigError::value("media.scenario", e))
    }

    /// `[video] source`, or what the scenario implies when it is unset.
    pub fn video_source(&self) -> &str {
        match &self.video.source {
            Some(s) => s,
            None if matches!(self.scenario(), Ok(Scenario::VoiceCall)) => "none",
            None => "auto",
        }
    }

    /// Privacy: the camera is off outside calls (`[privacy] camera = "in_calls"`).
    pub fn camera_in_calls_only(&self) -> bool {
        self.privacy.camera == "in_calls"
    }

    /// The call mode.
    pub fn call_mode(&self) -> Result<CallMode, ConfigError> {
        match self.call.mode.as_str() {
            "kiosk" => Ok(CallMode::Kiosk),
            "intercom" => Ok(CallMode::Intercom),
            "auto_answer" => Ok(CallMode::AutoAnswer(Duration::from_secs(self.call.answer_delay_secs))),
            other => Err(ConfigError::value("call.mode", format!("{other:?}: must be kiosk, intercom or auto_answer"))),
        }
    }

    /// The engine's media settings. `auto` sources are what `auto` found (GStreamer's device
    /// monitor, [`AutoDevices::choose`]): the first camera and microphone, else the test
    /// pattern and tone.
    pub fn media_config(&self, auto: &AutoDevices) -> Result<MediaConfig, ConfigError> {
        let v = &self.video;
        let base = self.scenario()?.config();
        let video = match self.video_source() {
            "test" => VideoSource::Test,
            "libcamera" => VideoSource::Libcamera,
            "none" => VideoSource::None,
            // No camera found: audio only, never the test pattern to a front desk.
            "auto" => match &auto.camera {
                Some(c) => VideoSource::V4l2 { device: c.device.clone(), mjpeg: v.mjpeg },
                None => VideoSource::None,
            },
            s => match s.strip_prefix("v4l2:") {
                Some(dev) if dev.starts_with("/dev/") => VideoSource::V4l2 { device: dev.into(), mjpeg: v.mjpeg },
                _ => {
                    return Err(ConfigError::value(
                        "video.source",
                        format!("{s:?}: must be auto, v4l2:/dev/videoN, libcamera, test or none"),
                    ));
                }
            },
        };
        let a = &self.audio;
        let audio = match a.source.as_str() {
            "test" => AudioSource::Test,
            "none" => AudioSource::None,
            "auto" => match &auto.microphone {
                Some(m) => AudioSource::Alsa { device: m.device.clone() },
                None => AudioSource::Test,
            },
            s => match s.strip_prefix("alsa:").filter(|d| !d.is_empty()) {
                Some(d) => AudioSource::Alsa { device: d.into() },
                None => {
                    return Err(ConfigError::value(
                        "audio.source",
                        format!("{s:?}: must be auto, alsa:<pcm>, test or none"),
                    ));
                }
            },
        };
        let audio_sink = match a.sink.as_str() {
            "auto" => AudioSink::Auto,
            "fake" => AudioSink::Fake,
            s => match s.strip_prefix("alsa:").filter(|d| !d.is_empty()) {
                Some(d) => AudioSink::Alsa { device: d.into() },
                None => {
                    return Err(ConfigError::value("audio.sink", format!("{s:?}: must be auto, alsa:<pcm> or fake")));
                }
            },
        };
        let video_sink = self.display.sink.parse::<VideoSink>().map_err(|e| ConfigError::value("display.sink", e))?;
        let layout = self.display.layout.parse::<Layout>().map_err(|e| ConfigError::value("display.layout", e))?;
        let encoder = match v.encoder.as_str() {
            "auto" | "" => String::new(),
            e if Encoder::from_element(e).is_some() => e.to_string(),
            e => {
                return Err(ConfigError::value(
                    "video.encoder",
                    format!("{e:?}: must be auto, v4l2h264enc, nvv4l2h264enc, vaapih264enc, x264enc or openh264enc"),
                ));
            }
        };
        let bitrate_kbps = v.bitrate_kbps.unwrap_or(base.bitrate_kbps);
        let flip = v.flip.parse().map_err(|e| ConfigError::value("video.flip", e))?;
        Ok(MediaConfig {
            video,
            width: v.width.unwrap_or(base.width),
            height: v.height.unwrap_or(base.height),
            fps: v.fps.unwrap_or(base.fps),
            bitrate_kbps,
            adaptive: v.adaptive,
            min_bitrate_kbps: v.min_bitrate_kbps.unwrap_or(bitrate_kbps.min(base.min_bitrate_kbps)),
            encoder,
            audio,
            echo_cancel: a.echo_cancel,
            video_sink,
            layout,
            audio_sink,
            silence_ms: self.media.silence_ms,
            test_pattern: v.test_pattern.clone(),
            rotate: v.rotate,
            flip,
            ice_servers: self.media.ice_servers.clone(),
            repair: self.media.repair,
            dtx: a.dtx,
            ..MediaConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[server]\nurl = \"ws://127.0.0.1:7880\"\napp_id = 1234\n\
        app_sign = \"6b1c1f0e2d3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9011223344\"\n\
        [room]\nroom_id = \"lobby\"\nuser_id = \"door-1\"\n";

    fn parse(extra: &str) -> Result<DeviceConfig, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("device.toml");
        std::fs::write(&p, format!("{MINIMAL}{extra}")).unwrap();
        DeviceConfig::load(Some(&p), &[])
    }

    fn key_of(e: ConfigError) -> String {
        e.to_string()
    }

    #[test]
    fn minimal_config_has_sensible_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.stream_id(), "door-1-main");
        assert_eq!(c.call_mode().unwrap(), CallMode::Intercom);
        assert_eq!(c.control.socket, DEFAULT_SOCKET);
        let m = c.media_config(&AutoDevices::none()).unwrap();
        // No camera found: audio only, never the test pattern.
        assert_eq!((m.video, m.audio), (VideoSource::None, AudioSource::Test));
        // `auto` takes what the device monitor found, not a fixed /dev/video0 or card 0.
        use crate::media::devices::{Found, Kind};
        let found = |kind, device: &str| Found { kind, device: device.into(), name: String::new(), formats: vec![] };
        let auto = AutoDevices::choose(&[found(Kind::Microphone, "hw:1"), found(Kind::Camera, "/dev/video2")]);
        let m = c.media_config(&auto).unwrap();
        assert_eq!(m.video, VideoSource::V4l2 { device: "/dev/video2".into(), mjpeg: false });
        assert_eq!(m.audio, AudioSource::Alsa { device: "hw:1".into() });
        assert_eq!(m.test_pattern, "ball");
        let turn = parse(
            "[[media.ice_servers]]\nurls = [\"turns:relay.example.com:443\"]\nusername = \"u\"\ncredential = \"p\"\n",
        );
        assert_eq!(turn.unwrap().media_config(&AutoDevices::none()).unwrap().ice_servers[0].username, "u");
        let snow = parse("[video]\nsource = \"test\"\ntest_pattern = \"snow\"\n").unwrap();
        assert_eq!(snow.media_config(&AutoDevices::none()).unwrap().test_pattern, "snow");
    }

    #[test]
    fn a_reload_applies_call_gpio_timing_and_log_level_and_names_the_rest() {
        let old = parse("").unwrap();
        let new = parse(
            "[call]\nmode = \"kiosk\"\n[gpio]\ndoor_pulse_ms = 5000\n[log]\nlevel = \"debug\"\n[video]\nwidth = 320\n",
        )
        .unwrap();
        let plan = old.reload_plan(&new);
        assert_eq!(plan.live, ["call.mode", "gpio.door_pulse_ms", "log.level"]);
        assert_eq!(plan.restart, ["[video]"]);
        let mut applied = old.clone();
        assert_eq!(applied.take_live(&new), plan.live);
        assert_eq!(applied.reload_plan(&new), ReloadPlan { live: vec![], restart: vec!["[video]"] });
        // Identity and GPIO lines are never live.
        let mut moved = parse("[gpio]\nbuttons = { call = 4 }\n").unwrap();
        moved.room.room_id = "other".into();
        assert_eq!(old.reload_plan(&moved), ReloadPlan { live: vec![], restart: vec!["[room]", "[gpio]"] });
        assert!(parse("[log]\nlevel = \"loud\"\n").unwrap_err().to_string().contains("log.level"));
    }

    #[test]
    fn scenarios_set_the_defaults_and_keys_still_win() {
        let none = AutoDevices::none();
        let voice = parse("[media]\nscenario = \"voice_call\"\n").unwrap();
        let m = voice.media_config(&none).unwrap();
        assert_eq!((m.video, m.repair), (VideoSource::None, true));
        assert!(!voice.member().can(Capability::Camera), "a voice station says it has no camera");
        let hq = parse("[media]\nscenario = \"high_quality_video_call\"\n[video]\nsource = \"test\"\n").unwrap();
        let m = hq.media_config(&none).unwrap();
        assert_eq!((m.width, m.height, m.bitrate_kbps, m.min_bitrate_kbps), (1280, 720, 2500, 300));
        let mixed = parse(
            "[media]\nscenario = \"high_quality_video_call\"\n[video]\nsource = \"test\"\nwidth = 960\nheight = 540\n",
        )
        .unwrap();
        let m = mixed.media_config(&none).unwrap();
        assert_eq!((m.width, m.height, m.bitrate_kbps), (960, 540, 2500), "a key set wins over the scenario");
        let voice_cam = parse("[media]\nscenario = \"voice_call\"\n[video]\nsource = \"test\"\n").unwrap();
        assert_eq!(voice_cam.media_config(&none).unwrap().video, VideoSource::Test);
        assert!(parse("[privacy]\ncamera = \"in_calls\"\n").unwrap().camera_in_calls_only());
    }

    #[test]
    fn an_empty_file_means_the_engines_own_media_defaults() {
        let m = parse("").unwrap().media_config(&AutoDevices::none()).unwrap();
        // What a device decides for itself: it shows and plays what it receives, and with
        // no camera found it publishes audio only.
        let device = MediaConfig {
            video: VideoSource::None,
            video_sink: VideoSink::Auto,
            audio_sink: AudioSink::Auto,
            ..MediaConfig::default()
        };
        assert_eq!(m, device);
        for sink in VideoSink::ALL {
            assert_eq!(sink.name().parse::<VideoSink>(), Ok(sink));
        }
    }

    #[test]
    fn every_bad_value_names_its_key() {
        for (extra, key) in [
            ("[call]\nmode = \"party\"\n", "call.mode"),
            ("[video]\nsource = \"/dev/video0\"\n", "video.source"),
            ("[media]\nscenario = \"loud\"\n", "media.scenario"),
            ("[video]\nrotate = 45\n", "video.rotate"),
            ("[video]\nsource = \"none\"\n[audio]\nsource = \"none\"\n", "audio.source"),
            ("[video]\nflip = \"diagonal\"\n", "video.flip"),
            ("[privacy]\ncamera = \"sometimes\"\n", "privacy.camera"),
            ("[audio]\nvolume = 300\n", "audio.volume"),
            ("[gpio.buttons]\nbell = 9\n", "gpio.buttons.bell"),
            ("[video]\nencoder = \"ffmpeg\"\n", "video.encoder"),
            ("[video]\ntest_pattern = \"snow; rm\"\n", "video.test_pattern"),
            ("[video]\nfps = 0\n", "video.fps"),
            ("[video]\nbitrate_kbps = 500\nmin_bitrate_kbps = 600\n", "video.min_bitrate_kbps"),
            ("[video]\nmin_bitrate_kbps = 10\n", "video.min_bitrate_kbps"),
            ("[audio]\nsink = \"pulse\"\n", "audio.sink"),
            ("[display]\nsink = \"hdmi\"\n", "display.sink"),
            ("[display]\nlayout = \"mosaic\"\n", "display.layout"),
            ("[media]\nbind = \"eth0\"\n", "media.bind"),
            ("[[media.ice_servers]]\nurls = [\"turn:relay:3478?transport=sctp\"]\n", "media.ice_servers[0]"),
            ("[[media.ice_servers]]\nurls = []\n", "media.ice_servers[0]"),
            ("[gpio]\nbackend = \"sysfs\"\n", "gpio.backend"),
            ("[gpio.buttons]\nbell = 4\n", "gpio.buttons.bell"),
            ("[gpio.outputs]\nsiren = 4\n", "gpio.outputs.siren"),
            ("[control]\nsocket = \"control.sock\"\n", "control.socket"),
            ("[call]\nstream_id = \"has space\"\n", "call.stream_id"),
        ] {
            let e = key_of(parse(extra).unwrap_err());
            assert!(e.contains(key), "{extra:?}: {e}");
        }
        let e = key_of(parse("[video]\nwidth = \"big\"\n").unwrap_err());
        assert!(e.contains("width"), "{e}");
        let e = key_of(parse("[room2]\nx = 1\n").unwrap_err());
        assert!(e.contains("room2"), "{e}");
    }
}
