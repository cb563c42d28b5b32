//! `callbox doctor`: everything a field engineer checks on a board that does not call, one
//! line per check with PASS, WARN or FAIL and a hint: config, camera and its formats, ALSA
//! devices, the H.264 encoder that will be used, GPIO, the server, the credentials, the
//! clock, and the UDP media port. Any FAIL makes the exit code non-zero.

use std::fmt;
use std::net::SocketAddr;

use crate::proto::ErrorCode;
use std::path::Path;
use std::time::Duration;

use super::config::DeviceConfig;
use crate::media::{self, AudioSink, AudioSource, VideoSource, encoder};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Fine.
    Pass,
    /// Works, but not as a shipped device should.
    Warn,
    /// Will not work.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The outcome.
    pub level: Level,
    /// Short name: `config`, `camera`, ...
    pub name: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do about it (WARN and FAIL).
    pub hint: Option<String>,
}

impl Check {
    fn new(level: Level, name: &'static str, detail: impl Into<String>, hint: Option<&str>) -> Check {
        Check { level, name, detail: detail.into(), hint: hint.map(String::from) }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = match self.level {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        write!(f, "{l}  {:<12} {}", self.name, self.detail)?;
        if let Some(h) = &self.hint {
            write!(f, "  -> {h}")?;
        }
        Ok(())
    }
}

/// Runs every check, prints one line each, and returns true when none failed.
pub async fn run(path: &Path, json: bool) -> bool {
    let checks = checks(path).await;
    let count = |l: Level| checks.iter().filter(|c| c.level == l).count();
    let (pass, warn, fail) = (count(Level::Pass), count(Level::Warn), count(Level::Fail));
    if json {
        let v = serde_json::json!({
            "version": crate::BUILD,
            "config": path.display().to_string(),
            "checks": checks,
            "summary": {"pass": pass, "warn": warn, "fail": fail},
        });
        println!("{v}");
    } else {
        for c in &checks {
            println!("{c}");
        }
        let verdict = if fail > 0 { "this board will not call as configured" } else { "ready" };
        println!("doctor: {pass} PASS, {warn} WARN, {fail} FAIL: {verdict} (callbox {})", crate::BUILD);
    }
    fail == 0
}

/// Runs every check.
pub async fn checks(path: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = match DeviceConfig::load(Some(path), &crate::config_file::callbox_env()) {
        Ok(c) => {
            out.push(Check::new(Level::Pass, "config", format!("{} is valid", path.display()), None));
            Some(c)
        }
        Err(e) => {
            let unreadable = matches!(&e, crate::config_file::ConfigError::Read { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied);
            let hint = if unreadable {
                // The file is 0640 root:callbox: the checks after it need it.
                "run doctor as the service user: sudo -u callbox callbox doctor (the config, server, credentials, clock and media checks need the file)"
            } else {
                "fix the named key; `callbox check-config FILE` checks again"
            };
            out.push(Check::new(Level::Fail, "config", format!("{}: {e}", path.display()), Some(hint)));
            None
        }
    };
    // What GStreamer's device monitor lists: the listing, and what `auto` takes.
    let found = media::devices::probe();
    let media = cfg.as_ref().and_then(|c| c.media_config(&media::devices::AutoDevices::choose(&found)).ok());
    let auto_camera = cfg.as_ref().is_some_and(|c| c.video_source() == "auto");
    out.push(camera(media.as_ref().map(|m| &m.video), auto_camera, &found));
    out.extend(audio(media.as_ref().map(|m| (&m.audio, &m.audio_sink))));
    out.push(encoder_check(media.as_ref().map(|m| m.encoder.as_str()).unwrap_or("auto")));
    let Some(cfg) = cfg else { return out };
    out.push(gpio(&cfg));
    for w in cfg.warnings() {
        let (key, text) = w.split_once(": ").unwrap_or(("config", &w));
        out.push(Check::new(Level::Warn, "config", format!("{key}: {text}"), None));
    }
    let (reachable, health) = server_check(&cfg, &mut out).await;
    if reachable {
        out.push(credentials(&cfg).await);
    }
    out.push(clock(health.as_ref().and_then(|h| h.date)));
    let server = if reachable { cfg.dialer().ok().and_then(|d| d.url().resolve().ok()) } else { None };
    if let (Some(addr), Some(h)) = (server, &health) {
        out.push(media_port(addr, h.media_port, h.media_tcp_port, &cfg.media.bind).await);
    }
    out
}

/// `auto`: the configured source is `auto` (what it found is `source`).
fn camera(source: Option<&VideoSource>, auto: bool, found_by_gstreamer: &[media::devices::Found]) -> Check {
    let mut found: Vec<String> = std::fs::read_dir("/dev")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    found.retain(|n| n.starts_with("video"));
    found.sort();
    let formats: Vec<String> = found_by_gstreamer
        .iter()
        .filter(|f| f.kind == media::devices::Kind::Camera)
        .map(|f| format!("{} {}: {}", f.device, f.name, f.formats.join(", ")))
        .collect();
    let listing = if found.is_empty() {
        "no /dev/video* device".to_string()
    } else {
        format!(
            "{} ({})",
            found.join(", "),
            if formats.is_empty() { "no capture formats listed".into() } else { formats.join("; ") }
        )
    };
    match source {
        Some(VideoSource::V4l2 { device, .. }) if !Path::new(device).exists() => Check::new(
            Level::Fail,
            "camera",
            format!("{device} is configured but missing; found: {listing}"),
            Some("plug in the camera or fix [video] source (v4l2-ctl --list-devices)"),
        ),
        Some(VideoSource::V4l2 { device, .. }) => {
            Check::new(Level::Pass, "camera", format!("{device}: {listing}"), None)
        }
        Some(VideoSource::Libcamera) if !media::has_element("libcamerasrc") => Check::new(
            Level::Fail,
            "camera",
            format!("libcamera configured but GStreamer has no libcamerasrc; {listing}"),
            Some("install gstreamer1.0-libcamera (Pi camera modules), or use a V4L2 camera"),
        ),
        Some(VideoSource::Libcamera) => {
            Check::new(Level::Pass, "camera", format!("libcamera configured, libcamerasrc present; {listing}"), None)
        }
        Some(VideoSource::Test) => Check::new(
            Level::Warn,
            "camera",
            format!("[video] source is the test pattern; {listing}"),
            Some("set [video] source = \"auto\" or \"v4l2:/dev/videoN\" on a shipped device"),
        ),
        Some(VideoSource::None) if auto => Check::new(
            Level::Warn,
            "camera",
            format!("[video] source = \"auto\" found no camera: streams are published with audio only; {listing}"),
            Some("plug in the camera, or set [video] source = \"none\" on a station without one"),
        ),
        Some(VideoSource::None) => Check::new(
            Level::Pass,
            "camera",
            format!("[video] source = \"none\": streams are published with audio only; {listing}"),
            None,
        ),
        None => Check::new(if found.is_empty() { Level::Warn } else { Level::Pass }, "camera", listing, None),
    }
}

fn pcm_devices(suffix: char) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/snd")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    v.retain(|n| n.starts_with("pcmC") && n.ends_with(suffix));
    v.sort();
    v
}

fn audio(cfg: Option<(&AudioSource, &AudioSink)>) -> Vec<Check> {
    let cards = std::fs::read_to_string("/proc/asound/cards").unwrap_or_default();
    let cards = if cards.trim().is_empty() || cards.contains("no soundcards") {
        "no sound card".into()
    } else {
        cards.lines().next().unwrap_or("").trim().to_string()
    };
    let (capture, playback) = (pcm_devices('c'), pcm_devices('p'));
    let mut out = Vec::new();
    let mic = match cfg.map(|c| c.0) {
        Some(AudioSource::Alsa { device }) if capture.is_empty() => Check::new(
            Level::Fail,
            "microphone",
            format!("alsa:{device} configured but no capture device ({cards})"),
            Some("check the sound card (arecord -l) and [audio] source"),
        ),
        Some(AudioSource::Alsa { device }) => {
            alsa_check("microphone", "alsasrc", device, &capture, "arecord -L", "source")
        }
        Some(AudioSource::None) => Check::new(
            Level::Pass,
            "microphone",
            format!(
                "[audio] source = \"none\": streams are published with video only; {} capture devices ({cards})",
                capture.len()
            ),
            None,
        ),
        Some(AudioSource::Test) => Check::new(
            Level::Warn,
            "microphone",
            format!("[audio] source is the test tone; {} capture devices ({cards})", capture.len()),
            Some("set [audio] source = \"auto\" or \"alsa:<pcm>\" on a shipped device"),
        ),
        None => Check::new(
            if capture.is_empty() { Level::Warn } else { Level::Pass },
            "microphone",
            format!("{} capture devices ({cards})", capture.len()),
            None,
        ),
    };
    out.push(mic);
    let speaker = match cfg.map(|c| c.1) {
        Some(AudioSink::Alsa { device }) if playback.is_empty() => Check::new(
            Level::Fail,
            "speaker",
            format!("alsa:{device} configured but no playback device"),
            Some("check the sound card (aplay -l) and [audio] sink"),
        ),
        Some(AudioSink::Fake) => Check::new(
            Level::Warn,
            "speaker",
            format!("[audio] sink is fake: calls and the chime are silent; {} playback devices", playback.len()),
            Some("set [audio] sink = \"auto\" or \"alsa:<pcm>\""),
        ),
        Some(AudioSink::Alsa { device }) => alsa_check("speaker", "alsasink", device, &playback, "aplay -L", "sink"),
        _ if playback.is_empty() => {
            Check::new(Level::Warn, "speaker", "no ALSA playback device", Some("check the sound card (aplay -l)"))
        }
        _ => Check::new(Level::Pass, "speaker", format!("playback devices {}", playback.join(", ")), None),
    };
    out.push(speaker);
    out
}

/// The check of a configured ALSA device: PASS when it opens, FAIL with ALSA's reason.
fn alsa_check(name: &'static str, factory: &str, device: &str, listed: &[String], lister: &str, key: &str) -> Check {
    let listed = listed.join(", ");
    match open_alsa(factory, device) {
        Ok(()) => Check::new(Level::Pass, name, format!("alsa:{device} opens; devices {listed}"), None),
        Err(e) => Check {
            level: Level::Fail,
            name,
            detail: format!("alsa:{device} does not open: {e}; devices {listed}"),
            hint: Some(format!("name a device `{lister}` lists in [audio] {key}; is another process holding it?")),
        },
    }
}

/// Opens an ALSA device the way the pipeline will (the element to READY opens it), then
/// closes it: a configured device that exists in name only, or is held by another process,
/// fails here rather than in the first call.
fn open_alsa(factory: &str, device: &str) -> Result<(), String> {
    use gstreamer::prelude::*;
    media::init().map_err(|e| e.to_string())?;
    let el = gstreamer::ElementFactory::make(factory)
        .property("device", device)
        .build()
        .map_err(|_| format!("GStreamer has no {factory} (install gstreamer1.0-alsa)"))?;
    let pipeline = gstreamer::Pipeline::new();
    pipeline.add(&el).map_err(|e| e.to_string())?;
    let r = pipeline.set_state(gstreamer::State::Ready);
    let why =
        pipeline.bus().and_then(|b| b.pop_filtered(&[gstreamer::MessageType::Error])).and_then(|m| match m.view() {
            gstreamer::MessageView::Error(e) => Some(e.error().to_string()),
            _ => None,
        });
    let _ = pipeline.set_state(gstreamer::State::Null);
    match r {
        Ok(_) => Ok(()),
        Err(_) => Err(why.unwrap_or_else(|| "the device refused to open".into())),
    }
}

fn encoder_check(configured: &str) -> Check {
    let configured = encoder::Encoder::from_element(configured);
    match encoder::choose(configured, &[], media::has_element) {
        Some(c) if c.encoder.is_hardware() => {
            Check::new(Level::Pass, "encoder", format!("{} (hardware): {}", c.encoder, c.reason), None)
        }
        Some(c) => Check::new(
            Level::Warn,
            "encoder",
            format!("{} (software): {}", c.encoder, c.reason),
            Some(
                "no hardware H.264 encoder: expect high CPU; install the board's GStreamer plugins (v4l2h264enc / nvv4l2h264enc)",
            ),
        ),
        None => Check::new(
            Level::Fail,
            "encoder",
            "no H.264 encoder element at all",
            Some("install gstreamer1.0-plugins-ugly (x264enc) or the board's encoder plugin"),
        ),
    }
}

fn gpio(cfg: &DeviceConfig) -> Check {
    let g = &cfg.gpio;
    let lines = super::gpio::Lines::from_config(g);
    let max = lines.buttons.iter().map(|(_, l)| *l).chain(lines.outputs.iter().map(|(_, l)| *l)).max();
    match g.kind() {
        super::gpio::GpioKind::Sim => Check::new(
            Level::Warn,
            "gpio",
            "simulated (buttons via `callbox gpio press`)",
            Some("set [gpio] backend = \"rppal\" (Pi) or \"cdev\" on a device with buttons"),
        ),
        super::gpio::GpioKind::Cdev => match gpiocdev::chip::Chip::from_path(&g.chip).and_then(|c| c.info()) {
            Ok(info) if max.is_some_and(|m| m >= info.num_lines) => Check::new(
                Level::Fail,
                "gpio",
                format!("{} has {} lines; line {} is configured", g.chip, info.num_lines, max.unwrap_or(0)),
                Some("check the line numbers (gpioinfo)"),
            ),
            Ok(info) => {
                Check::new(Level::Pass, "gpio", format!("{} ({}, {} lines)", g.chip, info.label, info.num_lines), None)
            }
            Err(e) => Check::new(
                Level::Fail,
                "gpio",
                format!("{}: {e}", g.chip),
                Some("check [gpio] chip (gpiodetect) and that the user is in group gpio"),
            ),
        },
        super::gpio::GpioKind::Rppal => match rppal::gpio::Gpio::new() {
            Ok(_) => Check::new(Level::Pass, "gpio", "Raspberry Pi GPIO accessible", None),
            Err(e) => Check::new(
                Level::Fail,
                "gpio",
                format!("Raspberry Pi GPIO: {e}"),
                Some("rppal only works on a Raspberry Pi; use backend = \"cdev\" elsewhere; check group gpio"),
            ),
        },
    }
}

/// Connects to the server as the daemon would (TLS verified when the URL says so) and reads
/// its health. Returns whether it answered, and its health.
async fn server_check(cfg: &DeviceConfig, out: &mut Vec<Check>) -> (bool, Option<Health>) {
    let url = &cfg.server.url;
    let dialer = match cfg.dialer() {
        Ok(d) => d,
        Err(e) => {
            out.push(Check::new(Level::Fail, "server", format!("{url}: {e}"), Some("check [server] url and ca_file")));
            return (false, None);
        }
    };
    let what = if dialer.url().is_tls() { "reachable, certificate verified" } else { "reachable" };
    match dialer.request("GET", "/healthz", &[], Vec::new(), Duration::from_secs(3)).await {
        Ok(answer) => {
            out.push(Check::new(Level::Pass, "server", format!("{url} {what} ({})", dialer.url().authority()), None));
            (true, Some(health(&answer)))
        }
        Err(e) => {
            let hint = match e.code() {
                Some(ErrorCode::TLS_UNKNOWN_CA) => {
                    "set [server] ca_file to the CA that signed the server's certificate"
                }
                Some(ErrorCode::TLS_CERT_EXPIRED) => "renew the server's certificate, or set this device's clock",
                Some(ErrorCode::TLS_NAME_MISMATCH) => "use the name the certificate was issued for in [server] url",
                Some(_) => "is the port a TLS port? wss:// needs [tls] on the server",
                None => "is the server running? check [server] url, the network and firewalls",
            };
            let code = e.code().map(|c| format!(" (code {})", c.0)).unwrap_or_default();
            out.push(Check::new(Level::Fail, "server", format!("{url}: {e}{code}"), Some(hint)));
            (false, None)
        }
    }
}

struct Health {
    date: Option<std::time::SystemTime>,
    media_port: Option<u16>,
    media_tcp_port: Option<u16>,
}

/// The health answer's clock (its Date header) and media port.
fn health(a: &crate::dial::Answer) -> Health {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    let media_port = v["media_port"].as_u64().and_then(|p| u16::try_from(p).ok());
    let media_tcp_port = v["media_tcp_port"].as_u64().and_then(|p| u16::try_from(p).ok());
    let date = a
        .headers
        .get(hyper::header::DATE)
        .and_then(|d| d.to_str().ok())
        .and_then(|d| httpdate::parse_http_date(d).ok());
    Health { date, media_port, media_tcp_port }
}

async fn credentials(cfg: &DeviceConfig) -> Check {
    // A running daemon is already logged in with these credentials: ask it rather than log
    // in again (a second login with the same user ID would kick it out).
    if let Ok(r) = super::control::request(&cfg.control.socket_path(), &super::control::Request::Status).await
        && let Some(s) = r.status
    {
        return match (s.room.state, s.room.error_code) {
            (crate::engine::RoomState::Connected, _) => Check::new(
                Level::Pass,
                "credentials",
                format!("accepted: the running daemon is logged in to {}", s.room.room_id),
                None,
            ),
            (state, 0) => Check::new(
                Level::Warn,
                "credentials",
                format!("the running daemon is {state} ({})", s.room.reason),
                Some("see `callbox status`"),
            ),
            (_, code) => Check::new(
                Level::Fail,
                "credentials",
                format!("the running daemon's login failed with {code}"),
                super::daemon::hint_for(code),
            ),
        };
    }
    use crate::engine::{Engine, EngineProfile, ReconnectPolicy, RoomConfig, UserInfo};
    let creds = match cfg.credentials() {
        Ok(c) => c,
        Err(e) => return Check::new(Level::Fail, "credentials", e.to_string(), Some("fix the named key")),
    };
    let mut token = None;
    if creds.fetches() {
        match creds.fetch().await {
            Ok(t) => token = Some(t),
            Err(e) => {
                let hint = match e.code {
                    ErrorCode::DEVICE_KEY_INVALID | ErrorCode::DEVICE_KEY_REVOKED => {
                        "the key is unknown or revoked: ask the administrator for a new one"
                    }
                    _ => "check the token source and its reachability",
                };
                return Check::new(
                    Level::Fail,
                    "credentials",
                    format!("no token from {}: {e} (code {})", creds.kind(), e.code.0),
                    Some(hint),
                );
            }
        }
    }
    let auth = creds.engine_auth();
    let mut p = EngineProfile::new(cfg.server.app_id, auth, cfg.server.url.clone());
    p.ca_file = cfg.server.ca_file.clone().map(Into::into);
    p.reconnect = ReconnectPolicy {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(1),
        give_up_after: Some(Duration::from_secs(3)),
        ..Default::default()
    };
    let Ok((engine, _events)) = Engine::create(p) else {
        return Check::new(
            Level::Fail,
            "credentials",
            "the configured credentials are unusable",
            Some("check [server] app_sign/token"),
        );
    };
    let user = UserInfo::new(cfg.room.user_id.clone(), cfg.room.user_name.clone());
    let login = engine.login_room(&cfg.room.room_id, user, RoomConfig { token, is_user_status_notify: false });
    let r = tokio::time::timeout(Duration::from_secs(6), login).await;
    engine.destroy().await;
    match r {
        Ok(Ok(())) => Check::new(
            Level::Pass,
            "credentials",
            format!("accepted: logged in to {} as {} and out again", cfg.room.room_id, cfg.room.user_id),
            None,
        ),
        Ok(Err(e)) => Check::new(
            Level::Fail,
            "credentials",
            format!("login refused: {e} (code {})", e.code().0),
            super::daemon::hint_for(e.code().0),
        ),
        Err(_) => Check::new(
            Level::Fail,
            "credentials",
            "no login answer in 6 s",
            Some("check [server] url points at a callbox server"),
        ),
    }
}

/// Whether the kernel believes the clock is NTP-synchronised.
fn kernel_clock_synced() -> bool {
    // SAFETY: adjtimex with modes = 0 only reads the kernel's clock state into `tx`.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    let state = unsafe { libc::adjtimex(&mut tx) };
    state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0
}

fn clock(server_date: Option<std::time::SystemTime>) -> Check {
    let now = std::time::SystemTime::now();
    let unix = now.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // 2025-01-01: a clock before that is a board that booted without RTC or network time.
    if unix < 1_735_689_600 {
        return Check::new(
            Level::Fail,
            "clock",
            format!("the clock says {} (Unix {unix}): far in the past", httpdate::fmt_http_date(now)),
            Some("tokens will be refused: enable NTP (timedatectl set-ntp true) or fit an RTC"),
        );
    }
    let skew = server_date.map(|d| match now.duration_since(d) {
        Ok(ahead) => ahead.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    });
    let synced = kernel_clock_synced();
    match skew {
        Some(s) if s.abs() > 60 => Check::new(
            Level::Fail,
            "clock",
            format!("{s:+} s off the server's clock"),
            Some("tokens will be refused or expire early: enable NTP (timedatectl)"),
        ),
        Some(s) if synced => {
            Check::new(Level::Pass, "clock", format!("NTP-synchronised, {s:+} s from the server"), None)
        }
        Some(s) => Check::new(
            Level::Warn,
            "clock",
            format!("{s:+} s from the server, but the kernel reports no NTP sync"),
            Some("enable NTP (timedatectl set-ntp true) so the clock stays right"),
        ),
        None if synced => Check::new(Level::Pass, "clock", "NTP-synchronised", None),
        None => Check::new(
            Level::Warn,
            "clock",
            "the kernel reports no NTP sync (server clock not compared)",
            Some("enable NTP (timedatectl set-ntp true)"),
        ),
    }
}

async fn media_port(server: SocketAddr, port: Option<u16>, tcp_port: Option<u16>, bind: &str) -> Check {
    let Some(port) = port else {
        return Check::new(
            Level::Fail,
            "media",
            "the server has media disabled",
            Some("set [media] enabled = true on the server"),
        );
    };
    let target = SocketAddr::new(server.ip(), port);
    let local: std::net::IpAddr = bind.parse().unwrap_or(if server.is_ipv4() {
        [0, 0, 0, 0].into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    });
    let Ok(sock) = tokio::net::UdpSocket::bind(SocketAddr::new(local, 0)).await else {
        return Check::new(
            Level::Fail,
            "media",
            format!("cannot open a UDP socket on {local}"),
            Some("check [media] bind"),
        );
    };
    let txid: [u8; 12] = rand::random();
    let req = crate::rtc::stun::binding_request(txid);
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        let _ = sock.send_to(&req, target).await;
        if let Ok(Ok((n, _))) = tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf)).await
            && let Some(mapped) = crate::rtc::stun::mapped_address(&buf[..n], txid)
        {
            return Check::new(
                Level::Pass,
                "media",
                format!("UDP {target} answers; the server sees this device as {mapped}"),
                None,
            );
        }
    }
    let udp = format!("no answer from UDP {target}");
    match tcp_port {
        Some(p) => match media_over_tcp(local, SocketAddr::new(server.ip(), p)).await {
            Ok(mapped) => Check::new(
                Level::Warn,
                "media",
                format!(
                    "{udp}; TCP {} answers (the server sees {mapped}): calls run over ICE-TCP",
                    SocketAddr::new(server.ip(), p)
                ),
                Some("open UDP to the server's media port for lower latency under loss"),
            ),
            Err(e) => Check::new(
                Level::Fail,
                "media",
                format!("{udp}, nor from TCP {}: {e}", SocketAddr::new(server.ip(), p)),
                Some(
                    "open UDP (or at least TCP) to the server's media port (firewall/NAT); signalling alone cannot carry calls",
                ),
            ),
        },
        None => Check::new(
            Level::Fail,
            "media",
            udp,
            Some("open UDP to the server's media port (firewall/NAT); TCP signalling alone cannot carry calls"),
        ),
    }
}

