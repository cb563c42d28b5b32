//! The fault tier: the real server, a kiosk `callbox device` and a `callbox peer`, each in a
//! network namespace of its own behind a router namespace (`callbox_faultnet`), with cuts
//! and loss applied on the router so both ends see silent loss. Every case asserts that
//! media decodes again on both sides after the fault and what the peer saw of it.
//!
//! The cases share one lock: cargo runs tests in parallel, and each builds its own lab.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callbox::device::control::{self, Request};
use callbox::device::status::Status;
use callbox_faultnet::{Direction, Fault, Lab};
use common::{APP, SECRET};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_callbox");
/// Media must decode again within this long after a fault ends.
const RECOVER: Duration = Duration::from_secs(30);

static LOCK: Mutex<()> = Mutex::new(());

/// JSON lines a child printed, with their arrival time.
type Lines = Arc<Mutex<Vec<(Instant, Value)>>>;

fn lock() -> std::sync::MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The three parties and their lab.
struct Call {
    // Field order is drop order: processes first, then the namespaces.
    peer: Option<Proc>,
    device: Option<Proc>,
    server: Option<Proc>,
    lines: Lines,
    dir: tempfile::TempDir,
    socket: PathBuf,
    grace_secs: u64,
    /// Signalling over wss with this test CA (the field setup), else ws.
    pki: Option<common::Pki>,
    /// More `[media]` keys for the server.
    server_extra: String,
    /// The device's `[video]` bitrate line, replaced (a test pattern, a bitrate).
    device_video: String,
    lab: Lab,
}

impl Call {
    /// Server (grace `grace_secs`), kiosk device "door" publishing door-main, and peer "flat"
    /// publishing flat-main; returns once both decode each other.
    fn start(grace_secs: u64) -> Call {
        Call::start_with(grace_secs, false)
    }

    /// The same with signalling over wss (a certificate for the server's address from a
    /// test CA that the device and the peer trust).
    fn start_with(grace_secs: u64, tls: bool) -> Call {
        Call::start_after(grace_secs, tls, None)
    }

    /// The same with `fault` on the device's link from before anything starts.
    fn start_after(grace_secs: u64, tls: bool, fault: Option<Fault>) -> Call {
        let lab = Lab::new(&["server", "device", "peer"]).expect("network namespaces (root, ip, nft)");
        let mut call = Call::new(lab, grace_secs, tls);
        if let Some(f) = fault {
            call.lab.apply("device", f).unwrap();
        }
        call.start_server();
        call.start_device();
        call.start_peer();
        call.wait_both_decode(Instant::now(), "the first call");
        call
    }

    /// The parties' files and, with `tls`, a test CA and the server's certificate.
    fn new(lab: Lab, grace_secs: u64, tls: bool) -> Call {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let mut call = Call {
            peer: None,
            device: None,
            server: None,
            lines: Arc::new(Mutex::new(Vec::new())),
            dir,
            socket,
            grace_secs,
            pki: None,
            server_extra: String::new(),
            device_video: String::new(),
            lab,
        };
        if tls {
            let pki = common::Pki::new();
            pki.leaf("server", &[&call.server_ip().to_string()], false);
            call.pki = Some(pki);
        }
        call
    }

    fn server_ip(&self) -> std::net::Ipv4Addr {
        self.lab.host("server").addr
    }

    fn start_server(&mut self) {
        let tls = self.pki.as_ref().map(|p| p.tls_section("server")).unwrap_or_default();
        let extra = format!("{}{tls}", self.server_extra);
        self.server = Some(spawn_server(&self.lab, self.dir.path(), self.grace_secs, &extra));
    }

    /// The signalling URL, and the CA to trust for it.
    fn url(&self) -> (String, Option<PathBuf>) {
        match &self.pki {
            Some(p) => (format!("wss://{}:7880", self.server_ip()), Some(p.ca_file())),
            None => (format!("ws://{}:7880", self.server_ip()), None),
        }
    }

    fn start_device(&mut self) {
        let cfg = self.dir.path().join("device.toml");
        let (url, ca) = self.url();
        let mut text = common::device_config(&url, "kiosk", &self.socket, "");
        if !self.device_video.is_empty() {
            text = text.replace("bitrate_kbps = 300\n", &self.device_video);
        }
        if let Some(ca) = ca {
            text = text.replace("[room]", &format!("ca_file = \"{}\"\n[room]", ca.display()));
        }
        std::fs::write(&cfg, text).unwrap();
        let log = self.dir.path().join("device.log");
        self.device = Some(spawn_device(&self.lab, "device", &cfg, &log, "info,callbox=debug"));
    }

