//! `callbox device` as a real process with a dev config (test sources, fake sinks, sim GPIO)
//! against the real server, driven through its control socket and the CLI, watched from a
//! peer engine and from a NOTIFY_SOCKET.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use callbox::device::control::{self, Request};
use callbox::device::status::Status;
use callbox::engine::{Auth, Engine, EngineEvent, EngineProfile, PublishChannel, RoomConfig, UpdateType};
use callbox::proto::ErrorCode;
use common::*;

/// The daemon process, killed on drop.
struct Device {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
    notify: tokio::net::UnixDatagram,
}

impl Device {
    /// Starts the daemon with a NOTIFY_SOCKET (and WATCHDOG_USEC when `watchdog_us` is set).
    fn start(url: &str, mode: &str, watchdog_us: Option<u64>) -> Device {
        Device::start_with(url, mode, watchdog_us, &[])
    }

    fn start_with(url: &str, mode: &str, watchdog_us: Option<u64>, env: &[(&str, &str)]) -> Device {
        Device::start_edited(url, mode, watchdog_us, env, |c| c)
    }

    /// Starts the daemon with the test config as `edit` changes it.
    fn start_edited(
        url: &str,
        mode: &str,
        watchdog_us: Option<u64>,
        env: &[(&str, &str)],
        edit: impl FnOnce(String) -> String,
    ) -> Device {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let cfg = dir.path().join("device.toml");
        std::fs::write(&cfg, edit(device_config(url, mode, &socket, "127.0.0.1"))).unwrap();
        let notify_path = dir.path().join("notify.sock");
        let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
        let log = std::fs::File::create(dir.path().join("device.log")).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_callbox"));
        cmd.args(["device", "--config", cfg.to_str().unwrap()])
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(us) = watchdog_us {
            cmd.env("WATCHDOG_USEC", us.to_string());
        }
        cmd.envs(env.iter().copied());
        Device { child: cmd.spawn().unwrap(), dir, socket, notify }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("device.log")).unwrap_or_default()
    }

    async fn status(&self) -> Option<Status> {
        control::request(&self.socket, &Request::Status).await.ok().and_then(|r| r.status)
    }

    /// Polls the status until `pred` holds (the daemon is another process: its status is
    /// what can be awaited).
    async fn wait(&self, what: &str, pred: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(s) = self.status().await {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let proc_state = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        panic!("timed out waiting for {what}; process: {proc_state}; last status: {last:#?}\nlog:\n{}", self.log());
    }

    /// Runs a control subcommand of the CLI against this daemon's socket.
    fn cli(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        a.extend(["--socket", self.socket.to_str().unwrap()]);
        Command::new(env!("CARGO_BIN_EXE_callbox")).args(&a).output().unwrap()
    }

    fn press(&self, button: &str) {
        let out = self.cli(&["gpio", "press", button]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// sd_notify messages until one starts with `prefix`.
    async fn notified(&self, prefix: &str) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.notify.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let m = String::from_utf8_lossy(&buf[..n]).to_string();
                    let done = m.starts_with(prefix);
                    got.push(m);
                    if done {
                        return got;
                    }
                }
                _ => panic!("no {prefix} notification; got {got:?}\nlog:\n{}", self.log()),
            }
        }
    }

    fn signal(&self, sig: &str) {
        Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
    }

    /// Waits for the process to exit, at most `limit`.
    fn exit_within(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not exit within {limit:?}\nlog:\n{}", self.log());
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn playing(s: &Status, stream: &str) -> Option<u64> {
    s.playing
        .iter()
        .find(|p| p.stream_id == stream && p.state == callbox::engine::PlayerState::Playing)
        .map(|p| p.frames_decoded)
}

/// The door station of the test config, ringing `callee` (a TOML value) `ring_out_secs`.
fn door(url: &str, callee: &str, ring_secs: u64) -> Device {
    Device::start_edited(url, "intercom", None, &[], |c| {
        c.replace("[call]\n", &format!("[call]\ncallee = {callee}\n"))
            .replace("ring_out_secs = 60", &format!("ring_out_secs = {ring_secs}"))
    })
}

/// An indoor unit `user` in intercom mode: it answers calls that name no callee and has no
/// door relay of its own (its door button opens the door of its call).
fn indoor(url: &str, user: &str) -> Device {
    Device::start_edited(url, "intercom", None, &[], |c| {
        c.replace("user_id = \"door\"", &format!("user_id = \"{user}\""))
            .replace("user_name = \"Door station\"", &format!("user_name = \"{user} unit\""))
            .replace("[call]\n", "[call]\nanswers = true\ndoor = false\ncallee = \"door\"\n")
    })
}

fn connected(s: &Status) -> bool {
    s.room.state == callbox::engine::RoomState::Connected
}

/// Two daemons (a door and a flat) and a visitor: the visitor joining and publishing rings
/// nobody; the door's call button rings the flat; the flat answers and both decode each
/// other (and not the visitor); the flat's door button opens the door, which pulses and
/// confirms; the flat hangs up and both are idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_rings_the_flat_which_answers_opens_the_door_and_hangs_up() {
    let server = Server::start("");
    let door = door(&server.url(), "\"flat\"", 60);
    let flat = indoor(&server.url(), "flat");
    door.wait("door logged in", |s| connected(s) && s.gpio.outputs["online"] == "on").await;
    flat.wait("flat logged in", connected).await;

    // A visitor joins and publishes: nobody rings.
    let (visitor, _ev) = media_engine(&server.url());
    visitor.login_room("lobby", user("visitor"), notify()).await.unwrap();
    visitor.start_publishing_stream("visitor-main", PublishChannel::Main).await.unwrap();
    let seen = |s: &Status| s.streams.iter().any(|x| x.stream_id == "visitor-main");
    let s = door.wait("the door sees the visitor's stream", seen).await;
    assert_eq!((s.call.as_str(), s.chimes), ("idle", 0));
    let s = flat.wait("the flat sees the visitor's stream", seen).await;
    assert_eq!((s.call.as_str(), s.chimes), ("idle", 0), "publishing in the room rings nobody");

    // The door's button rings the flat. The CLI prints the status after the press.
    let out = door.cli(&["gpio", "press", "call"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("call     ringing_out"), "{text}");
    let s = flat.wait("the flat rings", |s| s.call == "ringing" && s.chimes >= 1).await;
    assert_eq!(s.call_peer.as_deref(), Some("door"));
    assert_eq!(s.gpio.outputs["ringing"], "blink");
    assert!(s.publishing.is_empty(), "nothing is sent before answering");

    // The flat answers: both publish and play each other.
    flat.press("call");
    let s = door.wait("the door decodes the flat", |s| playing(s, "flat-main").unwrap_or(0) > 5).await;
    assert_eq!((s.call.as_str(), s.call_peer.as_deref()), ("in_call", Some("flat")));
    assert!(playing(&s, "visitor-main").is_none(), "media only between the call's members");
    let s = flat.wait("the flat decodes the door", |s| playing(s, "door-main").unwrap_or(0) > 5).await;
    assert_eq!(s.gpio.outputs["in_call"], "on");
    assert!(playing(&s, "visitor-main").is_none());

    // The status as JSON, through the CLI, with the fields integrators rely on.
    let out = door.cli(&["status", "--json"]);
    assert!(out.status.success());
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["room"]["state"], "Connected");
    assert_eq!(j["call"], "in_call");
    assert_eq!(j["call_peer"], "flat");
    assert_eq!(j["publishing"][0]["stream_id"], "door-main");
    assert_eq!(j["playing"][0]["stream_id"], "flat-main");
    assert_eq!(j["encoder"], "x264enc");
    let text = String::from_utf8(door.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("call     in_call with flat") && text.contains("flat-main Playing"), "{text}");

    // The flat's door button opens the door of its call: that door pulses and confirms.
    flat.press("door");
    let s = door.wait("the door relay pulsed", |s| s.door_pulses == 1).await;
    assert_eq!(s.door_refused, 0);
    let s = flat.wait("the flat sees the confirmation", |s| s.door_requests == 1 && s.door_last_result.is_some()).await;
    assert_eq!(s.door_last_result.as_deref(), Some("door: opened"));
    assert_eq!(s.door_pulses, 0, "the flat has no relay of its own");
    assert!(door.log().contains("door relay pulsed on request of flat"), "{}", door.log());

    // Mute over the CLI.
    assert!(door.cli(&["call", "mute"]).status.success());
    door.wait("muted", |s| s.muted).await;

    // The flat hangs up: both idle, nothing published or played.
    flat.press("leave");
    let s =
        door.wait("the door is idle", |s| s.call == "idle" && s.publishing.is_empty() && s.playing.is_empty()).await;
    assert_eq!(s.last_call_end.as_deref(), Some("CALL_HUNG_UP"));
    assert_eq!(s.gpio.outputs["in_call"], "off");
    flat.wait("the flat is idle", |s| s.call == "idle" && s.publishing.is_empty()).await;
    visitor.destroy().await;
}

