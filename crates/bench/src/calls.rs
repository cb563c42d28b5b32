//! Call set-up figures: a door station (`callbox device`, intercom mode, simulated buttons)
//! and a desk (`callbox peer --answer`, which answers every ring at once and then publishes
//! and plays the caller) in network namespaces with the real server. Per call: the door's
//! call button to the desk's ring (`call_incoming`), and the answer to both sides rendering
//! the other's video (the desk's first frame of the door, the door's first decoded frame of
//! the desk). With `rtt_ms`, signalling (TCP) and media (UDP) of both hosts are held
//! `rtt_ms / 2` each way by relays in the router, so each host sees that round trip to the
//! server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callbox::device::control::{self, Request};
use callbox::device::status::Status;
use callbox_faultnet::Fault;

use super::faults::{Kill, Lines, ServerLab};
use super::secret;
use callbox::server::DEV_APP_ID as DEMO_APP_ID;

/// The simulated press is held this long (the debounce plus 50 ms) before it is a press.
pub const HOLD_MS: u64 = 60;

/// Figures of one run.
pub struct CallFigures {
    /// The door's button (press start) to the desk's ring.
    pub ring: Vec<Duration>,
    /// The desk's answer to both sides rendering video.
    pub both: Vec<Duration>,
}

fn status(rt: &tokio::runtime::Runtime, socket: &std::path::Path) -> Option<Status> {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(2), control::request(socket, &Request::Status))
            .await
            .ok()?
            .ok()?
            .status
    })
}

fn wait<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// When `lines` has a line after `mark` that `pred` accepts.
fn line_at(lines: &Lines, mark: usize, pred: impl Fn(&serde_json::Value) -> bool) -> Option<Instant> {
    let l = lines.lock().ok()?;
    l.iter().skip(mark).find(|(_, v)| pred(v)).map(|(t, _)| *t)
}

pub fn run(calls: usize, rtt_ms: u64) -> anyhow::Result<CallFigures> {
    let sl = ServerLab::start("calls", 90)?;
    let lab = &sl.lab;
    let mut relays = Vec::new();
    if rtt_ms > 0 {
        let half = Duration::from_millis(rtt_ms / 2);
        for host in ["door", "flat"] {
            // Media over UDP only (ICE-TCP would take the undelayed path).
            lab.apply(host, Fault::CutTcpPort(7882))?;
            relays.push(lab.delay_udp(host, "server", 7882, half, Duration::ZERO)?);
            relays.push(lab.delay_tcp(host, "server", 7880, half)?);
        }
    }
    let dir = std::env::temp_dir().join(format!("callbox-bench-calls-{}-{rtt_ms}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("door.sock");
    let cfg = dir.join("door.toml");
    let ip = lab.host("door").addr;
    let server = lab.host("server").addr;
    std::fs::write(
        &cfg,
        format!(
            "[server]\nurl = \"ws://{server}:7880\"\napp_id = {DEMO_APP_ID}\napp_sign = \"{}\"\n[room]\nroom_id = \"lobby\"\n\
             user_id = \"door\"\nuser_name = \"Door\"\n[call]\nmode = \"intercom\"\ncallee = \"flat\"\n[video]\nsource = \"test\"\n\
             width = 320\nheight = 240\nfps = 15\nbitrate_kbps = 300\n[audio]\nsource = \"test\"\nsink = \"fake\"\n[display]\n\
             sink = \"fake\"\n[media]\nbind = \"{ip}\"\n[gpio]\nbackend = \"sim\"\ndebounce_ms = {}\n[gpio.outputs]\ndoor = 1\n\
             [control]\nsocket = \"{}\"\n",
            secret(),
            HOLD_MS - 50,
            socket.display()
        ),
    )?;
    let mut door = lab.command("door", crate::callbox_exe()?);
    door.env_remove("CALLBOX_BIN").env("RUST_LOG", "warn").env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM");
    door.args(["device", "--config", cfg.to_str().unwrap_or_default()]);
    let _door =
        Kill(door.stdout(std::process::Stdio::null()).stderr(std::fs::File::create(dir.join("door.log"))?).spawn()?);
    let lines: Lines = Arc::default();
    let _desk = sl.peer_with("flat", Some("flat-main"), &["--answer"], &lines)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let up = |s: &Status| s.room.state == callbox::engine::RoomState::Connected;
    wait(Duration::from_secs(30), || status(&rt, &socket).filter(up))
        .ok_or_else(|| anyhow::anyhow!("the door did not log in"))?;
    wait(Duration::from_secs(30), || line_at(&lines, 0, |v| v["event"] == "state" && v["state"] == "Connected"))
        .ok_or_else(|| anyhow::anyhow!("the desk did not log in"))?;
    let mut f = CallFigures { ring: Vec::new(), both: Vec::new() };
    for _ in 0..calls {
        let mark = lines.lock().map(|l| l.len()).unwrap_or(0);
        let t0 = Instant::now();
        let press = Request::GpioPress { button: "call".into(), long: false };
        let _ = rt.block_on(control::request(&socket, &press));
        let is = |state: &'static str| move |v: &serde_json::Value| v["event"] == "call" && v["state"] == state;
        let Some(rang) = wait(Duration::from_secs(10), || line_at(&lines, mark, is("incoming"))) else {
            anyhow::bail!("the desk did not ring");
        };
        let answered = wait(Duration::from_secs(10), || line_at(&lines, mark, is("answered")))
            .ok_or_else(|| anyhow::anyhow!("the desk did not answer"))?;
        let desk_renders = wait(Duration::from_secs(20), || {
            line_at(&lines, mark, |v| v["event"] == "first_frame" && v["stream_id"] == "door-main")
        });
        let door_renders = wait(Duration::from_secs(20), || {
            status(&rt, &socket)
                .filter(|s| s.playing.iter().any(|p| p.stream_id == "flat-main" && p.rendered))
                .map(|_| Instant::now())
        });
        f.ring.push(rang - t0);
        if let (Some(a), Some(b)) = (desk_renders, door_renders) {
            f.both.push(a.max(b).saturating_duration_since(answered));
        }
        let leave = Request::GpioPress { button: "leave".into(), long: false };
        let _ = rt.block_on(control::request(&socket, &leave));
        let mark = lines.lock().map(|l| l.len()).unwrap_or(0);
        let _ = wait(Duration::from_secs(10), || line_at(&lines, mark.saturating_sub(8), is("ended")));
        wait(Duration::from_secs(10), || status(&rt, &socket).filter(|s| s.call == "idle" && s.publishing.is_empty()));
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(relays);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(f)
}