    fn start_peer(&mut self) {
        let ip = self.lab.host("peer").addr.to_string();
        let log = std::fs::File::create(self.dir.path().join("peer.log")).unwrap();
        let (url, ca) = self.url();
        let mut cmd = self.lab.command("peer", BIN);
        cmd.args(["peer", "--server", &url, "--user", "flat"]);
        if let Some(ca) = ca {
            cmd.arg("--ca-file").arg(ca);
        }
        let mut child = cmd
            .env("CALLBOX_APP_SECRET", SECRET)
            .args(["--publish", "flat-main", "--bind", &ip])
            .env("RUST_LOG", "callbox=debug")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    lines.lock().unwrap().push((Instant::now(), v));
                }
            }
        });
        self.peer = Some(Proc(child));
    }

    fn status(&self) -> Option<Status> {
        control_status(&self.socket, &Request::Status, Duration::from_secs(2))
    }

    /// The peer decodes door-main in a quality window wholly after `since`.
    fn peer_decodes_since(&self, since: Instant) -> bool {
        self.lines.lock().unwrap().iter().any(|(t, v)| {
            *t >= since + Duration::from_millis(3200)
                && v["event"] == "quality"
                && v["stream_id"] == "door-main"
                && v["render_fps"].as_f64().unwrap_or(0.0) > 1.0
        })
    }

    /// What the peer was told about the door since `since`: ("user"|"stream", "add"|"delete").
    fn peer_saw_door(&self, since: Instant) -> Vec<(String, String)> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, v)| {
                *t >= since
                    && (v["event"] == "user" && v["user_id"] == "door"
                        || v["event"] == "stream" && v["stream_id"] == "door-main")
            })
            .map(|(_, v)| {
                (v["event"].as_str().unwrap_or("").to_string(), v["update"].as_str().unwrap_or("").to_string())
            })
            .collect()
    }

    /// The device decodes flat-main and publishes door-main, with neither stalled and the
    /// online LED steady, in a quality window wholly after `since`.
    fn device_flows_since(&self, since: Instant, first: &mut Option<u64>) -> bool {
        if since.elapsed() < Duration::from_millis(6500) {
            return false;
        }
        let Some(s) = self.status() else { return false };
        let Some(play) = s.playing.iter().find(|p| p.stream_id == "flat-main") else { return false };
        let publishing = s.publishing.iter().any(|p| {
            p.stream_id == "door-main" && p.state == callbox::engine::PublisherState::Publishing && !p.stalled
        });
        let fresh = first.replace(play.frames_decoded).is_some_and(|f| f != play.frames_decoded);
        let online = s.gpio.outputs.get("online").map(String::as_str) == Some("on");
        publishing
            && online
            && play.state == callbox::engine::PlayerState::Playing
            && !play.stalled
            && fresh
            && play.quality.as_ref().is_some_and(|q| q.render_fps > 1.0)
    }

    /// Waits until both sides decode each other after `since`, at most [`RECOVER`] after it
    /// (plus the measuring windows); returns how long it took.
    fn wait_both_decode(&self, since: Instant, what: &str) -> Duration {
        let deadline = since + RECOVER + Duration::from_secs(10);
        let mut first = None;
        let (mut peer_ok, mut device_ok) = (false, false);
        while Instant::now() < deadline {
            peer_ok = peer_ok || self.peer_decodes_since(since);
            device_ok = device_ok || self.device_flows_since(since, &mut first);
            if peer_ok && device_ok {
                return since.elapsed();
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "{what}: media did not decode again on both sides (peer {peer_ok}, device {device_ok}); status {:#?}\n--- device log tail:\n{}\n--- server log tail:\n{}\n--- peer log tail:\n{}",
            self.status(),
            self.log_tail("device.log"),
            self.log_tail("server.log"),
            self.log_tail("peer.log")
        );
    }

    fn log_tail(&self, name: &str) -> String {
        let t = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Applies `fault` on the device's link for `d`, then lifts it; returns when it ended.
    fn fault_for(&self, fault: Fault, d: Duration) -> Instant {
        self.lab.apply("device", fault).unwrap();
        std::thread::sleep(d);
        self.lab.clear("device").unwrap();
        Instant::now()
    }

    fn device_pid(&self) -> u32 {
        self.device.as_ref().unwrap().0.id()
    }
}

/// `callbox device --config cfg` in namespace `host`, its log appended to `log`.
fn spawn_device(lab: &Lab, host: &str, cfg: &std::path::Path, log: &std::path::Path, rust_log: &str) -> Proc {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = lab
        .command(host, BIN)
        .args(["device", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", rust_log)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    Proc(child)
}

/// A control request to the daemon at `socket`: the status it answers with, if it answers
/// within `limit`.
fn control_status(socket: &std::path::Path, req: &Request, limit: Duration) -> Option<Status> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { tokio::time::timeout(limit, control::request(socket, req)).await.ok()?.ok()?.status })
}

/// The real server in the lab's "server" namespace (10.203.1.2:7880, media UDP 7882).
fn spawn_server(lab: &Lab, dir: &std::path::Path, grace_secs: u64, extra: &str) -> Proc {
    let ip = lab.host("server").addr;
    let cfg = dir.join("server.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[apps]]\napp_id = {APP}\nsecret = \"{SECRET}\"\n[session]\ngrace_secs = {grace_secs}\n[media]\nbind = \"{ip}\"\nport = 7882\n{extra}"
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("server.log")).unwrap();
    let mut child = lab
        .command("server", BIN)
        .args(["server", "--config", cfg.to_str().unwrap(), "--listen", &format!("{ip}:7880")])
        .env("RUST_LOG", "callbox=debug")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    // The first line says it listens.
    let mut line = String::new();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    assert!(line.contains("://"), "server did not start: {line}");
    // Keep reading: the server prints more, and a closed pipe would end it.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Proc(child)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn cuts_within_grace_come_back_without_churn() {
    let _l = lock();
    let call = Call::start(45);
    for secs in [3, 5, 10] {
        let began = Instant::now();
        let restored = if secs == 10 {
            // While media is down, status and LEDs say so (not "Publishing"/"Playing").
            call.lab.apply("device", Fault::Cut).unwrap();
            let mut told = None;
            while began.elapsed() < Duration::from_secs(9) && told.is_none() {
                told = call.status().filter(|s| {
                    s.publishing
                        .iter()
                        .any(|p| p.stalled && p.state == callbox::engine::PublisherState::PublishRequesting)
                        && s.playing
                            .iter()
                            .any(|p| p.stalled && p.state == callbox::engine::PlayerState::PlayRequesting)
                        && s.gpio.outputs.get("online").map(String::as_str) == Some("blink")
                });
                std::thread::sleep(Duration::from_millis(200));
            }
            let told = told.unwrap_or_else(|| panic!("during the cut the status claims media: {:#?}", call.status()));
            assert!(told.summary().contains("media stalled"), "{}", told.summary());
            eprintln!("10 s cut: stalled in status after {:.1} s", began.elapsed().as_secs_f64());
            std::thread::sleep(Duration::from_secs(secs).saturating_sub(began.elapsed()));
            call.lab.clear("device").unwrap();
            Instant::now()
        } else {
            call.fault_for(Fault::Cut, Duration::from_secs(secs))
        };
        let took = call.wait_both_decode(restored, &format!("{secs} s cut"));
        eprintln!("{secs} s cut: both sides decode again, checked {:.1} s after the restore", took.as_secs_f64());
        assert!(call.peer_saw_door(began).is_empty(), "{secs} s cut: the peer saw {:?}", call.peer_saw_door(began));
    }
}

#[test]
fn cut_longer_than_grace_logs_in_again_and_streams_come_back() {
    let _l = lock();
    // Over wss, as deployed on the internet: the re-login runs a fresh TLS handshake.
    let call = Call::start_with(8, true);
    let began = Instant::now();
    let restored = call.fault_for(Fault::Cut, Duration::from_secs(8 + 15));
    call.wait_both_decode(restored, "a cut longer than grace");
    // The server removed the door after grace; the re-login brought user and stream back.
    let saw = call.peer_saw_door(began);
    for want in [("user", "delete"), ("user", "add"), ("stream", "add")] {
        assert!(saw.contains(&(want.0.into(), want.1.into())), "peer saw {saw:?}");
    }
}

#[test]
fn udp_only_and_tcp_only_cuts() {
    let _l = lock();
    let call = Call::start(45);
    let began = Instant::now();
    let restored = call.fault_for(Fault::CutUdp, Duration::from_secs(10));
    call.wait_both_decode(restored, "a 10 s UDP cut");
    let restored = call.fault_for(Fault::CutTcp, Duration::from_secs(10));
    call.wait_both_decode(restored, "a 10 s TCP cut");
    assert!(call.peer_saw_door(began).is_empty(), "the peer saw {:?}", call.peer_saw_door(began));
}

/// A device on a network that drops all UDP (corporate, hotel, some LTE): the call comes up
/// over ICE-TCP to the server's TCP media port, and both sides decode each other.
#[test]
fn a_device_whose_udp_is_blocked_calls_over_ice_tcp() {
    let _l = lock();
    let began = Instant::now();
    let call = Call::start_after(45, false, Some(Fault::CutUdp));
    eprintln!("ICE-TCP: both sides decode {:?} after the start", began.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    let path = |s: &Status| s.publishing.iter().find_map(|p| p.quality.as_ref().map(|q| q.path.clone()));
    let mut seen = None;
    while Instant::now() < deadline && seen.as_deref() != Some("tcp") {
        seen = call.status().and_then(|s| path(&s));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        seen.as_deref(),
        Some("tcp"),
        "the device's status names the path; device log:\n{}",
        call.log_tail("device.log")
    );
    let peer_path = call.lines.lock().unwrap().iter().rev().find_map(|(_, v)| {
        (v["event"] == "quality" && v["stream_id"] == "door-main").then(|| v["path"].as_str().map(String::from))
    });
    assert_eq!(peer_path.flatten().as_deref(), Some("udp"), "the peer, whose UDP passes, stays on UDP");
    let play = call.status().and_then(|s| s.playing.iter().find_map(|p| p.quality.as_ref().map(|q| q.path.clone())));
    assert_eq!(play.as_deref(), Some("tcp"));
    // Doctor on that network: UDP gets no answer, the media port answers over TCP (WARN).
    let cfg = call.dir.path().join("device.toml");
    let out = call.lab.command("device", BIN).args(["doctor", "--config", cfg.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let media = text.lines().find(|l| l.contains(" media ")).unwrap_or_default().to_string();
    assert!(media.starts_with("WARN") && media.contains("calls run over ICE-TCP"), "doctor said:\n{text}");
}

/// Only TCP reaches the server's signalling port and a TURN server's 443 (UDP dropped, the
/// media port's TCP too): the call comes up through TURN over TLS, with credentials the
/// server handed out at login (coturn `use-auth-secret`).
#[test]
fn a_device_behind_a_firewall_that_passes_only_tcp_calls_through_turn_over_tls() {
    let _l = lock();
    let lab = Lab::new(&["server", "device", "peer", "turn"]).expect("network namespaces (root, ip, nft)");
    let mut call = Call::new(lab, 45, true);
    let turn_ip = call.lab.host("turn").addr.to_string();
    let (crt, key) = call.pki.as_ref().unwrap().leaf("turn", &[&turn_ip], false);
    let conf = call.dir.path().join("turnserver.conf");
    std::fs::write(&conf, "").unwrap();
    let log = std::fs::File::create(call.dir.path().join("turn.log")).unwrap();
    let _turn = Proc(
        call.lab
            .command("turn", "turnserver")
            .arg("-c")
            .arg(&conf)
            .args(["-n", "--no-cli", "--log-file", "stdout", "--simple-log", "--fingerprint", "--realm", "callbox"])
            .args(["--listening-ip", &turn_ip, "--relay-ip", &turn_ip, "--listening-port", "3478"])
            .args(["--tls-listening-port", "443", "--use-auth-secret", "--static-auth-secret", "turn-secret"])
            .arg("--cert")
            .arg(&crt)
            .arg("--pkey")
            .arg(&key)
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("coturn (turnserver) installed"),
    );
    call.server_extra = format!("turn_urls = [\"turns:{turn_ip}:443?transport=tcp\"]\nturn_secret = \"turn-secret\"\n");
    call.lab.apply("device", Fault::CutUdp).unwrap();
    call.lab.apply("device", Fault::CutTcpPort(7882)).unwrap();
    let began = Instant::now();
    call.start_server();
    call.start_device();
    call.start_peer();
    call.wait_both_decode(began, "the call through TURN/TLS");
    eprintln!("TURN/TLS: both sides decode {:?} after the start", began.elapsed());
    // The status names the path once a quality window has passed on it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let paths = |s: &Status| {
        let publish: Vec<String> =
            s.publishing.iter().map(|p| p.quality.as_ref().map(|q| q.path.clone()).unwrap_or_default()).collect();
        let play: Vec<String> =
            s.playing.iter().map(|p| p.quality.as_ref().map(|q| q.path.clone()).unwrap_or_default()).collect();
        (publish, play)
    };
    let want = (vec!["turn-tls".to_string()], vec!["turn-tls".to_string()]);
    let mut seen = None;
    while Instant::now() < deadline && seen.as_ref() != Some(&want) {
        seen = call.status().map(|s| paths(&s));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(seen, Some(want), "the device's status names the path; device log:\n{}", call.log_tail("device.log"));
    let peer_path = call.lines.lock().unwrap().iter().rev().find_map(|(_, v)| {
        (v["event"] == "quality" && v["stream_id"] == "door-main").then(|| v["path"].as_str().map(String::from))
    });
    assert_eq!(peer_path.flatten().as_deref(), Some("udp"), "the peer, whose UDP passes, stays on UDP");
}

#[test]
fn server_killed_and_restarted() {
    let _l = lock();
    let mut call = Call::start(45);
    call.server = None; // kill -9
    std::thread::sleep(Duration::from_secs(2));
    call.start_server();
    let restarted = Instant::now();
    call.wait_both_decode(restarted, "after the server restart");
}

#[test]
fn device_killed_is_removed_after_grace() {
    let _l = lock();
    let mut call = Call::start(5);
    let killed = Instant::now();
    call.device = None; // kill -9: no logout
    let deadline = killed + Duration::from_secs(30);
    while Instant::now() < deadline && !call.peer_saw_door(killed).contains(&("user".into(), "delete".into())) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let saw = call.peer_saw_door(killed);
    assert!(
        saw.contains(&("stream".into(), "delete".into())) && saw.contains(&("user".into(), "delete".into())),
        "{saw:?}"
    );
    // Grace counts from the last heartbeat (every 2 s), which came before the kill.
    let removed = killed.elapsed();
    assert!(removed >= Duration::from_millis(2500), "removed after {removed:?}, before grace");
}

#[test]
fn random_loss_is_repaired_and_media_keeps_decoding() {
    let _l = lock();
    let call = Call::start(45);
    call.lab.apply("device", Fault::Loss(20)).unwrap();
    let began = Instant::now();
    // Under 20% loss both ways, both sides keep decoding (checked in windows inside the
    // 20 s of loss).
    call.wait_both_decode(began, "20% loss");
    // What the device's Opus FEC is sized for, seen each second (it follows the loss the
    // server reports for the audio, each report's own).
    let mut fec_sized = Vec::new();
    // The play figures are the player pipeline's own: a relink under this loss starts them
    // again, so the fullest sample of the window is kept rather than the last one.
    let mut fullest: Option<callbox::device::status::PlayFigures> = None;
    while began.elapsed() < Duration::from_secs(20) {
        let s = call.status();
        let p = s.as_ref().and_then(|s| s.publishing.iter().find(|p| p.stream_id == "door-main"));
        fec_sized.extend(p.and_then(|p| p.quality.as_ref()).map(|q| q.audio_fec_percent));
        let q = s
            .as_ref()
            .and_then(|s| s.playing.iter().find(|p| p.stream_id == "flat-main"))
            .and_then(|p| p.quality.clone());
        if let Some(q) = q
            && fullest.as_ref().is_none_or(|f| q.repair.video_frames >= f.repair.video_frames)
        {
            fullest = Some(q);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    // Repair is at work on both hops the loss is on: the device's uplink (the server's
    // counters, the device's retransmissions) and the server's hop to the device (the
    // device's play figures).
    let status = call.status().expect("status");
    let last = status.playing.iter().find(|p| p.stream_id == "flat-main").and_then(|p| p.quality.clone());
    let played = match (last, fullest) {
        (Some(l), Some(f)) if f.repair.video_frames > l.repair.video_frames => Some(f),
        (l, f) => l.or(f),
    };
    let published = status.publishing.iter().find(|p| p.stream_id == "door-main").and_then(|p| p.quality.clone());
    let text = metrics(&call.lab, "peer");
    call.lab.clear("device").unwrap();
    let played = played.unwrap_or_else(|| panic!("no play figures for flat-main in {status:?}"));
    let published = published.unwrap_or_else(|| panic!("no publish figures for door-main in {status:?}"));
    let r = played.repair;
    println!(
        "device plays at {:.1} fps: {r:?}; publishes {} retransmitted, audio FEC for {}%; server repaired rtx {} fec {}",
        played.render_fps,
        published.retransmitted,
        published.audio_fec_percent,
        metric(&text, "callbox_media_repaired_total{how=\"rtx\"}"),
        metric(&text, "callbox_media_repaired_total{how=\"fec\"}"),
    );
    assert!(r.video_retransmitted > 0 && r.video_fec_rebuilt > 0, "the device's played video was not repaired: {r:?}");
    assert!(r.audio_lost > 0 && r.audio_concealed < r.audio_lost, "no audio frame rebuilt by Opus FEC: {r:?}");
    assert!(published.retransmitted > 0, "the device retransmitted nothing: {published:?}");
    // At least 10 always; about 20 under this loss.
    assert!(fec_sized.iter().any(|&p| p >= 15), "audio FEC not sized for the loss: {fec_sized:?}");
    assert!(
        metric(&text, "callbox_media_repaired_total{how=\"rtx\"}") > 0,
        "the server got no retransmission:\n{text}"
    );
    assert!(metric(&text, "callbox_media_repaired_total{how=\"fec\"}") > 0, "the server rebuilt nothing:\n{text}");
    assert!(call.peer_saw_door(began).is_empty(), "the peer saw {:?}", call.peer_saw_door(began));
}

/// The device's publish figures now: (estimate, players' cap, encoder bitrate, picture).
fn publish_rate(call: &Call) -> Option<(f64, f64, f64, String)> {
    let s = call.status()?;
    let q = s.publishing.iter().find(|p| p.stream_id == "door-main")?.quality.clone()?;
    let video = format!(
        "{} sent {:.0} kbps {:.0} fps loss {:.1}% rtt {:.0}",
        q.video,
        q.video_kbps,
        q.send_fps,
        q.packet_loss * 100.0,
        q.rtt_ms
    );
    Some((q.estimate_kbps, q.cap_kbps, q.target_kbps, video))
}

/// Polls the device's publish figures until `ok` holds, at most `limit`; the figures seen.
fn wait_rate(call: &Call, limit: Duration, ok: impl Fn(f64, f64, f64) -> bool) -> (bool, Vec<String>) {
    let end = Instant::now() + limit;
    let mut seen = Vec::new();
    while Instant::now() < end {
        if let Some((est, cap, target, video)) = publish_rate(call) {
            seen.push(format!(
                "{:.0}s est {est:.0} cap {cap:.0} target {target:.0} {video}",
                limit.as_secs_f64() - (end - Instant::now()).as_secs_f64()
            ));
            if ok(est, cap, target) {
                return (true, seen);
            }
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
    (false, seen)
}

/// The peer's render rate of door-main over quality windows wholly inside [from, to].
fn peer_render_fps(call: &Call, from: Instant, to: Instant) -> Vec<f64> {
    call.lines
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, v)| {
            *t >= from + Duration::from_millis(3200)
                && *t <= to
                && v["event"] == "quality"
                && v["stream_id"] == "door-main"
        })
        .map(|(_, v)| v["render_fps"].as_f64().unwrap_or(0.0))
        .collect()
}

#[test]
fn a_thin_uplink_or_a_thin_player_brings_the_encoder_down_and_video_keeps_decoding() {
    let _l = lock();
    let lab = Lab::new(&["server", "device", "peer"]).expect("network namespaces (root, ip, nft)");
    let mut call = Call::new(lab, 45, false);
    // A scene that does not compress, up to 1500 kbit/s: the encoder really fills it.
    call.device_video = "bitrate_kbps = 1500\ntest_pattern = \"snow\"\n".into();
    call.start_server();
    call.start_device();
    call.start_peer();
    call.wait_both_decode(Instant::now(), "the first call");
    let (ok, seen) = wait_rate(&call, Duration::from_secs(20), |est, _, target| est > 1000.0 && target > 1000.0);
    assert!(ok, "uncapped, the estimate and the encoder stay near the maximum: {seen:#?}");

    // The device's uplink capped at 500 kbit/s: within 30 s the target is under 70% of the
    // maximum, read back from the running encoder's bitrate property.
    call.lab.cap("device", Direction::Up, 500).unwrap();
    let capped = Instant::now();
    let (ok, seen) = wait_rate(&call, Duration::from_secs(30), |est, _, target| est < 1050.0 && target < 1050.0);
    eprintln!("uplink capped at 500 kbit/s: {seen:#?}");
    assert!(ok, "under a 500 kbit/s uplink the encoder's bitrate did not fall below 1050 kbit/s");
    // Then video keeps decoding: at least 5 frames a second over 10 s (three quality
    // windows), while adaptation works the cap out.
    let settled = Instant::now();
    std::thread::sleep(Duration::from_millis(13_500));
    let fps = peer_render_fps(&call, settled, Instant::now());
    let mean = fps.iter().sum::<f64>() / fps.len().max(1) as f64;
    eprintln!(
        "peer render fps under the cap: {fps:.1?}, mean {mean:.1} (capped {:.0} s before); device {:?}",
        settled.duration_since(capped).as_secs_f64(),
        publish_rate(&call)
    );
    assert!(fps.len() >= 3 && mean >= 5.0, "video kept decoding at 5 fps or more: {fps:?}");

    // Lifted: the picture steps back up to full size and rate (each step up is a trial of
    // the path; after failed ones the hold doubles, up to 64 s) and the encoder climbs.
    call.lab.uncap("device", Direction::Up).unwrap();
    let full =
        || publish_rate(&call).is_some_and(|(_, _, target, video)| target > 900.0 && video.starts_with("320x240@15"));
    let lifted = Instant::now();
    while !full() && lifted.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("uplink cap lifted: full again after {:.0} s: {:?}", lifted.elapsed().as_secs_f64(), publish_rate(&call));
    assert!(full(), "the picture did not come back to full size and rate within 90 s of the cap lifted");

    // Only the player's downlink capped: the server's estimate of it reaches the device
    // (REMB) and the device follows.
    call.lab.cap("peer", Direction::Down, 500).unwrap();
    let (ok, seen) =
        wait_rate(&call, Duration::from_secs(30), |_, cap, target| cap > 0.0 && cap < 1050.0 && target < 1050.0);
    eprintln!("player's downlink capped at 500 kbit/s: {seen:#?}");
    assert!(ok, "a thin player did not bring the publisher down");
    call.lab.uncap("peer", Direction::Down).unwrap();
    call.wait_both_decode(Instant::now(), "after the caps");
}

#[test]
fn added_delay_and_jitter_keep_media_decoding() {
    let _l = lock();
    // The device's media to and from the server held 150-180 ms each way (300 ms or more
    // added round trip, packets reordered by the jitter) from the first packet, for 20 s.
    // The relay rewrites new flows only (a flow already in conntrack keeps its path, and
    // CI once read a 1 ms RTT when the first call's UDP pair was up before the relay), so
    // it is in place before anything starts. Its ICE-TCP path to the media port is closed:
    // the delay is on UDP only, and a link renegotiated meanwhile would take the undelayed
    // TCP path.
    let lab = Lab::new(&["server", "device", "peer"]).expect("network namespaces (root, ip, nft)");
    let mut call = Call::new(lab, 45, false);
    call.lab.apply("device", Fault::CutTcpPort(7882)).unwrap();
    let relay =
        call.lab.delay_udp("device", "server", 7882, Duration::from_millis(150), Duration::from_millis(30)).unwrap();
    call.start_server();
    call.start_device();
    call.start_peer();
    call.wait_both_decode(Instant::now(), "300 ms added delay with jitter");
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(20).saturating_sub(began.elapsed()));
    let s = call.status().expect("status");
    let rtt = s.publishing.iter().find_map(|p| p.quality.as_ref().map(|q| q.rtt_ms)).unwrap_or(0.0);
    eprintln!("delay: the device's publish RTT reads {rtt:.0} ms");
    let path = s.publishing.iter().find_map(|p| p.quality.as_ref().map(|q| q.path.clone())).unwrap_or_default();
    assert!(
        rtt >= 250.0,
        "the delay is on the media path (publish RTT {rtt} ms over {path})\n--- device log tail:\n{}",
        call.log_tail("device.log")
    );
    drop(relay);
    let restored = Instant::now();
    call.wait_both_decode(restored, "after the delay is lifted");
    assert!(call.peer_saw_door(began).is_empty(), "the peer saw {:?}", call.peer_saw_door(began));
}

#[test]
fn soak_of_random_cuts_leaves_nothing_stuck_and_nothing_leaked() {
    let _l = lock();
    let call = Call::start(45);
    let pid = call.device_pid();
    let (fd0, rss0) = (fds(pid), rss_kib(pid));
    let mut seed = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..10 {
        let ms = 500 + rand() % 9_500;
        call.fault_for(Fault::Cut, Duration::from_millis(ms));
        eprintln!("soak cut {i}: {ms} ms");
        std::thread::sleep(Duration::from_millis(rand() % 2_000));
    }
    let restored = Instant::now();
    call.wait_both_decode(restored, "after the soak");
    let s = call.status().expect("status");
    assert!(s.publishing.iter().all(|p| !p.stalled) && s.playing.iter().all(|p| !p.stalled), "{s:#?}");
    let (fd1, rss1) = (fds(pid), rss_kib(pid));
    eprintln!("soak: fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB");
    assert!(fd1 <= fd0 + 4, "fds grew {fd0} -> {fd1}");
    assert!(rss1 <= rss0 + 16 * 1024, "RSS grew {rss0} -> {rss1} KiB");
}

/// Runs `tests/interop/webrtcbin_client.py` in the lab's "client" namespace; its JSON lines
/// are collected with their arrival time.
fn webrtcbin(lab: &Lab, mode: &str, url: &str, token: &str, secs: u64) -> (Proc, Lines) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/webrtcbin_client.py");
    let mut child = lab
        .command("client", "/usr/bin/python3")
        .args([script, mode, url, token, &secs.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let lines: Lines = Arc::default();
    let (out, l) = (child.stdout.take().unwrap(), lines.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                l.lock().unwrap().push((Instant::now(), v));
            }
        }
    });
    (Proc(child), lines)
}

/// The server's /metrics text, fetched from the lab's host `from`.
fn metrics(lab: &Lab, from: &str) -> String {
    let url = format!("http://{}:7880/metrics", lab.host("server").addr);
    let code = format!("import urllib.request;print(urllib.request.urlopen('{url}').read().decode())");
    let out = lab.command(from, "/usr/bin/python3").args(["-c", &code]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// One sample's value in a /metrics text (0 if absent).
fn metric(text: &str, sample: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The server's received and forwarded RTP packet counters.
fn media_counters(lab: &Lab) -> (u64, u64) {
    let text = metrics(lab, "client");
    (metric(&text, "callbox_media_packets_in_total"), metric(&text, "callbox_media_packets_out_total"))
}

/// The client's last frame count, and whether its connection ever reported failed.
fn frames_and_failed(lines: &Lines) -> (u64, bool) {
    let l = lines.lock().unwrap();
    let frames = l.iter().rev().find_map(|(_, v)| v["frames"].as_u64()).unwrap_or(0);
    let failed = l.iter().any(|(_, v)| v["state"] == "failed" || v["failed"] == true);
    (frames, failed)
}

#[test]
fn webrtcbin_whip_publisher_and_whep_player_are_never_dropped_while_media_flows() {
    let _l = lock();
    let lab = Lab::new(&["server", "client"]).expect("network namespaces (root, ip, nft)");
    let dir = tempfile::tempdir().unwrap();
    let _server = spawn_server(&lab, dir.path(), 45, "");
    let key = callbox::auth::parse_secret(SECRET).unwrap();
    let now = callbox::auth::unix_now();
    let claims = callbox::auth::Claims {
        app_id: APP,
        user_id: "gst".into(),
        room_id: None,
        privileges: vec!["login".into(), "publish".into(), "play".into()],
        streams: None,
        nbf: None,
        dk: None,
        iat: now,
        exp: now + 3600,
    };
    let token = callbox::auth::mint(&key, &claims).unwrap();
    let base = format!("http://{}:7880", lab.host("server").addr);
    let (_publisher, published) = webrtcbin(&lab, "publish", &format!("{base}/whip/v1/{APP}/lobby/gst-1"), &token, 90);
    let deadline = Instant::now() + Duration::from_secs(30);
    while media_counters(&lab).0 < 100 {
        assert!(Instant::now() < deadline, "no media from the webrtcbin publisher: {:?}", published.lock().unwrap());
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_player, played) = webrtcbin(&lab, "play", &format!("{base}/whep/v1/{APP}/lobby/gst-1"), &token, 80);
    let deadline = Instant::now() + Duration::from_secs(30);
    while frames_and_failed(&played).0 < 10 {
        assert!(Instant::now() < deadline, "the webrtcbin player decodes nothing: {:?}", played.lock().unwrap());
        std::thread::sleep(Duration::from_millis(500));
    }
    // 60 s, far past the 7 s in which a STUN-only liveness dropped libnice clients: in every
    // 10 s window the server receives and forwards more, and the player decodes more.
    let mut prev = (media_counters(&lab), frames_and_failed(&played).0);
    for window in 0..6 {
        std::thread::sleep(Duration::from_secs(10));
        let now = (media_counters(&lab), frames_and_failed(&played).0);
        eprintln!("window {window}: packets in {} out {}, frames decoded {}", now.0.0, now.0.1, now.1);
        assert!(now.0.0 > prev.0.0, "window {window}: the server received nothing from the publisher");
        assert!(now.0.1 > prev.0.1, "window {window}: the server forwarded nothing to the player");
        assert!(now.1 > prev.1, "window {window}: the player decoded nothing");
        prev = now;
    }
    assert!(!frames_and_failed(&published).1, "the publisher's connection failed: {:?}", published.lock().unwrap());
    assert!(!frames_and_failed(&played).1, "the player's connection failed: {:?}", played.lock().unwrap());
}

/// Two intercom daemons, a door and a flat, each in a namespace of its own, and the server.
struct Intercoms {
    door: Option<Proc>,
    flat: Option<Proc>,
    server: Option<Proc>,
    dir: tempfile::TempDir,
    lab: Lab,
}

impl Intercoms {
    fn start() -> Intercoms {
        let lab = Lab::new(&["server", "door", "flat"]).expect("network namespaces (root, ip, nft)");
        let dir = tempfile::tempdir().unwrap();
        let server = spawn_server(&lab, dir.path(), 90, "");
        let mut me = Intercoms { door: None, flat: None, server: Some(server), dir, lab };
        me.door = Some(me.daemon("door", "[call]\ncallee = \"flat\"\n"));
        me.flat = Some(me.daemon("flat", "[call]\ncallee = \"door\"\nanswers = true\ndoor = false\n"));
        me.wait("door", "logged in", |s| s.room.state == callbox::engine::RoomState::Connected);
        me.wait("flat", "logged in", |s| s.room.state == callbox::engine::RoomState::Connected);
        me
    }

    fn socket(&self, who: &str) -> PathBuf {
        self.dir.path().join(format!("{who}.sock"))
    }

    fn daemon(&self, who: &str, call: &str) -> Proc {
        let url = format!("ws://{}:7880", self.lab.host("server").addr);
        let text = common::device_config(&url, "intercom", &self.socket(who), "")
            .replace("user_id = \"door\"", &format!("user_id = \"{who}\""))
            .replace("[call]\n", call);
        let cfg = self.dir.path().join(format!("{who}.toml"));
        std::fs::write(&cfg, text).unwrap();
        spawn_device(&self.lab, who, &cfg, &self.dir.path().join(format!("{who}.log")), "info")
    }

    fn request(&self, who: &str, req: &Request) -> Option<Status> {
        control_status(&self.socket(who), req, Duration::from_secs(5))
    }

    fn press(&self, who: &str, button: &str) {
        self.request(who, &Request::GpioPress { button: button.into(), long: false }).expect("pressed");
    }

    fn wait(&self, who: &str, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + RECOVER;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.request(who, &Request::Status) {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.dir.path().join(format!("{who}.log"))).unwrap_or_default();
        let tail: Vec<&str> = log.lines().collect();
        panic!(
            "{who}: timed out waiting for {what}; last {last:#?}\n{}",
            tail[tail.len().saturating_sub(40)..].join("\n")
        );
    }

    /// `who` decodes `stream` and more frames arrive than at the last look.
    fn decodes(&self, who: &str, stream: &str, what: &str) {
        let frames = |s: &Status| s.playing.iter().find(|p| p.stream_id == stream).map_or(0, |p| p.frames_decoded);
        let before = frames(&self.wait(who, what, |s| frames(s) > 5));
        self.wait(who, what, |s| frames(s) > before + 5);
    }
}

impl Drop for Intercoms {
    fn drop(&mut self) {
        // Processes before the namespaces.
        self.door.take();
        self.flat.take();
        self.server.take();
    }
}

/// A ring while the callee's network is cut for 5 s (within the grace period) is delivered
/// when it comes back, never lost; the call it becomes survives a 5 s cut of either side.
#[test]
fn a_ring_into_a_five_second_cut_is_delivered_and_the_call_survives_cuts_on_either_side() {
    let _l = lock();
    let ic = Intercoms::start();
    ic.lab.apply("flat", Fault::Cut).unwrap();
    let cut_at = Instant::now();
    ic.press("door", "call");
    let s = ic.wait("door", "ringing out", |s| s.call == "ringing_out");
    assert!(s.last_call_end.is_none());
    std::thread::sleep(Duration::from_secs(5).saturating_sub(cut_at.elapsed()));
    ic.lab.clear("flat").unwrap();
    let restored = Instant::now();
    let s = ic.wait("flat", "the ring after the cut", |s| s.call == "ringing" || s.last_call_end.is_some());
    assert_eq!((s.call.as_str(), s.call_peer.as_deref()), ("ringing", Some("door")), "delivered, not lost: {s:#?}");
    eprintln!("ring delivered {:.1} s after a 5 s cut of the callee", restored.elapsed().as_secs_f64());
    ic.press("flat", "call");
    ic.decodes("door", "flat-main", "the door decodes the flat");
    ic.decodes("flat", "door-main", "the flat decodes the door");
    for side in ["door", "flat"] {
        ic.lab.apply(side, Fault::Cut).unwrap();
        std::thread::sleep(Duration::from_secs(5));
        ic.lab.clear(side).unwrap();
        let restored = Instant::now();
        ic.decodes("door", "flat-main", &format!("after a 5 s cut of the {side}: the door decodes the flat"));
        ic.decodes("flat", "door-main", &format!("after a 5 s cut of the {side}: the flat decodes the door"));
        eprintln!("5 s cut of the {side}: both decode again {:.1} s after it", restored.elapsed().as_secs_f64());
        for who in ["door", "flat"] {
            let s = ic.wait(who, "still in the call", |s| s.call == "in_call");
            assert!(s.last_call_end.is_none(), "{who}: the call ended: {s:#?}");
        }
    }
}

/// The levels the peer was last told of `user` (as the server relays that user's own
/// report): (upstream, downstream).
fn peer_saw_network(call: &Call, user: &str, since: Instant) -> Option<(String, String)> {
    call.lines.lock().unwrap().iter().rev().find_map(|(t, v)| {
        (*t >= since && v["event"] == "network" && v["user_id"] == user).then(|| {
            (v["upstream"].as_str().unwrap_or("").to_string(), v["downstream"].as_str().unwrap_or("").to_string())
        })
    })
}

/// Loss on the device's uplink only: its upstream level falls (the server's receiver
/// reports say what its publish link loses) while its downstream, what it receives, stays
/// excellent or good; the peer is told the same of it through the server. When the loss
/// ends, upstream comes back.
#[test]
fn uplink_loss_lowers_upstream_quality_only() {
    let _l = lock();
    let call = Call::start(45);
    let good = |l: &str| l == "excellent" || l == "good";
    let poor = |l: &str| l == "medium" || l == "bad";
    let net = |call: &Call| call.status().and_then(|s| s.network).map(|n| (n.upstream, n.downstream));
    let wait = |what: &str, limit: Duration, ok: &dyn Fn(&str, &str) -> bool| {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        while Instant::now() < end {
            if let Some((up, down)) = net(&call) {
                if ok(&up, &down) {
                    return (up, down);
                }
                seen.push(format!("{up}/{down}"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!("{what}: the device's network stayed {seen:?}");
    };
    wait("before the loss", Duration::from_secs(15), &|up, down| good(up) && good(down));
    call.lab.apply("device", Fault::LossUp(15)).unwrap();
    let began = Instant::now();
    let (up, down) = wait("15% uplink loss", Duration::from_secs(20), &|up, down| poor(up) && good(down));
    println!(
        "15% loss on the device's uplink: upstream {up}, downstream {down} after {:.1} s",
        began.elapsed().as_secs_f64()
    );
    // The peer hears the same of the door through the server (reports every 2 s).
    let end = Instant::now() + Duration::from_secs(10);
    let relayed = loop {
        match peer_saw_network(&call, "door", began) {
            Some((up, down)) if poor(&up) && good(&down) => break (up, down),
            other => assert!(Instant::now() < end, "the peer was told {other:?} of the door"),
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("the peer is told of the door: upstream {}, downstream {}", relayed.0, relayed.1);
    call.lab.clear("device").unwrap();
    wait("after the loss", Duration::from_secs(20), &|up, down| good(up) && good(down));
}