/// Declined (the flat's leave button), cancelled (the door's leave button) and timed out
/// (nobody answers within the ring time): both sides idle with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declined_cancelled_and_timed_out_rings_leave_both_idle_with_the_reason() {
    let server = Server::start("");
    let door = door(&server.url(), "\"flat\"", 5);
    let flat = indoor(&server.url(), "flat");
    door.wait("door logged in", connected).await;
    flat.wait("flat logged in", connected).await;
    let ended = |reason: &'static str| move |s: &Status| s.call == "idle" && s.last_call_end.as_deref() == Some(reason);

    door.press("call");
    flat.wait("ringing", |s| s.call == "ringing").await;
    flat.press("leave");
    door.wait("declined at the door", ended("CALL_DECLINED")).await;
    flat.wait("declined at the flat", ended("CALL_DECLINED")).await;

    door.press("call");
    flat.wait("ringing again", |s| s.call == "ringing").await;
    door.press("leave");
    flat.wait("cancelled at the flat", ended("CALL_CANCELLED")).await;
    let s = door.wait("idle at the door", |s| s.call == "idle").await;
    assert!(s.publishing.is_empty(), "the early video stopped");

    door.press("call");
    flat.wait("ringing a third time", |s| s.call == "ringing").await;
    let s = flat.wait("timed out at the flat", ended("CALL_TIMED_OUT")).await;
    assert_eq!(s.gpio.outputs["ringing"], "off");
    door.wait("timed out at the door", ended("CALL_TIMED_OUT")).await;
}