/// A STUN binding request in an RFC 4571 frame over TCP to the media port (the ICE-TCP
/// path): the address the server saw, or why not.
async fn media_over_tcp(local: std::net::IpAddr, target: SocketAddr) -> Result<SocketAddr, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = if target.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }
        .map_err(|e| e.to_string())?;
    if !local.is_unspecified() && local.is_ipv4() == target.is_ipv4() {
        socket.bind(SocketAddr::new(local, 0)).map_err(|e| e.to_string())?;
    }
    let talk = async {
        let mut s = socket.connect(target).await.map_err(|e| e.to_string())?;
        let txid: [u8; 12] = rand::random();
        let req = crate::rtc::stun::binding_request(txid);
        let mut framed = (req.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&req);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        crate::rtc::stun::mapped_address(&buf, txid).ok_or_else(|| "not a STUN answer".to_string())
    };
    tokio::time::timeout(Duration::from_secs(3), talk).await.map_err(|_| "no answer within 3 s".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_configured_is_checked_not_just_listed() {
        // A card that never exists: opening it fails with ALSA's reason.
        let e = open_alsa("alsasrc", "hw:99,0").unwrap_err();
        assert!(!e.is_empty());
        assert!(open_alsa("alsasink", "hw:99,0").is_err());
        // libcamera passes only when GStreamer has libcamerasrc.
        let c = camera(Some(&VideoSource::Libcamera), false, &[]);
        assert_eq!(c.level == Level::Fail, !media::has_element("libcamerasrc"), "{c}");
        // A station without a camera says it publishes audio only; one that expected a
        // camera (`auto`) and found none is a warning, not the test pattern.
        let none = camera(Some(&VideoSource::None), false, &[]);
        assert!(none.level == Level::Pass && none.to_string().contains("audio only"), "{none}");
        let lost = camera(Some(&VideoSource::None), true, &[]);
        assert!(lost.level == Level::Warn && lost.to_string().contains("found no camera"), "{lost}");
        // Without a usable config, no playback device is not a PASS.
        let s = audio(None);
        let speaker = s.iter().find(|c| c.name == "speaker").unwrap();
        if pcm_devices('p').is_empty() {
            assert_eq!(speaker.level, Level::Warn, "{speaker}");
        }
    }

    #[test]
    fn lines_and_url_parsing() {
        let c = Check::new(Level::Warn, "gpio", "simulated", Some("use cdev"));
        assert_eq!(c.to_string(), "WARN  gpio         simulated  -> use cdev");
        assert!(clock(Some(std::time::SystemTime::now() - Duration::from_secs(600))).level == Level::Fail);
    }
}