/// The door rings a group together: the flat and a desk (an app that says it can answer).
/// The desk answers: the flat stops ringing, told someone else answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_ring_stops_on_the_others_when_one_answers() {
    let server = Server::start("");
    let door = door(&server.url(), "[\"flat\", \"desk\"]", 60);
    let flat = indoor(&server.url(), "flat");
    let (desk, mut ev) = media_engine(&server.url());
    let mut desk_user = user("desk");
    desk_user.caps = vec![callbox::proto::Capability::Answer, callbox::proto::Capability::Display];
    desk.login_room("lobby", desk_user, notify()).await.unwrap();
    door.wait("door logged in", connected).await;
    flat.wait("flat logged in", connected).await;
    door.press("call");
    let rung = ev
        .wait("the desk rings", |e| matches!(e, EngineEvent::CallIncoming { caller, .. } if caller.user_id == "door"))
        .await;
    let EngineEvent::CallIncoming { call_id, .. } = rung else { unreachable!() };
    flat.wait("the flat rings too", |s| s.call == "ringing").await;
    desk.answer_call(call_id).await.unwrap();
    let s = flat.wait("the flat stops ringing", |s| s.call == "idle").await;
    assert_eq!(s.last_call_end.as_deref(), Some("CALL_ANSWERED_ELSEWHERE"));
    let s = door.wait("the door is in the call with the desk", |s| s.call == "in_call").await;
    assert_eq!(s.call_peer.as_deref(), Some("desk"));
    desk.hang_up_call(call_id).await.unwrap();
    door.wait("the door hears the desk hang up", |s| s.call == "idle").await;
    desk.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kiosk_joins_whenever_someone_publishes() {
    let server = Server::start("");
    let dev = Device::start(&server.url(), "kiosk", None);
    dev.wait("logged in", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    let (desk, mut ev) = media_engine(&server.url());
    desk.login_room("lobby", user("desk"), notify()).await.unwrap();
    desk.start_publishing_stream("desk-main", PublishChannel::Main).await.unwrap();
    dev.wait("in call, decoding", |s| s.call == "in_call" && playing(s, "desk-main").unwrap_or(0) > 0).await;
    ev.wait("the kiosk publishes", stream_update("door-main", UpdateType::Add)).await;
    desk.stop_publishing_stream(PublishChannel::Main).await.unwrap();
    dev.wait("idle again", |s| s.call == "idle" && s.publishing.is_empty()).await;
    ev.wait("the kiosk withdrew", stream_update("door-main", UpdateType::Delete)).await;
    desk.destroy().await;
}

/// The door opens from its own button, and for a request from someone with the `door`
/// privilege, to this door only; a visitor without the privilege or a call is refused by the
/// server, and the door hears nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_door_opens_from_the_button_and_for_an_authorised_request_only() {
    let server = Server::start("");
    let dev = Device::start(&server.url(), "intercom", None);
    dev.wait("logged in", connected).await;
    dev.press("door");
    dev.wait("door relay energised", |s| s.door_pulses == 1 && s.gpio.outputs["door"] == "on").await;
    dev.wait("door relay released after the pulse", |s| s.gpio.outputs["door"] == "off").await;

    // A guard's token carries the door privilege; a visitor's (AppSign, minted by the
    // engine) does not.
    let guard_token = token(APP, SECRET, "guard", Some("lobby"), &["login", "door"], 3600);
    let (guard, _) = Engine::create(EngineProfile::new(APP, Auth::Token(guard_token), server.url())).unwrap();
    guard.login_room("lobby", user("guard"), notify()).await.unwrap();
    let (visitor, _) = engine(&server.url());
    visitor.login_room("lobby", user("visitor"), notify()).await.unwrap();

    let refused = visitor.open_door("door").await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::DOOR_FORBIDDEN);
    assert_eq!(guard.open_door("gate").await.unwrap_err().code(), ErrorCode::DOOR_OFFLINE, "no such door");
    assert_eq!(guard.open_door("visitor").await.unwrap_err().code(), ErrorCode::DOOR_NOT_A_DOOR);
    guard.open_door("door").await.unwrap();
    let s = dev.wait("opened for the guard", |s| s.door_pulses == 2).await;
    assert_eq!(s.door_refused, 0);
    assert!(dev.log().contains("door relay pulsed on request of guard"), "{}", dev.log());
    // The old room-wide broadcast opens nothing.
    guard.send_broadcast_message(r#"{"action":"open_door"}"#).await.unwrap();
    guard.open_door("door").await.unwrap();
    assert_eq!(dev.wait("opened once more", |s| s.door_pulses >= 3).await.door_pulses, 3);
    guard.destroy().await;
    visitor.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_before_the_network_then_joins_when_the_server_appears() {
    // A port nobody listens on yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut dev = Device::start(&format!("ws://{addr}"), "intercom", Some(300_000));
    let first = dev.notified("READY=1").await;
    assert!(!first.iter().any(|m| m.starts_with("STOPPING")), "{first:?}");
    assert!(dev.status().await.is_some(), "control socket up with READY");
    dev.wait("retrying, online LED blinking", |s| {
        s.room.state == callbox::engine::RoomState::Connecting && s.gpio.outputs["online"] == "blink"
    })
    .await;
    // The watchdog is fed from the supervisor loop (WATCHDOG_USEC=300ms: every 150 ms).
    dev.notified("WATCHDOG=1").await;

    let _server = Server::start_on("", &addr.to_string());
    dev.wait("joined once the server is there", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    let msgs = dev.notified("STATUS=room lobby Connected").await;
    assert!(msgs.iter().all(|m| !m.contains('\n')), "{msgs:?}");
    dev.signal("-TERM");
    dev.notified("STOPPING=1").await;
    let st = dev.exit_within(Duration::from_secs(5));
    assert!(st.success(), "{st:?}");
    assert!(!dev.socket.exists(), "the control socket is removed at exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_leaves_the_room_at_once() {
    // A long grace period: only a real logout makes the user go away quickly.
    let server = Server::start("[session]\ngrace_secs = 60\n");
    let mut dev = Device::start(&server.url(), "kiosk", None);
    let (desk, mut ev) = media_engine(&server.url());
    desk.login_room("lobby", user("desk"), notify()).await.unwrap();
    desk.start_publishing_stream("desk-main", PublishChannel::Main).await.unwrap();
    dev.wait("in call", |s| s.call == "in_call" && !s.publishing.is_empty()).await;
    ev.wait("door-main added", stream_update("door-main", UpdateType::Add)).await;
    let t = Instant::now();
    dev.signal("-TERM");
    ev.wait("the door station left", |e| {
        matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users.iter().any(|u| u.user_id == "door"))
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "left after {:?}", t.elapsed());
    assert!(ev.seen.iter().any(stream_update("door-main", UpdateType::Delete)));
    assert!(dev.exit_within(Duration::from_secs(5)).success());
    desk.destroy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_peer_sees_the_delete_after_the_grace_period() {
    let server = Server::start("[session]\ngrace_secs = 2\n");
    let mut dev = Device::start(&server.url(), "intercom", None);
    // The flat can answer: the door's call rings it and publishes at once (early video).
    let (flat, mut ev) = engine(&server.url());
    flat.login_room("lobby", answerer("flat"), notify()).await.unwrap();
    dev.wait("logged in", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    dev.press("call");
    ev.wait("door-main added", stream_update("door-main", UpdateType::Add)).await;
    let t = Instant::now();
    dev.signal("-KILL");
    dev.exit_within(Duration::from_secs(5));
    let e = ev.wait("door-main deleted", stream_update("door-main", UpdateType::Delete)).await;
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1500), "deleted after {waited:?}: not the grace path");
    assert!(
        matches!(e, EngineEvent::RoomStreamUpdate { reason, .. } if reason == callbox::proto::ErrorCode::HEARTBEAT_TIMEOUT),
        "{e:?}"
    );
    flat.destroy().await;
}

#[test]
fn bad_configs_exit_78_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let good = device_config("ws://127.0.0.1:9", "intercom", &dir.path().join("c.sock"), "127.0.0.1");
    let cases = [
        (good.replace("mode = \"intercom\"", "mode = \"party\""), "call.mode"),
        (good.replace("width = 320", "width = \"wide\""), "width"),
        (good.replace("[control]", "[control]\ncolour = \"red\""), "colour"),
        (good.replace("backend = \"sim\"", "backend = \"sysfs\""), "gpio.backend"),
        (good.replace("room_id = \"lobby\"", "room_id = \"\""), "room.room_id"),
    ];
    for (text, key) in cases {
        let f = dir.path().join("bad.toml");
        std::fs::write(&f, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
            .args(["device", "--config", f.to_str().unwrap()])
            .env_remove("JOURNAL_STREAM")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{key}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["device", "--config", dir.path().join("missing.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    // Control commands without a daemon say so, with a hint.
    let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["status", "--socket", dir.path().join("none.sock").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is the daemon running"));
}

/// `callbox doctor` lines as (level, name).
fn doctor(cfg: &Path) -> (Option<i32>, Vec<(String, String)>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["doctor", "--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let lines = text
        .lines()
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap_or("").to_string(), w.next().unwrap_or("").to_string())
        })
        .collect();
    (out.status.code(), lines, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_on_a_board_less_machine() {
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    let text = device_config(&server.url(), "intercom", &dir.path().join("c.sock"), "127.0.0.1");
    std::fs::write(&cfg, &text).unwrap();
    let (code, lines, out) = doctor(&cfg);
    let level = |name: &str| lines.iter().find(|(_, n)| n == name).map(|(l, _)| l.as_str()).unwrap_or("missing");
    assert_eq!(code, Some(0), "{out}");
    for (name, want) in [
        ("config", "PASS"),
        ("camera", "WARN"),
        ("microphone", "WARN"),
        ("speaker", "WARN"),
        ("encoder", "WARN"),
        ("gpio", "WARN"),
        ("server", "PASS"),
        ("credentials", "PASS"),
        ("media", "PASS"),
    ] {
        assert_eq!(level(name), want, "{name}: {out}");
    }
    assert!(out.contains("x264enc (software)"), "{out}");
    assert_ne!(level("clock"), "FAIL", "{out}");
    assert_ne!(level("clock"), "missing", "{out}");

    // A board whose camera, GPIO chip and server are missing, and a wrong secret.
    let bad = text
        .replace("source = \"test\"\nwidth", "source = \"v4l2:/dev/video9\"\nwidth")
        .replace("backend = \"sim\"", "backend = \"cdev\"\nchip = \"/dev/gpiochip9\"");
    std::fs::write(&cfg, &bad).unwrap();
    let (code, lines, out) = doctor(&cfg);
    let level = |name: &str| lines.iter().find(|(_, n)| n == name).map(|(l, _)| l.as_str()).unwrap_or("missing");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!((level("camera"), level("gpio")), ("FAIL", "FAIL"), "{out}");
    let wrong = text.replace(SECRET, &"ab".repeat(32));
    std::fs::write(&cfg, &wrong).unwrap();
    let (code, lines, out) = doctor(&cfg);
    let level = |name: &str| lines.iter().find(|(_, n)| n == name).map(|(l, _)| l.as_str()).unwrap_or("missing");
    assert_eq!((code, level("credentials")), (Some(1), "FAIL"), "{out}");
    assert!(out.contains("1002033"), "the code is named: {out}");
    drop(server);
    let (code, lines, out) = doctor(&cfg);
    assert_eq!(code, Some(1));
    assert!(lines.contains(&("FAIL".into(), "server".into())), "{out}");
}

/// Journal entries the daemon sent, as field maps: from a journald socket this test stands
/// in for (none runs here), or from the real journal where journald runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_each_log_line_reaches_journald_with_its_fields() {
    const SOCKET: &str = "/run/systemd/journal/socket";
    let server = Server::start("");
    // Stand in for journald unless a real one answers (a stale socket file is replaced).
    let own = std::os::unix::net::UnixDatagram::unbound().unwrap().connect(SOCKET).is_err();
    struct Remove;
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(SOCKET);
        }
    }
    // The reader drains the socket as journald would (a full queue blocks the sender).
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let _cleanup = own.then(|| {
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        let _ = std::fs::remove_file(SOCKET);
        let l = std::os::unix::net::UnixDatagram::bind(SOCKET).unwrap();
        let got = received.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while let Ok(n) = l.recv(&mut buf) {
                got.lock().unwrap().push(journal_fields(&buf[..n]));
            }
        });
        Remove
    });
    let dev = Device::start_with(&server.url(), "intercom", None, &[("CALLBOX_LOG", "journald")]);
    dev.wait("logged in", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    // Someone to ring, so the call button's call is placed and the door publishes.
    let (flat, _ev) = engine(&server.url());
    flat.login_room("lobby", answerer("flat"), notify()).await.unwrap();
    dev.press("call");
    dev.wait("publishing", |s| s.publishing.iter().any(|p| p.state == callbox::engine::PublisherState::Publishing))
        .await;
    let entries: Vec<std::collections::HashMap<String, String>> = if own {
        received.lock().unwrap().clone()
    } else {
        let out = Command::new("journalctl")
            .args(["-o", "json", "--since", "-1min", "SYSLOG_IDENTIFIER=callbox"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let room = entries.iter().find(|e| {
        e.get("CALLBOX_EVENT").map(String::as_str) == Some("room_state")
            && e.get("STATE").map(String::as_str) == Some("Connected")
    });
    let room = room.unwrap_or_else(|| panic!("no room_state entry in {entries:#?}"));
    assert_eq!(room["ROOM_ID"], "lobby");
    assert_eq!(room["USER_ID"], "door");
    assert_eq!(room["ERROR_CODE"], "0");
    assert_eq!(room["SYSLOG_IDENTIFIER"], "callbox");
    assert!(room["MESSAGE"].contains("room lobby: Connected"), "{room:?}");
    let publish = entries.iter().find(|e| e.get("CALLBOX_EVENT").map(String::as_str) == Some("publisher_state"));
    assert_eq!(publish.unwrap_or_else(|| panic!("{entries:#?}"))["STREAM_ID"], "door-main");
    assert!(!dev.log().contains("room lobby: Connected"), "journald, not stderr");

    // The server's journal is as queryable: CALLBOX_EVENT=login with the peer address, and
    // refused logins with their ERROR_CODE.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("server.toml");
    std::fs::write(&cfg, format!("[[apps]]\napp_id = {APP}\nsecret = \"{SECRET}\"\n[media]\nenabled = false\n"))
        .unwrap();
    let mut srv = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["server", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env("CALLBOX_LOG", "journald")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(srv.stdout.take().unwrap()), &mut line).unwrap();
    let url = format!("ws://{}", line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap());
    let (good, _rx) = Engine::create(EngineProfile::new(APP, Auth::AppSign(SECRET.into()), url.clone())).unwrap();
    good.login_room("lobby", user("gate"), notify()).await.unwrap();
    let (bad, _rx2) = Engine::create(EngineProfile::new(APP, Auth::Token("garbage".into()), url)).unwrap();
    assert!(bad.login_room("lobby", user("mallory"), notify()).await.is_err());
    good.destroy().await;
    bad.destroy().await;
    let _ = srv.kill();
    let _ = srv.wait();
    if own {
        let entries = received.lock().unwrap().clone();
        let event = |name: &str| {
            entries
                .iter()
                .find(|e| {
                    e.get("CALLBOX_EVENT").map(String::as_str) == Some(name)
                        && e.get("USER_ID").is_some_and(|u| u != "door")
                })
                .cloned()
                .unwrap_or_else(|| panic!("no server {name} entry in {entries:#?}"))
        };
        let login = event("login");
        assert_eq!((login["USER_ID"].as_str(), login["PEER"].as_str()), ("gate", "127.0.0.1"), "{login:?}");
        let refused = event("login_refused");
        assert_eq!(
            (refused["USER_ID"].as_str(), refused["ERROR_CODE"].as_str()),
            ("mallory", "1002033"),
            "{refused:?}"
        );
    }
}

/// Parses one datagram of journald's native protocol: `KEY=value\n`, or `KEY\n`, a 64-bit
/// little-endian length, the value and `\n`.
fn journal_fields(mut b: &[u8]) -> std::collections::HashMap<String, String> {
    let mut m = std::collections::HashMap::new();
    while let Some(nl) = b.iter().position(|c| *c == b'\n') {
        let line = String::from_utf8_lossy(&b[..nl]).to_string();
        b = &b[nl + 1..];
        if let Some((k, v)) = line.split_once('=') {
            m.insert(k.to_string(), v.to_string());
        } else if b.len() >= 8 {
            let len = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
            let value = b.get(8..8 + len).unwrap_or_default();
            m.insert(line, String::from_utf8_lossy(value).to_string());
            b = b.get(8 + len + 1..).unwrap_or_default();
        }
    }
    m
}

/// User plus system CPU time of a process, in clock ticks (100 per second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces): state is the 3rd field,
    // utime the 14th and stime the 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_control_socket_waits_instead_of_spinning() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dev = Device::start(&format!("ws://{addr}"), "intercom", None);
    dev.wait("up and retrying", |s| s.room.state == callbox::engine::RoomState::Connecting).await;
    let pid = dev.child.id();
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = format!("--nofile={}:{}", open + 6, open + 6);
    let st = Command::new("prlimit").args(["--pid", &pid.to_string(), &limit]).status().unwrap();
    assert!(st.success());
    // Connections that never send: the daemon holds each until its 5 s I/O timeout, and
    // runs out of descriptors (the rest wait in the listen backlog).
    let mut held = Vec::new();
    for _ in 0..40 {
        if let Ok(s) = tokio::net::UnixStream::connect(&dev.socket).await {
            held.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = cpu_ticks(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(pid) - before;
    assert!(used < 30, "the daemon used {used} ticks (1/100 s) of CPU in 3 s while out of descriptors");
    assert!(dev.log().contains("accept failed"), "the accept error is logged");
    drop(held);
    dev.wait("answering again once descriptors are free", |_| true).await;
}

#[test]
fn a_control_socket_in_a_directory_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let err = rt.block_on(control::bind(&open.join("control.sock"))).unwrap_err();
    assert!(err.to_string().contains("writable by other users"), "{err}");
}

/// The test config with `creds` (lines of `[server]`) instead of the app secret.
fn with_credentials(cfg: String, creds: &str) -> String {
    cfg.replace(&format!("app_sign = \"{SECRET}\""), creds)
}

/// An HTTPS request to the test server, trusting the test CA; (status, JSON body).
async fn https(
    server: &Server,
    ca: &Path,
    method: &str,
    path: &str,
    bearer: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let url = callbox::url::ServerUrl::parse(&server.wss("localhost")).unwrap();
    let dialer = callbox::dial::Dialer::new(url, Some(ca)).unwrap();
    let auth = format!("Bearer {bearer}");
    let a = dialer
        .request(method, path, &[("authorization", &auth), ("content-type", "application/json")], body.into(), WAIT)
        .await
        .unwrap();
    (a.status, serde_json::from_slice(&a.body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_key_logs_in_over_wss_renews_and_is_revoked_mid_call() {
    let pki = Pki::new();
    pki.leaf("srv", &["localhost"], false);
    let state = tempfile::tempdir().unwrap();
    let mut server = Server::start(&format!(
        "state_dir = \"{}\"\n{}[limits]\ndevice_token_secs = 10\n",
        state.path().display(),
        pki.tls_section("srv")
    ));
    let ca = pki.ca_file();
    let admin = token(APP, SECRET, "*", None, &["admin"], 600);
    let keys = format!("/api/v1/apps/{APP}/device-keys");

    // A valid token without admin, and an admin token for another room: 403.
    let member = token(APP, SECRET, "door", None, &["login"], 600);
    assert_eq!(https(&server, &ca, "GET", &keys, &member, "").await.0, 403);
    let garage = token(APP, SECRET, "*", Some("garage"), &["admin"], 600);
    let (st, body) = https(&server, &ca, "GET", &format!("/api/v1/apps/{APP}/rooms/lobby"), &garage, "").await;
    assert_eq!((st, body["code"].as_u64()), (403, Some(1005003)), "{body}");
    assert_eq!(https(&server, &ca, "GET", &keys, "garbage", "").await.0, 401);

    let (st, made) = https(&server, &ca, "POST", &keys, &admin, r#"{"user_id":"door","room_id":"lobby"}"#).await;
    assert_eq!(st, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    let (_, listed) = https(&server, &ca, "GET", &keys, &admin, "").await;
    assert!(!listed.to_string().contains(key.rsplit('_').next().unwrap()), "listed without secrets: {listed}");

    // Its token is for door in lobby only.
    let (st, issued) = https(&server, &ca, "POST", "/api/v1/token", &key, "{}").await;
    assert_eq!(st, 200, "{issued}");
    let mut p = EngineProfile::new(APP, Auth::Token(String::new()), server.wss("localhost"));
    p.ca_file = Some(ca.clone());
    let (other, _rx) = Engine::create(p).unwrap();
    let cfg = RoomConfig { token: issued["token"].as_str().map(String::from), is_user_status_notify: false };
    let refused = other.login_room("lobby", user("flat"), cfg).await.unwrap_err();
    assert_eq!(refused.code(), ErrorCode::TOKEN_USER_MISMATCH);
    other.destroy().await;

    // The daemon logs in over wss with the key and renews before the 10 s token ends.
    let url = server.wss("localhost");
    let creds = format!("device_key = \"{key}\"\nca_file = \"{}\"", ca.display());
    let device = Device::start_edited(&url, "kiosk", None, &[], |c| with_credentials(c, &creds));
    let first = device
        .wait("logged in", |s| s.room.state == callbox::engine::RoomState::Connected && s.credentials.expires_at > 0)
        .await;
    assert_eq!(first.credentials.source, "device_key");
    device.wait("renewed", |s| s.credentials.expires_at > first.credentials.expires_at).await;

    // A call: the peer publishes, the kiosk answers with its own stream.
    let (peer, mut ev) = {
        let mut p = EngineProfile::new(APP, Auth::AppSign(SECRET.into()), server.wss("localhost"))
            .with_media(callbox::media::MediaConfig::small());
        p.ca_file = Some(ca.clone());
        if let Some(m) = &mut p.media {
            m.bind = Some([127, 0, 0, 1].into());
        }
        let (e, rx) = Engine::create(p).unwrap();
        (e, Events { rx, seen: Vec::new() })
    };
    peer.login_room("lobby", user("flat"), notify()).await.unwrap();
    peer.start_publishing_stream("flat-main", PublishChannel::Main).await.unwrap();
    ev.wait("the kiosk's stream", stream_update("door-main", UpdateType::Add)).await;
    peer.start_playing_stream("door-main").await.unwrap();
    ev.wait("the kiosk's video", rendered("door-main")).await;

    // Revoked mid-call: the device leaves with the code, and cannot come back.
    let id = made["id"].as_str().unwrap();
    let (st, r) = https(&server, &ca, "DELETE", &format!("{keys}/{id}"), &admin, "").await;
    assert_eq!((st, r["sessions_ended"].as_u64()), (200, Some(1)), "{r}");
    ev.wait("door left with the revocation code", |e| {
        matches!(e, EngineEvent::RoomUserUpdate { update: UpdateType::Delete, users, .. } if users[0].user_id == "door")
    })
    .await;
    let gone = ev.seen.iter().rev().find_map(|e| match e {
        EngineEvent::RoomStreamUpdate { update: UpdateType::Delete, reason, .. } => Some(*reason),
        _ => None,
    });
    assert_eq!(gone, Some(ErrorCode::DEVICE_KEY_REVOKED));
    let s = device.wait("the refusal in status", |s| s.last_errors.iter().any(|e| e.code == 1002068)).await;
    assert_ne!(s.room.state, callbox::engine::RoomState::Connected);
    assert_eq!(https(&server, &ca, "POST", "/api/v1/token", &key, "{}").await.0, 401);
    peer.destroy().await;

    // Keys and revocations survive a restart.
    let (_, kept) = https(&server, &ca, "POST", &keys, &admin, r#"{"user_id":"gate"}"#).await;
    let kept = kept["key"].as_str().unwrap().to_string();
    server.restart();
    assert_eq!(https(&server, &ca, "POST", "/api/v1/token", &kept, "{}").await.0, 200);
    assert_eq!(https(&server, &ca, "POST", "/api/v1/token", &key, "{}").await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_and_check_config_over_tls() {
    let pki = Pki::new();
    pki.leaf("srv", &["localhost"], false);
    let server = Server::start(&pki.tls_section("srv"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("device.toml");
    let base = device_config(&server.wss("localhost"), "kiosk", &dir.path().join("c.sock"), "127.0.0.1");
    let trusted = base.replace("[room]", &format!("ca_file = \"{}\"\n[room]", pki.ca_file().display()));
    std::fs::write(&cfg, &trusted).unwrap();
    let (_, lines, text) = doctor(&cfg);
    assert!(lines.contains(&("PASS".into(), "server".into())), "{text}");
    assert!(text.contains("certificate verified"), "{text}");
    assert!(lines.contains(&("PASS".into(), "credentials".into())), "{text}");
    assert!(
        lines.contains(&("WARN".into(), "config".into())) && text.contains("app_sign"),
        "the app secret is warned: {text}"
    );
    let last = text.lines().last().unwrap_or("");
    assert!(last.starts_with("doctor: ") && last.contains(" FAIL: ") && last.contains(callbox::BUILD), "{last}");
    // The same as one JSON object, with counts that match the checks.
    let out = Command::new(env!("CARGO_BIN_EXE_callbox"))
        .args(["doctor", "--json", "--config", cfg.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = j["checks"].as_array().unwrap();
    let count = |l: &str| checks.iter().filter(|c| c["level"] == l).count() as u64;
    assert_eq!(j["summary"]["pass"].as_u64(), Some(count("PASS")), "{j}");
    assert_eq!(j["summary"]["warn"].as_u64(), Some(count("WARN")), "{j}");
    assert_eq!(j["summary"]["fail"].as_u64(), Some(count("FAIL")), "{j}");
    assert!(checks.iter().any(|c| c["name"] == "server" && c["level"] == "PASS"), "{j}");

    let stranger = Pki::new();
    std::fs::write(&cfg, base.replace("[room]", &format!("ca_file = \"{}\"\n[room]", stranger.ca_file().display())))
        .unwrap();
    let (code, lines, text) = doctor(&cfg);
    assert_ne!(code, Some(0));
    assert!(lines.contains(&("FAIL".into(), "server".into())), "{text}");
    assert!(text.contains("1002070") && text.contains("ca_file"), "the cause and the fix: {text}");

    // check-config: WARN (exit 0, stderr) for what is valid but unsafe.
    std::fs::write(&cfg, device_config("ws://192.0.2.10:7880", "kiosk", &dir.path().join("c.sock"), "")).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_callbox")).args(["check-config", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("WARN: server.url") && err.contains("WARN: server.app_sign"), "{err}");
}

/// SIGHUP never stops the daemon: a changed file is named (it applies at a restart), a
/// broken one is reported with the key, and the call state is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rechecks_the_config_and_keeps_running() {
    let server = Server::start("");
    // No RUST_LOG: the config's [log] level decides.
    let device = Device::start_with(&server.url(), "kiosk", None, &[("RUST_LOG", "")]);
    device.wait("logged in", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    let cfg = device.dir.path().join("device.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let d = &device;
    let logged = |needle: &'static str| async move {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if d.log().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no {needle:?} in the log:\n{}", d.log());
    };
    // Live keys are applied (the debug line exists only once the new level is in force);
    // the rest is named as needing a restart.
    assert!(!device.log().contains("log level debug"));
    let edited = text.replace("ring_out_secs = 60", "ring_out_secs = 30").replace("fps = 15", "fps = 10")
        + "\n[log]\nlevel = \"debug\"\n";
    assert!(edited.contains("ring_out_secs = 30") && edited.contains("fps = 10"));
    std::fs::write(&cfg, edited).unwrap();
    device.signal("-HUP");
    logged("SIGHUP: applied call.ring_out_secs, log.level").await;
    logged("log level debug").await;
    logged("SIGHUP: [video] changed").await;
    std::fs::write(&cfg, text.replace("ring_out_secs = 60", "ring_out_secs = \"soon\"")).unwrap();
    device.signal("-HUP");
    logged("the running configuration stays").await;
    let s = device.wait("still serving its status", |s| s.room.state == callbox::engine::RoomState::Connected).await;
    assert!(device.log().contains("ring_out_secs"), "the bad key is named");
    assert_eq!(s.call, "idle");
}

/// A door with privacy (camera only in calls, a camera LED and a camera button) rings a
/// lift intercom without a camera. Outside the call the door's camera and LED are off; in
/// it they are on; the lift's stream is announced audio only and the door decodes no video
/// of it; `callbox call camera off|on` on the door is seen at the lift as the stream's
/// state; the lift's speaker and volume follow `callbox call`; hung up, the door's camera
/// is off again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn privacy_an_audio_only_lift_and_the_camera_and_speaker_switches() {
    let server = Server::start("");
    let door = Device::start_edited(&server.url(), "intercom", None, &[], |c| {
        c.replace("[call]\n", "[call]\ncallee = \"lift\"\n")
            .replace("[control]", "[privacy]\ncamera = \"in_calls\"\n[control]")
            .replace("door = 14\n", "door = 14\ncamera = 15\n")
            .replace("door = 4\n", "door = 4\ncamera = 5\n")
    });
    let lift = Device::start_edited(&server.url(), "intercom", None, &[], |c| {
        c.replace("user_id = \"door\"", "user_id = \"lift\"")
            .replace("user_name = \"Door station\"", "user_name = \"Lift 2\"")
            .replace("[call]\n", "[call]\nanswers = true\ndoor = false\ncallee = \"door\"\n")
            .replace("source = \"test\"\nwidth", "source = \"none\"\nwidth")
    });
    let s = door.wait("door idle, camera off", |s| connected(s) && s.camera == "off").await;
    assert_eq!(s.gpio.outputs["camera"], "off", "the privacy LED is off with the camera");
    let s = lift.wait("lift up", connected).await;
    assert_eq!(s.camera, "none");
    assert!(lift.log().contains("no camera: this station publishes audio only"), "{}", lift.log());

    door.press("call");
    let s = door.wait("door rings out, camera on", |s| s.call == "ringing_out" && s.camera == "on").await;
    assert_eq!(s.gpio.outputs["camera"], "on");
    lift.wait("the lift rings", |s| s.call == "ringing").await;
    lift.press("call");
    let s = lift.wait("the lift decodes the door", |s| playing(s, "door-main").unwrap_or(0) > 5).await;
    let door_stream = s.streams.iter().find(|x| x.stream_id == "door-main").unwrap();
    assert_eq!((door_stream.video.as_str(), door_stream.audio.as_str()), ("on", "on"));
    let s = door.wait("the door plays the lift", |s| playing(s, "lift-main").is_some()).await;
    let lift_stream = s.streams.iter().find(|x| x.stream_id == "lift-main").unwrap();
    assert_eq!(lift_stream.video, "absent", "the lift is announced audio only");
    tokio::time::sleep(Duration::from_secs(4)).await; // a quality report or more
    let s = door.status().await.unwrap();
    let p = s.playing.iter().find(|p| p.stream_id == "lift-main").unwrap();
    assert_eq!(p.frames_decoded, 0, "no video decoded of an audio-only stream: {p:?}");

    // The door's camera over the CLI, then its button: seen at the lift.
    assert!(door.cli(&["call", "camera", "off"]).status.success());
    lift.wait("the lift sees the camera off", |s| {
        s.streams.iter().any(|x| x.stream_id == "door-main" && x.video == "off")
    })
    .await;
    let s = door.wait("door camera off", |s| s.camera == "off").await;
    assert_eq!(s.gpio.outputs["camera"], "off");
    let text = String::from_utf8(lift.cli(&["status"]).stdout).unwrap();
    assert!(text.contains("media    camera none, speaker on, volume 100%"), "{text}");
    door.press("camera");
    lift.wait("the lift sees the camera on", |s| {
        s.streams.iter().any(|x| x.stream_id == "door-main" && x.video == "on")
    })
    .await;

    // The lift's speaker and volume.
    assert!(lift.cli(&["call", "speaker", "off"]).status.success());
    lift.wait("speaker off", |s| !s.speaker).await;
    assert!(lift.cli(&["call", "volume", "50"]).status.success());
    let s = lift.wait("volume 50", |s| s.volume == 50).await;
    assert!(!s.speaker);
    let bad = lift.cli(&["call", "volume", "500"]);
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    assert_eq!(lift.cli(&["call", "camera", "maybe"]).status.code(), Some(2));

    // Hung up: the door's camera is off again.
    lift.press("leave");
    let s = door.wait("door idle, camera off again", |s| s.call == "idle" && s.camera == "off").await;
    assert_eq!(s.gpio.outputs["camera"], "off");
}

/// `[video] source = "auto"` on a machine: the camera GStreamer's device monitor finds, or
/// (none) audio only, said in the journal and the status — never the test pattern.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_without_a_camera_publishes_audio_only() {
    let found = tokio::task::spawn_blocking(callbox::media::devices::probe).await.unwrap();
    let camera = callbox::media::devices::AutoDevices::choose(&found).camera.is_some();
    let server = Server::start("");
    let d = Device::start_edited(&server.url(), "kiosk", None, &[], |c| {
        c.replace("source = \"test\"\nwidth", "source = \"auto\"\nwidth")
    });
    let s = d.wait("logged in", connected).await;
    let log = d.log();
    if camera {
        assert_eq!(s.camera, "on", "a camera was found: {log}");
    } else {
        assert_eq!(s.camera, "none", "{log}");
        assert!(log.contains("camera: auto found none") && log.contains("audio only"), "{log}");
    }
    // Someone publishes: the kiosk joins and its stream says what it carries.
    let (watch, mut ew) = media_engine(&server.url());
    watch.login_room("lobby", user("watch"), notify()).await.unwrap();
    watch.start_publishing_stream("watch-main", PublishChannel::Main).await.unwrap();
    let added = ew.wait("the kiosk's stream", stream_update("door-main", UpdateType::Add)).await;
    let EngineEvent::RoomStreamUpdate { streams, .. } = added else { unreachable!() };
    let want = if camera { callbox::engine::TrackState::On } else { callbox::engine::TrackState::Absent };
    assert_eq!(streams[0].video, want);
    watch.destroy().await;
}

/// Home Assistant through a real mosquitto over TLS: the door station publishes its
/// discovery documents and `online`; a command from the broker opens the door (the relay
/// pulses, the door event follows) and rings the flat through the same rules as the call
/// button (the call state and the ring follow); a broker outage disturbs nothing and
/// everything is published again when it returns; a dead station is `offline` (last will).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_over_mqtt_sees_the_door_and_drives_it() {
    use common::mosquitto::Broker;
    let pki = Pki::new();
    let (cert, key) = pki.leaf("broker", &["localhost"], false);
    let mut broker = Broker::start(&cert, &key);
    let sub = broker.subscribe();
    let server = Server::start("");
    let mqtt = format!(
        "\n[mqtt]\nurl = \"mqtts://localhost:{}\"\nca_file = \"{}\"\n",
        broker.tls_port,
        pki.ca_file().display()
    );
    let mut door = Device::start_edited(&server.url(), "intercom", None, &[], |c| {
        c.replace("[call]\n", "[call]\ncallee = \"flat\"\n") + &mqtt
    });
    let flat = indoor(&server.url(), "flat");
    door.wait("door logged in", connected).await;
    flat.wait("flat logged in", connected).await;

    let bell = sub.wait("homeassistant/event/door/doorbell/config", "*").await;
    let doc: serde_json::Value = serde_json::from_str(bell.split_once(' ').unwrap().1).unwrap();
    assert_eq!(doc["event_types"], serde_json::json!(["ring"]));
    assert_eq!(doc["device"]["name"], "Door station");
    for t in [
        "button/door/open_door",
        "button/door/call",
        "button/door/hang_up",
        "sensor/door/call_state",
        "event/door/door",
    ] {
        sub.wait(&format!("homeassistant/{t}/config"), "*").await;
    }
    sub.wait("callbox/door/availability", "online").await;
    sub.wait("callbox/door/call", "idle").await;
    door.wait("status says connected", |s| s.mqtt.as_deref() == Some("connected")).await;

    // Open the door from Home Assistant: the relay pulses and the door event follows.
    broker.publish("callbox/door/door/open", "PRESS");
    door.wait("the relay pulsed", |s| s.door_pulses == 1).await;
    sub.wait("callbox/door/door", r#"{"event_type":"opened"}"#).await;

    // Call from Home Assistant: the flat rings, the ring and the state are published.
    broker.publish("callbox/door/call/start", "PRESS");
    flat.wait("the flat rings", |s| s.call == "ringing").await;
    sub.wait("callbox/door/ring", r#"{"event_type":"ring"}"#).await;
    sub.wait("callbox/door/call", "ringing_out").await;
    flat.press("call");
    door.wait("in the call", |s| s.call == "in_call").await;
    sub.wait("callbox/door/call", "in_call").await;

    // The broker dies: the call goes on; when it returns, everything is published again
    // (mosquitto keeps no retained message across its restart here: the station re-sends).
    broker.kill();
    drop(sub);
    let s = door.wait("the call goes on without the broker", |s| playing(s, "flat-main").unwrap_or(0) > 5).await;
    assert_eq!(s.call, "in_call");
    door.wait("status says unreachable", |s| s.mqtt.as_deref() == Some("unreachable")).await;
    let s = door.wait("the call still goes on", |s| s.call == "in_call").await;
    assert!(playing(&s, "flat-main").unwrap_or(0) > 5);
    broker.restart();
    let sub = broker.subscribe();
    sub.wait("homeassistant/event/door/doorbell/config", "*").await;
    sub.wait("callbox/door/availability", "online").await;
    sub.wait("callbox/door/call", "in_call").await;
    assert!(door.log().contains("mqtt: the broker is unreachable"), "{}", door.log());

    // Hang up from Home Assistant.
    broker.publish("callbox/door/call/hangup", "PRESS");
    door.wait("idle", |s| s.call == "idle").await;
    sub.wait("callbox/door/call", "idle").await;

    // A station that dies is offline (its last will).
    door.child.kill().unwrap();
    sub.wait("callbox/door/availability", "offline").await;
}

/// The admin API's door opens the named station's relay alone, and is obeyed without a
/// call (the building's backend asks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_pulses_the_named_door_station_alone() {
    let server = Server::start("");
    let door = door(&server.url(), "\"flat\"", 60);
    let gate = Device::start_edited(&server.url(), "intercom", None, &[], |c| {
        c.replace("user_id = \"door\"", "user_id = \"gate\"").replace("[call]\n", "[call]\ncallee = \"flat\"\n")
    });
    door.wait("door logged in", connected).await;
    gate.wait("gate logged in", connected).await;
    let admin = token(APP, SECRET, "backend", Some("lobby"), &["admin"], 600);
    let (status, body) =
        http_json(&server.http(), "POST", &format!("/api/v1/apps/{APP}/rooms/lobby/users/gate/door"), Some(&admin), "")
            .await;
    assert_eq!(status, 200, "{body}");
    let s = gate.wait("the gate pulsed", |s| s.door_pulses == 1).await;
    assert_eq!(s.call, "idle", "no call was needed");
    assert!(gate.log().contains("door relay pulsed on request of backend"), "{}", gate.log());
    let (status, _) =
        http_json(&server.http(), "POST", &format!("/api/v1/apps/{APP}/rooms/lobby/users/door/door"), Some(&admin), "")
            .await;
    assert_eq!(status, 200);
    door.wait("the door pulsed", |s| s.door_pulses == 1).await;
    let s = gate.wait("the gate's count", |_| true).await;
    assert_eq!(s.door_pulses, 1, "the door's request did not pulse the gate");
}
